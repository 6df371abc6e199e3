//! Patchbay: an actix-web server that people extend with WebAssembly. See ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod auth;
pub mod cas;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod workflows;
#[doc(hidden)]
pub mod testing;
