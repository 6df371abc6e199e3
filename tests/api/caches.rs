//! The result caches: exact and semantic, isolated per workspace, permission-aware, with TTLs,
//! eviction, rejection, the deny-list, batch lookups and an OpenAI-compatible embedder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::on_both_backends;
use crate::support::{Backend, Server, ServerBuilder, expect_problem};

on_both_backends!(
    exact_entries_are_isolated_and_permission_aware,
    exact_results_may_be_cas_blobs,
    semantic_thresholds_hold_at_their_boundaries,
    identical_prompts_hit_without_a_vector_search,
    neighbours_in_other_workspaces_do_not_hide_ours,
    entries_expire_and_the_purge_removes_them,
    the_least_recently_hit_entry_is_evicted,
    rejected_hits_are_never_served_again,
    the_deny_list_refuses_personal_data_by_pattern_name,
    batch_lookups_answer_in_order,
    entries_are_deleted_by_id_node_type_or_all,
    embeddings_come_from_an_openai_compatible_embedder,
    a_changed_dimension_needs_an_explicit_reindex,
);

const DIMS: usize = 8;

fn builder(backend: Backend) -> ServerBuilder {
    Server::builder(backend).env("PATCHBAY_CACHE__SEMANTIC__DIMENSIONS", DIMS)
}

async fn start(backend: Backend) -> Server {
    builder(backend).start().await
}

/// An 8-dimension vector from its first components.
fn vector(head: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0; DIMS];
    v[..head.len()].copy_from_slice(head);
    v
}

async fn json_ok(res: reqwest::Response, status: u16) -> Value {
    let url = res.url().to_string();
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

async fn put_exact(server: &Server, key: &str, body: Value) -> Value {
    json_ok(
        server
            .with_key(key, Method::PUT, "/api/v1/cache/exact")
            .json(&body)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await
}

async fn lookup_exact(server: &Server, key: &str, body: Value) -> Value {
    json_ok(
        server
            .with_key(key, Method::POST, "/api/v1/cache/exact/lookup")
            .json(&body)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

async fn put_semantic(server: &Server, key: &str, body: Value) -> Value {
    json_ok(
        server
            .with_key(key, Method::POST, "/api/v1/cache/semantic")
            .json(&body)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await
}

async fn lookup_semantic(server: &Server, key: &str, body: Value) -> Value {
    json_ok(
        server
            .with_key(key, Method::POST, "/api/v1/cache/semantic/lookup")
            .json(&body)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

async fn entry(server: &Server, key: &str, cache: &str, id: &str) -> reqwest::Response {
    server
        .with_key(key, Method::GET, &format!("/api/v1/cache/{cache}/{id}"))
        .send()
        .await
        .unwrap()
}

async fn exact_entries_are_isolated_and_permission_aware(backend: Backend) {
    let server = start(backend).await;
    let a_admin = server.workspace_key("team-a", "admin").await;
    let a_write = server.mint("team-a", "write").await;
    let a_read = server.mint("team-a", "read").await;
    let b_admin = server.workspace_key("team-b", "admin").await;
    let query = json!({"node_type": "function", "config": {"model": "m", "temperature": 0}, "inputs": {"x": 1, "y": [1, 2]}});

    assert_eq!(
        lookup_exact(&server, &a_read, query.clone()).await,
        json!({"hit": false})
    );
    let stored = put_exact(
        &server,
        &a_write,
        json!({"node_type": "function", "config": {"model": "m", "temperature": 0}, "inputs": {"x": 1, "y": [1, 2]},
               "result": {"sum": 4}, "execution_ms": 1500, "required_role": "read"}),
    )
    .await;
    let id = stored["id"].as_str().unwrap().to_string();
    assert!(stored["expires_at"].as_str().unwrap().ends_with('Z'));

    // The key is the canonical JSON: member order and number spelling do not matter.
    let reordered = json!({"node_type": "function", "inputs": {"y": [1.0, 2e0], "x": 1}, "config": {"temperature": 0.0, "model": "m"}});
    let hit = lookup_exact(&server, &a_read, reordered).await;
    assert_eq!(
        (
            hit["hit"].clone(),
            hit["id"].clone(),
            hit["result"].clone(),
            hit["saved_ms"].clone()
        ),
        (json!(true), json!(id), json!({"sum": 4}), json!(1500))
    );
    assert!(hit["age_seconds"].as_f64().unwrap() >= 0.0);
    // Other node types, configs and inputs miss.
    for other in [
        json!({"node_type": "pure", "config": {"model": "m", "temperature": 0}, "inputs": {"x": 1, "y": [1, 2]}}),
        json!({"node_type": "function", "config": {"model": "n", "temperature": 0}, "inputs": {"x": 1, "y": [1, 2]}}),
        json!({"node_type": "function", "config": {"model": "m", "temperature": 0}, "inputs": {"x": 2, "y": [1, 2]}}),
    ] {
        assert_eq!(
            lookup_exact(&server, &a_read, other).await,
            json!({"hit": false})
        );
    }

    // Another workspace sees nothing, not even that the entry exists.
    assert_eq!(
        lookup_exact(&server, &b_admin, query.clone()).await,
        json!({"hit": false})
    );
    expect_problem(
        entry(&server, &b_admin, "exact", &id).await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        server
            .with_key(
                &b_admin,
                Method::DELETE,
                &format!("/api/v1/cache/exact/{id}"),
            )
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        server
            .with_key(
                &b_admin,
                Method::POST,
                &format!("/api/v1/cache/exact/{id}/reject"),
            )
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    assert_eq!(entry(&server, &a_read, "exact", &id).await.status(), 200);

    // An admin-only entry is never returned to a read or write key; the admin gets it.
    put_exact(&server, &a_admin, json!({"node_type": "function", "config": {"model": "m", "temperature": 0}, "inputs": {"x": 1, "y": [1, 2]}, "result": {"sum": 4, "audit": "admin"}})).await;
    assert_eq!(
        lookup_exact(&server, &a_admin, query.clone()).await["result"],
        json!({"sum": 4, "audit": "admin"})
    );
    assert_eq!(
        lookup_exact(&server, &a_write, query.clone()).await["result"],
        json!({"sum": 4})
    );
    assert_eq!(
        lookup_exact(&server, &a_read, query.clone()).await["result"],
        json!({"sum": 4})
    );
    let admin_only =
        json!({"node_type": "agent", "config": {}, "inputs": "secret", "result": "classified"});
    let admin_entry = put_exact(&server, &a_admin, admin_only.clone()).await;
    let admin_query = json!({"node_type": "agent", "config": {}, "inputs": "secret"});
    assert_eq!(
        lookup_exact(&server, &a_write, admin_query.clone()).await,
        json!({"hit": false})
    );
    assert_eq!(
        lookup_exact(&server, &a_read, admin_query.clone()).await,
        json!({"hit": false})
    );
    expect_problem(
        entry(
            &server,
            &a_read,
            "exact",
            admin_entry["id"].as_str().unwrap(),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        lookup_exact(&server, &a_admin, admin_query).await["result"],
        "classified"
    );

    // Read keys cannot store; nobody stores above their own role.
    let res = server
        .with_key(&a_read, Method::PUT, "/api/v1/cache/exact")
        .json(&admin_only)
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let mut above = admin_only.clone();
    above["required_role"] = json!("admin");
    expect_problem(
        server
            .with_key(&a_write, Method::PUT, "/api/v1/cache/exact")
            .json(&above)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Malformed stores are the caller's mistakes.
    let bad = [
        (
            json!({"node_type": "", "config": {}, "inputs": 1, "result": 1}),
            400,
            "invalid-node-type",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": 1}),
            400,
            "invalid-result",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": 1, "result": 1, "result_digest": "a".repeat(64)}),
            400,
            "invalid-result",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": 1, "result": 1, "ttl_seconds": 0}),
            400,
            "invalid-ttl",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": 1, "result": 1, "ttl_seconds": 99_999_999}),
            400,
            "invalid-ttl",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": [9_007_199_254_740_993u64], "result": 1}),
            400,
            "unsafe-number",
        ),
        (
            json!({"node_type": "f", "config": {}, "inputs": 1, "result": 1, "surprise": 1}),
            400,
            "invalid-json",
        ),
    ];
    for (body, status, kind) in bad {
        let problem = expect_problem(
            server
                .with_key(&a_write, Method::PUT, "/api/v1/cache/exact")
                .json(&body)
                .send()
                .await
                .unwrap(),
            status,
            kind,
        )
        .await;
        if kind == "unsafe-number" {
            assert_eq!(problem["pointer"], "/inputs/0");
        }
    }
    // A null result is a result.
    put_exact(
        &server,
        &a_write,
        json!({"node_type": "f", "config": {}, "inputs": "nothing", "result": null}),
    )
    .await;
    let hit = lookup_exact(
        &server,
        &a_write,
        json!({"node_type": "f", "config": {}, "inputs": "nothing"}),
    )
    .await;
    assert_eq!(
        (hit["hit"].clone(), hit.get("result").cloned()),
        (json!(true), Some(Value::Null))
    );
}

async fn exact_results_may_be_cas_blobs(backend: Backend) {
    let server = start(backend).await;
    let a = server.workspace_key("a", "write").await;
    let b = server.workspace_key("b", "write").await;
    let blob = server
        .with_key(&a, Method::POST, "/api/v1/cas")
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    let digest = blob.json::<Value>().await.unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    put_exact(
        &server,
        &a,
        json!({"node_type": "function", "config": {}, "inputs": "big", "result_digest": digest}),
    )
    .await;
    let hit = lookup_exact(
        &server,
        &a,
        json!({"node_type": "function", "config": {}, "inputs": "big"}),
    )
    .await;
    assert_eq!(hit["result_digest"], json!(digest));
    assert!(hit.get("result").is_none());
    // A digest the workspace has not uploaded is refused: knowing a digest proves nothing.
    let res = server.with_key(&b, Method::PUT, "/api/v1/cache/exact").json(&json!({"node_type": "function", "config": {}, "inputs": "big", "result_digest": digest})).send().await.unwrap();
    expect_problem(res, 422, "unknown-blob").await;
    let res = server
        .with_key(&a, Method::PUT, "/api/v1/cache/exact")
        .json(&json!({"node_type": "function", "config": {}, "inputs": 1, "result_digest": "xyz"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-digest").await;
    // Inline results have a size limit that points at the CAS.
    let huge = "x".repeat(300 * 1024);
    let res = server
        .with_key(&a, Method::PUT, "/api/v1/cache/exact")
        .json(&json!({"node_type": "function", "config": {}, "inputs": 1, "result": huge}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 413, "payload-too-large").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("result_digest"),
        "{problem}"
    );
}

async fn semantic_thresholds_hold_at_their_boundaries(backend: Backend) {
    let server = start(backend).await;
    let key = server.workspace_key("w", "write").await;
    // [3, 4] against [1, 0]: cosine similarity exactly 3/5.
    let stored = put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "stored", "embedding": vector(&[3.0, 4.0]), "result": {"answer": 42}, "execution_ms": 800})).await;
    let id = stored["id"].as_str().unwrap();
    let query = |threshold: Value| json!({"node_type": "agent", "prompt": "asked", "embedding": vector(&[1.0, 0.0]), "threshold": threshold});
    let hit = lookup_semantic(&server, &key, query(json!(0.6))).await;
    assert_eq!(
        (
            hit["hit"].clone(),
            hit["id"].clone(),
            hit["similarity"].clone(),
            hit["result"].clone()
        ),
        (json!(true), json!(id), json!(0.6), json!({"answer": 42}))
    );
    assert_eq!(
        (hit["matched"].clone(), hit["saved_ms"].clone()),
        (json!("embedding"), json!(800))
    );
    assert_eq!(
        lookup_semantic(&server, &key, query(json!(0.6000001))).await,
        json!({"hit": false})
    );
    assert_eq!(
        lookup_semantic(&server, &key, query(json!(0.5))).await["hit"],
        true
    );
    // The default threshold is 0.92.
    let default =
        json!({"node_type": "agent", "prompt": "asked", "embedding": vector(&[1.0, 0.0])});
    assert_eq!(
        lookup_semantic(&server, &key, default).await,
        json!({"hit": false})
    );
    let close = json!({"node_type": "agent", "prompt": "asked", "embedding": vector(&[3.0, 4.1])});
    assert!(
        lookup_semantic(&server, &key, close).await["similarity"]
            .as_f64()
            .unwrap()
            > 0.99
    );
    // Thresholds outside the configured bounds (0.5 to 1) are refused.
    for bad in [json!(0.49), json!(1.01), json!(-1)] {
        let res = server
            .with_key(&key, Method::POST, "/api/v1/cache/semantic/lookup")
            .json(&query(bad))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, 400, "invalid-threshold").await;
        assert_eq!(
            (problem["min"].clone(), problem["max"].clone()),
            (json!(0.5), json!(1.0))
        );
    }
    // Other node types never match.
    let other = json!({"node_type": "summarize", "prompt": "asked", "embedding": vector(&[3.0, 4.0]), "threshold": 0.5});
    assert_eq!(
        lookup_semantic(&server, &key, other).await,
        json!({"hit": false})
    );

    // Embeddings of the wrong dimension are 422 on store and lookup; so is no embedding at all
    // when no embedder is configured, and a vector without direction.
    let cases = [
        (
            "/api/v1/cache/semantic",
            json!({"node_type": "agent", "prompt": "p", "embedding": [1.0, 0.0, 0.0], "result": 1}),
            "wrong-dimension",
        ),
        (
            "/api/v1/cache/semantic/lookup",
            json!({"node_type": "agent", "prompt": "p", "embedding": vec![1.0; 384]}),
            "wrong-dimension",
        ),
        (
            "/api/v1/cache/semantic",
            json!({"node_type": "agent", "prompt": "p", "result": 1}),
            "embedding-required",
        ),
        (
            "/api/v1/cache/semantic/lookup",
            json!({"node_type": "agent", "prompt": "never stored"}),
            "embedding-required",
        ),
        (
            "/api/v1/cache/semantic",
            json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[]), "result": 1}),
            "invalid-embedding",
        ),
    ];
    for (path, body, kind) in cases {
        let problem = expect_problem(
            server
                .with_key(&key, Method::POST, path)
                .json(&body)
                .send()
                .await
                .unwrap(),
            422,
            kind,
        )
        .await;
        if kind == "wrong-dimension" {
            assert_eq!(problem["expected"], DIMS);
        }
    }
}

async fn identical_prompts_hit_without_a_vector_search(backend: Backend) {
    let server = start(backend).await;
    let key = server.workspace_key("w", "write").await;
    put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "What is the capital of France?", "embedding": vector(&[1.0, 2.0, 3.0]), "result": "Paris"})).await;
    // No embedding, no embedder: the identical prompt still hits, with similarity 1.
    let hit = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "What is the capital of France?", "threshold": 1.0}),
    )
    .await;
    assert_eq!(
        (
            hit["result"].clone(),
            hit["similarity"].clone(),
            hit["matched"].clone()
        ),
        (json!("Paris"), json!(1.0), json!("prompt"))
    );
    // Storing the same prompt again replaces the entry.
    let second = put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "What is the capital of France?", "embedding": vector(&[1.0, 2.0, 3.0]), "result": "Paris, France"})).await;
    let hit = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "What is the capital of France?"}),
    )
    .await;
    assert_eq!(
        (hit["id"].clone(), hit["result"].clone()),
        (second["id"].clone(), json!("Paris, France"))
    );
    let e: Value = entry(&server, &key, "semantic", second["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            e["hits"].clone(),
            e["node_type"].clone(),
            e["required_role"].clone()
        ),
        (json!(1), json!("agent"), json!("write"))
    );
    assert!(e["last_hit_at"].is_string());
}

async fn neighbours_in_other_workspaces_do_not_hide_ours(backend: Backend) {
    let server = start(backend).await;
    let ours = server.workspace_key("ours", "write").await;
    let theirs = server.workspace_key("theirs", "write").await;
    let query = vector(&[1.0]);
    // Another workspace holds 200 entries nearer to the query than anything of ours.
    for i in 0..200 {
        let mut v = vector(&[1.0]);
        v[1 + i % (DIMS - 1)] = 0.01 + i as f32 * 0.0005;
        put_semantic(&server, &theirs, json!({"node_type": "agent", "prompt": format!("theirs {i}"), "embedding": v, "result": format!("theirs {i}")})).await;
    }
    let mine = put_semantic(&server, &ours, json!({"node_type": "agent", "prompt": "ours", "embedding": vector(&[1.0, 0.3]), "result": "ours"})).await;
    let hit = lookup_semantic(
        &server,
        &ours,
        json!({"node_type": "agent", "prompt": "q", "embedding": query, "threshold": 0.9}),
    )
    .await;
    assert_eq!(
        (hit["id"].clone(), hit["result"].clone()),
        (mine["id"].clone(), json!("ours")),
        "{hit}"
    );
    assert!(
        (hit["similarity"].as_f64().unwrap() - 0.9578).abs() < 0.001,
        "{hit}"
    );
    // And theirs answer them.
    let hit = lookup_semantic(
        &server,
        &theirs,
        json!({"node_type": "agent", "prompt": "q", "embedding": vector(&[1.0])}),
    )
    .await;
    assert!(
        hit["result"].as_str().unwrap().starts_with("theirs"),
        "{hit}"
    );
}

async fn entries_expire_and_the_purge_removes_them(backend: Backend) {
    let server = builder(backend)
        .env("PATCHBAY_CACHE__PURGE_INTERVAL_SECONDS", 1)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    let exact = put_exact(&server, &key, json!({"node_type": "database_query", "config": {}, "inputs": "q", "result": [1], "ttl_seconds": 1})).await;
    let semantic = put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0]), "result": 1, "ttl_seconds": 1})).await;
    let kept = put_exact(
        &server,
        &key,
        json!({"node_type": "database_query", "config": {}, "inputs": "kept", "result": [2]}),
    )
    .await;
    assert_eq!(
        lookup_exact(
            &server,
            &key,
            json!({"node_type": "database_query", "config": {}, "inputs": "q"})
        )
        .await["hit"],
        true
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired: never served, whether or not the purge has run yet.
    assert_eq!(
        lookup_exact(
            &server,
            &key,
            json!({"node_type": "database_query", "config": {}, "inputs": "q"})
        )
        .await,
        json!({"hit": false})
    );
    assert_eq!(
        lookup_semantic(
            &server,
            &key,
            json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0])})
        )
        .await,
        json!({"hit": false})
    );
    // The background purge deletes them.
    let mut gone = false;
    for _ in 0..50 {
        let exact_gone = entry(&server, &key, "exact", exact["id"].as_str().unwrap())
            .await
            .status()
            == 404;
        let semantic_gone = entry(&server, &key, "semantic", semantic["id"].as_str().unwrap())
            .await
            .status()
            == 404;
        if exact_gone && semantic_gone {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the purge removed the expired entries");
    assert_eq!(
        entry(&server, &key, "exact", kept["id"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let scrape = server.scrape().await;
    assert!(
        scrape.contains(r#"patchbay_cache_evictions_total{cache="exact",reason="expired"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"patchbay_cache_entries{cache="exact"} 1"#),
        "{scrape}"
    );
}

async fn the_least_recently_hit_entry_is_evicted(backend: Backend) {
    let server = builder(backend)
        .env("PATCHBAY_CACHE__MAX_ENTRIES_PER_WORKSPACE", 3)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    let other = server.workspace_key("other", "write").await;
    let q = |i: usize| json!({"node_type": "function", "config": {}, "inputs": i});
    let put = |i: usize| json!({"node_type": "function", "config": {}, "inputs": i, "result": i});
    for i in 1..=3 {
        put_exact(&server, &key, put(i)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another workspace's entries count against its own cap only.
    for i in 1..=3 {
        put_exact(&server, &other, put(i)).await;
    }
    assert_eq!(lookup_exact(&server, &key, q(1)).await["hit"], true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    put_exact(&server, &key, put(4)).await;
    assert_eq!(
        lookup_exact(&server, &key, q(2)).await,
        json!({"hit": false}),
        "2 was the least recently hit"
    );
    for i in [1, 3, 4] {
        assert_eq!(lookup_exact(&server, &key, q(i)).await["hit"], true, "{i}");
    }
    for i in 1..=3 {
        assert_eq!(
            lookup_exact(&server, &other, q(i)).await["hit"],
            true,
            "other {i}"
        );
    }
    // The semantic cache has its own cap.
    for i in 0..4 {
        put_semantic(&server, &key, json!({"node_type": "agent", "prompt": format!("p{i}"), "embedding": vector(&[1.0, i as f32]), "result": i})).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "p0", "embedding": vector(&[1.0])}),
    )
    .await;
    assert_eq!(first, json!({"hit": false}), "p0 was evicted");
    let scrape = server.scrape().await;
    assert!(
        scrape.contains(r#"patchbay_cache_evictions_total{cache="exact",reason="capacity"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"patchbay_cache_evictions_total{cache="semantic",reason="capacity"} 1"#),
        "{scrape}"
    );
}

async fn rejected_hits_are_never_served_again(backend: Backend) {
    let server = start(backend).await;
    let admin = server.workspace_key("w", "admin").await;
    let read = server.mint("w", "read").await;
    let q = json!({"node_type": "function", "config": {}, "inputs": "x"});
    let mut body = q.clone();
    body["result"] = json!("right");
    body["required_role"] = json!("read");
    put_exact(&server, &admin, body.clone()).await;
    body["result"] = json!("wrong");
    body["required_role"] = json!("admin");
    let wrong = put_exact(&server, &admin, body).await;
    let wrong_id = wrong["id"].as_str().unwrap();
    assert_eq!(
        lookup_exact(&server, &admin, q.clone()).await["result"],
        "wrong"
    );
    // Read keys cannot reject; nobody rejects what they could not be served.
    expect_problem(
        server
            .with_key(
                &read,
                Method::POST,
                &format!("/api/v1/cache/exact/{wrong_id}/reject"),
            )
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let res = server
        .with_key(
            &admin,
            Method::POST,
            &format!("/api/v1/cache/exact/{wrong_id}/reject"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        server
            .with_key(
                &admin,
                Method::POST,
                &format!("/api/v1/cache/exact/{wrong_id}/reject")
            )
            .send()
            .await
            .unwrap()
            .status(),
        204,
        "idempotent"
    );
    assert_eq!(
        lookup_exact(&server, &admin, q.clone()).await["result"],
        "right",
        "the next entry down answers"
    );
    let e: Value = entry(&server, &admin, "exact", wrong_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (e["rejected"].clone(), e["hits"].clone()),
        (json!(true), json!(1))
    );
    assert!(e["rejected_at"].is_string());

    let semantic = put_semantic(&server, &admin, json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0]), "result": "wrong"})).await;
    let id = semantic["id"].as_str().unwrap();
    assert_eq!(
        server
            .with_key(
                &admin,
                Method::POST,
                &format!("/api/v1/cache/semantic/{id}/reject")
            )
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        lookup_semantic(
            &server,
            &admin,
            json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0])})
        )
        .await,
        json!({"hit": false})
    );
    assert_eq!(
        lookup_semantic(
            &server,
            &admin,
            json!({"node_type": "agent", "prompt": "q", "embedding": vector(&[1.0])})
        )
        .await,
        json!({"hit": false})
    );
    expect_problem(
        server
            .with_key(&admin, Method::POST, "/api/v1/cache/nope/x/reject")
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let scrape = server.scrape().await;
    assert!(
        scrape.contains(r#"patchbay_cache_rejections_total{cache="exact"} 1"#),
        "{scrape}"
    );
}

async fn the_deny_list_refuses_personal_data_by_pattern_name(backend: Backend) {
    let server = start(backend).await;
    let key = server.workspace_key("w", "write").await;
    let cases = [
        (
            "/api/v1/cache/exact",
            Method::PUT,
            json!({"node_type": "function", "config": {}, "inputs": 1, "result": {"to": "jane.doe@example.com"}}),
            "email",
            "result",
        ),
        (
            "/api/v1/cache/exact",
            Method::PUT,
            json!({"node_type": "function", "config": {}, "inputs": 1, "result": ["4111 1111 1111 1111"]}),
            "card_number",
            "result",
        ),
        (
            "/api/v1/cache/semantic",
            Method::POST,
            json!({"node_type": "agent", "prompt": "ok", "embedding": vector(&[1.0]), "result": "SSN 078-05-1120"}),
            "us_ssn",
            "result",
        ),
        (
            "/api/v1/cache/semantic",
            Method::POST,
            json!({"node_type": "agent", "prompt": "mail bob@example.org", "embedding": vector(&[1.0]), "result": "ok"}),
            "email",
            "prompt",
        ),
    ];
    for (path, method, body, pattern, field) in cases {
        let problem = expect_problem(
            server
                .with_key(&key, method, path)
                .json(&body)
                .send()
                .await
                .unwrap(),
            422,
            "refused-pii",
        )
        .await;
        assert_eq!(
            (problem["pattern"].clone(), problem["field"].clone()),
            (json!(pattern), json!(field))
        );
        let text = problem.to_string();
        assert!(
            !text.contains("jane.doe") && !text.contains("4111") && !text.contains("078-05"),
            "the match is never echoed: {text}"
        );
    }
    // Numbers that merely look long are fine.
    put_exact(&server, &key, json!({"node_type": "function", "config": {}, "inputs": 2, "result": {"ts": 1_700_000_000_000u64}})).await;
    let scrape = server.scrape().await;
    assert!(scrape.contains(r#"patchbay_cache_stores_total{cache="exact",node_type="function",outcome="refused_pii"} 2"#), "{scrape}");

    // The list is configurable.
    let custom = builder(backend)
        .env(
            "PATCHBAY_CACHE__DENY_LIST",
            r#"[{name = "ticket", pattern = "TICKET-[0-9]+"}]"#,
        )
        .start()
        .await;
    let key = custom.workspace_key("w", "write").await;
    put_exact(&custom, &key, json!({"node_type": "function", "config": {}, "inputs": 1, "result": "jane.doe@example.com"})).await;
    let res = custom.with_key(&key, Method::PUT, "/api/v1/cache/exact").json(&json!({"node_type": "function", "config": {}, "inputs": 2, "result": "see TICKET-123"})).send().await.unwrap();
    assert_eq!(
        expect_problem(res, 422, "refused-pii").await["pattern"],
        "ticket"
    );
}

async fn batch_lookups_answer_in_order(backend: Backend) {
    let server = builder(backend)
        .env("PATCHBAY_CACHE__MAX_BATCH", 5)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    for i in [1, 3] {
        put_exact(
            &server,
            &key,
            json!({"node_type": "pure", "config": {}, "inputs": i, "result": i * 10}),
        )
        .await;
    }
    let queries: Vec<Value> = (1..=4)
        .map(|i| json!({"node_type": "pure", "config": {}, "inputs": i}))
        .collect();
    let answer = json_ok(
        server
            .with_key(&key, Method::POST, "/api/v1/cache/exact/lookup/batch")
            .json(&json!({"queries": queries}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        results.iter().map(|r| r["hit"].clone()).collect::<Vec<_>>(),
        [json!(true), json!(false), json!(true), json!(false)]
    );
    assert_eq!(
        (results[0]["result"].clone(), results[2]["result"].clone()),
        (json!(10), json!(30))
    );
    let too_many: Vec<Value> = (0..6)
        .map(|i| json!({"node_type": "pure", "config": {}, "inputs": i}))
        .collect();
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cache/exact/lookup/batch")
        .json(&json!({"queries": too_many}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_problem(res, 400, "too-many-queries").await["max"], 5);

    put_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "a", "embedding": vector(&[1.0]), "result": "A"}),
    )
    .await;
    put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "b", "embedding": vector(&[0.0, 1.0]), "result": "B"})).await;
    let queries = json!({"queries": [
        {"node_type": "agent", "prompt": "b"},
        {"node_type": "agent", "prompt": "near a", "embedding": vector(&[1.0, 0.1])},
        {"node_type": "agent", "prompt": "nowhere", "embedding": vector(&[0.0, 0.0, 1.0])},
    ]});
    let answer = json_ok(
        server
            .with_key(&key, Method::POST, "/api/v1/cache/semantic/lookup/batch")
            .json(&queries)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        (results[0]["result"].clone(), results[0]["matched"].clone()),
        (json!("B"), json!("prompt"))
    );
    assert_eq!(
        (results[1]["result"].clone(), results[1]["matched"].clone()),
        (json!("A"), json!("embedding"))
    );
    assert_eq!(results[2], json!({"hit": false}));
    // One bad query fails the batch before anything is answered.
    let bad = json!({"queries": [{"node_type": "agent", "prompt": "a"}, {"node_type": "agent", "prompt": "x", "embedding": [1.0]}]});
    expect_problem(
        server
            .with_key(&key, Method::POST, "/api/v1/cache/semantic/lookup/batch")
            .json(&bad)
            .send()
            .await
            .unwrap(),
        422,
        "wrong-dimension",
    )
    .await;
}

async fn entries_are_deleted_by_id_node_type_or_all(backend: Backend) {
    let server = start(backend).await;
    let admin = server.workspace_key("w", "admin").await;
    let write = server.mint("w", "write").await;
    let other = server.workspace_key("other", "admin").await;
    let mut ids = Vec::new();
    for (i, node_type) in ["function", "function", "http_request"].iter().enumerate() {
        ids.push(
            put_exact(
                &server,
                &write,
                json!({"node_type": node_type, "config": {}, "inputs": i, "result": i}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    put_exact(
        &server,
        &other,
        json!({"node_type": "function", "config": {}, "inputs": 0, "result": 0}),
    )
    .await;
    assert_eq!(
        server
            .with_key(
                &write,
                Method::DELETE,
                &format!("/api/v1/cache/exact/{}", ids[0])
            )
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_problem(
        server
            .with_key(
                &write,
                Method::DELETE,
                &format!("/api/v1/cache/exact/{}", ids[0]),
            )
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    // Bulk deletes need an admin key.
    expect_problem(
        server
            .with_key(&write, Method::DELETE, "/api/v1/cache/exact")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let deleted = json_ok(
        server
            .with_key(
                &admin,
                Method::DELETE,
                "/api/v1/cache/exact?node_type=http_request",
            )
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(deleted, json!({"deleted": 1}));
    let deleted = json_ok(
        server
            .with_key(&admin, Method::DELETE, "/api/v1/cache/exact")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(deleted, json!({"deleted": 1}));
    // The other workspace keeps its entry.
    assert_eq!(
        lookup_exact(
            &server,
            &other,
            json!({"node_type": "function", "config": {}, "inputs": 0})
        )
        .await["hit"],
        true
    );
    put_semantic(
        &server,
        &write,
        json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0]), "result": 1}),
    )
    .await;
    let deleted = json_ok(
        server
            .with_key(
                &admin,
                Method::DELETE,
                "/api/v1/cache/semantic?node_type=agent",
            )
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(deleted, json!({"deleted": 1}));
}

/// Each request's Authorization header and JSON body.
type Recorded = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A small OpenAI-compatible embeddings server: each word adds 1 to the component its FNV hash
/// picks, so prompts sharing words are similar. Answers `dims` numbers and records requests.
struct FakeEmbedder {
    url: String,
    requests: Recorded,
}

fn embed_text(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dims];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        v[(hash % dims as u64) as usize] += 1.0;
    }
    v
}

async fn fake_embedder(dims: usize) -> FakeEmbedder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..at]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        break (at + 4, length);
                    }
                };
                while buffer.len() < head_end + length {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                let auth = head.lines().find_map(|l| {
                    l.to_lowercase()
                        .starts_with("authorization:")
                        .then(|| l[14..].trim().to_string())
                });
                let request: Value = serde_json::from_slice(&buffer[head_end..head_end + length])
                    .unwrap_or(Value::Null);
                let ok = head.starts_with("POST /v1/embeddings ");
                seen.lock().unwrap().push((auth, request.clone()));
                let inputs: Vec<String> = match &request["input"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().unwrap_or_default().to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                // Answer in reverse order with indexes, as a server may.
                let data: Vec<Value> = inputs.iter().enumerate().rev().map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": embed_text(text, dims)})).collect();
                let body =
                    json!({"object": "list", "data": data, "model": request["model"]}).to_string();
                let status = if ok { "200 OK" } else { "404 Not Found" };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    FakeEmbedder { url, requests }
}

async fn embeddings_come_from_an_openai_compatible_embedder(backend: Backend) {
    let embedder = fake_embedder(DIMS).await;
    let server = builder(backend)
        .env(
            "PATCHBAY_CACHE__EMBEDDER__URL",
            format!("{}/", embedder.url),
        )
        .env("PATCHBAY_CACHE__EMBEDDER__MODEL", "test-embed")
        .env("PATCHBAY_CACHE__EMBEDDER__API_KEY", "embed-secret")
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    put_semantic(&server, &key, json!({"node_type": "agent", "prompt": "What is the capital of France?", "result": "Paris"})).await;
    {
        let requests = embedder.requests.lock().unwrap();
        let (auth, body) = requests.last().unwrap();
        assert_eq!(auth.as_deref(), Some("Bearer embed-secret"));
        assert_eq!(
            body,
            &json!({"model": "test-embed", "input": ["What is the capital of France?"]})
        );
    }
    // A paraphrase embeds alike; an unrelated prompt does not.
    let hit = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "what is the capital of france"}),
    )
    .await;
    assert_eq!(
        (hit["result"].clone(), hit["matched"].clone()),
        (json!("Paris"), json!("embedding")),
        "{hit}"
    );
    assert_eq!(hit["similarity"], 1.0);
    let miss = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "Tell me a joke about penguins", "threshold": 0.9}),
    )
    .await;
    assert_eq!(miss, json!({"hit": false}));
    // The identical prompt needs no embedder call; a batch embeds all its misses in one call.
    let before = embedder.requests.lock().unwrap().len();
    lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "What is the capital of France?"}),
    )
    .await;
    assert_eq!(embedder.requests.lock().unwrap().len(), before);
    let batch = json!({"queries": [
        {"node_type": "agent", "prompt": "What is the capital of France?"},
        {"node_type": "agent", "prompt": "the capital of France, what is it"},
        {"node_type": "agent", "prompt": "penguins"},
    ]});
    let answer = json_ok(
        server
            .with_key(&key, Method::POST, "/api/v1/cache/semantic/lookup/batch")
            .json(&batch)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let hits: Vec<Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hit"].clone())
        .collect();
    assert_eq!(hits, [json!(true), json!(true), json!(false)]);
    let requests = embedder.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), before + 1);
    assert_eq!(
        requests.last().unwrap().1["input"],
        json!(["the capital of France, what is it", "penguins"])
    );
    // A given embedding is used as is, without the embedder.
    lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "x", "embedding": vector(&[1.0])}),
    )
    .await;
    assert_eq!(embedder.requests.lock().unwrap().len(), before + 1);

    // An embedder answering the wrong dimension, or not answering, is our failure: 502.
    let wrong = fake_embedder(DIMS + 1).await;
    let misconfigured = builder(backend)
        .env("PATCHBAY_CACHE__EMBEDDER__URL", &wrong.url)
        .start()
        .await;
    let key = misconfigured.workspace_key("w", "write").await;
    let res = misconfigured
        .with_key(&key, Method::POST, "/api/v1/cache/semantic")
        .json(&json!({"node_type": "agent", "prompt": "p", "result": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 502, "embedder-failed").await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = builder(backend)
        .env("PATCHBAY_CACHE__EMBEDDER__URL", dead_url)
        .env("PATCHBAY_CACHE__EMBEDDER__TIMEOUT_MS", 2000)
        .start()
        .await;
    let key = down.workspace_key("w", "write").await;
    let res = down
        .with_key(&key, Method::POST, "/api/v1/cache/semantic/lookup")
        .json(&json!({"node_type": "agent", "prompt": "p"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 502, "embedder-failed").await;
    let scrape = down.scrape().await;
    assert!(
        scrape.contains(r#"patchbay_cache_embedder_requests_total{outcome="failure"} 1"#),
        "{scrape}"
    );
}

async fn a_changed_dimension_needs_an_explicit_reindex(backend: Backend) {
    let server = start(backend).await;
    let key = server.workspace_key("w", "write").await;
    put_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[1.0]), "result": 1}),
    )
    .await;
    let refused = Server::builder(backend)
        .sharing(&server)
        .env("PATCHBAY_CACHE__SEMANTIC__DIMENSIONS", 16);
    let reindexed = Server::builder(backend)
        .sharing(&server)
        .env("PATCHBAY_CACHE__SEMANTIC__DIMENSIONS", 16);
    let (data_dir, database_url) = (server.data_dir.clone(), server.database_url.clone());
    drop(server);

    let logs = refused
        .try_start()
        .await
        .err()
        .expect("a changed dimension is refused");
    assert!(
        logs.contains("created for 8-dimension")
            && logs.contains("patchbay cache reindex --dimensions 16"),
        "{logs}"
    );

    // The explicit re-index drops the semantic entries and takes the new dimension.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"));
    cli.args(["cache", "reindex", "--dimensions", "16"])
        .env("PATCHBAY_DATA_DIR", data_dir.path())
        .env_remove("PATCHBAY_DATABASE_URL");
    if let Some(url) = &database_url {
        cli.env("PATCHBAY_DATABASE_URL", url);
    }
    let out = cli.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 entries dropped"), "{stderr}");

    let server = reindexed.start().await;
    let key = server.mint("w", "write").await;
    let mut wide = vec![0.0; 16];
    wide[15] = 1.0;
    put_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "wide", "embedding": wide, "result": 2}),
    )
    .await;
    assert_eq!(
        lookup_semantic(
            &server,
            &key,
            json!({"node_type": "agent", "prompt": "wide"})
        )
        .await["result"],
        2
    );
    let mut first = vec![0.0; 16];
    first[0] = 1.0;
    let gone = lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "p", "embedding": first, "threshold": 0.5}),
    )
    .await;
    assert_eq!(gone, json!({"hit": false}), "the old entries are gone");
}

#[tokio::test]
async fn cache_metrics_label_unconfigured_node_types_as_other() {
    let server = start(Backend::Sqlite).await;
    let key = server.workspace_key("w", "write").await;
    for node_type in ["function", "my-custom-node", "another-one"] {
        put_exact(&server, &key, json!({"node_type": node_type, "config": {}, "inputs": 1, "result": 1, "execution_ms": 2600})).await;
        lookup_exact(
            &server,
            &key,
            json!({"node_type": node_type, "config": {}, "inputs": 1}),
        )
        .await;
        lookup_exact(
            &server,
            &key,
            json!({"node_type": node_type, "config": {}, "inputs": 2}),
        )
        .await;
    }
    put_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "p", "embedding": vector(&[3.0, 4.0]), "result": 1}),
    )
    .await;
    lookup_semantic(
        &server,
        &key,
        json!({"node_type": "agent", "prompt": "q", "embedding": vector(&[1.0]), "threshold": 0.5}),
    )
    .await;
    let scrape = server.scrape().await;
    for line in [
        r#"patchbay_cache_lookups_total{cache="exact",node_type="function",outcome="hit"} 1"#,
        r#"patchbay_cache_lookups_total{cache="exact",node_type="other",outcome="hit"} 2"#,
        r#"patchbay_cache_lookups_total{cache="exact",node_type="other",outcome="miss"} 2"#,
        r#"patchbay_cache_lookups_total{cache="semantic",node_type="agent",outcome="hit"} 1"#,
        r#"patchbay_cache_stores_total{cache="exact",node_type="other",outcome="stored"} 2"#,
        r#"patchbay_cache_seconds_saved_total{cache="exact",node_type="other"} 5"#,
        r#"patchbay_cache_hit_similarity_bucket{le="0.6"} 1"#,
    ] {
        assert!(scrape.contains(line), "{line} missing from\n{scrape}");
    }
    assert!(
        !scrape.contains("my-custom-node"),
        "unconfigured node types are not labels"
    );
}

/// SQLite answers semantic lookups from its in-memory vector index, kept in step with stores
/// and rejections; over `cache.semantic.sqlite_index_max_bytes` it scans the rows instead,
/// with the same answers, and says so in the metrics.
#[tokio::test]
async fn sqlite_searches_its_in_memory_index_and_scans_over_the_budget() {
    for (budget, outcome, fallback) in [
        (None, "index", None),
        (Some(1), "scan", Some("over_budget")),
        (Some(0), "scan", Some("disabled")),
    ] {
        let mut builder = builder(Backend::Sqlite);
        if let Some(bytes) = budget {
            builder = builder.env("PATCHBAY_CACHE__SEMANTIC__SQLITE_INDEX_MAX_BYTES", bytes);
        }
        let server = builder.start().await;
        let key = server.workspace_key("w", "admin").await;
        let near = put_semantic(
            &server,
            &key,
            json!({"node_type": "agent", "prompt": "near", "embedding": vector(&[3.0, 4.0]), "result": "near"}),
        )
        .await;
        put_semantic(
            &server,
            &key,
            json!({"node_type": "agent", "prompt": "far", "embedding": vector(&[0.0, 1.0]), "result": "far"}),
        )
        .await;
        let query = json!({"node_type": "agent", "prompt": "q", "embedding": vector(&[1.0]), "threshold": 0.5});
        let hit = lookup_semantic(&server, &key, query.clone()).await;
        assert_eq!(
            (&hit["hit"], &hit["result"], &hit["similarity"]),
            (&json!(true), &json!("near"), &json!(0.6)),
            "{budget:?}"
        );
        let id = near["id"].as_str().unwrap();
        let res = server
            .with_key(
                &key,
                Method::POST,
                &format!("/api/v1/cache/semantic/{id}/reject"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            lookup_semantic(&server, &key, query).await,
            json!({"hit": false}),
            "the rejected entry is gone from the index too ({budget:?}); far is below 0.5"
        );
        let scrape = server.scrape().await;
        let searches =
            format!(r#"patchbay_cache_vector_index_searches_total{{outcome="{outcome}"}} 2"#);
        assert!(
            scrape.contains(&searches),
            "{searches} missing from\n{scrape}"
        );
        if let Some(reason) = fallback {
            let line =
                format!(r#"patchbay_cache_vector_index_fallbacks_total{{reason="{reason}"}} 2"#);
            assert!(scrape.contains(&line), "{line} missing from\n{scrape}");
        } else {
            assert!(!scrape.contains("patchbay_cache_vector_index_fallbacks_total{"));
            assert!(scrape.contains("patchbay_cache_vector_index_bytes "));
        }
    }
}
