//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{cas, health, keys, pagination, ui, workflows, workspaces};

#[derive(OpenApi)]
#[openapi(
    info(title = "Patchbay", description = "A server people extend with WebAssembly. Errors are RFC 9457 application/problem+json with a stable `type` (urn:patchbay:problem:<kind>)."),
    paths(
        health::health, health::ready, health::metrics,
        workspaces::create, workspaces::list, workspaces::delete,
        keys::create, keys::list, keys::revoke,
        cas::put_blob, cas::post_blob, cas::missing, cas::get_blob,
        workflows::create, workflows::list, workflows::get, workflows::delete,
        workflows::document, workflows::patches, workflows::append, workflows::events,
        openapi_json,
        ui::redirect_root, ui::asset,
    ),
    components(schemas(
        workspaces::CreateWorkspace, workspaces::WorkspaceView, pagination::Page<workspaces::WorkspaceView>,
        keys::CreateKey, keys::KeyView, keys::CreatedKey, pagination::Page<keys::KeyView>,
        cas::BlobView, cas::MissingQuery, cas::MissingAnswer,
        workflows::CreateWorkflow, workflows::CreatedWorkflow, workflows::WorkflowSummary, pagination::Page<workflows::WorkflowSummary>,
        workflows::WorkflowView, workflows::SnapshotView, workflows::SnapshotRef, workflows::PatchHistory,
        workflows::AppendPatch, workflows::Appended, crate::workflows::PatchView,
        crate::store::Role,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An API key")).build()),
        );
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(openapi_json));
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    HttpResponse::Ok().content_type("application/json").body(body.as_str())
}
