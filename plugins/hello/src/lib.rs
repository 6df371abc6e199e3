//! `GET /hello/{name}` -> `Hello, {name}!`
//!
//! The benchmark plugin: kept minimal so it measures the host, not the guest. It echoes
//! `x-patchbay-request-id` so tests can check the host passes its request id through, and
//! says in `x-instance-requests` how many requests its instance has served: with a fresh
//! instance per request that is always 1, which the host's tests check (an instance reused, or
//! a pool slot whose memory was not reset, would count on).

use patchbay_guest::{header, path, percent_decode, start};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

/// Requests this instance has served.
static SERVED: AtomicU32 = AtomicU32::new(0);

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = path(&request);
        // The host routes `/hello/{name}` here; the name is whatever follows the last slash.
        let name = percent_decode(path.rsplit('/').next().unwrap_or_default(), false);
        let body = format!("Hello, {name}!");
        let len = body.len().to_string();

        let served = (SERVED.fetch_add(1, Ordering::Relaxed) + 1).to_string();

        let mut headers: Vec<(&str, &[u8])> = vec![
            ("content-type", b"text/plain; charset=utf-8"),
            ("content-length", len.as_bytes()),
            ("x-instance-requests", served.as_bytes()),
        ];
        let request_id = header(&request, "x-patchbay-request-id");
        if let Some(id) = &request_id {
            headers.push(("x-patchbay-request-id", id.as_bytes()));
        }

        let mut response = start(out, 200, &headers);
        if response.stream().write_all(body.as_bytes()).is_ok() {
            let _ = response.finish();
        }
    }
}

wasip2::http::proxy::export!(Hello);
