//! Workflows: a base document plus an ordered list of RFC 6902 patches, validated natively with
//! `patchbay-materializer` before each commit, streamed to subscribers as Server-Sent Events, and
//! compacted into snapshots in the background.
//!
//! - `service.rs`: [`WorkflowService`], the rules (create, read, append, materialize).
//! - `cache.rs`: the bounded per-node cache of materialized documents.
//! - `events.rs`: the in-process hub, the cross-node change feed and the SSE streams.
//! - `compaction.rs`: background snapshots, at most one in flight per workflow.
//!
//! What must stay true: a patch is committed only if its `base_version` is still the workflow's
//! version (the store checks and bumps it in one transaction), so seqs are 1, 2, 3, ... with no
//! gap and no duplicate however many writers race; every committed patch passed
//! `validate_workflow` on the server; patches are never deleted while the workflow exists.

mod cache;
mod compaction;
pub mod events;
mod service;

use patchbay_materializer::{PatchError, ValidationIssue};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::cas::CasError;
use crate::clock;
use crate::store::{PatchRecord, StoreError};
pub use service::{DocumentAt, History, WorkflowService, WorkflowState};

/// Longest workflow name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow not found")]
    NotFound,
    #[error("version {requested} does not exist; the workflow is at version {current}")]
    UnknownVersion { requested: u64, current: u64 },
    #[error("{0}")]
    InvalidName(String),
    #[error("the document is not a valid workflow")]
    InvalidDocument(Vec<ValidationIssue>),
    #[error("the patch failed: {0}")]
    PatchFailed(PatchError),
    #[error("the patch has {ops} operations; at most {max} are allowed")]
    TooManyOps { ops: usize, max: usize },
    #[error("base_version {base_version} is stale; the workflow is at version {current_version}")]
    VersionConflict {
        base_version: u64,
        current_version: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cas(#[from] CasError),
    /// Stored history that does not materialize: a bug or tampering, never the caller's fault.
    #[error("stored workflow data is inconsistent: {0}")]
    Corrupt(String),
}

pub type WorkflowResult<T> = Result<T, WorkflowError>;

/// A committed patch as the API and the event stream show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatchView {
    /// The version this patch produced (1 for the first patch).
    pub seq: u64,
    /// The RFC 6902 operations, as committed (canonical members only).
    #[schema(value_type = Vec<Object>)]
    pub ops: Box<RawValue>,
    /// Id of the API key that sent it.
    pub author: String,
    /// RFC 3339.
    pub created_at: String,
}

impl PatchView {
    pub fn from_record(record: &PatchRecord) -> WorkflowResult<Self> {
        let ops = RawValue::from_string(record.ops.clone()).map_err(|e| {
            WorkflowError::Corrupt(format!("patch {} is not JSON: {e}", record.seq))
        })?;
        Ok(Self {
            seq: record.seq as u64,
            ops,
            author: record.author.clone(),
            created_at: clock::rfc3339(record.created_at_ms),
        })
    }
}

/// Workflow names label lists: any text of 1 to 200 characters without control characters.
pub fn validate_name(name: &str) -> WorkflowResult<()> {
    let chars = name.chars().count();
    if (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty()
    {
        Ok(())
    } else {
        Err(WorkflowError::InvalidName(format!(
            "a workflow name is 1 to {MAX_NAME_CHARS} characters, not blank, without control characters"
        )))
    }
}
