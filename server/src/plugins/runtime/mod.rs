//! The wasmtime execution core: compiles wasi:http components once, pre-instantiates them, and
//! runs each request in a fresh instance with hard limits.
//!
//! What must stay true:
//! - One [`Runtime`] per server. It owns the engine (pooling allocator, epoch interruption), the
//!   linker (WASI 0.2 with nothing granted, plus wasi:http), the epoch ticker and the *guest
//!   runtime*: a tokio runtime of its own on which every guest instruction runs, so a busy guest
//!   never stalls an actix worker.
//! - [`Runtime::load`] rejects, with an error that names the problem, anything that is not a
//!   component exporting `wasi:http/incoming-handler` or that imports what the host does not link.
//! - [`Runtime::handle`] instantiates per request from the plugin's `ProxyPre`; the request's
//!   deadline covers everything (epoch interruption for guest CPU, a timer for host waits), memory
//!   is capped per store, and bodies stream both ways with their sizes enforced.
//! - A failing guest costs only its own request: every failure is an [`ExecError`], never a panic.

mod body;
mod cache;
mod engine;
mod error;
mod exec;
mod host;
mod load;
mod log;
mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use body::{RequestBody, ResponseBody};
pub use error::{ExecError, LoadError};
pub use load::Plugin;
pub use validate::{HOST_WASI_VERSIONS, check_import};

use cache::ArtifactCache;
use host::Host;

/// Engine-wide settings, fixed for the life of the [`Runtime`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances that can be alive at once across all plugins: the pooling allocator's slots.
    pub max_instances: u32,
    /// The most linear memory one instance may ever have; a request's own limit is capped by it.
    pub max_memory_bytes_per_instance: u64,
    /// Wasm call-stack size; deeper recursion traps with [`ExecError::StackOverflow`].
    pub max_stack_bytes: usize,
    /// How often the epoch advances: the granularity of CPU deadlines and of guest time slices.
    pub epoch_tick: Duration,
    /// Where precompiled artifacts are kept, so a restart never recompiles; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Worker threads of the guest runtime; 0 means one per CPU.
    pub guest_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes_per_instance: 256 << 20,
            max_stack_bytes: 512 << 10,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            guest_threads: 0,
        }
    }
}

/// Per-request limits and context, usually the route's manifest limits.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Wall clock for the whole request: instantiation, guest CPU, host waits and body streaming.
    pub timeout: Duration,
    /// Linear memory of the instance (all its memories together); capped by the engine's slot size.
    pub memory_bytes: u64,
    pub max_request_body: u64,
    pub max_response_body: u64,
    /// The guest's environment variables (wasi:cli/environment).
    pub env: Vec<(String, String)>,
    /// Hosts the guest may call through wasi:http/outgoing-handler: `host`, `host:port`,
    /// `*.domain`, optionally with `http://` or `https://` in front, or `*` for any. Empty denies
    /// all; a denied request fails inside the guest with `error-code.HTTP-request-denied`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Tags the guest's stdout/stderr lines in the log (`plugin` field).
    pub plugin_name: String,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_request_body: 10 << 20,
            max_response_body: 100 << 20,
            env: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            plugin_name: String::new(),
        }
    }
}

/// Anything held for a request's instance: see [`GuestRequest::instance_guard`].
pub type InstanceGuard = Box<dyn Send>;

/// A request as the guest will see it.
pub struct GuestRequest {
    pub method: http::Method,
    /// Path and query; when it carries a scheme and authority the guest sees those, otherwise
    /// `http` and the `Host` header (or `localhost`).
    pub uri: http::Uri,
    /// `Authorization` is dropped before the guest sees them.
    pub headers: http::HeaderMap,
    pub body: RequestBody,
    /// Dropped once this request's instance is gone, never before (after the body has ended,
    /// or once an abandoned request's guest has been torn down): a pool permit put here is
    /// released exactly when the engine slot is free again.
    pub instance_guard: Option<InstanceGuard>,
}

impl GuestRequest {
    pub fn new(
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        body: RequestBody,
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            body,
            instance_guard: None,
        }
    }
}

/// The response head, ready; the body streams afterwards.
pub struct GuestResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    /// Ends with an [`ExecError`] item if the guest fails after the head was sent. When it has
    /// ended the instance is gone; dropping it early aborts the guest.
    pub body: ResponseBody,
}

/// The execution core. Cheap to share behind an `Arc`; see the module docs.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Host>,
    cache: Option<ArtifactCache>,
    guest: engine::GuestRuntime,
    max_memory_bytes: u64,
    compiles: AtomicU64,
}

impl Runtime {
    pub fn new(cfg: EngineConfig) -> anyhow::Result<Self> {
        let engine = engine::build_engine(&cfg)?;
        let linker = host::build_linker(&engine)?;
        let cache = match &cfg.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine)?),
            None => None,
        };
        engine::spawn_epoch_ticker(&engine, cfg.epoch_tick)?;
        let guest = engine::GuestRuntime::new(cfg.guest_threads)?;
        Ok(Self {
            engine,
            linker,
            cache,
            guest,
            max_memory_bytes: cfg.max_memory_bytes_per_instance,
            compiles: AtomicU64::new(0),
        })
    }

    /// Validates and compiles a component, or loads its precompiled artifact from the cache.
    /// `digest_hex` is the sha256 of `wasm` (verified). CPU-heavy on a cache miss: call it from a
    /// blocking thread (`spawn_blocking`), never on an async worker.
    pub fn load(&self, wasm: &[u8], digest_hex: &str) -> Result<Plugin, LoadError> {
        load::load(self, wasm, digest_hex)
    }

    /// Runs one request on the guest runtime and returns once the response head is ready. The
    /// guest keeps running while the body streams; dropping this future or the body aborts it.
    pub async fn handle(
        &self,
        plugin: &Plugin,
        limits: &RequestLimits,
        req: GuestRequest,
    ) -> Result<GuestResponse, ExecError> {
        exec::handle(self, plugin, limits, req).await
    }

    /// How many components this runtime compiled (cache hits do not count).
    pub fn compile_count(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }
}
