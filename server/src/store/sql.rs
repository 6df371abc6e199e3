//! The SQL both backends share, written once.
//!
//! The statements are identical on SQLite and PostgreSQL (`$N` parameters, `RETURNING`,
//! `ON CONFLICT`), but sqlx's row and executor types differ per database, and a generic
//! implementation drowns in trait bounds. A macro stamps the same code out per backend instead,
//! so each copy is type-checked against its own driver.

/// Implements [`crate::store::Store`] for `$store`, which must have `self.pool`, an
/// `async fn acquire(&self)` that records the pool's wait time, and the backend-specific
/// `async fn notify(tx, change)` (announce a workflow change inside the committing transaction)
/// and `async fn change_feed(&self)` (hear every node's announcements).
macro_rules! impl_sql_store {
    ($store:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                let mut conn = self.acquire().await?;
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                Ok(())
            }

            fn pool_stats(&self) -> $crate::store::PoolStats {
                $crate::store::PoolStats {
                    size: self.pool.size(),
                    idle: self.pool.num_idle() as u32,
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn create_workspace(&self, name: &str, now_ms: i64) -> $crate::store::StoreResult<$crate::store::Workspace> {
                let id = uuid::Uuid::now_v7().simple().to_string();
                let mut conn = self.acquire().await?;
                let inserted = sqlx::query(
                    "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&id)
                .bind(name)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::store::StoreError::Conflict("workspace"));
                }
                Ok($crate::store::Workspace { id, name: name.to_string(), created_at_ms: now_ms })
            }

            async fn get_workspace(&self, name: &str) -> $crate::store::StoreResult<Option<$crate::store::Workspace>> {
                let mut conn = self.acquire().await?;
                let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(row.map(|r| workspace_from_row(&r)).transpose()?)
            }

            async fn list_workspaces(&self, after: Option<&str>, limit: u32) -> $crate::store::StoreResult<Vec<$crate::store::Workspace>> {
                let mut conn = self.acquire().await?;
                let rows = sqlx::query(
                    "SELECT id, name, created_at FROM workspaces WHERE name > $1 ORDER BY name LIMIT $2",
                )
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.iter().map(workspace_from_row).collect::<Result<_, _>>()?)
            }

            async fn delete_workspace(&self, name: &str) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let deleted = sqlx::query("DELETE FROM workspaces WHERE name = $1")
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn insert_key(&self, key: &$crate::store::NewApiKey) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                self.write_key(key, "").await
            }

            async fn upsert_key(&self, key: &$crate::store::NewApiKey) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                self.write_key(
                    key,
                    " ON CONFLICT (id) DO UPDATE SET workspace_id = excluded.workspace_id, role = excluded.role, \
                     is_system = excluded.is_system, secret_hash = excluded.secret_hash, label = excluded.label, \
                     expires_at = excluded.expires_at, revoked_at = NULL",
                )
                .await
            }

            async fn get_key(&self, id: &str) -> $crate::store::StoreResult<Option<$crate::store::ApiKey>> {
                let mut conn = self.acquire().await?;
                let sql = format!("{} WHERE k.id = $1", $crate::store::sql::SELECT_KEYS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
                Ok(row.map(|r| key_from_row(&r)).transpose()?)
            }

            async fn list_keys(
                &self,
                workspace: Option<&str>,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ApiKey>> {
                let mut conn = self.acquire().await?;
                let sql = format!(
                    "{} WHERE ($1 IS NULL OR w.name = $1) AND k.id > $2 ORDER BY k.id LIMIT $3",
                    $crate::store::sql::SELECT_KEYS
                );
                let rows = sqlx::query(&sql)
                    .bind(workspace)
                    .bind(after.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
            }

            async fn revoke_key(&self, id: &str, now_ms: i64) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now_ms)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn count_system_keys(&self) -> $crate::store::StoreResult<i64> {
                let mut conn = self.acquire().await?;
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE is_system AND revoked_at IS NULL")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(count)
            }

            async fn add_blob_ref(&self, workspace_id: &str, digest: &str, size: u64, now_ms: i64) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let done = sqlx::query(
                    "INSERT INTO blob_refs (workspace_id, digest, size, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (workspace_id, digest) DO NOTHING",
                )
                .bind(workspace_id)
                .bind(digest)
                .bind(size as i64)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn blob_ref(&self, workspace_id: &str, digest: &str) -> $crate::store::StoreResult<Option<u64>> {
                let mut conn = self.acquire().await?;
                let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blob_refs WHERE workspace_id = $1 AND digest = $2")
                    .bind(workspace_id)
                    .bind(digest)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(size.map(|s| s as u64))
            }

            async fn missing_blobs(&self, workspace_id: &str, digests: &[String]) -> $crate::store::StoreResult<Vec<String>> {
                let mut conn = self.acquire().await?;
                let mut present = std::collections::HashSet::new();
                // One query per chunk keeps the statement under both databases' parameter limits.
                for chunk in digests.chunks(500) {
                    let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT digest FROM blob_refs WHERE workspace_id = $1 AND digest IN ({})",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar::<_, String>(&sql).bind(workspace_id);
                    for digest in chunk {
                        query = query.bind(digest);
                    }
                    present.extend(query.fetch_all(&mut *conn).await?);
                }
                Ok(digests.iter().filter(|d| !present.contains(*d)).cloned().collect())
            }

            async fn create_workflow(&self, wf: &$crate::store::NewWorkflow) -> $crate::store::StoreResult<$crate::store::Workflow> {
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let inserted = sqlx::query(
                    "INSERT INTO workflows (id, workspace_id, name, version, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $4)",
                )
                .bind(&wf.id)
                .bind(&wf.workspace_id)
                .bind(&wf.name)
                .bind(wf.created_at_ms)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                        return Err($crate::store::StoreError::NotFound("workspace"));
                    }
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Err($crate::store::StoreError::Conflict("workflow"));
                    }
                    other => {
                        other?;
                    }
                }
                sqlx::query(
                    "INSERT INTO workflow_snapshots (workflow_id, seq, materializer_version, digest, size, created_at) \
                     VALUES ($1, 0, $2, $3, $4, $5)",
                )
                .bind(&wf.id)
                .bind(wf.materializer_version)
                .bind(&wf.base_digest)
                .bind(wf.base_size)
                .bind(wf.created_at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok($crate::store::Workflow {
                    id: wf.id.clone(),
                    workspace_id: wf.workspace_id.clone(),
                    name: wf.name.clone(),
                    version: 0,
                    created_at_ms: wf.created_at_ms,
                    updated_at_ms: wf.created_at_ms,
                })
            }

            async fn get_workflow(&self, workspace_id: &str, id: &str) -> $crate::store::StoreResult<Option<$crate::store::Workflow>> {
                let mut conn = self.acquire().await?;
                let row = sqlx::query(
                    "SELECT id, workspace_id, name, version, created_at, updated_at FROM workflows WHERE id = $1 AND workspace_id = $2",
                )
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map(|r| workflow_from_row(&r)).transpose()?)
            }

            async fn list_workflows(
                &self,
                workspace_id: &str,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Workflow>> {
                let mut conn = self.acquire().await?;
                let rows = sqlx::query(
                    "SELECT id, workspace_id, name, version, created_at, updated_at FROM workflows \
                     WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(workspace_id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.iter().map(workflow_from_row).collect::<Result<_, _>>()?)
            }

            async fn delete_workflow(&self, workspace_id: &str, id: &str) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let deleted = sqlx::query("DELETE FROM workflows WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .execute(&mut *tx)
                    .await?;
                if deleted.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                let change = $crate::store::WorkflowChange::Deleted { workflow_id: id.to_string() };
                Self::notify(&mut tx, &change).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn append_patch(&self, patch: &$crate::store::NewPatch) -> $crate::store::StoreResult<$crate::store::AppendOutcome> {
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                // Starting with the write takes the write lock at once (SQLite) or the row lock
                // (PostgreSQL, where a waiting writer re-checks `version` after the holder commits).
                let bumped = sqlx::query("UPDATE workflows SET version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
                    .bind(patch.created_at_ms)
                    .bind(&patch.workflow_id)
                    .bind(patch.base_version)
                    .execute(&mut *tx)
                    .await?;
                if bumped.rows_affected() == 0 {
                    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM workflows WHERE id = $1")
                        .bind(&patch.workflow_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return Ok(match current {
                        Some(current_version) => $crate::store::AppendOutcome::Conflict { current_version },
                        None => $crate::store::AppendOutcome::NotFound,
                    });
                }
                let record = $crate::store::PatchRecord {
                    seq: patch.base_version + 1,
                    ops: patch.ops.clone(),
                    author: patch.author.clone(),
                    created_at_ms: patch.created_at_ms,
                };
                sqlx::query("INSERT INTO workflow_patches (workflow_id, seq, ops, author, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&patch.workflow_id)
                    .bind(record.seq)
                    .bind(&record.ops)
                    .bind(&record.author)
                    .bind(record.created_at_ms)
                    .execute(&mut *tx)
                    .await?;
                let change = $crate::store::WorkflowChange::Patch { workflow_id: patch.workflow_id.clone(), seq: record.seq };
                Self::notify(&mut tx, &change).await?;
                tx.commit().await?;
                Ok($crate::store::AppendOutcome::Committed(record))
            }

            async fn list_patches(
                &self,
                workflow_id: &str,
                after: i64,
                until: Option<i64>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::PatchRecord>> {
                let mut conn = self.acquire().await?;
                let rows = sqlx::query(
                    "SELECT seq, ops, author, created_at FROM workflow_patches \
                     WHERE workflow_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                )
                .bind(workflow_id)
                .bind(after)
                .bind(until.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.iter().map(patch_from_row).collect::<Result<_, _>>()?)
            }

            async fn insert_snapshot(&self, snapshot: &$crate::store::SnapshotRecord) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let done = sqlx::query(
                    "INSERT INTO workflow_snapshots (workflow_id, seq, materializer_version, digest, size, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workflow_id, seq, materializer_version) DO NOTHING",
                )
                .bind(&snapshot.workflow_id)
                .bind(snapshot.seq)
                .bind(snapshot.materializer_version)
                .bind(&snapshot.digest)
                .bind(snapshot.size)
                .bind(snapshot.created_at_ms)
                .execute(&mut *conn)
                .await;
                match done {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err($crate::store::StoreError::NotFound("workflow")),
                    other => Ok(other?.rows_affected() > 0),
                }
            }

            async fn latest_snapshot(
                &self,
                workflow_id: &str,
                materializer_version: i64,
                at_most: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::SnapshotRecord>> {
                let mut conn = self.acquire().await?;
                let row = sqlx::query(
                    "SELECT workflow_id, seq, materializer_version, digest, size, created_at FROM workflow_snapshots \
                     WHERE workflow_id = $1 AND (materializer_version = $2 OR seq = 0) AND seq <= $3 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(workflow_id)
                .bind(materializer_version)
                .bind(at_most)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map(|r| snapshot_from_row(&r)).transpose()?)
            }

            async fn list_snapshots(
                &self,
                workflow_id: &str,
                materializer_version: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::SnapshotRecord>> {
                let mut conn = self.acquire().await?;
                let rows = sqlx::query(
                    "SELECT workflow_id, seq, materializer_version, digest, size, created_at FROM workflow_snapshots \
                     WHERE workflow_id = $1 AND (materializer_version = $2 OR seq = 0) ORDER BY seq",
                )
                .bind(workflow_id)
                .bind(materializer_version)
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.iter().map(snapshot_from_row).collect::<Result<_, _>>()?)
            }

            async fn workflow_changes(
                &self,
            ) -> $crate::store::StoreResult<Option<tokio::sync::mpsc::Receiver<$crate::store::WorkflowChange>>> {
                self.change_feed().await
            }
        }

        impl $store {
            async fn write_key(
                &self,
                key: &$crate::store::NewApiKey,
                on_conflict: &str,
            ) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                {
                    let mut conn = self.acquire().await?;
                    let sql = format!(
                        "INSERT INTO api_keys (id, workspace_id, role, is_system, secret_hash, label, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8){on_conflict}"
                    );
                    let result = sqlx::query(&sql)
                        .bind(&key.id)
                        .bind(&key.workspace_id)
                        .bind(key.role.as_str())
                        .bind(key.system)
                        .bind(&key.secret_hash)
                        .bind(&key.label)
                        .bind(key.created_at_ms)
                        .bind(key.expires_at_ms)
                        .execute(&mut *conn)
                        .await;
                    match result {
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Err($crate::store::StoreError::Conflict("key"));
                        }
                        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                            return Err($crate::store::StoreError::NotFound("workspace"));
                        }
                        other => {
                            other?;
                        }
                    }
                }
                use $crate::store::Store as _;
                self.get_key(&key.id).await?.ok_or($crate::store::StoreError::NotFound("key"))
            }
        }

        fn workflow_from_row<R: sqlx::Row>(row: &R) -> Result<$crate::store::Workflow, sqlx::Error>
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'a> &'a str: sqlx::ColumnIndex<R>,
        {
            Ok($crate::store::Workflow {
                id: row.try_get("id")?,
                workspace_id: row.try_get("workspace_id")?,
                name: row.try_get("name")?,
                version: row.try_get("version")?,
                created_at_ms: row.try_get("created_at")?,
                updated_at_ms: row.try_get("updated_at")?,
            })
        }

        fn patch_from_row<R: sqlx::Row>(row: &R) -> Result<$crate::store::PatchRecord, sqlx::Error>
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'a> &'a str: sqlx::ColumnIndex<R>,
        {
            Ok($crate::store::PatchRecord {
                seq: row.try_get("seq")?,
                ops: row.try_get("ops")?,
                author: row.try_get("author")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        fn snapshot_from_row<R: sqlx::Row>(row: &R) -> Result<$crate::store::SnapshotRecord, sqlx::Error>
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'a> &'a str: sqlx::ColumnIndex<R>,
        {
            Ok($crate::store::SnapshotRecord {
                workflow_id: row.try_get("workflow_id")?,
                seq: row.try_get("seq")?,
                materializer_version: row.try_get("materializer_version")?,
                digest: row.try_get("digest")?,
                size: row.try_get("size")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        fn workspace_from_row<R: sqlx::Row>(row: &R) -> Result<$crate::store::Workspace, sqlx::Error>
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'a> &'a str: sqlx::ColumnIndex<R>,
        {
            Ok($crate::store::Workspace {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        fn key_from_row<R: sqlx::Row>(row: &R) -> Result<$crate::store::ApiKey, sqlx::Error>
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'a> &'a str: sqlx::ColumnIndex<R>,
        {
            let role: String = row.try_get("role")?;
            Ok($crate::store::ApiKey {
                id: row.try_get("id")?,
                workspace_id: row.try_get("workspace_id")?,
                workspace: row.try_get("workspace")?,
                role: $crate::store::Role::parse(&role).ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role}").into()))?,
                system: row.try_get("is_system")?,
                secret_hash: row.try_get("secret_hash")?,
                label: row.try_get("label")?,
                created_at_ms: row.try_get("created_at")?,
                expires_at_ms: row.try_get("expires_at")?,
                revoked_at_ms: row.try_get("revoked_at")?,
            })
        }
    };
}

pub(crate) use impl_sql_store;

pub(crate) const SELECT_KEYS: &str = "SELECT k.id, k.workspace_id, w.name AS workspace, k.role, k.is_system, \
     k.secret_hash, k.label, k.created_at, k.expires_at, k.revoked_at \
     FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id";

/// Records how long a caller waited for a pooled connection.
pub(crate) fn record_acquire(started: std::time::Instant) {
    metrics::histogram!(crate::telemetry::names::DB_ACQUIRE_SECONDS).record(started.elapsed().as_secs_f64());
}
