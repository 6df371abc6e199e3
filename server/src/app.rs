//! Builds the actix App: shared state, middleware order and scopes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Condition, ErrorHandlerResponse, ErrorHandlers, from_fn};
use actix_web::{App, Error, ResponseError as _, web};

use crate::api::{self, API_PREFIX};
use crate::auth::AuthService;
use crate::cache::Caches;
use crate::cas::Cas;
use crate::config::Config;
use crate::error::{self, ApiError};
use crate::http::{self as mw, body_deadline::BodyDeadline, guards::HeaderLimit};
use crate::plugins::registry::PluginHost;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::workflows::WorkflowService;

/// Whether the server is draining: `/ready` answers 503 from the first signal on.
#[derive(Debug, Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
}

impl Lifecycle {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Services built once at start and shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub cas: Arc<Cas>,
    pub auth: Arc<AuthService>,
    pub workflows: Arc<WorkflowService>,
    pub caches: Arc<Caches>,
    pub metrics: Option<Arc<Metrics>>,
    pub lifecycle: Arc<Lifecycle>,
    pub plugins: Arc<PluginHost>,
}

/// One worker's App. Middleware runs outermost first: request id, metrics, header-size guard,
/// body deadline, problem bodies for bare errors; `/api/v1` adds authentication.
pub fn build(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let config = Arc::clone(&state.config);
    let metrics_path = state.metrics.as_ref().map(|_| config.metrics.path.clone());
    App::new()
        .app_data(web::Data::new(state.clone()))
        .app_data(web::Data::from(Arc::clone(&state.auth)))
        .app_data(web::Data::from(Arc::clone(&state.plugins)))
        .app_data(web::Data::new(HeaderLimit(config.http.max_header_bytes)))
        .app_data(web::Data::new(BodyDeadline {
            grace: Duration::from_millis(config.http.body_read_timeout_ms),
            min_bytes_per_second: config.http.body_min_bytes_per_second,
        }))
        .app_data(
            web::JsonConfig::default()
                .limit(config.http.json_body_limit_bytes)
                .error_handler(error::extractors::json),
        )
        .app_data(web::PathConfig::default().error_handler(error::extractors::path))
        .app_data(web::QueryConfig::default().error_handler(error::extractors::query))
        .configure(|cfg| api::health::configure(cfg, metrics_path.as_deref()))
        .configure(api::openapi::configure)
        // The web UI's static files: public, outside the authenticated /api/v1 scope.
        .configure(api::ui::configure)
        .service(
            web::scope(API_PREFIX)
                .wrap(from_fn(mw::auth::middleware))
                .configure(api::workspaces::configure)
                .configure(api::keys::configure)
                .configure(api::cas::configure)
                .configure(api::plugins::configure)
                .configure(api::workflows::configure)
                .configure(api::cache::configure),
        )
        // Anything else may be a plugin route.
        .default_service(web::to(crate::plugins::dispatch::dispatch))
        .wrap(ErrorHandlers::new().default_handler(problem_body))
        .wrap(from_fn(mw::body_deadline::middleware))
        .wrap(from_fn(mw::guards::header_size))
        .wrap(Condition::new(
            state.metrics.is_some(),
            from_fn(mw::metrics::middleware),
        ))
        .wrap(from_fn(mw::request_id::middleware))
        .wrap(from_fn(mw::head_deadline::middleware))
}

/// Gives error responses that actix produced bare (405 of a resource, 400 of a bad head, ...)
/// the same problem+json body as ours; responses that already are problems pass unchanged.
fn problem_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(error::PROBLEM_JSON.as_bytes()));
    if is_problem || res.status().as_u16() < 400 {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (kind, title) = match status.as_u16() {
        405 => ("method-not-allowed", "Method not allowed"),
        404 => ("not-found", "Not found"),
        413 => ("payload-too-large", "Payload too large"),
        431 => ("headers-too-large", "Request header fields too large"),
        s if s < 500 => ("bad-request", "Bad request"),
        _ => ("internal", "Internal server error"),
    };
    let mut problem = ApiError::new(
        status,
        kind,
        title,
        status.canonical_reason().unwrap_or("error").to_string(),
    );
    let allow = res
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(allow) = allow {
        problem = problem.allow(allow);
    }
    let (req, old) = res.into_parts();
    let mut fresh = problem.error_response();
    for (name, value) in old.headers() {
        if !fresh.headers().contains_key(name) {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(error::PROBLEM_JSON),
    );
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(req, fresh).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
