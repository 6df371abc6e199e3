//! The content-addressed store over HTTP: upload by digest or by body, conditional and ranged
//! downloads, and a batch "which of these am I missing" query.

use std::str::FromStr;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Principal;
use crate::cas::{CasError, Digest, Stored};
use crate::error::{ApiError, ApiResult, extractors::payload_problem};
use crate::store::Role;

/// The most digests one `missing` query may name.
const MAX_MISSING_QUERY: usize = 10_000;
/// Blobs never change, but they are per workspace: shared caches must not keep them.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/cas").route(web::post().to(post_blob)))
        .service(web::resource("/cas/missing").route(web::post().to(missing)))
        .service(
            web::resource("/cas/{digest}")
                .route(web::put().to(put_blob))
                .route(web::get().to(get_blob))
                .route(web::head().to(get_blob)),
        );
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlobView {
    /// Lower-case hex sha256 of the content.
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MissingQuery {
    pub digests: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MissingAnswer {
    /// The digests the caller's workspace cannot see, in the order asked.
    pub missing: Vec<String>,
}

fn parse_digest(text: &str) -> ApiResult<Digest> {
    Digest::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-digest",
            format!("{text:?} is not a sha256 digest (64 hex characters)"),
        )
    })
}

impl From<CasError> for ApiError {
    fn from(err: CasError) -> Self {
        match err {
            CasError::DigestMismatch { expected, actual } => ApiError::bad_request(
                "digest-mismatch",
                format!("the body's sha256 is {actual}, not {expected}; nothing was stored"),
            )
            .with("expected", expected.hex())
            .with("actual", actual.hex()),
            CasError::TooLarge { limit } => ApiError::payload_too_large(limit),
            CasError::Body(e) => payload_problem(&e),
            CasError::Storage(e) => ApiError::internal("blob storage failed", e),
            CasError::Store(e) => e.into(),
        }
    }
}

/// Refuses a declared length over the limit before reading a byte.
fn check_declared_length(req: &HttpRequest, limit: u64) -> ApiResult<()> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::payload_too_large(limit)),
        _ => Ok(()),
    }
}

fn stored_response(stored: Stored) -> HttpResponse {
    let mut res = if stored.new_for_workspace {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::LOCATION, format!("/api/v1/cas/{}", stored.digest)))
        .insert_header((header::ETAG, stored.digest.etag()))
        .json(BlobView {
            digest: stored.digest.hex(),
            size: stored.size,
        })
}

#[utoipa::path(put, path = "/api/v1/cas/{digest}", tag = "cas",
    params(("digest" = String, Path, description = "sha256 of the body, 64 hex characters")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = BlobView, description = "Stored; new to this workspace"),
        (status = 200, body = BlobView, description = "The workspace already had it"),
        (status = 400, description = "Malformed digest, or the body does not match it; nothing stored", content_type = "application/problem+json"),
        (status = 408, description = "The body arrived too slowly", content_type = "application/problem+json"),
        (status = 413, description = "Larger than cas.max_blob_bytes", content_type = "application/problem+json"),
    ))]
pub async fn put_blob(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    digest: web::Path<String>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let digest = parse_digest(&digest)?;
    check_declared_length(&req, state.cas.max_blob_bytes())?;
    let stored = state
        .cas
        .put(&principal.workspace_id, Some(digest), body)
        .await?;
    Ok(stored_response(stored))
}

#[utoipa::path(post, path = "/api/v1/cas", tag = "cas",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = BlobView, description = "Stored; new to this workspace"),
        (status = 200, body = BlobView, description = "The workspace already had it"),
        (status = 408, description = "The body arrived too slowly", content_type = "application/problem+json"),
        (status = 413, description = "Larger than cas.max_blob_bytes", content_type = "application/problem+json"),
    ))]
pub async fn post_blob(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    check_declared_length(&req, state.cas.max_blob_bytes())?;
    let stored = state.cas.put(&principal.workspace_id, None, body).await?;
    Ok(stored_response(stored))
}

#[utoipa::path(post, path = "/api/v1/cas/missing", tag = "cas", request_body = MissingQuery,
    security(("bearer" = [])),
    responses(
        (status = 200, body = MissingAnswer),
        (status = 400, description = "A malformed digest or too many digests", content_type = "application/problem+json"),
    ))]
pub async fn missing(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<MissingQuery>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    if body.digests.len() > MAX_MISSING_QUERY {
        return Err(ApiError::bad_request(
            "too-many-digests",
            format!("ask about at most {MAX_MISSING_QUERY} digests at once"),
        ));
    }
    let digests = body
        .digests
        .iter()
        .map(|d| parse_digest(d))
        .collect::<ApiResult<Vec<_>>>()?;
    let missing = state.cas.missing(&principal.workspace_id, &digests).await?;
    Ok(HttpResponse::Ok().json(MissingAnswer {
        missing: missing.iter().map(Digest::hex).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/cas/{digest}", tag = "cas",
    params(("digest" = String, Path, description = "sha256 of the blob")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The blob (HEAD: its headers)", content_type = "application/octet-stream"),
        (status = 206, description = "The requested byte range"),
        (status = 304, description = "If-None-Match matched"),
        (status = 404, description = "The workspace has no such blob", content_type = "application/problem+json"),
        (status = 416, description = "The range lies outside the blob", content_type = "application/problem+json"),
    ))]
pub async fn get_blob(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    digest: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let digest = parse_digest(&digest)?;
    let size = state
        .cas
        .visible_size(&principal.workspace_id, &digest)
        .await?
        .ok_or_else(|| ApiError::not_found("blob"))?;
    let etag = digest.etag();
    let with_headers = |mut builder: HttpResponseBuilder| {
        builder
            .insert_header((header::ETAG, etag.clone()))
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .insert_header(("repr-digest", digest.repr_digest()))
            .insert_header((header::ACCEPT_RANGES, "bytes"));
        builder
    };
    if etag_matches(req.headers().get(header::IF_NONE_MATCH), &etag) {
        return Ok(with_headers(HttpResponse::NotModified()).finish());
    }
    let range = match requested_range(&req, &etag) {
        None => None,
        Some(spec) => match spec.to_satisfiable_range(size) {
            Some((first, last)) => Some(first..last + 1),
            None => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range-not-satisfiable",
                    "Range not satisfiable",
                    format!("the blob has {size} bytes"),
                )
                .with("size", size)
                .header(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
        },
    };
    let (mut builder, length) = match &range {
        Some(r) => {
            let mut b = with_headers(HttpResponse::PartialContent());
            b.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            ));
            (b, r.end - r.start)
        }
        None => (with_headers(HttpResponse::Ok()), size),
    };
    builder.content_type("application/octet-stream");
    if req.method() == Method::HEAD {
        // actix writes Content-Length from the body's size and sends no body for HEAD.
        let nothing = futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
        return Ok(builder.body(SizedStream::new(length, nothing)));
    }
    if length == 0 {
        return Ok(builder.body(Vec::<u8>::new()));
    }
    let stream = state
        .cas
        .read(&digest, range)
        .await
        .map_err(|e| ApiError::internal("reading a blob failed", e))?;
    Ok(builder.body(SizedStream::new(
        length,
        stream.map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
    )))
}

/// `If-None-Match` with our strong tag (or `*`) means the client already has the content.
pub(crate) fn etag_matches(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag))
}

/// The single byte range asked for, if any. Multiple ranges and a stale `If-Range` fall back to
/// the whole blob, as RFC 9110 allows.
fn requested_range(req: &HttpRequest, etag: &str) -> Option<header::ByteRangeSpec> {
    if let Some(if_range) = req.headers().get(header::IF_RANGE)
        && if_range.to_str().ok() != Some(etag)
    {
        return None;
    }
    let text = req.headers().get(header::RANGE)?.to_str().ok()?;
    match header::Range::from_str(text).ok()? {
        header::Range::Bytes(mut specs) if specs.len() == 1 => specs.pop(),
        _ => None,
    }
}
