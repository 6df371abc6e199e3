//! Errors of patch application and materialization.
//!
//! Every error carries a stable, machine-readable [`ErrorKind`] (serialized in snake_case, so the
//! server's problem details, the CLI and the browser all switch on the same strings), the index
//! of the failing operation, the JSON Pointer it was working on, and a human reason.

use std::fmt;

use serde::Serialize;

/// What went wrong, as a stable identifier. New kinds may be added; existing ones keep their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bytes are not JSON (snapshot, patch or batch).
    InvalidJson,
    /// The patch (or batch) is JSON but not an array of operations (or of patches).
    InvalidPatch,
    /// An operation is malformed: not an object, unknown `op`, a missing or mistyped member.
    InvalidOperation,
    /// A JSON Pointer is malformed (RFC 6901): no leading `/`, or a `~` not followed by 0 or 1.
    InvalidPointer,
    /// A reference token used on an array is not an index (`01`, `1e0`, `-1`, `foo`), is `-`
    /// where only add/move/copy may use it, or is past the end of the array for an `add`.
    InvalidIndex,
    /// The location (or one of its parents) does not exist.
    PathNotFound,
    /// A `test` operation found a different value.
    TestFailed,
    /// A `move` whose `from` is a proper prefix of its `path`.
    MoveIntoSelf,
    /// A patch record's `seq` is not the version it would produce (a gap or a duplicate).
    VersionMismatch,
}

impl ErrorKind {
    /// The stable identifier, e.g. `"path_not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidPatch => "invalid_patch",
            Self::InvalidOperation => "invalid_operation",
            Self::InvalidPointer => "invalid_pointer",
            Self::InvalidIndex => "invalid_index",
            Self::PathNotFound => "path_not_found",
            Self::TestFailed => "test_failed",
            Self::MoveIntoSelf => "move_into_self",
            Self::VersionMismatch => "version_mismatch",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A patch could not be applied; the document is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchError {
    /// Index of the failing operation in its patch; `None` when the patch as a whole is
    /// unreadable (invalid JSON, not an array).
    pub op_index: Option<usize>,
    /// Stable identifier of the failure.
    pub kind: ErrorKind,
    /// The JSON Pointer the failing operation was resolving, as written in the operation (its
    /// `from` when that is the location that failed); `None` when there is no usable pointer.
    pub path: Option<String>,
    /// A sentence for humans. Not stable: switch on `kind`.
    pub reason: String,
}

impl PatchError {
    pub(crate) fn new(
        op_index: Option<usize>,
        kind: ErrorKind,
        path: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            op_index,
            kind,
            path: path.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// An error about the whole input rather than one operation.
    pub(crate) fn whole(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Self::new(None, kind, None, reason)
    }

    pub(crate) fn invalid_json(what: &str, err: &serde_json::Error) -> Self {
        Self::whole(
            ErrorKind::InvalidJson,
            format!("{what} is not valid JSON: {err}"),
        )
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.op_index {
            write!(f, "operation {i}")?;
            if let Some(path) = &self.path {
                write!(f, " at {path:?}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for PatchError {}

/// Materialization stopped at a patch that could not be applied (or at an unreadable input).
///
/// Patches before `patch_index` were applied; the failing one was not (patches are atomic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaterializeError {
    /// Index of the failing patch in the list given; `None` when the snapshot or the list itself
    /// is unreadable.
    pub patch_index: Option<usize>,
    /// The version (the patch's `seq`) the failing patch would have produced.
    pub version: Option<u64>,
    /// Why the patch failed.
    #[serde(flatten)]
    pub error: PatchError,
}

impl MaterializeError {
    pub(crate) fn whole(error: PatchError) -> Self {
        Self {
            patch_index: None,
            version: None,
            error,
        }
    }
}

impl fmt::Display for MaterializeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.patch_index {
            write!(f, "patch {i}")?;
            if let Some(v) = self.version {
                write!(f, " (version {v})")?;
            }
            f.write_str(", ")?;
        }
        self.error.fmt(f)
    }
}

impl std::error::Error for MaterializeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
