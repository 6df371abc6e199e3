//! Live fan-out of committed patches: an in-process hub (one broadcast channel per watched
//! workflow), the cross-node change feed (PostgreSQL LISTEN/NOTIFY), and the SSE streams.
//!
//! A stream never loses or repeats an event. It remembers the last seq it sent and:
//! - subscribes to the hub *before* reading the store, so a patch committed during the catch-up
//!   is either in what it read or arrives from the hub afterwards;
//! - drops hub events at or below its last seq (the catch-up already sent them);
//! - on a gap (an event above last + 1: publications of concurrent commits may overtake each
//!   other, and notifications may be missed), on lag (the broadcast buffer overflowed) and on a
//!   resync (the cross-node feed reconnected), reads the store again from its last seq. A
//!   committed seq implies every lower seq is committed, so that read fills the gap.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PatchView;
use crate::store::{PatchRecord, Store, WorkflowChange};
use crate::telemetry::names::WORKFLOW_SSE_CLIENTS;

/// Events buffered per workflow for slow subscribers; one that falls further behind re-reads
/// the store.
const HUB_CAPACITY: usize = 1024;
/// Patches read from the store per catch-up query.
const CATCH_UP_PAGE: u32 = 500;

/// A committed patch, rendered once as an SSE frame for every subscriber.
#[derive(Debug)]
pub struct PatchFrame {
    pub seq: u64,
    pub frame: Bytes,
}

impl PatchFrame {
    pub fn render(record: &PatchRecord) -> Option<Arc<Self>> {
        let view = match PatchView::from_record(record) {
            Ok(view) => view,
            Err(err) => {
                tracing::error!(error = %err, "a stored patch cannot be sent");
                return None;
            }
        };
        // Compact JSON has no line breaks, so the data fits one `data:` line.
        let data = serde_json::to_string(&view).ok()?;
        let frame = format!("id: {}\nevent: patch\ndata: {data}\n\n", view.seq);
        Some(Arc::new(Self {
            seq: view.seq,
            frame: Bytes::from(frame),
        }))
    }
}

#[derive(Debug, Clone)]
pub enum HubEvent {
    Patch(Arc<PatchFrame>),
    /// Events may have been missed: read the store.
    Resync,
    /// The workflow was deleted: end the stream.
    Deleted,
}

struct Channel {
    tx: broadcast::Sender<HubEvent>,
    /// Highest seq published here; the change feed skips what this node already published.
    published: u64,
}

/// One broadcast channel per workflow that has subscribers on this node.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, workflow_id: &str) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = channels
            .entry(workflow_id.to_string())
            .or_insert_with(|| Channel {
                tx: broadcast::channel(HUB_CAPACITY).0,
                published: 0,
            });
        Subscription {
            rx: Some(channel.tx.subscribe()),
            hub: Arc::clone(self),
            workflow_id: workflow_id.to_string(),
        }
    }

    /// Publishes a committed patch to the workflow's subscribers, if it has any.
    pub fn publish(&self, workflow_id: &str, frame: Arc<PatchFrame>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get_mut(workflow_id) {
            channel.published = channel.published.max(frame.seq);
            let _ = channel.tx.send(HubEvent::Patch(frame));
        }
    }

    /// True when someone here watches the workflow and has not been sent `seq` yet.
    pub fn wants(&self, workflow_id: &str, seq: u64) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.get(workflow_id).is_some_and(|c| seq > c.published)
    }

    pub fn signal(&self, workflow_id: &str, event: HubEvent) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(workflow_id) {
            let _ = channel.tx.send(event);
        }
    }

    pub fn resync_all(&self) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for channel in channels.values() {
            let _ = channel.tx.send(HubEvent::Resync);
        }
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.channels.lock().unwrap().len()
    }
}

/// A receiver of one workflow's events; the channel goes when its last subscriber does.
pub struct Subscription {
    rx: Option<broadcast::Receiver<HubEvent>>,
    hub: Arc<Hub>,
    workflow_id: String,
}

impl Subscription {
    async fn recv(&mut self) -> Result<HubEvent, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.hub.channels.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.rx.take());
        if channels
            .get(&self.workflow_id)
            .is_some_and(|c| c.tx.receiver_count() == 0)
        {
            channels.remove(&self.workflow_id);
        }
    }
}

/// Turns the cross-node change feed into hub events: a patch another node committed is read
/// from the store once per node (only when someone here watches that workflow and has not had
/// it yet), a deletion ends local streams, a reconnection makes every stream re-read the store.
pub async fn relay_changes(
    mut changes: mpsc::Receiver<WorkflowChange>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    on_deleted: impl Fn(&str) + Send + 'static,
) {
    while let Some(change) = changes.recv().await {
        match change {
            WorkflowChange::Patch { workflow_id, seq } => {
                if seq < 1 || !hub.wants(&workflow_id, seq as u64) {
                    continue;
                }
                match store
                    .list_patches(&workflow_id, seq - 1, Some(seq), 1)
                    .await
                {
                    Ok(records) => {
                        for frame in records.iter().filter_map(PatchFrame::render) {
                            hub.publish(&workflow_id, frame);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, workflow = workflow_id, "reading a notified patch failed");
                        hub.signal(&workflow_id, HubEvent::Resync);
                    }
                }
            }
            WorkflowChange::Deleted { workflow_id } => {
                on_deleted(&workflow_id);
                hub.signal(&workflow_id, HubEvent::Deleted);
            }
            WorkflowChange::Resync => hub.resync_all(),
        }
    }
}

/// Counts connected streams for as long as it lives.
struct ClientGauge;

impl ClientGauge {
    fn enter() -> Self {
        metrics::gauge!(WORKFLOW_SSE_CLIENTS).increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!(WORKFLOW_SSE_CLIENTS).decrement(1.0);
    }
}

/// One subscriber's stream state.
struct EventStream {
    store: Arc<dyn Store>,
    workflow_id: String,
    subscription: Subscription,
    /// The last seq sent (or the one the client resumed after).
    last: u64,
    queue: VecDeque<Bytes>,
    catch_up: bool,
    done: bool,
    heartbeat: tokio::time::Interval,
    holder: Holder,
    shutdown: CancellationToken,
    _gauge: ClientGauge,
}

/// The API key a stream was opened with. Authentication happens once, when the stream opens;
/// the key is looked up again at every heartbeat so that revoking it, its expiry, or deleting
/// its workspace ends the stream within one heartbeat interval, on whichever node serves it.
#[derive(Debug, Clone)]
pub struct Holder {
    pub key_id: String,
    pub workspace_id: String,
}

/// The last frame of a stream whose key no longer grants access.
const REVOKED_FRAME: &[u8] = b"event: revoked\ndata: {}\n\n";

/// The SSE body: events after `after` from the store, then live ones, heartbeats in between.
/// Ends when the client goes, the workflow is deleted, the store fails (the client resumes
/// with `Last-Event-ID`), the key stops granting access (see [`Holder`]), or the server shuts
/// down.
pub fn stream(
    store: Arc<dyn Store>,
    workflow_id: String,
    subscription: Subscription,
    after: u64,
    heartbeat: Duration,
    holder: Holder,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = EventStream {
        store,
        workflow_id,
        subscription,
        last: after,
        // The first bytes tell the client (and any proxy) the stream is open.
        queue: VecDeque::from([Bytes::from_static(b": connected\n\n")]),
        catch_up: true,
        done: false,
        heartbeat: interval,
        holder,
        shutdown,
        _gauge: ClientGauge::enter(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok(frame), state))
    })
}

impl EventStream {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            if self.catch_up {
                if let Err(err) = self.read_store().await {
                    tracing::warn!(error = %err, workflow = self.workflow_id, "event stream: reading patches failed; ending the stream");
                    return None;
                }
                continue;
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => self.done = true,
                event = self.subscription.recv() => match event {
                    Ok(HubEvent::Patch(p)) if p.seq == self.last + 1 => {
                        self.last = p.seq;
                        self.queue.push_back(p.frame.clone());
                    }
                    Ok(HubEvent::Patch(p)) if p.seq <= self.last => {}
                    Ok(HubEvent::Patch(_) | HubEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                    Ok(HubEvent::Deleted) | Err(broadcast::error::RecvError::Closed) => {
                        self.queue.push_back(Bytes::from_static(b"event: deleted\ndata: {}\n\n"));
                        self.done = true;
                    }
                },
                _ = self.heartbeat.tick() => {
                    if self.holder_may_read().await {
                        self.queue.push_back(Bytes::from_static(b": heartbeat\n\n"));
                    } else {
                        self.queue.push_back(Bytes::from_static(REVOKED_FRAME));
                        self.done = true;
                    }
                }
            }
        }
    }

    /// Whether the stream's key still exists, is neither revoked nor expired, and belongs to
    /// the same workspace. A store error ends the stream too: the client resumes with
    /// `Last-Event-ID` and authenticates again.
    async fn holder_may_read(&self) -> bool {
        match self.store.get_key(&self.holder.key_id).await {
            Ok(Some(key)) => {
                key.revoked_at_ms.is_none()
                    && key
                        .expires_at_ms
                        .is_none_or(|at| at > crate::clock::now_ms())
                    && key.workspace_id == self.holder.workspace_id
            }
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, workflow = self.workflow_id, "event stream: re-checking the API key failed; ending the stream");
                false
            }
        }
    }

    /// Queues one page of stored patches after `last`; stays in catch-up while pages are full.
    async fn read_store(&mut self) -> Result<(), crate::store::StoreError> {
        let records = self
            .store
            .list_patches(&self.workflow_id, self.last as i64, None, CATCH_UP_PAGE)
            .await?;
        self.catch_up = records.len() == CATCH_UP_PAGE as usize;
        for record in &records {
            if record.seq as u64 != self.last + 1 {
                // Cannot happen while seqs are contiguous; never skip silently.
                tracing::error!(
                    workflow = self.workflow_id,
                    expected = self.last + 1,
                    got = record.seq,
                    "patch history has a gap"
                );
                self.done = true;
                return Ok(());
            }
            let Some(frame) = PatchFrame::render(record) else {
                self.done = true;
                return Ok(());
            };
            self.last = frame.seq;
            self.queue.push_back(frame.frame.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Arc<PatchFrame> {
        PatchFrame::render(&PatchRecord {
            seq: seq as i64,
            ops: "[]".into(),
            author: "k".into(),
            created_at_ms: 0,
        })
        .unwrap()
    }

    #[test]
    fn frames_are_single_line_sse_events() {
        let f = frame(7);
        let text = std::str::from_utf8(&f.frame).unwrap();
        assert_eq!(
            text,
            "id: 7\nevent: patch\ndata: {\"seq\":7,\"ops\":[],\"author\":\"k\",\"created_at\":\"1970-01-01T00:00:00Z\"}\n\n"
        );
    }

    /// A subscriber that falls more than the hub's capacity behind, and one that sees events out
    /// of order or twice, still sends every seq exactly once, in order.
    #[tokio::test]
    async fn lag_gaps_and_repeats_are_repaired_from_the_store() {
        use futures_util::StreamExt;

        use crate::store::sqlite::SqliteStore;
        use crate::store::{AppendOutcome, NewPatch, NewWorkflow, PoolOptions};

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::connect(&url, &PoolOptions::default())
                .await
                .unwrap(),
        );
        let ws = store.create_workspace("w", 0).await.unwrap();
        let new = NewWorkflow {
            id: "f".into(),
            workspace_id: ws.id,
            name: "f".into(),
            created_at_ms: 0,
            base_digest: "0".repeat(64),
            base_size: 0,
            materializer_version: 1,
        };
        store.create_workflow(&new).await.unwrap();
        let commit = |seq: i64| {
            let store = Arc::clone(&store);
            async move {
                let patch = NewPatch {
                    workflow_id: "f".into(),
                    base_version: seq - 1,
                    ops: "[]".into(),
                    author: "k".into(),
                    created_at_ms: seq,
                };
                let AppendOutcome::Committed(record) = store.append_patch(&patch).await.unwrap()
                else {
                    panic!("seq {seq}")
                };
                PatchFrame::render(&record).unwrap()
            }
        };
        let hub = Arc::new(Hub::default());
        let events = stream(
            Arc::clone(&store),
            "f".into(),
            hub.subscribe("f"),
            0,
            Duration::from_secs(3600),
            Holder {
                key_id: "k".into(),
                workspace_id: "w".into(),
            },
            CancellationToken::new(),
        );
        let mut events = Box::pin(events);
        assert_eq!(
            events.next().await.unwrap().unwrap().as_ref(),
            b": connected\n\n"
        );
        // Caught up (nothing yet) and waiting on the hub.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), events.next())
                .await
                .is_err()
        );

        let total = HUB_CAPACITY as i64 + 100;
        for seq in 1..=total {
            let frame = commit(seq).await;
            hub.publish("f", Arc::clone(&frame));
            if seq % 7 == 0 {
                hub.publish("f", frame); // a repeat
            }
        }
        // Out of order: the later commit is published first.
        let a = commit(total + 1).await;
        let b = commit(total + 2).await;
        hub.publish("f", b);
        hub.publish("f", a);

        let mut seqs = Vec::new();
        while seqs.len() < (total + 2) as usize {
            let frame = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let text = std::str::from_utf8(&frame).unwrap();
            let id = text
                .strip_prefix("id: ")
                .and_then(|t| t.split('\n').next())
                .unwrap();
            seqs.push(id.parse::<i64>().unwrap());
        }
        assert_eq!(seqs, (1..=total + 2).collect::<Vec<_>>());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), events.next())
                .await
                .is_err(),
            "nothing more"
        );

        // Live now (caught up and waiting): a gap is filled from the store, the overtaken event
        // is not sent twice.
        let a = commit(total + 3).await;
        let b = commit(total + 4).await;
        hub.publish("f", b);
        hub.publish("f", a);
        for expected in [total + 3, total + 4] {
            let frame = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(
                frame.starts_with(format!("id: {expected}\n").as_bytes()),
                "{frame:?}"
            );
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(100), events.next())
                .await
                .is_err(),
            "nothing more"
        );
    }

    #[tokio::test]
    async fn channels_live_as_long_as_their_subscribers() {
        let hub = Arc::new(Hub::default());
        assert!(!hub.wants("w", 1), "nobody watches");
        let a = hub.subscribe("w");
        let mut b = hub.subscribe("w");
        assert!(hub.wants("w", 1));
        hub.publish("w", frame(1));
        assert!(
            !hub.wants("w", 1) && hub.wants("w", 2),
            "published seqs are not wanted again"
        );
        match b.recv().await.unwrap() {
            HubEvent::Patch(p) => assert_eq!(p.seq, 1),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert_eq!(hub.watched(), 1);
        drop(b);
        assert_eq!(hub.watched(), 0);
    }
}
