//! SQLite backend: the embedded default for one node (WAL journal, one file in the data dir).

use std::str::FromStr;
use std::time::Instant;

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::cache::{NewSemanticEntry, SemanticHit, SemanticScope, SemanticSearch};
use super::{PoolOptions, StoreError, StoreResult, WorkflowChange, sql, vector};

pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl SqliteStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; only an OS crash may lose the
            // last commits, the usual trade for one-node servers.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Sqlite>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        sql::record_acquire(started);
        Ok(conn)
    }

    /// One SQLite database serves one node, which hears its own changes in process.
    async fn notify(
        _tx: &mut sqlx::Transaction<'_, Sqlite>,
        _change: &WorkflowChange,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn change_feed(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<WorkflowChange>>> {
        Ok(None)
    }
}

/// The semantic cache on SQLite: embeddings are little-endian f32 BLOBs and a lookup scans the
/// candidate rows of one workspace and node type exactly (cosine in Rust, as pgvector computes
/// it). The dimension is not a column type here; it is recorded in `cache_meta` all the same so
/// both backends refuse a changed dimension alike.
impl SqliteStore {
    async fn prepare_semantic_table(&self, dimensions: u32) -> StoreResult<()> {
        let mut conn = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO cache_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(vector::DIMENSIONS_KEY)
        .bind(dimensions.to_string())
        .execute(&mut *tx)
        .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM cache_meta WHERE key = $1")
            .bind(vector::DIMENSIONS_KEY)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        check_dimensions(&stored, dimensions)
    }

    async fn reindex_semantic_table(&self, dimensions: u32) -> StoreResult<u64> {
        let mut conn = self.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let dropped = sqlx::query("DELETE FROM semantic_cache")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM cache_usage WHERE cache = 'semantic'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO cache_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(vector::DIMENSIONS_KEY)
            .bind(dimensions.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(dropped)
    }

    async fn insert_semantic_row(
        conn: &mut SqliteConnection,
        e: &NewSemanticEntry,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO semantic_cache (id, workspace_id, node_type, required_role, prompt, prompt_hash, result, execution_ms, \
             created_at, expires_at, last_used_at, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $11)",
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
        .bind(vector::to_le_bytes(&e.embedding))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// An exact scan: every candidate of the scope is compared, so filters never hide a match.
    async fn nearest_semantic(
        &self,
        scope: &SemanticScope<'_>,
        query: &[f32],
        _search: &SemanticSearch,
    ) -> StoreResult<Option<SemanticHit>> {
        let query_norm2 = vector::norm2(query);
        let mut conn = self.acquire().await?;
        let mut best: Option<(f64, i16, i64)> = None;
        {
            let mut rows = sqlx::query(
                "SELECT rowid, required_role, embedding FROM semantic_cache WHERE workspace_id = $1 AND node_type = $2 \
                 AND required_role <= $3 AND rejected_at IS NULL AND expires_at > $4",
            )
            .bind(scope.workspace_id)
            .bind(scope.node_type)
            .bind(scope.max_role.level())
            .bind(scope.now_ms)
            .fetch(&mut *conn);
            while let Some(row) = rows.try_next().await? {
                let blob: &[u8] = row.try_get(2)?;
                if blob.len() != query.len() * 4 {
                    continue;
                }
                let similarity = vector::cosine_le_bytes(query, query_norm2, blob);
                let role: i16 = row.try_get(1)?;
                // The most similar; among equals, the highest required role (as the exact cache).
                if best.is_none_or(|(s, r, _)| similarity > s || (similarity == s && role > r)) {
                    best = Some((similarity, role, row.try_get(0)?));
                }
            }
        }
        let Some((similarity, _, rowid)) = best else {
            return Ok(None);
        };
        let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(
            "SELECT id, result, execution_ms, created_at FROM semantic_cache WHERE rowid = $1",
        )
        .bind(rowid)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(
            row.map(|(id, result, execution_ms, created_at_ms)| SemanticHit {
                id,
                similarity,
                result,
                execution_ms,
                created_at_ms,
            }),
        )
    }
}

/// Compares the recorded dimension with the configured one.
pub(crate) fn check_dimensions(stored: &str, configured: u32) -> StoreResult<()> {
    let stored: u32 = stored.parse().map_err(|_| {
        StoreError::Database(sqlx::Error::Decode(
            format!("cache_meta {}: {stored:?}", vector::DIMENSIONS_KEY).into(),
        ))
    })?;
    if stored != configured {
        return Err(StoreError::DimensionMismatch { stored, configured });
    }
    Ok(())
}

sql::impl_sql_store!(SqliteStore, "sqlite");
sql::impl_sql_cache_store!(SqliteStore, sqlx::Sqlite);
