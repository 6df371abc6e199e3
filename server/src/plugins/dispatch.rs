//! Serves plugin routes: match the path, check method and auth, validate a JSON body against
//! the route's schema, wait for an instance under the route's backpressure rules, run the guest
//! and stream its response. Every failure is problem+json naming the plugin and the kind.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::http_compat;
use super::manifest::RouteAuth;
use super::pool::Rejection;
use super::registry::{PluginHost, RouteEntry};
use super::runtime::{ExecError, GuestRequest, RequestBody, ResponseBody};
use crate::auth::AuthService;
use crate::error::ApiError;
use crate::http::request_id::RequestId;
use crate::store::Role;
use crate::telemetry::names::*;

/// The matched route template, for the metrics middleware's `path` label.
#[derive(Debug, Clone)]
pub struct RouteTemplate(pub Arc<str>);

const TRUSTED_PREFIX: &str = "x-patchbay-";

/// The app's default service: a plugin route, or 404.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    host: web::Data<PluginHost>,
    auth: web::Data<AuthService>,
) -> Result<HttpResponse, ApiError> {
    let table = host.table();
    let Some((template, entry)) = table.lookup(req.path()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no route for {} {}", req.method(), req.path()),
        ));
    };
    let entry = Arc::clone(entry);
    req.extensions_mut()
        .insert(RouteTemplate(Arc::clone(template)));
    drop(table);
    let plugin = entry.plugin.name.clone();
    if !entry.methods.contains(req.method()) {
        return Err(plugin_problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            &plugin,
            format!("{} is not served here", req.method()),
        )
        .allow(entry.allow.clone()));
    }
    let principal = match entry.auth {
        RouteAuth::Public => None,
        RouteAuth::Read | RouteAuth::Write => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let principal = auth
                .authenticate(header.as_deref(), req.peer_addr().map(|a| a.ip()))
                .await?;
            principal.require(if entry.auth == RouteAuth::Write {
                Role::Write
            } else {
                Role::Read
            })?;
            Some(principal)
        }
    };
    let limits = entry.pool.limits();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout();
    let admitted = match entry.pool.admit(deadline).await {
        Ok(admitted) => admitted,
        Err(rejection) => return Err(reject(&plugin, rejection, limits.block_timeout_ms)),
    };
    let waited = admitted.waited;
    metrics::histogram!(PLUGIN_QUEUE_WAIT_SECONDS, "plugin" => plugin.clone())
        .record(waited.as_secs_f64());
    metrics::counter!(PLUGIN_DISPATCHED_TOTAL, "plugin" => plugin.clone()).increment(1);

    let body = match &entry.schema {
        Some(schema) => {
            match validated_body(payload, schema, limits.max_request_body_bytes).await {
                Ok(body) => RequestBody::from_stream(futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(body)
                })),
                Err(problem) => {
                    finish(&entry, "bad_request", false);
                    return Err(problem.with("plugin", plugin));
                }
            }
        }
        None => RequestBody::from_local_stream(payload),
    };
    let mut request_limits = entry.request_limits.clone();
    request_limits.timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let guest_request = GuestRequest {
        method: http_compat::method(req.method()),
        uri: http_compat::uri(req.uri()),
        headers: guest_headers(&req, principal.as_ref()),
        body,
        // The slot is free only when the engine has torn the instance down, even if the
        // client left early.
        instance_guard: Some(Box::new(admitted)),
    };
    let response = host
        .runtime()
        .handle(&entry.plugin.component, &request_limits, guest_request)
        .await;
    metrics::histogram!(PLUGIN_EXECUTION_SECONDS, "plugin" => plugin.clone())
        .record((started.elapsed() - waited).as_secs_f64());
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            finish(&entry, err.kind(), is_callers_fault(&err));
            return Err(exec_problem(&plugin, &err));
        }
    };
    let mut builder = HttpResponse::build(http_compat::status(response.status));
    for (name, value) in &response.headers {
        // actix sets framing headers itself from the body.
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
        {
            continue;
        }
        if let Some(pair) = http_compat::from_guest_header(name, value) {
            builder.append_header(pair);
        }
    }
    let length = response.body.content_length();
    let stream = Finishing {
        body: response.body,
        entry: Some(entry),
    };
    Ok(match length {
        Some(n) => builder.body(SizedStream::new(n, stream)),
        None => builder.body(BodyStream::new(stream)),
    })
}

/// The guest sees the caller's headers without credentials, and trusted `x-patchbay-*`
/// headers set by the server only.
fn guest_headers(req: &HttpRequest, principal: Option<&crate::auth::Principal>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(req.headers().len() + 3);
    for (name, value) in req.headers() {
        if name == header::AUTHORIZATION || name.as_str().starts_with(TRUSTED_PREFIX) {
            continue;
        }
        if let Some((name, value)) = http_compat::to_guest_header(name, value) {
            headers.append(name, value);
        }
    }
    if let Some(id) = req.extensions().get::<RequestId>()
        && let Ok(value) = http::HeaderValue::from_str(&id.0)
    {
        headers.insert(
            http::HeaderName::from_static("x-patchbay-request-id"),
            value,
        );
    }
    if let Some(p) = principal {
        if let Ok(value) = http::HeaderValue::from_str(&p.workspace) {
            headers.insert(http::HeaderName::from_static("x-patchbay-workspace"), value);
        }
        headers.insert(
            http::HeaderName::from_static("x-patchbay-role"),
            http::HeaderValue::from_static(p.role.as_str()),
        );
    }
    headers
}

/// Buffers a JSON body (bounded) and checks it against the route's schema.
async fn validated_body(
    mut payload: web::Payload,
    schema: &jsonschema::Validator,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| crate::error::extractors::payload_problem(&e))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid-json", format!("the body is not JSON: {e}")))?;
    let errors: Vec<serde_json::Value> = schema
        .iter_errors(&value)
        .take(20)
        .map(|e| serde_json::json!({"pointer": e.instance_path().to_string(), "message": e.to_string()}))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema-violation",
            "Unprocessable content",
            "the body does not match the route's request schema",
        )
        .with("errors", errors));
    }
    Ok(body.freeze())
}

fn reject(plugin: &str, rejection: Rejection, block_timeout_ms: u64) -> ApiError {
    metrics::counter!(PLUGIN_SHED_TOTAL, "plugin" => plugin.to_string()).increment(1);
    let retry = (block_timeout_ms / 1000).max(1);
    match rejection {
        Rejection::Shed => {
            metrics::counter!(PLUGIN_REQUESTS_TOTAL, "plugin" => plugin.to_string(), "outcome" => "shed").increment(1);
            plugin_problem(
                StatusCode::TOO_MANY_REQUESTS,
                "plugin-overloaded",
                plugin,
                "the route's queue is full",
            )
            .retry_after(retry)
        }
        Rejection::QueueTimeout => {
            metrics::counter!(PLUGIN_REQUESTS_TOTAL, "plugin" => plugin.to_string(), "outcome" => "queue_timeout").increment(1);
            plugin_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin-queue-timeout",
                plugin,
                "no instance became free in time",
            )
            .retry_after(retry)
        }
    }
}

fn is_callers_fault(err: &ExecError) -> bool {
    matches!(err, ExecError::RequestBodyTooLarge { .. })
}

fn exec_problem(plugin: &str, err: &ExecError) -> ApiError {
    let (status, kind) = match err {
        ExecError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-trap"),
        ExecError::StackOverflow => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-stack-overflow"),
        ExecError::Memory => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-memory"),
        ExecError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "plugin-timeout"),
        ExecError::BadResponse(_) | ExecError::ResponseBodyTooLarge { .. } => {
            (StatusCode::BAD_GATEWAY, "plugin-bad-response")
        }
        ExecError::RequestBodyTooLarge { limit } => {
            return ApiError::payload_too_large(*limit).with("plugin", plugin.to_string());
        }
        ExecError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-internal"),
    };
    tracing::warn!(plugin, error = %err, "plugin request failed");
    plugin_problem(status, kind, plugin, err.to_string())
}

fn plugin_problem(
    status: StatusCode,
    kind: &'static str,
    plugin: &str,
    detail: impl Into<String>,
) -> ApiError {
    let title = status.canonical_reason().unwrap_or("Plugin error");
    ApiError::new(status, kind, title, detail).with("plugin", plugin.to_string())
}

/// Records a finished request's outcome.
fn finish(entry: &RouteEntry, outcome: &'static str, callers_fault: bool) {
    let plugin = entry.plugin.name.clone();
    metrics::counter!(PLUGIN_COMPLETED_TOTAL, "plugin" => plugin.clone()).increment(1);
    metrics::counter!(PLUGIN_REQUESTS_TOTAL, "plugin" => plugin, "outcome" => outcome).increment(1);
    if !callers_fault {
        entry.plugin.stats.record(outcome == "ok");
    }
}

/// The guest's body; records the outcome when it ends.
struct Finishing {
    body: ResponseBody,
    entry: Option<Arc<RouteEntry>>,
}

impl Stream for Finishing {
    type Item = Result<Bytes, ExecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.body).poll_next(cx);
        match &item {
            Poll::Ready(None) => {
                if let Some(entry) = self.entry.take() {
                    finish(&entry, "ok", false);
                }
            }
            Poll::Ready(Some(Err(err))) => {
                if let Some(entry) = self.entry.take() {
                    tracing::warn!(plugin = %entry.plugin.name, error = %err, "plugin failed while streaming its response");
                    finish(&entry, err.kind(), is_callers_fault(err));
                }
            }
            _ => {}
        }
        item
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        // The client went away before the body ended.
        if let Some(entry) = self.entry.take() {
            finish(&entry, "client_gone", true);
        }
    }
}
