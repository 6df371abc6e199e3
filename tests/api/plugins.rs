//! The plugin host end to end: upload real wasi:http components over HTTP and prove routing,
//! backpressure, containment, hot swap, rollback, restarts and multi-node sync.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::on_both_backends;
use crate::support::{Backend, Server, expect_problem};

/// Components built by `plugins/build.sh` (cargo xtask test runs it first).
fn dist() -> PathBuf {
    let dir = std::env::var("PATCHBAY_TEST_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/dist")));
    assert!(
        dir.join("hello/hello.wasm").is_file(),
        "{} has no built plugins: run plugins/build.sh (cargo xtask test does)",
        dir.display()
    );
    dir
}

fn component(name: &str) -> Vec<u8> {
    std::fs::read(dist().join(name).join(format!("{name}.wasm"))).unwrap()
}

fn shipped_manifest(name: &str) -> String {
    std::fs::read_to_string(dist().join(name).join("plugin.toml")).unwrap()
}

async fn upload(server: &Server, manifest: &str, wasm: Vec<u8>) -> reqwest::Response {
    let form = Form::new()
        .text("manifest", manifest.to_string())
        .part("component", Part::bytes(wasm).file_name("plugin.wasm"));
    server
        .admin(Method::POST, "/api/v1/plugins")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn upload_ok(server: &Server, manifest: &str, wasm: Vec<u8>) -> Value {
    let res = upload(server, manifest, wasm).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// A manifest for `component`'s code under another name, route and limits.
fn manifest(name: &str, version: &str, path: &str, methods: &str, limits: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\n[limits]\n{limits}\n[[routes]]\npath = \"{path}\"\nmethods = [{methods}]\n"
    )
}

on_both_backends!(uploads_route_and_swap_plugins, plugins_reach_other_nodes);

async fn uploads_route_and_swap_plugins(backend: Backend) {
    let server = Server::start(backend).await;
    let hello = upload_ok(&server, &shipped_manifest("hello"), component("hello")).await;
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["routes"][0]["path"], "/hello/{name}");
    let res = server
        .anon(Method::GET, "/hello/world")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "Hello, world!");

    // Static segments win over parameters: another plugin takes /hello/static.
    upload_ok(
        &server,
        &manifest("static-env", "1.0.0", "/hello/static", "\"GET\"", ""),
        component("env"),
    )
    .await;
    let env: Value = server
        .anon(Method::GET, "/hello/static")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(env.is_object(), "the env plugin answered: {env}");
    assert_eq!(
        server
            .anon(Method::GET, "/hello/bob")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, bob!"
    );

    // Wrong method: 405 with Allow.
    let res = server
        .anon(Method::POST, "/hello/bob")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET");
    let problem = expect_problem(res, 405, "method-not-allowed").await;
    assert_eq!(problem["plugin"], "hello");

    // Conflicts: with another plugin's route, with the server's own paths.
    let res = upload(
        &server,
        &manifest("clash", "1.0.0", "/hello/{who}", "\"GET\"", ""),
        component("hello"),
    )
    .await;
    let problem = expect_problem(res, 409, "route-conflict").await;
    assert_eq!(problem["plugin"], "hello");
    let res = upload(
        &server,
        &manifest("clash", "1.0.0", "/api/v1/mine", "\"GET\"", ""),
        component("hello"),
    )
    .await;
    assert_eq!(
        expect_problem(res, 409, "route-conflict").await["conflicts_with"],
        "/api"
    );
    let res = upload(
        &server,
        &manifest("bad name", "1.0.0", "/x", "\"GET\"", ""),
        component("hello"),
    )
    .await;
    assert_eq!(
        expect_problem(res, 400, "invalid-manifest").await["field"],
        "name"
    );
    let res = upload(
        &server,
        &manifest("notwasm", "1.0.0", "/notwasm", "\"GET\"", ""),
        b"not wasm at all".to_vec(),
    )
    .await;
    expect_problem(res, 400, "invalid-component").await;
    // A core module, not a component (the 8-byte wasm header of an empty module).
    let res = upload(
        &server,
        &manifest("core", "1.0.0", "/core", "\"GET\"", ""),
        b"\0asm\x01\0\0\0".to_vec(),
    )
    .await;
    let problem = expect_problem(res, 400, "invalid-component").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("component"),
        "{problem}"
    );
    // Only system keys upload.
    let key = server.workspace_key("w", "admin").await;
    let form = Form::new()
        .text("manifest", shipped_manifest("hello"))
        .part("component", Part::bytes(component("hello")));
    let res = server
        .with_key(&key, Method::POST, "/api/v1/plugins")
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    // Hot swap under load: no request fails while v2 replaces v1.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (client, url, stop) = (
            server.client.clone(),
            format!("{}/hello/load", server.url),
            std::sync::Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status();
                        match r.text().await {
                            Ok(text) if status == 200 && text == "Hello, load!" => ok += 1,
                            Ok(text) => failed.push(format!("{status}: {text}")),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = shipped_manifest("hello").replace("version = \"1.0.0\"", "version = \"2.0.0\"");
    assert_eq!(
        upload_ok(&server, &v2, component("hello")).await["version"],
        "2.0.0"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(failed.is_empty(), "failed during the swap: {failed:?}");
    assert!(ok > 50, "{ok}");

    // Rollback to 1.0.0, then delete.
    let detail: Value = server
        .admin(Method::GET, "/api/v1/plugins/hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["version"], "2.0.0");
    assert_eq!(detail["versions"].as_array().unwrap().len(), 2);
    assert!(detail["routes"][0]["pool"]["capacity"].as_u64().unwrap() > 0);
    let rolled: Value = server
        .admin(Method::POST, "/api/v1/plugins/hello/rollback")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rolled["version"], "1.0.0");
    let listed: Value = server
        .with_key(&key, Method::GET, "/api/v1/plugins")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        server
            .admin(Method::DELETE, "/api/v1/plugins/hello")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_problem(
        server.anon(Method::GET, "/hello/bob").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        server
            .admin(Method::DELETE, "/api/v1/plugins/hello")
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    // The static route of the other plugin still serves.
    assert_eq!(
        server
            .anon(Method::GET, "/hello/static")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A restart loads from the store without compiling anything.
    let restarted = server.restart().await;
    assert_eq!(
        restarted
            .anon(Method::GET, "/hello/static")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let scrape = restarted.scrape().await;
    assert!(
        scrape
            .lines()
            .any(|l| l == "patchbay_plugin_compiles_total 0"),
        "{}",
        scrape
            .lines()
            .filter(|l| l.contains("compiles"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn plugins_reach_other_nodes(backend: Backend) {
    let first = Server::builder(backend)
        .env("PATCHBAY_PLUGINS__SYNC_INTERVAL_MS", 200)
        .start()
        .await;
    let second = Server::builder(backend)
        .env("PATCHBAY_PLUGINS__SYNC_INTERVAL_MS", 200)
        .sharing(&first)
        .start()
        .await;
    expect_problem(
        second.anon(Method::GET, "/hello/x").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    upload_ok(&first, &shipped_manifest("hello"), component("hello")).await;
    let mut served = false;
    for _ in 0..50 {
        let res = second.anon(Method::GET, "/hello/x").send().await.unwrap();
        if res.status() == 200 {
            assert_eq!(res.text().await.unwrap(), "Hello, x!");
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the second node never served the plugin uploaded on the first"
    );
}

#[tokio::test]
async fn failures_cost_only_their_own_request() {
    let server = Server::start(Backend::Sqlite).await;
    upload_ok(&server, &shipped_manifest("hello"), component("hello")).await;
    upload_ok(&server, &shipped_manifest("trap"), component("trap")).await;
    upload_ok(
        &server,
        &manifest(
            "spin",
            "1.0.0",
            "/spin",
            "\"GET\"",
            "timeout_ms = 300\nblock_timeout_ms = 50",
        ),
        component("spin"),
    )
    .await;
    upload_ok(
        &server,
        &manifest("oom", "1.0.0", "/oom", "\"GET\"", "memory_mb = 16"),
        component("oom"),
    )
    .await;
    upload_ok(
        &server,
        &manifest(
            "slow",
            "1.0.0",
            "/slow",
            "\"GET\"",
            "timeout_ms = 400\nblock_timeout_ms = 50",
        ),
        component("slow"),
    )
    .await;
    let cases = [
        ("/trap", 500, "plugin-trap"),
        ("/trap?kind=unreachable", 500, "plugin-trap"),
        ("/trap?kind=stack", 500, ""),
        ("/trap?kind=no-response", 502, "plugin-bad-response"),
        ("/spin", 504, "plugin-timeout"),
        ("/oom", 500, "plugin-memory"),
        ("/slow?ms=2000", 504, "plugin-timeout"),
    ];
    for (path, status, kind) in cases {
        let started = std::time::Instant::now();
        let res = server.anon(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        let body: Value = res.json().await.unwrap();
        if !kind.is_empty() {
            assert_eq!(
                body["type"],
                format!("urn:patchbay:problem:{kind}"),
                "{path}: {body}"
            );
        }
        assert!(
            body["plugin"].is_string(),
            "{path}: the problem names the plugin"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
        // A healthy request right after.
        let ok = server
            .anon(Method::GET, "/hello/after")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.text().await.unwrap(), "Hello, after!", "after {path}");
    }
    let scrape = server.scrape().await;
    for outcome in ["trap", "timeout", "memory", "bad_response", "ok"] {
        assert!(
            scrape.contains(&format!("outcome=\"{outcome}\"")),
            "outcome {outcome} counted"
        );
    }
    assert!(scrape.contains("patchbay_plugin_healthy{plugin=\"hello\"} 1"));
    assert!(
        scrape.lines().any(|l| l
            .starts_with("patchbay_plugin_instantiation_seconds_count{plugin=\"hello\"}")
            && !l.ends_with(" 0")),
        "instantiation timed"
    );
}

/// Fires `n` concurrent requests and counts answers by status.
async fn burst(server: &Server, path: &str, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let req = server.anon(Method::GET, path);
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn shed_and_block_backpressure_with_exact_counts() {
    let server = Server::start(Backend::Sqlite).await;
    let shed = manifest(
        "slow-shed",
        "1.0.0",
        "/slow-shed",
        "\"GET\"",
        "max_instances = 2\nqueue = 3\nbackpressure = \"shed\"\ntimeout_ms = 10000",
    );
    upload_ok(&server, &shed, component("slow")).await;
    let counts = burst(&server, "/slow-shed?ms=1500", 12).await;
    assert_eq!(
        counts.get(&200),
        Some(&5),
        "2 running + 3 queued: {counts:?}"
    );
    assert_eq!(counts.get(&429), Some(&7), "{counts:?}");

    let block = manifest(
        "slow-block",
        "1.0.0",
        "/slow-block",
        "\"GET\"",
        "max_instances = 1\nqueue = 1\nbackpressure = \"block\"\nblock_timeout_ms = 200\ntimeout_ms = 10000",
    );
    upload_ok(&server, &block, component("slow")).await;
    let counts = burst(&server, "/slow-block?ms=1500", 6).await;
    assert_eq!(
        counts.get(&200),
        Some(&2),
        "1 running + 1 queued: {counts:?}"
    );
    assert_eq!(counts.get(&503), Some(&4), "{counts:?}");
    let res = server
        .anon(Method::GET, "/slow-block?ms=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "capacity is back once the burst is over");
}

#[tokio::test]
async fn keyed_routes_schemas_and_streaming() {
    let server = Server::start(Backend::Sqlite).await;
    upload_ok(
        &server,
        &manifest("private", "1.0.0", "/private/{name}", "\"GET\"", "").replace(
            "methods = [\"GET\"]",
            "methods = [\"GET\"]\nauth = \"read\"",
        ),
        component("hello"),
    )
    .await;
    expect_problem(
        server.anon(Method::GET, "/private/x").send().await.unwrap(),
        401,
        "missing-auth",
    )
    .await;
    let key = server.workspace_key("w", "read").await;
    assert_eq!(
        server
            .with_key(&key, Method::GET, "/private/x")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, x!"
    );

    upload_ok(
        &server,
        &shipped_manifest("json-api"),
        component("json-api"),
    )
    .await;
    let res = server
        .anon(Method::POST, "/json/sum")
        .json(&serde_json::json!({"numbers": [1, 2, 3.5]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sum"], 6.5);
    let res = server
        .anon(Method::POST, "/json/sum")
        .json(&serde_json::json!({"numbers": "nope"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "schema-violation").await;
    assert_eq!(problem["plugin"], "json-api");
    expect_problem(
        server
            .anon(Method::POST, "/json/sum")
            .body("{oops")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-json",
    )
    .await;

    upload_ok(&server, &shipped_manifest("echo"), component("echo")).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let back = server
        .anon(Method::POST, "/echo")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back.len(), body.len());
    assert!(back.as_ref() == body.as_slice());

    upload_ok(&server, &shipped_manifest("big"), component("big")).await;
    let res = server
        .anon(Method::GET, "/big?bytes=5000000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-length"], "5000000");
    assert_eq!(res.bytes().await.unwrap().len(), 5_000_000);
}

#[tokio::test]
async fn the_plugins_directory_loads_at_start_and_skips_broken_plugins() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["hello", "env"] {
        let target = dir.path().join(name);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(
            dist().join(name).join(format!("{name}.wasm")),
            target.join(format!("{name}.wasm")),
        )
        .unwrap();
        std::fs::copy(
            dist().join(name).join("plugin.toml"),
            target.join("plugin.toml"),
        )
        .unwrap();
    }
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        manifest("broken", "1.0.0", "/broken", "\"GET\"", ""),
    )
    .unwrap();
    std::fs::write(broken.join("broken.wasm"), b"garbage").unwrap();
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_PLUGINS_DIR", dir.path().display())
        .start()
        .await;
    assert_eq!(
        server
            .anon(Method::GET, "/hello/dir")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, dir!"
    );
    let env: Value = server
        .anon(Method::GET, "/env")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["PATCHBAY_EXAMPLE"], "set in plugin.toml");
    expect_problem(
        server.anon(Method::GET, "/broken").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    assert!(
        server.logs().contains("broken"),
        "the broken plugin is reported"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.logs().contains("stdout") || server.logs().contains("env"),
        "guest output reaches the log"
    );
    let scrape = server.scrape().await;
    assert!(
        scrape.contains("patchbay_plugin_autoload_total{outcome=\"failed\"} 1"),
        "{scrape}"
    );
}

#[tokio::test]
async fn the_push_command_uploads_a_plugin_directory() {
    let server = Server::start(Backend::Sqlite).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["plugins", "push"])
        .arg(dist().join("hello"))
        .env("PATCHBAY_SERVER", &server.url)
        .env("PATCHBAY_KEY", &server.admin)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("hello 1.0.0 is live") && stdout.contains("/hello/{name}"),
        "{stdout}"
    );
    assert_eq!(
        server
            .anon(Method::GET, "/hello/cli")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, cli!"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["plugins", "push"])
        .arg(dist().join("hello"))
        .env("PATCHBAY_SERVER", &server.url)
        .env("PATCHBAY_KEY", "wrong")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
