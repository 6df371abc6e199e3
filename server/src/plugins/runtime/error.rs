//! Load and execution errors, and how wasmtime's errors map onto them.

use wasmtime::{Trap, WasmBacktrace};

/// Why a component was refused: always the uploader's mistake (400).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 (or run \
         `wasm-tools component new`) so it exports wasi:http/incoming-handler"
    )]
    NotAComponent,
    #[error("the sha256 of the component is {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component does not export wasi:http/incoming-handler (the wasi:http/proxy world){0}"
    )]
    MissingExport(String),
    #[error("the component imports {import}, {detail}")]
    UnsupportedImport { import: String, detail: String },
}

/// Why a request failed inside the runtime. Each costs only its own request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The guest trapped (a panic, `unreachable`, an invalid host call, `exit` with non-zero...).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// The request's deadline passed (guest CPU, host waits, or body streaming).
    #[error("the plugin ran past its deadline")]
    Timeout,
    /// The guest wanted more linear memory than its limit.
    #[error("the plugin exceeded its memory limit")]
    Memory,
    #[error("the plugin overflowed its stack")]
    StackOverflow,
    /// The guest never set a response, set an error instead of one, or sent an invalid one.
    #[error("the plugin returned a malformed response: {0}")]
    BadResponse(String),
    /// The caller's body exceeded `max_request_body` (the caller's fault: 413).
    #[error("the request body exceeds the limit of {limit} bytes")]
    RequestBodyTooLarge { limit: u64 },
    /// The guest's body exceeded `max_response_body` (the plugin's fault).
    #[error("the plugin's response body exceeds the limit of {limit} bytes")]
    ResponseBodyTooLarge { limit: u64 },
    #[error("plugin execution failed: {0}")]
    Internal(String),
}

impl ExecError {
    /// A stable, low-cardinality name: fit for a metric's `outcome` label or a problem type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Trap(_) => "trap",
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::StackOverflow => "stack_overflow",
            Self::BadResponse(_) => "bad_response",
            Self::RequestBodyTooLarge { .. } => "request_too_large",
            Self::ResponseBodyTooLarge { .. } => "response_too_large",
            Self::Internal(_) => "internal",
        }
    }
}

/// Maps an error out of instantiation or the guest's `handle` call.
///
/// `memory_denied` says the store's limiter refused a memory growth: whatever the guest did next
/// (Rust aborts with `unreachable`, other languages raise their own trap), it ran out of memory.
pub(super) fn classify(err: &wasmtime::Error, memory_denied: bool) -> ExecError {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => ExecError::Timeout,
            Trap::StackOverflow => ExecError::StackOverflow,
            Trap::AllocationTooLarge => ExecError::Memory,
            _ if memory_denied => ExecError::Memory,
            trap => ExecError::Trap(describe_trap(trap, err)),
        };
    }
    if memory_denied {
        return ExecError::Memory;
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return ExecError::Trap(format!("the plugin exited with status {}", exit.0));
    }
    // Anything else came out of a host call the guest made wrongly (a resource it no longer
    // owns, a write beyond its budget...): still the guest's failure.
    ExecError::Trap(format!("{err:#}"))
}

/// The trap and the innermost guest function that has a name, e.g.
/// "wasm `unreachable` instruction executed in `__rust_start_panic`".
fn describe_trap(trap: &Trap, err: &wasmtime::Error) -> String {
    let message = trap.to_string();
    let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
    let frame = err.downcast_ref::<WasmBacktrace>().and_then(|bt| {
        bt.frames()
            .iter()
            .find_map(|f| f.func_name().map(str::to_owned))
    });
    match frame {
        Some(name) => format!("{message} in `{name}`"),
        None => message.to_owned(),
    }
}
