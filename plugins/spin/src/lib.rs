//! `/spin` -> never returns: a CPU-bound endless loop the host must cut off at its deadline.

use std::hint::black_box;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Spin;

impl Guest for Spin {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        // `black_box` makes each iteration observable, so the optimiser keeps a real loop
        // (with its epoch-interruption check at the loop header) instead of folding it away.
        let mut counter = 0u64;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

wasip2::http::proxy::export!(Spin);
