//! `POST|PUT /echo` -> the request body, streamed back chunk by chunk.
//!
//! Tests use it to prove bodies are streamed both ways: the guest holds at most one chunk, so a
//! body far larger than the instance's memory limit still echoes.

use patchbay_guest::{copy, header, start};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingBody, IncomingRequest, ResponseOutparam};

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let content_type =
            header(&request, "content-type").unwrap_or_else(|| "application/octet-stream".into());
        let Ok(body) = request.consume() else {
            return patchbay_guest::text(out, 500, "request body already consumed\n");
        };
        let Ok(input) = body.stream() else {
            return patchbay_guest::text(out, 500, "request body stream already taken\n");
        };

        // No content-length: the response is chunked, so nothing needs the whole body up front.
        let mut response = start(out, 200, &[("content-type", content_type.as_bytes())]);
        let copied = copy(&input, response.stream());
        drop(input); // a child of `body`: must go before `finish` consumes the parent
        drop(IncomingBody::finish(body));
        match copied {
            Ok(_) => {
                let _ = response.finish();
            }
            // Headers are already sent; dropping the unfinished body makes the host abort the
            // response instead of passing a truncated body off as complete.
            Err(e) => eprintln!("echo: copy failed: {e}"),
        }
    }
}

wasip2::http::proxy::export!(Echo);
