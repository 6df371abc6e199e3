//! Test logic shared by the native tests and the browser (wasm-bindgen-test) tests, so both run
//! exactly the same cases and write the same transcript. The transcript is compared with
//! `tests/data/golden.txt` on both sides: native and wasm agree byte for byte when both match it.

#![allow(dead_code)] // each test crate uses a different subset

use std::fmt::Write as _;

use patchbay_materializer::{
    ErrorKind, MATERIALIZER_VERSION, MaterializeError, Materializer, Patch, PatchError,
    apply_patch, parse_document, to_json_bytes, validate_workflow,
};
use serde_json::{Value, json};

pub const TESTS_JSON: &str = include_str!("../data/tests.json");
pub const SPEC_TESTS_JSON: &str = include_str!("../data/spec_tests.json");
pub const GOLDEN: &str = include_str!("../data/golden.txt");

/// Counts and transcript of one run of the conformance data.
#[derive(Debug, Default)]
pub struct Conformance {
    pub passed: usize,
    pub disabled: usize,
    pub comments: usize,
    pub failures: Vec<String>,
    pub transcript: String,
}

/// Runs every enabled case of a json-patch-tests file (records with `doc` and `patch`; those
/// with `error` must fail, and leave the document untouched).
pub fn run_conformance(file: &str, text: &str, out: &mut Conformance) {
    let records: Vec<Value> = serde_json::from_str(text).expect("conformance data is JSON");
    for (i, record) in records.iter().enumerate() {
        let name = format!("{file}#{i}");
        let (Some(doc), Some(ops)) = (record.get("doc"), record.get("patch")) else {
            out.comments += 1;
            continue;
        };
        if record.get("disabled") == Some(&Value::Bool(true)) {
            out.disabled += 1;
            continue;
        }
        let comment = record.get("comment").and_then(Value::as_str).unwrap_or("");
        let result = run_case(doc, ops);
        let mut problem = None;
        match (&result, record.get("expected"), record.get("error")) {
            (Ok(got), Some(expected), _) if got != expected => {
                problem = Some(format!("got {got}, expected {expected}"));
            }
            (Err(e), _, None) => problem = Some(format!("unexpected error {e}")),
            (Ok(got), None, Some(_)) => problem = Some(format!("expected an error, got {got}")),
            _ => {}
        }
        match problem {
            Some(p) => out.failures.push(format!("{name} ({comment}): {p}")),
            None => out.passed += 1,
        }
        let line = match &result {
            Ok(doc) => format!("ok {}", String::from_utf8_lossy(&to_json_bytes(doc))),
            Err(e) => format!("error {}", describe_patch_error(e)),
        };
        writeln!(out.transcript, "{name} {line}").unwrap();
    }
}

/// Applies one case through both entry points (checked `Patch` + `apply_patch`, and the bytes
/// path of `Materializer`), which must agree; a failure must leave the document byte-identical.
fn run_case(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let doc_text = serde_json::to_vec(doc).unwrap();
    let ops_text = serde_json::to_vec(ops).unwrap();

    let mut direct = parse_document(&doc_text).unwrap();
    let direct_result = Patch::from_value(ops.clone()).and_then(|p| apply_patch(&mut direct, &p));

    let mut m = Materializer::from_slice(&doc_text, 0).unwrap();
    // A one-patch batch, so an empty patch still counts as one.
    let batch = format!("[{}]", String::from_utf8(ops_text).unwrap());
    let bytes_result = m.apply_slice(batch.as_bytes());

    match (&direct_result, &bytes_result) {
        (Ok(()), Ok(1)) => assert_eq!(to_json_bytes(&direct), m.to_json_bytes()),
        (Err(a), Err(b)) => {
            assert_eq!(a, &b.error, "both paths report the same error");
            assert_eq!(
                to_json_bytes(&direct),
                doc_text,
                "failed patch left the document as it was"
            );
            assert_eq!(m.to_json_bytes(), doc_text);
            assert_eq!(m.version(), 0);
        }
        other => panic!("entry points disagree: {other:?}"),
    }
    direct_result.map(|()| direct)
}

pub fn describe_patch_error(e: &PatchError) -> String {
    format!(
        "{} op={} path={} reason={}",
        e.kind,
        e.op_index.map_or("-".into(), |i| i.to_string()),
        e.path.as_deref().map_or("-".into(), |p| format!("{p:?}")),
        e.reason
    )
}

pub fn describe_materialize_error(e: &MaterializeError) -> String {
    format!(
        "patch={} version={} {}",
        e.patch_index.map_or("-".into(), |i| i.to_string()),
        e.version.map_or("-".into(), |v| v.to_string()),
        describe_patch_error(&e.error)
    )
}

/// Runs both conformance files plus the workload and returns the full transcript.
pub fn full_run() -> (Conformance, String) {
    let mut c = Conformance::default();
    run_conformance("tests.json", TESTS_JSON, &mut c);
    run_conformance("spec_tests.json", SPEC_TESTS_JSON, &mut c);
    let mut transcript = format!("materializer {MATERIALIZER_VERSION}\n");
    transcript.push_str(&c.transcript);
    transcript.push_str(&workload_transcript());
    (c, transcript)
}

/// Tiny deterministic PRNG (xorshift64*), so the workload is the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Numbers and strings whose parsing or printing is easy to get subtly different.
const TRICKY: &str = r#"{
  "floats": [0.1, 0.30000000000000004, 1.0000000000000002, 5e-324, 2.2250738585072014e-308,
             1.7976931348623157e308, -0.0, 1E+2, 1e21, 123456789.123456789, 3.0],
  "ints": [0, -1, 9007199254740993, 18446744073709551615, -9223372036854775808],
  "strings": ["\u2028\u2029", "\ud83d\ude00 emoji", "\u0001\u001f", "quote \" slash \/ back \\",
              "é", "\t\n\r"],
  "keys": {"z": 1, "a": 2, "~/": 3, "": 4, "ünï": 5}
}"#;

/// A deterministic workflow and a few hundred patches over it: adds, removes (which must keep
/// member order), moves, copies, replaces and tests, one failing patch in the middle (rolled
/// back), and the tricky values above. Returns the transcript of applying it.
pub fn workload_transcript() -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let nodes: Vec<Value> = (0..200)
        .map(|i| {
            let kind = ["http", "log", "transform", "branch"][i % 4];
            json!({
                "id": format!("n{i}"),
                "type": kind,
                "config": {"retries": i % 5, "weight": (i as f64) / 7.0, "label": format!("Node {i} ✓")},
                "position": {"x": (i as f64) * 12.5, "y": ((i * 37) % 101) as f64 / 3.0}
            })
        })
        .collect();
    let edges: Vec<Value> = (1..200)
        .map(|i| json!({"from": format!("n{}", i / 2), "to": format!("n{i}")}))
        .collect();
    let tricky: Value = serde_json::from_str(TRICKY).unwrap();
    let snapshot = json!({
        "name": "workload",
        "nodes": nodes,
        "edges": edges,
        "metadata": {"tricky": tricky, "order": {"c": 1, "b": 2, "a": 3}}
    });

    let mut patches = Vec::new();
    let mut next_node = 200;
    for p in 0..300 {
        let mut ops = Vec::new();
        match p % 7 {
            0 => {
                let id = format!("n{next_node}");
                next_node += 1;
                ops.push(json!({"op": "add", "path": "/nodes/-", "value": {"id": id, "type": "log", "config": {"k": p as f64 * 0.1}}}));
                ops.push(
                    json!({"op": "add", "path": "/edges/-", "value": {"from": "n0", "to": id}}),
                );
            }
            1 => {
                let i = rng.below(150);
                ops.push(json!({"op": "replace", "path": format!("/nodes/{i}/config/weight"), "value": rng.next() as f64 / 3.0}));
            }
            2 => {
                let i = rng.below(150);
                ops.push(json!({"op": "remove", "path": format!("/nodes/{i}/config/retries")}));
            }
            3 => {
                let i = rng.below(150);
                ops.push(json!({"op": "move", "from": format!("/nodes/{i}/position"), "path": format!("/nodes/{i}/config/pos")}));
            }
            4 => {
                let i = rng.below(150);
                ops.push(json!({"op": "copy", "from": "/metadata/tricky", "path": format!("/nodes/{i}/config/copy{p}")}));
                ops.push(json!({"op": "remove", "path": "/metadata/order/c"}));
                ops.push(json!({"op": "add", "path": "/metadata/order/c", "value": p}));
            }
            5 => {
                ops.push(json!({"op": "test", "path": "/name", "value": "workload"}));
                ops.push(json!({"op": "add", "path": format!("/metadata/k{p}"), "value": [p, {"x": "y"}]}));
            }
            _ => {
                // A move to the front of the edges array, then a test that fails on every
                // fourteenth patch: the whole patch must roll back.
                ops.push(json!({"op": "move", "from": "/edges/3", "path": "/edges/0"}));
                ops.push(json!({"op": "remove", "path": "/metadata/order/a"}));
                ops.push(json!({"op": "test", "path": "/name", "value": if p % 14 == 6 { "nope" } else { "workload" }}));
                ops.push(json!({"op": "add", "path": "/metadata/order/a", "value": p}));
            }
        }
        patches.push(Value::Array(ops));
    }

    let mut t = String::new();
    let snapshot_text = serde_json::to_vec(&snapshot).unwrap();
    let mut m = Materializer::from_slice(&snapshot_text, 1000).unwrap();
    writeln!(t, "workload snapshot {} bytes", snapshot_text.len()).unwrap();
    // Apply in batches of 25, as a worker receiving pages would, and singly for the rest.
    for chunk in patches.chunks(25) {
        let text = serde_json::to_vec(&Value::Array(chunk.to_vec())).unwrap();
        let mut rest: &[Value] = chunk;
        loop {
            let batch = serde_json::to_vec(&Value::Array(rest.to_vec())).unwrap();
            match m.apply_slice(if rest.len() == chunk.len() {
                &text
            } else {
                &batch
            }) {
                Ok(v) => {
                    writeln!(t, "batch ok version={v}").unwrap();
                    break;
                }
                Err(e) => {
                    writeln!(t, "batch error {}", describe_materialize_error(&e)).unwrap();
                    // Skip the failing patch and continue with the rest of the batch.
                    let failed = e.patch_index.expect("a patch failed");
                    rest = &rest[failed + 1..];
                    if rest.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    let doc = m.to_json_bytes();
    writeln!(t, "workload version={} bytes={}", m.version(), doc.len()).unwrap();
    writeln!(t, "workload document {}", String::from_utf8(doc).unwrap()).unwrap();
    match validate_workflow(m.document()) {
        Ok(()) => writeln!(t, "workload valid").unwrap(),
        Err(issues) => {
            for i in issues {
                writeln!(t, "workload issue {} {} {}", i.pointer, i.code, i.message).unwrap();
            }
        }
    }
    // Break the workflow on purpose: a duplicate id and a dangling edge.
    m.apply_slice(br#"[{"op":"add","path":"/nodes/0/id","value":"n1"},{"op":"add","path":"/edges/-","value":{"from":"ghost","to":"n1"}},{"op":"add","path":"/extra","value":1}]"#)
        .unwrap();
    for i in m.validate().unwrap_err() {
        writeln!(t, "broken issue {} {} {}", i.pointer, i.code, i.message).unwrap();
    }
    for bad in [
        &b"{"[..],
        b"[{\"op\":\"nope\"}]",
        b"[[], {\"seq\": 1, \"ops\": []}]",
        b"7",
    ] {
        let e = m.apply_slice(bad).unwrap_err();
        writeln!(t, "bad input {}", describe_materialize_error(&e)).unwrap();
        assert_ne!(e.error.kind, ErrorKind::TestFailed);
    }
    t
}
