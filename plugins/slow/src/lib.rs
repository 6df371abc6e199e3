//! `/slow?ms=N` -> sleeps N ms (default 1000) without using CPU, then `slept N ms`.
//!
//! Holds its instance for a known time, which is what the pool, queue and backpressure tests
//! need: the sleep is a host wait (monotonic-clock pollable), so it also shows the deadline
//! covers host calls and not only guest CPU.

use patchbay_guest::{query_u64, text};
use wasip2::clocks::monotonic_clock::subscribe_duration;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Slow;

impl Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let ms = query_u64(&request, "ms", 1000);
        subscribe_duration(ms.saturating_mul(1_000_000)).block();
        text(out, 200, &format!("slept {ms} ms"));
    }
}

wasip2::http::proxy::export!(Slow);
