//! JavaScript bindings (wasm-bindgen). Compiled only for `target_arch = "wasm32"`.
//!
//! ```js
//! import init, { Materializer, materializerVersion } from "./pkg/patchbay_materializer.js";
//! await init();
//! const m = new Materializer(snapshotBytes, snapshotSeq);   // Uint8Array of JSON text
//! m.apply(patchBytes);            // one patch, an array of patches, or API patch records
//! m.applyString(sseEvent.data);   // the same, from a string
//! const bytes = m.document();     // Uint8Array (transferable), or m.documentString()
//! m.version();                    // snapshot seq + patches applied
//! m.validate();                   // [] or [{pointer, code, message}, ...]
//! m.free();                       // releases the wasm memory
//! ```
//!
//! Failures throw an `Error` named `PatchError` whose extra properties mirror the server's
//! problem details: `kind`, `reason`, `op_index`, `path`, `patch_index`, `version` (null when
//! not applicable).
//!
//! Everything delegates to [`crate::Materializer`], so the browser computes exactly what the
//! server does.

use js_sys::{Array, Error, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::{MATERIALIZER_VERSION, MaterializeError};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** One reason a document is not a valid workflow. */
export interface ValidationIssue { pointer: string; code: string; message: string }
/** Thrown by Materializer: an Error named "PatchError" with these fields. */
export interface PatchError extends Error {
    kind: string; reason: string; op_index: number | null; path: string | null;
    patch_index: number | null; version: number | null;
}
"#;

// Talc instead of Rust's default wasm allocator (dlmalloc): parsing and patching allocate and free
// a node per JSON value, and with dlmalloc the allocator was the largest item of the profile.
// Measured in bench/materializer (see bench/README.md).
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// JavaScript numbers are exact up to 2^53 - 1; versions beyond that cannot cross the boundary.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// The materializer semantics version (cache key for snapshots), see the Rust docs.
#[wasm_bindgen(js_name = materializerVersion)]
pub fn materializer_version() -> u32 {
    MATERIALIZER_VERSION
}

/// A workflow document held in wasm memory, updated patch by patch.
#[wasm_bindgen(js_name = Materializer)]
pub struct WasmMaterializer {
    inner: crate::Materializer,
}

#[wasm_bindgen(js_class = Materializer)]
impl WasmMaterializer {
    /// Parses a snapshot (JSON text as bytes) at `baseVersion` (default 0).
    #[wasm_bindgen(constructor)]
    pub fn new(
        snapshot: &[u8],
        #[wasm_bindgen(js_name = baseVersion)] base_version: Option<f64>,
    ) -> Result<WasmMaterializer, JsValue> {
        let base = base_version_of(base_version)?;
        let inner = crate::Materializer::from_slice(snapshot, base).map_err(to_js)?;
        Ok(Self { inner })
    }

    /// Like the constructor, from a string.
    #[wasm_bindgen(js_name = fromString)]
    pub fn from_string(
        snapshot: &str,
        #[wasm_bindgen(js_name = baseVersion)] base_version: Option<f64>,
    ) -> Result<WasmMaterializer, JsValue> {
        Self::new(snapshot.as_bytes(), base_version)
    }

    /// Applies patches given as JSON bytes and returns the new version. Accepts one patch
    /// (`[{"op": ...}]`), an array of patches (`[[...], [...]]`), or patch records as the API
    /// lists them (`[{"seq": 8, "ops": [...]}]`, seq checked). Each patch is atomic; on error
    /// the patches before the failing one stay applied (see `version()`).
    pub fn apply(&mut self, patches: &[u8]) -> Result<f64, JsValue> {
        let version = self.inner.apply_slice(patches).map_err(to_js)?;
        Ok(version as f64)
    }

    /// Like `apply`, from a string.
    #[wasm_bindgen(js_name = applyString)]
    pub fn apply_string(&mut self, patches: &str) -> Result<f64, JsValue> {
        self.apply(patches.as_bytes())
    }

    /// The document as compact JSON bytes (a fresh `Uint8Array`, safe to transfer).
    pub fn document(&self) -> Vec<u8> {
        self.inner.to_json_bytes()
    }

    /// The document as JSON text.
    #[wasm_bindgen(js_name = documentString)]
    pub fn document_string(&self) -> String {
        // serde_json only writes valid UTF-8.
        String::from_utf8(self.inner.to_json_bytes()).unwrap_or_default()
    }

    /// Snapshot version plus the number of patches applied.
    pub fn version(&self) -> f64 {
        self.inner.version() as f64
    }

    /// Checks the document as a workflow: an empty array when valid, else
    /// `[{pointer, code, message}, ...]`.
    #[wasm_bindgen(unchecked_return_type = "ValidationIssue[]")]
    pub fn validate(&self) -> Array {
        let out = Array::new();
        if let Err(issues) = self.inner.validate() {
            for issue in issues {
                let o = Object::new();
                set(&o, "pointer", &issue.pointer.into());
                set(&o, "code", &issue.code.into());
                set(&o, "message", &issue.message.into());
                out.push(&o);
            }
        }
        out
    }
}

fn base_version_of(v: Option<f64>) -> Result<u64, JsValue> {
    match v {
        None => Ok(0),
        Some(v) if (0.0..=MAX_SAFE_INTEGER).contains(&v) && v.fract() == 0.0 => Ok(v as u64),
        Some(v) => Err(Error::new(&format!(
            "baseVersion must be a non-negative safe integer, not {v}"
        ))
        .into()),
    }
}

fn set(target: &Object, key: &str, value: &JsValue) {
    // Setting a property on a plain object we just created cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

fn opt_number(v: Option<impl Into<f64>>) -> JsValue {
    v.map_or(JsValue::NULL, |n| JsValue::from_f64(n.into()))
}

/// A JS `Error` carrying the structured fields of a [`MaterializeError`].
fn to_js(e: MaterializeError) -> JsValue {
    let err = Error::new(&e.to_string());
    err.set_name("PatchError");
    set(&err, "kind", &e.error.kind.as_str().into());
    set(&err, "reason", &e.error.reason.as_str().into());
    set(
        &err,
        "op_index",
        &opt_number(e.error.op_index.map(|i| i as f64)),
    );
    set(
        &err,
        "path",
        &e.error
            .path
            .as_deref()
            .map_or(JsValue::NULL, JsValue::from_str),
    );
    set(
        &err,
        "patch_index",
        &opt_number(e.patch_index.map(|i| i as f64)),
    );
    set(&err, "version", &opt_number(e.version.map(|v| v as f64)));
    err.into()
}
