//! Workflow document validation: the JSON Schema in `workflow.schema.json`, plus the invariants a
//! schema cannot state (unique node ids, edges whose ends exist).
//!
//! The schema is published as [`WORKFLOW_SCHEMA`] but checked by hand-written code. Measured on
//! wasm32-unknown-unknown (release, opt-level "s", LTO, stripped): a module that parses and
//! re-serializes JSON is 62 KB (28 KB gzipped); adding `jsonschema` 0.61 with default features
//! off and compiling this schema makes it 2.7 MB (838 KB gzipped), which every browser would
//! download before it can draw a workflow. The schema is small and fixed, so its checks are
//! written out below, and the `schema_agreement` test runs the real `jsonschema` validator
//! (natively, as a dev-dependency) on a corpus of documents to prove both accept and reject the
//! same documents at the same pointers. Change the schema and this file together.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// The JSON Schema (draft 2020-12) of a workflow document.
pub const WORKFLOW_SCHEMA: &str = include_str!("workflow.schema.json");

/// Longest `name`, node id, node type and edge end, in Unicode code points (as JSON Schema's
/// `maxLength` counts).
pub const MAX_NAME_CHARS: usize = 200;

/// Deepest nesting of arrays and objects allowed in a workflow (the root object is level 1).
/// serde_json refuses to parse JSON nested deeper than 128 levels, so without a bound a patch
/// could build a document whose snapshot nobody can read back.
pub const MAX_DEPTH: usize = 64;

/// One reason a document is not a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationIssue {
    /// JSON Pointer to the offending value (to the object missing a member, for `required`).
    pub pointer: String,
    /// Stable identifier: `type`, `required`, `min_length`, `max_length`,
    /// `additional_property` (from the schema), `duplicate_id`, `unknown_node` or `max_depth`.
    pub code: &'static str,
    /// A sentence for humans.
    pub message: String,
}

/// Checks a workflow document. Issues come in a fixed order: schema issues first (`name`,
/// `nodes`, `edges`, `metadata`, then unknown members), then duplicate ids, dangling edges, and
/// the first value nested too deep.
pub fn validate_workflow(doc: &Value) -> Result<(), Vec<ValidationIssue>> {
    let mut issues = Issues::default();
    check(doc, &mut issues);
    if issues.0.is_empty() {
        Ok(())
    } else {
        Err(issues.0)
    }
}

#[derive(Default)]
struct Issues(Vec<ValidationIssue>);

impl Issues {
    fn push(&mut self, pointer: String, code: &'static str, message: String) {
        self.0.push(ValidationIssue {
            pointer,
            code,
            message,
        });
    }
}

fn check(doc: &Value, issues: &mut Issues) {
    let Some(root) = object(doc, String::new, "the workflow", issues) else {
        return;
    };
    for member in ["name", "nodes", "edges"] {
        if !root.contains_key(member) {
            issues.push(
                String::new(),
                "required",
                format!("the workflow needs a {member:?} member"),
            );
        }
    }
    if let Some(name) = root.get("name") {
        bounded_string(name, || "/name".to_owned(), "name", issues);
    }
    let nodes = root
        .get("nodes")
        .and_then(|v| array(v, "/nodes", issues))
        .unwrap_or_default();
    for (i, node) in nodes.iter().enumerate() {
        check_node(node, i, issues);
    }
    let edges = root
        .get("edges")
        .and_then(|v| array(v, "/edges", issues))
        .unwrap_or_default();
    for (i, edge) in edges.iter().enumerate() {
        check_edge(edge, i, issues);
    }
    if let Some(metadata) = root.get("metadata") {
        object(metadata, || "/metadata".to_owned(), "metadata", issues);
    }
    for key in root.keys() {
        if !matches!(key.as_str(), "name" | "nodes" | "edges" | "metadata") {
            issues.push(
                pointer_to(&[Token::Key(key)]),
                "additional_property",
                format!(
                    "unknown member {key:?}; a workflow has name, nodes, edges and metadata \
                     (keep extra data in metadata)"
                ),
            );
        }
    }
    check_references(nodes, edges, issues);
    let mut path = Vec::new();
    if too_deep(doc, 1, &mut path) {
        issues.push(
            pointer_to(&path),
            "max_depth",
            format!("values are nested more than {MAX_DEPTH} levels deep"),
        );
    }
}

fn check_node(node: &Value, i: usize, issues: &mut Issues) {
    // Pointers are only formatted for an issue: valid documents (every append) skip the cost.
    let at = || format!("/nodes/{i}");
    let Some(node) = object(node, at, "a node", issues) else {
        return;
    };
    for member in ["id", "type"] {
        if !node.contains_key(member) {
            issues.push(
                at(),
                "required",
                format!("a node needs a {member:?} member"),
            );
        }
    }
    for member in ["id", "type"] {
        if let Some(v) = node.get(member) {
            bounded_string(v, || format!("/nodes/{i}/{member}"), member, issues);
        }
    }
    if let Some(config) = node.get("config") {
        object(
            config,
            || format!("/nodes/{i}/config"),
            "a node's config",
            issues,
        );
    }
}

fn check_edge(edge: &Value, i: usize, issues: &mut Issues) {
    let at = || format!("/edges/{i}");
    let Some(edge) = object(edge, at, "an edge", issues) else {
        return;
    };
    for member in ["from", "to"] {
        match edge.get(member) {
            Some(v) => bounded_string(v, || format!("/edges/{i}/{member}"), member, issues),
            None => issues.push(
                at(),
                "required",
                format!("an edge needs a {member:?} member"),
            ),
        }
    }
}

/// Unique node ids and edges between existing nodes. Values the schema already rejected (ids
/// that are not strings) are skipped rather than reported twice.
fn check_references(nodes: &[Value], edges: &[Value], issues: &mut Issues) {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let Some(id) = node.get("id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(first) = ids.get(id) {
            issues.push(
                format!("/nodes/{i}/id"),
                "duplicate_id",
                format!("node id {id:?} is already used by /nodes/{first}"),
            );
        } else {
            ids.insert(id, i);
        }
    }
    for (i, edge) in edges.iter().enumerate() {
        for end in ["from", "to"] {
            let Some(id) = edge.get(end).and_then(Value::as_str) else {
                continue;
            };
            if !ids.contains_key(id) {
                issues.push(
                    format!("/edges/{i}/{end}"),
                    "unknown_node",
                    format!("the edge's {end:?} names node {id:?}, which does not exist"),
                );
            }
        }
    }
}

/// A reference token on the way down, borrowed from the document.
enum Token<'a> {
    Key(&'a str),
    Index(usize),
}

/// Finds the first value below `MAX_DEPTH` levels; `path` then leads to it. Recursion stops at
/// the limit, so the stack stays shallow whatever the input.
fn too_deep<'a>(v: &'a Value, depth: usize, path: &mut Vec<Token<'a>>) -> bool {
    let mut visit = |token, child| {
        path.push(token);
        let deep = too_deep(child, depth + 1, path);
        if !deep {
            path.pop();
        }
        deep
    };
    match v {
        Value::Object(_) | Value::Array(_) if depth > MAX_DEPTH => true,
        Value::Object(map) => map.iter().any(|(k, c)| visit(Token::Key(k), c)),
        Value::Array(arr) => arr
            .iter()
            .enumerate()
            .any(|(i, c)| visit(Token::Index(i), c)),
        _ => false,
    }
}

fn object<'v>(
    v: &'v Value,
    at: impl FnOnce() -> String,
    what: &str,
    issues: &mut Issues,
) -> Option<&'v Map<String, Value>> {
    let found = v.as_object();
    if found.is_none() {
        issues.push(
            at(),
            "type",
            format!("{what} must be an object, not {}", crate::op::type_name(v)),
        );
    }
    found
}

fn array<'v>(v: &'v Value, at: &str, issues: &mut Issues) -> Option<&'v [Value]> {
    let found = v.as_array().map(Vec::as_slice);
    if found.is_none() {
        issues.push(
            at.to_owned(),
            "type",
            format!(
                "{:?} must be an array, not {}",
                &at[1..],
                crate::op::type_name(v)
            ),
        );
    }
    found
}

fn bounded_string(v: &Value, at: impl FnOnce() -> String, what: &str, issues: &mut Issues) {
    let Some(s) = v.as_str() else {
        let message = format!("{what:?} must be a string, not {}", crate::op::type_name(v));
        issues.push(at(), "type", message);
        return;
    };
    if s.is_empty() {
        issues.push(at(), "min_length", format!("{what:?} must not be empty"));
    } else if s.chars().count() > MAX_NAME_CHARS {
        let message = format!("{what:?} is longer than {MAX_NAME_CHARS} characters");
        issues.push(at(), "max_length", message);
    }
}

/// A pointer from unescaped tokens.
fn pointer_to(tokens: &[Token<'_>]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            Token::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Token::Index(i) => format!("/{i}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn issues(doc: Value) -> Vec<(String, &'static str)> {
        match validate_workflow(&doc) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|i| (i.pointer, i.code)).collect(),
        }
    }

    #[test]
    fn accepts_a_valid_workflow() {
        let doc = json!({
            "name": "w",
            "nodes": [{"id": "a", "type": "http", "config": {}, "label": "extra ok"},
                      {"id": "b", "type": "log"}],
            "edges": [{"from": "a", "to": "b", "label": "x"}],
            "metadata": {"any": ["thing"]}
        });
        assert_eq!(issues(doc), vec![]);
    }

    #[test]
    fn reports_schema_issues_with_pointers() {
        let doc = json!({
            "name": "",
            "nodes": [{"id": 1, "type": "t", "config": []}, "x", {"type": "t"}],
            "edges": {},
            "extra/1": true
        });
        assert_eq!(
            issues(doc),
            vec![
                ("/name".to_owned(), "min_length"),
                ("/nodes/0/id".to_owned(), "type"),
                ("/nodes/0/config".to_owned(), "type"),
                ("/nodes/1".to_owned(), "type"),
                ("/nodes/2".to_owned(), "required"),
                ("/edges".to_owned(), "type"),
                ("/extra~11".to_owned(), "additional_property"),
            ]
        );
        assert_eq!(issues(json!([])), vec![(String::new(), "type")]);
        assert_eq!(
            issues(json!({})),
            vec![
                (String::new(), "required"),
                (String::new(), "required"),
                (String::new(), "required")
            ]
        );
    }

    #[test]
    fn reports_duplicate_ids_and_dangling_edges() {
        let doc = json!({
            "name": "w",
            "nodes": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}, {"id": "b", "type": "t"}],
            "edges": [{"from": "a", "to": "b"}, {"from": "zz", "to": "a"}, {"from": "b", "to": "q"}]
        });
        assert_eq!(
            issues(doc),
            vec![
                ("/nodes/1/id".to_owned(), "duplicate_id"),
                ("/edges/1/from".to_owned(), "unknown_node"),
                ("/edges/2/to".to_owned(), "unknown_node"),
            ]
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |levels: usize| {
            let mut v = json!(1);
            for _ in 0..levels {
                v = json!([v]);
            }
            json!({"name": "w", "nodes": [], "edges": [], "metadata": {"deep": v}})
        };
        // Root (1) + metadata (2) + deep's arrays.
        assert_eq!(issues(nested(MAX_DEPTH - 2)), vec![]);
        let pointer = format!("/metadata/deep{}", "/0".repeat(MAX_DEPTH - 2));
        assert_eq!(issues(nested(MAX_DEPTH - 1)), vec![(pointer, "max_depth")]);
        assert_eq!(issues(nested(500)).len(), 1);
    }

    #[test]
    fn lengths_count_code_points() {
        let ok = "é".repeat(MAX_NAME_CHARS);
        let long = "é".repeat(MAX_NAME_CHARS + 1);
        let doc = |name: &str| json!({"name": name, "nodes": [], "edges": []});
        assert_eq!(issues(doc(&ok)), vec![]);
        assert_eq!(issues(doc(&long)), vec![("/name".to_owned(), "max_length")]);
    }

    #[test]
    fn schema_text_is_json() {
        let schema: Value = serde_json::from_str(WORKFLOW_SCHEMA).unwrap();
        assert_eq!(schema["$defs"]["id"]["maxLength"], json!(MAX_NAME_CHARS));
    }
}
