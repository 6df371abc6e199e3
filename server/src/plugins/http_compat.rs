//! Conversions between actix-web's `http` 0.2 types and wasmtime-wasi-http's `http` 1 types.
//! The two crates are the same design at different major versions; values cross by their
//! textual or byte form, which both sides have already validated.

use actix_web::http as actix;

pub fn method(m: &actix::Method) -> http::Method {
    http::Method::from_bytes(m.as_str().as_bytes()).unwrap_or(http::Method::GET)
}

pub fn uri(u: &actix::Uri) -> http::Uri {
    let path = u.path_and_query().map_or("/", |pq| pq.as_str());
    http::Uri::try_from(path).unwrap_or_else(|_| http::Uri::from_static("/"))
}

pub fn status(s: http::StatusCode) -> actix::StatusCode {
    actix::StatusCode::from_u16(s.as_u16()).unwrap_or(actix::StatusCode::BAD_GATEWAY)
}

/// A request header for the guest; None for the rare name or value one side rejects.
pub fn to_guest_header(
    name: &actix::header::HeaderName,
    value: &actix::header::HeaderValue,
) -> Option<(http::HeaderName, http::HeaderValue)> {
    Some((
        http::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
        http::HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ))
}

/// A response header for the caller.
pub fn from_guest_header(
    name: &http::HeaderName,
    value: &http::HeaderValue,
) -> Option<(actix::header::HeaderName, actix::header::HeaderValue)> {
    Some((
        actix::header::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
        actix::header::HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ))
}
