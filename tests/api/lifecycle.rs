//! Graceful shutdown and restarts.

use std::time::Duration;

use reqwest::Method;

use crate::support::{Backend, Server};

#[tokio::test]
async fn sigterm_turns_ready_503_lets_in_flight_requests_finish_and_exits_0() {
    let mut server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_SHUTDOWN__DRAIN_DELAY_MS", 1500)
        .env("PATCHBAY_HTTP__BODY_READ_TIMEOUT_MS", 20_000)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    // An upload in flight: its body arrives over ~2 seconds, across the signal.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body(reqwest::Body::wrap_stream(tokio_stream(rx)))
        .send();
    let feeder = tokio::spawn(async move {
        for _ in 0..20 {
            tx.send(Ok(vec![b'z'; 1000])).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let upload = tokio::spawn(upload);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = server.anon(Method::GET, "/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503, "ready turns 503 at once");
    assert_eq!(
        server
            .anon(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "still serving while draining"
    );
    feeder.await.unwrap();
    let res = upload
        .await
        .unwrap()
        .expect("the in-flight upload completes");
    assert_eq!(res.status(), 201);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        server.logs()
    );
    assert!(server.logs().contains("stopped"));
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn data_and_keys_survive_a_restart() {
    let server = Server::start(Backend::Sqlite).await;
    let key = server.workspace_key("keep", "write").await;
    let res = server
        .with_key(&key, Method::POST, "/api/v1/cas")
        .body("durable")
        .send()
        .await
        .unwrap();
    let digest = res.json::<serde_json::Value>().await.unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let restarted = server.restart().await;
    let res = restarted
        .with_key(&key, Method::GET, &format!("/api/v1/cas/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "durable");
}
