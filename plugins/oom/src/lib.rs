//! `/oom` -> allocates until linear memory runs out (the host's memory limit must stop it).
//!
//! `?mb=N` stops after N MiB and answers 200 instead, so tests can show that allocating just
//! under the limit still works.

use patchbay_guest::{query_u64, text};
use std::hint::black_box;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Oom;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

impl Guest for Oom {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let limit_mb = query_u64(&request, "mb", u64::MAX);
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        while (hoard.len() as u64) < limit_mb {
            // Allocation failure aborts (a trap) once `memory.grow` is refused by the host.
            let mut chunk = vec![0u8; MIB];
            // Touch every page so the memory is really committed, not just reserved.
            for i in (0..MIB).step_by(PAGE) {
                chunk[i] = 1;
            }
            hoard.push(black_box(chunk));
        }
        text(out, 200, &format!("allocated {} MiB\n", hoard.len()));
    }
}

wasip2::http::proxy::export!(Oom);
