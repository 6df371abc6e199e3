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
                // The workspace's semantic entries go with it (ON DELETE CASCADE).
                let mut writer = self.semantic_writer($crate::store::cache::CacheKind::Semantic, None).await;
                let mut conn = self.acquire().await?;
                let deleted: Option<String> = sqlx::query_scalar("DELETE FROM workspaces WHERE name = $1 RETURNING id")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(id) = &deleted {
                    writer.dropped(id, None);
                }
                writer.apply().await;
                Ok(deleted.is_some())
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

            async fn add_plugin_version(&self, record: &$crate::store::PluginVersionRecord) -> $crate::store::StoreResult<bool> {
                let mut conn = self.acquire().await?;
                let inserted = sqlx::query(
                    "INSERT INTO plugin_versions (name, version, manifest, digest, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name, version) DO NOTHING",
                )
                .bind(&record.name)
                .bind(&record.version)
                .bind(&record.manifest)
                .bind(&record.digest)
                .bind(record.created_at_ms)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() > 0 {
                    return Ok(true);
                }
                let existing: Option<(String, String)> =
                    sqlx::query_as("SELECT manifest, digest FROM plugin_versions WHERE name = $1 AND version = $2")
                        .bind(&record.name)
                        .bind(&record.version)
                        .fetch_optional(&mut *conn)
                        .await?;
                match existing {
                    Some((manifest, digest)) if manifest == record.manifest && digest == record.digest => Ok(false),
                    _ => Err($crate::store::StoreError::Conflict("plugin version")),
                }
            }

            async fn activate_plugin(&self, name: &str, version: &str, now_ms: i64) -> $crate::store::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "INSERT INTO plugins (name, active_version, updated_at) \
                     SELECT name, version, $3 FROM plugin_versions WHERE name = $1 AND version = $2 \
                     ON CONFLICT (name) DO UPDATE SET active_version = excluded.active_version, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(version)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound("plugin version"));
                }
                sqlx::query("UPDATE plugin_generation SET generation = generation + 1 WHERE id = 1").execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_plugin(&self, name: &str) -> $crate::store::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("DELETE FROM plugins WHERE name = $1").bind(name).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM plugin_versions WHERE name = $1").bind(name).execute(&mut *tx).await?;
                sqlx::query("UPDATE plugin_generation SET generation = generation + 1 WHERE id = 1").execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn active_plugins(&self) -> $crate::store::StoreResult<Vec<$crate::store::ActivePluginRecord>> {
                let mut conn = self.acquire().await?;
                let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT v.name, v.version, v.manifest, v.digest, v.created_at, p.updated_at \
                     FROM plugins p JOIN plugin_versions v ON v.name = p.name AND v.version = p.active_version ORDER BY p.name",
                )
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, version, manifest, digest, created_at_ms, updated_at_ms)| $crate::store::ActivePluginRecord {
                        version: $crate::store::PluginVersionRecord { name, version, manifest, digest, created_at_ms },
                        updated_at_ms,
                    })
                    .collect())
            }

            async fn plugin_versions(&self, name: &str) -> $crate::store::StoreResult<Vec<$crate::store::PluginVersionRecord>> {
                let mut conn = self.acquire().await?;
                let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
                    "SELECT name, version, manifest, digest, created_at FROM plugin_versions WHERE name = $1 ORDER BY created_at, version",
                )
                .bind(name)
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, version, manifest, digest, created_at_ms)| $crate::store::PluginVersionRecord { name, version, manifest, digest, created_at_ms })
                    .collect())
            }

            async fn plugin_generation(&self) -> $crate::store::StoreResult<i64> {
                let mut conn = self.acquire().await?;
                Ok(sqlx::query_scalar("SELECT generation FROM plugin_generation WHERE id = 1").fetch_one(&mut *conn).await?)
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

            fn cache(&self) -> &dyn $crate::store::cache::CacheStore {
                self
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

/// Implements [`crate::store::cache::CacheStore`] for `$store` on database `$db`. The backend
/// provides, as inherent methods, what differs: `prepare_semantic_table`,
/// `reindex_semantic_table`, `insert_semantic_row` (how an embedding is stored; returns the
/// rowid on SQLite), `nearest_semantic` (how it is searched) and `semantic_writer` (SQLite's
/// in-memory vector index hears every semantic write through it, in commit order; a no-op on
/// PostgreSQL). Writers are taken before a pooled connection, never while holding one.
macro_rules! impl_sql_cache_store {
    ($store:ty, $db:ty) => {
        type CacheConn = <$db as sqlx::Database>::Connection;

        #[async_trait::async_trait]
        impl $crate::store::cache::CacheStore for $store {
            async fn prepare_semantic(&self, table: &$crate::store::cache::SemanticTable) -> $crate::store::StoreResult<()> {
                self.prepare_semantic_table(table).await
            }

            async fn reindex_semantic(&self, table: &$crate::store::cache::SemanticTable) -> $crate::store::StoreResult<u64> {
                self.reindex_semantic_table(table).await
            }

            async fn insert_exact(&self, entry: &$crate::store::cache::NewExactEntry, cap: u64) -> $crate::store::StoreResult<u64> {
                let mut conn = self.acquire().await?;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    // A write first: SQLite then takes the write lock at once (waiting up to the
                    // busy timeout) instead of failing to upgrade a read transaction later.
                    let replaced = sqlx::query("DELETE FROM exact_cache WHERE workspace_id = $1 AND key_hash = $2 AND required_role = $3")
                        .bind(&entry.workspace_id)
                        .bind(&entry.key_hash)
                        .bind(entry.required_role.level())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    let inserted = sqlx::query(
                        "INSERT INTO exact_cache (id, workspace_id, key_hash, node_type, required_role, result, result_digest, \
                         execution_ms, created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9)",
                    )
                    .bind(&entry.id)
                    .bind(&entry.workspace_id)
                    .bind(&entry.key_hash)
                    .bind(&entry.node_type)
                    .bind(entry.required_role.level())
                    .bind(&entry.result)
                    .bind(&entry.result_digest)
                    .bind(entry.execution_ms)
                    .bind(entry.created_at_ms)
                    .bind(entry.expires_at_ms)
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        // A concurrent store of the same key won the race: do it again, replacing it.
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt < 3 => {
                            tx.rollback().await?;
                            continue;
                        }
                        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                            return Err($crate::store::StoreError::NotFound("workspace"));
                        }
                        other => {
                            other?;
                        }
                    }
                    let evicted = enforce_cap(&mut *tx, $crate::store::cache::CacheKind::Exact, &entry.workspace_id, 1 - replaced as i64, cap).await?;
                    tx.commit().await?;
                    return Ok(evicted.len() as u64);
                }
            }

            async fn lookup_exact(
                &self,
                workspace_id: &str,
                key_hash: &str,
                max_role: $crate::store::Role,
                now_ms: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::cache::ExactHit>> {
                let mut conn = self.acquire().await?;
                // Choosing the entry and counting its hit is one statement.
                let row: Option<(String, Option<String>, Option<String>, Option<i64>, i64)> = sqlx::query_as(
                    "UPDATE exact_cache SET hits = hits + 1, last_hit_at = $4, last_used_at = $4 WHERE id = (\
                       SELECT id FROM exact_cache WHERE workspace_id = $1 AND key_hash = $2 AND required_role <= $3 \
                       AND rejected_at IS NULL AND expires_at > $4 ORDER BY required_role DESC LIMIT 1) \
                     RETURNING id, result, result_digest, execution_ms, created_at",
                )
                .bind(workspace_id)
                .bind(key_hash)
                .bind(max_role.level())
                .bind(now_ms)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map(|(id, result, result_digest, execution_ms, created_at_ms)| $crate::store::cache::ExactHit {
                    id,
                    result,
                    result_digest,
                    execution_ms,
                    created_at_ms,
                }))
            }

            async fn insert_semantic(&self, entry: &$crate::store::cache::NewSemanticEntry, cap: u64) -> $crate::store::StoreResult<u64> {
                let mut writer = self.semantic_writer($crate::store::cache::CacheKind::Semantic, Some(&entry.workspace_id)).await;
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let replaced: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM semantic_cache WHERE workspace_id = $1 AND node_type = $2 AND prompt_hash = $3 AND required_role = $4 RETURNING id",
                )
                .bind(&entry.workspace_id)
                .bind(&entry.node_type)
                .bind(&entry.prompt_hash)
                .bind(entry.required_role.level())
                .fetch_all(&mut *tx)
                .await?;
                let rowid = match Self::insert_semantic_row(&mut *tx, entry).await {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                        return Err($crate::store::StoreError::NotFound("workspace"));
                    }
                    other => other?,
                };
                let delta = 1 - replaced.len() as i64;
                let evicted = enforce_cap(&mut *tx, $crate::store::cache::CacheKind::Semantic, &entry.workspace_id, delta, cap).await?;
                tx.commit().await?;
                let count = evicted.len() as u64;
                // In the order the transaction did them: the new row may itself be evicted.
                writer.removed(&entry.workspace_id, replaced);
                writer.inserted(entry, rowid);
                writer.removed(&entry.workspace_id, evicted);
                writer.apply().await;
                Ok(count)
            }

            async fn semantic_by_prompt(
                &self,
                scope: &$crate::store::cache::SemanticScope<'_>,
                prompt: &str,
                prompt_hash: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::cache::SemanticHit>> {
                let mut conn = self.acquire().await?;
                let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT id, result, execution_ms, created_at FROM semantic_cache \
                     WHERE workspace_id = $1 AND node_type = $2 AND prompt_hash = $3 AND prompt = $4 AND required_role <= $5 \
                     AND rejected_at IS NULL AND expires_at > $6 ORDER BY required_role DESC, created_at DESC LIMIT 1",
                )
                .bind(scope.workspace_id)
                .bind(scope.node_type)
                .bind(prompt_hash)
                .bind(prompt)
                .bind(scope.max_role.level())
                .bind(scope.now_ms)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map(|(id, result, execution_ms, created_at_ms)| $crate::store::cache::SemanticHit {
                    id,
                    similarity: 1.0,
                    result,
                    execution_ms,
                    created_at_ms,
                }))
            }

            async fn semantic_nearest(
                &self,
                scope: &$crate::store::cache::SemanticScope<'_>,
                embedding: &[f32],
                search: &$crate::store::cache::SemanticSearch,
            ) -> $crate::store::StoreResult<Option<$crate::store::cache::SemanticHit>> {
                self.nearest_semantic(scope, embedding, search).await
            }

            async fn record_hit(&self, kind: $crate::store::cache::CacheKind, id: &str, now_ms: i64) -> $crate::store::StoreResult<()> {
                let mut conn = self.acquire().await?;
                let sql = format!("UPDATE {} SET hits = hits + 1, last_hit_at = $2, last_used_at = $2 WHERE id = $1", kind.table());
                sqlx::query(&sql).bind(id).bind(now_ms).execute(&mut *conn).await?;
                Ok(())
            }

            async fn get_entry(
                &self,
                kind: $crate::store::cache::CacheKind,
                workspace_id: &str,
                id: &str,
                max_role: $crate::store::Role,
            ) -> $crate::store::StoreResult<Option<$crate::store::cache::CacheEntry>> {
                let mut conn = self.acquire().await?;
                let sql = format!(
                    "SELECT id, node_type, required_role, execution_ms, created_at, expires_at, hits, last_hit_at, rejected_at \
                     FROM {} WHERE workspace_id = $1 AND id = $2 AND required_role <= $3",
                    kind.table()
                );
                #[allow(clippy::type_complexity)]
                let row: Option<(String, String, i16, Option<i64>, i64, i64, i64, Option<i64>, Option<i64>)> =
                    sqlx::query_as(&sql).bind(workspace_id).bind(id).bind(max_role.level()).fetch_optional(&mut *conn).await?;
                let Some((id, node_type, role, execution_ms, created_at_ms, expires_at_ms, hits, last_hit_at_ms, rejected_at_ms)) = row else {
                    return Ok(None);
                };
                let required_role = $crate::store::Role::from_level(role)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown role level {role}").into()))?;
                Ok(Some($crate::store::cache::CacheEntry {
                    id,
                    node_type,
                    required_role,
                    execution_ms,
                    created_at_ms,
                    expires_at_ms,
                    hits,
                    last_hit_at_ms,
                    rejected_at_ms,
                }))
            }

            async fn delete_entry(
                &self,
                kind: $crate::store::cache::CacheKind,
                workspace_id: &str,
                id: &str,
                max_role: $crate::store::Role,
            ) -> $crate::store::StoreResult<bool> {
                let mut writer = self.semantic_writer(kind, Some(workspace_id)).await;
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let sql = format!("DELETE FROM {} WHERE workspace_id = $1 AND id = $2 AND required_role <= $3", kind.table());
                let deleted = sqlx::query(&sql).bind(workspace_id).bind(id).bind(max_role.level()).execute(&mut *tx).await?.rows_affected();
                if deleted > 0 {
                    bump_usage(&mut *tx, kind, workspace_id, -(deleted as i64)).await?;
                }
                tx.commit().await?;
                if deleted > 0 {
                    writer.removed(workspace_id, vec![id.to_string()]);
                }
                writer.apply().await;
                Ok(deleted > 0)
            }

            async fn delete_entries(
                &self,
                kind: $crate::store::cache::CacheKind,
                workspace_id: &str,
                node_type: Option<&str>,
            ) -> $crate::store::StoreResult<u64> {
                let mut writer = self.semantic_writer(kind, Some(workspace_id)).await;
                let mut conn = self.acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let sql = format!("DELETE FROM {} WHERE workspace_id = $1 AND ($2 IS NULL OR node_type = $2)", kind.table());
                let deleted = sqlx::query(&sql).bind(workspace_id).bind(node_type).execute(&mut *tx).await?.rows_affected();
                if deleted > 0 {
                    bump_usage(&mut *tx, kind, workspace_id, -(deleted as i64)).await?;
                }
                tx.commit().await?;
                if deleted > 0 {
                    writer.dropped(workspace_id, node_type);
                }
                writer.apply().await;
                Ok(deleted)
            }

            async fn reject_entry(
                &self,
                kind: $crate::store::cache::CacheKind,
                workspace_id: &str,
                id: &str,
                max_role: $crate::store::Role,
                now_ms: i64,
            ) -> $crate::store::StoreResult<Option<bool>> {
                let mut writer = self.semantic_writer(kind, Some(workspace_id)).await;
                let mut conn = self.acquire().await?;
                let sql = format!(
                    "UPDATE {} SET rejected_at = $4 WHERE workspace_id = $1 AND id = $2 AND required_role <= $3 AND rejected_at IS NULL",
                    kind.table()
                );
                let done = sqlx::query(&sql).bind(workspace_id).bind(id).bind(max_role.level()).bind(now_ms).execute(&mut *conn).await?;
                if done.rows_affected() > 0 {
                    writer.removed(workspace_id, vec![id.to_string()]);
                    writer.apply().await;
                    return Ok(Some(true));
                }
                writer.apply().await;
                let sql = format!("SELECT 1 FROM {} WHERE workspace_id = $1 AND id = $2 AND required_role <= $3", kind.table());
                let exists: Option<i32> = sqlx::query_scalar(&sql).bind(workspace_id).bind(id).bind(max_role.level()).fetch_optional(&mut *conn).await?;
                Ok(exists.map(|_| false))
            }

            async fn purge_expired(&self, now_ms: i64, batch: u32) -> $crate::store::StoreResult<$crate::store::cache::Purged> {
                let mut purged = $crate::store::cache::Purged::default();
                for kind in $crate::store::cache::CacheKind::ALL {
                    let sql = format!(
                        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE expires_at <= $1 LIMIT $2) RETURNING workspace_id, id",
                        table = kind.table()
                    );
                    loop {
                        // Per batch, the writer before the connection (see the macro's docs).
                        let mut writer = self.semantic_writer(kind, None).await;
                        let mut conn = self.acquire().await?;
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let rows: Vec<(String, String)> = sqlx::query_as(&sql).bind(now_ms).bind(i64::from(batch)).fetch_all(&mut *tx).await?;
                        let mut per_workspace: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
                        for (ws, id) in &rows {
                            per_workspace.entry(ws.clone()).or_default().push(id.clone());
                        }
                        for (ws, ids) in &per_workspace {
                            bump_usage(&mut *tx, kind, ws, -(ids.len() as i64)).await?;
                        }
                        tx.commit().await?;
                        for (ws, ids) in per_workspace {
                            writer.removed(&ws, ids);
                        }
                        writer.apply().await;
                        match kind {
                            $crate::store::cache::CacheKind::Exact => purged.exact += rows.len() as u64,
                            $crate::store::cache::CacheKind::Semantic => purged.semantic += rows.len() as u64,
                        }
                        if rows.len() < batch as usize {
                            break;
                        }
                    }
                }
                Ok(purged)
            }

            async fn entry_counts(&self) -> $crate::store::StoreResult<Vec<($crate::store::cache::CacheKind, u64)>> {
                let mut conn = self.acquire().await?;
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT cache, CAST(COALESCE(SUM(entries), 0) AS BIGINT) FROM cache_usage GROUP BY cache")
                    .fetch_all(&mut *conn)
                    .await?;
                Ok($crate::store::cache::CacheKind::ALL
                    .iter()
                    .map(|kind| {
                        let n = rows.iter().find(|(c, _)| c == kind.as_str()).map_or(0, |(_, n)| *n);
                        (*kind, n.max(0) as u64)
                    })
                    .collect())
            }
        }

        /// Adds `delta` to the workspace's entry count of `kind` and returns the new count.
        async fn bump_usage(
            conn: &mut CacheConn,
            kind: $crate::store::cache::CacheKind,
            workspace_id: &str,
            delta: i64,
        ) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar(
                "INSERT INTO cache_usage (workspace_id, cache, entries) VALUES ($1, $2, $3) \
                 ON CONFLICT (workspace_id, cache) DO UPDATE SET entries = cache_usage.entries + excluded.entries RETURNING entries",
            )
            .bind(workspace_id)
            .bind(kind.as_str())
            .bind(delta)
            .fetch_one(conn)
            .await
        }

        /// Counts an insert and evicts the least recently used entries above `cap`; returns the
        /// evicted ids. Runs inside the insert's transaction: on PostgreSQL the usage row lock
        /// serialises a workspace's inserts, so the cap holds across nodes.
        async fn enforce_cap(
            conn: &mut CacheConn,
            kind: $crate::store::cache::CacheKind,
            workspace_id: &str,
            delta: i64,
            cap: u64,
        ) -> Result<Vec<String>, sqlx::Error> {
            let entries = bump_usage(&mut *conn, kind, workspace_id, delta).await?;
            let cap = i64::try_from(cap).unwrap_or(i64::MAX);
            if entries <= cap {
                return Ok(Vec::new());
            }
            let sql = format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE workspace_id = $1 ORDER BY last_used_at, id LIMIT $2) RETURNING id",
                table = kind.table()
            );
            let evicted: Vec<String> = sqlx::query_scalar(&sql).bind(workspace_id).bind(entries - cap).fetch_all(&mut *conn).await?;
            if !evicted.is_empty() {
                bump_usage(&mut *conn, kind, workspace_id, -(evicted.len() as i64)).await?;
            }
            Ok(evicted)
        }
    };
}

pub(crate) use impl_sql_cache_store;

pub(crate) const SELECT_KEYS: &str = "SELECT k.id, k.workspace_id, w.name AS workspace, k.role, k.is_system, \
     k.secret_hash, k.label, k.created_at, k.expires_at, k.revoked_at \
     FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id";

/// Records how long a caller waited for a pooled connection.
pub(crate) fn record_acquire(started: std::time::Instant) {
    metrics::histogram!(crate::telemetry::names::DB_ACQUIRE_SECONDS)
        .record(started.elapsed().as_secs_f64());
}
