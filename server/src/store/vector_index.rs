//! The semantic cache's in-memory vector index on SQLite.
//!
//! Why: SQLite hands a scan its rows at about 1.3 µs of CPU each (index entry, table row, blob),
//! so an exact scan of 100,000 entries costs over 100 ms per lookup. The same scan over
//! contiguous `f32`s in memory is a few milliseconds, bounded by memory bandwidth.
//!
//! What: one [`Partition`] per (workspace, node type) — the scope a lookup searches — holding
//! every non-rejected row's embedding (contiguous `f32`, and as `i8` codes), its sum of
//! squares, required role, expiry and rowid. A lookup applies the same filters as the SQL scan
//! (required role at or below the caller's, not expired; rejected rows are not held) and the
//! same order (highest similarity, then highest required role, then lowest rowid), with
//! similarities computed bit for bit as the SQL scan and pgvector compute them
//! ([`vector::dot`]). It is exact, but fast: a first pass over the `i8` codes (a quarter of
//! the memory traffic) bounds every row's similarity, and only rows that could still be the
//! answer are computed exactly (`coded.rs` has the argument). The store then re-reads the
//! chosen row with every SQL filter before serving it (`SqliteStore::nearest_semantic`).
//!
//! Why a process-local index is sound: SQLite is the single-node backend. One server process
//! owns the database file and every write to `semantic_cache` goes through this store in this
//! process. Each write takes the index's write gate ([`VectorIndex::writer`]) before its
//! transaction begins and applies its change in memory after the commit, before releasing the
//! gate, so changes reach the index in commit order; a partition loads under the same gate, so
//! it is read from a snapshot no write can race. A write that fails or is cancelled (a client
//! that goes away) between its commit and the in-memory update invalidates the partitions it
//! touched instead: they reload from SQLite on next use. What the index cannot see is another
//! process writing the same file (a hand-run `sqlite3`); the re-read before serving means such
//! a change can cost a miss but never serves a deleted, rejected or expired row, one of another
//! workspace or one above the caller's role.
//!
//! Memory is bounded by `cache.semantic.sqlite_index_max_bytes`: loading evicts the least
//! recently searched partitions to make room, and a partition that does not fit alone (or
//! grows past the budget) is not held; its lookups scan SQLite as before, counted in
//! `patchbay_cache_vector_index_fallbacks_total{reason="over_budget"}` and logged once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sqlx::sqlite::SqlitePool;
use tokio::sync::RwLock;

mod coded;

use self::coded::{Coded, CodedQuery};
use super::StoreResult;
use super::cache::{NewSemanticEntry, SemanticScope};
use super::vector;
use crate::telemetry::names::{
    CACHE_VECTOR_INDEX_BYTES, CACHE_VECTOR_INDEX_FALLBACKS_TOTAL, CACHE_VECTOR_INDEX_LOAD_SECONDS,
    CACHE_VECTOR_INDEX_SEARCHES_TOTAL,
};

/// Default of `cache.semantic.sqlite_index_max_bytes`: 100,000 entries of 384 dimensions take
/// about 160 MB, so this holds several full workspaces, or one of 1,536 dimensions.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Partitions needing fewer multiply-adds than this are searched on the calling task; larger
/// ones on a blocking thread, off the async workers.
const INLINE_SEARCH_WORK: usize = 1 << 16;

/// (workspace id, node type).
type Key = (String, String);

/// A `rows` entry: key, value and hashbrown's control byte.
const MAP_ENTRY: usize = std::mem::size_of::<(Arc<str>, usize)>() + 1;
/// The reference counts in front of each id's `Arc<str>` allocation.
const ID_OVERHEAD: usize = 2 * std::mem::size_of::<usize>();
/// Entry ids are UUIDs in simple form (`NewSemanticEntry::id`, made by the server).
const ID_LEN: usize = 32;

/// Why a lookup scanned SQLite instead of the index. Values of the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// `cache.semantic.sqlite_index_max_bytes` is 0.
    Disabled,
    /// The partition does not fit in the budget.
    OverBudget,
    /// Another lookup is loading the partition.
    Loading,
    /// Loading failed (logged); the next lookup tries again.
    LoadFailed,
    /// The query's dimension differs from the partition's.
    Dimensions,
    /// The row the index chose changed before it could be served (a concurrent write).
    Changed,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Disabled => "disabled",
            Fallback::OverBudget => "over_budget",
            Fallback::Loading => "loading",
            Fallback::LoadFailed => "load_failed",
            Fallback::Dimensions => "dimensions",
            Fallback::Changed => "changed",
        }
    }
}

/// The index's answer to a lookup.
#[derive(Debug)]
pub enum Answer {
    /// The most similar servable row, or None when the scope has none.
    Index(Option<Candidate>),
    /// The caller must scan SQLite.
    Scan(Fallback),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: Arc<str>,
    pub similarity: f64,
}

/// The order both the SQL scan and the index pick the best row by: highest similarity, then
/// highest required role, then lowest rowid (the earliest stored).
pub fn ranks_above(candidate: (f64, i64, i64), best: Option<(f64, i64, i64)>) -> bool {
    let Some((similarity, role, rowid)) = best else {
        return true;
    };
    let (s, r, id) = candidate;
    s > similarity || (s == similarity && (r > role || (r == role && id < rowid)))
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    rowid: i64,
    expires_at_ms: i64,
    role: i16,
}

/// One workspace's semantic entries of one node type. Rows are unordered (removal swaps the
/// last row into the hole); the rowid orders ties.
#[derive(Debug)]
pub struct Partition {
    dims: usize,
    /// Row i's embedding is `vectors[i * dims..(i + 1) * dims]`.
    vectors: Vec<f32>,
    /// Row i's sum of squares, as [`vector::norm2`] computes it.
    norms: Vec<f32>,
    /// Row i's codes are `codes[i * dims..(i + 1) * dims]`.
    codes: Vec<i8>,
    coded: Vec<Coded>,
    meta: Vec<Meta>,
    ids: Vec<Arc<str>>,
    rows: HashMap<Arc<str>, usize>,
    id_bytes: usize,
}

impl Partition {
    pub fn with_capacity(dims: usize, rows: usize) -> Partition {
        Partition {
            dims,
            vectors: Vec::with_capacity(dims * rows),
            norms: Vec::with_capacity(rows),
            codes: Vec::with_capacity(dims * rows),
            coded: Vec::with_capacity(rows),
            meta: Vec::with_capacity(rows),
            ids: Vec::with_capacity(rows),
            rows: HashMap::with_capacity(rows),
            id_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Adds a row whose embedding is little-endian `f32`s. False (nothing added) when its
    /// length is not the partition's dimension (the SQL scan skips such rows too) or the id is
    /// already held.
    pub fn push_le_bytes(
        &mut self,
        rowid: i64,
        id: &str,
        role: i16,
        expires_at_ms: i64,
        embedding: &[u8],
    ) -> bool {
        if embedding.len() != self.dims * 4 || self.rows.contains_key(id) {
            return false;
        }
        let start = self.vectors.len();
        self.vectors.extend(
            embedding
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        self.finish_push(start, rowid, id, role, expires_at_ms);
        true
    }

    /// As [`Partition::push_le_bytes`], from `f32`s.
    pub fn push(
        &mut self,
        rowid: i64,
        id: &str,
        role: i16,
        expires_at_ms: i64,
        embedding: &[f32],
    ) -> bool {
        if embedding.len() != self.dims || self.rows.contains_key(id) {
            return false;
        }
        let start = self.vectors.len();
        self.vectors.extend_from_slice(embedding);
        self.finish_push(start, rowid, id, role, expires_at_ms);
        true
    }

    fn finish_push(&mut self, start: usize, rowid: i64, id: &str, role: i16, expires_at_ms: i64) {
        let norm2 = vector::norm2(&self.vectors[start..]);
        self.norms.push(norm2);
        self.coded
            .push(Coded::code(&self.vectors[start..], norm2, &mut self.codes));
        self.meta.push(Meta {
            rowid,
            expires_at_ms,
            role,
        });
        let id: Arc<str> = Arc::from(id);
        self.id_bytes += id.len();
        self.rows.insert(Arc::clone(&id), self.ids.len());
        self.ids.push(id);
    }

    /// Removes a row; false when it is not held.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.rows.remove(id) else {
            return false;
        };
        let last = self.meta.len() - 1;
        let dims = self.dims;
        if row != last {
            let (head, tail) = self.vectors.split_at_mut(last * dims);
            head[row * dims..(row + 1) * dims].copy_from_slice(tail);
            let (head, tail) = self.codes.split_at_mut(last * dims);
            head[row * dims..(row + 1) * dims].copy_from_slice(tail);
            self.rows.insert(Arc::clone(&self.ids[last]), row);
        }
        self.vectors.truncate(last * dims);
        self.codes.truncate(last * dims);
        self.norms.swap_remove(row);
        self.coded.swap_remove(row);
        self.meta.swap_remove(row);
        let removed = self.ids.swap_remove(row);
        self.id_bytes -= removed.len();
        true
    }

    /// Approximately the heap this partition holds (capacities, not lengths).
    pub fn bytes(&self) -> u64 {
        (self.vectors.capacity() * 4
            + self.norms.capacity() * 4
            + self.codes.capacity()
            + self.coded.capacity() * std::mem::size_of::<Coded>()
            + self.meta.capacity() * std::mem::size_of::<Meta>()
            + self.ids.capacity() * std::mem::size_of::<Arc<str>>()
            // hashbrown allocates 8 buckets per 7 entries of capacity
            + self.rows.capacity() * 8 / 7 * MAP_ENTRY
            + self.ids.len() * ID_OVERHEAD
            + self.id_bytes) as u64
    }

    /// At most what a partition of `rows` rows of `dims` dimensions, with ids of `id_len`
    /// bytes, takes once loaded: checked against the budget before loading.
    pub fn estimate(dims: usize, rows: usize, id_len: usize) -> u64 {
        let per_row = dims * 5
            + 4
            + std::mem::size_of::<Coded>()
            + std::mem::size_of::<Meta>()
            + std::mem::size_of::<Arc<str>>()
            // a hash table sized for n entries has at most 2 * 8/7 * n buckets (powers of two)
            + MAP_ENTRY * 16 / 7
            + 1
            + ID_OVERHEAD
            + id_len;
        (rows * per_row) as u64
    }

    /// The most similar row a caller may be served: required role at or below `max_role`, not
    /// expired at `now_ms`. Ties go as [`ranks_above`] says. Exact: the first pass over the
    /// codes only skips rows that cannot be the answer.
    pub fn nearest(
        &self,
        query: &[f32],
        max_role: i16,
        now_ms: i64,
    ) -> Result<Option<Candidate>, Fallback> {
        if query.len() != self.dims {
            return Err(Fallback::Dimensions);
        }
        let query_norm2 = vector::norm2(query);
        let servable = |meta: &Meta| meta.role <= max_role && meta.expires_at_ms > now_ms;
        let Some(coded_query) = CodedQuery::new(query, query_norm2) else {
            return Ok(self.nearest_among(
                query,
                query_norm2,
                (0..self.len()).filter(|row| servable(&self.meta[*row])),
            ));
        };
        let mut dots = Vec::new();
        coded::integer_dots(&coded_query.codes, &self.codes, &mut dots);
        // The best lower bound so far, and the rows whose upper bound reached it when seen.
        let mut best_low = f64::NEG_INFINITY;
        let mut candidates: Vec<(f64, usize)> = Vec::new();
        for (row, meta) in self.meta.iter().enumerate() {
            if !servable(meta) {
                continue;
            }
            match coded_query.bounds(&self.coded[row], dots[row]) {
                Some((low, high)) => {
                    if high >= best_low {
                        candidates.push((high, row));
                    }
                    best_low = best_low.max(low);
                }
                None => candidates.push((f64::INFINITY, row)),
            }
        }
        // A row whose upper bound is below the best lower bound is strictly less similar
        // than the row that has that lower bound: it can be neither the answer nor a tie.
        Ok(self.nearest_among(
            query,
            query_norm2,
            candidates
                .into_iter()
                .filter(|(high, _)| *high >= best_low)
                .map(|(_, row)| row),
        ))
    }

    /// The exact computation over the given rows.
    fn nearest_among(
        &self,
        query: &[f32],
        query_norm2: f32,
        rows: impl Iterator<Item = usize>,
    ) -> Option<Candidate> {
        let mut best: Option<(f64, i64, i64)> = None;
        let mut best_row = 0;
        for row in rows {
            #[cfg(test)]
            tests::EXACT_ROWS.with(|n| n.set(n.get() + 1));
            let meta = &self.meta[row];
            let stored = &self.vectors[row * self.dims..(row + 1) * self.dims];
            let similarity =
                vector::similarity(vector::dot(query, stored), query_norm2, self.norms[row]);
            let candidate = (similarity, i64::from(meta.role), meta.rowid);
            if ranks_above(candidate, best) {
                best = Some(candidate);
                best_row = row;
            }
        }
        best.map(|(similarity, _, _)| Candidate {
            id: Arc::clone(&self.ids[best_row]),
            similarity,
        })
    }

    /// Every servable row computed exactly: what [`Partition::nearest`] must equal.
    #[cfg(test)]
    fn nearest_exhaustive(&self, query: &[f32], max_role: i16, now_ms: i64) -> Option<Candidate> {
        let rows = (0..self.len()).filter(|row| {
            self.meta[*row].role <= max_role && self.meta[*row].expires_at_ms > now_ms
        });
        self.nearest_among(query, vector::norm2(query), rows)
    }
}

/// How a partition is held.
enum Slot {
    /// A lookup is loading it; `ticket` tells that load from a later one.
    Loading { ticket: u64 },
    Ready {
        partition: Arc<RwLock<Partition>>,
        bytes: u64,
        /// When it was last searched, for least-recently-used eviction.
        used: u64,
    },
    /// It did not fit in the budget; lookups scan until a removal in its workspace makes it
    /// worth trying again.
    OverBudget,
}

#[derive(Default)]
struct State {
    slots: HashMap<Key, Slot>,
    /// Sum of the Ready partitions' bytes.
    bytes: u64,
    tick: u64,
    tickets: u64,
}

/// What loading ended with.
enum Loaded {
    Ready(Arc<RwLock<Partition>>),
    OverBudget,
    /// A write removed the slot meanwhile (workspace deleted, re-index): scan this once.
    Superseded,
}

/// The index of one SQLite store. See the module documentation.
pub struct VectorIndex {
    pool: SqlitePool,
    max_bytes: u64,
    state: Mutex<State>,
    /// Held by every write to `semantic_cache` from before its transaction to after its change
    /// is applied here, and by every load.
    gate: tokio::sync::Mutex<()>,
    searches: AtomicU64,
    fallbacks: AtomicU64,
}

impl VectorIndex {
    pub fn new(pool: SqlitePool, max_bytes: u64) -> VectorIndex {
        VectorIndex {
            pool,
            max_bytes,
            state: Mutex::new(State::default()),
            gate: tokio::sync::Mutex::new(()),
            searches: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement, so a panic elsewhere leaves it usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lookups answered by the index and lookups that scanned SQLite, since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.searches.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }

    /// Bytes held now (approximately), over all partitions.
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    /// Counts a lookup the index answered.
    pub fn record_search(&self) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CACHE_VECTOR_INDEX_SEARCHES_TOTAL, "outcome" => "index").increment(1);
    }

    /// Counts a lookup that scanned SQLite, and why.
    pub fn record_fallback(&self, reason: Fallback) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CACHE_VECTOR_INDEX_SEARCHES_TOTAL, "outcome" => "scan").increment(1);
        metrics::counter!(CACHE_VECTOR_INDEX_FALLBACKS_TOTAL, "reason" => reason.as_str())
            .increment(1);
    }

    /// The most similar servable row of the scope, loading its partition on first use.
    /// Records nothing: the caller knows whether the answer is finally served.
    pub async fn nearest(self: &Arc<Self>, scope: &SemanticScope<'_>, query: &[f32]) -> Answer {
        if self.max_bytes == 0 {
            return Answer::Scan(Fallback::Disabled);
        }
        let key: Key = (scope.workspace_id.to_string(), scope.node_type.to_string());
        enum Next {
            Search(Arc<RwLock<Partition>>),
            Scan(Fallback),
            Load(u64),
        }
        let next = {
            let mut state = self.state();
            state.tick += 1;
            let tick = state.tick;
            match state.slots.get_mut(&key) {
                Some(Slot::Ready {
                    partition, used, ..
                }) => {
                    *used = tick;
                    Next::Search(Arc::clone(partition))
                }
                Some(Slot::Loading { .. }) => Next::Scan(Fallback::Loading),
                Some(Slot::OverBudget) => Next::Scan(Fallback::OverBudget),
                None => {
                    state.tickets += 1;
                    let ticket = state.tickets;
                    state.slots.insert(key.clone(), Slot::Loading { ticket });
                    Next::Load(ticket)
                }
            }
        };
        let ticket = match next {
            Next::Search(partition) => {
                return search(partition, query, scope.max_role.level(), scope.now_ms).await;
            }
            Next::Scan(reason) => return Answer::Scan(reason),
            Next::Load(ticket) => ticket,
        };
        // Its own task: a lookup dropped halfway (the client left) must not strand the slot
        // in Loading. The first lookup waits for it; others meanwhile scan.
        let load = tokio::spawn(Arc::clone(self).load(key, ticket, query.len()));
        match load.await {
            Ok(Ok(Loaded::Ready(partition))) => {
                search(partition, query, scope.max_role.level(), scope.now_ms).await
            }
            Ok(Ok(Loaded::OverBudget)) => Answer::Scan(Fallback::OverBudget),
            Ok(Ok(Loaded::Superseded)) => Answer::Scan(Fallback::Loading),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "loading the semantic cache's in-memory index failed; scanning SQLite");
                Answer::Scan(Fallback::LoadFailed)
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading the semantic cache's in-memory index panicked; scanning SQLite");
                Answer::Scan(Fallback::LoadFailed)
            }
        }
    }

    async fn load(self: Arc<Self>, key: Key, ticket: u64, dims: usize) -> StoreResult<Loaded> {
        let result = self.load_holding_gate(&key, ticket, dims).await;
        if !matches!(result, Ok(Loaded::Ready(_))) {
            // Failed or did not fit: leave no Loading slot behind.
            let mut state = self.state();
            if matches!(state.slots.get(&key), Some(Slot::Loading { ticket: t }) if *t == ticket) {
                match &result {
                    Ok(Loaded::OverBudget) => {
                        state.slots.insert(key, Slot::OverBudget);
                    }
                    _ => {
                        state.slots.remove(&key);
                    }
                }
            }
        }
        result
    }

    async fn load_holding_gate(&self, key: &Key, ticket: u64, dims: usize) -> StoreResult<Loaded> {
        let _gate = self.gate.lock().await;
        let still_ours = |state: &State| matches!(state.slots.get(key), Some(Slot::Loading { ticket: t }) if *t == ticket);
        if !still_ours(&self.state()) {
            return Ok(Loaded::Superseded);
        }
        let started = Instant::now();
        // Counts rejected rows too (the covering index answers without reading rows): an
        // upper bound is what the budget check needs.
        let rows = super::sqlite::partition_rows(&self.pool, &key.0, &key.1).await?;
        let estimate = Partition::estimate(dims, rows, ID_LEN);
        if estimate > self.max_bytes {
            tracing::warn!(
                workspace_id = %key.0,
                node_type = %key.1,
                rows,
                bytes = estimate,
                max_bytes = self.max_bytes,
                "the semantic cache's entries of this workspace and node type exceed \
                 cache.semantic.sqlite_index_max_bytes; their lookups scan SQLite"
            );
            return Ok(Loaded::OverBudget);
        }
        {
            let mut state = self.state();
            self.make_room(&mut state, estimate, key);
        }
        let partition =
            super::sqlite::read_partition(&self.pool, &key.0, &key.1, dims, rows).await?;
        let bytes = partition.bytes();
        let rows = partition.len();
        let partition = Arc::new(RwLock::new(partition));
        let mut state = self.state();
        if !still_ours(&state) {
            return Ok(Loaded::Superseded);
        }
        state.tick += 1;
        let used = state.tick;
        state.slots.insert(
            key.clone(),
            Slot::Ready {
                partition: Arc::clone(&partition),
                bytes,
                used,
            },
        );
        state.bytes += bytes;
        self.make_room(&mut state, 0, key);
        metrics::gauge!(CACHE_VECTOR_INDEX_BYTES).set(state.bytes as f64);
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(CACHE_VECTOR_INDEX_LOAD_SECONDS).record(seconds);
        tracing::debug!(workspace_id = %key.0, node_type = %key.1, rows, bytes, seconds, "loaded a semantic index partition");
        Ok(Loaded::Ready(partition))
    }

    /// Evicts the least recently searched partitions other than `keep` until `extra` more
    /// bytes fit; if even `keep` alone is over, it goes too (and becomes OverBudget).
    fn make_room(&self, state: &mut State, extra: u64, keep: &Key) {
        if state.bytes + extra <= self.max_bytes {
            return;
        }
        let mut ready: Vec<(u64, Key)> = state
            .slots
            .iter()
            .filter_map(|(k, slot)| match slot {
                Slot::Ready { used, .. } if k != keep => Some((*used, k.clone())),
                _ => None,
            })
            .collect();
        ready.sort();
        for (_, k) in ready {
            if state.bytes + extra <= self.max_bytes {
                break;
            }
            remove_slot(state, &k);
        }
        if state.bytes + extra > self.max_bytes
            && matches!(state.slots.get(keep), Some(Slot::Ready { .. }))
        {
            remove_slot(state, keep);
            state.slots.insert(keep.clone(), Slot::OverBudget);
            tracing::warn!(
                workspace_id = %keep.0,
                node_type = %keep.1,
                max_bytes = self.max_bytes,
                "the semantic cache's entries of this workspace and node type outgrew \
                 cache.semantic.sqlite_index_max_bytes; their lookups scan SQLite"
            );
        }
        metrics::gauge!(CACHE_VECTOR_INDEX_BYTES).set(state.bytes as f64);
    }

    /// Takes the write gate for a write to `semantic_cache` in `workspace_id` (None: any
    /// workspace). Take it before a pooled connection, never while holding one: the loader
    /// holds the gate while it waits for a connection.
    pub async fn writer(&self, workspace_id: Option<&str>) -> Writer<'_> {
        if self.max_bytes == 0 {
            return Writer::none();
        }
        let gate = self.gate.lock().await;
        Writer {
            index: Some(self),
            _gate: Some(gate),
            scope: workspace_id.map(str::to_string),
            ops: Vec::new(),
            applied: false,
        }
    }

    /// Forgets the partitions of `workspace_id` (None: all) so they reload on next use.
    fn invalidate(&self, workspace_id: Option<&str>) {
        let mut state = self.state();
        let keys: Vec<Key> = state
            .slots
            .iter()
            .filter(|(k, slot)| {
                !matches!(slot, Slot::Loading { .. }) && workspace_id.is_none_or(|ws| k.0 == ws)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            remove_slot(&mut state, &key);
        }
        metrics::gauge!(CACHE_VECTOR_INDEX_BYTES).set(state.bytes as f64);
    }

    /// The Ready partitions of a workspace, with their keys.
    fn ready_in(&self, workspace_id: &str) -> Vec<(Key, Arc<RwLock<Partition>>)> {
        self.state()
            .slots
            .iter()
            .filter_map(|(k, slot)| match slot {
                Slot::Ready { partition, .. } if k.0 == workspace_id => {
                    Some((k.clone(), Arc::clone(partition)))
                }
                _ => None,
            })
            .collect()
    }

    /// Records a partition's new size and keeps the budget.
    fn resized(&self, key: &Key, partition: &Arc<RwLock<Partition>>, bytes: u64) {
        let mut state = self.state();
        let State {
            slots,
            bytes: total,
            ..
        } = &mut *state;
        match slots.get_mut(key) {
            // Only if the slot still holds this partition (an invalidation may have won).
            Some(Slot::Ready {
                partition: held,
                bytes: old,
                ..
            }) if Arc::ptr_eq(held, partition) => {
                *total = *total - *old + bytes;
                *old = bytes;
            }
            _ => return,
        }
        self.make_room(&mut state, 0, key);
    }

    async fn apply(&self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Insert {
                    key,
                    rowid,
                    id,
                    role,
                    expires_at_ms,
                    embedding,
                } => {
                    let partition = match self.state().slots.get(&key) {
                        Some(Slot::Ready { partition, .. }) => Arc::clone(partition),
                        _ => continue,
                    };
                    let bytes = {
                        let mut held = partition.write().await;
                        held.push(rowid, &id, role, expires_at_ms, &embedding);
                        held.bytes()
                    };
                    self.resized(&key, &partition, bytes);
                }
                Op::Remove { workspace_id, ids } => {
                    for (key, partition) in self.ready_in(&workspace_id) {
                        let bytes = {
                            let mut held = partition.write().await;
                            let before = held.len();
                            for id in &ids {
                                held.remove(id);
                            }
                            if held.len() == before {
                                continue;
                            }
                            held.bytes()
                        };
                        self.resized(&key, &partition, bytes);
                    }
                    // Fewer rows may fit now: let the next lookup try again.
                    let mut state = self.state();
                    state.slots.retain(|k, slot| {
                        !(k.0 == workspace_id && matches!(slot, Slot::OverBudget))
                    });
                }
                Op::Drop {
                    workspace_id,
                    node_type,
                } => {
                    let mut state = self.state();
                    let keys: Vec<Key> = state
                        .slots
                        .iter()
                        .filter(|(k, slot)| {
                            !matches!(slot, Slot::Loading { .. })
                                && k.0 == workspace_id
                                && node_type.as_ref().is_none_or(|nt| &k.1 == nt)
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in keys {
                        remove_slot(&mut state, &key);
                    }
                    metrics::gauge!(CACHE_VECTOR_INDEX_BYTES).set(state.bytes as f64);
                }
                Op::Clear => self.invalidate(None),
            }
        }
    }
}

fn remove_slot(state: &mut State, key: &Key) {
    if let Some(Slot::Ready { bytes, .. }) = state.slots.remove(key) {
        state.bytes -= bytes;
    }
}

/// Searches a partition: small ones here, large ones on a blocking thread.
async fn search(
    partition: Arc<RwLock<Partition>>,
    query: &[f32],
    max_role: i16,
    now_ms: i64,
) -> Answer {
    {
        let held = partition.read().await;
        if held.len() * held.dims <= INLINE_SEARCH_WORK {
            return match held.nearest(query, max_role, now_ms) {
                Ok(best) => Answer::Index(best),
                Err(reason) => Answer::Scan(reason),
            };
        }
    }
    let query = query.to_vec();
    let found = tokio::task::spawn_blocking(move || {
        partition.blocking_read().nearest(&query, max_role, now_ms)
    })
    .await;
    match found {
        Ok(Ok(best)) => Answer::Index(best),
        Ok(Err(reason)) => Answer::Scan(reason),
        Err(e) => {
            tracing::warn!(error = %e, "a semantic index search panicked; scanning SQLite");
            Answer::Scan(Fallback::LoadFailed)
        }
    }
}

/// A change to apply after its transaction commits.
enum Op {
    Insert {
        key: Key,
        rowid: i64,
        id: String,
        role: i16,
        expires_at_ms: i64,
        embedding: Vec<f32>,
    },
    Remove {
        workspace_id: String,
        ids: Vec<String>,
    },
    /// Forget partitions (they reload on next use): bulk deletes and deleted workspaces.
    Drop {
        workspace_id: String,
        node_type: Option<String>,
    },
    Clear,
}

/// A write to `semantic_cache` in progress: holds the index's gate, collects what the write
/// changed, and applies it with [`Writer::apply`] after the commit. Dropped without applying
/// (an error, or a cancelled request), it invalidates the partitions the write may have
/// touched, since the commit may have happened. On PostgreSQL, and for the exact cache, it is
/// [`Writer::none`] and does nothing.
pub struct Writer<'a> {
    index: Option<&'a VectorIndex>,
    // Declared after `index`, dropped after `Drop::drop` ran: the gate is released only once
    // an unapplied write has invalidated what it touched.
    _gate: Option<tokio::sync::MutexGuard<'a, ()>>,
    scope: Option<String>,
    ops: Vec<Op>,
    applied: bool,
}

impl Writer<'static> {
    pub fn none() -> Writer<'static> {
        Writer {
            index: None,
            _gate: None,
            scope: None,
            ops: Vec::new(),
            applied: true,
        }
    }
}

impl Writer<'_> {
    /// A row was inserted with this rowid.
    pub fn inserted(&mut self, entry: &NewSemanticEntry, rowid: i64) {
        if self.index.is_none() {
            return;
        }
        self.ops.push(Op::Insert {
            key: (entry.workspace_id.clone(), entry.node_type.clone()),
            rowid,
            id: entry.id.clone(),
            role: entry.required_role.level(),
            expires_at_ms: entry.expires_at_ms,
            embedding: entry.embedding.clone(),
        });
    }

    /// Rows were deleted or rejected: either way never served again.
    pub fn removed(&mut self, workspace_id: &str, ids: Vec<String>) {
        if self.index.is_none() || ids.is_empty() {
            return;
        }
        self.ops.push(Op::Remove {
            workspace_id: workspace_id.to_string(),
            ids,
        });
    }

    /// Many rows of a workspace went (all, or of one node type).
    pub fn dropped(&mut self, workspace_id: &str, node_type: Option<&str>) {
        if self.index.is_none() {
            return;
        }
        self.ops.push(Op::Drop {
            workspace_id: workspace_id.to_string(),
            node_type: node_type.map(str::to_string),
        });
    }

    /// Every row went (re-index).
    pub fn cleared(&mut self) {
        if self.index.is_none() {
            return;
        }
        self.ops.push(Op::Clear);
    }

    /// Applies the changes; call right after the commit.
    pub async fn apply(mut self) {
        let Some(index) = self.index else {
            return;
        };
        let ops = std::mem::take(&mut self.ops);
        index.apply(ops).await;
        self.applied = true;
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if let (false, Some(index)) = (self.applied, self.index) {
            tracing::debug!(
                workspace_id = self.scope.as_deref().unwrap_or("*"),
                "a semantic cache write ended without updating the in-memory index; forgetting its partitions"
            );
            index.invalidate(self.scope.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Rows whose similarity this thread computed exactly.
        pub(super) static EXACT_ROWS: Cell<usize> = const { Cell::new(0) };
    }

    #[test]
    fn the_first_pass_leaves_few_rows_to_compute_exactly() {
        let dims = 384;
        let mut seed = 7u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        let mut p = Partition::with_capacity(dims, 2000);
        for i in 0..2000 {
            let v: Vec<f32> = centres[i % 20].iter().map(|x| x + next() * 0.5).collect();
            p.push(i as i64, &format!("r{i}"), 0, 100, &v);
        }
        let query: Vec<f32> = p.vectors[..dims].iter().map(|x| x + next() * 0.1).collect();
        EXACT_ROWS.with(|n| n.set(0));
        let best = p.nearest(&query, 0, 0).unwrap().unwrap();
        assert_eq!(&*best.id, "r0");
        let exact = EXACT_ROWS.with(Cell::get);
        assert!(exact < 20, "{exact} of 2000 rows computed exactly");
    }

    fn partition(rows: &[(&str, i16, i64, [f32; 3])]) -> Partition {
        let mut p = Partition::with_capacity(3, rows.len());
        for (i, (id, role, expires, v)) in rows.iter().enumerate() {
            assert!(p.push(i as i64 + 1, id, *role, *expires, v));
        }
        p
    }

    fn best(p: &Partition, q: [f32; 3], role: i16, now: i64) -> Option<(String, f64)> {
        p.nearest(&q, role, now)
            .unwrap()
            .map(|c| (c.id.to_string(), c.similarity))
    }

    #[test]
    fn nearest_applies_role_and_expiry_and_orders_ties() {
        let p = partition(&[
            ("a", 0, 100, [3.0, 4.0, 0.0]),
            ("b", 2, 100, [1.0, 0.0, 0.0]),
            ("c", 0, 10, [1.0, 0.0, 0.0]),
            ("d", 1, 100, [6.0, 8.0, 0.0]),
            ("e", 1, 100, [3.0, 4.0, 0.0]),
        ]);
        assert_eq!(best(&p, [1.0, 0.0, 0.0], 2, 0), Some(("b".into(), 1.0)));
        assert_eq!(
            best(&p, [1.0, 0.0, 0.0], 1, 0),
            Some(("c".into(), 1.0)),
            "b is above the role"
        );
        // c expired; a, d and e are equally similar: the highest role, then the lowest rowid.
        assert_eq!(best(&p, [1.0, 0.0, 0.0], 1, 10), Some(("d".into(), 0.6)));
        assert_eq!(best(&p, [1.0, 0.0, 0.0], 0, 10), Some(("a".into(), 0.6)));
        assert_eq!(best(&p, [1.0, 0.0, 0.0], 0, 100), None);
        assert_eq!(
            p.nearest(&[1.0, 0.0], 2, 0),
            Err(Fallback::Dimensions),
            "another dimension is the SQL scan's to answer"
        );
    }

    #[test]
    fn removing_swaps_the_last_row_in_and_keeps_lookups_right() {
        let mut p = partition(&[
            ("a", 0, 100, [1.0, 0.0, 0.0]),
            ("b", 0, 100, [0.0, 1.0, 0.0]),
            ("c", 0, 100, [0.0, 0.0, 1.0]),
        ]);
        assert!(p.remove("a"));
        assert!(!p.remove("a"));
        assert_eq!(p.len(), 2);
        assert_eq!(best(&p, [0.0, 0.0, 1.0], 0, 0), Some(("c".into(), 1.0)));
        assert_eq!(best(&p, [0.0, 1.0, 0.0], 0, 0), Some(("b".into(), 1.0)));
        assert!(p.remove("c"));
        assert!(p.remove("b"));
        assert!(p.is_empty());
        assert_eq!(best(&p, [0.0, 1.0, 0.0], 0, 0), None);
        assert!(p.push(9, "d", 0, 100, &[0.0, 1.0, 0.0]));
        assert!(!p.push(10, "d", 0, 100, &[0.0, 1.0, 0.0]), "ids are unique");
        assert!(!p.push(11, "e", 0, 100, &[0.0, 1.0]), "wrong dimension");
        assert_eq!(best(&p, [0.0, 1.0, 0.0], 0, 0), Some(("d".into(), 1.0)));
    }

    /// The first pass skips rows, never answers: on clustered data with near-duplicates, ties,
    /// zero vectors and filters, the answer is always the exhaustive one, to the bit.
    #[test]
    fn the_first_pass_never_changes_the_answer() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for dims in [3, 16, 384] {
            let centres: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..dims).map(|_| next()).collect())
                .collect();
            let mut p = Partition::with_capacity(dims, 0);
            for i in 0..400 {
                let centre = &centres[i % centres.len()];
                let v: Vec<f32> = match i % 10 {
                    0 => vec![0.0; dims],                          // degenerate: exact only
                    1 => centre.clone(),                           // exact duplicates: ties
                    2 => centre.iter().map(|x| x * 2.0).collect(), // same direction: ties in cosine
                    _ => centre.iter().map(|x| x + next() * 0.05).collect(),
                };
                let role = (i % 3) as i16;
                let expires = if i % 7 == 0 { 5 } else { 100 };
                assert!(p.push(i as i64, &format!("r{i}"), role, expires, &v));
            }
            for round in 0..200 {
                let centre = &centres[round % centres.len()];
                let query: Vec<f32> = match round % 5 {
                    0 => centre.clone(),
                    1 => vec![0.0; dims],
                    _ => centre.iter().map(|x| x + next() * 0.1).collect(),
                };
                let (role, now) = ((round % 3) as i16, [0, 10][round % 2]);
                let fast = p.nearest(&query, role, now).unwrap();
                let slow = p.nearest_exhaustive(&query, role, now);
                assert_eq!(
                    fast.as_ref().map(|c| (&c.id, c.similarity.to_bits())),
                    slow.as_ref().map(|c| (&c.id, c.similarity.to_bits())),
                    "{dims} dims, round {round}"
                );
            }
        }
    }

    #[test]
    fn little_endian_rows_equal_f32_rows() {
        let mut a = Partition::with_capacity(3, 1);
        let mut b = Partition::with_capacity(3, 1);
        let v = [0.1f32, -2.5, 7.25];
        assert!(a.push(1, "x", 0, 100, &v));
        assert!(b.push_le_bytes(1, "x", 0, 100, &vector::to_le_bytes(&v)));
        assert!(!b.push_le_bytes(2, "y", 0, 100, &[0u8; 8]));
        assert_eq!(a.vectors, b.vectors);
        assert_eq!(a.norms, b.norms);
    }

    #[test]
    fn the_estimate_covers_what_a_loaded_partition_takes() {
        let rows = 1000;
        let mut p = Partition::with_capacity(16, rows);
        for i in 0..rows {
            p.push(i as i64, &format!("{i:032x}"), 0, 1, &[0.5; 16]);
        }
        let estimate = Partition::estimate(16, rows, 32);
        assert!(p.bytes() <= estimate, "{} > {estimate}", p.bytes());
        assert!(p.bytes() * 2 > estimate, "{} vs {estimate}", p.bytes());
    }
}
