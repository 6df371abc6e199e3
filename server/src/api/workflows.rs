//! Workflows: a base document plus RFC 6902 patches. Clients fetch the latest snapshot and the
//! patches after it and materialize locally; writers send patches with the version they expect;
//! subscribers follow new patches as Server-Sent Events. The rules live in `WorkflowService`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::cas::etag_matches;
use super::pagination::{Page, PageQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::store::{Role, SnapshotRecord, Workflow};
use crate::workflows::events::Holder;
use crate::workflows::{PatchView, WorkflowError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/workflows")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/workflows/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/workflows/{id}/document").route(web::get().to(document)))
    .service(
        web::resource("/workflows/{id}/patches")
            .route(web::get().to(patches))
            .route(web::post().to(append)),
    )
    .service(web::resource("/workflows/{id}/events").route(web::get().to(events)));
}

/// The header carrying the version of a materialized document.
const VERSION_HEADER: &str = "x-workflow-version";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// 1 to 200 characters.
    pub name: String,
    /// A workflow document: `{"name", "nodes": [{"id", "type", "config"?}], "edges": [{"from", "to"}], "metadata"?}`.
    #[schema(value_type = Object)]
    pub document: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWorkflow {
    pub id: String,
    /// Always 0: no patch yet.
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSummary {
    pub id: String,
    pub name: String,
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the time of the last patch.
    pub updated_at: String,
}

impl From<&Workflow> for WorkflowSummary {
    fn from(wf: &Workflow) -> Self {
        Self {
            id: wf.id.clone(),
            name: wf.name.clone(),
            version: wf.version as u64,
            created_at: clock::rfc3339(wf.created_at_ms),
            updated_at: clock::rfc3339(wf.updated_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotView {
    /// The version the snapshot holds (0: the base document).
    pub seq: u64,
    /// sha256 of the snapshot's JSON text; also readable at `/api/v1/cas/{digest}`.
    pub digest: String,
    pub materializer_version: u64,
    #[schema(value_type = Object)]
    pub document: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub id: String,
    pub name: String,
    /// The seq of the last patch; the document is `snapshot` with `patches` applied in order.
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    /// The latest snapshot at or before `version`.
    pub snapshot: SnapshotView,
    /// The patches after the snapshot, up to `version`.
    pub patches: Vec<PatchView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotRef {
    pub seq: u64,
    pub digest: String,
    pub materializer_version: u64,
    pub size: u64,
}

impl From<&SnapshotRecord> for SnapshotRef {
    fn from(s: &SnapshotRecord) -> Self {
        Self {
            seq: s.seq as u64,
            digest: s.digest.clone(),
            materializer_version: s.materializer_version as u64,
            size: s.size as u64,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatchHistory {
    /// Patches after the cursor, in seq order.
    pub patches: Vec<PatchView>,
    /// Every snapshot this server's materializer version may start from, by seq (seq 0 is the
    /// base document); blobs at `/api/v1/cas/{digest}`.
    pub snapshots: Vec<SnapshotRef>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendPatch {
    /// The version the patch was written against; 409 when it is no longer current.
    pub base_version: u64,
    /// RFC 6902 operations, applied atomically.
    #[schema(value_type = Vec<Object>)]
    pub ops: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Appended {
    /// The new version: the committed patch's seq.
    pub version: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocumentQuery {
    /// A past version (0 is the base document); absent: the current one.
    pub at: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Patches with a seq above this (default 0: from the first patch).
    pub after: Option<u64>,
    /// Patches per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Send the patches after this seq first; the `Last-Event-ID` header takes precedence.
    /// Absent both: only patches committed from now on.
    pub after: Option<u64>,
}

impl From<WorkflowError> for ApiError {
    fn from(err: WorkflowError) -> Self {
        match err {
            WorkflowError::NotFound => ApiError::not_found("workflow"),
            WorkflowError::UnknownVersion { requested, current } => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-version",
                "Not found",
                format!("the workflow has no version {requested}; it is at version {current}"),
            )
            .with("current_version", current),
            WorkflowError::InvalidName(detail) => ApiError::bad_request("invalid-name", detail),
            WorkflowError::InvalidDocument(issues) => {
                let detail = match issues.first() {
                    Some(first) if issues.len() == 1 => format!("the document is not a valid workflow: {}", first.message),
                    Some(first) => format!("the document is not a valid workflow: {} (and {} more)", first.message, issues.len() - 1),
                    None => "the document is not a valid workflow".to_string(),
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-document", "Invalid workflow document", detail)
                    .with("issues", serde_json::to_value(&issues).unwrap_or_default())
            }
            WorkflowError::PatchFailed(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "patch-failed", "Patch failed", e.to_string())
                    .with("op_index", e.op_index)
                    .with("path", e.path.clone())
                    .with("kind", e.kind.as_str())
                    .with("reason", e.reason.clone())
            }
            WorkflowError::TooManyOps { ops, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-operations",
                "Payload too large",
                format!("the patch has {ops} operations; at most {max} are allowed (workflows.max_patch_ops)"),
            )
            .with("max_patch_ops", max),
            WorkflowError::VersionConflict { base_version, current_version } => ApiError::conflict(
                "version-conflict",
                format!("base_version {base_version} is stale: the workflow is at version {current_version}; rebase and retry"),
            )
            .with("current_version", current_version)
            .with("base_version", base_version),
            WorkflowError::Store(e) => e.into(),
            WorkflowError::Cas(e) => e.into(),
            WorkflowError::Corrupt(detail) => ApiError::internal("workflow data is inconsistent", detail),
        }
    }
}

/// Strong entity tag of a workflow version.
fn etag(id: &str, version: u64) -> String {
    format!("\"{id}-v{version}\"")
}

fn document_etag(id: &str, version: u64) -> String {
    format!("\"{id}-v{version}-document\"")
}

#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CreatedWorkflow),
        (status = 400, description = "Malformed JSON or an invalid name", content_type = "application/problem+json"),
        (status = 403, description = "Not a write key", content_type = "application/problem+json"),
        (status = 422, description = "`invalid-document`: not a valid workflow; `issues` lists `{pointer, code, message}`", content_type = "application/problem+json"),
    ))]
pub async fn create(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<CreateWorkflow>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let body = body.into_inner();
    let wf = state
        .workflows
        .create(&principal.workspace_id, &body.name, body.document)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/workflows/{}", wf.id)))
        .insert_header((header::ETAG, etag(&wf.id, 0)))
        .json(CreatedWorkflow {
            id: wf.id,
            version: 0,
        }))
}

#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Page<WorkflowSummary>, description = "The workspace's workflows, oldest first")))]
pub async fn list(
    principal: Principal,
    state: web::Data<AppState>,
    page: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let limit = page.limit()?;
    let workflows = state
        .workflows
        .list(&principal.workspace_id, page.after.as_deref(), limit)
        .await?;
    let items: Vec<WorkflowSummary> = workflows.iter().map(WorkflowSummary::from).collect();
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |w| w.id.clone())))
}

#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = WorkflowView, description = "The latest snapshot and the patches after it; ETag `\"<id>-v<version>\"`"),
        (status = 304, description = "If-None-Match matched the current version"),
        (status = 404, description = "The workspace has no such workflow", content_type = "application/problem+json"),
    ))]
pub async fn get(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let wf = state.workflows.find(&principal.workspace_id, &id).await?;
    let tag = etag(&wf.id, wf.version as u64);
    if etag_matches(req.headers().get(header::IF_NONE_MATCH), &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    let st = state.workflows.state(wf).await?;
    let document = String::from_utf8(st.document.to_vec())
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| {
            ApiError::internal(
                "workflow data is inconsistent",
                format!("snapshot {} is not JSON", st.snapshot.digest),
            )
        })?;
    let patches = st
        .patches
        .iter()
        .map(PatchView::from_record)
        .collect::<Result<Vec<_>, _>>()?;
    let view = WorkflowView {
        id: st.workflow.id.clone(),
        name: st.workflow.name.clone(),
        version: st.workflow.version as u64,
        created_at: clock::rfc3339(st.workflow.created_at_ms),
        updated_at: clock::rfc3339(st.workflow.updated_at_ms),
        snapshot: SnapshotView {
            seq: st.snapshot.seq as u64,
            digest: st.snapshot.digest.clone(),
            materializer_version: st.snapshot.materializer_version as u64,
            document,
        },
        patches,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .json(view))
}

#[utoipa::path(delete, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted with its history; event streams end with an `event: deleted`"),
        (status = 403, description = "Not a write key", content_type = "application/problem+json"),
        (status = 404, description = "The workspace has no such workflow", content_type = "application/problem+json"),
    ))]
pub async fn delete(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    state.workflows.delete(&principal.workspace_id, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/workflows/{id}/document", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), DocumentQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The document materialized by the server; `X-Workflow-Version` names its version", content_type = "application/json"),
        (status = 304, description = "If-None-Match matched"),
        (status = 400, description = "`at` is not a whole number", content_type = "application/problem+json"),
        (status = 404, description = "No such workflow, or `unknown-version`: `at` is above the current version", content_type = "application/problem+json"),
    ))]
pub async fn document(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DocumentQuery>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let wf = state.workflows.find(&principal.workspace_id, &id).await?;
    let expected = query.at.unwrap_or(wf.version as u64);
    if expected <= wf.version as u64
        && etag_matches(
            req.headers().get(header::IF_NONE_MATCH),
            &document_etag(&wf.id, expected),
        )
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, document_etag(&wf.id, expected)))
            .finish());
    }
    let doc = state.workflows.document(&wf, query.at).await?;
    // A past version never changes; the current one does.
    let cache_control = if query.at.is_some() {
        "private, max-age=31536000, immutable"
    } else {
        "private, no-cache"
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, document_etag(&wf.id, doc.version)))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((VERSION_HEADER, doc.version.to_string()))
        .body(doc.json))
}

#[utoipa::path(get, path = "/api/v1/workflows/{id}/patches", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PatchHistory, description = "The full history, a page at a time, and the snapshots to rebuild any version from"),
        (status = 400, description = "Malformed `after` or `limit`", content_type = "application/problem+json"),
        (status = 404, description = "The workspace has no such workflow", content_type = "application/problem+json"),
    ))]
pub async fn patches(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let limit = PageQuery {
        after: None,
        limit: query.limit,
    }
    .limit()?;
    let wf = state.workflows.find(&principal.workspace_id, &id).await?;
    let history = state
        .workflows
        .history(&wf, query.after.unwrap_or(0), limit)
        .await?;
    let patches = history
        .patches
        .iter()
        .map(PatchView::from_record)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = (patches.len() == limit as usize)
        .then(|| patches.last().map(|p| p.seq.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(PatchHistory {
        patches,
        snapshots: history.snapshots.iter().map(SnapshotRef::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/api/v1/workflows/{id}/patches", tag = "workflows", request_body = AppendPatch,
    params(("id" = String, Path, description = "Workflow id")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = Appended, description = "Committed; ETag of the new version"),
        (status = 403, description = "Not a write key", content_type = "application/problem+json"),
        (status = 404, description = "The workspace has no such workflow", content_type = "application/problem+json"),
        (status = 409, description = "`version-conflict`: `base_version` is stale; `current_version` says what is current", content_type = "application/problem+json"),
        (status = 413, description = "`too-many-operations`: more than workflows.max_patch_ops", content_type = "application/problem+json"),
        (status = 422, description = "`patch-failed` (with `op_index`, `path`, `kind`, `reason`) or `invalid-document` (with `issues`)", content_type = "application/problem+json"),
    ))]
pub async fn append(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<AppendPatch>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let body = body.into_inner();
    let version = state
        .workflows
        .append(
            &principal.workspace_id,
            &id,
            &principal.key_id,
            body.base_version,
            body.ops,
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::ETAG, etag(&id, version)))
        .json(Appended { version }))
}

#[utoipa::path(get, path = "/api/v1/workflows/{id}/events", tag = "workflows",
    params(
        ("id" = String, Path, description = "Workflow id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq (the last `id:` received)"),
        EventsQuery,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `id: <seq>`, `event: patch`, `data: {\"seq\", \"ops\", \"author\", \"created_at\"}` per committed patch, in seq order, without gaps or repeats; `: heartbeat` comments every workflows.sse_heartbeat_ms; `event: deleted` when the workflow is deleted; `event: revoked` (then the end) when the key was revoked, expired or its workspace deleted, checked at every heartbeat", content_type = "text/event-stream"),
        (status = 400, description = "Malformed `Last-Event-ID` or `after`", content_type = "application/problem+json"),
        (status = 404, description = "The workspace has no such workflow", content_type = "application/problem+json"),
    ))]
pub async fn events(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let after = match last_event_id(req.headers().get("last-event-id"))? {
        Some(seq) => Some(seq),
        None => query.after,
    };
    let stream = state
        .workflows
        .events(
            Holder {
                key_id: principal.key_id.clone(),
                workspace_id: principal.workspace_id.clone(),
            },
            &id,
            after,
        )
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// `Last-Event-ID` as a seq; an empty value means none.
fn last_event_id(value: Option<&HeaderValue>) -> ApiResult<Option<u64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("?").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid-last-event-id",
            format!("Last-Event-ID {text:?} is not a seq (a whole number)"),
        )
    })
}
