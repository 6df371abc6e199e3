//! From component bytes to a [`Plugin`]: verify, compile or load from the cache, check the
//! exports and imports, link, and pre-instantiate.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::host::Host;
use super::{LoadError, Runtime, validate};

/// A loaded component, pre-instantiated: ready to instantiate per request. Cheap to clone.
#[derive(Clone)]
pub struct Plugin(Arc<Inner>);

struct Inner {
    digest: String,
    pre: ProxyPre<Host>,
    from_cache: bool,
}

impl Plugin {
    /// The component's sha256, lower-case hex.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }

    /// Whether the precompiled artifact came from the cache (no compilation happened).
    pub fn from_cache(&self) -> bool {
        self.0.from_cache
    }

    pub(super) fn pre(&self) -> &ProxyPre<Host> {
        &self.0.pre
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.0.digest)
            .field("from_cache", &self.0.from_cache)
            .finish_non_exhaustive()
    }
}

pub(super) fn load(rt: &Runtime, wasm: &[u8], digest_hex: &str) -> Result<Plugin, LoadError> {
    validate::check_kind(wasm)?;
    // The digest names the cache file: trusting a wrong one would run another component's code.
    let digest = hex::encode(Sha256::digest(wasm));
    if !digest.eq_ignore_ascii_case(digest_hex) {
        return Err(LoadError::DigestMismatch {
            expected: digest_hex.to_owned(),
            actual: digest,
        });
    }

    let cached = rt
        .cache
        .as_ref()
        .and_then(|cache| cache.load(&rt.engine, &digest));
    let from_cache = cached.is_some();
    let component = match cached {
        Some(component) => component,
        None => {
            rt.compiles.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let component = Component::new(&rt.engine, wasm)
                .map_err(|err| LoadError::Invalid(format!("{err:#}")))?;
            tracing::debug!(
                digest,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compiled a plugin"
            );
            component
        }
    };

    validate::check_exports(&rt.engine, &component)?;
    validate::check_imports(&rt.engine, &component)?;
    let pre = rt
        .linker
        .instantiate_pre(&component)
        .map_err(validate::link_error)?;
    let pre = ProxyPre::new(pre).map_err(|err| LoadError::MissingExport(format!(": {err:#}")))?;

    // Only components that passed every check reach the disk.
    if let (Some(cache), false) = (&rt.cache, from_cache) {
        let stored = component.serialize().map_err(std::io::Error::other);
        if let Err(err) = stored.and_then(|artifact| cache.store(&digest, &artifact)) {
            tracing::warn!(digest, error = %err, "could not cache a precompiled plugin; the next start compiles it again");
        }
    }

    Ok(Plugin(Arc::new(Inner {
        digest,
        pre,
        from_cache,
    })))
}
