//! A deadline on request bodies, which actix does not have: after a grace period the body must
//! keep arriving at a minimum average rate, or the stream fails with a timed-out I/O error that
//! handlers turn into 408. This stops slow-body (slowloris-style) clients from pinning
//! connections and buffers while still letting large uploads on decent links finish.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    pub grace: Duration,
    pub min_bytes_per_second: u64,
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body
        && let Some(limits) = req
            .app_data::<web::Data<BodyDeadline>>()
            .map(|d| *d.get_ref())
    {
        let inner = req.take_payload();
        let stream = DeadlineStream::new(inner, limits);
        req.set_payload(Payload::from(
            Box::pin(stream) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        ));
    }
    next.call(req).await
}

pub struct DeadlineStream<S> {
    inner: S,
    limits: BodyDeadline,
    started: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl<S> DeadlineStream<S> {
    pub fn new(inner: S, limits: BodyDeadline) -> Self {
        let started = Instant::now();
        Self {
            inner,
            limits,
            started,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(started + limits.grace)),
            expired: false,
        }
    }

    /// When the body must be complete at the latest, given what arrived so far.
    fn deadline(&self) -> Instant {
        let rate = self.limits.min_bytes_per_second.max(1);
        self.started
            + self.limits.grace
            + Duration::from_secs_f64(self.received as f64 / rate as f64)
    }
}

impl<S> Stream for DeadlineStream<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        // Nothing arrived: sleep until the deadline, which moves later as bytes come in.
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                self.expired = true;
                let err = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request body arrived too slowly",
                );
                return Poll::Ready(Some(Err(PayloadError::Io(err))));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_grace_period() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PayloadError>>(4);
        let inner = tokio_stream_from(rx);
        let mut stream = DeadlineStream::new(
            inner,
            BodyDeadline {
                grace: Duration::from_secs(2),
                min_bytes_per_second: 1000,
            },
        );
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        let started = Instant::now();
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(matches!(err, PayloadError::Io(ref e) if e.kind() == std::io::ErrorKind::TimedOut));
        // 2 s grace plus 3 bytes' worth at 1000 B/s.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2000) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_completes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PayloadError>>(4);
        let mut stream = DeadlineStream::new(
            tokio_stream_from(rx),
            BodyDeadline {
                grace: Duration::from_secs(1),
                min_bytes_per_second: 10,
            },
        );
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Ok(Bytes::from_static(b"0123456789")))
                    .await
                    .unwrap();
            }
        });
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk.unwrap().len();
        }
        assert_eq!(total, 50);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, PayloadError>>,
    ) -> Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
