//! Guest stdout and stderr as `tracing` events, one per line, tagged with the plugin.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The target of guest output events, so log filters can single them out.
pub const GUEST_LOG_TARGET: &str = "patchbay::guest";
/// Output one request may log, stdout and stderr together; the rest is dropped (with a note),
/// so a chatty or hostile guest cannot flood the server's log.
const MAX_BYTES_PER_REQUEST: usize = 64 << 10;
/// A longer line is logged in pieces.
const MAX_LINE: usize = 4 << 10;

/// The stdout or stderr of one request's guest.
pub(super) struct GuestLog {
    plugin: Arc<str>,
    stream: &'static str,
    budget: Arc<AtomicUsize>,
}

impl GuestLog {
    /// A stdout/stderr pair sharing one output budget.
    pub(super) fn pair(plugin: &Arc<str>) -> (Self, Self) {
        let budget = Arc::new(AtomicUsize::new(MAX_BYTES_PER_REQUEST));
        let make = |stream| Self {
            plugin: plugin.clone(),
            stream,
            budget: budget.clone(),
        };
        (make("stdout"), make("stderr"))
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            plugin: self.plugin.clone(),
            stream: self.stream,
            budget: self.budget.clone(),
            line: Vec::new(),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

/// Splits what the guest writes into lines; never blocks the guest.
struct LineWriter {
    plugin: Arc<str>,
    stream: &'static str,
    budget: Arc<AtomicUsize>,
    line: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        let allowed = self.take_budget(bytes.len());
        if allowed < bytes.len() {
            bytes = &bytes[..allowed];
        }
        while !bytes.is_empty() {
            let room = MAX_LINE - self.line.len();
            let end = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None => bytes.len().min(room),
            };
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end..];
            if self.line.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
    }

    /// Reserves up to `want` bytes of the request's budget; notes once when it runs out.
    fn take_budget(&self, want: usize) -> usize {
        let before = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(want))
            })
            .unwrap_or(0);
        if before > 0 && before <= want {
            tracing::warn!(
                target: GUEST_LOG_TARGET,
                plugin = %self.plugin,
                "guest output past {MAX_BYTES_PER_REQUEST} bytes in one request is dropped"
            );
        }
        before.min(want)
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(target: GUEST_LOG_TARGET, plugin = %self.plugin, stream = self.stream, "{text}");
        self.line.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}
