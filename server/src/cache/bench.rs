//! `patchbay cache bench` (hidden): the semantic cache's store-level benchmark. See
//! `bench/cache.md` for the scenario; `cargo xtask bench cache` drives it.
//!
//! It inserts N clustered random entries (the shape of real embeddings: topics, paraphrases)
//! into a fresh workspace, then asks queries that are stored vectors plus noise, measuring the
//! insert rate, lookup latency (p50/p99, one at a time), throughput (with concurrency) and
//! recall@1 against an exact search over the same vectors. It measures the vector search
//! (`CacheStore::semantic_nearest`, the part that grows with N), not HTTP.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::clock;
use crate::store::cache::{NewSemanticEntry, SemanticScope, SemanticSearch, SemanticTable};
use crate::store::{Role, Store, postgres, vector};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub entries: usize,
    /// The embeddings' dimension and the HNSW index's build parameters.
    pub table: SemanticTable,
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
    /// The database the store was opened on; a PostgreSQL URL is also used for the bulk load
    /// and to report the server's version, settings and query plan.
    pub database_url: Option<String>,
    /// PostgreSQL: load the entries with COPY and build the HNSW index afterwards, instead of
    /// inserting them one by one through the store (which maintains the index per row).
    pub bulk_load: bool,
    /// PostgreSQL bulk load: `maintenance_work_mem` for the index build (the graph should fit).
    pub maintenance_work_mem: String,
    /// SQLite: `cache.semantic.sqlite_index_max_bytes`, reported.
    pub sqlite_index_max_bytes: u64,
    /// PostgreSQL: `ef_search` values to measure in turn on the same data (empty: `search`'s).
    pub ef_searches: Vec<u32>,
    /// Untimed lookups before each setting's timed ones.
    pub warmup: usize,
}

const NODE_TYPE: &str = "agent";
const TTL_MS: i64 = 86_400_000;

pub async fn run(store: Arc<dyn Store>, options: &BenchOptions) -> anyhow::Result<Value> {
    anyhow::ensure!(
        options.entries > 0 && options.queries > 0 && options.concurrency > 0,
        "entries, queries and concurrency must be above 0"
    );
    let postgres_url = options
        .database_url
        .as_deref()
        .filter(|url| url.starts_with("postgres"));
    anyhow::ensure!(
        !options.bulk_load || postgres_url.is_some(),
        "--bulk-load needs --database-url postgres://..."
    );
    store.cache().prepare_semantic(&options.table).await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let ours = store
        .create_workspace(&format!("bench-{}", &suffix[..12]), clock::now_ms())
        .await?;
    let theirs = store
        .create_workspace(&format!("bench-other-{}", &suffix[..12]), clock::now_ms())
        .await?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let dims = options.table.dimensions as usize;
    let vectors = clustered(&mut rng, options.entries, dims);
    let foreign: Vec<bool> = (0..options.entries)
        .map(|_| rng.random_bool(options.foreign_fraction.clamp(0.0, 1.0)))
        .collect();
    let rows = Arc::new(Rows {
        ids: (0..options.entries)
            .map(|_| uuid::Uuid::now_v7().simple().to_string())
            .collect(),
        vectors,
        foreign,
        ours: ours.id.clone(),
        theirs: theirs.id.clone(),
    });
    eprintln!(
        "patchbay: inserting {} entries of {} dimensions ({}) ...",
        options.entries,
        dims,
        if options.bulk_load {
            "COPY, then CREATE INDEX"
        } else {
            "one by one through the store"
        }
    );
    let insert = match postgres_url {
        Some(url) if options.bulk_load => {
            bulk_load(url, &rows, &options.table, &options.maintenance_work_mem).await?
        }
        _ => insert_one_by_one(&store, &rows, options.concurrency).await?,
    };

    // Queries: a stored vector of our workspace plus noise (a paraphrase).
    let our_rows: Vec<usize> = (0..options.entries).filter(|i| !rows.foreign[*i]).collect();
    anyhow::ensure!(
        !our_rows.is_empty(),
        "no entries landed in the benchmark workspace; lower --foreign-fraction"
    );
    let queries: Vec<Vec<f32>> = (0..options.queries.max(options.recall_queries))
        .map(|_| {
            let base = &rows.vectors[our_rows[rng.random_range(0..our_rows.len())]];
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
    let sweep: Vec<SemanticSearch> = if options.ef_searches.is_empty() {
        vec![options.search]
    } else {
        options
            .ef_searches
            .iter()
            .map(|ef| SemanticSearch {
                ef_search: *ef,
                ..options.search
            })
            .collect()
    };

    // The first lookup on its own: on SQLite it loads the workspace's in-memory index.
    let t = Instant::now();
    store
        .cache()
        .semantic_nearest(&scope(clock::now_ms()), &queries[0], &sweep[0])
        .await?;
    let first_lookup = t.elapsed();
    // A server that has run a while has its index in memory; a bulk load leaves it on disk.
    let prewarmed = match postgres_url {
        Some(url) => Some(prewarm(url).await),
        None => None,
    };

    // The exact answers, once for every setting.
    eprintln!(
        "patchbay: exact search for {} recall queries ...",
        options.recall_queries
    );
    let recall_queries = options.recall_queries.min(queries.len());
    let exact_best: Vec<f64> = queries[..recall_queries]
        .iter()
        .map(|query| {
            our_rows
                .iter()
                .map(|i| vector::cosine(query, &rows.vectors[*i]))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    let index_of: HashMap<&str, usize> = rows
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    let mut results = Vec::new();
    for search in &sweep {
        eprintln!(
            "patchbay: {} warm-up lookups, then timing {} (ef_search {}) ...",
            options.warmup, options.queries, search.ef_search
        );
        for query in queries.iter().cycle().take(options.warmup) {
            store
                .cache()
                .semantic_nearest(&scope(clock::now_ms()), query, search)
                .await?;
        }
        // Latency, one lookup at a time.
        let mut latencies = Vec::with_capacity(options.queries);
        let mut answers = Vec::with_capacity(queries.len());
        for query in queries.iter() {
            let t = Instant::now();
            let hit = store
                .cache()
                .semantic_nearest(&scope(clock::now_ms()), query, search)
                .await?;
            if latencies.len() < options.queries {
                latencies.push(t.elapsed());
            }
            answers.push(hit.map(|h| h.id));
        }
        latencies.sort();
        let throughput = throughput(&store, &queries, &ours.id, search, options).await?;
        // Recall@1: an answer as similar as the exact search's best is a correct answer (ties
        // happen).
        let found = queries[..recall_queries]
            .iter()
            .zip(&answers)
            .zip(&exact_best)
            .filter(|((query, answer), best)| {
                answer
                    .as_deref()
                    .and_then(|id| index_of.get(id))
                    .map(|j| vector::cosine(query, &rows.vectors[*j]))
                    .is_some_and(|s| s >= **best - 1e-9)
            })
            .count();
        let recall = (recall_queries > 0).then(|| found as f64 / recall_queries as f64);
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let percentile = |p: f64| {
            ms(latencies
                [((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1])
        };
        let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
        results.push(json!({
            "ef_search": search.ef_search,
            "lookup": {
                "queries": options.queries,
                "first_ms": ms(first_lookup),
                "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99),
                "max_ms": percentile(1.0),
                "mean_ms": ms(mean),
                "throughput_per_second": throughput.round(),
                "throughput_concurrency": options.concurrency,
            },
            "recall_at_1": recall,
        }));
    }

    let server = match postgres_url {
        Some(url) => {
            let mut facts = postgres_facts(url, &ours.id, &queries[0], &sweep[0]).await?;
            facts["prewarm"] = json!(prewarmed);
            Some(facts)
        }
        None => None,
    };

    if !options.keep {
        store.delete_workspace(&ours.name).await?;
        store.delete_workspace(&theirs.name).await?;
    }
    let sqlite = store.backend() == "sqlite";
    Ok(json!({
        "scenario": "cache",
        "backend": store.backend(),
        "entries": options.entries,
        "workspace_entries": our_rows.len(),
        "dimensions": options.table.dimensions,
        "hnsw": (!sqlite).then(|| json!({
            "m": options.table.hnsw_m,
            "ef_construction": options.table.hnsw_ef_construction,
        })),
        "insert": insert,
        // The first setting's figures; `sweep` has every setting's.
        "lookup": results[0]["lookup"],
        "recall_at_1": results[0]["recall_at_1"],
        "recall_queries": recall_queries,
        "warmup_lookups": options.warmup,
        "sweep": results,
        "search": {
            "method": match (sqlite, options.sqlite_index_max_bytes) {
                (true, 0) => "exact scan of SQLite's rows",
                (true, _) => "exact scan of the in-memory index",
                (false, _) => "HNSW",
            },
            "exact": sqlite,
            "sqlite_index_max_bytes": sqlite.then_some(options.sqlite_index_max_bytes),
            "ef_search": sweep[0].ef_search,
            "iterative_scan": options.search.iterative_scan.as_str(),
            "max_scan_tuples": options.search.max_scan_tuples,
            "exact_max_entries": (!sqlite).then_some(options.search.exact_max_entries),
        },
        "postgres": server,
    }))
}

/// Lookups per second with `concurrency` readers over the same queries.
async fn throughput(
    store: &Arc<dyn Store>,
    queries: &Arc<Vec<Vec<f32>>>,
    workspace_id: &str,
    search: &SemanticSearch,
    options: &BenchOptions,
) -> anyhow::Result<f64> {
    let step = options.concurrency;
    let started = Instant::now();
    let mut readers = Vec::new();
    for r in 0..step {
        let (store, queries, workspace, search) = (
            Arc::clone(store),
            Arc::clone(queries),
            workspace_id.to_string(),
            *search,
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
                    .semantic_nearest(&scope, &queries[q % queries.len()], &search)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for reader in readers {
        reader.await??;
    }
    Ok(options.queries as f64 / started.elapsed().as_secs_f64())
}

/// Loads the HNSW index into shared buffers with `pg_prewarm` when the server has it; says
/// what happened.
async fn prewarm(url: &str) -> String {
    use sqlx::Connection as _;
    let result: Result<i64, sqlx::Error> = async {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            .execute(&mut conn)
            .await?;
        sqlx::query_scalar("SELECT pg_prewarm('semantic_cache_embedding')")
            .fetch_one(&mut conn)
            .await
    }
    .await;
    match result {
        Ok(blocks) => format!("pg_prewarm: {blocks} blocks of the HNSW index"),
        Err(e) => format!("no pg_prewarm ({e}); warm-up lookups only"),
    }
}

/// The generated entries: ids, vectors, and which ones go to the other workspace.
struct Rows {
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
    foreign: Vec<bool>,
    ours: String,
    theirs: String,
}

impl Rows {
    fn workspace(&self, i: usize) -> &str {
        if self.foreign[i] {
            &self.theirs
        } else {
            &self.ours
        }
    }
}

/// Through `CacheStore::insert_semantic`, the server's own insert path, by `concurrency`
/// writers over interleaved slices.
async fn insert_one_by_one(
    store: &Arc<dyn Store>,
    rows: &Arc<Rows>,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..concurrency {
        let (store, rows) = (Arc::clone(store), Arc::clone(rows));
        writers.push(tokio::spawn(async move {
            let now = clock::now_ms();
            for i in (w..rows.ids.len()).step_by(concurrency) {
                let entry = NewSemanticEntry {
                    id: rows.ids[i].clone(),
                    workspace_id: rows.workspace(i).to_string(),
                    node_type: NODE_TYPE.into(),
                    required_role: Role::Read,
                    prompt: format!("bench prompt {i}"),
                    prompt_hash: format!("{i:064x}"),
                    result: format!("{{\"answer\":{i}}}"),
                    embedding: rows.vectors[i].clone(),
                    execution_ms: Some(1000),
                    created_at_ms: now,
                    expires_at_ms: now + TTL_MS,
                };
                store.cache().insert_semantic(&entry, u64::MAX).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "method": "insert_semantic, one entry per transaction",
        "seconds": round3(seconds),
        "per_second": (rows.ids.len() as f64 / seconds).round(),
        "concurrency": concurrency,
    }))
}

/// PostgreSQL: drops the HNSW index, COPYs the rows in (with the usage counts the insert path
/// keeps), then builds the index once, as one would load a large cache. Use a scratch
/// database: the index is dropped and rebuilt for the whole table.
async fn bulk_load(
    url: &str,
    rows: &Rows,
    table: &SemanticTable,
    maintenance_work_mem: &str,
) -> anyhow::Result<Value> {
    use sqlx::Connection as _;
    anyhow::ensure!(
        !maintenance_work_mem.is_empty()
            && maintenance_work_mem
                .chars()
                .all(|c| c.is_ascii_alphanumeric()),
        "--maintenance-work-mem {maintenance_work_mem:?}: a size such as 4GB"
    );
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("DROP INDEX IF EXISTS semantic_cache_embedding")
        .execute(&mut conn)
        .await?;
    let started = Instant::now();
    let now = clock::now_ms();
    let mut copy = conn
        .copy_in_raw(
            "COPY semantic_cache (id, workspace_id, node_type, required_role, prompt, prompt_hash, result, \
             execution_ms, created_at, expires_at, last_used_at, embedding) FROM STDIN",
        )
        .await?;
    let mut buffer = String::with_capacity(8 << 20);
    let mut per_workspace: HashMap<&str, i64> = HashMap::new();
    for i in 0..rows.ids.len() {
        let workspace = rows.workspace(i);
        *per_workspace.entry(workspace).or_default() += 1;
        // COPY's text format: tab-separated, no value here needs escaping.
        let _ = writeln!(
            buffer,
            "{}\t{workspace}\t{NODE_TYPE}\t0\tbench prompt {i}\t{i:064x}\t{{\"answer\":{i}}}\t1000\t{now}\t{}\t{now}\t{}",
            rows.ids[i],
            now + TTL_MS,
            vector::to_pgvector_text(&rows.vectors[i]),
        );
        if buffer.len() >= 4 << 20 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    for (workspace, n) in per_workspace {
        sqlx::query(
            "INSERT INTO cache_usage (workspace_id, cache, entries) VALUES ($1, 'semantic', $2) \
             ON CONFLICT (workspace_id, cache) DO UPDATE SET entries = cache_usage.entries + excluded.entries",
        )
        .bind(workspace)
        .bind(n)
        .execute(&mut conn)
        .await?;
    }
    let copy_seconds = started.elapsed().as_secs_f64();
    eprintln!("patchbay: copied in {copy_seconds:.1} s; building the HNSW index ...");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    sqlx::Executor::execute(
        &mut conn,
        format!(
            "SET maintenance_work_mem = '{maintenance_work_mem}'; SET max_parallel_maintenance_workers = {workers}"
        )
        .as_str(),
    )
    .await?;
    let t = Instant::now();
    sqlx::query(&postgres::hnsw_index_ddl(table))
        .execute(&mut conn)
        .await?;
    let index_seconds = t.elapsed().as_secs_f64();
    sqlx::query("ANALYZE semantic_cache")
        .execute(&mut conn)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "method": "COPY, then CREATE INDEX (HNSW)",
        "seconds": round3(seconds),
        "per_second": (rows.ids.len() as f64 / seconds).round(),
        "copy_seconds": round3(copy_seconds),
        "index_seconds": round3(index_seconds),
        "maintenance_work_mem": maintenance_work_mem,
        "parallel_maintenance_workers": workers,
    }))
}

/// The server's version and memory settings, and the plan of one lookup as the store runs it
/// (same settings, same statement), with buffer counts.
async fn postgres_facts(
    url: &str,
    workspace_id: &str,
    query: &[f32],
    search: &SemanticSearch,
) -> anyhow::Result<Value> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let (version, pgvector, shared_buffers, work_mem, huge_pages): (
        String,
        Option<String>,
        String,
        String,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT current_setting('server_version'), \
         (SELECT extversion FROM pg_extension WHERE extname = 'vector'), \
         current_setting('shared_buffers'), current_setting('work_mem'), \
         current_setting('huge_pages_status', true)",
    )
    .fetch_one(&mut conn)
    .await?;
    let sizes: (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_table_size('semantic_cache'), pg_relation_size('semantic_cache_embedding'), \
         pg_indexes_size('semantic_cache')",
    )
    .fetch_one(&mut conn)
    .await?;
    let mut tx = conn.begin().await?;
    let (statement, _) = postgres::prepare_lookup(&mut tx, search, workspace_id, NODE_TYPE).await?;
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS) {statement}"))
        .bind(vector::to_pgvector_text(query))
        .bind(workspace_id)
        .bind(NODE_TYPE)
        .bind(Role::Read.level())
        .bind(clock::now_ms())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(json!({
        "server_version": version,
        "pgvector": pgvector,
        "shared_buffers": shared_buffers,
        "work_mem": work_mem,
        // PostgreSQL 17+: whether shared memory is on huge pages (fewer TLB misses in the
        // HNSW walk's buffer lookups).
        "huge_pages": huge_pages,
        "table_bytes": sizes.0,
        "hnsw_index_bytes": sizes.1,
        "all_indexes_bytes": sizes.2,
        "plan_uses_hnsw_index": plan.iter().any(|l| l.contains("semantic_cache_embedding")),
        "plan": plan,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
