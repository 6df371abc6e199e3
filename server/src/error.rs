//! One error type for the API, rendered as RFC 9457 `application/problem+json`.
//!
//! The `type` member is `urn:patchbay:problem:<kind>`: a stable identifier clients switch on.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";
const TYPE_PREFIX: &str = "urn:patchbay:problem:";

/// Boxed so `Result<T, ApiError>` stays small on the happy path (one pointer for the error).
#[derive(Debug, Clone)]
pub struct ApiError(Box<Problem>);

#[derive(Debug, Clone)]
struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
    headers: Vec<(header::HeaderName, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// Adds a member to the problem body (RFC 9457 extension members).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a response header (Retry-After, Allow, Content-Range, ...).
    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.0.headers.push((name, value.into()));
        self
    }

    pub fn retry_after(self, secs: u64) -> Self {
        self.header(header::RETRY_AFTER, secs.max(1).to_string())
    }

    pub fn allow(self, methods: impl Into<String>) -> Self {
        self.header(header::ALLOW, methods)
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn unauthorized(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, "Unauthorized", detail)
    }

    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, "Conflict", detail)
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
        .with("limit_bytes", limit)
    }

    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request timeout",
            "the request body did not arrive in time",
        )
    }

    pub fn too_many_requests(
        kind: &'static str,
        detail: impl Into<String>,
        retry_after: u64,
    ) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            kind,
            "Too many requests",
            detail,
        )
        .retry_after(retry_after)
    }

    pub fn unavailable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kind,
            "Service unavailable",
            detail,
        )
    }

    /// A failure of ours. The detail is logged, not shown: it may name internals.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            format!("{context}; the server log has the details"),
        )
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        let p = &self.0;
        body.insert("type".into(), format!("{TYPE_PREFIX}{}", p.kind).into());
        body.insert("title".into(), p.title.into());
        body.insert("status".into(), p.status.as_u16().into());
        body.insert("detail".into(), p.detail.clone().into());
        for (k, v) in &p.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.0.status, self.0.kind, self.0.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.0.status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        for (name, value) in &self.0.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert_header((name.clone(), value));
            }
        }
        response.body(self.body().to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Conflict(what) => {
                ApiError::conflict("already-exists", format!("{what} already exists"))
            }
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Database(e) => ApiError::internal("metadata store failed", e),
            e @ StoreError::DimensionMismatch { .. } => {
                ApiError::internal("the semantic cache's dimension changed", e)
            }
        }
    }
}

/// Maps actix's extractor errors (bad JSON, bad path, bad query, body too large) to problems.
pub mod extractors {
    use super::ApiError;
    use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
    use actix_web::{HttpRequest, error::Error};

    pub fn json(err: JsonPayloadError, _req: &HttpRequest) -> Error {
        let problem = match &err {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(*limit as u64),
            JsonPayloadError::ContentType => ApiError::new(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "the body must be application/json",
            ),
            JsonPayloadError::Payload(payload) => payload_problem(payload),
            _ => ApiError::bad_request("invalid-json", err.to_string()),
        };
        problem.into()
    }

    pub fn path(err: PathError, _req: &HttpRequest) -> Error {
        ApiError::bad_request("invalid-path", err.to_string()).into()
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> Error {
        ApiError::bad_request("invalid-query", err.to_string()).into()
    }

    /// A body that stopped arriving, or arrived too slowly, is the client's timeout.
    pub fn payload_problem(err: &PayloadError) -> ApiError {
        match err {
            PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ApiError::body_timeout()
            }
            PayloadError::Overflow => ApiError::payload_too_large(0),
            other => ApiError::bad_request("invalid-body", other.to_string()),
        }
    }
}
