//! The conformance data, the golden transcript and the JavaScript API, in headless Chromium
//! (wasm-bindgen-test). See README.md for the command.

#![cfg(target_arch = "wasm32")]

mod support;

use js_sys::Reflect;
use patchbay_materializer::Materializer;
use patchbay_materializer::wasm::WasmMaterializer;
use serde_json::Value;
use support::{Conformance, GOLDEN, SPEC_TESTS_JSON, TESTS_JSON, run_conformance};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn json_patch_tests_pass() {
    let mut c = Conformance::default();
    run_conformance("tests.json", TESTS_JSON, &mut c);
    assert!(
        c.failures.is_empty(),
        "failures:\n{}",
        c.failures.join("\n")
    );
    assert_eq!((c.passed, c.disabled, c.comments), (92, 3, 0));
}

#[wasm_bindgen_test]
fn spec_tests_pass() {
    let mut c = Conformance::default();
    run_conformance("spec_tests.json", SPEC_TESTS_JSON, &mut c);
    assert!(
        c.failures.is_empty(),
        "failures:\n{}",
        c.failures.join("\n")
    );
    assert_eq!((c.passed, c.disabled, c.comments), (16, 1, 0));
}

/// The same transcript the native test compares: byte-for-byte agreement with native.
#[wasm_bindgen_test]
fn transcript_matches_golden() {
    let (_, transcript) = support::full_run();
    if let Some((n, (got, want))) = transcript
        .lines()
        .zip(GOLDEN.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "line {}: wasm wrote\n{got}\nnative golden has\n{want}",
            n + 1
        );
    }
    assert_eq!(transcript.len(), GOLDEN.len());
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

/// Every enabled conformance case through the exported class, compared with the Rust API.
#[wasm_bindgen_test]
fn conformance_through_the_js_class() {
    for text in [TESTS_JSON, SPEC_TESTS_JSON] {
        let records: Vec<Value> = serde_json::from_str(text).unwrap();
        for r in records {
            let (Some(doc), Some(ops)) = (r.get("doc"), r.get("patch")) else {
                continue;
            };
            if r.get("disabled") == Some(&Value::Bool(true)) {
                continue;
            }
            let doc = serde_json::to_vec(doc).unwrap();
            let batch = format!("[{ops}]");
            let mut native = Materializer::from_slice(&doc, 5).unwrap();
            let native_result = native.apply_slice(batch.as_bytes());
            let mut js = WasmMaterializer::new(&doc, Some(5.0)).unwrap();
            match (native_result, js.apply(batch.as_bytes())) {
                (Ok(v), Ok(w)) => assert_eq!(v as f64, w),
                (Err(e), Err(err)) => {
                    assert_eq!(get(&err, "kind"), e.error.kind.as_str());
                    assert_eq!(
                        get(&err, "op_index"),
                        JsValue::from_f64(e.error.op_index.unwrap_or(0) as f64)
                    );
                    assert_eq!(get(&err, "patch_index"), JsValue::from_f64(0.0));
                    assert_eq!(get(&err, "version"), JsValue::from_f64(6.0));
                    assert_eq!(get(&err, "reason"), e.error.reason.as_str());
                }
                (a, b) => panic!("native {a:?} vs js {b:?}"),
            }
            assert_eq!(js.document(), native.to_json_bytes());
            assert_eq!(js.version(), native.version() as f64);
        }
    }
}

#[wasm_bindgen_test]
fn js_api_round_trip() {
    let mut m =
        WasmMaterializer::from_string(r#"{"name":"w","nodes":[],"edges":[]}"#, None).unwrap();
    assert_eq!(m.version(), 0.0);
    let v = m
        .apply_string(r#"[{"op":"add","path":"/nodes/-","value":{"id":"a","type":"t"}}]"#)
        .unwrap();
    assert_eq!(v, 1.0);
    let v = m
        .apply(
            br#"[{"seq":2,"ops":[{"op":"add","path":"/edges/-","value":{"from":"a","to":"b"}}]}]"#,
        )
        .unwrap();
    assert_eq!(v, 2.0);
    assert_eq!(
        m.document_string(),
        r#"{"name":"w","nodes":[{"id":"a","type":"t"}],"edges":[{"from":"a","to":"b"}]}"#
    );
    let issues = m.validate();
    assert_eq!(issues.length(), 1);
    let issue = issues.get(0);
    assert_eq!(get(&issue, "pointer"), "/edges/0/to");
    assert_eq!(get(&issue, "code"), "unknown_node");

    let err = m
        .apply(br#"[{"op":"remove","path":"/nodes/7"}]"#)
        .unwrap_err();
    assert_eq!(get(&err, "name"), "PatchError");
    assert_eq!(get(&err, "kind"), "path_not_found");
    assert_eq!(get(&err, "path"), "/nodes/7");
    assert_eq!(get(&err, "op_index"), JsValue::from_f64(0.0));
    assert_eq!(get(&err, "version"), JsValue::from_f64(3.0));
    assert_eq!(m.version(), 2.0);

    let err = m.apply(b"not json").unwrap_err();
    assert_eq!(get(&err, "kind"), "invalid_json");
    assert!(get(&err, "op_index").is_null());
    assert!(WasmMaterializer::new(b"{", None).is_err());
    assert!(WasmMaterializer::new(b"{}", Some(-1.0)).is_err());
    assert!(WasmMaterializer::new(b"{}", Some(0.5)).is_err());
    assert_eq!(
        patchbay_materializer::wasm::materializer_version(),
        patchbay_materializer::MATERIALIZER_VERSION
    );
}
