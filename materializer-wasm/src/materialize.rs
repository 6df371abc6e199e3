//! Materialization: a snapshot plus the patches after it, applied in order.
//!
//! [`Materializer`] holds the document between calls so a live view applies each new patch
//! without re-parsing the document; the wasm `Materializer` class is a thin wrapper around it,
//! which is what keeps native and browser results identical.

use serde_json::Value;

use crate::apply::apply_patch_owned;
use crate::error::{ErrorKind, MaterializeError, PatchError};
use crate::op::Patch;
use crate::raw::{self, RawItem};
use crate::validate::{ValidationIssue, validate_workflow};

/// Applies `patches` to `snapshot` in order and returns the resulting document.
///
/// Each patch is atomic; on the first failing patch the error names it (index in `patches`,
/// and the version it would have produced counting the snapshot as version 0) and its failing
/// operation.
pub fn materialize(
    snapshot: Value,
    patches: impl IntoIterator<Item = Patch>,
) -> Result<Value, MaterializeError> {
    let mut m = Materializer::new(snapshot, 0);
    m.apply_all(patches)?;
    Ok(m.into_document())
}

/// A document and its version, updated patch by patch.
///
/// The version counts patches: the snapshot's version (`base_version`, its `seq`) plus one per
/// patch applied since.
#[derive(Debug, Clone, PartialEq)]
pub struct Materializer {
    doc: Value,
    version: u64,
}

impl Materializer {
    /// Starts from a parsed snapshot at `base_version`.
    pub fn new(snapshot: Value, base_version: u64) -> Self {
        Self {
            doc: snapshot,
            version: base_version,
        }
    }

    /// Starts from snapshot JSON text at `base_version`.
    pub fn from_slice(snapshot: &[u8], base_version: u64) -> Result<Self, MaterializeError> {
        let doc = crate::parse_document(snapshot).map_err(MaterializeError::whole)?;
        Ok(Self::new(doc, base_version))
    }

    /// The current document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Gives the document back.
    pub fn into_document(self) -> Value {
        self.doc
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The current document as compact JSON text (see [`crate::to_json_bytes`]).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::to_json_bytes(&self.doc)
    }

    /// Checks the current document as a workflow.
    pub fn validate(&self) -> Result<(), Vec<ValidationIssue>> {
        validate_workflow(&self.doc)
    }

    /// Applies one patch atomically and returns the new version. On error nothing changed; the
    /// error's `patch_index` is 0.
    pub fn apply(&mut self, patch: Patch) -> Result<u64, MaterializeError> {
        self.apply_indexed(0, None, Ok(patch))
    }

    /// Applies patches in order and returns the new version. Each patch is atomic: on error the
    /// patches before the failing one stay applied, and [`Self::version`] says how many.
    pub fn apply_all(
        &mut self,
        patches: impl IntoIterator<Item = Patch>,
    ) -> Result<u64, MaterializeError> {
        for (i, patch) in patches.into_iter().enumerate() {
            self.apply_indexed(i, None, Ok(patch))?;
        }
        Ok(self.version)
    }

    /// Applies JSON text holding one patch or many, and returns the new version.
    ///
    /// Accepted forms, told apart by the first element:
    /// - `[{"op": ...}, ...]`: one patch;
    /// - `[[{"op": ...}], ...]`: patches in order;
    /// - `[{"seq": 8, "ops": [...]}, ...]`: patch records as the workflow API lists them; a
    ///   record's `seq` must be the version it produces, so a gap or a repeat is caught
    ///   (`version_mismatch`) instead of silently producing another document;
    /// - `[]`: no patch at all (the version does not change).
    ///
    /// Invalid JSON changes nothing. Otherwise patches apply in order as with
    /// [`Self::apply_all`], and a malformed patch fails like a patch whose operation failed.
    pub fn apply_slice(&mut self, bytes: &[u8]) -> Result<u64, MaterializeError> {
        let items = match raw::parse(bytes, "the patches").map_err(MaterializeError::whole)? {
            RawItem::Array(items) => items,
            other => {
                return Err(MaterializeError::whole(PatchError::whole(
                    ErrorKind::InvalidPatch,
                    format!(
                        "expected a patch (an array of operations) or an array of patches, not {}",
                        other.type_name()
                    ),
                )));
            }
        };
        let many = match items.first() {
            None | Some(RawItem::Array(_)) => true,
            Some(RawItem::Object(o)) => o.ops.is_some(),
            Some(RawItem::Scalar(_)) => false,
        };
        if !many {
            let patch = Patch::from_raw_items(items);
            return self.apply_indexed(0, None, patch);
        }
        for (i, item) in items.into_iter().enumerate() {
            let (seq, patch) = patch_of_batch_item(item);
            self.apply_indexed(i, seq, patch)?;
        }
        Ok(self.version)
    }

    /// Applies the patch at `index` of a batch (or reports why it could not be read).
    fn apply_indexed(
        &mut self,
        index: usize,
        seq: Option<Value>,
        patch: Result<Patch, PatchError>,
    ) -> Result<u64, MaterializeError> {
        let next = self.version.saturating_add(1);
        let fail = |error| MaterializeError {
            patch_index: Some(index),
            version: Some(next),
            error,
        };
        if let Some(seq) = seq
            && seq.as_u64() != Some(next)
        {
            return Err(fail(PatchError::whole(
                ErrorKind::VersionMismatch,
                format!(
                    "the patch record's seq is {seq}, but applied to version {} it would make \
                     version {next}",
                    self.version
                ),
            )));
        }
        apply_patch_owned(&mut self.doc, patch.map_err(fail)?).map_err(fail)?;
        self.version = next;
        Ok(next)
    }
}

/// Reads one element of a batch: a patch, or a `{"seq", "ops"}` record.
fn patch_of_batch_item(item: RawItem) -> (Option<Value>, Result<Patch, PatchError>) {
    let not_a_patch = |what: &str| {
        PatchError::whole(
            ErrorKind::InvalidPatch,
            format!(
                "a batch holds patches (arrays of operations) or patch records \
                 ({{\"seq\", \"ops\"}}), not {what}"
            ),
        )
    };
    match item {
        RawItem::Array(ops) => (None, Patch::from_raw_items(ops)),
        RawItem::Object(record) => match record.ops {
            Some(RawItem::Array(ops)) => (record.seq, Patch::from_raw_items(ops)),
            Some(other) => (
                record.seq,
                Err(PatchError::whole(
                    ErrorKind::InvalidPatch,
                    format!(
                        "a patch record's \"ops\" is an array of operations, not {}",
                        other.type_name()
                    ),
                )),
            ),
            None => (None, Err(not_a_patch("an object without \"ops\""))),
        },
        RawItem::Scalar(name) => (None, Err(not_a_patch(name))),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn m() -> Materializer {
        Materializer::from_slice(br#"{"a":[]}"#, 10).unwrap()
    }

    fn add(i: u32) -> Value {
        json!({"op": "add", "path": "/a/-", "value": i})
    }

    #[test]
    fn one_patch_many_patches_and_records() {
        let mut m = m();
        let one = json!([add(1), add(2)]).to_string();
        assert_eq!(m.apply_slice(one.as_bytes()).unwrap(), 11);
        let many = json!([[add(3)], [], [add(4)]]).to_string();
        assert_eq!(m.apply_slice(many.as_bytes()).unwrap(), 14);
        let records = json!([{"seq": 15, "ops": [add(5)], "author": "x"}, {"ops": []}]);
        assert_eq!(m.apply_slice(records.to_string().as_bytes()).unwrap(), 16);
        assert_eq!(m.apply_slice(b"[]").unwrap(), 16);
        assert_eq!(m.to_json_bytes(), br#"{"a":[1,2,3,4,5]}"#);
    }

    #[test]
    fn failing_patch_of_a_batch_keeps_the_earlier_ones() {
        let mut m = m();
        let batch = json!([[add(1)], [add(2), {"op": "remove", "path": "/b"}], [add(3)]]);
        let e = m.apply_slice(batch.to_string().as_bytes()).unwrap_err();
        assert_eq!((e.patch_index, e.version), (Some(1), Some(12)));
        assert_eq!(
            (e.error.op_index, e.error.kind),
            (Some(1), ErrorKind::PathNotFound)
        );
        assert_eq!(m.version(), 11);
        assert_eq!(m.to_json_bytes(), br#"{"a":[1]}"#);
    }

    #[test]
    fn record_seq_must_follow_the_version() {
        let mut m = m();
        let e = m
            .apply_slice(json!([{"seq": 12, "ops": []}]).to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.error.kind, ErrorKind::VersionMismatch);
        assert_eq!(m.version(), 10);
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        for (input, kind, patch_index) in [
            (&b"{"[..], ErrorKind::InvalidJson, None),
            (b"{}", ErrorKind::InvalidPatch, None),
            (b"[1]", ErrorKind::InvalidOperation, Some(0)),
            (b"[[1]]", ErrorKind::InvalidOperation, Some(0)),
            (b"[[], 1]", ErrorKind::InvalidPatch, Some(1)),
            (br#"[{"ops": 1}]"#, ErrorKind::InvalidPatch, Some(0)),
            (br#"[{"op": "add"}]"#, ErrorKind::InvalidOperation, Some(0)),
            (b"\xff\xfe", ErrorKind::InvalidJson, None),
        ] {
            let mut m = m();
            let e = m.apply_slice(input).unwrap_err();
            assert_eq!((e.error.kind, e.patch_index), (kind, patch_index), "{e}");
            // Patches before the failing one were applied.
            assert_eq!(m.version(), 10 + patch_index.unwrap_or(0) as u64);
        }
        assert!(Materializer::from_slice(b"nope", 0).is_err());
    }

    #[test]
    fn materialize_names_the_failing_patch() {
        let p = |v: Value| Patch::from_value(v).unwrap();
        let doc = materialize(json!({"a": []}), [p(json!([add(1)])), p(json!([add(2)]))]).unwrap();
        assert_eq!(doc, json!({"a": [1, 2]}));
        let e = materialize(
            json!({}),
            [
                p(json!([])),
                p(json!([{"op": "test", "path": "/x", "value": 1}])),
            ],
        )
        .unwrap_err();
        assert_eq!((e.patch_index, e.version), (Some(1), Some(2)));
        assert_eq!(
            e.to_string(),
            "patch 1 (version 2), operation 0 at \"/x\": path_not_found: the object at the document root has no member \"x\""
        );
    }
}
