//! Workspaces: created, listed and deleted by system keys; other keys see their own.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pagination::{Page, PageQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::store::Workspace;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/workspaces")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(web::resource("/workspaces/{name}").route(web::delete().to(delete)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1 to 63 characters: lower-case letters, digits and dashes, starting with a letter or digit.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Workspace> for WorkspaceView {
    fn from(ws: &Workspace) -> Self {
        Self {
            name: ws.name.clone(),
            created_at: clock::rfc3339(ws.created_at_ms),
        }
    }
}

/// Workspace names appear in URLs and keys: keep them to a safe alphabet.
pub fn validate_name(name: &str) -> ApiResult<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid-name",
            format!(
                "workspace name {name:?} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
            ),
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    security(("bearer" = [])),
    responses(
        (status = 201, body = WorkspaceView),
        (status = 400, description = "Invalid name", content_type = "application/problem+json"),
        (status = 403, description = "Not a system key", content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", content_type = "application/problem+json"),
    ))]
pub async fn create(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<CreateWorkspace>,
) -> ApiResult<HttpResponse> {
    principal.require_system()?;
    validate_name(&body.name)?;
    let ws = state
        .store
        .create_workspace(&body.name, clock::now_ms())
        .await?;
    Ok(HttpResponse::Created().json(WorkspaceView::from(&ws)))
}

#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Page<WorkspaceView>, description = "System keys see all workspaces, others their own")))]
pub async fn list(
    principal: Principal,
    state: web::Data<AppState>,
    page: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let limit = page.limit()?;
    let items: Vec<WorkspaceView> = if principal.system {
        let all = state
            .store
            .list_workspaces(page.after.as_deref(), limit)
            .await?;
        all.iter().map(WorkspaceView::from).collect()
    } else {
        let own = state.store.get_workspace(&principal.workspace).await?;
        own.iter()
            .filter(|ws| {
                page.after
                    .as_deref()
                    .is_none_or(|after| ws.name.as_str() > after)
            })
            .map(WorkspaceView::from)
            .collect()
    };
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |ws| ws.name.clone())))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{name}", tag = "workspaces",
    params(("name" = String, Path, description = "Workspace name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted with its keys and blob references"),
        (status = 403, description = "Not a system key", content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", content_type = "application/problem+json"),
        (status = 409, description = "The caller's own workspace", content_type = "application/problem+json"),
    ))]
pub async fn delete(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    principal.require_system()?;
    if *name == principal.workspace {
        return Err(ApiError::conflict(
            "own-workspace",
            "a key cannot delete the workspace it belongs to",
        ));
    }
    if !state.store.delete_workspace(&name).await? {
        return Err(ApiError::not_found("workspace"));
    }
    Ok(HttpResponse::NoContent().finish())
}
