//! `patchbay cache bench` (hidden): the semantic cache's store-level benchmark. See
//! `bench/cache.md` for the scenario; `cargo xtask bench cache` drives it.
//!
//! It inserts N clustered random entries (the shape of real embeddings: topics, paraphrases)
//! into a fresh workspace, then asks queries that are stored vectors plus noise, measuring the
//! insert rate, lookup latency (p50/p99, one at a time), throughput (with concurrency) and
//! recall@1 against an exact search over the same vectors. It measures the vector search
//! (`CacheStore::semantic_nearest`, the part that grows with N), not HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::clock;
use crate::store::cache::{NewSemanticEntry, SemanticScope, SemanticSearch};
use crate::store::{Role, Store, vector};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub entries: usize,
    pub dimensions: u32,
    /// Lookups timed one at a time (p50, p99) and again concurrently (throughput).
    pub queries: usize,
    /// Lookups whose answer is compared with an exact search (recall@1).
    pub recall_queries: usize,
    pub concurrency: usize,
    /// Share of the entries stored in another workspace, so the workspace filter has work.
    pub foreign_fraction: f64,
    pub seed: u64,
    pub search: SemanticSearch,
    /// Keep the workspaces and entries afterwards.
    pub keep: bool,
}

const NODE_TYPE: &str = "agent";

pub async fn run(store: Arc<dyn Store>, options: &BenchOptions) -> anyhow::Result<Value> {
    anyhow::ensure!(
        options.entries > 0 && options.queries > 0 && options.concurrency > 0,
        "entries, queries and concurrency must be above 0"
    );
    store.cache().prepare_semantic(options.dimensions).await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let ours = store
        .create_workspace(&format!("bench-{}", &suffix[..12]), clock::now_ms())
        .await?;
    let theirs = store
        .create_workspace(&format!("bench-other-{}", &suffix[..12]), clock::now_ms())
        .await?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let dims = options.dimensions as usize;
    let vectors = clustered(&mut rng, options.entries, dims);
    let foreign: Vec<bool> = (0..options.entries)
        .map(|_| rng.random_bool(options.foreign_fraction.clamp(0.0, 1.0)))
        .collect();
    eprintln!(
        "patchbay: inserting {} entries of {} dimensions ...",
        options.entries, dims
    );

    // Insert: `concurrency` writers over interleaved slices.
    let vectors = Arc::new(vectors);
    let ids: Arc<Vec<String>> = Arc::new(
        (0..options.entries)
            .map(|_| uuid::Uuid::now_v7().simple().to_string())
            .collect(),
    );
    let started = Instant::now();
    let mut writers = Vec::new();
    let step = options.concurrency;
    for w in 0..step {
        let (store, vectors, ids, foreign) = (
            Arc::clone(&store),
            Arc::clone(&vectors),
            Arc::clone(&ids),
            foreign.clone(),
        );
        let (ours, theirs) = (ours.id.clone(), theirs.id.clone());
        writers.push(tokio::spawn(async move {
            let now = clock::now_ms();
            for i in (w..vectors.len()).step_by(step) {
                let entry = NewSemanticEntry {
                    id: ids[i].clone(),
                    workspace_id: if foreign[i] {
                        theirs.clone()
                    } else {
                        ours.clone()
                    },
                    node_type: NODE_TYPE.into(),
                    required_role: Role::Read,
                    prompt: format!("bench prompt {i}"),
                    prompt_hash: format!("{i:064x}"),
                    result: format!("{{\"answer\":{i}}}"),
                    embedding: vectors[i].clone(),
                    execution_ms: Some(1000),
                    created_at_ms: now,
                    expires_at_ms: now + 86_400_000,
                };
                store.cache().insert_semantic(&entry, u64::MAX).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let insert_seconds = started.elapsed().as_secs_f64();

    // Queries: a stored vector of our workspace plus noise (a paraphrase).
    let our_rows: Vec<usize> = (0..options.entries).filter(|i| !foreign[*i]).collect();
    anyhow::ensure!(
        !our_rows.is_empty(),
        "no entries landed in the benchmark workspace; lower --foreign-fraction"
    );
    let queries: Vec<Vec<f32>> = (0..options.queries.max(options.recall_queries))
        .map(|_| {
            let base = &vectors[our_rows[rng.random_range(0..our_rows.len())]];
            normalized(
                base.iter()
                    .map(|x| x + gaussian(&mut rng) * 0.3 / (dims as f32).sqrt())
                    .collect(),
            )
        })
        .collect();
    let queries = Arc::new(queries);
    let scope = |now_ms| SemanticScope {
        workspace_id: &ours.id,
        node_type: NODE_TYPE,
        max_role: Role::Read,
        now_ms,
    };

    // Latency, one lookup at a time.
    eprintln!("patchbay: timing {} lookups ...", options.queries);
    let mut latencies = Vec::with_capacity(options.queries);
    let mut answers = Vec::with_capacity(options.queries.max(options.recall_queries));
    for query in queries.iter() {
        let t = Instant::now();
        let hit = store
            .cache()
            .semantic_nearest(&scope(clock::now_ms()), query, &options.search)
            .await?;
        if latencies.len() < options.queries {
            latencies.push(t.elapsed());
        }
        answers.push(hit.map(|h| h.id));
    }
    latencies.sort();

    // Throughput, `concurrency` lookups at a time.
    let started = Instant::now();
    let mut readers = Vec::new();
    for r in 0..step {
        let (store, queries, workspace, search) = (
            Arc::clone(&store),
            Arc::clone(&queries),
            ours.id.clone(),
            options.search,
        );
        let count = options.queries;
        readers.push(tokio::spawn(async move {
            for q in (r..count).step_by(step) {
                let scope = SemanticScope {
                    workspace_id: &workspace,
                    node_type: NODE_TYPE,
                    max_role: Role::Read,
                    now_ms: clock::now_ms(),
                };
                store
                    .cache()
                    .semantic_nearest(&scope, &queries[q], &search)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    let concurrency = options.concurrency;
    for reader in readers {
        reader.await??;
    }
    let throughput = options.queries as f64 / started.elapsed().as_secs_f64();

    // Recall@1 against an exact search over our workspace's vectors.
    eprintln!(
        "patchbay: checking recall on {} queries ...",
        options.recall_queries
    );
    let index_of: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut found = 0usize;
    for (query, answer) in queries.iter().zip(&answers).take(options.recall_queries) {
        let best = our_rows
            .iter()
            .map(|i| vector::cosine(query, &vectors[*i]))
            .fold(f64::NEG_INFINITY, f64::max);
        // An answer as similar as the exact search's best is a correct answer (ties happen).
        let answered = answer
            .as_deref()
            .and_then(|id| index_of.get(id))
            .map(|j| vector::cosine(query, &vectors[*j]));
        if answered.is_some_and(|s| s >= best - 1e-9) {
            found += 1;
        }
    }
    let recall = if options.recall_queries == 0 {
        None
    } else {
        Some(found as f64 / options.recall_queries.min(answers.len()) as f64)
    };

    if !options.keep {
        store.delete_workspace(&ours.name).await?;
        store.delete_workspace(&theirs.name).await?;
    }
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let percentile = |p: f64| {
        ms(latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1])
    };
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    Ok(json!({
        "scenario": "cache",
        "backend": store.backend(),
        "entries": options.entries,
        "workspace_entries": our_rows.len(),
        "dimensions": options.dimensions,
        "insert": {
            "seconds": (insert_seconds * 1000.0).round() / 1000.0,
            "per_second": (options.entries as f64 / insert_seconds).round(),
            "concurrency": concurrency,
        },
        "lookup": {
            "queries": options.queries,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "mean_ms": ms(mean),
            "throughput_per_second": throughput.round(),
            "throughput_concurrency": concurrency,
        },
        "recall_at_1": recall,
        "recall_queries": options.recall_queries,
        "search": {
            "ef_search": options.search.ef_search,
            "iterative_scan": options.search.iterative_scan.as_str(),
            "max_scan_tuples": options.search.max_scan_tuples,
            "exact": store.backend() == "sqlite",
        },
    }))
}

/// `n` unit vectors around `n / 100` random centres.
fn clustered(rng: &mut StdRng, n: usize, dims: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..(n / 100).max(1))
        .map(|_| normalized((0..dims).map(|_| gaussian(rng)).collect()))
        .collect();
    (0..n)
        .map(|_| {
            let centre = &centres[rng.random_range(0..centres.len())];
            normalized(
                centre
                    .iter()
                    .map(|x| x + gaussian(rng) * 0.7 / (dims as f32).sqrt())
                    .collect(),
            )
        })
        .collect()
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = vector::norm2(&v).sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
