//! The web UI: the static files of `web/` at `/ui/`, public (the page asks for an API key and
//! sends it to `/api/v1` itself). `/` redirects to `/ui/`.
//!
//! rust-embed reads `web/` from disk in debug builds (edit and reload, no rebuild) and embeds it
//! in release builds. `web/pkg` (the materializer's wasm, built by `cargo xtask wasm`) is
//! git-ignored: a build without it still compiles and serves the UI, whose worker then reports
//! that the materializer is missing.
//!
//! Files carry no content hash in their names, so every response says `no-cache` (the browser
//! keeps the file but revalidates) with a strong ETag from the content's SHA-256: a reload costs a
//! 304 per file, and a new build is never masked by a stale cache.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use rust_embed::RustEmbed;

use crate::error::{ApiError, ApiResult};

#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

/// Where the UI lives; `index.html` sets `<base href="/ui/">` to match.
pub const UI_PREFIX: &str = "/ui";

/// Scripts, styles, workers and wasm only from this origin; `wasm-unsafe-eval` lets the worker
/// compile the materializer, and nothing allows inline script, so an injected workflow name
/// cannot run code that reads the API key.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; \
    connect-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    let get_or_head = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    cfg.service(web::resource("/").route(get_or_head().to(redirect_root)))
        .service(web::resource(UI_PREFIX).route(get_or_head().to(index)))
        .service(web::resource(format!("{UI_PREFIX}/{{path:.*}}")).route(get_or_head().to(asset)));
}

#[utoipa::path(get, path = "/", tag = "ui", responses((status = 302, description = "Redirect to the web UI at /ui/")))]
pub async fn redirect_root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `/ui` without the slash: the page's `<base href>` makes its relative URLs work here too.
async fn index(req: HttpRequest) -> ApiResult<HttpResponse> {
    serve(&req, "index.html")
}

#[utoipa::path(get, path = "/ui/{path}", tag = "ui",
    params(("path" = String, Path, description = "A file of the web UI; empty for index.html")),
    responses(
        (status = 200, description = "The file, with its content type and a strong ETag"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such file", content_type = "application/problem+json"),
    ))]
pub async fn asset(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let path = path.into_inner();
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path
    };
    serve(&req, &path)
}

fn serve(req: &HttpRequest, path: &str) -> ApiResult<HttpResponse> {
    // rust-embed's disk mode also refuses to leave its folder; this keeps the rule visible here
    // and identical in both modes.
    let safe = !path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && !path.contains('\\');
    let file = safe
        .then(|| Assets::get(path))
        .flatten()
        .ok_or_else(|| not_found(path))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = if_none_match(req, &etag);

    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    let content_type = content_type(path);
    if content_type.starts_with("text/html") {
        res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .insert_header((header::REFERRER_POLICY, "no-referrer"));
    }
    if fresh {
        return Ok(res.finish());
    }
    res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)));
    // actix-http drops the body of a HEAD response itself but keeps its Content-Length.
    Ok(res.body(file.data.into_owned()))
}

/// Whether `If-None-Match` lists `etag` (or is `*`): the client's copy is current.
fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("the web UI has no file {path:?}"),
    )
}

/// Content types by extension; JavaScript modules must be `text/javascript` and wasm
/// `application/wasm` or the browser refuses them (strict MIME checks, streaming compilation).
fn content_type(path: &str) -> &'static str {
    match path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt" | "md" | "ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_types_they_insist_on() {
        assert_eq!(
            content_type("pkg/patchbay_materializer_bg.wasm"),
            "application/wasm"
        );
        assert_eq!(content_type("worker.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("INDEX.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("Makefile"), "application/octet-stream");
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let req = |v: &str| {
            actix_web::test::TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, v))
                .to_http_request()
        };
        assert!(if_none_match(&req(r#""a", "b""#), r#""b""#));
        assert!(if_none_match(&req(r#"W/"b""#), r#""b""#));
        assert!(if_none_match(&req("*"), r#""b""#));
        assert!(!if_none_match(&req(r#""a""#), r#""b""#));
    }
}
