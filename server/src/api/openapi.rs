//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{cache, cas, health, keys, pagination, plugins, ui, workflows, workspaces};

#[derive(OpenApi)]
#[openapi(
    info(title = "Patchbay", description = "A server people extend with WebAssembly. Errors are RFC 9457 application/problem+json with a stable `type` (urn:patchbay:problem:<kind>)."),
    paths(
        health::health, health::ready, health::metrics,
        workspaces::create, workspaces::list, workspaces::delete,
        keys::create, keys::list, keys::revoke,
        cas::put_blob, cas::post_blob, cas::missing, cas::get_blob,
        plugins::upload, plugins::list, plugins::get, plugins::delete, plugins::rollback,
        workflows::create, workflows::list, workflows::get, workflows::delete,
        workflows::document, workflows::patches, workflows::append, workflows::events,
        cache::store_exact, cache::lookup_exact, cache::lookup_exact_batch, cache::delete_exact_entries,
        cache::store_semantic, cache::lookup_semantic, cache::lookup_semantic_batch, cache::delete_semantic_entries,
        cache::get_entry, cache::delete_entry, cache::reject_entry,
        openapi_json,
        ui::redirect_root, ui::asset,
    ),
    components(schemas(
        workspaces::CreateWorkspace, workspaces::WorkspaceView, pagination::Page<workspaces::WorkspaceView>,
        keys::CreateKey, keys::KeyView, keys::CreatedKey, pagination::Page<keys::KeyView>,
        cas::BlobView, cas::MissingQuery, cas::MissingAnswer,
        plugins::PluginView, plugins::PluginDetail, plugins::PluginList, plugins::RouteView, plugins::VersionView, plugins::RollbackRequest,
        workflows::CreateWorkflow, workflows::CreatedWorkflow, workflows::WorkflowSummary, pagination::Page<workflows::WorkflowSummary>,
        workflows::WorkflowView, workflows::SnapshotView, workflows::SnapshotRef, workflows::PatchHistory,
        workflows::AppendPatch, workflows::Appended, crate::workflows::PatchView,
        cache::ExactStoreRequest, cache::ExactLookupRequest, cache::ExactBatchRequest, cache::ExactLookupAnswer, cache::ExactBatchAnswer,
        cache::SemanticStoreRequest, cache::SemanticLookupRequest, cache::SemanticBatchRequest, cache::SemanticLookupAnswer,
        cache::SemanticBatchAnswer, cache::StoredView, cache::EntryView, cache::DeletedView, crate::store::cache::CacheKind,
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
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key"))
                    .build(),
            ),
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
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}
