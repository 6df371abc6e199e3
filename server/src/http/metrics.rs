//! HTTP metrics: requests, duration, sizes and in-flight count, labelled by route template.
//!
//! Only installed when metrics are enabled, so a disabled server pays nothing here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
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

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
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
            res.request().match_pattern().or_else(|| {
                res.request()
                    .extensions()
                    .get::<RouteTemplate>()
                    .map(|t| t.0.to_string())
            }),
            res.status(),
            match res.response().body().size() {
                BodySize::Sized(n) => Some(n),
                _ => None,
            },
        ),
        Err(err) => (None, err.as_response_error().status_code(), None),
    };
    let handles = handles(
        method,
        path.as_deref().unwrap_or(UNMATCHED),
        status.as_u16(),
    );
    handles.requests.increment(1);
    handles.duration.record(started.elapsed().as_secs_f64());
    if let Some(n) = request_bytes {
        handles.request_size.record(n as f64);
    }
    if let Some(n) = response_bytes {
        handles.response_size.record(n as f64);
    }
    result
}

/// The series one (method, route, status) records into.
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    request_size: metrics::Histogram,
    response_size: metrics::Histogram,
}

type HandleCache = HashMap<String, HashMap<(&'static str, u16), Rc<Handles>>>;

thread_local! {
    /// Registry handles per worker thread. Looking a series up in the recorder builds a key
    /// with owned labels and hashes it on every call; with the handles cached the hot path is
    /// an atomic add and a histogram push. Measured with `cargo xtask bench http`. The cache is
    /// bounded like the series themselves: routes x methods x status codes.
    static HANDLES: RefCell<HandleCache> = RefCell::new(HashMap::new());
}

fn handles(method: &'static str, path: &str, status: u16) -> Rc<Handles> {
    HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(found) = cache.get(path).and_then(|by| by.get(&(method, status))) {
            return Rc::clone(found);
        }
        let path_label = path.to_string();
        let created = Rc::new(Handles {
            requests: metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "path" => path_label.clone(), "status_code" => status_label(status)),
            duration: metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "path" => path_label.clone()),
            request_size: metrics::histogram!(HTTP_REQUEST_SIZE_BYTES, "method" => method, "path" => path_label.clone()),
            response_size: metrics::histogram!(HTTP_RESPONSE_SIZE_BYTES, "method" => method, "path" => path_label.clone()),
        });
        cache.entry(path_label).or_default().insert((method, status), Rc::clone(&created));
        created
    })
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

thread_local! {
    static IN_FLIGHT: metrics::Gauge = metrics::gauge!(HTTP_REQUESTS_IN_FLIGHT);
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.with(|g| g.increment(1.0));
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with(|g| g.decrement(1.0));
    }
}
