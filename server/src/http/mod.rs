//! Middleware and extractors, in the order a request meets them: request id, metrics, client
//! guards (header size, body deadline), then authentication on `/api`.

pub mod auth;
pub mod body_deadline;
pub mod guards;
pub mod head_deadline;
pub mod metrics;
pub mod request_id;
