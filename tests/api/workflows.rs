//! Workflows: creation and validation, conditional appends, history and past versions,
//! compaction, Server-Sent Events (resumable, across nodes on PostgreSQL), concurrent writers,
//! and the `patchbay materialize` command.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use patchbay_materializer::{Materializer, Patch, apply_patch, to_json_bytes};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, Server, expect_problem};

on_both_backends!(
    create_list_get_delete_with_statuses,
    appends_conflict_fail_atomically_and_validate,
    history_pages_and_past_versions,
    compaction_writes_snapshots_and_history_stays_right,
    events_are_live_resumable_and_never_lost_or_repeated,
    events_end_when_the_key_stops_granting_access,
    concurrent_writers_never_lose_or_duplicate_patches,
);

fn base_doc(nodes: usize) -> Value {
    json!({
        "name": "flow",
        "nodes": (0..nodes).map(|i| json!({"id": format!("n{i}"), "type": "step", "config": {"i": i}})).collect::<Vec<_>>(),
        "edges": (1..nodes).map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")})).collect::<Vec<_>>(),
        "metadata": {"owner": "tests"},
    })
}

fn add_node(id: &str) -> Value {
    json!([{"op": "add", "path": "/nodes/-", "value": {"id": id, "type": "step"}}])
}

/// The id part of a minted key `pb_<id>_<secret>`: what patches name as their author.
fn key_id(key: &str) -> &str {
    key.split('_').nth(1).unwrap()
}

async fn create(server: &Server, key: &str, name: &str, document: &Value) -> String {
    let res = server
        .with_key(key, Method::POST, "/api/v1/workflows")
        .json(&json!({"name": name, "document": document}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 0);
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/workflows/{id}"));
    id
}

fn append(server: &Server, key: &str, id: &str, base_version: u64, ops: &Value) -> RequestBuilder {
    server
        .with_key(
            key,
            Method::POST,
            &format!("/api/v1/workflows/{id}/patches"),
        )
        .json(&json!({"base_version": base_version, "ops": ops}))
}

async fn append_ok(server: &Server, key: &str, id: &str, base_version: u64, ops: &Value) -> u64 {
    let res = append(server, key, id, base_version, ops)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["version"].as_u64().unwrap()
}

async fn get_json(server: &Server, key: &str, path: &str) -> Value {
    let res = server
        .with_key(key, Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

async fn document_bytes(server: &Server, key: &str, id: &str, at: Option<u64>) -> Bytes {
    let path = match at {
        Some(at) => format!("/api/v1/workflows/{id}/document?at={at}"),
        None => format!("/api/v1/workflows/{id}/document"),
    };
    let res = server
        .with_key(key, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    assert_eq!(res.headers()["content-type"], "application/json");
    if let Some(at) = at {
        assert_eq!(
            res.headers()["x-workflow-version"].to_str().unwrap(),
            at.to_string()
        );
    }
    res.bytes().await.unwrap()
}

/// Documents by version as a client computes them: versions[0] is the base.
struct Expected(Vec<Value>);

impl Expected {
    fn new(base: &Value) -> Self {
        Self(vec![base.clone()])
    }

    fn push(&mut self, ops: &Value) {
        let mut doc = self.0.last().unwrap().clone();
        apply_patch(&mut doc, &Patch::from_value(ops.clone()).unwrap()).unwrap();
        self.0.push(doc);
    }

    fn bytes(&self, version: u64) -> Vec<u8> {
        to_json_bytes(&self.0[version as usize])
    }
}

async fn create_list_get_delete_with_statuses(backend: Backend) {
    let server = Server::start(backend).await;
    let writer = server.workspace_key("a", "write").await;
    let reader = server.mint("a", "read").await;
    let stranger = server.workspace_key("b", "write").await;
    let base = base_doc(3);

    // Only writers create; names and documents are validated.
    let res = server
        .with_key(&reader, Method::POST, "/api/v1/workflows")
        .json(&json!({"name": "x", "document": base}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = server
        .with_key(&writer, Method::POST, "/api/v1/workflows")
        .json(&json!({"name": "", "document": base}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-name").await;
    let res = server
        .with_key(&writer, Method::POST, "/api/v1/workflows")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-json").await;
    let bad = json!({"name": "", "nodes": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}], "edges": [{"from": "a", "to": "zz"}]});
    let res = server
        .with_key(&writer, Method::POST, "/api/v1/workflows")
        .json(&json!({"name": "x", "document": bad}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "invalid-document").await;
    let codes: Vec<&str> = problem["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["min_length", "duplicate_id", "unknown_node"],
        "{problem}"
    );
    assert_eq!(problem["issues"][2]["pointer"], "/edges/0/to");

    // Create three; list them a page at a time, oldest first.
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        ids.push(create(&server, &writer, name, &base).await);
    }
    let page = get_json(&server, &reader, "/api/v1/workflows?limit=2").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(page["items"][0]["version"], 0);
    assert!(
        page["items"][0]["created_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get_json(
        &server,
        &reader,
        &format!("/api/v1/workflows?limit=2&after={cursor}"),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], ids[2].as_str());
    assert!(rest["next_cursor"].is_null());
    let theirs = get_json(&server, &stranger, "/api/v1/workflows").await;
    assert!(
        theirs["items"].as_array().unwrap().is_empty(),
        "another workspace lists nothing"
    );

    // GET: the base snapshot, no patches, a strong ETag on the version; If-None-Match -> 304.
    let id = &ids[0];
    let path = format!("/api/v1/workflows/{id}");
    let res = server
        .with_key(&reader, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{id}-v0\""));
    let view: Value = res.json().await.unwrap();
    assert_eq!(
        (
            view["id"].as_str(),
            view["name"].as_str(),
            view["version"].as_u64()
        ),
        (Some(id.as_str()), Some("first"), Some(0))
    );
    assert_eq!(view["snapshot"]["seq"], 0);
    assert_eq!(
        view["snapshot"]["materializer_version"],
        patchbay_materializer::MATERIALIZER_VERSION
    );
    assert_eq!(view["snapshot"]["document"], base);
    assert_eq!(view["patches"], json!([]));
    let res = server
        .with_key(&reader, Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag.as_str());
    // The base document is a CAS blob the workspace can read.
    let digest = view["snapshot"]["digest"].as_str().unwrap();
    let blob = server
        .with_key(&reader, Method::GET, &format!("/api/v1/cas/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(
        blob.bytes().await.unwrap().as_ref(),
        to_json_bytes(&base).as_slice()
    );

    // A patch changes the version: the old tag no longer matches.
    append_ok(&server, &writer, id, 0, &add_node("x")).await;
    let res = server
        .with_key(&reader, Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        format!("\"{id}-v1\"")
    );

    // Another workspace's workflow answers 404 everywhere; so does an unknown one.
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/document"),
        (Method::GET, "/patches"),
        (Method::GET, "/events"),
    ] {
        let res = server
            .with_key(&stranger, method.clone(), &format!("{path}{suffix}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
        let res = server
            .with_key(
                &writer,
                method,
                &format!("/api/v1/workflows/no-such-id{suffix}"),
            )
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
    }
    expect_problem(
        append(&server, &stranger, id, 1, &add_node("y"))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;

    // Readers cannot delete; writers can, once.
    expect_problem(
        server
            .with_key(&reader, Method::DELETE, &path)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        server
            .with_key(&writer, Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_problem(
        server
            .with_key(&writer, Method::DELETE, &path)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        server
            .with_key(&reader, Method::GET, &path)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let after = get_json(&server, &reader, "/api/v1/workflows").await;
    assert_eq!(after["items"].as_array().unwrap().len(), 2);
}

async fn appends_conflict_fail_atomically_and_validate(backend: Backend) {
    let server = Server::builder(backend)
        .env("PATCHBAY_WORKFLOWS__MAX_PATCH_OPS", 5)
        .start()
        .await;
    let writer = server.workspace_key("w", "write").await;
    let reader = server.mint("w", "read").await;
    let base = base_doc(2);
    let id = create(&server, &writer, "f", &base).await;
    let mut expected = Expected::new(&base);

    let ops = add_node("a");
    let res = append(&server, &writer, &id, 0, &ops).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        format!("\"{id}-v1\"")
    );
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"version": 1}));
    expected.push(&ops);

    // A stale (or future) base_version: 409 with the current version.
    for stale in [0, 7] {
        let problem = expect_problem(
            append(&server, &writer, &id, stale, &add_node("b"))
                .send()
                .await
                .unwrap(),
            409,
            "version-conflict",
        )
        .await;
        assert_eq!(problem["current_version"], 1);
        assert_eq!(problem["base_version"], stale);
    }

    // A failing operation: 422 naming it, and nothing of the patch is applied.
    let failing = json!([
        {"op": "add", "path": "/nodes/-", "value": {"id": "half", "type": "step"}},
        {"op": "remove", "path": "/nodes/99"},
    ]);
    let problem = expect_problem(
        append(&server, &writer, &id, 1, &failing)
            .send()
            .await
            .unwrap(),
        422,
        "patch-failed",
    )
    .await;
    assert_eq!(problem["op_index"], 1, "{problem}");
    assert_eq!(problem["path"], "/nodes/99");
    assert!(
        problem["kind"].is_string() && problem["reason"].is_string(),
        "{problem}"
    );
    let problem = expect_problem(
        append(
            &server,
            &writer,
            &id,
            1,
            &json!([{"op": "test", "path": "/name", "value": "other"}]),
        )
        .send()
        .await
        .unwrap(),
        422,
        "patch-failed",
    )
    .await;
    assert_eq!(
        (
            problem["kind"].as_str(),
            problem["op_index"].as_u64(),
            problem["path"].as_str()
        ),
        (Some("test_failed"), Some(0), Some("/name"))
    );
    let problem = expect_problem(
        append(
            &server,
            &writer,
            &id,
            1,
            &json!([{"op": "frob", "path": "/x"}]),
        )
        .send()
        .await
        .unwrap(),
        422,
        "patch-failed",
    )
    .await;
    assert_eq!(
        (problem["kind"].as_str(), problem["op_index"].as_u64()),
        (Some("invalid_operation"), Some(0))
    );
    let problem = expect_problem(
        append(&server, &writer, &id, 1, &json!({"op": "add"}))
            .send()
            .await
            .unwrap(),
        422,
        "patch-failed",
    )
    .await;
    assert_eq!(problem["kind"], "invalid_patch");
    assert!(problem["op_index"].is_null());

    // A patch that applies but leaves an invalid workflow: 422 with the issues.
    let problem = expect_problem(
        append(
            &server,
            &writer,
            &id,
            1,
            &json!([{"op": "add", "path": "/edges/-", "value": {"from": "n0", "to": "ghost"}}]),
        )
        .send()
        .await
        .unwrap(),
        422,
        "invalid-document",
    )
    .await;
    assert_eq!(problem["issues"][0]["code"], "unknown_node");
    let problem = expect_problem(
        append(
            &server,
            &writer,
            &id,
            1,
            &json!([{"op": "remove", "path": "/name"}]),
        )
        .send()
        .await
        .unwrap(),
        422,
        "invalid-document",
    )
    .await;
    assert_eq!(problem["issues"][0]["code"], "required");

    // Too many operations; malformed bodies; readers cannot write.
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"op": "add", "path": format!("/metadata/k{i}"), "value": i}))
        .collect();
    let problem = expect_problem(
        append(&server, &writer, &id, 1, &Value::Array(six))
            .send()
            .await
            .unwrap(),
        413,
        "too-many-operations",
    )
    .await;
    assert_eq!(problem["max_patch_ops"], 5);
    let res = server
        .with_key(
            &writer,
            Method::POST,
            &format!("/api/v1/workflows/{id}/patches"),
        )
        .json(&json!({"ops": []}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-json").await;
    expect_problem(
        append(&server, &reader, &id, 1, &add_node("r"))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // None of the refused patches left a trace: still version 1, and the next append works on
    // the right document (the server's cached copy was not left half-patched).
    assert_eq!(
        get_json(&server, &reader, &format!("/api/v1/workflows/{id}")).await["version"],
        1
    );
    assert_eq!(
        document_bytes(&server, &reader, &id, None).await.as_ref(),
        expected.bytes(1).as_slice()
    );
    let ops = json!([{"op": "replace", "path": "/name", "value": "renamed"}, {"op": "add", "path": "/edges/-", "value": {"from": "n1", "to": "a"}}]);
    assert_eq!(append_ok(&server, &writer, &id, 1, &ops).await, 2);
    expected.push(&ops);
    assert_eq!(
        document_bytes(&server, &reader, &id, None).await.as_ref(),
        expected.bytes(2).as_slice()
    );
    let patches = get_json(&server, &reader, &format!("/api/v1/workflows/{id}/patches")).await;
    assert_eq!(patches["patches"].as_array().unwrap().len(), 2);
    assert_eq!(patches["patches"][1]["author"], key_id(&writer));

    let scrape = server.scrape().await;
    for needed in [
        "patchbay_workflow_patches_committed_total 2",
        "patchbay_workflow_conflicts_total 2",
        "patchbay_workflow_validation_failures_total{reason=\"patch_failed\"} 4",
        "patchbay_workflow_validation_failures_total{reason=\"invalid_document\"} 2",
        "patchbay_workflow_sse_clients 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == needed),
            "{needed} missing from\n{scrape}"
        );
    }
}

async fn history_pages_and_past_versions(backend: Backend) {
    let server = Server::start(backend).await;
    let key = server.workspace_key("h", "write").await;
    let base = base_doc(4);
    let id = create(&server, &key, "history", &base).await;
    let mut expected = Expected::new(&base);
    for v in 0..10u64 {
        let ops = match v % 3 {
            0 => add_node(&format!("p{v}")),
            1 => json!([{"op": "replace", "path": "/nodes/0/config/i", "value": v}]),
            _ => {
                json!([{"op": "move", "from": "/nodes/1", "path": "/nodes/-"}, {"op": "add", "path": "/metadata/v", "value": v}])
            }
        };
        assert_eq!(append_ok(&server, &key, &id, v, &ops).await, v + 1);
        expected.push(&ops);
    }

    // The history a page at a time, with the snapshots to start from.
    let mut seqs = Vec::new();
    let mut after = 0u64;
    loop {
        let page = get_json(
            &server,
            &key,
            &format!("/api/v1/workflows/{id}/patches?after={after}&limit=4"),
        )
        .await;
        let snapshots = page["snapshots"].as_array().unwrap();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0]["seq"], 0);
        assert_eq!(
            snapshots[0]["materializer_version"],
            patchbay_materializer::MATERIALIZER_VERSION
        );
        assert_eq!(snapshots[0]["size"], to_json_bytes(&base).len());
        for p in page["patches"].as_array().unwrap() {
            let seq = p["seq"].as_u64().unwrap();
            assert_eq!(
                p["ops"],
                serde_json::to_value(Patch::from_value(p["ops"].clone()).unwrap()).unwrap(),
                "canonical ops"
            );
            assert_eq!(p["author"], key_id(&key));
            assert!(p["created_at"].as_str().unwrap().ends_with('Z'));
            seqs.push(seq);
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let empty = get_json(
        &server,
        &key,
        &format!("/api/v1/workflows/{id}/patches?after=10"),
    )
    .await;
    assert_eq!(empty["patches"], json!([]));
    assert!(empty["next_cursor"].is_null());
    for bad in ["after=abc", "after=-1", "limit=0", "limit=1001"] {
        let res = server
            .with_key(
                &key,
                Method::GET,
                &format!("/api/v1/workflows/{id}/patches?{bad}"),
            )
            .send()
            .await
            .unwrap();
        expect_problem(res, 400, "invalid-query").await;
    }

    // Any version, materialized by the server, byte for byte what a client computes.
    for at in 0..=10u64 {
        assert_eq!(
            document_bytes(&server, &key, &id, Some(at)).await.as_ref(),
            expected.bytes(at).as_slice(),
            "at={at}"
        );
    }
    let res = server
        .with_key(
            &key,
            Method::GET,
            &format!("/api/v1/workflows/{id}/document"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-workflow-version"], "10");
    let tag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        expected.bytes(10).as_slice()
    );
    let res = server
        .with_key(
            &key,
            Method::GET,
            &format!("/api/v1/workflows/{id}/document"),
        )
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let problem = expect_problem(
        server
            .with_key(
                &key,
                Method::GET,
                &format!("/api/v1/workflows/{id}/document?at=11"),
            )
            .send()
            .await
            .unwrap(),
        404,
        "unknown-version",
    )
    .await;
    assert_eq!(problem["current_version"], 10);
    for bad in ["at=abc", "at=-1", "at=1.5"] {
        let res = server
            .with_key(
                &key,
                Method::GET,
                &format!("/api/v1/workflows/{id}/document?{bad}"),
            )
            .send()
            .await
            .unwrap();
        expect_problem(res, 400, "invalid-query").await;
    }

    // What a browser does: the snapshot plus the patch records, through the same materializer.
    let view = get_json(&server, &key, &format!("/api/v1/workflows/{id}")).await;
    let mut m = Materializer::from_slice(
        view["snapshot"]["document"].to_string().as_bytes(),
        view["snapshot"]["seq"].as_u64().unwrap(),
    )
    .unwrap();
    assert_eq!(
        m.apply_slice(view["patches"].to_string().as_bytes())
            .unwrap(),
        10
    );
    assert_eq!(m.to_json_bytes(), expected.bytes(10));
}

/// Snapshot seqs the history lists (0 is the base).
async fn snapshot_seqs(server: &Server, key: &str, id: &str) -> Vec<u64> {
    let page = get_json(
        server,
        key,
        &format!("/api/v1/workflows/{id}/patches?limit=1"),
    )
    .await;
    page["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect()
}

async fn compaction_writes_snapshots_and_history_stays_right(backend: Backend) {
    const EVERY: u64 = 5;
    let server = Server::builder(backend)
        .env("PATCHBAY_WORKFLOWS__COMPACTION_EVERY", EVERY)
        .start()
        .await;
    let key = server.workspace_key("c", "write").await;
    let base = base_doc(3);
    let id = create(&server, &key, "compacted", &base).await;
    let mut expected = Expected::new(&base);
    let mut version = 0u64;
    fn next(expected: &mut Expected, version: u64) -> Value {
        let ops = if version.is_multiple_of(2) {
            add_node(&format!("c{version}"))
        } else {
            json!([{"op": "add", "path": "/metadata/last", "value": version}])
        };
        expected.push(&ops);
        ops
    }
    for _ in 0..23 {
        let ops = next(&mut expected, version);
        version = append_ok(&server, &key, &id, version, &ops).await;
    }
    // Compactions run in the background; keep appending until several have landed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seqs = loop {
        let seqs = snapshot_seqs(&server, &key, &id).await;
        if seqs.last().is_some_and(|&s| s >= 40) {
            break seqs;
        }
        assert!(
            Instant::now() < deadline,
            "compactions did not keep up: {seqs:?} at version {version}"
        );
        let ops = next(&mut expected, version);
        version = append_ok(&server, &key, &id, version, &ops).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seqs[0], 0);
    assert!(seqs.len() >= 5, "{seqs:?}");
    for pair in seqs.windows(2) {
        assert!(
            pair[1] - pair[0] >= EVERY,
            "a snapshot came before {EVERY} patches: {seqs:?}"
        );
    }

    // Each snapshot is a CAS blob holding exactly the document at its seq.
    let page = get_json(
        &server,
        &key,
        &format!("/api/v1/workflows/{id}/patches?limit=1"),
    )
    .await;
    for snapshot in page["snapshots"].as_array().unwrap() {
        let seq = snapshot["seq"].as_u64().unwrap();
        let blob = server
            .with_key(
                &key,
                Method::GET,
                &format!("/api/v1/cas/{}", snapshot["digest"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            blob.bytes().await.unwrap().as_ref(),
            expected.bytes(seq).as_slice(),
            "snapshot {seq}"
        );
        assert_eq!(snapshot["size"], expected.bytes(seq).len());
    }

    // The workflow view starts from the latest snapshot; the full history is still there.
    let view = get_json(&server, &key, &format!("/api/v1/workflows/{id}")).await;
    let latest = *seqs.last().unwrap();
    let snapshot_seq = view["snapshot"]["seq"].as_u64().unwrap();
    assert!(snapshot_seq >= latest, "{snapshot_seq} < {latest}");
    let patch_seqs: Vec<u64> = view["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(patch_seqs, (snapshot_seq + 1..=version).collect::<Vec<_>>());
    let mut m = Materializer::from_slice(
        view["snapshot"]["document"].to_string().as_bytes(),
        snapshot_seq,
    )
    .unwrap();
    m.apply_slice(view["patches"].to_string().as_bytes())
        .unwrap();
    assert_eq!(m.to_json_bytes(), expected.bytes(version));
    let all = get_json(
        &server,
        &key,
        &format!("/api/v1/workflows/{id}/patches?limit=1000"),
    )
    .await;
    assert_eq!(
        all["patches"].as_array().unwrap().len() as u64,
        version,
        "patches are never deleted"
    );
    for at in 0..=version {
        assert_eq!(
            document_bytes(&server, &key, &id, Some(at)).await.as_ref(),
            expected.bytes(at).as_slice(),
            "at={at}"
        );
    }

    let scrape = server.scrape().await;
    let value = |prefix: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("patchbay_workflow_compactions_total{outcome=\"success\"}")
            >= (seqs.len() - 1) as f64,
        "{scrape}"
    );
    assert!(
        value("patchbay_workflow_snapshot_size_bytes_count") >= seqs.len() as f64,
        "{scrape}"
    );
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// A reader of a `text/event-stream` body.
struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
    comments: Vec<String>,
}

impl Sse {
    async fn open(req: RequestBuilder) -> Sse {
        let res: Response = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next event within `within`; None on timeout or when the stream ends.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut fields = false;
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.trim().to_string());
                    } else if let Some((name, value)) = line.split_once(": ") {
                        fields = true;
                        match name {
                            "id" => event.id = Some(value.to_string()),
                            "event" => event.event = value.to_string(),
                            "data" => event.data.push_str(value),
                            other => panic!("unexpected field {other}"),
                        }
                    }
                }
                if fields {
                    return Some(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(chunk)) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Expects a last event named one of `names`, then the end of the stream.
    async fn expect_end(&mut self, names: &[&str]) {
        let end = self
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no {names:?} event"));
        assert!(names.contains(&end.event.as_str()), "{end:?}");
        assert!(
            self.next(Duration::from_secs(5)).await.is_none(),
            "the stream ends after {end:?}"
        );
    }

    /// The next `n` patch events' seqs, checking each event's shape.
    async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let event = self
                .next(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("stream stopped after {seqs:?}"));
            assert_eq!(event.event, "patch");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            let seq = data["seq"].as_u64().unwrap();
            assert_eq!(event.id, Some(seq.to_string()));
            assert!(
                data["ops"].is_array()
                    && data["author"].is_string()
                    && data["created_at"].is_string(),
                "{data}"
            );
            seqs.push(seq);
        }
        seqs
    }
}

fn events(server: &Server, key: &str, id: &str) -> RequestBuilder {
    server.with_key(key, Method::GET, &format!("/api/v1/workflows/{id}/events"))
}

async fn events_are_live_resumable_and_never_lost_or_repeated(backend: Backend) {
    let server = Server::builder(backend)
        .env("PATCHBAY_WORKFLOWS__SSE_HEARTBEAT_MS", 200)
        .start()
        .await;
    let writer = server.workspace_key("e", "write").await;
    let reader = server.mint("e", "read").await;
    let id = create(&server, &writer, "live", &base_doc(2)).await;

    // Live: a subscriber without a position gets what is committed from now on.
    let mut live = Sse::open(events(&server, &reader, &id)).await;
    let mut sent = Vec::new();
    for v in 0..3u64 {
        let ops = add_node(&format!("l{v}"));
        append_ok(&server, &writer, &id, v, &ops).await;
        sent.push(ops);
    }
    let first = live.next(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["seq"], 1);
    assert_eq!(data["ops"], sent[0]);
    assert_eq!(data["author"], key_id(&writer));
    assert_eq!(live.seqs(2).await, [2, 3]);
    // Heartbeats keep an idle stream open.
    assert!(live.next(Duration::from_millis(700)).await.is_none());
    assert!(
        live.comments.iter().filter(|c| *c == "heartbeat").count() >= 2,
        "{:?}",
        live.comments
    );
    drop(live);

    // Resume with Last-Event-ID after missing two patches: exactly what was missed, then live.
    append_ok(&server, &writer, &id, 3, &add_node("m4")).await;
    append_ok(&server, &writer, &id, 4, &add_node("m5")).await;
    let mut resumed = Sse::open(
        events(&server, &reader, &id)
            .header("last-event-id", "3")
            .query(&[("after", "0")]),
    )
    .await;
    assert_eq!(
        resumed.seqs(2).await,
        [4, 5],
        "Last-Event-ID wins over ?after="
    );
    append_ok(&server, &writer, &id, 5, &add_node("m6")).await;
    assert_eq!(resumed.seqs(1).await, [6]);
    assert!(
        resumed.next(Duration::from_millis(300)).await.is_none(),
        "nothing repeated"
    );

    // Catch-up racing live commits: a subscriber from 0 while a writer appends 40 more gets
    // every seq once, in order.
    let writer_task = {
        let (url, writer, id) = (server.url.clone(), writer.clone(), id.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for v in 6..46u64 {
                let res = client
                    .post(format!("{url}/api/v1/workflows/{id}/patches"))
                    .bearer_auth(&writer)
                    .json(&json!({"base_version": v, "ops": add_node(&format!("r{v}"))}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    let mut from_zero = Sse::open(events(&server, &reader, &id).query(&[("after", "0")])).await;
    let mut second = Sse::open(events(&server, &reader, &id).query(&[("after", "20")])).await;
    assert_eq!(from_zero.seqs(46).await, (1..=46).collect::<Vec<_>>());
    assert_eq!(second.seqs(26).await, (21..=46).collect::<Vec<_>>());
    writer_task.await.unwrap();
    assert!(from_zero.next(Duration::from_millis(300)).await.is_none());

    // Bad positions are refused; a deletion ends the stream.
    let res = events(&server, &reader, &id)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-last-event-id").await;
    let res = events(&server, &reader, &id)
        .query(&[("after", "x")])
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-query").await;
    assert_eq!(
        server
            .with_key(&writer, Method::DELETE, &format!("/api/v1/workflows/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    from_zero.expect_end(&["deleted"]).await;
    let scrape = server.scrape().await;
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("patchbay_workflow_sse_clients ")),
        "{scrape}"
    );
}

/// A stream authenticates once, when it opens; revoking its key or deleting the key's workspace
/// must still cut it off (within a heartbeat), or a revoked key keeps reading a live workflow.
async fn events_end_when_the_key_stops_granting_access(backend: Backend) {
    let server = Server::builder(backend)
        .env("PATCHBAY_WORKFLOWS__SSE_HEARTBEAT_MS", 200)
        .start()
        .await;
    let writer = server.workspace_key("cut", "write").await;
    let id = create(&server, &writer, "watched", &base_doc(2)).await;

    // Revocation: the revoked reader's stream ends; another reader's stream carries on.
    let revoked = server.mint("cut", "read").await;
    let kept = server.mint("cut", "read").await;
    let mut cut_off = Sse::open(events(&server, &revoked, &id)).await;
    let mut carries_on = Sse::open(events(&server, &kept, &id)).await;
    append_ok(&server, &writer, &id, 0, &add_node("before")).await;
    assert_eq!(cut_off.seqs(1).await, [1]);
    assert_eq!(carries_on.seqs(1).await, [1]);
    let res = server
        .admin(
            Method::DELETE,
            &format!("/api/v1/keys/{}", key_id(&revoked)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    cut_off.expect_end(&["revoked"]).await;
    append_ok(&server, &writer, &id, 1, &add_node("after")).await;
    assert_eq!(carries_on.seqs(1).await, [2]);
    // Heartbeats keep passing for the valid key.
    assert!(carries_on.next(Duration::from_millis(600)).await.is_none());

    // Deleting the workspace takes its keys, and so its streams.
    let res = server
        .admin(Method::DELETE, "/api/v1/workspaces/cut")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let end = carries_on
        .next(Duration::from_secs(10))
        .await
        .expect("an event ending the stream");
    assert!(end.event == "revoked" || end.event == "deleted", "{end:?}");
    assert!(carries_on.next(Duration::from_secs(5)).await.is_none());
}

async fn concurrent_writers_never_lose_or_duplicate_patches(backend: Backend) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let server = Server::builder(backend)
        .env("PATCHBAY_AUTH__KEY_REQUESTS_PER_SECOND", 100_000)
        .env("PATCHBAY_AUTH__KEY_BURST", 100_000)
        .start()
        .await;
    let owner = server.workspace_key("cc", "write").await;
    let id = create(&server, &owner, "contended", &base_doc(1)).await;
    let mut keys = Vec::new();
    for _ in 0..WRITERS {
        keys.push(server.mint("cc", "write").await);
    }
    let mut tasks = Vec::new();
    for (w, key) in keys.iter().enumerate() {
        let (url, key, id) = (server.url.clone(), key.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut base = 0u64;
            let mut conflicts = 0usize;
            for i in 0..EACH {
                let ops = add_node(&format!("w{w}-{i}"));
                loop {
                    let res = client
                        .post(format!("{url}/api/v1/workflows/{id}/patches"))
                        .bearer_auth(&key)
                        .json(&json!({"base_version": base, "ops": ops}))
                        .send()
                        .await
                        .unwrap();
                    let status = res.status().as_u16();
                    let body: Value = res.json().await.unwrap();
                    match status {
                        201 => {
                            base = body["version"].as_u64().unwrap();
                            break;
                        }
                        409 => {
                            conflicts += 1;
                            base = body["current_version"].as_u64().unwrap();
                        }
                        other => panic!("writer {w}: {other} {body}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let total = (WRITERS * EACH) as u64;
    assert!(conflicts > 0, "the writers really raced");

    let history = get_json(
        &server,
        &owner,
        &format!("/api/v1/workflows/{id}/patches?limit=1000"),
    )
    .await;
    let patches = history["patches"].as_array().unwrap();
    let seqs: Vec<u64> = patches.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "seqs 1..={total}, contiguous"
    );
    let mut seen = HashSet::new();
    let mut per_author: BTreeMap<String, usize> = BTreeMap::new();
    for p in patches {
        let node = p["ops"][0]["value"]["id"].as_str().unwrap().to_string();
        let writer: usize = node[1..node.find('-').unwrap()].parse().unwrap();
        assert_eq!(
            p["author"],
            key_id(&keys[writer]),
            "{node} committed under its writer's key"
        );
        assert!(seen.insert(node.clone()), "{node} committed twice");
        *per_author
            .entry(p["author"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len() as u64, total);
    assert!(per_author.values().all(|&n| n == EACH), "{per_author:?}");
    // Each writer's patches kept their order.
    for w in 0..WRITERS {
        let order: Vec<usize> = patches
            .iter()
            .filter_map(|p| {
                p["ops"][0]["value"]["id"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(&format!("w{w}-"))
                    .map(|i| i.parse().unwrap())
            })
            .collect();
        assert_eq!(order, (0..EACH).collect::<Vec<_>>());
    }
    let view = get_json(&server, &owner, &format!("/api/v1/workflows/{id}")).await;
    assert_eq!(view["version"], total);
    let doc: Value =
        serde_json::from_slice(&document_bytes(&server, &owner, &id, None).await).unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len() as u64, total + 1);
    // A fresh node (no cache) materializes the same document.
    let restarted = server.restart().await;
    let again: Value =
        serde_json::from_slice(&document_bytes(&restarted, &owner, &id, None).await).unwrap();
    assert_eq!(again, doc);
}

/// Two servers on one PostgreSQL database: a patch committed on one reaches subscribers of the
/// other through LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_on_postgres() {
    let a = Server::builder(Backend::Postgres)
        .env("PATCHBAY_WORKFLOWS__SSE_HEARTBEAT_MS", 500)
        .start()
        .await;
    // Minted before the second node starts: it installs its own bootstrap admin token.
    let key = a.workspace_key("x", "write").await;
    let b = Server::builder(Backend::Postgres).sharing(&a).start().await;
    let id = create(&a, &key, "shared", &base_doc(2)).await;

    let mut on_a = Sse::open(events(&a, &key, &id)).await;
    let mut on_b = Sse::open(events(&b, &key, &id)).await;
    for v in 0..5u64 {
        // Alternate nodes: each commit reaches both nodes' subscribers once.
        let node = if v.is_multiple_of(2) { &b } else { &a };
        append_ok(node, &key, &id, v, &add_node(&format!("x{v}"))).await;
    }
    assert_eq!(on_a.seqs(5).await, [1, 2, 3, 4, 5]);
    assert_eq!(on_b.seqs(5).await, [1, 2, 3, 4, 5]);
    assert!(
        on_a.next(Duration::from_millis(300)).await.is_none(),
        "nothing repeated"
    );

    // A node whose cache is behind catches up from the store before validating.
    assert_eq!(append_ok(&b, &key, &id, 5, &add_node("x5")).await, 6);
    assert_eq!(append_ok(&a, &key, &id, 6, &add_node("x6")).await, 7);
    let problem = expect_problem(
        append(&b, &key, &id, 6, &add_node("late"))
            .send()
            .await
            .unwrap(),
        409,
        "version-conflict",
    )
    .await;
    assert_eq!(problem["current_version"], 7);
    assert_eq!(on_a.seqs(2).await, [6, 7]);
    assert_eq!(
        document_bytes(&a, &key, &id, None).await,
        document_bytes(&b, &key, &id, None).await
    );

    // A deletion on one node ends streams on the other.
    assert_eq!(
        b.with_key(&key, Method::DELETE, &format!("/api/v1/workflows/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(on_b.seqs(2).await, [6, 7]);
    assert_eq!(
        on_a.next(Duration::from_secs(10)).await.map(|e| e.event),
        Some("deleted".into())
    );
    assert_eq!(
        on_b.next(Duration::from_secs(10)).await.map(|e| e.event),
        Some("deleted".into())
    );
}

#[test]
fn materialize_cli_prints_the_document_and_names_a_failing_operation() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let good = dir.path().join("good.json");
    let one = dir.path().join("one.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&base, base_doc(2).to_string()).unwrap();
    std::fs::write(
        &good,
        json!([add_node("a"), [{"op": "replace", "path": "/name", "value": "cli"}]]).to_string(),
    )
    .unwrap();
    std::fs::write(&one, add_node("solo").to_string()).unwrap();
    std::fs::write(
        &bad,
        json!([add_node("a"), [{"op": "add", "path": "/metadata/x", "value": 1}, {"op": "remove", "path": "/nodes/7"}], add_node("never")]).to_string(),
    )
    .unwrap();
    let run = |patches: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
            .arg("materialize")
            .arg("--base")
            .arg(&base)
            .arg("--patches")
            .arg(patches)
            .args(extra)
            .output()
            .unwrap()
    };

    let out = run(&good, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = Expected::new(&base_doc(2));
    expected.push(&add_node("a"));
    expected.push(&json!([{"op": "replace", "path": "/name", "value": "cli"}]));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", String::from_utf8(expected.bytes(2)).unwrap())
    );

    let out = run(&one, &["--pretty", "--validate"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["nodes"][2]["id"], "solo");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("\n  \"nodes\""),
        "indented"
    );

    let out = run(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    for needed in [
        "patch #2",
        "operation 1",
        "\"/nodes/7\"",
        "path_not_found",
        "1 patches applied before it",
    ] {
        assert!(err.contains(needed), "{needed:?} missing from: {err}");
    }

    std::fs::write(&bad, json!([{"op": "remove", "path": "/name"}]).to_string()).unwrap();
    let out = run(&bad, &["--validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("not a valid workflow") && err.contains("required"),
        "{err}"
    );
    let out = run(&dir.path().join("missing.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("missing.json")
    );
}
