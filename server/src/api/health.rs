//! `/health` (the process answers, no I/O), `/ready` (database and blob store reachable, not
//! shutting down) and the Prometheus scrape endpoint.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// A dependency that does not answer within this time counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig, metrics_path: Option<&str>) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
    if let Some(path) = metrics_path {
        cfg.route(path, web::get().to(metrics));
    }
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(r#"{"status":"ok"}"#)
}

#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Database and blob store reachable"),
    (status = 503, description = "A dependency failed or the server is shutting down", content_type = "application/problem+json"),
))]
pub async fn ready(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.lifecycle.is_shutting_down() {
        return Err(
            ApiError::unavailable("shutting-down", "the server is shutting down").retry_after(1),
        );
    }
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    let blobs = match tokio::time::timeout(CHECK_TIMEOUT, state.cas.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    let checks = json!({
        "database": database.as_ref().err().map_or("ok", String::as_str),
        "blobs": blobs.as_ref().err().map_or("ok", String::as_str),
    });
    if database.is_err() || blobs.is_err() {
        let failed: Vec<&str> = [("database", database.is_err()), ("blobs", blobs.is_err())]
            .into_iter()
            .filter_map(|(name, failed)| failed.then_some(name))
            .collect();
        tracing::warn!(?checks, "not ready");
        return Err(ApiError::unavailable(
            "not-ready",
            format!("unreachable: {}", failed.join(", ")),
        )
        .with("checks", checks));
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks })))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 401, description = "A metrics token is configured and was not sent", content_type = "application/problem+json"),
))]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let Some(metrics) = &state.metrics else {
        return Err(ApiError::not_found("metrics"));
    };
    if let Some(token) = &state.config.metrics.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        let ok = presented.is_some_and(|p| {
            subtle::ConstantTimeEq::ct_eq(p.as_bytes(), expected.as_bytes()).into()
        });
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Unauthorized",
                "send the metrics token as a bearer token",
            ));
        }
    }
    state.plugins.publish_gauges();
    let body = metrics.render(state.store.as_ref());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
