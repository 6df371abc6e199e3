//! The result caches' rules: `Caches` owns keys, TTLs, roles, thresholds, the deny-list, the
//! embedder, eviction and purging, and the metrics; persistence is `Store::cache()`.
//!
//! - Exact cache: the key is the sha256 of the RFC 8785 canonical JSON of workspace, node type,
//!   config and inputs (`key.rs`), computed here, never taken from the client.
//! - Semantic cache: the most similar entry of the workspace and node type at or above a cosine
//!   threshold; an identical prompt hits without a vector search.
//! - Both: entries belong to one workspace and carry a required role; a lookup sees only the
//!   caller's workspace and entries at or below the caller's role, never rejected or expired
//!   ones. Another workspace's entries are indistinguishable from absent ones.

pub mod bench;
pub mod denylist;
pub mod embedder;
pub mod key;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cas::Digest;
use crate::clock::Clock;
use crate::config::CacheConfig;
use crate::store::cache::{
    CacheEntry, CacheKind, NewExactEntry, NewSemanticEntry, Purged, SemanticScope, SemanticSearch,
};
use crate::store::{Role, Store, StoreError};
use crate::telemetry::names::*;
use denylist::DenyList;
use embedder::{EmbedError, Embedder};

/// Rows deleted per purge transaction.
const PURGE_BATCH: u32 = 1000;
/// Longest node type name.
const MAX_NODE_TYPE_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("node type {0:?} must be 1 to 128 characters without control characters")]
    InvalidNodeType(String),
    #[error("threshold {value} is outside the configured bounds {min} to {max}")]
    InvalidThreshold { value: f64, min: f64, max: f64 },
    #[error("ttl_seconds {value} is outside 1 to {max} (cache.max_ttl_seconds)")]
    InvalidTtl { value: u64, max: u64 },
    #[error("{0}")]
    InvalidResult(&'static str),
    #[error(transparent)]
    UnsafeNumber(#[from] key::UnsafeNumber),
    #[error("{0:?} is not a sha256 digest (64 hex characters)")]
    InvalidDigest(String),
    #[error("the workspace has no blob {0}; upload it to /api/v1/cas first")]
    UnknownBlob(String),
    #[error("the result is {size} bytes of JSON, above cache.max_result_bytes ({limit}){hint}")]
    ResultTooLarge {
        size: usize,
        limit: usize,
        hint: &'static str,
    },
    #[error("the prompt is {size} bytes, above cache.semantic.max_prompt_bytes ({limit})")]
    PromptTooLong { size: usize, limit: usize },
    #[error("required_role {wanted} is above the caller's role {have}")]
    RoleTooHigh {
        wanted: &'static str,
        have: &'static str,
    },
    #[error(
        "the {field} contains data matching the deny-list pattern {pattern:?}; nothing was stored"
    )]
    RefusedPii {
        pattern: String,
        field: &'static str,
    },
    #[error("the embedding has {got} dimensions; this server's semantic cache uses {expected}")]
    WrongDimension { expected: u32, got: usize },
    #[error("the embedding {0}")]
    InvalidEmbedding(&'static str),
    #[error("send an embedding: no embedder is configured (cache.embedder.url)")]
    EmbeddingRequired,
    #[error("the embedder failed: {0}")]
    Embedder(String),
    #[error("{got} queries in one batch; at most {max} (cache.max_batch)")]
    TooManyQueries { got: usize, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type CacheResult<T> = Result<T, CacheError>;

/// Who asks: the workspace and the role of the caller's key.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub workspace_id: &'a str,
    pub role: Role,
}

/// What an exact store carries: inline JSON or the digest of a CAS blob.
#[derive(Debug, Clone)]
pub enum ResultBody {
    Inline(Value),
    Blob(String),
}

#[derive(Debug, Clone)]
pub struct ExactPut {
    pub node_type: String,
    pub config: Value,
    pub inputs: Value,
    pub result: ResultBody,
    pub execution_ms: Option<u64>,
    pub ttl_seconds: Option<u64>,
    pub required_role: Option<Role>,
}

#[derive(Debug, Clone)]
pub struct ExactQuery {
    pub node_type: String,
    pub config: Value,
    pub inputs: Value,
}

#[derive(Debug, Clone)]
pub struct SemanticPut {
    pub node_type: String,
    pub prompt: String,
    pub embedding: Option<Vec<f32>>,
    pub result: Value,
    pub execution_ms: Option<u64>,
    pub ttl_seconds: Option<u64>,
    pub required_role: Option<Role>,
}

#[derive(Debug, Clone)]
pub struct SemanticQuery {
    pub node_type: String,
    pub prompt: String,
    pub embedding: Option<Vec<f32>>,
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub id: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExactHit {
    pub id: String,
    pub result: ResultOut,
    pub age_ms: i64,
    pub saved_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResultOut {
    Inline(Value),
    Blob(String),
}

/// How a semantic hit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The same prompt: no vector search.
    Prompt,
    /// The nearest embedding at or above the threshold.
    Embedding,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit {
    pub id: String,
    pub similarity: f64,
    pub result: Value,
    pub age_ms: i64,
    pub saved_ms: Option<i64>,
    pub matched: Matched,
}

pub struct Caches {
    store: Arc<dyn Store>,
    config: CacheConfig,
    search: SemanticSearch,
    deny: DenyList,
    embedder: Option<Embedder>,
    clock: Arc<dyn Clock>,
    labeled: BTreeSet<String>,
    saved: SavedTime,
}

impl Caches {
    /// Builds the service and makes sure the semantic table matches the configured dimension.
    pub async fn new(
        store: Arc<dyn Store>,
        config: &CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        store
            .cache()
            .prepare_semantic(&config.semantic.table())
            .await?;
        let labeled = config
            .exact
            .ttl_seconds
            .keys()
            .chain(config.semantic.ttl_seconds.keys())
            .cloned()
            .collect();
        Ok(Self {
            store,
            search: SemanticSearch {
                ef_search: config.semantic.ef_search,
                iterative_scan: config.semantic.iterative_scan,
                max_scan_tuples: config.semantic.max_scan_tuples,
                exact_max_entries: config.semantic.exact_search_max_entries,
            },
            deny: DenyList::new(&config.deny_list)?,
            embedder: Embedder::new(&config.embedder)?,
            config: config.clone(),
            clock,
            labeled,
            saved: SavedTime::default(),
        })
    }

    pub fn max_batch(&self) -> usize {
        self.config.max_batch
    }

    // ---- exact ----

    pub async fn store_exact(&self, caller: Caller<'_>, put: ExactPut) -> CacheResult<StoredEntry> {
        let label = self.label(&put.node_type);
        let result = self.prepare_exact(caller, &put).await;
        let entry = match result {
            Ok(entry) => entry,
            Err(e) => {
                record_store(CacheKind::Exact, label, &e);
                return Err(e);
            }
        };
        let evicted = self
            .store
            .cache()
            .insert_exact(&entry, self.config.max_entries_per_workspace)
            .await?;
        record_evictions(CacheKind::Exact, "capacity", evicted);
        metrics::counter!(CACHE_STORES_TOTAL, "cache" => "exact", "node_type" => label, "outcome" => "stored").increment(1);
        Ok(StoredEntry {
            id: entry.id,
            expires_at_ms: entry.expires_at_ms,
        })
    }

    async fn prepare_exact(
        &self,
        caller: Caller<'_>,
        put: &ExactPut,
    ) -> CacheResult<NewExactEntry> {
        check_node_type(&put.node_type)?;
        let required_role = check_required_role(caller, put.required_role)?;
        let ttl = self.ttl(CacheKind::Exact, &put.node_type, put.ttl_seconds)?;
        let key_hash = key::exact_key(
            caller.workspace_id,
            &put.node_type,
            &put.config,
            &put.inputs,
        )?;
        let (result, result_digest) = match &put.result {
            ResultBody::Inline(value) => {
                let text = self.check_result(
                    value,
                    " (store large results in the CAS and send result_digest)",
                )?;
                (Some(text), None)
            }
            ResultBody::Blob(digest) => {
                let digest = Digest::parse(digest)
                    .ok_or_else(|| CacheError::InvalidDigest(digest.clone()))?;
                if self
                    .store
                    .blob_ref(caller.workspace_id, &digest.hex())
                    .await?
                    .is_none()
                {
                    return Err(CacheError::UnknownBlob(digest.hex()));
                }
                (None, Some(digest.hex()))
            }
        };
        let now = self.clock.now_ms();
        Ok(NewExactEntry {
            id: new_id(),
            workspace_id: caller.workspace_id.to_string(),
            key_hash,
            node_type: put.node_type.clone(),
            required_role,
            result,
            result_digest,
            execution_ms: put.execution_ms.map(clamp_ms),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl as i64 * 1000),
        })
    }

    pub async fn lookup_exact(
        &self,
        caller: Caller<'_>,
        query: &ExactQuery,
    ) -> CacheResult<Option<ExactHit>> {
        check_node_type(&query.node_type)?;
        let key_hash = key::exact_key(
            caller.workspace_id,
            &query.node_type,
            &query.config,
            &query.inputs,
        )?;
        self.lookup_exact_key(caller, &query.node_type, &key_hash)
            .await
    }

    /// Many lookups at once; every query is validated before any is answered.
    pub async fn lookup_exact_batch(
        &self,
        caller: Caller<'_>,
        queries: &[ExactQuery],
    ) -> CacheResult<Vec<Option<ExactHit>>> {
        self.check_batch(queries.len())?;
        let keys = queries
            .iter()
            .map(|q| {
                check_node_type(&q.node_type)?;
                Ok(key::exact_key(
                    caller.workspace_id,
                    &q.node_type,
                    &q.config,
                    &q.inputs,
                )?)
            })
            .collect::<CacheResult<Vec<String>>>()?;
        let mut answers = Vec::with_capacity(queries.len());
        for (query, key_hash) in queries.iter().zip(&keys) {
            answers.push(
                self.lookup_exact_key(caller, &query.node_type, key_hash)
                    .await?,
            );
        }
        Ok(answers)
    }

    async fn lookup_exact_key(
        &self,
        caller: Caller<'_>,
        node_type: &str,
        key_hash: &str,
    ) -> CacheResult<Option<ExactHit>> {
        let now = self.clock.now_ms();
        let hit = self
            .store
            .cache()
            .lookup_exact(caller.workspace_id, key_hash, caller.role, now)
            .await?;
        let label = self.label(node_type);
        let Some(hit) = hit else {
            record_lookup(CacheKind::Exact, label, false);
            return Ok(None);
        };
        record_lookup(CacheKind::Exact, label.clone(), true);
        self.saved.add(CacheKind::Exact, label, hit.execution_ms);
        let result = match (hit.result, hit.result_digest) {
            (Some(text), _) => ResultOut::Inline(parse_stored(&text)?),
            (None, Some(digest)) => ResultOut::Blob(digest),
            (None, None) => {
                return Err(StoreError::Database(sqlx::Error::Decode(
                    "an exact entry without a result".into(),
                ))
                .into());
            }
        };
        Ok(Some(ExactHit {
            id: hit.id,
            result,
            age_ms: (now - hit.created_at_ms).max(0),
            saved_ms: hit.execution_ms,
        }))
    }

    // ---- semantic ----

    pub async fn store_semantic(
        &self,
        caller: Caller<'_>,
        put: SemanticPut,
    ) -> CacheResult<StoredEntry> {
        let label = self.label(&put.node_type);
        let entry = match self.prepare_semantic(caller, put).await {
            Ok(entry) => entry,
            Err(e) => {
                record_store(CacheKind::Semantic, label, &e);
                return Err(e);
            }
        };
        let evicted = self
            .store
            .cache()
            .insert_semantic(&entry, self.config.max_entries_per_workspace)
            .await?;
        record_evictions(CacheKind::Semantic, "capacity", evicted);
        metrics::counter!(CACHE_STORES_TOTAL, "cache" => "semantic", "node_type" => label, "outcome" => "stored").increment(1);
        Ok(StoredEntry {
            id: entry.id,
            expires_at_ms: entry.expires_at_ms,
        })
    }

    async fn prepare_semantic(
        &self,
        caller: Caller<'_>,
        put: SemanticPut,
    ) -> CacheResult<NewSemanticEntry> {
        check_node_type(&put.node_type)?;
        self.check_prompt(&put.prompt)?;
        let required_role = check_required_role(caller, put.required_role)?;
        let ttl = self.ttl(CacheKind::Semantic, &put.node_type, put.ttl_seconds)?;
        if let Some(embedding) = &put.embedding {
            self.check_embedding(embedding)?;
        }
        if let Some(pattern) = self.deny.check_text(&put.prompt) {
            return Err(CacheError::RefusedPii {
                pattern: pattern.to_string(),
                field: "prompt",
            });
        }
        let result = self.check_result(&put.result, "")?;
        let embedding = match put.embedding {
            Some(embedding) => embedding,
            None => self
                .embed(&[put.prompt.as_str()])
                .await?
                .pop()
                .unwrap_or_default(),
        };
        let now = self.clock.now_ms();
        Ok(NewSemanticEntry {
            id: new_id(),
            workspace_id: caller.workspace_id.to_string(),
            prompt_hash: prompt_hash(&put.prompt),
            node_type: put.node_type,
            required_role,
            prompt: put.prompt,
            result,
            embedding,
            execution_ms: put.execution_ms.map(clamp_ms),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl as i64 * 1000),
        })
    }

    pub async fn lookup_semantic(
        &self,
        caller: Caller<'_>,
        query: &SemanticQuery,
    ) -> CacheResult<Option<SemanticHit>> {
        let mut answers = self
            .lookup_semantic_many(caller, std::slice::from_ref(query))
            .await?;
        Ok(answers.pop().flatten())
    }

    pub async fn lookup_semantic_batch(
        &self,
        caller: Caller<'_>,
        queries: &[SemanticQuery],
    ) -> CacheResult<Vec<Option<SemanticHit>>> {
        self.check_batch(queries.len())?;
        self.lookup_semantic_many(caller, queries).await
    }

    /// Validates every query, answers identical prompts without a vector search, embeds the
    /// rest that came without an embedding in one embedder call, then searches.
    async fn lookup_semantic_many(
        &self,
        caller: Caller<'_>,
        queries: &[SemanticQuery],
    ) -> CacheResult<Vec<Option<SemanticHit>>> {
        let mut thresholds = Vec::with_capacity(queries.len());
        for query in queries {
            check_node_type(&query.node_type)?;
            self.check_prompt(&query.prompt)?;
            thresholds.push(self.threshold(query.threshold)?);
            if let Some(embedding) = &query.embedding {
                self.check_embedding(embedding)?;
            }
        }
        let now = self.clock.now_ms();
        let mut answers: Vec<Option<SemanticHit>> = vec![None; queries.len()];
        let mut pending: Vec<usize> = Vec::new();
        for (i, query) in queries.iter().enumerate() {
            let scope = scope(caller, &query.node_type, now);
            match self
                .store
                .cache()
                .semantic_by_prompt(&scope, &query.prompt, &prompt_hash(&query.prompt))
                .await?
            {
                Some(hit) => {
                    answers[i] = Some(
                        self.semantic_hit(hit, Matched::Prompt, &query.node_type, now)
                            .await?,
                    )
                }
                None => pending.push(i),
            }
        }
        let need_embedding: Vec<&str> = pending
            .iter()
            .filter(|i| queries[**i].embedding.is_none())
            .map(|i| queries[*i].prompt.as_str())
            .collect();
        let mut embedded = if need_embedding.is_empty() {
            Vec::new()
        } else {
            self.embed(&need_embedding).await?
        }
        .into_iter();
        for i in pending {
            let query = &queries[i];
            let embedding = match &query.embedding {
                Some(e) => e.clone(),
                None => embedded.next().unwrap_or_default(),
            };
            let scope = scope(caller, &query.node_type, now);
            let nearest = self
                .store
                .cache()
                .semantic_nearest(&scope, &embedding, &self.search)
                .await?;
            match nearest {
                Some(hit) if hit.similarity >= thresholds[i] => {
                    answers[i] = Some(
                        self.semantic_hit(hit, Matched::Embedding, &query.node_type, now)
                            .await?,
                    );
                }
                _ => record_lookup(CacheKind::Semantic, self.label(&query.node_type), false),
            }
        }
        Ok(answers)
    }

    async fn semantic_hit(
        &self,
        hit: crate::store::cache::SemanticHit,
        matched: Matched,
        node_type: &str,
        now: i64,
    ) -> CacheResult<SemanticHit> {
        self.store
            .cache()
            .record_hit(CacheKind::Semantic, &hit.id, now)
            .await?;
        let label = self.label(node_type);
        record_lookup(CacheKind::Semantic, label.clone(), true);
        self.saved.add(CacheKind::Semantic, label, hit.execution_ms);
        metrics::histogram!(CACHE_HIT_SIMILARITY).record(hit.similarity);
        Ok(SemanticHit {
            result: parse_stored(&hit.result)?,
            id: hit.id,
            similarity: hit.similarity,
            age_ms: (now - hit.created_at_ms).max(0),
            saved_ms: hit.execution_ms,
            matched,
        })
    }

    // ---- both ----

    pub async fn entry(
        &self,
        caller: Caller<'_>,
        kind: CacheKind,
        id: &str,
    ) -> CacheResult<Option<CacheEntry>> {
        Ok(self
            .store
            .cache()
            .get_entry(kind, caller.workspace_id, id, caller.role)
            .await?)
    }

    /// Deletes one entry the caller could be served. False when there is none.
    pub async fn delete(&self, caller: Caller<'_>, kind: CacheKind, id: &str) -> CacheResult<bool> {
        let deleted = self
            .store
            .cache()
            .delete_entry(kind, caller.workspace_id, id, caller.role)
            .await?;
        record_evictions(kind, "deleted", u64::from(deleted));
        Ok(deleted)
    }

    /// Deletes the workspace's entries, all or of one node type.
    pub async fn delete_all(
        &self,
        caller: Caller<'_>,
        kind: CacheKind,
        node_type: Option<&str>,
    ) -> CacheResult<u64> {
        if let Some(node_type) = node_type {
            check_node_type(node_type)?;
        }
        let deleted = self
            .store
            .cache()
            .delete_entries(kind, caller.workspace_id, node_type)
            .await?;
        record_evictions(kind, "deleted", deleted);
        Ok(deleted)
    }

    /// Marks a wrong hit: the entry is never served again. False when the caller could not
    /// have been served it.
    pub async fn reject(&self, caller: Caller<'_>, kind: CacheKind, id: &str) -> CacheResult<bool> {
        let now = self.clock.now_ms();
        let rejected = self
            .store
            .cache()
            .reject_entry(kind, caller.workspace_id, id, caller.role, now)
            .await?;
        if rejected == Some(true) {
            metrics::counter!(CACHE_REJECTIONS_TOTAL, "cache" => kind.as_str()).increment(1);
        }
        Ok(rejected.is_some())
    }

    /// Deletes expired entries and refreshes the entries gauge.
    pub async fn purge(&self) -> CacheResult<Purged> {
        let purged = self
            .store
            .cache()
            .purge_expired(self.clock.now_ms(), PURGE_BATCH)
            .await?;
        record_evictions(CacheKind::Exact, "expired", purged.exact);
        record_evictions(CacheKind::Semantic, "expired", purged.semantic);
        for (kind, entries) in self.store.cache().entry_counts().await? {
            metrics::gauge!(CACHE_ENTRIES, "cache" => kind.as_str()).set(entries as f64);
        }
        Ok(purged)
    }

    /// Purges every `cache.purge_interval_seconds`, from now on.
    pub fn spawn_purger(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let every = Duration::from_secs(self.config.purge_interval_seconds);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.purge().await {
                    Ok(p) if p.exact + p.semantic > 0 => tracing::debug!(
                        exact = p.exact,
                        semantic = p.semantic,
                        "purged expired cache entries"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purging expired cache entries failed"),
                }
            }
        });
    }

    // ---- rules ----

    /// The `node_type` label: configured node types by name, all others `other`.
    fn label(&self, node_type: &str) -> String {
        if self.labeled.contains(node_type) {
            node_type.to_string()
        } else {
            "other".to_string()
        }
    }

    fn ttl(&self, kind: CacheKind, node_type: &str, requested: Option<u64>) -> CacheResult<u64> {
        let max = self.config.max_ttl_seconds;
        if let Some(ttl) = requested {
            if ttl == 0 || ttl > max {
                return Err(CacheError::InvalidTtl { value: ttl, max });
            }
            return Ok(ttl);
        }
        let table = match kind {
            CacheKind::Exact => &self.config.exact.ttl_seconds,
            CacheKind::Semantic => &self.config.semantic.ttl_seconds,
        };
        Ok(table
            .get(node_type)
            .copied()
            .unwrap_or(self.config.default_ttl_seconds))
    }

    fn threshold(&self, requested: Option<f64>) -> CacheResult<f64> {
        let semantic = &self.config.semantic;
        let value = requested.unwrap_or(semantic.default_threshold);
        if !(semantic.min_threshold..=semantic.max_threshold).contains(&value) {
            return Err(CacheError::InvalidThreshold {
                value,
                min: semantic.min_threshold,
                max: semantic.max_threshold,
            });
        }
        Ok(value)
    }

    fn check_batch(&self, len: usize) -> CacheResult<()> {
        if len > self.config.max_batch {
            return Err(CacheError::TooManyQueries {
                got: len,
                max: self.config.max_batch,
            });
        }
        Ok(())
    }

    fn check_prompt(&self, prompt: &str) -> CacheResult<()> {
        let limit = self.config.semantic.max_prompt_bytes;
        if prompt.len() > limit {
            return Err(CacheError::PromptTooLong {
                size: prompt.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The result's JSON text, after the size limit and the deny-list.
    fn check_result(&self, value: &Value, hint: &'static str) -> CacheResult<String> {
        let text = serde_json::to_string(value)
            .map_err(|_| CacheError::InvalidResult("the result is not JSON"))?;
        if text.len() > self.config.max_result_bytes {
            return Err(CacheError::ResultTooLarge {
                size: text.len(),
                limit: self.config.max_result_bytes,
                hint,
            });
        }
        if let Some(pattern) = self.deny.check_value(value) {
            return Err(CacheError::RefusedPii {
                pattern: pattern.to_string(),
                field: "result",
            });
        }
        Ok(text)
    }

    fn check_embedding(&self, embedding: &[f32]) -> CacheResult<()> {
        let expected = self.config.semantic.dimensions;
        if embedding.len() != expected as usize {
            return Err(CacheError::WrongDimension {
                expected,
                got: embedding.len(),
            });
        }
        if embedding.iter().any(|x| !x.is_finite()) {
            return Err(CacheError::InvalidEmbedding(
                "has a value that is not a finite 32-bit float",
            ));
        }
        if embedding.iter().all(|x| *x == 0.0) {
            return Err(CacheError::InvalidEmbedding(
                "is all zeros, which has no direction",
            ));
        }
        Ok(())
    }

    async fn embed(&self, prompts: &[&str]) -> CacheResult<Vec<Vec<f32>>> {
        let Some(embedder) = &self.embedder else {
            return Err(CacheError::EmbeddingRequired);
        };
        let vectors = embedder
            .embed(prompts)
            .await
            .map_err(|e: EmbedError| CacheError::Embedder(e.to_string()))?;
        for v in &vectors {
            // The embedder disagreeing with the configuration is the operator's to fix, not the
            // caller's: a 502, not a 422.
            self.check_embedding(v)
                .map_err(|e| CacheError::Embedder(e.to_string()))?;
        }
        Ok(vectors)
    }
}

fn scope<'a>(caller: Caller<'a>, node_type: &'a str, now_ms: i64) -> SemanticScope<'a> {
    SemanticScope {
        workspace_id: caller.workspace_id,
        node_type,
        max_role: caller.role,
        now_ms,
    }
}

fn check_node_type(node_type: &str) -> CacheResult<()> {
    if node_type.is_empty()
        || node_type.len() > MAX_NODE_TYPE_LEN
        || node_type.chars().any(char::is_control)
    {
        return Err(CacheError::InvalidNodeType(
            node_type.chars().take(MAX_NODE_TYPE_LEN).collect(),
        ));
    }
    Ok(())
}

/// The entry's required role: the caller's unless lower is asked. Higher is refused: a write
/// key must not plant entries that admin lookups would prefer.
fn check_required_role(caller: Caller<'_>, requested: Option<Role>) -> CacheResult<Role> {
    match requested {
        None => Ok(caller.role),
        Some(role) if role <= caller.role => Ok(role),
        Some(role) => Err(CacheError::RoleTooHigh {
            wanted: role.as_str(),
            have: caller.role.as_str(),
        }),
    }
}

fn prompt_hash(prompt: &str) -> String {
    hex::encode(Sha256::digest(prompt.as_bytes()))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn clamp_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn parse_stored(text: &str) -> CacheResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))).into())
}

fn record_lookup(kind: CacheKind, label: String, hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    metrics::counter!(CACHE_LOOKUPS_TOTAL, "cache" => kind.as_str(), "node_type" => label, "outcome" => outcome).increment(1);
}

/// Execution time saved per cache and node type, in milliseconds. Prometheus counters here are
/// whole numbers, so the seconds counter is set to the whole seconds of this running sum: exact
/// to the second over any span, with nothing lost to rounding per hit.
#[derive(Default)]
struct SavedTime(Mutex<HashMap<(CacheKind, String), u64>>);

impl SavedTime {
    fn add(&self, kind: CacheKind, label: String, execution_ms: Option<i64>) {
        let Some(ms) = execution_ms.filter(|ms| *ms > 0) else {
            return;
        };
        let total = {
            let mut sums = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let sum = sums.entry((kind, label.clone())).or_default();
            *sum = sum.saturating_add(ms as u64);
            *sum
        };
        metrics::counter!(CACHE_SECONDS_SAVED_TOTAL, "cache" => kind.as_str(), "node_type" => label).absolute(total / 1000);
    }
}

fn record_store(kind: CacheKind, label: String, error: &CacheError) {
    let outcome = match error {
        CacheError::RefusedPii { .. } => "refused_pii",
        CacheError::Store(_) | CacheError::Embedder(_) => return,
        _ => "invalid",
    };
    metrics::counter!(CACHE_STORES_TOTAL, "cache" => kind.as_str(), "node_type" => label, "outcome" => outcome).increment(1);
}

fn record_evictions(kind: CacheKind, reason: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(CACHE_EVICTIONS_TOTAL, "cache" => kind.as_str(), "reason" => reason)
            .increment(n);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use serde_json::json;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// A clock the test moves by hand.
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn service(config: CacheConfig) -> (Caches, Arc<ManualClock>, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::connect(&url, &Default::default())
                .await
                .unwrap(),
        );
        let ws = store.create_workspace("w", 0).await.unwrap().id;
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let caches = Caches::new(store, &config, Arc::clone(&clock) as Arc<dyn Clock>)
            .await
            .unwrap();
        (caches, clock, ws, dir)
    }

    fn small() -> CacheConfig {
        let mut config = CacheConfig::default();
        config.semantic.dimensions = 2;
        config
    }

    fn put(node_type: &str, inputs: Value, result: Value) -> ExactPut {
        ExactPut {
            node_type: node_type.into(),
            config: json!({"model": "x"}),
            inputs,
            result: ResultBody::Inline(result),
            execution_ms: Some(2500),
            ttl_seconds: None,
            required_role: None,
        }
    }

    fn query(node_type: &str, inputs: Value) -> ExactQuery {
        ExactQuery {
            node_type: node_type.into(),
            config: json!({"model": "x"}),
            inputs,
        }
    }

    #[tokio::test]
    async fn ttls_come_from_the_node_type_and_expire_on_the_clock() {
        let (caches, clock, ws, _dir) = service(small()).await;
        let writer = Caller {
            workspace_id: &ws,
            role: Role::Write,
        };
        let start = clock.now_ms();
        for (node_type, ttl) in [
            ("database_query", 300),
            ("http_request", 3_600),
            ("function", 7 * 86_400),
            ("pure", 30 * 86_400),
            ("custom", 86_400),
        ] {
            let stored = caches
                .store_exact(writer, put(node_type, json!(1), json!("r")))
                .await
                .unwrap();
            assert_eq!(stored.expires_at_ms, start + ttl * 1000, "{node_type}");
        }
        let mut custom = put("function", json!(2), json!("r"));
        custom.ttl_seconds = Some(10);
        assert_eq!(
            caches
                .store_exact(writer, custom.clone())
                .await
                .unwrap()
                .expires_at_ms,
            start + 10_000
        );
        custom.ttl_seconds = Some(31 * 86_400);
        assert!(matches!(
            caches.store_exact(writer, custom).await,
            Err(CacheError::InvalidTtl { .. })
        ));

        // database_query lives 5 minutes: a hit just before, a miss at the boundary.
        clock.0.store(start + 299_999, Ordering::SeqCst);
        let hit = caches
            .lookup_exact(writer, &query("database_query", json!(1)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((hit.age_ms, hit.saved_ms), (299_999, Some(2500)));
        clock.0.store(start + 300_000, Ordering::SeqCst);
        assert_eq!(
            caches
                .lookup_exact(writer, &query("database_query", json!(1)))
                .await
                .unwrap(),
            None
        );
        assert!(
            caches
                .lookup_exact(writer, &query("http_request", json!(1)))
                .await
                .unwrap()
                .is_some()
        );
        // The purge deletes what expired by the clock.
        clock.0.store(start + 3_600_000, Ordering::SeqCst);
        let purged = caches.purge().await.unwrap();
        assert_eq!(
            (purged.exact, purged.semantic),
            (3, 0),
            "database_query, http_request and the 10 s entry"
        );
    }

    #[tokio::test]
    async fn roles_keys_and_refusals() {
        let (caches, _clock, ws, _dir) = service(small()).await;
        let writer = Caller {
            workspace_id: &ws,
            role: Role::Write,
        };
        let reader = Caller {
            workspace_id: &ws,
            role: Role::Read,
        };
        let mut admin_only = put("function", json!({"a": 1, "b": 2}), json!({"secret": true}));
        admin_only.required_role = Some(Role::Admin);
        assert!(matches!(
            caches.store_exact(writer, admin_only).await,
            Err(CacheError::RoleTooHigh { .. })
        ));
        let mut for_readers = put("function", json!({"a": 1, "b": 2}), json!({"public": true}));
        for_readers.required_role = Some(Role::Read);
        caches.store_exact(writer, for_readers).await.unwrap();
        // Member order and number spelling do not change the key.
        let hit = caches
            .lookup_exact(reader, &query("function", json!({"b": 2.0, "a": 1})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.result, ResultOut::Inline(json!({"public": true})));

        let refused = caches
            .store_exact(
                writer,
                put("function", json!(3), json!({"contact": "a@b.example"})),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, CacheError::RefusedPii { ref pattern, field: "result" } if pattern == "email"),
            "{refused}"
        );
        assert!(
            !refused.to_string().contains("a@b.example"),
            "the refusal never repeats the data"
        );
        let unsafe_input = caches
            .store_exact(
                writer,
                put("function", json!([9_007_199_254_740_993u64]), json!(1)),
            )
            .await
            .unwrap_err();
        assert!(matches!(unsafe_input, CacheError::UnsafeNumber(_)));
    }

    #[tokio::test]
    async fn semantic_thresholds_dimensions_and_the_prompt_path() {
        let (caches, _clock, ws, _dir) = service(small()).await;
        let writer = Caller {
            workspace_id: &ws,
            role: Role::Write,
        };
        let semantic_put = |prompt: &str, embedding: Option<Vec<f32>>| SemanticPut {
            node_type: "agent".into(),
            prompt: prompt.into(),
            embedding,
            result: json!(prompt),
            execution_ms: None,
            ttl_seconds: None,
            required_role: None,
        };
        assert!(matches!(
            caches.store_semantic(writer, semantic_put("p", None)).await,
            Err(CacheError::EmbeddingRequired)
        ));
        assert!(matches!(
            caches
                .store_semantic(writer, semantic_put("p", Some(vec![1.0, 0.0, 0.0])))
                .await,
            Err(CacheError::WrongDimension {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            caches
                .store_semantic(writer, semantic_put("p", Some(vec![0.0, 0.0])))
                .await,
            Err(CacheError::InvalidEmbedding(_))
        ));
        caches
            .store_semantic(writer, semantic_put("three four", Some(vec![3.0, 4.0])))
            .await
            .unwrap();
        let lookup = |prompt: &str, threshold: Option<f64>| SemanticQuery {
            node_type: "agent".into(),
            prompt: prompt.into(),
            embedding: Some(vec![1.0, 0.0]),
            threshold,
        };
        // Similarity is exactly 0.6: at the threshold it hits, just above it misses.
        let hit = caches
            .lookup_semantic(writer, &lookup("other", Some(0.6)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((hit.similarity, hit.matched), (0.6, Matched::Embedding));
        assert_eq!(
            caches
                .lookup_semantic(writer, &lookup("other", Some(0.600_000_1)))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            caches
                .lookup_semantic(writer, &lookup("other", None))
                .await
                .unwrap(),
            None,
            "default 0.92"
        );
        assert!(matches!(
            caches
                .lookup_semantic(writer, &lookup("other", Some(0.49)))
                .await,
            Err(CacheError::InvalidThreshold { .. })
        ));
        assert!(matches!(
            caches
                .lookup_semantic(writer, &lookup("other", Some(1.01)))
                .await,
            Err(CacheError::InvalidThreshold { .. })
        ));
        // The same prompt hits whatever the embedding says.
        let hit = caches
            .lookup_semantic(writer, &lookup("three four", Some(1.0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (hit.similarity, hit.matched, hit.result),
            (1.0, Matched::Prompt, json!("three four"))
        );
        // Without an embedder an identical prompt still hits; anything else needs an embedding.
        let bare = |prompt: &str| SemanticQuery {
            node_type: "agent".into(),
            prompt: prompt.into(),
            embedding: None,
            threshold: None,
        };
        assert!(
            caches
                .lookup_semantic(writer, &bare("three four"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            caches.lookup_semantic(writer, &bare("five")).await,
            Err(CacheError::EmbeddingRequired)
        ));
    }
}
