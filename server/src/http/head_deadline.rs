//! A request-head deadline for every request of a keep-alive connection, not only the first.
//!
//! actix-http enforces `client_request_timeout` on a connection's first request only (its
//! dispatcher says so), and clears the keep-alive timer as soon as a byte arrives. A client that
//! completes one request and then sends the next head one byte at a time would hold the
//! connection forever. This guard closes such connections: after a response has been sent in
//! full, the next request must arrive within `keep_alive + header_read_timeout`.
//!
//! Each connection gets a small shared state (installed by `on_connect`) and one watchdog task
//! that sleeps until the state's deadline. Requests touch two atomics; no per-request timers.

use std::any::Any;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use bytes::Bytes;

/// Per-connection state shared by the middleware and the watchdog.
pub struct Connection {
    socket: std::net::TcpStream,
    born: Instant,
    /// A request is being served (from the head until its response body is dropped).
    busy: AtomicBool,
    /// When the last response finished, in milliseconds since `born`; u64::MAX before any.
    idle_since_ms: AtomicU64,
}

/// What the server's `on_connect` hook calls for each new connection.
pub fn on_connect(
    window: Duration,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + Clone + 'static {
    move |conn: &dyn Any, ext: &mut Extensions| {
        let Some(tcp) = conn.downcast_ref::<TcpStream>() else {
            return;
        };
        // A duplicate descriptor of the same socket: shutting it down ends the connection, and
        // it is closed with the connection's extensions, so it can never hit a reused number.
        let Ok(fd) = tcp.as_fd().try_clone_to_owned() else {
            return;
        };
        let state = Arc::new(Connection {
            socket: std::net::TcpStream::from(fd),
            born: Instant::now(),
            busy: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(u64::MAX),
        });
        actix_web::rt::spawn(watch(Arc::downgrade(&state), window));
        ext.insert(state);
    }
}

async fn watch(state: Weak<Connection>, window: Duration) {
    let mut wait = window;
    loop {
        tokio::time::sleep(wait).await;
        let Some(conn) = state.upgrade() else {
            return;
        };
        let idle_since = conn.idle_since_ms.load(Ordering::Acquire);
        if conn.busy.load(Ordering::Acquire) || idle_since == u64::MAX {
            // Serving, or before the first response (actix's own head timer covers that).
            wait = window;
            continue;
        }
        let deadline = conn.born + Duration::from_millis(idle_since) + window;
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(
                "closing a keep-alive connection whose next request head did not arrive in time"
            );
            let _ = conn.socket.shutdown(std::net::Shutdown::Both);
            return;
        }
        wait = deadline - now;
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let conn = req.conn_data::<Arc<Connection>>().cloned();
    if let Some(conn) = &conn {
        conn.busy.store(true, Ordering::Release);
    }
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| Tracked { body, conn }))
}

pin_project_lite::pin_project! {
    /// The response body; when it is dropped (sent in full or abandoned) the connection is idle.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        conn: Option<Arc<Connection>>,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(conn) = &this.conn {
                let ms = conn.born.elapsed().as_millis() as u64;
                conn.idle_since_ms.store(ms, Ordering::Release);
                conn.busy.store(false, Ordering::Release);
            }
        }
    }
}

impl<B: MessageBody> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}
