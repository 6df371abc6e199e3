//! API keys: system keys mint for any workspace (and mint system keys); a workspace admin
//! manages its own workspace's keys. The key text is shown once, at creation.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::pagination::{Page, PageQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::store::{ApiKey, Role};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/keys")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(web::resource("/keys/{id}").route(web::delete().to(revoke)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Defaults to the caller's workspace.
    pub workspace: Option<String>,
    pub role: Role,
    /// RFC 3339; absent means the key does not expire.
    pub expires_at: Option<String>,
    /// Only system keys may mint system keys.
    #[serde(default)]
    pub system: bool,
    pub label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub workspace: String,
    pub role: Role,
    pub system: bool,
    pub label: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: String,
    /// The key itself; it is not shown again.
    pub key: String,
    #[serde(flatten)]
    pub details: KeyView,
}

impl From<&ApiKey> for KeyView {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            workspace: key.workspace.clone(),
            role: key.role,
            system: key.system,
            label: key.label.clone(),
            created_at: clock::rfc3339(key.created_at_ms),
            expires_at: key.expires_at_ms.map(clock::rfc3339),
            revoked_at: key.revoked_at_ms.map(clock::rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyFilter {
    /// System keys may list another workspace's keys; others always see their own.
    pub workspace: Option<String>,
}

/// Managing keys needs a system key, or an admin key acting on its own workspace.
fn authorize(principal: &Principal, workspace: &str) -> ApiResult<()> {
    if principal.system {
        return Ok(());
    }
    principal.require(Role::Admin)?;
    if workspace != principal.workspace {
        // Another workspace's objects answer 404, not 403: their existence is not revealed.
        return Err(ApiError::not_found("workspace"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, description = "Invalid expiry", content_type = "application/problem+json"),
        (status = 403, description = "Not an admin or system key", content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", content_type = "application/problem+json"),
    ))]
pub async fn create(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<CreateKey>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let workspace_name = body
        .workspace
        .clone()
        .unwrap_or_else(|| principal.workspace.clone());
    authorize(&principal, &workspace_name)?;
    if body.system {
        principal.require_system()?;
    }
    let expires_at_ms = match body.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at = clock::parse_rfc3339(text).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-expiry",
                    format!("expires_at {text:?} is not an RFC 3339 time"),
                )
            })?;
            if at <= clock::now_ms() {
                return Err(ApiError::bad_request(
                    "invalid-expiry",
                    "expires_at is in the past",
                ));
            }
            Some(at)
        }
    };
    let workspace = state
        .store
        .get_workspace(&workspace_name)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    let (key, text) = state
        .auth
        .mint(
            &workspace,
            body.role,
            body.system,
            expires_at_ms,
            body.label,
        )
        .await?;
    Ok(HttpResponse::Created().json(CreatedKey {
        id: key.id.clone(),
        key: text,
        details: KeyView::from(&key),
    }))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageQuery, KeyFilter),
    security(("bearer" = [])),
    responses((status = 200, body = Page<KeyView>), (status = 403, description = "Not an admin or system key", content_type = "application/problem+json")))]
pub async fn list(
    principal: Principal,
    state: web::Data<AppState>,
    page: web::Query<PageQuery>,
    filter: web::Query<KeyFilter>,
) -> ApiResult<HttpResponse> {
    let limit = page.limit()?;
    let workspace = if principal.system {
        filter.workspace.clone()
    } else {
        let own = filter
            .workspace
            .clone()
            .unwrap_or_else(|| principal.workspace.clone());
        authorize(&principal, &own)?;
        Some(own)
    };
    let keys = state
        .store
        .list_keys(workspace.as_deref(), page.after.as_deref(), limit)
        .await?;
    let items: Vec<KeyView> = keys.iter().map(KeyView::from).collect();
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |k| k.id.clone())))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked; the key stops working at once"),
        (status = 403, description = "Not an admin or system key", content_type = "application/problem+json"),
        (status = 404, description = "No such key in a workspace the caller manages", content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !principal.system {
        principal.require(Role::Admin)?;
    }
    let key = state
        .store
        .get_key(&id)
        .await?
        .filter(|k| principal.system || k.workspace == principal.workspace);
    let Some(key) = key else {
        return Err(ApiError::not_found("key"));
    };
    if key.system && !principal.system {
        return Err(ApiError::forbidden("only system keys revoke system keys"));
    }
    if !state.store.revoke_key(&key.id, clock::now_ms()).await? {
        return Err(ApiError::not_found("key"));
    }
    Ok(HttpResponse::NoContent().finish())
}
