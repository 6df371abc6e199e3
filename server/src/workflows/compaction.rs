//! Background compaction: after `workflows.compaction_every` patches since the latest snapshot,
//! the document at the committing seq is written to the CAS and recorded as a snapshot keyed by
//! workflow, seq and materializer version.
//!
//! Never on an append's path: the append that crosses the threshold only asks for it. At most one
//! compaction per workflow is in flight on a node; one that failed is not retried for
//! [`RETRY_AFTER`]. Several nodes may compact the same seq: the CAS stores the bytes once and the
//! snapshot row is inserted once. Patches are never deleted, so history stays readable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use patchbay_materializer::to_json_bytes;

use super::service::{MV, WorkflowService, replay_from};
use super::{WorkflowError, WorkflowResult};
use crate::clock;
use crate::store::{SnapshotRecord, StoreError};
use crate::telemetry::names::{WORKFLOW_COMPACTIONS_TOTAL, WORKFLOW_SNAPSHOT_SIZE_BYTES};

/// A workflow whose compaction failed is not compacted again for this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);

enum State {
    Running,
    Failed(Instant),
}

#[derive(Default)]
pub struct Compactor {
    workflows: Mutex<HashMap<String, State>>,
}

impl Compactor {
    /// Starts compacting the workflow at `seq` unless a compaction of it is running or recently
    /// failed. Returns at once.
    pub fn request(
        &self,
        service: &Arc<WorkflowService>,
        workspace_id: &str,
        workflow_id: &str,
        seq: u64,
    ) {
        {
            let mut workflows = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
            match workflows.get(workflow_id) {
                Some(State::Running) => return,
                Some(State::Failed(at)) if at.elapsed() < RETRY_AFTER => return,
                _ => {}
            }
            workflows.insert(workflow_id.to_string(), State::Running);
        }
        let service = Arc::clone(service);
        let (workspace_id, workflow_id) = (workspace_id.to_string(), workflow_id.to_string());
        tokio::spawn(async move {
            let result = compact(&service, &workspace_id, &workflow_id, seq).await;
            let mut workflows = service
                .compactor
                .workflows
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    workflows.remove(&workflow_id);
                }
                Err(err) => {
                    metrics::counter!(WORKFLOW_COMPACTIONS_TOTAL, "outcome" => "failure")
                        .increment(1);
                    tracing::warn!(error = %err, workflow = workflow_id, seq, "compaction failed");
                    workflows.insert(workflow_id, State::Failed(Instant::now()));
                }
            }
        });
    }
}

async fn compact(
    service: &WorkflowService,
    workspace_id: &str,
    workflow_id: &str,
    seq: u64,
) -> WorkflowResult<()> {
    let (snapshot, json) = service.snapshot_at(workflow_id, seq as i64).await?;
    let latest = snapshot.seq as u64;
    if seq.saturating_sub(latest) < service.config.compaction_every {
        // Another node (or an earlier request) compacted recently enough.
        note_snapshot(service, workflow_id, latest).await;
        return Ok(());
    }
    let patches = service
        .patches_between(workflow_id, snapshot.seq, seq as i64)
        .await?;
    // Parsing, replaying and serializing are CPU work: keep them off the async workers.
    let document = tokio::task::spawn_blocking(move || {
        replay_from(&json, latest, patches, seq).map(|doc| Bytes::from(to_json_bytes(&doc)))
    })
    .await
    .map_err(|e| WorkflowError::Corrupt(format!("the compaction task failed: {e}")))??;
    let stored = service.cas.put_bytes(workspace_id, document).await?;
    let record = SnapshotRecord {
        workflow_id: workflow_id.to_string(),
        seq: seq as i64,
        materializer_version: MV,
        digest: stored.digest.hex(),
        size: stored.size as i64,
        created_at_ms: clock::now_ms(),
    };
    match service.store.insert_snapshot(&record).await {
        Ok(true) => {
            metrics::counter!(WORKFLOW_COMPACTIONS_TOTAL, "outcome" => "success").increment(1);
            metrics::histogram!(WORKFLOW_SNAPSHOT_SIZE_BYTES).record(stored.size as f64);
            tracing::debug!(
                workflow = workflow_id,
                seq,
                bytes = stored.size,
                "compacted"
            );
        }
        // Recorded by another node meanwhile, or the workflow is gone: nothing to do.
        Ok(false) | Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    note_snapshot(service, workflow_id, seq).await;
    Ok(())
}

/// Tells the cached document how recent the latest snapshot is, so the next appends do not ask
/// for a compaction again.
async fn note_snapshot(service: &WorkflowService, workflow_id: &str, seq: u64) {
    if let Some(slot) = service.cache.existing(workflow_id)
        && let Some(cached) = slot.lock().await.as_mut()
    {
        cached.snapshot_seq = cached.snapshot_seq.max(seq);
    }
}
