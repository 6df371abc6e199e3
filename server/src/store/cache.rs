//! The caches' persistence, reached through [`crate::store::Store::cache`]: the exact-match cache,
//! the semantic cache, their per-workspace entry counts and the semantic table's dimension.
//!
//! The SQL both backends share lives in `sql.rs` (`impl_sql_cache_store!`); what differs (how an
//! embedding is stored and searched, how the semantic table is created) lives in `sqlite.rs` and
//! `postgres.rs`. The rules (TTLs, roles, thresholds, the deny-list) live in `crate::cache`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Role, StoreResult};

/// Which cache an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    Exact,
    Semantic,
}

impl CacheKind {
    pub const ALL: [CacheKind; 2] = [CacheKind::Exact, CacheKind::Semantic];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Exact => "exact",
            CacheKind::Semantic => "semantic",
        }
    }

    pub fn parse(text: &str) -> Option<CacheKind> {
        match text {
            "exact" => Some(CacheKind::Exact),
            "semantic" => Some(CacheKind::Semantic),
            _ => None,
        }
    }

    /// The table holding this cache's entries.
    pub fn table(self) -> &'static str {
        match self {
            CacheKind::Exact => "exact_cache",
            CacheKind::Semantic => "semantic_cache",
        }
    }
}

impl Role {
    /// The role as stored in the caches' `required_role` columns: read 0, write 1, admin 2.
    pub fn level(self) -> i16 {
        match self {
            Role::Read => 0,
            Role::Write => 1,
            Role::Admin => 2,
        }
    }

    pub fn from_level(level: i16) -> Option<Role> {
        match level {
            0 => Some(Role::Read),
            1 => Some(Role::Write),
            2 => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An exact-cache entry to store. Storing again under the same workspace, key and required role
/// replaces the entry (with a new id).
#[derive(Debug, Clone)]
pub struct NewExactEntry {
    pub id: String,
    pub workspace_id: String,
    /// Lower-case hex sha256 of the canonical JSON of workspace, node type, config and inputs.
    pub key_hash: String,
    pub node_type: String,
    pub required_role: Role,
    /// Inline JSON text; exactly one of `result` and `result_digest` is set.
    pub result: Option<String>,
    pub result_digest: Option<String>,
    pub execution_ms: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExactHit {
    pub id: String,
    pub result: Option<String>,
    pub result_digest: Option<String>,
    pub execution_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A semantic-cache entry to store. Storing the same prompt again under the same workspace, node
/// type and required role replaces the entry.
#[derive(Debug, Clone)]
pub struct NewSemanticEntry {
    pub id: String,
    pub workspace_id: String,
    pub node_type: String,
    pub required_role: Role,
    pub prompt: String,
    /// Lower-case hex sha256 of the prompt: the identical-prompt path needs no vector search.
    pub prompt_hash: String,
    pub result: String,
    pub embedding: Vec<f32>,
    pub execution_ms: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit {
    pub id: String,
    /// Cosine similarity, computed as pgvector does (f32 sums, f64 division).
    pub similarity: f64,
    pub result: String,
    pub execution_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// Which semantic entries a lookup may see: the caller's workspace and node type, a required
/// role at or below the caller's, not rejected, not expired.
#[derive(Debug, Clone, Copy)]
pub struct SemanticScope<'a> {
    pub workspace_id: &'a str,
    pub node_type: &'a str,
    pub max_role: Role,
    pub now_ms: i64,
}

/// pgvector 0.8's iterative index scans: with a filter, an HNSW scan keeps going until enough
/// rows pass it, instead of returning the `ef_search` nearest and filtering them to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IterativeScan {
    /// Plain HNSW: filters apply after the scan, so other workspaces' neighbours can hide ours.
    /// Only for comparisons.
    Off,
    RelaxedOrder,
    StrictOrder,
}

impl IterativeScan {
    pub fn as_str(self) -> &'static str {
        match self {
            IterativeScan::Off => "off",
            IterativeScan::RelaxedOrder => "relaxed_order",
            IterativeScan::StrictOrder => "strict_order",
        }
    }
}

/// How the semantic table is created: the embeddings' dimension and, on PostgreSQL, the
/// HNSW index's build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemanticTable {
    pub dimensions: u32,
    /// PostgreSQL's HNSW graph: neighbours per element and layer (pgvector's `m`; twice as
    /// many on the bottom layer) and candidates considered while inserting
    /// (`ef_construction`). They are fixed when the index is built.
    pub hnsw_m: u32,
    pub hnsw_ef_construction: u32,
}

impl SemanticTable {
    /// Twice pgvector's defaults (m 16, ef_construction 64): on the benchmark's 384-dimension
    /// entries at 1,000,000, m 16 needs ef_search ≈ 200 for recall@1 0.98, m 32 reaches 0.99 at
    /// ef_search 60 in half the time; building costs about three times as much
    /// (`bench/cache.md`).
    pub const DEFAULT_HNSW_M: u32 = 32;
    pub const DEFAULT_HNSW_EF_CONSTRUCTION: u32 = 100;

    pub fn new(dimensions: u32) -> Self {
        Self {
            dimensions,
            hnsw_m: Self::DEFAULT_HNSW_M,
            hnsw_ef_construction: Self::DEFAULT_HNSW_EF_CONSTRUCTION,
        }
    }
}

/// Index search settings (PostgreSQL; SQLite searches exactly and ignores them).
#[derive(Debug, Clone, Copy)]
pub struct SemanticSearch {
    pub ef_search: u32,
    pub iterative_scan: IterativeScan,
    pub max_scan_tuples: u32,
    /// A workspace's node type with at most this many entries is searched exactly, without
    /// the HNSW index (cheap there, and an iterative scan could give up before reaching a
    /// small scope's rows); a larger one always through the index. 0: always the index.
    pub exact_max_entries: u32,
}

impl Default for SemanticSearch {
    fn default() -> Self {
        Self {
            ef_search: 100,
            iterative_scan: IterativeScan::RelaxedOrder,
            max_scan_tuples: 20_000,
            exact_max_entries: 1_000,
        }
    }
}

/// An entry's bookkeeping, as shown by `GET /api/v1/cache/{cache}/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub id: String,
    pub node_type: String,
    pub required_role: Role,
    pub execution_ms: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub hits: i64,
    pub last_hit_at_ms: Option<i64>,
    pub rejected_at_ms: Option<i64>,
}

/// Entries removed by a purge, per cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub exact: u64,
    pub semantic: u64,
}

#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Makes sure the semantic table exists as `table` says. Fails with
    /// [`super::StoreError::DimensionMismatch`] when it was created with another dimension;
    /// an existing index keeps the HNSW parameters it was built with.
    async fn prepare_semantic(&self, table: &SemanticTable) -> StoreResult<()>;
    /// Drops every semantic entry and recreates the table (and its index) as `table` says.
    /// Returns the number of entries dropped.
    async fn reindex_semantic(&self, table: &SemanticTable) -> StoreResult<u64>;

    /// Stores an entry, replacing one with the same key and required role, then evicts the
    /// workspace's least recently used entries above `cap`. Returns how many were evicted.
    async fn insert_exact(&self, entry: &NewExactEntry, cap: u64) -> StoreResult<u64>;
    /// The servable entry with the highest required role at or below `max_role`; counts the hit.
    async fn lookup_exact(
        &self,
        workspace_id: &str,
        key_hash: &str,
        max_role: Role,
        now_ms: i64,
    ) -> StoreResult<Option<ExactHit>>;

    /// Stores an entry, replacing one with the same prompt and required role, then evicts the
    /// workspace's least recently used entries above `cap`. Returns how many were evicted.
    async fn insert_semantic(&self, entry: &NewSemanticEntry, cap: u64) -> StoreResult<u64>;
    /// The servable entry with exactly this prompt (highest required role first), without a
    /// vector search. Does not count a hit.
    async fn semantic_by_prompt(
        &self,
        scope: &SemanticScope<'_>,
        prompt: &str,
        prompt_hash: &str,
    ) -> StoreResult<Option<SemanticHit>>;
    /// The servable entry most similar to `embedding`, whatever its similarity. Does not count
    /// a hit.
    async fn semantic_nearest(
        &self,
        scope: &SemanticScope<'_>,
        embedding: &[f32],
        search: &SemanticSearch,
    ) -> StoreResult<Option<SemanticHit>>;

    /// Counts a hit: hits + 1, last hit and last use now.
    async fn record_hit(&self, kind: CacheKind, id: &str, now_ms: i64) -> StoreResult<()>;
    /// An entry of the workspace whose required role is at or below `max_role`.
    async fn get_entry(
        &self,
        kind: CacheKind,
        workspace_id: &str,
        id: &str,
        max_role: Role,
    ) -> StoreResult<Option<CacheEntry>>;
    /// Deletes an entry of the workspace whose required role is at or below `max_role`.
    async fn delete_entry(
        &self,
        kind: CacheKind,
        workspace_id: &str,
        id: &str,
        max_role: Role,
    ) -> StoreResult<bool>;
    /// Deletes the workspace's entries, all or of one node type. Returns how many.
    async fn delete_entries(
        &self,
        kind: CacheKind,
        workspace_id: &str,
        node_type: Option<&str>,
    ) -> StoreResult<u64>;
    /// Marks an entry wrong: it is never served again. None when the workspace has no such entry
    /// at or below `max_role`; Some(false) when it was rejected before.
    async fn reject_entry(
        &self,
        kind: CacheKind,
        workspace_id: &str,
        id: &str,
        max_role: Role,
        now_ms: i64,
    ) -> StoreResult<Option<bool>>;
    /// Deletes entries that expired at or before `now_ms`, `batch` rows per transaction.
    async fn purge_expired(&self, now_ms: i64, batch: u32) -> StoreResult<Purged>;
    /// Entries per cache over all workspaces.
    async fn entry_counts(&self) -> StoreResult<Vec<(CacheKind, u64)>>;
}
