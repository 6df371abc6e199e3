//! Health, readiness, the OpenAPI document, request ids, problem bodies, configuration.

use reqwest::Method;
use serde_json::Value;

use crate::on_both_backends;
use crate::support::{Backend, Server, expect_problem};

on_both_backends!(
    health_and_ready_answer,
    unknown_routes_and_methods_are_problems
);

async fn health_and_ready_answer(backend: Backend) {
    let server = Server::start(backend).await;
    let res = server.anon(Method::GET, "/health").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = server.anon(Method::GET, "/ready").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["blobs"], "ok");
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let server = Server::start(backend).await;
    expect_problem(
        server.anon(Method::GET, "/nope").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        server
            .admin(Method::GET, "/api/v1/nope")
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let res = server
        .admin(Method::PATCH, "/api/v1/workspaces")
        .send()
        .await
        .unwrap();
    let allow = res
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    expect_problem(res, 405, "method-not-allowed").await;
    let allow = allow.expect("405 carries Allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let res = server
        .admin(Method::POST, "/api/v1/workspaces")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-json").await;
}

#[tokio::test]
async fn ready_reports_a_broken_blob_store() {
    // A blob directory that is a file: the local blob store cannot be created, so the server
    // refuses to start with a message; an S3 endpoint that does not answer makes /ready 503.
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_BLOB_URL", "s3://nowhere")
        .env("PATCHBAY_BLOB__S3_ENDPOINT", "http://127.0.0.1:9")
        .env("PATCHBAY_BLOB__S3_ALLOW_HTTP", "true")
        .env("PATCHBAY_BLOB__S3_ACCESS_KEY_ID", "x")
        .env("PATCHBAY_BLOB__S3_SECRET_ACCESS_KEY", "y")
        .start()
        .await;
    let res = server.anon(Method::GET, "/ready").send().await.unwrap();
    let body = expect_problem(res, 503, "not-ready").await;
    assert_eq!(body["checks"]["database"], "ok");
    assert_ne!(body["checks"]["blobs"], "ok");
    assert!(body["detail"].as_str().unwrap().contains("blobs"));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = Server::start(Backend::Sqlite).await;
    let res = server
        .anon(Method::GET, "/health")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = server.anon(Method::GET, "/health").send().await.unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.len() >= 16, "{generated}");
    let res = server
        .anon(Method::GET, "/health")
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_ne!(
        res.headers()["x-request-id"].to_str().unwrap(),
        "x".repeat(500)
    );
    assert!(
        server.logs().contains("abc-123"),
        "the request id reaches the log"
    );
}

#[tokio::test]
async fn openapi_covers_every_endpoint() {
    let server = Server::start(Backend::Sqlite).await;
    let doc: Value = server
        .anon(Method::GET, "/api/v1/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/workspaces"),
        ("get", "/api/v1/workspaces"),
        ("delete", "/api/v1/workspaces/{name}"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys"),
        ("delete", "/api/v1/keys/{id}"),
        ("post", "/api/v1/cas"),
        ("post", "/api/v1/cas/missing"),
        ("put", "/api/v1/cas/{digest}"),
        ("get", "/api/v1/cas/{digest}"),
        ("post", "/api/v1/plugins"),
        ("get", "/api/v1/plugins"),
        ("get", "/api/v1/plugins/{name}"),
        ("delete", "/api/v1/plugins/{name}"),
        ("post", "/api/v1/plugins/{name}/rollback"),
        ("post", "/api/v1/workflows"),
        ("get", "/api/v1/workflows"),
        ("get", "/api/v1/workflows/{id}"),
        ("delete", "/api/v1/workflows/{id}"),
        ("get", "/api/v1/workflows/{id}/document"),
        ("get", "/api/v1/workflows/{id}/patches"),
        ("post", "/api/v1/workflows/{id}/patches"),
        ("get", "/api/v1/workflows/{id}/events"),
        ("put", "/api/v1/cache/exact"),
        ("delete", "/api/v1/cache/exact"),
        ("post", "/api/v1/cache/exact/lookup"),
        ("post", "/api/v1/cache/exact/lookup/batch"),
        ("post", "/api/v1/cache/semantic"),
        ("delete", "/api/v1/cache/semantic"),
        ("post", "/api/v1/cache/semantic/lookup"),
        ("post", "/api/v1/cache/semantic/lookup/batch"),
        ("get", "/api/v1/cache/{cache}/{id}"),
        ("delete", "/api/v1/cache/{cache}/{id}"),
        ("post", "/api/v1/cache/{cache}/{id}/reject"),
        ("get", "/"),
        ("get", "/ui/{path}"),
    ];
    for (method, path) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "every documented operation is listed here too"
    );
}

#[tokio::test]
async fn invalid_configuration_is_refused_naming_the_key() {
    for (key, value, expect) in [
        ("PATCHBAY_LISTEN", "not-an-address", "listen"),
        ("PATCHBAY_LOG__SAMPLE_RATE", "garbage", "sample_rate"),
        ("PATCHBAY_LOG__SAMPLE_RATE", "-1", "log.sample_rate"),
        ("PATCHBAY_HTTP__WORKERS", "many", "workers"),
        ("PATCHBAY_DATABASE_URL", "mysql://x", "database_url"),
    ] {
        let logs = Server::builder(Backend::Sqlite)
            .env(key, value)
            .try_start()
            .await
            .err()
            .unwrap_or_else(|| panic!("{key}={value} started"));
        let lower = logs.to_lowercase();
        assert!(
            lower.contains(expect) && lower.contains(&value.to_lowercase()),
            "{key}={value}: {logs}"
        );
    }
}

#[tokio::test]
async fn sample_rate_zero_still_logs_startup_and_errors() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_LOG__SAMPLE_RATE", "0")
        .start()
        .await;
    for _ in 0..20 {
        server.anon(Method::GET, "/health").send().await.unwrap();
    }
    assert!(
        !server.logs().contains("request completed"),
        "info logs are sampled away at rate 0"
    );
    let json = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_LOG__FORMAT", "json")
        .start()
        .await;
    json.anon(Method::GET, "/health").send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let line = json
        .logs()
        .lines()
        .find(|l| l.contains("request completed"))
        .map(str::to_string)
        .expect("an access log line");
    let parsed: Value = serde_json::from_str(&line).expect("JSON log lines");
    assert_eq!(parsed["level"], "INFO");
}

#[tokio::test]
async fn config_show_masks_secrets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["config", "show"])
        .env("PATCHBAY_ADMIN_TOKEN", "super-secret")
        .env("PATCHBAY_DATABASE_URL", "postgres://u:hunter2@localhost/db")
        .env("PATCHBAY_CACHE_IGNORED", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["admin_token"], "***");
    assert!(
        !text.contains("hunter2") && !text.contains("super-secret"),
        "{text}"
    );
    assert_eq!(shown["http"]["header_read_timeout_ms"], 10_000);
}
