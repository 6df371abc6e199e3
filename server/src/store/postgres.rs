//! PostgreSQL backend: metadata (and, with pgvector, vectors) for many stateless server nodes.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::cache::{
    IterativeScan, NewSemanticEntry, SemanticHit, SemanticScope, SemanticSearch, SemanticTable,
};
use super::large_scopes::LargeScopes;
use super::vector_index::Writer;
use super::{PoolOptions, StoreResult, WORKFLOW_CHANNEL, WorkflowChange, sql, vector};

/// Changes buffered between the listener and its consumer.
const CHANGE_FEED_CAPACITY: usize = 1024;
/// Longest wait between attempts to re-establish a lost LISTEN connection.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub struct PostgresStore {
    pub(super) pool: PgPool,
    connect: PgConnectOptions,
    /// Semantic scopes known to be too large for an exact search (not counted again).
    pub(super) large_scopes: LargeScopes,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl PostgresStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)?
            .application_name("patchbay")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect.clone())
            .await?;
        // Many nodes may start at once: sqlx takes an advisory lock so one migrates at a time.
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            connect,
            large_scopes: LargeScopes::default(),
        })
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Postgres>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        sql::record_acquire(started);
        Ok(conn)
    }

    /// Announces a change to every node's listener. PostgreSQL delivers it when, and only if,
    /// the transaction commits, and in commit order.
    async fn notify(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        change: &WorkflowChange,
    ) -> StoreResult<()> {
        if let Some(payload) = change.payload() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORKFLOW_CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Starts listening (before returning, so no change committed afterwards is missed) and
    /// hands every node's changes to the receiver. A lost connection is re-established and
    /// reported as [`WorkflowChange::Resync`], since changes may have passed unheard.
    /// PostgreSQL searches its own HNSW index; there is no in-process index to keep in step.
    async fn semantic_writer(
        &self,
        _kind: super::cache::CacheKind,
        _workspace_id: Option<&str>,
    ) -> Writer<'static> {
        Writer::none()
    }

    async fn change_feed(&self) -> StoreResult<Option<mpsc::Receiver<WorkflowChange>>> {
        let listener = listen(&self.connect).await?;
        let (tx, rx) = mpsc::channel(CHANGE_FEED_CAPACITY);
        tokio::spawn(run_change_feed(self.connect.clone(), listener, tx));
        Ok(Some(rx))
    }
}

/// A LISTEN connection of its own, outside the store's pool, which it would otherwise hold.
async fn listen(connect: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(WORKFLOW_CHANNEL).await?;
    Ok(listener)
}

async fn run_change_feed(
    connect: PgConnectOptions,
    mut listener: PgListener,
    tx: mpsc::Sender<WorkflowChange>,
) {
    loop {
        let change = match listener.try_recv().await {
            Ok(Some(notification)) => match WorkflowChange::parse(notification.payload()) {
                Some(change) => change,
                None => {
                    tracing::warn!(
                        payload = notification.payload(),
                        "ignoring a malformed workflow notification"
                    );
                    continue;
                }
            },
            // The connection dropped and sqlx re-established it (and re-issued LISTEN).
            Ok(None) => WorkflowChange::Resync,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(error = %err, "listening for workflow changes failed; reconnecting");
                let mut delay = Duration::from_millis(100);
                listener = loop {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    match listen(&connect).await {
                        Ok(listener) => break listener,
                        Err(err) => {
                            tracing::warn!(error = %err, "re-establishing LISTEN failed");
                            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                        }
                    }
                };
                WorkflowChange::Resync
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// Serialises creating and re-creating the semantic table across nodes starting at once.
const SEMANTIC_DDL_LOCK: i64 = 0x7061_7463_6862_6179; // "patchbay"

/// The nearest servable entry. With relaxed ordering an iterative scan may return rows slightly
/// out of order, so the nearest few are fetched and ordered exactly before the best is taken.
/// `distance + 0`, as pgvector's documentation has it: ordered by `distance` itself, the
/// planner takes the CTE as sorted already, and its incremental sort reads only the first
/// rows (EXPLAIN showed 2 of the 10), which skips the re-ordering.
/// The limits are literals: a parameter would leave generic plans guessing at the row count.
pub const NEAREST_RELAXED: &str = "WITH nearest AS MATERIALIZED (\
       SELECT id, result, execution_ms, created_at, required_role, embedding <=> $1::vector AS distance \
       FROM semantic_cache WHERE workspace_id = $2 AND node_type = $3 AND required_role <= $4 \
       AND rejected_at IS NULL AND expires_at > $5 ORDER BY embedding <=> $1::vector LIMIT 10) \
     SELECT id, result, execution_ms, created_at, distance FROM nearest ORDER BY distance + 0, required_role DESC LIMIT 1";
pub const NEAREST_STRICT: &str = "SELECT id, result, execution_ms, created_at, embedding <=> $1::vector AS distance \
     FROM semantic_cache WHERE workspace_id = $2 AND node_type = $3 AND required_role <= $4 \
     AND rejected_at IS NULL AND expires_at > $5 ORDER BY embedding <=> $1::vector LIMIT 1";
/// Every row of a small scope compared: the materialized scope cannot be ordered by the HNSW
/// index, so the planner reads it through the (workspace_id, node_type, ...) btree.
pub const NEAREST_EXACT: &str = "WITH scope AS MATERIALIZED (\
       SELECT id, result, execution_ms, created_at, required_role, embedding <=> $1::vector AS distance \
       FROM semantic_cache WHERE workspace_id = $2 AND node_type = $3 AND required_role <= $4 \
       AND rejected_at IS NULL AND expires_at > $5) \
     SELECT id, result, execution_ms, created_at, distance FROM scope ORDER BY distance, required_role DESC LIMIT 1";

/// Prepares a lookup in the current transaction, in one round trip: sets the HNSW search
/// settings for the transaction (`set_config(..., true)` is `SET LOCAL`) and counts the
/// scope's entries, no further than `exact_max_entries + 1` (an index-only walk of the
/// (workspace_id, node_type, ...) btree, whatever the statistics say). Returns the statement
/// to run ([`nearest_statement`]) and the count when it is within the bound.
///
/// `enable_sort = off` makes the planner take the HNSW index's order rather than sort a btree
/// range: with statistics that predate a workspace's growth it would otherwise estimate a
/// handful of rows and compare every one of them (31 ms at 10,000 entries, seconds at
/// 1,000,000), switching plans whenever autovacuum analyzes. The exact statement sorts a small
/// scope either way (no plan avoids that sort).
pub async fn prepare_lookup(
    conn: &mut PgConnection,
    search: &SemanticSearch,
    workspace_id: &str,
    node_type: &str,
) -> Result<(&'static str, Option<u64>), sqlx::Error> {
    let limit = u64::from(search.exact_max_entries) + 1;
    // `limit` is a number from the configuration, never request text.
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM semantic_cache WHERE workspace_id = $4 AND node_type = $5 \
         LIMIT {limit}) AS scope), {SEARCH_SETTINGS}"
    );
    let (count, ..): (i64, String, String, String, String) =
        bind_search_settings(sqlx::query_as(&sql), search)
            .bind(workspace_id)
            .bind(node_type)
            .fetch_one(conn)
            .await?;
    let count = count.max(0) as u64;
    let entries = (search.exact_max_entries > 0 && count < limit).then_some(count);
    Ok((nearest_statement(search, entries), entries))
}

/// [`prepare_lookup`] for a scope known to be large: the settings only, no count.
pub async fn prepare_large_scope_lookup(
    conn: &mut PgConnection,
    search: &SemanticSearch,
) -> Result<&'static str, sqlx::Error> {
    let sql = format!("SELECT {SEARCH_SETTINGS}");
    let _: (String, String, String, String) = bind_search_settings(sqlx::query_as(&sql), search)
        .fetch_one(conn)
        .await?;
    Ok(nearest_statement(search, None))
}

/// The HNSW search settings for the current transaction (`set_config(..., true)` is `SET
/// LOCAL`), from parameters $1 to $3.
const SEARCH_SETTINGS: &str = "set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', $2, true), \
     set_config('hnsw.max_scan_tuples', $3, true), set_config('enable_sort', 'off', true)";

fn bind_search_settings<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    search: &SemanticSearch,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(search.ef_search.clamp(1, 1000).to_string())
        .bind(search.iterative_scan.as_str())
        .bind(search.max_scan_tuples.max(1).to_string())
}

/// The statement a lookup runs: exact for a scope of at most `exact_max_entries` entries,
/// otherwise the HNSW statement of the iterative scan mode.
pub fn nearest_statement(search: &SemanticSearch, scope_entries: Option<u64>) -> &'static str {
    if scope_entries.is_some_and(|n| n <= u64::from(search.exact_max_entries)) {
        return NEAREST_EXACT;
    }
    match search.iterative_scan {
        IterativeScan::RelaxedOrder => NEAREST_RELAXED,
        IterativeScan::StrictOrder | IterativeScan::Off => NEAREST_STRICT,
    }
}

/// The HNSW cosine index over the embeddings, built with `table`'s graph parameters (numbers
/// checked by the configuration).
pub fn hnsw_index_ddl(table: &SemanticTable) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS semantic_cache_embedding ON semantic_cache USING hnsw (embedding vector_cosine_ops) \
         WITH (m = {}, ef_construction = {})",
        table.hnsw_m, table.hnsw_ef_construction
    )
}

/// The semantic table for `table.dimensions`, with its HNSW cosine index. The dimension is a
/// number checked by the configuration, never text from a request.
fn semantic_ddl(table: &SemanticTable) -> String {
    let (dimensions, hnsw_index) = (table.dimensions, hnsw_index_ddl(table));
    format!(
        "CREATE TABLE IF NOT EXISTS semantic_cache (
            id TEXT PRIMARY KEY,
            workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            node_type TEXT NOT NULL,
            required_role SMALLINT NOT NULL,
            prompt TEXT NOT NULL,
            prompt_hash TEXT NOT NULL,
            result TEXT NOT NULL,
            execution_ms BIGINT,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            hits BIGINT NOT NULL DEFAULT 0,
            last_hit_at BIGINT,
            last_used_at BIGINT NOT NULL,
            rejected_at BIGINT,
            embedding vector({dimensions}) NOT NULL
        );
        {hnsw_index};
        CREATE INDEX IF NOT EXISTS semantic_cache_prompt ON semantic_cache (workspace_id, node_type, prompt_hash);
        CREATE INDEX IF NOT EXISTS semantic_cache_lru ON semantic_cache (workspace_id, last_used_at, id);
        CREATE INDEX IF NOT EXISTS semantic_cache_expiry ON semantic_cache (expires_at);"
    )
}

/// The semantic cache on PostgreSQL: a pgvector `vector(N)` column with an HNSW cosine index,
/// created at start from `cache.semantic.dimensions` (migrations are static SQL, N is not).
impl PostgresStore {
    async fn prepare_semantic_table(&self, table: &SemanticTable) -> StoreResult<()> {
        let dimensions = table.dimensions;
        let mut conn = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEMANTIC_DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM cache_meta WHERE key = $1")
                .bind(vector::DIMENSIONS_KEY)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(stored) = stored {
            tx.commit().await?;
            return super::sqlite::check_dimensions(&stored, dimensions);
        }
        let ddl = semantic_ddl(table);
        sqlx::Executor::execute(&mut *tx, ddl.as_str()).await?;
        sqlx::query("INSERT INTO cache_meta (key, value) VALUES ($1, $2)")
            .bind(vector::DIMENSIONS_KEY)
            .bind(dimensions.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reindex_semantic_table(&self, table: &SemanticTable) -> StoreResult<u64> {
        let dimensions = table.dimensions;
        let mut conn = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEMANTIC_DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('semantic_cache') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
        let dropped: i64 = if exists {
            sqlx::query_scalar("SELECT COUNT(*) FROM semantic_cache")
                .fetch_one(&mut *tx)
                .await?
        } else {
            0
        };
        let ddl = format!(
            "DROP TABLE IF EXISTS semantic_cache; {}",
            semantic_ddl(table)
        );
        sqlx::Executor::execute(&mut *tx, ddl.as_str()).await?;
        sqlx::query("DELETE FROM cache_usage WHERE cache = 'semantic'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO cache_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(vector::DIMENSIONS_KEY)
            .bind(dimensions.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(dropped as u64)
    }

    /// Inserts the row. Returns 0: rowids are SQLite's (its in-memory index orders ties by them).
    async fn insert_semantic_row(
        conn: &mut PgConnection,
        e: &NewSemanticEntry,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "INSERT INTO semantic_cache (id, workspace_id, node_type, required_role, prompt, prompt_hash, result, execution_ms, \
             created_at, expires_at, last_used_at, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $11::vector)",
        )
        .bind(&e.id)
        .bind(&e.workspace_id)
        .bind(&e.node_type)
        .bind(e.required_role.level())
        .bind(&e.prompt)
        .bind(&e.prompt_hash)
        .bind(&e.result)
        .bind(e.execution_ms)
        .bind(e.created_at_ms)
        .bind(e.expires_at_ms)
        .bind(vector::to_pgvector_text(&e.embedding))
        .execute(conn)
        .await?;
        Ok(0)
    }

    /// An HNSW search with pgvector 0.8's iterative scan, so the workspace, node type and role
    /// filters are applied while the index is walked instead of to its first `ef_search` rows:
    /// nearest neighbours in other workspaces cannot hide this workspace's entries. Small
    /// scopes are compared exactly instead (see [`nearest_statement`]); the choice is made
    /// from the scope's size, never left to the planner's statistics, and a scope found large
    /// is not counted again for a while ([`LargeScopes`]).
    async fn nearest_semantic(
        &self,
        scope: &SemanticScope<'_>,
        query: &[f32],
        search: &SemanticSearch,
    ) -> StoreResult<Option<SemanticHit>> {
        let mut conn = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let bound = u64::from(search.exact_max_entries);
        // No count when every scope takes the index, or this one was just counted above the bound.
        let sql = if bound == 0
            || self
                .large_scopes
                .is_above(scope.workspace_id, scope.node_type, bound)
        {
            prepare_large_scope_lookup(&mut tx, search).await?
        } else {
            let (sql, entries) =
                prepare_lookup(&mut tx, search, scope.workspace_id, scope.node_type).await?;
            if entries.is_none() {
                self.large_scopes
                    .counted(scope.workspace_id, scope.node_type, bound + 1);
            }
            sql
        };
        let row: Option<(String, String, Option<i64>, i64, f64)> = sqlx::query_as(sql)
            .bind(vector::to_pgvector_text(query))
            .bind(scope.workspace_id)
            .bind(scope.node_type)
            .bind(scope.max_role.level())
            .bind(scope.now_ms)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(
            |(id, result, execution_ms, created_at_ms, distance)| SemanticHit {
                id,
                // pgvector answers 1 - similarity; undoing that is exact for similarities from 0.5 to 1.
                similarity: (1.0 - distance).clamp(-1.0, 1.0),
                result,
                execution_ms,
                created_at_ms,
            },
        ))
    }
}

sql::impl_sql_store!(PostgresStore, "postgres");
sql::impl_sql_cache_store!(PostgresStore, sqlx::Postgres);
