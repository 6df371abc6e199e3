//! `/outbound?url=...` -> GETs `url` through the host (wasi:http outgoing-handler) and answers
//! with its status, content-type and body (streamed).
//!
//! Any failure of the outgoing request answers 502 with the wasi:http `error-code` in the body,
//! so tests can see what the host said, e.g. `HttpRequestDenied` for a host name that is not on
//! the plugin's allow-list.

use patchbay_guest::{copy, query_param, start, text};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, IncomingResponse, Method, OutgoingRequest,
    ResponseOutparam, Scheme,
};

struct Outbound;

/// `scheme://authority/path?query`, split the way wasi:http wants it. Deliberately minimal:
/// no userinfo or fragments, which the host would refuse anyway.
fn split_url(url: &str) -> Option<(Scheme, &str, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // wasi:http wants an origin-form target, which always starts with `/`.
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    (!authority.is_empty()).then_some((scheme, authority, path))
}

/// Sends a GET and waits for the response head. The body is left to the caller to stream.
fn fetch(url: &str) -> Result<IncomingResponse, String> {
    let (scheme, authority, path) = split_url(url).ok_or_else(|| format!("bad url: {url}"))?;
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |what: &str| format!("invalid {what} in url: {url}");
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("path"))?;
    // The body is never taken: the host then sends the request with an empty one.

    // The host may refuse at once (e.g. a denied host) or later through the future.
    let debug = |e: ErrorCode| format!("{e:?}");
    let future = outgoing_handler::handle(request, None).map_err(debug)?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(result)) => result.map_err(debug),
        Some(Err(())) => Err("response already taken".into()),
        None => Err("response not ready after blocking".into()),
    }
}

impl Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let Some(url) = query_param(&request, "url") else {
            return text(out, 400, "missing query parameter `url`\n");
        };
        let upstream = match fetch(&url) {
            Ok(r) => r,
            Err(e) => return text(out, 502, &format!("{e}\n")),
        };
        let content_type = upstream
            .headers()
            .get("content-type")
            .into_iter()
            .next()
            .unwrap_or_else(|| b"application/octet-stream".to_vec());

        let Ok(body) = upstream.consume() else {
            return text(out, 502, "upstream body unavailable\n");
        };
        let Ok(input) = body.stream() else {
            return text(out, 502, "upstream body stream unavailable\n");
        };
        let mut response = start(out, upstream.status(), &[("content-type", &content_type)]);
        match copy(&input, response.stream()) {
            Ok(_) => {
                drop(input);
                let _ = response.finish();
            }
            // Headers are out already: abort the response rather than pass off a partial body.
            Err(e) => eprintln!("outbound: upstream body failed: {e}"),
        }
    }
}

wasip2::http::proxy::export!(Outbound);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (s, a, p) = split_url("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p.as_str()), ("127.0.0.1:8080", "/a/b?c=d"));
        let (s, a, p) = split_url("HTTPS://example.com?q").unwrap();
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p.as_str()), ("example.com", "/?q"));
        assert_eq!(split_url("http://example.com").unwrap().2, "/");
        assert!(split_url("example.com/x").is_none());
        assert!(split_url("http:///x").is_none());
    }
}
