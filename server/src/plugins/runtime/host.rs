//! What a guest's store holds: its WASI context (nothing granted), wasi:http state, the memory
//! limiter and the outbound allow-list; and the linker that exposes them.

use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::RequestLimits;
use super::log::GuestLog;

/// Resources one request may hold at once (streams, fields, pollables...): bounds host memory
/// a guest can pin through handles.
const MAX_RESOURCES: usize = 10_000;
/// Table elements a store may grow to; the pool bounds each table anyway.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Response body writes are at most this big and at most this many are in flight: bounds the
/// host memory a response holds to about 5 x 256 KiB while keeping large bodies fast.
const BODY_CHUNK: usize = 256 << 10;
const BODY_CHUNKS_IN_FLIGHT: usize = 4;

pub(crate) struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    pub(super) limiter: MemoryLimiter,
}

impl Host {
    pub(super) fn new(limits: &RequestLimits, memory_bytes: u64, plugin: &Arc<str>) -> Self {
        let (stdout, stderr) = GuestLog::pair(plugin);
        let mut wasi = WasiCtx::builder();
        wasi.envs(limits.env.as_slice())
            .stdout(stdout)
            .stderr(stderr)
            // Linked so guests that import sockets run, but refused if they try.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            table,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                allowed: limits.allowed_outbound_hosts.clone(),
                plugin: plugin.clone(),
            },
            limiter: MemoryLimiter::new(memory_bytes),
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// All of WASI 0.2 (cli, clocks, random, io, filesystem, sockets) and wasi:http. Filesystem and
/// sockets have nothing behind them: no preopened directory, no permitted address.
pub(super) fn build_linker(engine: &Engine) -> anyhow::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// Caps the store's linear memory, all memories together, and remembers a refusal so the trap
/// that follows is reported as [`super::ExecError::Memory`].
pub(super) struct MemoryLimiter {
    limit: usize,
    used: usize,
    pub(super) denied: bool,
}

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            denied: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.denied = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Past the pool's slot size: the same out-of-memory as far as the guest is concerned.
        self.denied = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// wasi:http behaviour for one request: outbound calls only to allowed hosts.
struct Hooks {
    allowed: Vec<String>,
    plugin: Arc<str>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        if !outbound_allowed(&self.allowed, uri) {
            tracing::info!(
                target: "patchbay::guest",
                plugin = %self.plugin,
                host = uri.host().unwrap_or(""),
                "outbound request denied: host not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        BODY_CHUNKS_IN_FLIGHT
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }
}

/// Whether `uri` matches an entry of the allow-list: `*`, `host`, `host:port`, `*.domain`
/// (subdomains only), each optionally prefixed by `http://` or `https://` to pin the scheme.
/// Host names compare case-insensitively; an entry without a port allows any port.
pub(super) fn outbound_allowed(allowed: &[String], uri: &http::Uri) -> bool {
    let Some(host) = uri.host() else { return false };
    let host = host.to_ascii_lowercase();
    let scheme = uri.scheme_str().unwrap_or("https");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (entry_scheme, rest) = match entry.split_once("://") {
            Some((s, rest)) => (Some(s.to_owned()), rest.to_owned()),
            None => (None, entry.clone()),
        };
        if entry_scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        if rest == "*" {
            return true;
        }
        let (entry_host, entry_port) = split_port(&rest);
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        match entry_host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == entry_host,
        }
    })
}

/// `host:port` -> (`host`, port); IPv6 literals keep their brackets (`[::1]:8080`).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (entry, None),
            }
        }
        _ => (entry, None),
    }
}
