//! Logs through `tracing`, as text or JSON, with sampling of info-level events.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// Events under this target (start, bound address, shutdown) are never sampled away.
pub const LIFECYCLE: &str = "patchbay::lifecycle";

/// Installs the global subscriber. The configuration was validated, so the filter parses.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let rate = config.sample_rate;
    let sampler = DynFilterFn::new(move |meta: &Metadata<'_>, _cx| keep(meta, rate));
    let layer = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
        // Colour codes only for a person at a terminal, never in files or pipes.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(std::io::stdout)
            .boxed(),
    };
    // A second init (tests, embedding) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(sampler).with_filter(filter))
        .try_init();
}

/// Warnings and errors always pass; info and finer pass with probability `rate`.
fn keep(meta: &Metadata<'_>, rate: f64) -> bool {
    if !meta.is_event() || *meta.level() <= Level::WARN || meta.target() == LIFECYCLE {
        return true;
    }
    if rate >= 1.0 {
        return true;
    }
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    rand::random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_kept(level: Level, rate: f64) -> usize {
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = match level {
            Level::ERROR => Metadata::new(
                "e",
                "patchbay",
                Level::ERROR,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
                tracing::metadata::Kind::EVENT,
            ),
            _ => Metadata::new(
                "i",
                "patchbay",
                Level::INFO,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
                tracing::metadata::Kind::EVENT,
            ),
        };
        (0..1000).filter(|_| keep(&meta, rate)).count()
    }

    #[test]
    fn zero_rate_drops_info_but_never_errors() {
        assert_eq!(count_kept(Level::INFO, 0.0), 0);
        assert_eq!(count_kept(Level::ERROR, 0.0), 1000);
        assert_eq!(count_kept(Level::INFO, f64::NAN), 0);
    }

    #[test]
    fn partial_rate_keeps_some() {
        let kept = count_kept(Level::INFO, 0.5);
        assert!(kept > 0 && kept < 1000, "{kept}");
        assert_eq!(count_kept(Level::INFO, 1.0), 1000);
    }
}
