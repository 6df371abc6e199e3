//! The execution core against the real guest components in `plugins/dist` (built by
//! `plugins/build.sh`).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::host::outbound_allowed;
use super::*;

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(name)
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run plugins/build.sh to build the guest components",
            path.display()
        )
    })
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        max_instances: 32,
        max_memory_bytes_per_instance: 64 << 20,
        guest_threads: 2,
        ..EngineConfig::default()
    }
}

/// One runtime for the tests that need no cache: compiling each component once is what costs.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(engine_config()).expect("runtime"))
}

fn plugin(name: &str) -> Plugin {
    static PLUGINS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Plugin>>> =
        OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    if let Some(p) = plugins.lock().unwrap().get(name) {
        return p.clone();
    }
    let wasm = component(name);
    let p = runtime()
        .load(&wasm, &digest(&wasm))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    plugins.lock().unwrap().insert(name.to_owned(), p.clone());
    p
}

fn limits(name: &str) -> RequestLimits {
    RequestLimits {
        plugin_name: name.to_owned(),
        ..RequestLimits::default()
    }
}

fn get(uri: &str) -> GuestRequest {
    GuestRequest {
        method: Method::GET,
        uri: uri.parse().unwrap(),
        headers: HeaderMap::new(),
        body: RequestBody::empty(),
        instance_guard: None,
    }
}

async fn collect(mut body: ResponseBody) -> Result<Vec<u8>, ExecError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn call(
    name: &str,
    limits: &RequestLimits,
    req: GuestRequest,
) -> Result<(StatusCode, Vec<u8>), ExecError> {
    let response = runtime().handle(&plugin(name), limits, req).await?;
    let body = collect(response.body).await?;
    Ok((response.status, body))
}

#[tokio::test]
async fn hello_answers() {
    let (status, body) = call("hello", &limits("hello"), get("/hello/world"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"Hello, world!");
}

/// Every request gets a fresh instance whose memory starts from the component's image, also
/// when it lands in a pool slot an earlier request used (slots are reset by copying back only
/// the pages a guest dirtied): `hello` counts its requests in a static and must say 1 each time.
#[tokio::test]
async fn every_request_gets_a_fresh_instance_memory() {
    for i in 0..20 {
        let response = runtime()
            .handle(
                &plugin("hello"),
                &limits("hello"),
                get(&format!("/hello/{i}")),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers.get("x-instance-requests").unwrap(),
            "1",
            "request {i}"
        );
        collect(response.body).await.unwrap();
    }
}

#[tokio::test]
async fn hello_sees_headers_but_never_authorization() {
    let mut req = get("/hello/x");
    req.headers
        .insert("x-patchbay-request-id", HeaderValue::from_static("req-1"));
    req.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer secret"),
    );
    let response = runtime()
        .handle(&plugin("hello"), &limits("hello"), req)
        .await
        .unwrap();
    assert_eq!(
        response.headers.get("x-patchbay-request-id").unwrap(),
        "req-1"
    );

    let mut req = get("http://example.test/hello/x");
    req.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer secret"),
    );
    let guest = exec_guest_request(req);
    assert!(guest.headers().get(http::header::AUTHORIZATION).is_none());
    assert_eq!(guest.uri().to_string(), "http://example.test/hello/x");
}

fn exec_guest_request(req: GuestRequest) -> hyper::Request<super::body::GuestBody> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::exec::guest_request(req, 1 << 20, flag).unwrap().0
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn chunked(data: &[u8], chunk: usize) -> Vec<Result<Bytes, std::io::Error>> {
    data.chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

#[tokio::test]
async fn echo_streams_five_megabytes_back_from_a_local_stream() {
    let data = pattern(5 << 20);
    let local = tokio::task::LocalSet::new();
    let echoed = local
        .run_until(async {
            let req = GuestRequest {
                method: Method::POST,
                uri: "/echo".parse().unwrap(),
                headers: HeaderMap::new(),
                // `from_local_stream` is how actix's `!Send` payload arrives.
                body: RequestBody::from_local_stream(stream::iter(chunked(&data, 64 << 10))),
                instance_guard: None,
            };
            call("echo", &limits("echo"), req).await
        })
        .await
        .unwrap();
    assert_eq!(echoed.0, StatusCode::OK);
    assert_eq!(echoed.1.len(), data.len());
    assert!(echoed.1 == data, "the echoed body differs");
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused() {
    let data = pattern(3 << 20);
    let limits = RequestLimits {
        max_request_body: 1 << 20,
        ..limits("echo")
    };
    let req = GuestRequest {
        method: Method::POST,
        uri: "/echo".parse().unwrap(),
        headers: HeaderMap::new(),
        body: RequestBody::from_stream(stream::iter(chunked(&data, 64 << 10))),
        instance_guard: None,
    };
    // Echo sends its head before reading, so the error arrives in the body.
    let err = call("echo", &limits, req).await.unwrap_err();
    assert_eq!(err, ExecError::RequestBodyTooLarge { limit: 1 << 20 });

    // A declared length over the limit is refused before the guest runs.
    let mut req = get("/echo");
    req.headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from_static("3000000"),
    );
    let err = call("echo", &limits, req).await.unwrap_err();
    assert_eq!(err, ExecError::RequestBodyTooLarge { limit: 1 << 20 });
}

#[tokio::test]
async fn traps_are_contained_and_the_next_request_works() {
    let l = limits("trap");
    for uri in ["/trap", "/trap?kind=unreachable"] {
        let err = call("trap", &l, get(uri)).await.unwrap_err();
        assert!(
            matches!(&err, ExecError::Trap(m) if m.contains("unreachable")),
            "{uri}: {err:?}"
        );
    }
    let err = call("trap", &l, get("/trap?kind=stack")).await.unwrap_err();
    assert_eq!(err, ExecError::StackOverflow);
    let err = call("trap", &l, get("/trap?kind=no-response"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::BadResponse(_)), "{err:?}");

    let (status, body) = call("hello", &limits("hello"), get("/hello/again"))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"Hello, again!"[..])
    );
}

#[tokio::test]
async fn a_trap_after_the_head_ends_the_body_with_an_error() {
    let response = runtime()
        .handle(
            &plugin("trap"),
            &limits("trap"),
            get("/trap?kind=after-headers"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let mut body = response.body;
    let mut got = Vec::new();
    let err = loop {
        match body.next().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(err)) => break err,
            None => panic!("the body ended cleanly after a trap"),
        }
    };
    assert!(matches!(err, ExecError::Trap(_)), "{err:?}");
    assert!(got.starts_with(b"partial body"));
    assert!(body.next().await.is_none(), "nothing follows the error");
}

#[tokio::test]
async fn an_endless_loop_times_out() {
    let limits = RequestLimits {
        timeout: Duration::from_millis(200),
        ..limits("spin")
    };
    plugin("spin"); // compiled before the clock starts
    let started = Instant::now();
    let err = call("spin", &limits, get("/spin")).await.unwrap_err();
    assert_eq!(err, ExecError::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_sleeping_guest_times_out_on_the_wall_clock() {
    let limits = RequestLimits {
        timeout: Duration::from_millis(500),
        ..limits("slow")
    };
    plugin("slow"); // compiled before the clock starts
    let started = Instant::now();
    let err = call("slow", &limits, get("/slow?ms=2000"))
        .await
        .unwrap_err();
    assert_eq!(err, ExecError::Timeout);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(1),
        "took {elapsed:?}"
    );

    let (status, body) = call("slow", &limits, get("/slow?ms=50")).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"slept 50 ms"[..])
    );
}

#[tokio::test]
async fn memory_beyond_the_limit_fails_the_request() {
    let limits = RequestLimits {
        memory_bytes: 16 << 20,
        ..limits("oom")
    };
    let err = call("oom", &limits, get("/oom")).await.unwrap_err();
    assert_eq!(err, ExecError::Memory);
    let (status, _) = call("oom", &limits, get("/oom?mb=4")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_big_response_streams() {
    let response = runtime()
        .handle(&plugin("big"), &limits("big"), get("/big"))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.content_length(), Some(10 << 20));
    let mut body = response.body;
    let (mut total, mut chunks) = (0usize, 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        chunks += 1;
    }
    assert_eq!(total, 10 << 20);
    assert!(
        chunks > 10,
        "the body came in {chunks} chunks: not streamed"
    );
}

#[tokio::test]
async fn a_response_over_the_limit_is_cut() {
    let limits = RequestLimits {
        max_response_body: 1 << 20,
        ..limits("big")
    };
    // Declared by content-length: refused at the head.
    let err = call("big", &limits, get("/big")).await.unwrap_err();
    assert_eq!(err, ExecError::ResponseBodyTooLarge { limit: 1 << 20 });
    // Chunked (echo has no content-length): cut while streaming.
    let limits = RequestLimits {
        max_response_body: 1 << 20,
        ..limits
    };
    let data = pattern(2 << 20);
    let req = GuestRequest {
        method: Method::POST,
        uri: "/echo".parse().unwrap(),
        headers: HeaderMap::new(),
        body: RequestBody::from_stream(stream::iter(chunked(&data, 64 << 10))),
        instance_guard: None,
    };
    let response = runtime()
        .handle(&plugin("echo"), &limits, req)
        .await
        .unwrap();
    let err = collect(response.body).await.unwrap_err();
    assert_eq!(err, ExecError::ResponseBodyTooLarge { limit: 1 << 20 });
}

#[tokio::test]
async fn outbound_requests_are_denied_unless_allowed() {
    let (status, body) = call(
        "outbound",
        &limits("outbound"),
        get("/outbound?url=http://example.com/"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // An allowed host on this machine is reached.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream";
        socket.write_all(reply.as_bytes()).await.unwrap();
    });
    let limits = RequestLimits {
        allowed_outbound_hosts: vec!["127.0.0.1".into()],
        ..limits("outbound")
    };
    let uri = format!("/outbound?url=http://127.0.0.1:{port}/x");
    let (status, body) = call("outbound", &limits, get(&uri)).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"upstream"[..]),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn the_allow_list_matches_hosts_ports_and_schemes() {
    let allowed = |list: &[&str], uri: &str| {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        outbound_allowed(&list, &uri.parse().unwrap())
    };
    assert!(!allowed(&[], "https://api.example.com/"));
    assert!(allowed(&["api.example.com"], "https://API.example.com/x"));
    assert!(!allowed(&["api.example.com"], "https://evil.com/"));
    assert!(!allowed(&["example.com"], "https://api.example.com/"));
    assert!(allowed(&["*.example.com"], "https://api.example.com/"));
    assert!(!allowed(&["*.example.com"], "https://example.com/"));
    assert!(!allowed(&["*.example.com"], "https://badexample.com/"));
    assert!(allowed(
        &["api.example.com:8443"],
        "https://api.example.com:8443/"
    ));
    assert!(!allowed(
        &["api.example.com:8443"],
        "https://api.example.com/"
    ));
    assert!(allowed(&["http://localhost"], "http://localhost:80/"));
    assert!(!allowed(&["http://localhost"], "https://localhost/"));
    assert!(allowed(&["[::1]:8080"], "http://[::1]:8080/"));
    assert!(allowed(&["*"], "https://anything.test/"));
}

#[tokio::test]
async fn the_guest_gets_its_environment() {
    let limits = RequestLimits {
        env: vec![("GREETING".into(), "hi".into())],
        ..limits("env")
    };
    let (status, body) = call("env", &limits, get("/env")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let vars: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(vars["GREETING"], "hi");
    assert_eq!(
        vars.as_object().unwrap().len(),
        1,
        "only the configured variables: {vars}"
    );
}

#[tokio::test]
async fn many_requests_at_once_share_the_pool() {
    let l = limits("hello");
    let calls = (0..64).map(|i| {
        let l = l.clone();
        async move { call("hello", &l, get(&format!("/hello/{i}"))).await }
    });
    for (i, result) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("Hello, {i}!").as_bytes());
    }
}

#[test]
fn a_core_module_or_garbage_is_rejected() {
    let module = b"\0asm\x01\0\0\0";
    let err = runtime().load(module, &digest(module)).unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent), "{err}");
    assert!(err.to_string().contains("not a component"));
    let err = runtime().load(b"hello", &digest(b"hello")).unwrap_err();
    assert!(matches!(err, LoadError::NotWasm), "{err}");
}

#[test]
fn a_component_without_the_handler_is_rejected() {
    let empty = b"\0asm\x0d\0\x01\0";
    let err = runtime().load(empty, &digest(empty)).unwrap_err();
    assert!(matches!(err, LoadError::MissingExport(_)), "{err}");
    assert!(
        err.to_string().contains("wasi:http/incoming-handler"),
        "{err}"
    );
}

#[test]
fn a_wrong_digest_is_rejected() {
    let wasm = component("hello");
    let err = runtime().load(&wasm, &"0".repeat(64)).unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
}

/// Rewrites every `wasi:http/types@0.2.N` in the binary to `@<minor>.<patch>`: same length, so
/// the component stays well-formed but wants another WASI version.
fn with_wasi_version(wasm: &[u8], minor: u8, patch: u8) -> (Vec<u8>, String) {
    let needle = b"wasi:http/types@0.2.";
    let mut out = wasm.to_vec();
    let mut patched = None;
    let mut i = 0;
    while let Some(pos) = out[i..].windows(needle.len()).position(|w| w == needle) {
        let at = i + pos;
        out[at + needle.len() - 2] = minor;
        out[at + needle.len()] = patch;
        if patched.is_none() {
            let end = out[at..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b":/@.-".contains(b)))
                .unwrap();
            patched = Some(String::from_utf8(out[at..at + end].to_vec()).unwrap());
        }
        i = at + needle.len();
    }
    (out, patched.expect("hello imports wasi:http/types"))
}

#[test]
fn an_unsupported_wasi_version_is_rejected_naming_the_import() {
    let (wasm, import) = with_wasi_version(&component("hello"), b'9', b'4');
    assert_eq!(import, "wasi:http/types@0.9.4");
    let err = runtime().load(&wasm, &digest(&wasm)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, LoadError::UnsupportedImport { .. }),
        "{message}"
    );
    assert!(message.contains(&import), "{message}");
    assert!(message.contains(HOST_WASI_VERSIONS), "{message}");
}

#[test]
fn a_newer_patch_within_the_host_range_links() {
    let (wasm, import) = with_wasi_version(&component("hello"), b'2', b'9');
    assert_eq!(import, "wasi:http/types@0.2.9");
    runtime().load(&wasm, &digest(&wasm)).unwrap();
}

#[test]
fn the_public_types_cross_threads() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<Plugin>();
    send_sync::<LoadError>();
    send_sync::<ExecError>();
    let req = get("/hello/x");
    send(&req);
    // The whole request can run on any executor, e.g. under `tokio::spawn`.
    send(&runtime().handle(&plugin("hello"), &limits("hello"), req));
    fn response_is_send(r: GuestResponse) -> impl Send {
        r
    }
    let _ = response_is_send;
}

#[test]
fn imports_are_checked_by_name_and_version() {
    for ok in [
        "wasi:cli/environment@0.2.0",
        "wasi:http/types@0.2.4",
        "wasi:io/streams@0.2.12",
    ] {
        assert_eq!(check_import(ok), Ok(()), "{ok}");
    }
    for bad in [
        "wasi:http/types@0.2.13",
        "wasi:http/types@0.3.0",
        "wasi:http/types@1.0.0",
        "wasi:io/streams",
        "wasi:keyvalue/store@0.2.0-draft",
        "acme:db/query@1.0.0",
    ] {
        let err = check_import(bad).unwrap_err();
        assert!(err.contains("0.2.0 to 0.2.12"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn the_second_load_reads_the_precompiled_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..engine_config()
    };
    let wasm = component("hello");
    let hex = digest(&wasm);

    let first = Runtime::new(cfg.clone()).unwrap();
    let started = Instant::now();
    let plugin = first.load(&wasm, &hex).unwrap();
    let compiled_in = started.elapsed();
    assert!(!plugin.from_cache());
    assert_eq!(first.compile_count(), 1);
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(
        artifacts[0].starts_with(&hex) && artifacts[0].ends_with(".cwasm"),
        "{artifacts:?}"
    );
    drop(first);

    // A restart: a new engine with the same settings finds the artifact.
    let second = Runtime::new(cfg).unwrap();
    let started = Instant::now();
    let plugin = second.load(&wasm, &hex).unwrap();
    let loaded_in = started.elapsed();
    assert!(plugin.from_cache());
    assert_eq!(second.compile_count(), 0, "nothing was compiled");
    assert!(
        loaded_in < compiled_in,
        "cached load {loaded_in:?} vs compile {compiled_in:?}"
    );
    println!("hello: compiled in {compiled_in:?}, loaded from the cache in {loaded_in:?}");
    let response = second
        .handle(&plugin, &limits("hello"), get("/hello/cache"))
        .await
        .unwrap();
    assert_eq!(collect(response.body).await.unwrap(), b"Hello, cache!");
}

/// Per-request overhead: `cargo test -p patchbay --release --lib plugins::runtime::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn throughput() {
    let plugin = plugin("hello");
    let l = limits("hello");
    let total = 10_000;
    let concurrency = 32;
    let started = Instant::now();
    let done = stream::iter(0..total)
        .map(|_| {
            let (plugin, l) = (plugin.clone(), l.clone());
            async move {
                let response = runtime()
                    .handle(&plugin, &l, get("/hello/bench"))
                    .await
                    .unwrap();
                collect(response.body).await.unwrap().len()
            }
        })
        .buffer_unordered(concurrency)
        .count()
        .await;
    let elapsed = started.elapsed();
    println!(
        "{done} hello requests in {elapsed:?}: {:.0} req/s, {:.1} µs each",
        done as f64 / elapsed.as_secs_f64(),
        elapsed.as_micros() as f64 / done as f64
    );
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_output_is_logged_line_by_line_with_the_plugin() {
    use wasmtime_wasi::cli::StdoutStream as _;

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let (stdout, stderr) = super::log::GuestLog::pair(&"demo".into());
        let mut out = stdout.p2_stream();
        out.write(Bytes::from_static(b"first li")).unwrap();
        out.write(Bytes::from_static(b"ne\nsecond line\nunterminated"))
            .unwrap();
        drop(out);
        let mut err = stderr.p2_stream();
        err.write(Bytes::from(vec![b'x'; 200 << 10])).unwrap();
    });
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].contains("plugin=demo") && lines[0].contains("stream=\"stdout\""),
        "{log}"
    );
    assert!(lines[0].contains(" first line "), "{log}");
    assert!(lines[1].contains(" second line "), "{log}");
    assert!(lines[2].contains(" unterminated "), "{log}");
    assert!(log.contains("dropped"), "the budget note is logged: {log}");
    assert!(
        log.len() < 80 << 10,
        "stderr was capped, the log has {} bytes",
        log.len()
    );
    let longest = lines.iter().map(|l| l.len()).max().unwrap();
    assert!(
        longest < 5 << 10,
        "long output is logged in pieces, not one {longest}-byte line"
    );
}

#[tokio::test]
async fn the_instance_guard_is_released_once_the_instance_is_gone() {
    // Completed: released by the time the body has ended, not before (big's guest is still
    // writing while its body waits to be read).
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let mut req = get("/big");
    req.instance_guard = Some(Box::new(tx));
    let response = runtime()
        .handle(&plugin("big"), &limits("big"), req)
        .await
        .unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty)
    ));
    collect(response.body).await.unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed)
    ));

    // Abandoned mid-request (the client went away): the guest is torn down at once, long
    // before its 2 s sleep or 5 s deadline would end it.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut req = get("/slow?ms=2000");
    req.instance_guard = Some(Box::new(tx));
    let (slow, l) = (plugin("slow"), limits("slow"));
    let started = Instant::now();
    let pending = runtime().handle(&slow, &l, req);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), pending)
            .await
            .is_err()
    );
    assert!(rx.await.is_err(), "the guard is dropped, never sent on");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "released after {:?}",
        started.elapsed()
    );
}
