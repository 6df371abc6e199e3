//! `cargo xtask bench <scenario>`: load scenarios that report ratios, not pass/fail.
//!
//! Each scenario is a module with a `run(&Flags)` that writes its own section of
//! `bench/README.md`. Shared parts: `server` (start the release binary and wait for its
//! `listening on` line), `wrk` (run wrk and read its figures), `report` (machine, date, README
//! sections), `load` (a closed-loop load generator that counts responses by status).

mod cache;
mod http;
mod json;
mod load;
mod materializer;
mod plugins;
mod report;
mod server;
mod wrk;

use std::str::FromStr;

use anyhow::{Context, Result, bail};

const SCENARIOS: &[(&str, &str)] = &[
    (
        "cache",
        "semantic cache lookups (p50/p99, throughput), insert rate and recall@1 on SQLite and \
         PostgreSQL + pgvector at 10k to 1M entries",
    ),
    ("http", "GET /health with metrics on vs off (wrk)"),
    (
        "materializer",
        "the wasm materializer in Chromium vs fast-json-patch (and natively), patch appends, SSE \
         delivery to many subscribers",
    ),
    (
        "plugins",
        "the hello plugin in Patchbay vs wasmtime serve vs native actix-web (wrk), then `slow` \
         at 10x capacity",
    ),
];

pub fn run(args: &[String]) -> Result<()> {
    let Some((scenario, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask bench <scenario> [--flag value ...]\n{}",
            scenarios()
        );
    };
    let flags = Flags::parse(rest)?;
    match scenario.as_str() {
        "cache" => cache::run(&flags),
        "http" => http::run(&flags),
        "materializer" => materializer::run(&flags),
        "plugins" => plugins::run(&flags),
        other => bail!("unknown bench scenario `{other}`\n{}", scenarios()),
    }
}

fn scenarios() -> String {
    let lines: Vec<String> = SCENARIOS
        .iter()
        .map(|(name, what)| format!("  {name:<14} {what}"))
        .collect();
    format!("scenarios:\n{}", lines.join("\n"))
}

/// `--name value` pairs; each scenario reads the ones it knows and rejects the rest.
pub struct Flags {
    pairs: Vec<(String, String)>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut pairs = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument `{arg}` (flags look like `--rounds 3`)");
            };
            // Accept both `--rounds 3` and `--rounds=3`.
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let value = iter
                        .next()
                        .with_context(|| format!("--{name} needs a value"))?;
                    (name.to_string(), value.clone())
                }
            };
            pairs.push((name, value));
        }
        Ok(Flags {
            pairs,
            used: Default::default(),
        })
    }

    /// The value of `--name`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.used.borrow_mut().push(name.to_string());
        match self.pairs.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => value
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {value}: {e}")),
            None => Ok(default),
        }
    }

    /// Fails on flags no `get` asked for: a typo must not silently run the defaults.
    pub fn reject_unknown(&self) -> Result<()> {
        let used = self.used.borrow();
        if let Some((name, _)) = self.pairs.iter().find(|(n, _)| !used.contains(n)) {
            bail!("unknown flag --{name} (known: --{})", used.join(", --"));
        }
        Ok(())
    }
}

/// Builds the release binaries every scenario runs (`patchbay`, `native-hello`) in one
/// invocation: building a different set of packages changes Cargo's feature resolution and
/// recompiles much of the dependency tree, so all scenarios build the same set.
pub fn build_release() -> Result<std::path::PathBuf> {
    crate::util::run(crate::cargo::cargo()?.args([
        "build",
        "--release",
        "-p",
        "patchbay",
        "-p",
        "native-hello",
    ]))?;
    Ok(crate::cargo::target_dir()?.join("release"))
}

/// The median of some measurements (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_parse_both_forms_and_reject_unknown() {
        let flags = Flags::parse(&args("--rounds 5 --duration=2")).unwrap();
        assert_eq!(flags.get("rounds", 3u32).unwrap(), 5);
        assert_eq!(flags.get("duration", 10u64).unwrap(), 2);
        assert_eq!(flags.get("connections", 64u32).unwrap(), 64);
        flags.reject_unknown().unwrap();

        let flags = Flags::parse(&args("--roudns 5")).unwrap();
        assert_eq!(flags.get("rounds", 3u32).unwrap(), 3);
        assert!(flags.reject_unknown().is_err());

        assert!(Flags::parse(&args("--rounds")).is_err());
        assert!(Flags::parse(&args("rounds 3")).is_err());
        let flags = Flags::parse(&args("--rounds x")).unwrap();
        assert!(flags.get("rounds", 3u32).is_err());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
