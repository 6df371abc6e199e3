//! The Prometheus endpoint: bounded label cardinality, promtool-valid text, token, disabling.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, Server, expect_problem};
use patchbay::telemetry::{ALLOWED_LABELS, FAMILIES};

/// Series per family, with each series' label names. Histogram and summary suffixes fold into
/// their family.
fn parse_scrape(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, labels) = match line.find('{') {
            Some(at) => (&line[..at], &line[at + 1..line.rfind('}').unwrap()]),
            None => (line.split_whitespace().next().unwrap(), ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        let series: Vec<&str> = split_labels(labels)
            .into_iter()
            .filter(|(k, _)| *k != "le" && *k != "quantile")
            .map(|(k, _)| k)
            .collect();
        let label_values = split_labels(labels)
            .into_iter()
            .filter(|(k, _)| *k != "le" && *k != "quantile")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        families
            .entry(family.to_string())
            .or_default()
            .insert(format!("{}|{}", series.join(","), label_values));
    }
    families
}

fn split_labels(labels: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = labels;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',');
        let after = &rest[eq + 2..];
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        out.push((key, &after[..end]));
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

#[tokio::test]
async fn labels_stay_bounded_under_random_traffic_and_promtool_accepts_the_scrape() {
    let server = Server::start(Backend::Sqlite).await;
    let key = server.workspace_key("m", "admin").await;
    // Every endpoint once.
    let digest = {
        let res = server
            .with_key(&key, Method::POST, "/api/v1/cas")
            .body("metrics")
            .send()
            .await
            .unwrap();
        res.json::<serde_json::Value>().await.unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let workflow = {
        let document = json!({"name": "m", "nodes": [{"id": "a", "type": "t"}], "edges": []});
        let res = server
            .with_key(&key, Method::POST, "/api/v1/workflows")
            .json(&json!({"name": "m", "document": document}))
            .send()
            .await
            .unwrap();
        res.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, "/api/v1/workflows".into(), None),
        (Method::GET, format!("/api/v1/workflows/{workflow}"), None),
        (
            Method::GET,
            format!("/api/v1/workflows/{workflow}/document?at=0"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/workflows/{workflow}/patches"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/patches"),
            Some(json!({"base_version": 0, "ops": []})),
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/patches"),
            Some(json!({"base_version": 0, "ops": []})),
        ),
        (
            Method::GET,
            format!("/api/v1/workflows/{workflow}/events"),
            None,
        ),
        (Method::DELETE, "/api/v1/workflows/nope".into(), None),
        (Method::GET, "/health".into(), None),
        (Method::GET, "/ready".into(), None),
        (Method::GET, "/api/v1/openapi.json".into(), None),
        (Method::GET, "/api/v1/workspaces".into(), None),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/v1/workspaces/nope".into(), None),
        (Method::GET, "/api/v1/keys".into(), None),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({"role": "read"})),
        ),
        (Method::DELETE, "/api/v1/keys/nope".into(), None),
        (Method::PUT, format!("/api/v1/cas/{digest}"), None),
        (Method::GET, format!("/api/v1/cas/{digest}"), None),
        (Method::HEAD, format!("/api/v1/cas/{digest}"), None),
        (
            Method::POST,
            "/api/v1/cas/missing".into(),
            Some(json!({"digests": [digest]})),
        ),
        (
            Method::PUT,
            "/api/v1/cache/exact".into(),
            Some(
                json!({"node_type": "function", "config": {}, "inputs": 1, "result": 1, "execution_ms": 1200}),
            ),
        ),
        (
            Method::PUT,
            "/api/v1/cache/exact".into(),
            Some(
                json!({"node_type": "function", "config": {}, "inputs": 2, "result": "x@example.com"}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/cache/exact/lookup".into(),
            Some(json!({"node_type": "function", "config": {}, "inputs": 1})),
        ),
        (
            Method::POST,
            "/api/v1/cache/exact/lookup".into(),
            Some(json!({"node_type": "custom", "config": {}, "inputs": 1})),
        ),
        (
            Method::POST,
            "/api/v1/cache/exact/lookup/batch".into(),
            Some(json!({"queries": [{"node_type": "function", "config": {}, "inputs": 1}]})),
        ),
        (
            Method::POST,
            "/api/v1/cache/semantic".into(),
            Some(
                json!({"node_type": "agent", "prompt": "p", "embedding": vec![1.0; 384], "result": 1}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/cache/semantic/lookup".into(),
            Some(json!({"node_type": "agent", "prompt": "q", "embedding": vec![1.0; 384]})),
        ),
        (
            Method::POST,
            "/api/v1/cache/semantic/lookup/batch".into(),
            Some(json!({"queries": [{"node_type": "agent", "prompt": "p"}]})),
        ),
        (Method::GET, "/api/v1/cache/exact/nope".into(), None),
        (
            Method::POST,
            "/api/v1/cache/semantic/nope/reject".into(),
            None,
        ),
        (Method::DELETE, "/api/v1/cache/semantic/nope".into(), None),
        (
            Method::DELETE,
            "/api/v1/cache/exact?node_type=pure".into(),
            None,
        ),
        (Method::DELETE, "/api/v1/cache/semantic".into(), None),
    ];
    server
        .with_key("not-a-key", Method::GET, "/api/v1/keys")
        .send()
        .await
        .unwrap();
    for (method, path, body) in calls {
        let mut req = server.with_key(&key, method, &path);
        if let Some(body) = body {
            req = req.json(&body);
        } else if path.contains("/cas/") {
            req = req.body("metrics");
        }
        let res = req.send().await.unwrap();
        assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
    }
    // 1,000 random paths and methods, with and without a key.
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "BREW", "X-CUSTOM",
    ];
    let prefixes = [
        "/",
        "/api/v1/",
        "/api/v1/cas/",
        "/api/v1/keys/",
        "/api/v1/workflows/",
        "/api/v1/cache/exact/",
        "/api/",
        "/metrics/",
        "/ui/",
    ];
    let requests: Vec<(String, String, bool)> = {
        let mut rng = rand::rng();
        (0..1000)
            .map(|_| {
                let method = methods[rng.random_range(0..methods.len())].to_string();
                let segment: String = (0..rng.random_range(1..24))
                    .map(|_| rng.random_range(b'a'..=b'z') as char)
                    .collect();
                let path = format!(
                    "{}{}",
                    prefixes[rng.random_range(0..prefixes.len())],
                    segment
                );
                (method, path, rng.random_bool(0.5))
            })
            .collect()
    };
    let random_segments: Vec<String> = requests
        .iter()
        .map(|(_, path, _)| path.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    for (method, path, keyed) in requests {
        let mut req = server.anon(Method::from_bytes(method.as_bytes()).unwrap(), &path);
        if keyed {
            req = req.bearer_auth(&key);
        }
        let res = req.send().await.unwrap();
        assert!(
            res.status().as_u16() < 500,
            "{method} {path}: {}",
            res.status()
        );
    }
    let scrape = server.scrape().await;
    let families = parse_scrape(&scrape);
    for (family, series) in &families {
        for s in series {
            let names = s.split('|').next().unwrap();
            for label in names.split(',').filter(|l| !l.is_empty()) {
                assert!(
                    ALLOWED_LABELS.contains(&label),
                    "{family} carries label {label} outside the allow-list"
                );
            }
        }
        assert!(family.starts_with("patchbay_"), "{family} lacks the prefix");
        if let Some(def) = FAMILIES.iter().find(|f| f.name == family) {
            assert!(
                series.len() <= def.max_series,
                "{family} has {} series, bound {}",
                series.len(),
                def.max_series
            );
        }
    }
    let http = &families["patchbay_http_requests_total"];
    // Random paths must not mint series: no label may carry any of the random segments sent.
    for series in families.values().flatten() {
        for segment in random_segments.iter().filter(|s| s.len() >= 8) {
            assert!(
                !series.contains(segment.as_str()),
                "a random path reached a label: {series}"
            );
        }
    }
    assert!(
        http.len() < 500,
        "route templates x methods x status codes stay few: {}",
        http.len()
    );
    assert!(
        http.iter()
            .any(|s| s.contains("path=unmatched") && s.contains("method=OTHER")),
        "{http:?}"
    );
    assert!(
        http.iter().any(|s| s.contains("path=/api/v1/cas/{digest}")),
        "route templates label paths"
    );
    for needed in [
        "patchbay_workflow_patches_committed_total",
        "patchbay_workflow_conflicts_total",
        "patchbay_workflow_sse_clients",
        "patchbay_workflow_snapshot_size_bytes",
        "patchbay_cache_lookups_total",
        "patchbay_cache_stores_total",
        "patchbay_cache_hit_similarity",
        "patchbay_cache_seconds_saved_total",
        "patchbay_cache_evictions_total",
        "patchbay_build_info",
        "patchbay_uptime_seconds",
        "patchbay_db_connections",
        "patchbay_db_acquire_duration_seconds",
        "patchbay_auth_attempts_total",
        "patchbay_http_request_duration_seconds",
        "patchbay_http_requests_in_flight",
        "patchbay_cas_received_bytes_total",
    ] {
        assert!(
            families.contains_key(needed),
            "{needed} missing from the scrape"
        );
    }
    assert!(
        families
            .keys()
            .any(|f| f.contains("resident_memory") || f.contains("cpu_seconds")),
        "process metrics"
    );
    let reasons = &families["patchbay_auth_attempts_total"];
    for reason in ["missing_auth", "invalid_credentials", "forbidden"] {
        assert!(
            reasons
                .iter()
                .any(|s| s.contains(&format!("reason={reason}"))),
            "auth reason {reason}: {reasons:?}"
        );
    }

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &scrape).unwrap();
    let promtool = std::process::Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .expect("promtool is installed (cargo xtask test installs Debian's prometheus package)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert!(
        promtool.status.success(),
        "promtool check metrics failed:\n{report}"
    );
}

#[tokio::test]
async fn a_metrics_token_guards_the_scrape_and_metrics_can_be_disabled() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_METRICS__TOKEN", "scrape-me")
        .start()
        .await;
    expect_problem(
        server.anon(Method::GET, "/metrics").send().await.unwrap(),
        401,
        "invalid-credentials",
    )
    .await;
    let res = server
        .with_key("scrape-me", Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("patchbay_build_info"));

    let off = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_METRICS__ENABLED", "false")
        .start()
        .await;
    expect_problem(
        off.anon(Method::GET, "/metrics").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        off.anon(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn the_shipped_alert_rules_are_valid() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
