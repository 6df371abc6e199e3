//! Records the store keeps.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a key may do inside its workspace: read < write < admin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
}

/// A stored API key. Only the hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub workspace_id: String,
    pub workspace: String,
    pub role: Role,
    pub system: bool,
    pub secret_hash: String,
    pub label: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub workspace_id: String,
    pub role: Role,
    pub system: bool,
    pub secret_hash: String,
    pub label: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionRecord {
    pub name: String,
    pub version: String,
    /// The manifest as JSON.
    pub manifest: String,
    /// sha256 of the component in the CAS.
    pub digest: String,
    pub created_at_ms: i64,
}

/// A plugin and its active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePluginRecord {
    pub version: PluginVersionRecord,
    pub updated_at_ms: i64,
}

/// A workflow's metadata. `version` is the seq of its last patch (0 before any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub version: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A workflow to create, with its base document already stored as a CAS blob (snapshot seq 0).
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub base_digest: String,
    pub base_size: i64,
    pub materializer_version: i64,
}

/// One committed patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRecord {
    pub seq: i64,
    /// The patch's operations as JSON text.
    pub ops: String,
    /// Id of the API key that sent it.
    pub author: String,
    pub created_at_ms: i64,
}

/// A patch to append after `base_version`.
#[derive(Debug, Clone)]
pub struct NewPatch {
    pub workflow_id: String,
    pub base_version: i64,
    pub ops: String,
    pub author: String,
    pub created_at_ms: i64,
}

/// What a conditional append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Committed as the next version.
    Committed(PatchRecord),
    /// The workflow is at another version; nothing was written.
    Conflict { current_version: i64 },
    /// The workflow does not exist (any more).
    NotFound,
}

/// A document stored as a CAS blob: the base (seq 0) or a compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub workflow_id: String,
    pub seq: i64,
    pub materializer_version: i64,
    pub digest: String,
    pub size: i64,
    pub created_at_ms: i64,
}

/// A change to a workflow committed by some node, as other nodes hear of it (PostgreSQL
/// LISTEN/NOTIFY). Receivers read the patch itself from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowChange {
    Patch {
        workflow_id: String,
        seq: i64,
    },
    Deleted {
        workflow_id: String,
    },
    /// The feed's connection was lost and re-established: changes may have been missed.
    Resync,
}

impl WorkflowChange {
    /// The NOTIFY payload of a change: `<workflow id>:<seq>` or `<workflow id>:deleted`.
    pub fn payload(&self) -> Option<String> {
        match self {
            Self::Patch { workflow_id, seq } => Some(format!("{workflow_id}:{seq}")),
            Self::Deleted { workflow_id } => Some(format!("{workflow_id}:deleted")),
            Self::Resync => None,
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        let (id, what) = payload.rsplit_once(':')?;
        if id.is_empty() {
            return None;
        }
        match what {
            "deleted" => Some(Self::Deleted {
                workflow_id: id.to_string(),
            }),
            seq => seq.parse().ok().map(|seq| Self::Patch {
                workflow_id: id.to_string(),
                seq,
            }),
        }
    }
}
