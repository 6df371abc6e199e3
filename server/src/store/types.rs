//! Records the store keeps.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a key may do inside its workspace: read < write < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
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
