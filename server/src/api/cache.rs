//! The result caches over HTTP: exact-match (`/cache/exact`) and semantic (`/cache/semantic`)
//! stores, lookups and batch lookups, and per-entry get, delete and reject (`/cache/{cache}/{id}`).
//! The rules live in [`crate::cache::Caches`].

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Principal;
use crate::cache::{self, CacheError, Caller, Matched, ResultBody, ResultOut};
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::store::Role;
use crate::store::cache::{CacheEntry, CacheKind};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Static paths first: `/cache/exact/lookup` must not be taken for an entry id.
    cfg.service(
        web::resource("/cache/exact")
            .route(web::put().to(store_exact))
            .route(web::delete().to(delete_exact_entries)),
    )
    .service(web::resource("/cache/exact/lookup").route(web::post().to(lookup_exact)))
    .service(web::resource("/cache/exact/lookup/batch").route(web::post().to(lookup_exact_batch)))
    .service(
        web::resource("/cache/semantic")
            .route(web::post().to(store_semantic))
            .route(web::delete().to(delete_semantic_entries)),
    )
    .service(web::resource("/cache/semantic/lookup").route(web::post().to(lookup_semantic)))
    .service(
        web::resource("/cache/semantic/lookup/batch").route(web::post().to(lookup_semantic_batch)),
    )
    .service(
        web::resource("/cache/{cache}/{id}")
            .route(web::get().to(get_entry))
            .route(web::delete().to(delete_entry)),
    )
    .service(web::resource("/cache/{cache}/{id}/reject").route(web::post().to(reject_entry)));
}

/// Tells an absent member from an explicit `null` (a cached result may be `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExactStoreRequest {
    pub node_type: String,
    /// The node's configuration; part of the key.
    #[serde(default)]
    pub config: Value,
    /// The node's inputs; part of the key.
    #[serde(default)]
    pub inputs: Value,
    /// The result as inline JSON; or send `result_digest`.
    #[serde(default, deserialize_with = "present")]
    pub result: Option<Value>,
    /// sha256 of a CAS blob the workspace can see, for large results.
    pub result_digest: Option<String>,
    /// How long the node took; a hit reports it as time saved.
    pub execution_ms: Option<u64>,
    /// Defaults to the node type's TTL; at most `cache.max_ttl_seconds`.
    pub ttl_seconds: Option<u64>,
    /// The least role a lookup needs to be served this entry; defaults to the caller's role
    /// and may not exceed it.
    pub required_role: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExactLookupRequest {
    pub node_type: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub inputs: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExactBatchRequest {
    pub queries: Vec<ExactLookupRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticStoreRequest {
    pub node_type: String,
    pub prompt: String,
    /// `cache.semantic.dimensions` numbers; absent: the configured embedder computes it.
    pub embedding: Option<Vec<f32>>,
    pub result: Value,
    pub execution_ms: Option<u64>,
    pub ttl_seconds: Option<u64>,
    pub required_role: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticLookupRequest {
    pub node_type: String,
    pub prompt: String,
    pub embedding: Option<Vec<f32>>,
    /// Cosine similarity a hit needs (a hit means similarity >= threshold); defaults to
    /// `cache.semantic.default_threshold`, bounded by `min_threshold` and `max_threshold`.
    pub threshold: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticBatchRequest {
    pub queries: Vec<SemanticLookupRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoredView {
    /// For `DELETE /api/v1/cache/{cache}/{id}` and `.../reject`.
    pub id: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// `{"hit": false}`, or a hit with the entry's id, its result (inline or as a CAS digest), its
/// age and the execution time it saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExactLookupAnswer {
    pub hit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExactBatchAnswer {
    /// One answer per query, in order.
    pub results: Vec<ExactLookupAnswer>,
}

/// `{"hit": false}`, or a hit with the entry's id, similarity and result.
#[derive(Debug, Serialize, ToSchema)]
pub struct SemanticLookupAnswer {
    pub hit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Cosine similarity; 1 for an identical prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `prompt` (identical prompt, no vector search) or `embedding`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SemanticBatchAnswer {
    pub results: Vec<SemanticLookupAnswer>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub cache: CacheKind,
    pub node_type: String,
    pub required_role: Role,
    pub execution_ms: Option<i64>,
    pub created_at: String,
    pub expires_at: String,
    pub hits: i64,
    pub last_hit_at: Option<String>,
    /// Marked wrong: never served again.
    pub rejected: bool,
    pub rejected_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedView {
    pub deleted: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteFilter {
    /// Only entries of this node type; absent: all of the workspace's entries in this cache.
    pub node_type: Option<String>,
}

impl From<CacheError> for ApiError {
    fn from(err: CacheError) -> Self {
        let detail = err.to_string();
        let unprocessable = |kind| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                kind,
                "Unprocessable content",
                detail.clone(),
            )
        };
        match err {
            CacheError::InvalidNodeType(_) => ApiError::bad_request("invalid-node-type", detail),
            CacheError::InvalidThreshold { min, max, .. } => {
                ApiError::bad_request("invalid-threshold", detail)
                    .with("min", min)
                    .with("max", max)
            }
            CacheError::InvalidTtl { max, .. } => {
                ApiError::bad_request("invalid-ttl", detail).with("max", max)
            }
            CacheError::InvalidResult(_) => ApiError::bad_request("invalid-result", detail),
            CacheError::UnsafeNumber(e) => {
                ApiError::bad_request("unsafe-number", detail).with("pointer", e.pointer)
            }
            CacheError::InvalidDigest(_) => ApiError::bad_request("invalid-digest", detail),
            CacheError::TooManyQueries { max, .. } => {
                ApiError::bad_request("too-many-queries", detail).with("max", max)
            }
            CacheError::UnknownBlob(_) => unprocessable("unknown-blob"),
            CacheError::ResultTooLarge { limit, .. } | CacheError::PromptTooLong { limit, .. } => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                    detail,
                )
                .with("limit_bytes", limit)
            }
            CacheError::RoleTooHigh { .. } => ApiError::forbidden(detail),
            CacheError::RefusedPii { pattern, field } => unprocessable("refused-pii")
                .with("pattern", pattern)
                .with("field", field),
            CacheError::WrongDimension { expected, got } => unprocessable("wrong-dimension")
                .with("expected", expected)
                .with("got", got),
            CacheError::InvalidEmbedding(_) => unprocessable("invalid-embedding"),
            CacheError::EmbeddingRequired => unprocessable("embedding-required"),
            CacheError::Embedder(e) => {
                tracing::error!(error = %e, "the embedder failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "embedder-failed",
                    "Bad gateway",
                    "the embedding service failed; the server log has the details",
                )
            }
            CacheError::Store(e) => e.into(),
        }
    }
}

fn caller(principal: &Principal) -> Caller<'_> {
    Caller {
        workspace_id: &principal.workspace_id,
        role: principal.role,
    }
}

fn parse_kind(text: &str) -> ApiResult<CacheKind> {
    CacheKind::parse(text).ok_or_else(|| ApiError::not_found("cache"))
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn exact_answer(hit: Option<cache::ExactHit>) -> ExactLookupAnswer {
    let Some(hit) = hit else {
        return ExactLookupAnswer {
            hit: false,
            id: None,
            result: None,
            result_digest: None,
            age_seconds: None,
            saved_ms: None,
        };
    };
    let (result, result_digest) = match hit.result {
        ResultOut::Inline(v) => (Some(v), None),
        ResultOut::Blob(d) => (None, Some(d)),
    };
    ExactLookupAnswer {
        hit: true,
        id: Some(hit.id),
        result,
        result_digest,
        age_seconds: Some(seconds(hit.age_ms)),
        saved_ms: Some(hit.saved_ms.unwrap_or(0)),
    }
}

fn semantic_answer(hit: Option<cache::SemanticHit>) -> SemanticLookupAnswer {
    let Some(hit) = hit else {
        return SemanticLookupAnswer {
            hit: false,
            id: None,
            similarity: None,
            result: None,
            matched: None,
            age_seconds: None,
            saved_ms: None,
        };
    };
    let matched = match hit.matched {
        Matched::Prompt => "prompt",
        Matched::Embedding => "embedding",
    };
    SemanticLookupAnswer {
        hit: true,
        id: Some(hit.id),
        similarity: Some(hit.similarity),
        result: Some(hit.result),
        matched: Some(matched.into()),
        age_seconds: Some(seconds(hit.age_ms)),
        saved_ms: Some(hit.saved_ms.unwrap_or(0)),
    }
}

fn exact_query(q: ExactLookupRequest) -> cache::ExactQuery {
    cache::ExactQuery {
        node_type: q.node_type,
        config: q.config,
        inputs: q.inputs,
    }
}

fn semantic_query(q: SemanticLookupRequest) -> cache::SemanticQuery {
    cache::SemanticQuery {
        node_type: q.node_type,
        prompt: q.prompt,
        embedding: q.embedding,
        threshold: q.threshold,
    }
}

fn stored_view(stored: cache::StoredEntry) -> HttpResponse {
    HttpResponse::Created().json(StoredView {
        id: stored.id,
        expires_at: clock::rfc3339(stored.expires_at_ms),
    })
}

#[utoipa::path(put, path = "/api/v1/cache/exact", tag = "cache", request_body = ExactStoreRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = StoredView, description = "Stored (replacing an entry with the same key and required role)"),
        (status = 400, description = "Invalid node type, TTL, digest, an unsafe integer in config or inputs, or not exactly one of result and result_digest", content_type = "application/problem+json"),
        (status = 403, description = "A read key, or required_role above the caller's role", content_type = "application/problem+json"),
        (status = 413, description = "The inline result exceeds cache.max_result_bytes", content_type = "application/problem+json"),
        (status = 422, description = "refused-pii (the deny-list matched; names the pattern) or unknown-blob", content_type = "application/problem+json"),
    ))]
pub async fn store_exact(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<ExactStoreRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let body = body.into_inner();
    let result = match (body.result, body.result_digest) {
        (Some(value), None) => ResultBody::Inline(value),
        (None, Some(digest)) => ResultBody::Blob(digest),
        _ => {
            return Err(
                CacheError::InvalidResult("send exactly one of result and result_digest").into(),
            );
        }
    };
    let put = cache::ExactPut {
        node_type: body.node_type,
        config: body.config,
        inputs: body.inputs,
        result,
        execution_ms: body.execution_ms,
        ttl_seconds: body.ttl_seconds,
        required_role: body.required_role,
    };
    Ok(stored_view(
        state.caches.store_exact(caller(&principal), put).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/cache/exact/lookup", tag = "cache", request_body = ExactLookupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExactLookupAnswer, description = "A hit or `{\"hit\": false}`"),
        (status = 400, description = "Invalid node type or an unsafe integer", content_type = "application/problem+json"),
    ))]
pub async fn lookup_exact(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<ExactLookupRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let hit = state
        .caches
        .lookup_exact(caller(&principal), &exact_query(body.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(exact_answer(hit)))
}

#[utoipa::path(post, path = "/api/v1/cache/exact/lookup/batch", tag = "cache", request_body = ExactBatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExactBatchAnswer, description = "One answer per query, in order"),
        (status = 400, description = "More than cache.max_batch queries, or an invalid query", content_type = "application/problem+json"),
    ))]
pub async fn lookup_exact_batch(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<ExactBatchRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let queries: Vec<cache::ExactQuery> = body
        .into_inner()
        .queries
        .into_iter()
        .map(exact_query)
        .collect();
    let hits = state
        .caches
        .lookup_exact_batch(caller(&principal), &queries)
        .await?;
    Ok(HttpResponse::Ok().json(ExactBatchAnswer {
        results: hits.into_iter().map(exact_answer).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/cache/semantic", tag = "cache", request_body = SemanticStoreRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = StoredView, description = "Stored (replacing an entry with the same prompt and required role)"),
        (status = 400, description = "Invalid node type or TTL", content_type = "application/problem+json"),
        (status = 403, description = "A read key, or required_role above the caller's role", content_type = "application/problem+json"),
        (status = 413, description = "The result or prompt is too large", content_type = "application/problem+json"),
        (status = 422, description = "wrong-dimension, invalid-embedding, embedding-required (no embedding and no embedder) or refused-pii", content_type = "application/problem+json"),
        (status = 502, description = "The configured embedder failed", content_type = "application/problem+json"),
    ))]
pub async fn store_semantic(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<SemanticStoreRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let body = body.into_inner();
    let put = cache::SemanticPut {
        node_type: body.node_type,
        prompt: body.prompt,
        embedding: body.embedding,
        result: body.result,
        execution_ms: body.execution_ms,
        ttl_seconds: body.ttl_seconds,
        required_role: body.required_role,
    };
    Ok(stored_view(
        state.caches.store_semantic(caller(&principal), put).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/cache/semantic/lookup", tag = "cache", request_body = SemanticLookupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = SemanticLookupAnswer, description = "The most similar entry at or above the threshold, or `{\"hit\": false}`"),
        (status = 400, description = "A threshold outside the configured bounds, or an invalid node type", content_type = "application/problem+json"),
        (status = 422, description = "wrong-dimension, invalid-embedding or embedding-required", content_type = "application/problem+json"),
        (status = 502, description = "The configured embedder failed", content_type = "application/problem+json"),
    ))]
pub async fn lookup_semantic(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<SemanticLookupRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let hit = state
        .caches
        .lookup_semantic(caller(&principal), &semantic_query(body.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(semantic_answer(hit)))
}

#[utoipa::path(post, path = "/api/v1/cache/semantic/lookup/batch", tag = "cache", request_body = SemanticBatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = SemanticBatchAnswer, description = "One answer per query, in order; prompts without embeddings are embedded in one embedder call"),
        (status = 400, description = "More than cache.max_batch queries, or an invalid query", content_type = "application/problem+json"),
        (status = 422, description = "wrong-dimension, invalid-embedding or embedding-required", content_type = "application/problem+json"),
        (status = 502, description = "The configured embedder failed", content_type = "application/problem+json"),
    ))]
pub async fn lookup_semantic_batch(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<SemanticBatchRequest>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let queries: Vec<cache::SemanticQuery> = body
        .into_inner()
        .queries
        .into_iter()
        .map(semantic_query)
        .collect();
    let hits = state
        .caches
        .lookup_semantic_batch(caller(&principal), &queries)
        .await?;
    Ok(HttpResponse::Ok().json(SemanticBatchAnswer {
        results: hits.into_iter().map(semantic_answer).collect(),
    }))
}

async fn delete_entries(
    principal: Principal,
    state: web::Data<AppState>,
    kind: CacheKind,
    filter: DeleteFilter,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Admin)?;
    let deleted = state
        .caches
        .delete_all(caller(&principal), kind, filter.node_type.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(DeletedView { deleted }))
}

#[utoipa::path(delete, path = "/api/v1/cache/exact", tag = "cache", params(DeleteFilter),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DeletedView, description = "The workspace's exact entries (of one node type) are gone"),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    ))]
pub async fn delete_exact_entries(
    principal: Principal,
    state: web::Data<AppState>,
    filter: web::Query<DeleteFilter>,
) -> ApiResult<HttpResponse> {
    delete_entries(principal, state, CacheKind::Exact, filter.into_inner()).await
}

#[utoipa::path(delete, path = "/api/v1/cache/semantic", tag = "cache", params(DeleteFilter),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DeletedView, description = "The workspace's semantic entries (of one node type) are gone"),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    ))]
pub async fn delete_semantic_entries(
    principal: Principal,
    state: web::Data<AppState>,
    filter: web::Query<DeleteFilter>,
) -> ApiResult<HttpResponse> {
    delete_entries(principal, state, CacheKind::Semantic, filter.into_inner()).await
}

#[utoipa::path(get, path = "/api/v1/cache/{cache}/{id}", tag = "cache",
    params(("cache" = CacheKind, Path, description = "exact or semantic"), ("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = EntryView, description = "The entry's bookkeeping: TTL, hits, last hit, rejection"),
        (status = 404, description = "No such entry the caller could be served", content_type = "application/problem+json"),
    ))]
pub async fn get_entry(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Read)?;
    let (kind, id) = path.into_inner();
    let kind = parse_kind(&kind)?;
    let entry = state
        .caches
        .entry(caller(&principal), kind, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("cache entry"))?;
    Ok(HttpResponse::Ok().json(entry_view(kind, entry)))
}

fn entry_view(kind: CacheKind, e: CacheEntry) -> EntryView {
    EntryView {
        id: e.id,
        cache: kind,
        node_type: e.node_type,
        required_role: e.required_role,
        execution_ms: e.execution_ms,
        created_at: clock::rfc3339(e.created_at_ms),
        expires_at: clock::rfc3339(e.expires_at_ms),
        hits: e.hits,
        last_hit_at: e.last_hit_at_ms.map(clock::rfc3339),
        rejected: e.rejected_at_ms.is_some(),
        rejected_at: e.rejected_at_ms.map(clock::rfc3339),
    }
}

#[utoipa::path(delete, path = "/api/v1/cache/{cache}/{id}", tag = "cache",
    params(("cache" = CacheKind, Path, description = "exact or semantic"), ("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "A read key", content_type = "application/problem+json"),
        (status = 404, description = "No such entry the caller could be served", content_type = "application/problem+json"),
    ))]
pub async fn delete_entry(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let (kind, id) = path.into_inner();
    if !state
        .caches
        .delete(caller(&principal), parse_kind(&kind)?, &id)
        .await?
    {
        return Err(ApiError::not_found("cache entry"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/cache/{cache}/{id}/reject", tag = "cache",
    params(("cache" = CacheKind, Path, description = "exact or semantic"), ("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Marked wrong: never served again (idempotent)"),
        (status = 403, description = "A read key", content_type = "application/problem+json"),
        (status = 404, description = "No such entry the caller could be served", content_type = "application/problem+json"),
    ))]
pub async fn reject_entry(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    principal.require(Role::Write)?;
    let (kind, id) = path.into_inner();
    if !state
        .caches
        .reject(caller(&principal), parse_kind(&kind)?, &id)
        .await?
    {
        return Err(ApiError::not_found("cache entry"));
    }
    Ok(HttpResponse::NoContent().finish())
}
