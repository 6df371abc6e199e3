//! Metrics: every family's name, help, kind, allowed labels and series bound, the Prometheus
//! recorder, and the values refreshed at scrape time. Logging lives in `logging`.

pub mod logging;
pub mod names;

use std::time::Instant;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::Store;
use names::*;

/// Labels a metric may carry (DESIGN.md section 4). Anything else fails the cardinality test.
pub const ALLOWED_LABELS: &[&str] = &[
    "method",
    "path",
    "status_code",
    "plugin",
    "outcome",
    "reason",
    "cache",
    "node_type",
    "state",
    "version",
    "commit_hash",
    "rustc_version",
];

pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const SIZE_BUCKETS: &[f64] = &[100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
/// Cosine similarity of semantic hits: fine steps where thresholds usually sit.
pub const SIMILARITY_BUCKETS: &[f64] = &[
    0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family and the most series it may ever have.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub max_series: usize,
}

/// Route templates x methods x status codes stays far below this on any real deployment.
const HTTP_SERIES: usize = 2_000;
/// `node_type` values: the configured node types (at most 32) and `other`.
const NODE_TYPES: usize = crate::config::MAX_LABELED_NODE_TYPES + 1;

pub const FAMILIES: &[Family] = &[
    Family {
        name: HTTP_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP requests answered, by route template and status code.",
        labels: &["method", "path", "status_code"],
        max_series: HTTP_SERIES,
    },
    Family {
        name: HTTP_REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from request head to response head.",
        labels: &["method", "path"],
        max_series: HTTP_SERIES,
    },
    Family {
        name: HTTP_REQUEST_SIZE_BYTES,
        kind: Kind::Histogram,
        unit: Some(Unit::Bytes),
        help: "Declared request body size.",
        labels: &["method", "path"],
        max_series: HTTP_SERIES,
    },
    Family {
        name: HTTP_RESPONSE_SIZE_BYTES,
        kind: Kind::Histogram,
        unit: Some(Unit::Bytes),
        help: "Response body size when known in advance.",
        labels: &["method", "path"],
        max_series: HTTP_SERIES,
    },
    Family {
        name: HTTP_REQUESTS_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        help: "Requests being handled now.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1; labels name the build.",
        labels: &["version", "commit_hash", "rustc_version"],
        max_series: 1,
    },
    Family {
        name: UPTIME_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Seconds since the server started.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: DB_ACQUIRE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Wait for a pooled database connection.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: DB_CONNECTIONS,
        kind: Kind::Gauge,
        unit: None,
        help: "Pooled database connections by state (idle, in_use).",
        labels: &["state"],
        max_series: 2,
    },
    Family {
        name: DB_CONNECTIONS_MAX,
        kind: Kind::Gauge,
        unit: None,
        help: "Configured maximum of pooled database connections.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: AUTH_ATTEMPTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "API authentication attempts by outcome and reason.",
        labels: &["outcome", "reason"],
        max_series: 16,
    },
    Family {
        name: CAS_RECEIVED_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Blob bytes received in uploads.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CAS_SENT_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Blob bytes sent in downloads.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CAS_PUTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Blob uploads by outcome (created, existing, rejected).",
        labels: &["outcome"],
        max_series: 3,
    },
    Family {
        name: CACHE_LOOKUPS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cache lookups by cache, node type and outcome (hit, miss).",
        labels: &["cache", "node_type", "outcome"],
        max_series: 2 * NODE_TYPES * 2,
    },
    Family {
        name: CACHE_STORES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cache stores by cache, node type and outcome (stored, refused_pii, invalid).",
        labels: &["cache", "node_type", "outcome"],
        max_series: 2 * NODE_TYPES * 3,
    },
    Family {
        name: CACHE_SECONDS_SAVED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        help: "Execution time saved by cache hits (the stored execution_ms of each hit entry).",
        labels: &["cache", "node_type"],
        max_series: 2 * NODE_TYPES,
    },
    Family {
        name: CACHE_HIT_SIMILARITY,
        kind: Kind::Histogram,
        unit: None,
        help: "Cosine similarity of semantic cache hits.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CACHE_ENTRIES,
        kind: Kind::Gauge,
        unit: None,
        help: "Entries in each cache over all workspaces, refreshed by the purge.",
        labels: &["cache"],
        max_series: 2,
    },
    Family {
        name: CACHE_EVICTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cache entries removed, by cache and reason (capacity, expired, deleted).",
        labels: &["cache", "reason"],
        max_series: 6,
    },
    Family {
        name: CACHE_REJECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Cache hits marked wrong by a client; they are never served again.",
        labels: &["cache"],
        max_series: 2,
    },
    Family {
        name: CACHE_EMBEDDER_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Requests to the configured embedding endpoint by outcome.",
        labels: &["outcome"],
        max_series: 2,
    },
    Family {
        name: CACHE_EMBEDDER_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time of requests to the configured embedding endpoint.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CACHE_VECTOR_INDEX_SEARCHES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SQLite semantic lookups by how they were searched (index: the in-memory vector index; scan: SQLite's rows).",
        labels: &["outcome"],
        max_series: 2,
    },
    Family {
        name: CACHE_VECTOR_INDEX_FALLBACKS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SQLite semantic lookups that scanned SQLite instead of the in-memory index, by reason (disabled, over_budget, loading, load_failed, dimensions, changed).",
        labels: &["reason"],
        max_series: 6,
    },
    Family {
        name: CACHE_VECTOR_INDEX_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Memory held by the SQLite semantic cache's in-memory vector index (bounded by cache.semantic.sqlite_index_max_bytes).",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CACHE_VECTOR_INDEX_LOAD_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to load one workspace's node type into the SQLite semantic cache's in-memory vector index.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: CAS_DEDUP_HITS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Uploads whose content was already stored and was not written again.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: PLUGIN_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Plugin requests by outcome (ok, trap, timeout, memory, stack_overflow, shed, queue_timeout, bad_response, ...).",
        labels: &["plugin", "outcome"],
        max_series: PLUGIN_SERIES * 12,
    },
    Family {
        name: PLUGIN_DISPATCHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Plugin requests admitted to an instance.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_COMPLETED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Plugin requests whose instance finished, whatever the outcome.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_SHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Plugin requests refused because the route's queue was full (429 or 503).",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: None,
        help: "Requests waiting for an instance, summed over the plugin's routes.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_BUSY_INSTANCES,
        kind: Kind::Gauge,
        unit: None,
        help: "Instances running a request, summed over the plugin's routes.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_CAPACITY,
        kind: Kind::Gauge,
        unit: None,
        help: "Instances the plugin's routes may run at once.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_QUEUE_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time a plugin request waited for an instance.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_EXECUTION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Instantiation plus guest time until the response head.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_INSTANTIATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to instantiate a plugin's component for one request.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_AUTOLOAD_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to load every plugin at start.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: PLUGIN_AUTOLOAD_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Plugins loaded at start by outcome (loaded, failed, duplicate).",
        labels: &["outcome"],
        max_series: 3,
    },
    Family {
        name: PLUGIN_COMPILES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Components compiled by this process; precompiled artifacts loaded from the cache do not count.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: PLUGIN_HEALTHY,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the plugin's recent requests succeed, 0 after consecutive failures.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_CONSECUTIVE_FAILURES,
        kind: Kind::Gauge,
        unit: None,
        help: "Plugin failures since its last success.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: PLUGIN_SECONDS_SINCE_SUCCESS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Seconds since the plugin last answered successfully.",
        labels: &["plugin"],
        max_series: PLUGIN_SERIES,
    },
    Family {
        name: WORKFLOW_PATCHES_COMMITTED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Workflow patches committed.",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: WORKFLOW_CONFLICTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Workflow patches refused because their base_version was stale (409).",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: WORKFLOW_VALIDATION_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Workflow writes refused by reason (patch_failed: an operation failed; invalid_document: the result is not a valid workflow).",
        labels: &["reason"],
        max_series: 2,
    },
    Family {
        name: WORKFLOW_COMPACTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Background workflow compactions by outcome (success, failure).",
        labels: &["outcome"],
        max_series: 2,
    },
    Family {
        name: WORKFLOW_SNAPSHOT_SIZE_BYTES,
        kind: Kind::Histogram,
        unit: Some(Unit::Bytes),
        help: "Size of workflow snapshots written (base documents and compactions).",
        labels: &[],
        max_series: 1,
    },
    Family {
        name: WORKFLOW_SSE_CLIENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Workflow event streams connected now.",
        labels: &[],
        max_series: 1,
    },
];

/// Plugins are capped by `plugins.max_plugins` (default 100); the bound allows the largest sane
/// setting.
const PLUGIN_SERIES: usize = 1_000;

/// Process figures (CPU, memory, file descriptors) come from `metrics-process` with our prefix.
pub const PROCESS_PREFIX: &str = "patchbay_";

/// The installed recorder and the values refreshed on each scrape.
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    started: Instant,
}

impl Metrics {
    /// Installs the global recorder. Call once per process.
    pub fn install() -> anyhow::Result<Self> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
            .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(CACHE_HIT_SIMILARITY.into()),
                SIMILARITY_BUCKETS,
            )?
            .install_recorder()?;
        for family in FAMILIES {
            let unit = family.unit;
            match (family.kind, unit) {
                (Kind::Counter, Some(u)) => describe_counter!(family.name, u, family.help),
                (Kind::Counter, None) => describe_counter!(family.name, family.help),
                (Kind::Gauge, Some(u)) => describe_gauge!(family.name, u, family.help),
                (Kind::Gauge, None) => describe_gauge!(family.name, family.help),
                (Kind::Histogram, Some(u)) => describe_histogram!(family.name, u, family.help),
                (Kind::Histogram, None) => describe_histogram!(family.name, family.help),
            }
        }
        let process = metrics_process::Collector::new(PROCESS_PREFIX);
        process.describe();
        metrics::gauge!(
            BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            "commit_hash" => env!("PATCHBAY_COMMIT_HASH"),
            "rustc_version" => env!("PATCHBAY_RUSTC_VERSION"),
        )
        .set(1.0);
        Ok(Self {
            handle,
            process,
            started: Instant::now(),
        })
    }

    /// Keeps histograms' memory bounded by draining their buffers now and then.
    pub fn spawn_upkeep(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }

    /// Refreshes scrape-time values and renders the Prometheus text format.
    pub fn render(&self, store: &dyn Store) -> String {
        self.process.collect();
        metrics::gauge!(UPTIME_SECONDS).set(self.started.elapsed().as_secs_f64());
        let pool = store.pool_stats();
        metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
        metrics::gauge!(DB_CONNECTIONS, "state" => "in_use")
            .set(f64::from(pool.size.saturating_sub(pool.idle)));
        metrics::gauge!(DB_CONNECTIONS_MAX).set(f64::from(pool.max));
        self.handle.render()
    }
}
