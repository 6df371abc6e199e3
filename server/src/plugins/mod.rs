//! WebAssembly plugins: manifests, the route table, per-route pools, the registry that keeps
//! them in the store, and (in `runtime`) the wasmtime host that runs wasi:http components.

pub mod dispatch;
mod http_compat;
pub mod manifest;
pub mod pool;
pub mod registry;
pub mod routes;
pub mod runtime;
