//! Patchbay's materializer: RFC 6902 JSON Patch application, materialization of a snapshot plus
//! patches, and workflow validation. The server links it natively to check every patch before
//! committing it; browsers run the same code compiled to WebAssembly (see `wasm.rs`, built only
//! for `target_arch = "wasm32"`).
//!
//! Codemap:
//! - `pointer.rs`: JSON Pointers (RFC 6901).
//! - `raw.rs`, `op.rs`: reading patch JSON into checked [`Operation`]s, naming the bad one.
//! - `apply.rs`: atomic application with an undo log.
//! - `materialize.rs`: snapshot + patches, and the stateful [`Materializer`].
//! - `validate.rs`: the workflow schema and the invariants it cannot express.
//! - `error.rs`: error kinds shared by all of the above.
//!
//! # Determinism
//! Native and wasm builds must produce the same bytes for the same input. Both use serde_json
//! with two features this crate turns on itself, so that Cargo's feature unification (another
//! crate of the server enabling them natively) cannot make the builds differ:
//! - `preserve_order`: objects keep the key order of their JSON text, and new members go last,
//!   as in JavaScript. A sorted map would also be deterministic, but would rewrite every
//!   document the user wrote into alphabetical order.
//! - `float_roundtrip`: numbers parse to the nearest double, as `JSON.parse` does, instead of a
//!   faster approximation that can be one ulp off.
//!
//! `arbitrary_precision` must stay off (numbers would keep their source spelling); the
//! `number_formatting_is_canonical` test fails if anything turns it on.

mod apply;
mod error;
mod materialize;
mod op;
mod pointer;
mod raw;
mod validate;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

// Unit tests run in the browser too: each test module imports `wasm_bindgen_test as test` on
// wasm32, so its `#[test]`s become wasm-bindgen tests.
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use serde_json::Value;

pub use apply::{apply_patch, apply_patch_owned};
pub use error::{ErrorKind, MaterializeError, PatchError};
pub use materialize::{Materializer, materialize};
pub use op::{Operation, Patch};
pub use pointer::{InvalidPointer, Pointer};
pub use validate::{
    MAX_DEPTH, MAX_NAME_CHARS, ValidationIssue, WORKFLOW_SCHEMA, validate_workflow,
};

/// Identifies the materialization semantics, for cache keys of snapshots: a snapshot made by one
/// version is only reused by the same version. Bump it whenever the output for some input could
/// change (patch semantics, number or key-order handling, serialization). The `golden` test
/// fails when outputs change, as a reminder.
pub const MATERIALIZER_VERSION: u32 = 1;

/// Parses document JSON text (a snapshot). Fails with [`ErrorKind::InvalidJson`].
pub fn parse_document(bytes: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(bytes).map_err(|e| PatchError::invalid_json("the document", &e))
}

/// Serializes a document to compact JSON text: keys in document order, no whitespace, numbers
/// in serde_json's shortest round-trip form. Identical natively and in wasm.
pub fn to_json_bytes(doc: &Value) -> Vec<u8> {
    // Serializing a `Value` into a Vec cannot fail: keys are strings and writes are infallible.
    serde_json::to_vec(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn number_formatting_is_canonical() {
        let doc = parse_document(br#"[1.0, 1.50, 1e2, -0, 0.1, 1e400, 12345678901234567890]"#);
        // 1e400 overflows a double: serde_json rejects it rather than producing infinity.
        assert!(doc.is_err());
        let doc = parse_document(br#"[1.0, 1.50, 1e2, -0, 0.1, 2.2250738585072011e-308, 12345678901234567890, -9223372036854775808]"#)
            .unwrap();
        assert_eq!(
            String::from_utf8(to_json_bytes(&doc)).unwrap(),
            "[1.0,1.5,100.0,-0.0,0.1,2.225073858507201e-308,12345678901234567890,-9223372036854775808]"
        );
    }

    #[test]
    fn key_order_is_preserved() {
        let doc = parse_document(br#"{"z":1,"a":{"y":2,"b":3}}"#).unwrap();
        assert_eq!(to_json_bytes(&doc), br#"{"z":1,"a":{"y":2,"b":3}}"#);
    }
}
