//! Plugins over HTTP: upload (multipart `manifest` + `component`), list, inspect with live pool
//! figures, roll back, delete. Changing plugins needs a system key; any key may read.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Principal;
use crate::cas::Digest;
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::plugins::manifest::{Limits, Manifest, RouteAuth};
use crate::plugins::pool::PoolFigures;
use crate::plugins::registry::{ActivePlugin, HostError, Origin};
use crate::store::{Role, StoreError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/plugins")
            .route(web::post().to(upload))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/plugins/{name}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/plugins/{name}/rollback").route(web::post().to(rollback)));
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RouteView {
    pub path: String,
    pub methods: Vec<String>,
    pub auth: RouteAuth,
    pub limits: Option<Limits>,
    pub pool: Option<PoolFigures>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub origin: Origin,
    pub healthy: bool,
    pub routes: Vec<RouteView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: String,
    pub digest: String,
    pub created_at: String,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    pub plugin: PluginView,
    pub consecutive_failures: u64,
    pub last_success_at: Option<String>,
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub items: Vec<PluginView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Absent: the version before the active one.
    pub version: Option<String>,
}

impl From<HostError> for ApiError {
    fn from(err: HostError) -> Self {
        match err {
            HostError::Manifest(e) => {
                ApiError::bad_request("invalid-manifest", e.to_string()).with("field", e.field)
            }
            HostError::Component(e) => ApiError::bad_request("invalid-component", e.to_string()),
            HostError::RouteConflict { conflict, owner } => ApiError::conflict(
                "route-conflict",
                format!(
                    "route {} conflicts with {} of plugin {owner}",
                    conflict.path, conflict.existing
                ),
            )
            .with("path", conflict.path)
            .with("conflicts_with", conflict.existing)
            .with("plugin", owner),
            HostError::TooMany(n) => ApiError::conflict(
                "too-many-plugins",
                format!("the server holds at most {n} plugins (plugins.max_plugins)"),
            ),
            HostError::NotFound => ApiError::not_found("plugin"),
            HostError::FromDirectory(name) => ApiError::conflict(
                "plugin-from-directory",
                format!("plugin {name} was loaded from the plugins directory; change it there"),
            ),
            HostError::Store(StoreError::Conflict(_)) => ApiError::conflict(
                "version-exists",
                "this version was uploaded before with different content; bump the version",
            ),
            HostError::Store(e) => e.into(),
            HostError::Internal(e) => ApiError::internal("plugin operation failed", e),
        }
    }
}

fn view(state: &AppState, plugin: &ActivePlugin) -> PluginView {
    let figures = state.plugins.pool_figures(&plugin.name);
    let limits = plugin.manifest.resolve(&state.config.plugins).ok();
    PluginView {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        digest: plugin.digest.clone(),
        origin: plugin.origin,
        healthy: plugin.stats.healthy(),
        routes: plugin
            .manifest
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteView {
                path: r.path.clone(),
                methods: r.methods.clone(),
                auth: r.auth,
                limits: limits.as_ref().and_then(|l| l.get(i).cloned()),
                pool: figures.iter().find(|(p, _)| *p == r.path).map(|(_, f)| *f),
            })
            .collect(),
    }
}

#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins",
    request_body(content_type = "multipart/form-data", description = "Parts `manifest` (TOML or JSON) and `component` (the .wasm), or a manifest with `component_digest` naming a blob in the CAS"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = PluginView, description = "Uploaded and serving on this node; other nodes follow within plugins.sync_interval_ms"),
        (status = 400, description = "Invalid manifest or component (not a wasi:http component, unsupported imports)", content_type = "application/problem+json"),
        (status = 403, description = "Not a system key", content_type = "application/problem+json"),
        (status = 409, description = "A route conflicts, the version exists with other content, or too many plugins", content_type = "application/problem+json"),
        (status = 413, description = "Component larger than plugins.max_component_bytes", content_type = "application/problem+json"),
    ))]
pub async fn upload(
    principal: Principal,
    state: web::Data<AppState>,
    mut form: Multipart,
) -> ApiResult<HttpResponse> {
    principal.require_system()?;
    let limit = state.config.plugins.max_component_bytes;
    let mut manifest_text: Option<String> = None;
    let mut component: Option<Vec<u8>> = None;
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| ApiError::bad_request("invalid-multipart", e.to_string()))?;
        let name = field.name().unwrap_or_default().to_string();
        let cap = if name == "component" {
            limit
        } else {
            1024 * 1024
        };
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request("invalid-multipart", e.to_string()))?;
            if (data.len() + chunk.len()) as u64 > cap {
                return Err(ApiError::payload_too_large(cap).with("part", name));
            }
            data.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "manifest" => {
                manifest_text = Some(String::from_utf8(data).map_err(|_| {
                    ApiError::bad_request("invalid-manifest", "the manifest is not UTF-8")
                })?)
            }
            "component" => component = Some(data),
            other => {
                return Err(ApiError::bad_request(
                    "invalid-multipart",
                    format!("unexpected part {other:?}; send `manifest` and `component`"),
                ));
            }
        }
    }
    let text = manifest_text.ok_or_else(|| {
        ApiError::bad_request("invalid-multipart", "the `manifest` part is missing")
    })?;
    let manifest = Manifest::parse(&text).map_err(HostError::from)?;
    let wasm = match (component, &manifest.component_digest) {
        (Some(bytes), _) => bytes,
        (None, Some(digest)) => {
            let digest = Digest::parse(digest).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-manifest",
                    "component_digest is not a sha256 digest",
                )
                .with("field", "component_digest")
            })?;
            if state
                .cas
                .visible_size(&principal.workspace_id, &digest)
                .await?
                .is_none()
            {
                return Err(ApiError::not_found("component blob"));
            }
            state
                .cas
                .read_all(&digest)
                .await
                .map_err(|e| ApiError::internal("reading the component from the CAS", e))?
                .to_vec()
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid-multipart",
                "send a `component` part or name one with component_digest",
            ));
        }
    };
    let plugin = state
        .plugins
        .upload(manifest, wasm, &principal.workspace_id)
        .await?;
    tracing::info!(plugin = %plugin.name, version = %plugin.version, "plugin uploaded");
    Ok(HttpResponse::Created().json(view(&state, &plugin)))
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", security(("bearer" = [])), responses((status = 200, body = PluginList)))]
pub async fn list(principal: Principal, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let items = state
        .plugins
        .list()
        .await
        .iter()
        .map(|p| view(&state, p))
        .collect();
    Ok(HttpResponse::Ok().json(PluginList { items }))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    security(("bearer" = [])),
    responses((status = 200, body = PluginDetail), (status = 404, description = "No such plugin", content_type = "application/problem+json")))]
pub async fn get(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let plugin = state
        .plugins
        .get(&name)
        .await
        .ok_or_else(|| ApiError::not_found("plugin"))?;
    let versions = match plugin.origin {
        Origin::Store => state.store.plugin_versions(&name).await?,
        Origin::Directory => Vec::new(),
    };
    let last = plugin
        .stats
        .last_success_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(PluginDetail {
        consecutive_failures: plugin
            .stats
            .consecutive_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        last_success_at: (last > 0).then(|| clock::rfc3339(last)),
        versions: versions
            .iter()
            .map(|v| VersionView {
                version: v.version.clone(),
                digest: v.digest.clone(),
                created_at: clock::rfc3339(v.created_at_ms),
                active: v.version == plugin.version,
            })
            .collect(),
        plugin: view(&state, &plugin),
    }))
}

#[utoipa::path(delete, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    security(("bearer" = [])),
    responses((status = 204, description = "Its routes stop serving; requests in flight finish"), (status = 404, description = "No such plugin", content_type = "application/problem+json")))]
pub async fn delete(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require_system()?;
    state.plugins.delete(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    request_body(content = Option<RollbackRequest>, description = "Optional target version"),
    security(("bearer" = [])),
    responses((status = 200, body = PluginView), (status = 404, description = "No such plugin or version", content_type = "application/problem+json")))]
pub async fn rollback(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: Option<web::Json<RollbackRequest>>,
) -> ApiResult<HttpResponse> {
    principal.require_system()?;
    let version = body.and_then(|b| b.into_inner().version);
    let plugin = state.plugins.rollback(&name, version.as_deref()).await?;
    Ok(HttpResponse::build(StatusCode::OK).json(view(&state, &plugin)))
}
