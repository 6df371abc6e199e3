//! The metadata store: the only door to workspaces, keys, blob visibility, workflows and (later)
//! plugins and caches. One trait, two implementations (SQLite for one node, PostgreSQL for many),
//! The metadata store: the only door to workspaces, keys, blob visibility, the caches (through
//! [`Store::cache`]) and (later) workflows and plugins. One trait, two implementations (SQLite for one node, PostgreSQL for many),
//! both held to the same conformance suite (`conformance.rs`).

pub mod cache;
mod large_scopes;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod types;
pub mod vector;
pub mod vector_index;

#[cfg(test)]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Config;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(
        "the semantic cache was created for {stored}-dimension embeddings, but cache.semantic.dimensions is {configured}; \
         set it back to {stored}, or run `patchbay cache reindex --dimensions {configured}` (drops every semantic entry)"
    )]
    DimensionMismatch { stored: u32, configured: u32 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connection pool figures, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and readiness ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    fn pool_stats(&self) -> PoolStats;

    async fn create_workspace(&self, name: &str, now_ms: i64) -> StoreResult<Workspace>;
    async fn get_workspace(&self, name: &str) -> StoreResult<Option<Workspace>>;
    /// Workspaces ordered by name, after the cursor.
    async fn list_workspaces(&self, after: Option<&str>, limit: u32)
    -> StoreResult<Vec<Workspace>>;
    /// Deletes the workspace, its keys and its blob references. False when it did not exist.
    async fn delete_workspace(&self, name: &str) -> StoreResult<bool>;

    async fn insert_key(&self, key: &NewApiKey) -> StoreResult<ApiKey>;
    /// Creates or replaces a key by id (the bootstrap admin token is kept under a fixed id).
    async fn upsert_key(&self, key: &NewApiKey) -> StoreResult<ApiKey>;
    async fn get_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Keys ordered by id, after the cursor; all workspaces when `workspace` is None.
    async fn list_keys(
        &self,
        workspace: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ApiKey>>;
    /// Marks a key revoked. False when it did not exist or was already revoked.
    async fn revoke_key(&self, id: &str, now_ms: i64) -> StoreResult<bool>;
    async fn count_system_keys(&self) -> StoreResult<i64>;

    /// Makes a verified blob visible to a workspace. True when the reference is new.
    async fn add_blob_ref(
        &self,
        workspace_id: &str,
        digest: &str,
        size: u64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// The blob's size when the workspace may see it.
    async fn blob_ref(&self, workspace_id: &str, digest: &str) -> StoreResult<Option<u64>>;
    /// The digests among `digests` the workspace cannot see, in the order given.
    async fn missing_blobs(
        &self,
        workspace_id: &str,
        digests: &[String],
    ) -> StoreResult<Vec<String>>;

    /// Records an uploaded plugin version. False when the same version with the same manifest
    /// and component was already recorded; a different one under that version is a conflict.
    async fn add_plugin_version(&self, record: &PluginVersionRecord) -> StoreResult<bool>;
    /// Makes a recorded version the active one and bumps the plugin generation.
    async fn activate_plugin(&self, name: &str, version: &str, now_ms: i64) -> StoreResult<()>;
    /// Removes a plugin with all its versions and bumps the generation. False when absent.
    async fn delete_plugin(&self, name: &str) -> StoreResult<bool>;
    /// Every plugin with its active version, ordered by name.
    async fn active_plugins(&self) -> StoreResult<Vec<ActivePluginRecord>>;
    /// A plugin's versions, oldest first.
    async fn plugin_versions(&self, name: &str) -> StoreResult<Vec<PluginVersionRecord>>;
    /// Changes with every plugin change; nodes poll it to pick up other nodes' uploads.
    async fn plugin_generation(&self) -> StoreResult<i64>;
    /// Creates a workflow at version 0 with its base snapshot (seq 0), in one transaction.
    async fn create_workflow(&self, workflow: &NewWorkflow) -> StoreResult<Workflow>;
    /// The workflow if it belongs to the workspace.
    async fn get_workflow(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Workflow>>;
    /// The workspace's workflows ordered by id (creation order), after the cursor.
    async fn list_workflows(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Workflow>>;
    /// Deletes the workflow with its patches and snapshot rows. False when the workspace has no
    /// such workflow.
    async fn delete_workflow(&self, workspace_id: &str, id: &str) -> StoreResult<bool>;
    /// Commits a patch as version `base_version + 1` if the workflow is still at `base_version`:
    /// the version check, the version bump and the patch row are one transaction, so concurrent
    /// writers can never lose or duplicate a patch. On PostgreSQL the commit also notifies
    /// [`Store::workflow_changes`] listeners on every node.
    async fn append_patch(&self, patch: &NewPatch) -> StoreResult<AppendOutcome>;
    /// Patches with `after < seq <= until` (no upper bound when None), in order, at most `limit`.
    async fn list_patches(
        &self,
        workflow_id: &str,
        after: i64,
        until: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PatchRecord>>;
    /// Records a snapshot. False when it was already recorded; NotFound when the workflow is gone.
    async fn insert_snapshot(&self, snapshot: &SnapshotRecord) -> StoreResult<bool>;
    /// The latest snapshot at or before `at_most` that `materializer_version` may use: its own
    /// compactions and the base document (seq 0, usable by every version).
    async fn latest_snapshot(
        &self,
        workflow_id: &str,
        materializer_version: i64,
        at_most: i64,
    ) -> StoreResult<Option<SnapshotRecord>>;
    /// Every snapshot `materializer_version` may use, by seq.
    async fn list_snapshots(
        &self,
        workflow_id: &str,
        materializer_version: i64,
    ) -> StoreResult<Vec<SnapshotRecord>>;
    /// Workflow changes committed by any node, when the backend can tell (PostgreSQL
    /// LISTEN/NOTIFY); None on SQLite, where one node sees all its own changes.
    async fn workflow_changes(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<WorkflowChange>>>;
    /// The caches' persistence.
    fn cache(&self) -> &dyn cache::CacheStore;
}

/// The PostgreSQL NOTIFY channel of workflow changes.
pub const WORKFLOW_CHANNEL: &str = "patchbay_workflows";

/// Opens the store the configuration names and runs its migrations.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let db = &config.database;
    let options = PoolOptions {
        max_connections: db.max_connections,
        min_connections: db.min_connections,
        acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
        idle_timeout: Duration::from_millis(db.idle_timeout_ms),
        statement_timeout: Duration::from_millis(db.statement_timeout_ms),
        busy_timeout: Duration::from_millis(db.sqlite_busy_timeout_ms),
    };
    let index_max_bytes = config.cache.semantic.sqlite_index_max_bytes;
    let store: Arc<dyn Store> = match config.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            Arc::new(postgres::PostgresStore::connect(url, &options).await?)
        }
        Some(url) => {
            Arc::new(sqlite::SqliteStore::connect_with_index(url, &options, index_max_bytes).await?)
        }
        None => {
            std::fs::create_dir_all(&config.data_dir)?;
            let path = config.data_dir.join("patchbay.db");
            let url = format!("sqlite://{}", path.display());
            Arc::new(
                sqlite::SqliteStore::connect_with_index(&url, &options, index_max_bytes).await?,
            )
        }
    };
    Ok(store)
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub statement_timeout: Duration,
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        let db = crate::config::DatabaseConfig::default();
        Self {
            max_connections: db.max_connections,
            min_connections: db.min_connections,
            acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
            idle_timeout: Duration::from_millis(db.idle_timeout_ms),
            statement_timeout: Duration::from_millis(db.statement_timeout_ms),
            busy_timeout: Duration::from_millis(db.sqlite_busy_timeout_ms),
        }
    }
}
