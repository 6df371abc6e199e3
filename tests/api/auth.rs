//! API keys, roles, workspaces, isolation and rate limits.

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, Server, expect_problem};

on_both_backends!(
    credentials_are_checked_with_reasons,
    roles_and_workspaces_limit_key_management,
    expired_and_revoked_keys_stop_working,
    workspaces_are_managed_by_system_keys,
    lists_are_paginated,
);

async fn credentials_are_checked_with_reasons(backend: Backend) {
    let server = Server::start(backend).await;
    let res = server
        .anon(Method::GET, "/api/v1/workspaces")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("www-authenticate"));
    expect_problem(res, 401, "missing-auth").await;
    let res = server
        .anon(Method::GET, "/api/v1/workspaces")
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "invalid-auth-format").await;
    let res = server
        .with_key("wrong-token", Method::GET, "/api/v1/workspaces")
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "invalid-credentials").await;
    let fake = format!("pb_{}_{}", "0".repeat(16), "0".repeat(64));
    expect_problem(
        server
            .with_key(&fake, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap(),
        401,
        "invalid-credentials",
    )
    .await;
    assert_eq!(
        server
            .admin(Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Public endpoints never ask for a key.
    for path in ["/health", "/ready", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(
            server
                .anon(Method::GET, path)
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
}

async fn roles_and_workspaces_limit_key_management(backend: Backend) {
    let server = Server::start(backend).await;
    let a_admin = server.workspace_key("team-a", "admin").await;
    let a_read = server.mint("team-a", "read").await;
    server.workspace_key("team-b", "read").await;

    // A workspace admin mints keys for its own workspace, never system keys, never elsewhere.
    let res = server
        .with_key(&a_admin, Method::POST, "/api/v1/keys")
        .json(&json!({"role": "write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["workspace"], "team-a");
    assert!(created["key"].as_str().unwrap().starts_with("pb_"));
    let res = server
        .with_key(&a_admin, Method::POST, "/api/v1/keys")
        .json(&json!({"role": "read", "system": true}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = server
        .with_key(&a_admin, Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "team-b", "role": "read"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    // Read keys cannot manage keys at all.
    let res = server
        .with_key(&a_read, Method::POST, "/api/v1/keys")
        .json(&json!({"role": "read"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    expect_problem(
        server
            .with_key(&a_read, Method::GET, "/api/v1/keys")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Listing: the admin sees its workspace's keys only; the system key sees all.
    let mine: Value = server
        .with_key(&a_admin, Method::GET, "/api/v1/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|k| k["workspace"] == "team-a"
        && k.get("key").is_none()
        && k.get("secret_hash").is_none()));
    let res = server
        .with_key(&a_admin, Method::GET, "/api/v1/keys?workspace=team-b")
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    let all: Value = server
        .admin(Method::GET, "/api/v1/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["workspace"] == "team-b")
    );

    // Another workspace's key answers 404 to a workspace admin; system keys are out of reach.
    let b_keys: Value = server
        .admin(Method::GET, "/api/v1/keys?workspace=team-b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_id = b_keys["items"][0]["id"].as_str().unwrap().to_string();
    let res = server
        .with_key(&a_admin, Method::DELETE, &format!("/api/v1/keys/{b_id}"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    let res = server
        .with_key(&a_admin, Method::DELETE, "/api/v1/keys/bootstrap")
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    // Only system keys create workspaces.
    let res = server
        .with_key(&a_admin, Method::POST, "/api/v1/workspaces")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
}

async fn expired_and_revoked_keys_stop_working(backend: Backend) {
    let server = Server::start(backend).await;
    server.workspace_key("w", "read").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = server
        .admin(Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "w", "role": "read", "expires_at": soon}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let expiring: Value = res.json().await.unwrap();
    let expiring = expiring["key"].as_str().unwrap().to_string();
    assert_eq!(
        server
            .with_key(&expiring, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    expect_problem(
        server
            .with_key(&expiring, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap(),
        401,
        "key-expired",
    )
    .await;

    let res = server
        .admin(Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "w", "role": "read", "expires_at": "2001-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-expiry").await;
    let res = server
        .admin(Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "w", "role": "read", "expires_at": "tomorrow"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-expiry").await;
    let res = server
        .admin(Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "w", "role": "owner"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-json").await;

    let created: Value = server
        .admin(Method::POST, "/api/v1/keys")
        .json(&json!({"workspace": "w", "role": "write"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert_eq!(
        server
            .with_key(key, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        server
            .admin(Method::DELETE, &format!("/api/v1/keys/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_problem(
        server
            .with_key(key, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap(),
        401,
        "key-revoked",
    )
    .await;
    expect_problem(
        server
            .admin(Method::DELETE, &format!("/api/v1/keys/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
}

async fn workspaces_are_managed_by_system_keys(backend: Backend) {
    let server = Server::start(backend).await;
    let res = server
        .admin(Method::POST, "/api/v1/workspaces")
        .json(&json!({"name": "prod"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "prod");
    let res = server
        .admin(Method::POST, "/api/v1/workspaces")
        .json(&json!({"name": "prod"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "already-exists").await;
    for bad in ["", "UPPER", "-lead", "sp ace", &"x".repeat(64)] {
        let res = server
            .admin(Method::POST, "/api/v1/workspaces")
            .json(&json!({"name": bad}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 400, "invalid-name").await;
    }
    let prod_key = server.mint("prod", "admin").await;
    let listed: Value = server
        .with_key(&prod_key, Method::GET, "/api/v1/workspaces")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "a workspace key sees its own workspace only"
    );
    let res = server
        .admin(Method::DELETE, "/api/v1/workspaces/default")
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "own-workspace").await;
    assert_eq!(
        server
            .admin(Method::DELETE, "/api/v1/workspaces/prod")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // Its keys went with it.
    expect_problem(
        server
            .with_key(&prod_key, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap(),
        401,
        "invalid-credentials",
    )
    .await;
    expect_problem(
        server
            .admin(Method::DELETE, "/api/v1/workspaces/prod")
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
}

async fn lists_are_paginated(backend: Backend) {
    let server = Server::start(backend).await;
    for i in 0..5 {
        server.workspace_key(&format!("ws-{i}"), "read").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/workspaces?limit=2&after={c}"),
            None => "/api/v1/workspaces?limit=2".into(),
        };
        let page: Value = server
            .admin(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["default", "ws-0", "ws-1", "ws-2", "ws-3", "ws-4"]);
    expect_problem(
        server
            .admin(Method::GET, "/api/v1/workspaces?limit=0")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-query",
    )
    .await;
    expect_problem(
        server
            .admin(Method::GET, "/api/v1/workspaces?limit=abc")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-query",
    )
    .await;
}

#[tokio::test]
async fn keys_are_rate_limited_per_key_and_failures_per_address() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_AUTH__KEY_REQUESTS_PER_SECOND", 1)
        .env("PATCHBAY_AUTH__KEY_BURST", 5)
        .env("PATCHBAY_AUTH__FAILED_PER_MINUTE", 1)
        .env("PATCHBAY_AUTH__FAILED_BURST", 3)
        .start()
        .await;
    let key = server.workspace_key("w", "read").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let res = server
            .with_key(&key, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(
                res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            expect_problem(res, 429, "rate-limited").await;
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    // The admin key has its own bucket.
    assert_eq!(
        server
            .admin(Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Three failures are allowed; the fourth blocks the address, even for a valid key.
    for _ in 0..3 {
        expect_problem(
            server
                .with_key("bad", Method::GET, "/api/v1/workspaces")
                .send()
                .await
                .unwrap(),
            401,
            "invalid-credentials",
        )
        .await;
    }
    let res = server
        .with_key("bad", Method::GET, "/api/v1/workspaces")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, 429, "auth-rate-limited").await;
    let res = server
        .admin(Method::GET, "/api/v1/workspaces")
        .send()
        .await
        .unwrap();
    expect_problem(res, 429, "auth-rate-limited").await;
}

#[tokio::test]
async fn the_keys_cli_mints_a_working_key_offline() {
    let server = Server::start(Backend::Sqlite).await;
    server.workspace_key("cli", "read").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["keys", "create", "--workspace", "cli", "--role", "write"])
        .env("PATCHBAY_DATA_DIR", server.data_dir.path())
        .env("PATCHBAY_ADMIN_TOKEN", &server.admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        key.starts_with("pb_") && !key.contains(' '),
        "prints the key alone: {key}"
    );
    assert_eq!(
        server
            .with_key(&key, Method::GET, "/api/v1/workspaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args([
            "keys",
            "create",
            "--workspace",
            "missing",
            "--role",
            "write",
        ])
        .env("PATCHBAY_DATA_DIR", server.data_dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[tokio::test]
async fn first_start_prints_a_generated_system_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
            .arg("serve")
            .env("PATCHBAY_LISTEN", "127.0.0.1:0")
            .env("PATCHBAY_DATA_DIR", dir)
            .env_remove("PATCHBAY_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut key = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(at) = line.find("pb_") {
                key = Some(line[at..].trim().to_string());
            }
            if line.contains("listening on") {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        key
    };
    let key = run(dir.path()).expect("the first start prints a key");
    assert!(key.starts_with("pb_"));
    assert_eq!(run(dir.path()), None, "later starts do not print a key");
}
