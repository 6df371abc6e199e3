//! HTTP metrics: requests, duration, sizes and in-flight count, labelled by route template.
//!
//! Only installed when metrics are enabled, so a disabled server pays nothing here.

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};

use crate::plugins::dispatch::RouteTemplate;
use crate::telemetry::names::*;

/// Requests no route matched share this `path` value.
pub const UNMATCHED: &str = "unmatched";

pub async fn middleware(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let request_bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let in_flight = InFlight::enter();
    let result = next.call(req).await;
    drop(in_flight);
    let (path, status, response_bytes) = match &result {
        Ok(res) => (
            res.request()
                .match_pattern()
                .or_else(|| res.request().extensions().get::<RouteTemplate>().map(|t| t.0.to_string())),
            res.status(),
            match res.response().body().size() {
                BodySize::Sized(n) => Some(n),
                _ => None,
            },
        ),
        Err(err) => (None, err.as_response_error().status_code(), None),
    };
    let path = path.unwrap_or_else(|| UNMATCHED.to_string());
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "path" => path.clone(), "status_code" => status_label(status.as_u16()))
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "path" => path.clone()).record(elapsed);
    if let Some(n) = request_bytes {
        metrics::histogram!(HTTP_REQUEST_SIZE_BYTES, "method" => method, "path" => path.clone()).record(n as f64);
    }
    if let Some(n) = response_bytes {
        metrics::histogram!(HTTP_RESPONSE_SIZE_BYTES, "method" => method, "path" => path).record(n as f64);
    }
    result
}

/// Standard methods keep their name; anything else is one value, so clients cannot mint series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Status codes are a bounded set (100..=599), interned so labels need no allocation.
fn status_label(code: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|c| &*format!("{c}").leak()).collect());
    labels.get(usize::from(code)).copied().unwrap_or("other")
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(HTTP_REQUESTS_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}
