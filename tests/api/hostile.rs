//! Slow and hostile clients: header and body deadlines, size limits, and a server that keeps
//! answering while many slow clients hang on.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, Server, expect_problem};

/// Writes `bytes` one at a time, `gap` apart, until the server closes the connection; returns
/// how long the server let it go on, or None if it never cut the client off within `give_up`.
async fn trickle_until_cut_off(
    stream: &mut TcpStream,
    bytes: &[u8],
    gap: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let mut buf = [0u8; 1024];
    for byte in bytes.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if writer.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        // A response (408) or EOF means we were cut off.
        match tokio::time::timeout(gap, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {
                // Drain whatever the server says until it closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = reader.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                return Some(started.elapsed());
            }
            Err(_) => {}
        }
    }
    None
}

const SLOW_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_cut_off() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_HTTP__HEADER_READ_TIMEOUT_MS", 1000)
        .start()
        .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let cut = trickle_until_cut_off(
        &mut stream,
        SLOW_HEAD,
        Duration::from_millis(100),
        Duration::from_secs(15),
    )
    .await;
    let cut = cut.expect("a slow head on a fresh connection is cut off");
    // actix computes the deadline from its cached clock, which ticks every 500 ms: the cut comes
    // between 0.5 and 1.5 deadlines after the first byte, never at once.
    assert!(
        cut >= Duration::from_millis(500),
        "not long before the deadline: {cut:?}"
    );
}

#[tokio::test]
async fn a_slow_second_request_on_a_keep_alive_connection_is_cut_off() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_HTTP__HEADER_READ_TIMEOUT_MS", 1000)
        .env("PATCHBAY_HTTP__KEEP_ALIVE_MS", 1000)
        .start()
        .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let cut = trickle_until_cut_off(
        &mut stream,
        SLOW_HEAD,
        Duration::from_millis(100),
        Duration::from_secs(15),
    )
    .await;
    assert!(
        cut.is_some(),
        "a slow second request on a keep-alive connection is cut off"
    );
}

#[tokio::test]
async fn a_slow_body_is_cut_off_with_408() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_HTTP__BODY_READ_TIMEOUT_MS", 1000)
        .env("PATCHBAY_HTTP__BODY_MIN_BYTES_PER_SECOND", 1000)
        .start()
        .await;
    let key = server.workspace_key("w", "write").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/cas HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        loop {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    };
    tokio::select! {
        () = trickle => {}
        () = read => {}
        () = tokio::time::sleep(Duration::from_secs(15)) => panic!("the slow body was never cut off"),
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("urn:patchbay:problem:body-timeout"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn health_keeps_answering_while_200_slow_clients_hang_on() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_HTTP__HEADER_READ_TIMEOUT_MS", 30_000)
        .start()
        .await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(2),
            server.anon(Method::GET, "/health").send(),
        )
        .await;
        assert!(
            matches!(&res, Ok(Ok(r)) if r.status() == 200),
            "health failed after {:?}",
            t.elapsed()
        );
        answered += 1;
        // Keep the slow clients trickling.
        for stream in slow.iter_mut().take(20) {
            let _ = stream.write_all(b"a").await;
        }
    }
    assert!(answered >= 10, "{answered}");
    // The slow clients are still connected: nothing was cut short for them.
    let mut still_open = 0;
    for stream in &mut slow {
        if stream.write_all(b"b").await.is_ok() {
            still_open += 1;
        }
    }
    assert!(still_open >= 190, "{still_open}");
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let server = Server::builder(Backend::Sqlite)
        .env("PATCHBAY_HTTP__MAX_HEADER_BYTES", 2048)
        .env("PATCHBAY_HTTP__JSON_BODY_LIMIT_BYTES", 1000)
        .start()
        .await;
    let res = server
        .anon(Method::GET, "/health")
        .header("x-big", "a".repeat(3000))
        .send()
        .await
        .unwrap();
    expect_problem(res, 431, "headers-too-large").await;
    let body = serde_json::json!({"name": "a".repeat(2000)});
    let res = server
        .admin(Method::POST, "/api/v1/workspaces")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    assert_eq!(
        server
            .anon(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
