//! SQLite backend: the embedded default for one node (WAL journal, one file in the data dir).

use std::str::FromStr;
use std::time::Instant;

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

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
    /// sqlx hands rows over one by one from its worker thread (about 10 µs each), so the scan
    /// runs on the connection's raw handle on a blocking thread instead, and only the best
    /// row's result is fetched through sqlx.
    async fn nearest_semantic(
        &self,
        scope: &SemanticScope<'_>,
        query: &[f32],
        _search: &SemanticSearch,
    ) -> StoreResult<Option<SemanticHit>> {
        let conn = self.acquire().await?;
        let runtime = tokio::runtime::Handle::current();
        let filter = ScanFilter {
            workspace_id: scope.workspace_id.to_string(),
            node_type: scope.node_type.to_string(),
            max_role: scope.max_role.level(),
            now_ms: scope.now_ms,
            query: query.to_vec(),
        };
        // The blocking task owns the connection: if this request is dropped meanwhile, the
        // scan still finishes before the connection goes back to the pool.
        let (best, mut conn) = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let best = runtime.block_on(async {
                let mut handle = conn.lock_handle().await?;
                // SAFETY: the handle is locked, so sqlx's worker does not use the connection
                // while the scan runs; the statement is finalized before the lock is released.
                unsafe { raw_scan::best(handle.as_raw_handle().as_ptr(), &filter) }
            });
            best.map(|best| (best, conn))
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("the semantic scan panicked: {e}")))??;
        let Some((similarity, rowid)) = best else {
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

/// What an exact scan compares against and which rows it may see.
struct ScanFilter {
    workspace_id: String,
    node_type: String,
    max_role: i16,
    now_ms: i64,
    query: Vec<f32>,
}

/// The semantic cache's exact scan, straight on SQLite's C API.
mod raw_scan {
    use std::ffi::{CStr, c_int};
    use std::ptr;

    use libsqlite3_sys as ffi;

    use super::ScanFilter;
    use crate::store::vector;

    const SQL: &CStr = c"SELECT rowid, required_role, embedding FROM semantic_cache WHERE workspace_id = ?1 AND node_type = ?2 \
        AND required_role <= ?3 AND rejected_at IS NULL AND expires_at > ?4";

    /// Finalizes the statement however the scan ends.
    struct Statement(*mut ffi::sqlite3_stmt);

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: a statement prepared on a connection that is still locked by the caller.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }

    unsafe fn error(db: *mut ffi::sqlite3, what: &str) -> sqlx::Error {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
            .to_string_lossy()
            .into_owned();
        sqlx::Error::Protocol(format!("semantic scan: {what}: {message}"))
    }

    /// The most similar row (similarity, rowid); among equals the highest required role.
    ///
    /// # Safety
    /// `db` must be an open connection that nothing else uses until this returns.
    pub(super) unsafe fn best(
        db: *mut ffi::sqlite3,
        filter: &ScanFilter,
    ) -> Result<Option<(f64, i64)>, sqlx::Error> {
        let mut raw = ptr::null_mut();
        // SAFETY: `db` is open and exclusively ours (the caller's contract); SQL is NUL-terminated.
        unsafe {
            if ffi::sqlite3_prepare_v2(db, SQL.as_ptr(), -1, &mut raw, ptr::null_mut())
                != ffi::SQLITE_OK
            {
                return Err(error(db, "prepare"));
            }
            let statement = Statement(raw);
            let text = |index: c_int, value: &str| {
                ffi::sqlite3_bind_text(
                    statement.0,
                    index,
                    value.as_ptr().cast(),
                    value.len() as c_int,
                    ffi::SQLITE_TRANSIENT(),
                )
            };
            let bound = [
                text(1, &filter.workspace_id),
                text(2, &filter.node_type),
                ffi::sqlite3_bind_int(statement.0, 3, c_int::from(filter.max_role)),
                ffi::sqlite3_bind_int64(statement.0, 4, filter.now_ms),
            ];
            if bound.iter().any(|rc| *rc != ffi::SQLITE_OK) {
                return Err(error(db, "bind"));
            }
            let query = &filter.query;
            let query_norm2 = vector::norm2(query);
            let want = query.len() * 4;
            let mut best: Option<(f64, c_int, i64)> = None;
            loop {
                match ffi::sqlite3_step(statement.0) {
                    ffi::SQLITE_ROW => {
                        let blob = ffi::sqlite3_column_blob(statement.0, 2);
                        let len = ffi::sqlite3_column_bytes(statement.0, 2);
                        if blob.is_null() || len as usize != want {
                            continue;
                        }
                        let stored = std::slice::from_raw_parts(blob.cast::<u8>(), want);
                        let similarity = vector::cosine_le_bytes(query, query_norm2, stored);
                        let role = ffi::sqlite3_column_int(statement.0, 1);
                        if best
                            .is_none_or(|(s, r, _)| similarity > s || (similarity == s && role > r))
                        {
                            best =
                                Some((similarity, role, ffi::sqlite3_column_int64(statement.0, 0)));
                        }
                    }
                    ffi::SQLITE_DONE => break,
                    _ => return Err(error(db, "step")),
                }
            }
            Ok(best.map(|(similarity, _, rowid)| (similarity, rowid)))
        }
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
