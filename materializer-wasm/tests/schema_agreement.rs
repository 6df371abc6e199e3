//! The hand-written workflow checks (`validate.rs`) against the published JSON Schema, run by
//! the `jsonschema` crate: on a corpus of valid and broken documents both must accept the same
//! documents and complain about the same locations. Native only (`jsonschema` is a dev-dependency
//! kept out of the wasm module, see `validate.rs`).

#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;

use patchbay_materializer::{MAX_NAME_CHARS, WORKFLOW_SCHEMA, validate_workflow};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "name": "w",
        "nodes": [
            {"id": "a", "type": "http", "config": {"url": "x"}, "label": "extra members are fine"},
            {"id": "b", "type": "log"}
        ],
        "edges": [{"from": "a", "to": "b", "kind": "data"}],
        "metadata": {"owner": "me"}
    })
}

/// The base document with one change at `pointer` (`None` removes the member).
fn with(pointer: &str, value: Option<Value>) -> Value {
    let mut doc = base();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = doc.pointer_mut(parent).unwrap();
    match (parent, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(key.to_owned(), v);
        }
        (Value::Object(map), None) => {
            map.shift_remove(key);
        }
        (Value::Array(arr), Some(v)) => arr[key.parse::<usize>().unwrap()] = v,
        _ => panic!("bad corpus entry {pointer}"),
    }
    doc
}

fn corpus() -> Vec<Value> {
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    let longest = "é".repeat(MAX_NAME_CHARS);
    let mut docs = vec![
        base(),
        json!({"name": "empty", "nodes": [], "edges": []}),
        json!({}),
        json!([]),
        json!("workflow"),
        json!(null),
        json!({"name": 1, "nodes": {}, "edges": "x", "metadata": [], "more": 1, "even more": 2}),
    ];
    for member in ["/name", "/nodes", "/edges", "/metadata"] {
        docs.push(with(member, None));
        for v in [
            json!(null),
            json!(1),
            json!("s"),
            json!([]),
            json!({}),
            json!(true),
        ] {
            docs.push(with(member, Some(v)));
        }
    }
    for pointer in [
        "/nodes/0/id",
        "/nodes/0/type",
        "/nodes/0/config",
        "/edges/0/from",
        "/edges/0/to",
    ] {
        docs.push(with(pointer, None));
        for v in [
            json!(null),
            json!(7),
            json!(""),
            json!(long),
            json!(longest),
            json!("ok"),
            json!([]),
            json!({}),
        ] {
            docs.push(with(pointer, Some(v)));
        }
    }
    for v in [json!(null), json!(1), json!("n"), json!([]), json!({})] {
        docs.push(with("/nodes/1", Some(v.clone())));
        docs.push(with("/edges/0", Some(v)));
    }
    docs.push(with("/name", Some(json!(long))));
    docs.push(with("/name", Some(json!(longest))));
    docs.push(with("/extra~1member", Some(json!(1))));
    docs
}

/// Locations the real validator complains about.
fn schema_locations(validator: &jsonschema::Validator, doc: &Value) -> BTreeSet<String> {
    validator
        .iter_errors(doc)
        .map(|e| e.instance_path().as_str().to_owned())
        .collect()
}

/// Locations the hand-written check complains about, in the schema's terms: schema issues only
/// (not the invariants it cannot express), and an unknown member is reported on its object.
fn our_locations(doc: &Value) -> BTreeSet<String> {
    let Err(issues) = validate_workflow(doc) else {
        return BTreeSet::new();
    };
    issues
        .into_iter()
        .filter(|i| !matches!(i.code, "duplicate_id" | "unknown_node" | "max_depth"))
        .map(|i| match i.code {
            "additional_property" => i.pointer[..i.pointer.rfind('/').unwrap()].to_owned(),
            _ => i.pointer,
        })
        .collect()
}

#[test]
fn hand_written_checks_agree_with_the_schema() {
    let schema: Value = serde_json::from_str(WORKFLOW_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let corpus = corpus();
    let mut invalid = 0;
    for doc in &corpus {
        let expected = schema_locations(&validator, doc);
        assert_eq!(our_locations(doc), expected, "document: {doc}");
        invalid += usize::from(!expected.is_empty());
    }
    assert!(invalid > corpus.len() / 2, "the corpus exercises failures");
}

#[test]
fn invariants_beyond_the_schema_are_checked() {
    let schema: Value = serde_json::from_str(WORKFLOW_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = with("/nodes/1", Some(json!({"id": "a", "type": "t"})));
    assert!(
        validator.is_valid(&doc),
        "the schema cannot see duplicate ids"
    );
    let codes: Vec<_> = validate_workflow(&doc)
        .unwrap_err()
        .into_iter()
        .map(|i| i.code)
        .collect();
    assert_eq!(codes, ["duplicate_id", "unknown_node"]);
}
