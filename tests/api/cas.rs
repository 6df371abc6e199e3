//! The content-addressed store: digests, visibility per workspace, ranges, limits, backends.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::on_both_backends;
use crate::support::{Backend, Server, expect_problem};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

on_both_backends!(
    blobs_round_trip_with_http_semantics,
    visibility_is_per_workspace_and_storage_is_shared,
    bad_uploads_store_nothing
);

async fn blobs_round_trip_with_http_semantics(backend: Backend) {
    let server = Server::start(backend).await;
    let key = server.workspace_key("w", "write").await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha(&data);
    let path = format!("/api/v1/cas/{digest}");

    let res = server
        .with_key(&key, Method::PUT, &path)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"digest": digest, "size": 100_000})
    );
    let res = server
        .with_key(&key, Method::PUT, &path)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a blob the workspace has answers 200");

    let res = server
        .with_key(&key, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{digest}\""));
    assert_eq!(
        res.headers()["cache-control"],
        "private, max-age=31536000, immutable"
    );
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert!(
        res.headers()["repr-digest"]
            .to_str()
            .unwrap()
            .starts_with("sha-256=:")
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[..]);

    let res = server
        .with_key(&key, Method::HEAD, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "100000");
    assert_eq!(res.headers()["etag"], etag.as_str());

    let res = server
        .with_key(&key, Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    let res = server
        .with_key(&key, Method::GET, &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[10..20]);
    let res = server
        .with_key(&key, Method::GET, &path)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[99_995..]);
    let res = server
        .with_key(&key, Method::GET, &path)
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-range"], "bytes */100000");
    expect_problem(res, 416, "range-not-satisfiable").await;

    // POST computes the digest; an empty blob is a blob too.
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["digest"], sha(b"hello"));
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let empty = sha(b"");
    let res = server
        .with_key(&key, Method::GET, &format!("/api/v1/cas/{empty}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().is_empty());

    // A blob larger than the in-memory threshold streams through a temporary object.
    let big: Vec<u8> = (0..(9 * 1024 * 1024 + 7) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let big_digest = sha(&big);
    let res = server
        .with_key(&key, Method::PUT, &format!("/api/v1/cas/{big_digest}"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let back = server
        .with_key(&key, Method::GET, &format!("/api/v1/cas/{big_digest}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha(&back), big_digest);

    // Reading needs a key; a read key may read but not write.
    expect_problem(
        server.anon(Method::GET, &path).send().await.unwrap(),
        401,
        "missing-auth",
    )
    .await;
    let reader = server.mint("w", "read").await;
    assert_eq!(
        server
            .with_key(&reader, Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    expect_problem(
        server
            .with_key(&reader, Method::PUT, &path)
            .body(data)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
}

async fn visibility_is_per_workspace_and_storage_is_shared(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.workspace_key("a", "write").await;
    let b = server.workspace_key("b", "write").await;
    let digest = sha(b"shared content");
    let path = format!("/api/v1/cas/{digest}");
    assert_eq!(
        server
            .with_key(&a, Method::PUT, &path)
            .body("shared content")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    // b cannot read it, and `missing` does not reveal that a stored it.
    expect_problem(
        server
            .with_key(&b, Method::GET, &path)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let other = sha(b"never stored");
    let missing: Value = server
        .with_key(&b, Method::POST, "/api/v1/cas/missing")
        .json(&json!({"digests": [digest, other]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing, json!({"missing": [digest, other]}));
    let missing: Value = server
        .with_key(&a, Method::POST, "/api/v1/cas/missing")
        .json(&json!({"digests": [digest, other]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing, json!({"missing": [other]}));

    // b proves it has the content by uploading it: stored once, now visible to b (201 for b).
    assert_eq!(
        server
            .with_key(&b, Method::PUT, &path)
            .body("shared content")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        server
            .with_key(&b, Method::GET, &path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "shared content"
    );
    let scrape = server.scrape().await;
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("patchbay_cas_dedup_hits_total") && !l.ends_with(" 0")),
        "a dedup hit was counted"
    );

    let res = server
        .with_key(&b, Method::POST, "/api/v1/cas/missing")
        .json(&json!({"digests": ["xyz"]}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-digest").await;
}

async fn bad_uploads_store_nothing(backend: Backend) {
    let server = Server::builder(backend)
        .env("PATCHBAY_CAS__MAX_BLOB_BYTES", 1000)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    let claimed = sha(b"what I claim");
    let res = server
        .with_key(&key, Method::PUT, &format!("/api/v1/cas/{claimed}"))
        .body("something else")
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 400, "digest-mismatch").await;
    assert_eq!(problem["actual"], sha(b"something else"));
    for digest in [&claimed, &sha(b"something else")] {
        let res = server
            .with_key(&key, Method::GET, &format!("/api/v1/cas/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "nothing was stored");
    }
    expect_problem(
        server
            .with_key(&key, Method::PUT, "/api/v1/cas/not-a-digest")
            .body("x")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-digest",
    )
    .await;
    expect_problem(
        server
            .with_key(&key, Method::GET, "/api/v1/cas/abc")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-digest",
    )
    .await;

    // Over the limit: refused by Content-Length up front, and by counting when streamed.
    let big = vec![7u8; 1001];
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    let chunks = futures_util::stream::iter(
        big.chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    let res = server
        .with_key(&key, Method::GET, &format!("/api/v1/cas/{}", sha(&big)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn blobs_live_in_s3_compatible_storage() {
    let endpoint = std::env::var("PATCHBAY_TEST_S3_ENDPOINT")
        .expect("PATCHBAY_TEST_S3_ENDPOINT is not set: run the tests with `cargo xtask test`, which starts a local S3-compatible server");
    let bucket =
        std::env::var("PATCHBAY_TEST_S3_BUCKET").unwrap_or_else(|_| "patchbay-test".into());
    let start = |shared: Option<&Server>| {
        let mut builder = Server::builder(Backend::Sqlite)
            .env("PATCHBAY_BLOB_URL", format!("s3://{bucket}"))
            .env("PATCHBAY_BLOB__S3_ENDPOINT", &endpoint)
            .env("PATCHBAY_BLOB__S3_ALLOW_HTTP", "true")
            .env("PATCHBAY_BLOB__S3_ACCESS_KEY_ID", "test")
            .env("PATCHBAY_BLOB__S3_SECRET_ACCESS_KEY", "test");
        if let Some(other) = shared {
            builder = builder.sharing(other);
        }
        builder.start()
    };
    let server = start(None).await;
    let key = server.workspace_key("s3", "write").await;
    assert_eq!(
        server
            .anon(Method::GET, "/ready")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let small = format!("s3 blob {}", uuid::Uuid::new_v4());
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let big: Vec<u8> = (0..(12 * 1024 * 1024) as u32)
        .map(|i| (i ^ (i >> 8)) as u8)
        .chain(small.bytes())
        .collect();
    let big_digest = sha(&big);
    let res = server
        .with_key(&key, Method::PUT, &format!("/api/v1/cas/{big_digest}"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "multipart upload to S3");
    let res = server
        .with_key(&key, Method::GET, &format!("/api/v1/cas/{big_digest}"))
        .header("range", "bytes=5-9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &big[5..10]);
    // A second node on the same database and bucket serves the same blob.
    let second = start(Some(&server)).await;
    let back = second
        .with_key(
            &key,
            Method::GET,
            &format!("/api/v1/cas/{}", sha(small.as_bytes())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(back.text().await.unwrap(), small);
}
