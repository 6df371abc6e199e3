//! Black-box tests of the `patchbay` binary over HTTP, on SQLite and PostgreSQL.

mod support;

mod auth;
mod basics;
mod cas;
mod hostile;
mod lifecycle;
mod metrics;
mod workflows;
