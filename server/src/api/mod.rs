//! One module per resource; each exposes `configure`. Handlers parse, check roles and map
//! errors; the rules live in the services they call.

pub mod cache;
pub mod cas;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod pagination;
pub mod plugins;
pub mod ui;
pub mod workflows;
pub mod workspaces;

/// The prefix of the versioned JSON API.
pub const API_PREFIX: &str = "/api/v1";
