//! SQLite backend: the embedded default for one node (WAL journal, one file in the data dir).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::cache::{
    CacheKind, NewSemanticEntry, SemanticHit, SemanticScope, SemanticSearch, SemanticTable,
};
use super::vector_index::{self, Answer, Fallback, Partition, VectorIndex, Writer};
use super::{PoolOptions, StoreError, StoreResult, WorkflowChange, sql, vector};

pub struct SqliteStore {
    pool: SqlitePool,
    /// The semantic cache's in-memory vector index (see `vector_index.rs`).
    index: Arc<VectorIndex>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl SqliteStore {
    /// Opens the database with the default in-memory index budget.
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        Self::connect_with_index(url, options, vector_index::DEFAULT_MAX_BYTES).await
    }

    /// Opens the database; the semantic cache's in-memory index may hold up to
    /// `index_max_bytes` (0: no index, every lookup scans SQLite).
    pub async fn connect_with_index(
        url: &str,
        options: &PoolOptions,
        index_max_bytes: u64,
    ) -> anyhow::Result<Self> {
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
        let index = Arc::new(VectorIndex::new(pool.clone(), index_max_bytes));
        Ok(Self { pool, index })
    }

    /// The semantic cache's in-memory index, for tests and the benchmark's report.
    pub fn vector_index(&self) -> &VectorIndex {
        &self.index
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Sqlite>> {
        acquire(&self.pool).await
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

    /// Every write to `semantic_cache` holds this from before its transaction until its change
    /// is applied to the in-memory index. Take it before a pooled connection.
    async fn semantic_writer(&self, kind: CacheKind, workspace_id: Option<&str>) -> Writer<'_> {
        match kind {
            CacheKind::Semantic => self.index.writer(workspace_id).await,
            CacheKind::Exact => Writer::none(),
        }
    }
}

async fn acquire(pool: &SqlitePool) -> StoreResult<PoolConnection<Sqlite>> {
    let started = Instant::now();
    let conn = pool.acquire().await?;
    sql::record_acquire(started);
    Ok(conn)
}

/// The semantic cache on SQLite: embeddings are little-endian f32 BLOBs. A lookup searches the
/// in-memory index of its workspace and node type (`vector_index.rs`) and falls back to an
/// exact scan of the rows when the index cannot answer; both compare every candidate of the
/// scope, so filters never hide a match, and both compute cosine as pgvector does. The
/// dimension is not a column type here; it is recorded in `cache_meta` all the same so both
/// backends refuse a changed dimension alike.
impl SqliteStore {
    async fn prepare_semantic_table(&self, table: &SemanticTable) -> StoreResult<()> {
        let dimensions = table.dimensions;
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

    async fn reindex_semantic_table(&self, table: &SemanticTable) -> StoreResult<u64> {
        let dimensions = table.dimensions;
        let mut writer = self.semantic_writer(CacheKind::Semantic, None).await;
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
        writer.cleared();
        writer.apply().await;
        Ok(dropped)
    }

    /// Inserts the row and returns its rowid.
    async fn insert_semantic_row(
        conn: &mut SqliteConnection,
        e: &NewSemanticEntry,
    ) -> Result<i64, sqlx::Error> {
        let done = sqlx::query(
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
        Ok(done.last_insert_rowid())
    }

    /// The in-memory index's answer, re-read with every SQL filter before it is served; the
    /// exact scan when the index cannot answer (counted by reason).
    async fn nearest_semantic(
        &self,
        scope: &SemanticScope<'_>,
        query: &[f32],
        _search: &SemanticSearch,
    ) -> StoreResult<Option<SemanticHit>> {
        let reason = match self.index.nearest(scope, query).await {
            Answer::Index(None) => {
                self.index.record_search();
                return Ok(None);
            }
            Answer::Index(Some(candidate)) => {
                let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT id, result, execution_ms, created_at FROM semantic_cache WHERE id = $1 AND workspace_id = $2 \
                     AND node_type = $3 AND required_role <= $4 AND rejected_at IS NULL AND expires_at > $5",
                )
                .bind(&*candidate.id)
                .bind(scope.workspace_id)
                .bind(scope.node_type)
                .bind(scope.max_role.level())
                .bind(scope.now_ms)
                .fetch_optional(&mut *self.acquire().await?)
                .await?;
                if let Some((id, result, execution_ms, created_at_ms)) = row {
                    self.index.record_search();
                    return Ok(Some(SemanticHit {
                        id,
                        similarity: candidate.similarity,
                        result,
                        execution_ms,
                        created_at_ms,
                    }));
                }
                Fallback::Changed
            }
            Answer::Scan(reason) => reason,
        };
        self.index.record_fallback(reason);
        self.scan_semantic(scope, query).await
    }

    /// An exact scan of the scope's rows. sqlx hands rows over one by one from its worker
    /// thread (about 10 µs each), so the scan runs on the connection's raw handle on a
    /// blocking thread instead, and only the best row's result is fetched through sqlx.
    async fn scan_semantic(
        &self,
        scope: &SemanticScope<'_>,
        query: &[f32],
    ) -> StoreResult<Option<SemanticHit>> {
        let filter = ScanFilter {
            workspace_id: scope.workspace_id.to_string(),
            node_type: scope.node_type.to_string(),
            max_role: scope.max_role.level(),
            now_ms: scope.now_ms,
            query: query.to_vec(),
        };
        let (best, mut conn) =
            on_raw_handle(self.acquire().await?, move |db| raw::best(db, &filter)).await?;
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

/// Rows of a workspace and node type, rejected ones included (an upper bound, answered from
/// the `semantic_cache_scan` index without reading the rows).
pub(super) async fn partition_rows(
    pool: &SqlitePool,
    workspace_id: &str,
    node_type: &str,
) -> StoreResult<usize> {
    let mut conn = acquire(pool).await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM semantic_cache WHERE workspace_id = $1 AND node_type = $2",
    )
    .bind(workspace_id)
    .bind(node_type)
    .fetch_one(&mut *conn)
    .await?;
    Ok(usize::try_from(rows).unwrap_or(0))
}

/// Reads the non-rejected rows of a workspace and node type into a partition of `dims`
/// dimensions (rows of another length are skipped, as the scan skips them), on the raw handle.
pub(super) async fn read_partition(
    pool: &SqlitePool,
    workspace_id: &str,
    node_type: &str,
    dims: usize,
    capacity: usize,
) -> StoreResult<Partition> {
    let (workspace_id, node_type) = (workspace_id.to_string(), node_type.to_string());
    let (partition, _conn) = on_raw_handle(acquire(pool).await?, move |db| {
        let mut partition = Partition::with_capacity(dims, capacity);
        db.for_each_row(
            raw::LOAD,
            &[raw::Bind::Text(&workspace_id), raw::Bind::Text(&node_type)],
            |row| {
                partition.push_le_bytes(
                    row.int64(0),
                    row.text(1),
                    row.int64(2) as i16,
                    row.int64(3),
                    row.blob(4),
                );
            },
        )?;
        Ok(partition)
    })
    .await?;
    Ok(partition)
}

/// Runs `f` on the connection's raw handle on a blocking thread, then hands the connection
/// back. The blocking task owns the connection: if the caller is dropped meanwhile, `f` still
/// finishes before the connection returns to the pool.
async fn on_raw_handle<T, F>(
    conn: PoolConnection<Sqlite>,
    f: F,
) -> Result<(T, PoolConnection<Sqlite>), sqlx::Error>
where
    T: Send + 'static,
    F: FnOnce(&raw::Db<'_>) -> Result<T, sqlx::Error> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let out = runtime.block_on(async {
            let mut handle = conn.lock_handle().await?;
            // SAFETY: the handle is locked, so sqlx's worker does not use the connection while
            // `f` runs, and `Db` finalizes every statement it prepares before returning.
            let db = unsafe { raw::Db::new(handle.as_raw_handle().as_ptr()) };
            f(&db)
        });
        out.map(|out| (out, conn))
    })
    .await
    .map_err(|e| sqlx::Error::Protocol(format!("a raw SQLite task panicked: {e}")))?
}

/// What an exact scan compares against and which rows it may see.
struct ScanFilter {
    workspace_id: String,
    node_type: String,
    max_role: i16,
    now_ms: i64,
    query: Vec<f32>,
}

/// Statements straight on SQLite's C API, for the semantic cache's scans and index loads.
mod raw {
    use std::ffi::{CStr, c_int};
    use std::marker::PhantomData;
    use std::ptr;

    use libsqlite3_sys as ffi;

    use super::ScanFilter;
    use crate::store::{vector, vector_index};

    pub(super) const SCAN: &CStr = c"SELECT rowid, required_role, embedding FROM semantic_cache WHERE workspace_id = ?1 AND node_type = ?2 \
        AND required_role <= ?3 AND rejected_at IS NULL AND expires_at > ?4";
    pub(super) const LOAD: &CStr =
        c"SELECT rowid, id, required_role, expires_at, embedding FROM semantic_cache \
        WHERE workspace_id = ?1 AND node_type = ?2 AND rejected_at IS NULL";

    pub(super) enum Bind<'a> {
        Text(&'a str),
        Int(i64),
    }

    /// An open connection that nothing else uses while this lives.
    pub(super) struct Db<'h> {
        db: *mut ffi::sqlite3,
        _handle: PhantomData<&'h mut ()>,
    }

    /// One result row, valid until the next step.
    pub(super) struct Row<'s> {
        statement: *mut ffi::sqlite3_stmt,
        _step: PhantomData<&'s ()>,
    }

    /// Finalizes the statement however the loop ends.
    struct Statement(*mut ffi::sqlite3_stmt);

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: a statement prepared on a connection the caller still holds exclusively.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }

    impl Db<'_> {
        /// # Safety
        /// `db` must be an open connection that nothing else uses while the `Db` lives.
        pub(super) unsafe fn new(db: *mut ffi::sqlite3) -> Self {
            Db {
                db,
                _handle: PhantomData,
            }
        }

        fn error(&self, what: &str) -> sqlx::Error {
            // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
            let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)) }
                .to_string_lossy()
                .into_owned();
            sqlx::Error::Protocol(format!("semantic cache: {what}: {message}"))
        }

        /// Runs `sql` with `binds` (?1, ?2, ...) and calls `f` on every row.
        pub(super) fn for_each_row(
            &self,
            sql: &CStr,
            binds: &[Bind<'_>],
            mut f: impl FnMut(Row<'_>),
        ) -> Result<(), sqlx::Error> {
            let mut raw = ptr::null_mut();
            // SAFETY: the connection is open and exclusively ours (`Db::new`'s contract); `sql`
            // is NUL-terminated; text is copied by SQLite (SQLITE_TRANSIENT); the statement
            // is finalized by `Statement` before this returns, and rows do not outlive a step.
            unsafe {
                if ffi::sqlite3_prepare_v2(self.db, sql.as_ptr(), -1, &mut raw, ptr::null_mut())
                    != ffi::SQLITE_OK
                {
                    return Err(self.error("prepare"));
                }
                let statement = Statement(raw);
                for (i, bind) in binds.iter().enumerate() {
                    let index = i as c_int + 1;
                    let rc = match bind {
                        Bind::Text(value) => ffi::sqlite3_bind_text(
                            statement.0,
                            index,
                            value.as_ptr().cast(),
                            value.len() as c_int,
                            ffi::SQLITE_TRANSIENT(),
                        ),
                        Bind::Int(value) => ffi::sqlite3_bind_int64(statement.0, index, *value),
                    };
                    if rc != ffi::SQLITE_OK {
                        return Err(self.error("bind"));
                    }
                }
                loop {
                    match ffi::sqlite3_step(statement.0) {
                        ffi::SQLITE_ROW => f(Row {
                            statement: statement.0,
                            _step: PhantomData,
                        }),
                        ffi::SQLITE_DONE => return Ok(()),
                        _ => return Err(self.error("step")),
                    }
                }
            }
        }
    }

    impl Row<'_> {
        pub(super) fn int64(&self, column: c_int) -> i64 {
            // SAFETY: the statement is positioned on a row (`for_each_row`).
            unsafe { ffi::sqlite3_column_int64(self.statement, column) }
        }

        /// The column as bytes; empty for NULL.
        pub(super) fn blob(&self, column: c_int) -> &[u8] {
            // SAFETY: as above; the pointer stays valid until the next step, which cannot
            // happen while `self` is borrowed.
            unsafe {
                let data = ffi::sqlite3_column_blob(self.statement, column);
                let len = ffi::sqlite3_column_bytes(self.statement, column);
                if data.is_null() || len <= 0 {
                    return &[];
                }
                std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
            }
        }

        /// The column as text; empty when it is NULL or not UTF-8.
        pub(super) fn text(&self, column: c_int) -> &str {
            // SAFETY: as above; sqlite3_column_text converts to UTF-8 in place first, and
            // sqlite3_column_bytes (called after it) gives the converted length.
            unsafe {
                let data = ffi::sqlite3_column_text(self.statement, column);
                let len = ffi::sqlite3_column_bytes(self.statement, column);
                if data.is_null() || len <= 0 {
                    return "";
                }
                std::str::from_utf8(std::slice::from_raw_parts(data, len as usize)).unwrap_or("")
            }
        }
    }

    /// The most similar row of the scope (similarity, rowid), ordered as the in-memory index
    /// orders ties (`vector_index::ranks_above`).
    pub(super) fn best(
        db: &Db<'_>,
        filter: &ScanFilter,
    ) -> Result<Option<(f64, i64)>, sqlx::Error> {
        let query = &filter.query;
        let query_norm2 = vector::norm2(query);
        let want = query.len() * 4;
        let mut best: Option<(f64, i64, i64)> = None;
        db.for_each_row(
            SCAN,
            &[
                Bind::Text(&filter.workspace_id),
                Bind::Text(&filter.node_type),
                Bind::Int(i64::from(filter.max_role)),
                Bind::Int(filter.now_ms),
            ],
            |row| {
                let stored = row.blob(2);
                if stored.len() != want {
                    return;
                }
                let similarity = vector::cosine_le_bytes(query, query_norm2, stored);
                let candidate = (similarity, row.int64(1), row.int64(0));
                if vector_index::ranks_above(candidate, best) {
                    best = Some(candidate);
                }
            },
        )?;
        Ok(best.map(|(similarity, _, rowid)| (similarity, rowid)))
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::store::cache::CacheStore;
    use crate::store::{Role, Store};

    async fn open(index_max_bytes: u64) -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect_with_index(&url, &PoolOptions::default(), index_max_bytes)
            .await
            .unwrap();
        store
            .prepare_semantic(&SemanticTable::new(DIMS as u32))
            .await
            .unwrap();
        (store, dir)
    }

    const DIMS: usize = 8;
    const NOW: i64 = 1_000_000;

    fn entry(
        id: &str,
        ws: &str,
        node_type: &str,
        prompt: &str,
        role: Role,
        expires_at_ms: i64,
        embedding: Vec<f32>,
    ) -> NewSemanticEntry {
        NewSemanticEntry {
            id: id.into(),
            workspace_id: ws.into(),
            node_type: node_type.into(),
            required_role: role,
            prompt: prompt.into(),
            prompt_hash: format!("hash-{prompt}"),
            result: format!("\"{id}\""),
            embedding,
            execution_ms: None,
            created_at_ms: NOW,
            expires_at_ms,
        }
    }

    fn scope<'a>(ws: &'a str, node_type: &'a str, role: Role, now_ms: i64) -> SemanticScope<'a> {
        SemanticScope {
            workspace_id: ws,
            node_type,
            max_role: role,
            now_ms,
        }
    }

    /// Small integer components: equal similarities (ties) are common, so the tie order is
    /// exercised too.
    fn small_vector(rng: &mut StdRng) -> Vec<f32> {
        (0..DIMS).map(|_| rng.random_range(-1..=2) as f32).collect()
    }

    /// The index answers exactly as the SQL scan would, bit for bit, through every kind of
    /// write: replacements, evictions by the cap, deletes by id and node type, rejections,
    /// purges, hits that reorder the eviction, deleted workspaces and a re-index.
    #[tokio::test]
    async fn the_index_answers_as_the_scan_through_every_kind_of_write() {
        let (store, _dir) = open(vector_index::DEFAULT_MAX_BYTES).await;
        let mut rng = StdRng::seed_from_u64(7);
        let mut workspaces = vec![
            store.create_workspace("a", 1).await.unwrap(),
            store.create_workspace("b", 1).await.unwrap(),
        ];
        let node_types = ["agent", "other"];
        let roles = [Role::Read, Role::Write, Role::Admin];
        let mut ids: Vec<(String, String)> = Vec::new();
        let mut lookups = 0;
        for step in 0..1500 {
            let ws = workspaces[rng.random_range(0..workspaces.len())].clone();
            let node_type = node_types[rng.random_range(0..2)];
            match rng.random_range(0..100) {
                0..40 => {
                    let id = format!("e{step}");
                    let prompt = format!("p{}", rng.random_range(0..40));
                    let expires = NOW + rng.random_range(-50..400);
                    let e = entry(
                        &id,
                        &ws.id,
                        node_type,
                        &prompt,
                        roles[rng.random_range(0..3)],
                        expires,
                        small_vector(&mut rng),
                    );
                    store.insert_semantic(&e, 30).await.unwrap();
                    ids.push((ws.id.clone(), id));
                }
                40..46 if !ids.is_empty() => {
                    let (ws, id) = ids[rng.random_range(0..ids.len())].clone();
                    store
                        .delete_entry(CacheKind::Semantic, &ws, &id, roles[rng.random_range(0..3)])
                        .await
                        .unwrap();
                }
                46..52 if !ids.is_empty() => {
                    let (ws, id) = ids[rng.random_range(0..ids.len())].clone();
                    store
                        .reject_entry(
                            CacheKind::Semantic,
                            &ws,
                            &id,
                            roles[rng.random_range(0..3)],
                            NOW,
                        )
                        .await
                        .unwrap();
                }
                52..58 if !ids.is_empty() => {
                    let (_, id) = ids[rng.random_range(0..ids.len())].clone();
                    store
                        .record_hit(CacheKind::Semantic, &id, NOW + rng.random_range(0..1000))
                        .await
                        .unwrap();
                }
                58..60 => {
                    let of_type = rng.random_bool(0.5).then_some(node_type);
                    store
                        .delete_entries(CacheKind::Semantic, &ws.id, of_type)
                        .await
                        .unwrap();
                }
                60..62 => {
                    store
                        .purge_expired(NOW + rng.random_range(0..300), 3)
                        .await
                        .unwrap();
                }
                62 => {
                    store.delete_workspace(&ws.name).await.unwrap();
                    workspaces.retain(|w| w.id != ws.id);
                    let name = format!("w{step}");
                    workspaces.push(store.create_workspace(&name, 1).await.unwrap());
                }
                _ => {
                    let role = roles[rng.random_range(0..3)];
                    let now = NOW + rng.random_range(-100..300);
                    let scope = scope(&ws.id, node_type, role, now);
                    let query = small_vector(&mut rng);
                    let indexed = store
                        .semantic_nearest(&scope, &query, &SemanticSearch::default())
                        .await
                        .unwrap();
                    let scanned = store.scan_semantic(&scope, &query).await.unwrap();
                    assert_eq!(
                        indexed.as_ref().map(|h| (&h.id, h.similarity.to_bits())),
                        scanned.as_ref().map(|h| (&h.id, h.similarity.to_bits())),
                        "step {step}"
                    );
                    assert_eq!(indexed, scanned, "step {step}");
                    lookups += 1;
                }
            }
        }
        let (searched, fell_back) = store.vector_index().counts();
        assert_eq!(
            (searched, fell_back),
            (lookups, 0),
            "every lookup was the index's"
        );
        assert!(store.vector_index().bytes() > 0);

        // A re-index empties it.
        store
            .reindex_semantic(&SemanticTable::new(DIMS as u32))
            .await
            .unwrap();
        assert_eq!(store.vector_index().bytes(), 0);
        let ws = &workspaces[0].id;
        assert_eq!(
            store
                .semantic_nearest(
                    &scope(ws, "agent", Role::Admin, NOW),
                    &[1.0; DIMS],
                    &SemanticSearch::default()
                )
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn partitions_over_the_budget_are_scanned_and_the_least_recently_used_go_first() {
        // Room for one partition of 10 rows, not two.
        let one = Partition::estimate(DIMS, 10, 32);
        let (store, _dir) = open(one + one / 2).await;
        let a = store.create_workspace("a", 1).await.unwrap().id;
        let b = store.create_workspace("b", 1).await.unwrap().id;
        for ws in [&a, &b] {
            for i in 0..10 {
                let mut v = vec![0.0; DIMS];
                v[i % DIMS] = 1.0 + i as f32;
                let e = entry(
                    &format!("{ws}-{i}"),
                    ws,
                    "agent",
                    &format!("p{i}"),
                    Role::Read,
                    NOW + 1000,
                    v,
                );
                store.insert_semantic(&e, 100).await.unwrap();
            }
        }
        let query = {
            let mut v = vec![0.0; DIMS];
            v[3] = 1.0;
            v
        };
        let search = SemanticSearch::default();
        let hit = store
            .semantic_nearest(&scope(&a, "agent", Role::Read, NOW), &query, &search)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.id, format!("{a}-3"));
        let after_a = store.vector_index().bytes();
        assert!(after_a > 0 && after_a <= one, "{after_a} vs {one}");
        // Loading b evicts a.
        let hit = store
            .semantic_nearest(&scope(&b, "agent", Role::Read, NOW), &query, &search)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.id, format!("{b}-3"));
        assert!(store.vector_index().bytes() <= one + one / 2);
        assert_eq!(store.vector_index().counts(), (2, 0));

        // Growing past the budget: the partition is dropped and its lookups scan.
        for i in 10..30 {
            let mut v = vec![0.0; DIMS];
            v[i % DIMS] = 1.0 + i as f32;
            let e = entry(
                &format!("{b}-{i}"),
                &b,
                "agent",
                &format!("p{i}"),
                Role::Read,
                NOW + 1000,
                v,
            );
            store.insert_semantic(&e, 100).await.unwrap();
        }
        assert_eq!(store.vector_index().bytes(), 0);
        let hit = store
            .semantic_nearest(&scope(&b, "agent", Role::Read, NOW), &query, &search)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.id, format!("{b}-3"), "the scan answers the same");
        assert_eq!(store.vector_index().counts(), (2, 1));

        // A budget of 0 turns the index off.
        let (off, _dir) = open(0).await;
        let ws = off.create_workspace("a", 1).await.unwrap().id;
        off.insert_semantic(
            &entry("x", &ws, "agent", "p", Role::Read, NOW + 1, query.clone()),
            10,
        )
        .await
        .unwrap();
        let hit = off
            .semantic_nearest(&scope(&ws, "agent", Role::Read, NOW), &query, &search)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((hit.id.as_str(), hit.similarity), ("x", 1.0));
        assert_eq!(off.vector_index().counts(), (0, 1));
    }

    /// A write that ends between its commit and the in-memory update (an error, or a request
    /// dropped by a client that left) must not leave the index behind the database.
    #[tokio::test]
    async fn an_unapplied_write_forgets_the_partitions_it_touched() {
        let (store, _dir) = open(vector_index::DEFAULT_MAX_BYTES).await;
        let a = store.create_workspace("a", 1).await.unwrap().id;
        let b = store.create_workspace("b", 1).await.unwrap().id;
        let query = vec![1.0; DIMS];
        for ws in [&a, &b] {
            store
                .insert_semantic(
                    &entry(
                        &format!("{ws}-1"),
                        ws,
                        "agent",
                        "p",
                        Role::Read,
                        NOW + 1000,
                        query.clone(),
                    ),
                    10,
                )
                .await
                .unwrap();
        }
        let search = SemanticSearch::default();
        for ws in [&a, &b] {
            store
                .semantic_nearest(&scope(ws, "agent", Role::Read, NOW), &query, &search)
                .await
                .unwrap()
                .unwrap();
        }
        let both = store.vector_index().bytes();
        // The write commits, then is dropped before it applies its change.
        {
            let _writer = store.vector_index().writer(Some(&a)).await;
            sqlx::query("UPDATE semantic_cache SET rejected_at = 1 WHERE workspace_id = $1")
                .bind(&a)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let left = store.vector_index().bytes();
        assert!(
            left > 0 && left < both,
            "only a's partition went: {left} of {both}"
        );
        assert_eq!(
            store
                .semantic_nearest(&scope(&a, "agent", Role::Read, NOW), &query, &search)
                .await
                .unwrap(),
            None,
            "reloaded from the database"
        );
        assert_eq!(store.vector_index().counts(), (3, 0));
    }

    /// Even an index that missed a change (another process wrote the file) never serves what
    /// the SQL filters refuse: the chosen row is re-read with them first.
    #[tokio::test]
    async fn a_stale_index_never_serves_a_row_the_database_refuses() {
        let (store, _dir) = open(vector_index::DEFAULT_MAX_BYTES).await;
        let a = store.create_workspace("a", 1).await.unwrap().id;
        let query = vec![1.0; DIMS];
        let mut other = query.clone();
        other[0] = 0.0;
        store
            .insert_semantic(
                &entry(
                    "best",
                    &a,
                    "agent",
                    "p1",
                    Role::Read,
                    NOW + 1000,
                    query.clone(),
                ),
                10,
            )
            .await
            .unwrap();
        store
            .insert_semantic(
                &entry("next", &a, "agent", "p2", Role::Read, NOW + 1000, other),
                10,
            )
            .await
            .unwrap();
        let search = SemanticSearch::default();
        let scope = scope(&a, "agent", Role::Read, NOW);
        assert_eq!(
            store
                .semantic_nearest(&scope, &query, &search)
                .await
                .unwrap()
                .unwrap()
                .id,
            "best"
        );
        // Behind the store's back, as another process would.
        sqlx::query("UPDATE semantic_cache SET rejected_at = 1 WHERE id = 'best'")
            .execute(&store.pool)
            .await
            .unwrap();
        let hit = store
            .semantic_nearest(&scope, &query, &search)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.id, "next", "the scan answered");
        assert_eq!(store.vector_index().counts(), (1, 1));
    }
}
