//! Bodies between the caller and the guest, streamed chunk by chunk and counted against limits.
//!
//! Request: the caller's stream (actix's `Payload` is `!Send`, so it may be pumped by a local
//! task through a small channel) becomes the guest's `incoming-body`. Response: the guest's
//! `outgoing-body` becomes a `Send` stream whose last item reports a guest that failed after
//! the head was sent.

use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{BoxStream, LocalBoxStream};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame};
use tokio::sync::{mpsc, oneshot};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::ExecError;

/// Chunks a local pump may hold ahead of the guest.
const PUMP_CHUNKS: usize = 4;

type Chunk = Result<Bytes, String>;

/// The body of a [`super::GuestRequest`]. `Send`, whatever the stream it came from.
pub struct RequestBody(Option<GuestSource>);

impl RequestBody {
    pub fn empty() -> Self {
        Self(None)
    }

    /// A body the guest runtime can poll directly.
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Display,
    {
        let stream = stream.map(|c| c.map_err(|e| e.to_string())).boxed();
        Self(Some(GuestSource::Stream(stream)))
    }

    /// A `!Send` body, such as actix-web's `web::Payload`. A task spawned here with
    /// `tokio::task::spawn_local` feeds it to the guest through a small channel, so this must
    /// be called from a `LocalSet` (every actix-web worker is one). The task reads only as fast
    /// as the guest does, and stops as soon as the guest (or this body) is gone.
    pub fn from_local_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: Display,
    {
        let stream = stream.map(|c| c.map_err(|e| e.to_string())).boxed_local();
        Self(Some(GuestSource::Channel(spawn_pump(stream))))
    }

    /// Turns the body into what the guest reads, counted against `limit`.
    pub(super) fn into_guest(self, limit: u64, too_large: Arc<AtomicBool>) -> GuestBody {
        GuestBody {
            source: self.0,
            received: 0,
            limit,
            too_large,
        }
    }
}

fn spawn_pump(mut stream: LocalBoxStream<'static, Chunk>) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(PUMP_CHUNKS);
    tokio::task::spawn_local(async move {
        loop {
            let chunk = tokio::select! {
                // The guest finished or failed without reading everything: stop reading.
                () = tx.closed() => break,
                chunk = stream.next() => chunk,
            };
            let Some(chunk) = chunk else { break };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    rx
}

enum GuestSource {
    Stream(BoxStream<'static, Chunk>),
    Channel(mpsc::Receiver<Chunk>),
}

/// The request body as the guest reads it, cut off with `HTTP-request-body-size` past the limit.
pub(super) struct GuestBody {
    source: Option<GuestSource>,
    received: u64,
    limit: u64,
    too_large: Arc<AtomicBool>,
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let next = match &mut this.source {
            None => return Poll::Ready(None),
            Some(GuestSource::Stream(stream)) => ready!(stream.poll_next_unpin(cx)),
            Some(GuestSource::Channel(rx)) => ready!(rx.poll_recv(cx)),
        };
        let item = match next {
            None => {
                this.source = None;
                return Poll::Ready(None);
            }
            Some(Err(message)) => {
                this.source = None;
                tracing::debug!(error = %message, "the request body failed while the plugin read it");
                Err(wasmtime_wasi_http::Error::ConnectionTerminated)
            }
            Some(Ok(bytes)) => {
                this.received += bytes.len() as u64;
                if this.received > this.limit {
                    this.source = None;
                    this.too_large.store(true, Ordering::Relaxed);
                    Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(
                        this.received,
                    )))
                } else {
                    Ok(Frame::data(bytes))
                }
            }
        };
        Poll::Ready(Some(item))
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_none()
    }
}

/// Aborts the guest task when the request is abandoned (the caller stopped waiting or dropped
/// the body), which frees the instance at once instead of at the deadline.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The body of a [`super::GuestResponse`]: the guest's bytes, then the guest's outcome.
pub struct ResponseBody {
    inner: Option<HyperOutgoingBody>,
    /// Why the guest's body ended early, if it did; reported only if the outcome says nothing
    /// more precise.
    aborted: Option<String>,
    outcome: Option<oneshot::Receiver<Result<(), ExecError>>>,
    sent: u64,
    limit: u64,
    request_too_large: Arc<AtomicBool>,
    request_limit: u64,
    content_length: Option<u64>,
    _task: AbortOnDrop,
}

impl ResponseBody {
    pub(super) fn new(
        inner: HyperOutgoingBody,
        outcome: oneshot::Receiver<Result<(), ExecError>>,
        limit: u64,
        request_too_large: Arc<AtomicBool>,
        request_limit: u64,
        content_length: Option<u64>,
        task: AbortOnDrop,
    ) -> Self {
        Self {
            inner: Some(inner),
            aborted: None,
            outcome: Some(outcome),
            sent: 0,
            limit,
            request_too_large,
            request_limit,
            content_length,
            _task: task,
        }
    }

    /// The length the guest declared in `content-length`, if any: a body that ends short of it
    /// ends with an error item.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Ends the stream: no more polling of the guest's body or outcome.
    fn finish(&mut self, item: Option<ExecError>) -> Poll<Option<Result<Bytes, ExecError>>> {
        self.inner = None;
        self.outcome = None;
        Poll::Ready(item.map(Err))
    }
}

impl Stream for ResponseBody {
    type Item = Result<Bytes, ExecError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while let Some(inner) = &mut this.inner {
            match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers cannot travel through the caller's response; they are dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.sent += data.len() as u64;
                    if this.sent > this.limit {
                        return this
                            .finish(Some(ExecError::ResponseBodyTooLarge { limit: this.limit }));
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Some(Err(err)) => {
                    this.aborted = Some(err.to_string());
                    this.inner = None;
                }
                None => this.inner = None,
            }
        }
        // The guest's body is over; it is complete only if the guest also succeeded. A trap or
        // timeout drops the store, which ends the body exactly like a finished one would.
        let Some(outcome) = &mut this.outcome else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(outcome).poll(cx));
        let error = match outcome {
            Ok(Err(err)) => Some(err),
            _ if this.request_too_large.load(Ordering::Relaxed) => {
                Some(ExecError::RequestBodyTooLarge {
                    limit: this.request_limit,
                })
            }
            Ok(Ok(())) => this.aborted.take().map(|reason| {
                ExecError::BadResponse(format!("the plugin abandoned its response body ({reason})"))
            }),
            Err(_) => Some(ExecError::Internal(
                "the plugin's task ended without an outcome".into(),
            )),
        };
        this.finish(error)
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("sent", &self.sent)
            .field("limit", &self.limit)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}
