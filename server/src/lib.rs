//! Patchbay: an actix-web server that people extend with WebAssembly. See ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cas;
pub mod cli_push;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod plugins;
pub mod server;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod workflows;
