//! `/big?bytes=N` -> N bytes (default 10 MiB) of a repeating pattern with a content-length.
//!
//! The guest writes 64 KiB at a time and waits whenever the host's stream is full, so a slow
//! client throttles the guest and neither side ever buffers the whole response.

use patchbay_guest::{CHUNK, query_u64, start};
use std::io::Write;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Big;

/// Printable so a truncated or shifted body is easy to spot by eye; 64 is a power of two so
/// every chunk starts at the same phase of the pattern.
const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";

impl Guest for Big {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let total = query_u64(&request, "bytes", 10 * 1024 * 1024);
        let chunk: Vec<u8> = PATTERN.iter().copied().cycle().take(CHUNK).collect();
        let len = total.to_string();

        let mut response = start(
            out,
            200,
            &[
                ("content-type", b"application/octet-stream"),
                ("content-length", len.as_bytes()),
            ],
        );
        let mut left = total;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            // `write_all` goes through `check_write` and blocks on the stream's pollable when
            // the host has no room, which is the back-pressure.
            if response.stream().write_all(&chunk[..n]).is_err() {
                return; // client gone; dropping the unfinished body aborts the response
            }
            left -= n as u64;
        }
        let _ = response.finish();
    }
}

wasip2::http::proxy::export!(Big);
