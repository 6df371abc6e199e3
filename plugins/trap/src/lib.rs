//! `/trap` -> the guest fails; the host must answer for it and stay healthy.
//!
//! `?kind=` picks the failure, one per containment case the host distinguishes:
//! - `panic` (default): a Rust panic, which on wasm aborts with an `unreachable` trap
//! - `unreachable`: the bare wasm instruction, no panic machinery or stderr message
//! - `stack`: unbounded recursion until the wasm call stack overflows
//! - `no-response`: returns without ever setting a response (a malformed response)
//! - `after-headers`: sends 200 and part of a body, then panics mid-stream

use patchbay_guest::{query_param, start};
use std::hint::black_box;
use std::io::Write;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

/// Recurses forever. The call goes through a function pointer laundered by `black_box`, so
/// LLVM can neither turn the recursion into a loop nor prove it never returns.
fn recurse(depth: u64) -> u64 {
    let next: fn(u64) -> u64 = black_box(recurse);
    next(depth + 1).wrapping_add(black_box(depth))
}

/// The bare `unreachable` instruction; natively (unit tests, clippy) an abort stands in.
fn unreachable_instruction() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

impl Guest for Trap {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match query_param(&request, "kind").as_deref().unwrap_or("panic") {
            "unreachable" => unreachable_instruction(),
            "stack" => {
                black_box(recurse(0));
            }
            // Dropping the outparam unset is exactly what a buggy guest does.
            "no-response" => drop(out),
            "after-headers" => {
                let mut response = start(out, 200, &[("content-type", b"text/plain")]);
                let _ = response.stream().write_all(b"partial body, then a trap\n");
                let _ = response.stream().blocking_flush();
                panic!("trap plugin: trapping after the response headers were sent");
            }
            _ => panic!("trap plugin: trapping on purpose"),
        }
    }
}

wasip2::http::proxy::export!(Trap);
