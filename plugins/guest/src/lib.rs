//! Helpers shared by Patchbay's example guest components.
//!
//! The raw `wasip2` bindings make every response a five-step dance (fields, response, body,
//! stream, finish) with child resources that must be dropped in the right order; these
//! helpers do it once, correctly, so each plugin stays a few lines of intent.

use std::io::{Read, Write};

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// Chunk size for body copies: large enough to keep host calls rare, small enough that a guest
/// never holds more than one chunk of a body in memory.
pub const CHUNK: usize = 64 * 1024;

/// A response whose headers have been sent and whose body is still being written.
///
/// Dropping it without [`Streaming::finish`] tells the host the body is corrupt, which is the
/// right outcome when the guest gives up half-way (e.g. the client went away).
pub struct Streaming {
    // Declared before `body`: the stream is a child resource and must be dropped first.
    stream: OutputStream,
    body: OutgoingBody,
}

impl Streaming {
    pub fn stream(&mut self) -> &mut OutputStream {
        &mut self.stream
    }

    /// Flushes what is buffered and completes the body (no trailers).
    pub fn finish(self) -> Result<(), String> {
        let Streaming { stream, body } = self;
        // Explicitly the blocking flush: `OutputStream` also has an inherent `flush` that only
        // *starts* a flush, and inherent methods shadow `io::Write::flush`.
        stream.blocking_flush().map_err(|e| format!("{e:?}"))?;
        drop(stream);
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))
    }
}

/// Sends status and headers now and returns the body to stream into.
///
/// Setting the response before writing is what makes the body streamed: the host can start
/// sending bytes to the client while the guest is still producing them.
pub fn start(out: ResponseOutparam, status: u16, headers: &[(&str, &[u8])]) -> Streaming {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    // Header names here are literals or copied from valid requests; a failure is a plugin bug.
    let fields = Fields::from_list(&list).expect("valid response headers");
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("valid status code");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream taken once");
    Streaming { stream, body }
}

/// Sends a complete response with a known body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let len = body.len().to_string();
    let mut s = start(
        out,
        status,
        &[
            ("content-type", content_type.as_bytes()),
            ("content-length", len.as_bytes()),
        ],
    );
    // A write error means the client is gone; there is nobody left to report it to.
    if s.stream().write_all(body).is_ok() {
        let _ = s.finish();
    }
}

/// Sends a plain-text response.
pub fn text(out: ResponseOutparam, status: u16, body: &str) {
    respond(out, status, "text/plain; charset=utf-8", body.as_bytes());
}

/// Copies `from` to `to` one chunk at a time, as chunks arrive; returns the bytes copied.
///
/// `blocking_read` returns whatever is available (up to `CHUNK`), and `OutputStream`'s
/// `io::Write` impl waits on `check_write` before each write, so memory stays at one chunk and
/// a slow reader on the far side slows the copy down instead of piling data up in the guest.
pub fn copy(from: &InputStream, to: &mut OutputStream) -> Result<u64, String> {
    let mut total = 0u64;
    loop {
        match from.blocking_read(CHUNK as u64) {
            Ok(chunk) => {
                to.write_all(&chunk).map_err(|e| e.to_string())?;
                total += chunk.len() as u64;
            }
            Err(StreamError::Closed) => return Ok(total),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

/// Reads a request body completely, refusing bodies larger than `limit` bytes.
pub fn read_body(request: &IncomingRequest, limit: usize) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|()| "body already consumed")?;
    let mut buf = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "body stream already taken")?;
        // Reading one byte past the limit tells "exactly at the limit" from "over it".
        (&mut stream)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        if buf.len() > limit {
            return Err(format!("request body larger than {limit} bytes"));
        }
    }
    Ok(buf)
}

/// The request's path without its query string, `/` when absent.
pub fn path(request: &IncomingRequest) -> String {
    let pq = request.path_with_query().unwrap_or_default();
    match pq.split_once('?') {
        Some((p, _)) => p.to_string(),
        None if pq.is_empty() => "/".to_string(),
        None => pq,
    }
}

/// The first value of query parameter `key`, percent-decoded (`+` is a space).
pub fn query_param(request: &IncomingRequest, key: &str) -> Option<String> {
    let pq = request.path_with_query()?;
    let (_, query) = pq.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == key).then(|| percent_decode(v, true))
    })
}

/// A numeric query parameter, or `default` when it is absent or not a number.
pub fn query_u64(request: &IncomingRequest, key: &str, default: u64) -> u64 {
    query_param(request, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// First value of a request header, if it is present and valid UTF-8.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Decodes `%XX` escapes (and `+` when `plus_is_space`); invalid escapes are kept verbatim and
/// invalid UTF-8 is replaced, because a greeting should never fail on a bad byte.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match b {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%e2%9c%93", false), "\u{2713}");
    }
}
