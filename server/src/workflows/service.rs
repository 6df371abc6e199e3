//! [`WorkflowService`]: the rules of workflows. Handlers call it; it talks to the store, the
//! CAS, the document cache, the event hub and the compactor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use patchbay_materializer::{
    MATERIALIZER_VERSION, Materializer, Patch, apply_patch_owned, parse_document, to_json_bytes,
    validate_workflow,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cache::{Cached, DocumentCache};
use super::compaction::Compactor;
use super::events::{self, Hub, PatchFrame};
use super::{WorkflowError, WorkflowResult, validate_name};
use crate::cas::{Cas, Digest};
use crate::clock;
use crate::config::WorkflowsConfig;
use crate::store::{
    AppendOutcome, NewPatch, NewWorkflow, PatchRecord, SnapshotRecord, Store, Workflow,
};
use crate::telemetry::names::*;

/// Patches read per query when replaying history.
const REPLAY_PAGE: u32 = 1000;

/// The materializer version snapshots are keyed by, as the store keeps it.
pub(super) const MV: i64 = MATERIALIZER_VERSION as i64;

/// What a client needs to materialize a workflow itself: the latest snapshot and the patches
/// after it, all as of `workflow.version`.
#[derive(Debug)]
pub struct WorkflowState {
    pub workflow: Workflow,
    pub snapshot: SnapshotRecord,
    /// The snapshot's JSON text.
    pub document: Bytes,
    pub patches: Vec<PatchRecord>,
}

/// A page of patch history with the snapshots a client may start from.
#[derive(Debug)]
pub struct History {
    pub patches: Vec<PatchRecord>,
    pub snapshots: Vec<SnapshotRecord>,
}

/// A materialized document: JSON text at a version.
#[derive(Debug)]
pub struct DocumentAt {
    pub version: u64,
    pub json: Bytes,
}

pub struct WorkflowService {
    pub(super) store: Arc<dyn Store>,
    pub(super) cas: Arc<Cas>,
    pub(super) config: WorkflowsConfig,
    pub(super) cache: DocumentCache,
    hub: Arc<Hub>,
    pub(super) compactor: Compactor,
    shutdown: CancellationToken,
}

impl WorkflowService {
    /// Builds the service and, on PostgreSQL, starts relaying other nodes' changes. Listening
    /// begins before this returns, so no change committed afterwards goes unheard.
    pub async fn start(
        store: Arc<dyn Store>,
        cas: Arc<Cas>,
        config: WorkflowsConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let service = Arc::new(Self {
            cache: DocumentCache::new(config.document_cache_entries),
            store,
            cas,
            config,
            hub: Arc::new(Hub::default()),
            compactor: Compactor::default(),
            shutdown: CancellationToken::new(),
        });
        // Unlabelled families show up at zero from the first scrape.
        metrics::counter!(WORKFLOW_PATCHES_COMMITTED_TOTAL).increment(0);
        metrics::counter!(WORKFLOW_CONFLICTS_TOTAL).increment(0);
        metrics::gauge!(WORKFLOW_SSE_CLIENTS).increment(0.0);
        if let Some(changes) = service.store.workflow_changes().await? {
            let weak = Arc::downgrade(&service);
            let on_deleted = move |id: &str| {
                if let Some(service) = weak.upgrade() {
                    service.cache.remove(id);
                }
            };
            tokio::spawn(events::relay_changes(
                changes,
                Arc::clone(&service.store),
                Arc::clone(&service.hub),
                on_deleted,
            ));
        }
        Ok(service)
    }

    /// Ends every event stream (clients resume elsewhere with `Last-Event-ID`), so a graceful
    /// shutdown does not wait for them.
    pub fn close_streams(&self) {
        self.shutdown.cancel();
    }

    pub fn config(&self) -> &WorkflowsConfig {
        &self.config
    }

    /// Creates a workflow from a valid document, stored as its base snapshot (seq 0).
    pub async fn create(
        &self,
        workspace_id: &str,
        name: &str,
        document: Value,
    ) -> WorkflowResult<Workflow> {
        validate_name(name)?;
        if let Err(issues) = validate_workflow(&document) {
            metrics::counter!(WORKFLOW_VALIDATION_FAILURES_TOTAL, "reason" => "invalid_document")
                .increment(1);
            return Err(WorkflowError::InvalidDocument(issues));
        }
        let json = Bytes::from(to_json_bytes(&document));
        let stored = self.cas.put_bytes(workspace_id, json).await?;
        metrics::histogram!(WORKFLOW_SNAPSHOT_SIZE_BYTES).record(stored.size as f64);
        let workflow = self
            .store
            .create_workflow(&NewWorkflow {
                id: uuid::Uuid::now_v7().to_string(),
                workspace_id: workspace_id.to_string(),
                name: name.to_string(),
                created_at_ms: clock::now_ms(),
                base_digest: stored.digest.hex(),
                base_size: stored.size as i64,
                materializer_version: MV,
            })
            .await?;
        *self.cache.slot(&workflow.id).lock().await = Some(Cached {
            version: 0,
            snapshot_seq: 0,
            doc: document,
        });
        Ok(workflow)
    }

    /// The workflow if the workspace has it.
    pub async fn find(&self, workspace_id: &str, id: &str) -> WorkflowResult<Workflow> {
        self.store
            .get_workflow(workspace_id, id)
            .await?
            .ok_or(WorkflowError::NotFound)
    }

    pub async fn list(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> WorkflowResult<Vec<Workflow>> {
        Ok(self
            .store
            .list_workflows(workspace_id, after, limit)
            .await?)
    }

    pub async fn delete(&self, workspace_id: &str, id: &str) -> WorkflowResult<()> {
        if !self.store.delete_workflow(workspace_id, id).await? {
            return Err(WorkflowError::NotFound);
        }
        self.cache.remove(id);
        self.hub.signal(id, events::HubEvent::Deleted);
        Ok(())
    }

    /// The latest snapshot and the patches after it, as of the workflow's current version.
    pub async fn state(&self, workflow: Workflow) -> WorkflowResult<WorkflowState> {
        let (snapshot, document) = self.snapshot_at(&workflow.id, workflow.version).await?;
        let patches = self
            .patches_between(&workflow.id, snapshot.seq, workflow.version)
            .await?;
        Ok(WorkflowState {
            workflow,
            snapshot,
            document,
            patches,
        })
    }

    /// A page of the patch history, and the snapshots this server's materializer may start from.
    pub async fn history(
        &self,
        workflow: &Workflow,
        after: u64,
        limit: u32,
    ) -> WorkflowResult<History> {
        let patches = self
            .store
            .list_patches(&workflow.id, to_i64(after), None, limit)
            .await?;
        let snapshots = self.store.list_snapshots(&workflow.id, MV).await?;
        Ok(History { patches, snapshots })
    }

    /// The document at version `at` (the current one when None), materialized here.
    pub async fn document(
        &self,
        workflow: &Workflow,
        at: Option<u64>,
    ) -> WorkflowResult<DocumentAt> {
        let current = workflow.version as u64;
        let target = at.unwrap_or(current);
        if target > current {
            return Err(WorkflowError::UnknownVersion {
                requested: target,
                current,
            });
        }
        let slot = self.cache.slot(&workflow.id);
        let mut cached = slot.lock().await;
        let serve_cached = match (at, cached.as_ref().map(|c| c.version)) {
            (_, Some(v)) if v == target => true,
            // Appended here since `workflow` was read: still the current document.
            (None, Some(v)) if v > target => true,
            // The current document: bring the cache forward; it serves the next append too.
            (None, _) => {
                self.catch_up(&workflow.id, &mut cached, target).await?;
                true
            }
            // A past version never enters the cache, which stays near the present.
            (Some(_), _) => false,
        };
        if serve_cached {
            let c = cached.as_ref().expect("the cache holds a document");
            return Ok(DocumentAt {
                version: c.version,
                json: Bytes::from(to_json_bytes(&c.doc)),
            });
        }
        drop(cached);
        // A past version: materialize it aside, leaving the cache at the present.
        let past = self.materialize(&workflow.id, target).await?;
        Ok(DocumentAt {
            version: target,
            json: Bytes::from(to_json_bytes(&past.doc)),
        })
    }

    /// Validates and commits a patch on top of `base_version`; returns the new version.
    ///
    /// Checks, in order: the workflow exists in the workspace (404), the operations are well
    /// formed and few enough (422, 413), `base_version` is current (409), the patch applies
    /// (422) and the result is a valid workflow (422); then commits conditionally (409 when
    /// another node won the race).
    ///
    /// Runs as its own task: a client that disconnects mid-request cannot interrupt it between
    /// changing the cached document and recording the outcome.
    pub async fn append(
        self: &Arc<Self>,
        workspace_id: &str,
        id: &str,
        author: &str,
        base_version: u64,
        ops: Value,
    ) -> WorkflowResult<u64> {
        let this = Arc::clone(self);
        let (workspace_id, id, author) =
            (workspace_id.to_string(), id.to_string(), author.to_string());
        tokio::spawn(async move {
            this.append_now(&workspace_id, &id, &author, base_version, ops)
                .await
        })
        .await
        .map_err(|e| WorkflowError::Corrupt(format!("the append task failed: {e}")))?
    }

    async fn append_now(
        self: &Arc<Self>,
        workspace_id: &str,
        id: &str,
        author: &str,
        base_version: u64,
        ops: Value,
    ) -> WorkflowResult<u64> {
        let slot = self.cache.slot(id);
        let mut cached = slot.lock().await;
        let workflow = self.find(workspace_id, id).await?;
        let patch = Patch::from_value(ops).map_err(|e| {
            metrics::counter!(WORKFLOW_VALIDATION_FAILURES_TOTAL, "reason" => "patch_failed")
                .increment(1);
            WorkflowError::PatchFailed(e)
        })?;
        if patch.len() > self.config.max_patch_ops {
            return Err(WorkflowError::TooManyOps {
                ops: patch.len(),
                max: self.config.max_patch_ops,
            });
        }
        let ops =
            serde_json::to_string(&patch).map_err(|e| WorkflowError::Corrupt(e.to_string()))?;
        let current = workflow.version as u64;
        if base_version != current {
            metrics::counter!(WORKFLOW_CONFLICTS_TOTAL).increment(1);
            return Err(WorkflowError::VersionConflict {
                base_version,
                current_version: current,
            });
        }
        self.catch_up(id, &mut cached, current).await?;
        let entry = cached.as_mut().expect("caught up");
        // Atomic: on error the document is unchanged and the cache stays valid.
        if let Err(e) = apply_patch_owned(&mut entry.doc, patch) {
            metrics::counter!(WORKFLOW_VALIDATION_FAILURES_TOTAL, "reason" => "patch_failed")
                .increment(1);
            return Err(WorkflowError::PatchFailed(e));
        }
        // From here on the cached document is ahead of the store until the commit succeeds.
        if let Err(issues) = validate_workflow(&entry.doc) {
            *cached = None;
            metrics::counter!(WORKFLOW_VALIDATION_FAILURES_TOTAL, "reason" => "invalid_document")
                .increment(1);
            return Err(WorkflowError::InvalidDocument(issues));
        }
        let outcome = self
            .store
            .append_patch(&NewPatch {
                workflow_id: id.to_string(),
                base_version: workflow.version,
                ops,
                author: author.to_string(),
                created_at_ms: clock::now_ms(),
            })
            .await;
        let record = match outcome {
            Ok(AppendOutcome::Committed(record)) => record,
            Ok(AppendOutcome::Conflict { current_version }) => {
                // Another node committed first.
                *cached = None;
                metrics::counter!(WORKFLOW_CONFLICTS_TOTAL).increment(1);
                return Err(WorkflowError::VersionConflict {
                    base_version,
                    current_version: current_version as u64,
                });
            }
            Ok(AppendOutcome::NotFound) => {
                *cached = None;
                return Err(WorkflowError::NotFound);
            }
            Err(e) => {
                *cached = None;
                return Err(e.into());
            }
        };
        let seq = record.seq as u64;
        entry_after_commit(&mut cached, seq);
        let snapshot_seq = cached.as_ref().map_or(0, |c| c.snapshot_seq);
        drop(cached);
        metrics::counter!(WORKFLOW_PATCHES_COMMITTED_TOTAL).increment(1);
        if let Some(frame) = PatchFrame::render(&record) {
            self.hub.publish(id, frame);
        }
        if seq.saturating_sub(snapshot_seq) >= self.config.compaction_every {
            self.compactor.request(self, workspace_id, id, seq);
        }
        Ok(seq)
    }

    /// Subscribes to the workflow's patches after `after` (the current version when None) and
    /// returns the SSE body.
    pub async fn events(
        &self,
        holder: events::Holder,
        id: &str,
        after: Option<u64>,
    ) -> WorkflowResult<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static> {
        // Subscribe before anything is read (see `events` for why nothing is lost), and before
        // the existence check, so a deletion cannot slip between the two unannounced.
        let subscription = self.hub.subscribe(id);
        let workflow = self.find(&holder.workspace_id, id).await?;
        let after = after.unwrap_or(workflow.version as u64);
        Ok(events::stream(
            Arc::clone(&self.store),
            workflow.id,
            subscription,
            after,
            Duration::from_millis(self.config.sse_heartbeat_ms),
            holder,
            self.shutdown.child_token(),
        ))
    }

    /// Makes `cached` hold version `target`: applies the missing patches to what it holds when
    /// that is a little older, and rebuilds from the nearest snapshot otherwise.
    async fn catch_up(
        &self,
        id: &str,
        cached: &mut Option<Cached>,
        target: u64,
    ) -> WorkflowResult<()> {
        match cached.take() {
            // Close behind: apply what is missing. Further behind, a newer snapshot is likely
            // nearer than the cached version.
            Some(mut c)
                if c.version <= target && target - c.version <= self.config.compaction_every =>
            {
                let patches = self
                    .patches_between(id, to_i64(c.version), to_i64(target))
                    .await?;
                let mut m = Materializer::new(std::mem::take(&mut c.doc), c.version);
                replay(&mut m, patches, target)?;
                *cached = Some(Cached {
                    version: target,
                    snapshot_seq: c.snapshot_seq,
                    doc: m.into_document(),
                });
            }
            _ => *cached = Some(self.materialize(id, target).await?),
        }
        Ok(())
    }

    /// Materializes version `target` from the nearest snapshot at or before it.
    pub(super) async fn materialize(&self, id: &str, target: u64) -> WorkflowResult<Cached> {
        let (snapshot, json) = self.snapshot_at(id, to_i64(target)).await?;
        let patches = self
            .patches_between(id, snapshot.seq, to_i64(target))
            .await?;
        let snapshot_seq = snapshot.seq as u64;
        let doc = replay_from(&json, snapshot_seq, patches, target)?;
        Ok(Cached {
            version: target,
            snapshot_seq,
            doc,
        })
    }

    /// The latest usable snapshot at or before `at_most`, with its JSON text.
    pub(super) async fn snapshot_at(
        &self,
        id: &str,
        at_most: i64,
    ) -> WorkflowResult<(SnapshotRecord, Bytes)> {
        let snapshot = self
            .store
            .latest_snapshot(id, MV, at_most)
            .await?
            .ok_or_else(|| WorkflowError::Corrupt(format!("workflow {id} has no base snapshot")))?;
        let digest = Digest::parse(&snapshot.digest).ok_or_else(|| {
            WorkflowError::Corrupt(format!(
                "snapshot digest {:?} is malformed",
                snapshot.digest
            ))
        })?;
        let json = self.cas.read_all(&digest).await.map_err(|e| {
            WorkflowError::Corrupt(format!(
                "reading snapshot {} of workflow {id}: {e}",
                snapshot.seq
            ))
        })?;
        Ok((snapshot, json))
    }

    /// Every patch with `after < seq <= until`.
    pub(super) async fn patches_between(
        &self,
        id: &str,
        after: i64,
        until: i64,
    ) -> WorkflowResult<Vec<PatchRecord>> {
        let mut all = Vec::new();
        let mut cursor = after;
        while cursor < until {
            let page = self
                .store
                .list_patches(id, cursor, Some(until), REPLAY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            let full = page.len() == REPLAY_PAGE as usize;
            all.extend(page);
            if !full {
                break;
            }
        }
        Ok(all)
    }
}

/// After a commit the cached document (already patched) is at `seq`.
fn entry_after_commit(cached: &mut Option<Cached>, seq: u64) {
    if let Some(c) = cached.as_mut() {
        c.version = seq;
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Parses a snapshot and applies stored patches up to `target`.
pub(super) fn replay_from(
    snapshot: &[u8],
    snapshot_seq: u64,
    patches: Vec<PatchRecord>,
    target: u64,
) -> WorkflowResult<Value> {
    let doc = parse_document(snapshot)
        .map_err(|e| WorkflowError::Corrupt(format!("snapshot {snapshot_seq}: {e}")))?;
    let mut m = Materializer::new(doc, snapshot_seq);
    replay(&mut m, patches, target)?;
    Ok(m.into_document())
}

/// Applies stored patches in order; they must be exactly the seqs up to `target`.
fn replay(m: &mut Materializer, patches: Vec<PatchRecord>, target: u64) -> WorkflowResult<()> {
    for record in patches {
        let expected = m.version() + 1;
        if record.seq as u64 != expected {
            return Err(WorkflowError::Corrupt(format!(
                "expected patch {expected}, found {}",
                record.seq
            )));
        }
        let patch = Patch::from_slice(record.ops.as_bytes()).map_err(|e| {
            WorkflowError::Corrupt(format!("stored patch {} is unreadable: {e}", record.seq))
        })?;
        m.apply(patch).map_err(|e| {
            WorkflowError::Corrupt(format!("stored patch {} does not apply: {e}", record.seq))
        })?;
    }
    if m.version() != target {
        return Err(WorkflowError::Corrupt(format!(
            "history ends at {}, expected {target}",
            m.version()
        )));
    }
    Ok(())
}
