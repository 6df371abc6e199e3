//! One typed configuration: defaults < `--config patchbay.toml` < `PATCHBAY_*` environment.
//!
//! The environment variable of a key is `PATCHBAY_` + its path upper-cased with `__` between
//! levels (`cache.semantic.dimensions` -> `PATCHBAY_CACHE__SEMANTIC__DIMENSIONS`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::store::cache::{IterativeScan, SemanticTable};

/// Environment variables with this prefix configure the server.
pub const ENV_PREFIX: &str = "PATCHBAY_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to bind; port 0 picks a free port.
    pub listen: String,
    /// Where SQLite and local blobs live by default.
    pub data_dir: PathBuf,
    /// Absent: SQLite in `data_dir`; `sqlite://...` or `postgres://...`.
    pub database_url: Option<String>,
    /// Absent: files under `data_dir/blobs`; `file:///path`, `memory://` or `s3://bucket`.
    pub blob_url: Option<String>,
    /// Bootstrap system key of workspace `default`.
    pub admin_token: Option<String>,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub blob: BlobConfig,
    pub cas: CasConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    /// Directory of plugins loaded at start: `*/plugin.toml` beside its component.
    pub plugins_dir: Option<PathBuf>,
    pub plugins: PluginsConfig,
    pub workflows: WorkflowsConfig,
    pub cache: CacheConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Concurrent connections across all workers.
    pub max_connections: usize,
    /// Connections accepted per second per worker while TLS-free handshakes are pending.
    pub max_connection_rate: usize,
    /// Pending connections queued by the kernel.
    pub backlog: u32,
    /// Time a client has to send the request head (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// Idle time allowed between requests on a keep-alive connection; 0 disables keep-alive.
    pub keep_alive_ms: u64,
    /// Grace period for a request body before the minimum rate applies.
    pub body_read_timeout_ms: u64,
    /// Minimum average body rate after the grace period; slower uploads get 408.
    pub body_min_bytes_per_second: u64,
    /// Time to flush a response to a client that closes slowly.
    pub client_disconnect_timeout_ms: u64,
    /// Total size of request header names and values; larger heads get 431.
    pub max_header_bytes: usize,
    /// Largest JSON request body accepted by the API.
    pub json_body_limit_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// PostgreSQL `statement_timeout`; SQLite has none.
    pub statement_timeout_ms: u64,
    /// SQLite `busy_timeout`: how long a writer waits for the lock.
    pub sqlite_busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, moto); absent means AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints (local S3-compatible servers).
    pub s3_allow_http: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CasConfig {
    /// Largest blob accepted.
    pub max_blob_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Sustained requests per second per API key (token bucket refill).
    pub key_requests_per_second: u32,
    /// Token bucket size per API key.
    pub key_burst: u32,
    /// Failed authentications allowed per minute per client address.
    pub failed_per_minute: u32,
    /// Burst of failed authentications per client address.
    pub failed_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub path: String,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `patchbay=debug,sqlx=warn`, ...).
    pub level: String,
    pub format: LogFormat,
    /// Fraction of info-level events kept (0 to 1); warnings and errors are always logged.
    pub sample_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, `/ready` answers 503 for this long before the server stops accepting,
    /// so a load balancer can take the instance out of rotation.
    pub drain_delay_ms: u64,
    /// How long in-flight requests may run after the server stops accepting.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Patches after the latest snapshot that trigger a background compaction (a new snapshot).
    pub compaction_every: u64,
    /// Interval of the comment lines that keep an idle event stream open.
    pub sse_heartbeat_ms: u64,
    /// Materialized documents kept in memory per node, so appends need not replay history.
    pub document_cache_entries: usize,
    /// Most operations one patch may hold.
    pub max_patch_ops: usize,
}

/// The exact-match and semantic result caches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// TTL of entries whose node type is not in the cache's `ttl_seconds` table.
    pub default_ttl_seconds: u64,
    /// The longest TTL an entry may ask for with `ttl_seconds`.
    pub max_ttl_seconds: u64,
    /// Entries per workspace in each cache; above it the least recently hit are evicted.
    pub max_entries_per_workspace: u64,
    /// How often expired entries are deleted (and the entries gauge refreshed).
    pub purge_interval_seconds: u64,
    /// Largest inline result, as JSON text; larger results go to the CAS (`result_digest`).
    pub max_result_bytes: usize,
    /// Most queries in one batch lookup.
    pub max_batch: usize,
    pub exact: ExactCacheConfig,
    pub semantic: SemanticCacheConfig,
    pub embedder: EmbedderConfig,
    /// Results (and prompts) matching one of these are refused (422 `refused-pii`, naming the
    /// pattern). Setting the list replaces the defaults; `[]` turns the check off.
    pub deny_list: Vec<DenyPattern>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExactCacheConfig {
    /// TTL per node type, in seconds.
    pub ttl_seconds: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticCacheConfig {
    /// Embedding dimension; fixed when the semantic table is first created.
    pub dimensions: u32,
    /// Cosine similarity a hit needs when the lookup names no threshold.
    pub default_threshold: f64,
    /// Bounds of a per-lookup `threshold`.
    pub min_threshold: f64,
    pub max_threshold: f64,
    /// TTL per node type, in seconds.
    pub ttl_seconds: BTreeMap<String, u64>,
    /// Longest prompt accepted, in bytes.
    pub max_prompt_bytes: usize,
    /// PostgreSQL: HNSW candidates per search (`hnsw.ef_search`).
    pub ef_search: u32,
    /// PostgreSQL: the HNSW graph's neighbours per element (pgvector's `m`). Fixed when the
    /// index is built (first start, `patchbay cache reindex`); a larger graph finds the
    /// nearest entry at a lower `ef_search` but inserts more slowly (`bench/cache.md`).
    pub hnsw_m: u32,
    /// PostgreSQL: candidates considered while inserting into the HNSW graph
    /// (`ef_construction`, at least `2 * hnsw_m`). Fixed when the index is built.
    pub hnsw_ef_construction: u32,
    /// PostgreSQL: pgvector's iterative index scan (`relaxed_order`, `strict_order`; `off` only
    /// for comparisons: filters then hide matches).
    pub iterative_scan: IterativeScan,
    /// PostgreSQL: most index tuples an iterative scan visits (`hnsw.max_scan_tuples`).
    pub max_scan_tuples: u32,
    /// PostgreSQL: a workspace's node type with at most this many entries is searched
    /// exactly (no HNSW index: a few ms, and no scan that gives up early); larger ones always
    /// use the index, whatever the planner's statistics say. 0: always the index.
    pub exact_search_max_entries: u32,
    /// SQLite: memory the in-process vector index may hold (embeddings of the workspaces and
    /// node types searched lately, loaded on first use, about 4 bytes per dimension per entry
    /// plus ~150 bytes). A workspace's node type that does not fit is searched by scanning
    /// SQLite instead, about 1.3 µs per entry. 0 turns the index off.
    pub sqlite_index_max_bytes: u64,
}

/// An OpenAI-compatible embeddings endpoint (`POST {url}/v1/embeddings`): Ollama, TEI, vLLM,
/// OpenAI. Used when a semantic request carries no embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Base URL such as `http://127.0.0.1:11434`; absent means requests must carry embeddings.
    pub url: Option<String>,
    pub model: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    pub timeout_ms: u64,
}

/// A named pattern the caches refuse to store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DenyPattern {
    /// Shown in the refusal; the matched text never is.
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Count a match only when its digits pass the Luhn check (card numbers).
    #[serde(default)]
    pub luhn: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 86_400,
            max_ttl_seconds: 30 * 86_400,
            max_entries_per_workspace: 100_000,
            purge_interval_seconds: 60,
            max_result_bytes: 256 * 1024,
            max_batch: 100,
            exact: ExactCacheConfig::default(),
            semantic: SemanticCacheConfig::default(),
            embedder: EmbedderConfig::default(),
            deny_list: default_deny_list(),
        }
    }
}

impl Default for ExactCacheConfig {
    fn default() -> Self {
        let ttl = [
            ("function", 7 * 86_400),
            ("pure", 30 * 86_400),
            ("http_request", 3_600),
            ("database_query", 300),
            ("agent", 7 * 86_400),
        ];
        Self {
            ttl_seconds: ttl.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }
}

impl SemanticCacheConfig {
    /// How the semantic table and its index are created.
    pub fn table(&self) -> SemanticTable {
        SemanticTable {
            dimensions: self.dimensions,
            hnsw_m: self.hnsw_m,
            hnsw_ef_construction: self.hnsw_ef_construction,
        }
    }
}

impl Default for SemanticCacheConfig {
    fn default() -> Self {
        Self {
            dimensions: 384,
            default_threshold: 0.92,
            min_threshold: 0.5,
            max_threshold: 1.0,
            ttl_seconds: [("agent".to_string(), 86_400)].into_iter().collect(),
            max_prompt_bytes: 64 * 1024,
            ef_search: 100,
            hnsw_m: SemanticTable::DEFAULT_HNSW_M,
            hnsw_ef_construction: SemanticTable::DEFAULT_HNSW_EF_CONSTRUCTION,
            iterative_scan: IterativeScan::RelaxedOrder,
            max_scan_tuples: 20_000,
            exact_search_max_entries: 1_000,
            sqlite_index_max_bytes: crate::store::vector_index::DEFAULT_MAX_BYTES,
        }
    }
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            url: None,
            model: "all-minilm".into(),
            api_key: None,
            timeout_ms: 10_000,
        }
    }
}

/// Personal data and secrets that have no place in a shared cache.
pub fn default_deny_list() -> Vec<DenyPattern> {
    let pattern = |name: &str, pattern: &str, luhn: bool| DenyPattern {
        name: name.into(),
        pattern: pattern.into(),
        luhn,
    };
    vec![
        pattern(
            "email",
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            false,
        ),
        // 13 to 19 digits, optionally grouped by spaces or dashes, that pass the Luhn check.
        pattern("card_number", r"\b\d(?:[ -]?\d){12,18}\b", true),
        pattern("us_ssn", r"\b\d{3}-\d{2}-\d{4}\b", false),
        pattern(
            "private_key",
            r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
            false,
        ),
        pattern("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", false),
        pattern(
            "bearer_token",
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*",
            false,
        ),
    ]
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            blob_url: None,
            admin_token: None,
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            blob: BlobConfig::default(),
            cas: CasConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            plugins_dir: None,
            plugins: PluginsConfig::default(),
            workflows: WorkflowsConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

/// Server-wide plugin settings: ceilings no manifest may exceed, and the defaults manifests
/// inherit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Plugins the server accepts in all.
    pub max_plugins: u32,
    /// Live instances across every route (the pooling allocator is sized from this).
    pub max_instances_total: u32,
    pub max_queue: u32,
    pub max_timeout_ms: u64,
    pub max_memory_mb: u64,
    pub max_body_bytes: u64,
    pub max_stack_kb: u64,
    /// Largest component accepted at upload.
    pub max_component_bytes: u64,
    /// How often a node checks the store for plugins changed by other nodes.
    pub sync_interval_ms: u64,
    /// Precompiled components; default `data_dir/plugin-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Threads that run guests (beside the HTTP workers); 0 means one per CPU.
    pub guest_threads: usize,
    pub defaults: PluginDefaults,
}

/// Limits a manifest gets for what it leaves out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginDefaults {
    pub max_instances: u32,
    pub queue: u32,
    pub backpressure: crate::plugins::manifest::Backpressure,
    pub block_timeout_ms: u64,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    pub stack_kb: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            max_plugins: 100,
            max_instances_total: 256,
            max_queue: 10_000,
            max_timeout_ms: 60_000,
            max_memory_mb: 512,
            max_body_bytes: 64 * 1024 * 1024,
            max_stack_kb: 2048,
            max_component_bytes: 64 * 1024 * 1024,
            sync_interval_ms: 2_000,
            cache_dir: None,
            guest_threads: 0,
            defaults: PluginDefaults::default(),
        }
    }
}

impl Default for PluginDefaults {
    fn default() -> Self {
        Self {
            max_instances: 16,
            queue: 256,
            backpressure: crate::plugins::manifest::Backpressure::Block,
            block_timeout_ms: 50,
            timeout_ms: 5_000,
            memory_mb: 64,
            max_request_body_bytes: 10 * 1024 * 1024,
            max_response_body_bytes: 64 * 1024 * 1024,
            stack_kb: 512,
        }
    }
}

impl PluginsConfig {
    /// The defaults as a manifest's limits section, for resolution.
    pub fn defaults_spec(&self) -> crate::plugins::manifest::LimitsSpec {
        let d = &self.defaults;
        crate::plugins::manifest::LimitsSpec {
            max_instances: Some(d.max_instances),
            queue: Some(d.queue),
            backpressure: Some(d.backpressure),
            block_timeout_ms: Some(d.block_timeout_ms),
            timeout_ms: Some(d.timeout_ms),
            memory_mb: Some(d.memory_mb),
            max_request_body_bytes: Some(d.max_request_body_bytes),
            max_response_body_bytes: Some(d.max_response_body_bytes),
            stack_kb: Some(d.stack_kb),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            max_connections: 25_000,
            max_connection_rate: 256,
            backlog: 2048,
            header_read_timeout_ms: 10_000,
            keep_alive_ms: 5_000,
            body_read_timeout_ms: 10_000,
            body_min_bytes_per_second: 16 * 1024,
            client_disconnect_timeout_ms: 5_000,
            max_header_bytes: 16 * 1024,
            json_body_limit_bytes: 1024 * 1024,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 0,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            statement_timeout_ms: 30_000,
            sqlite_busy_timeout_ms: 5_000,
        }
    }
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
        }
    }
}

impl Default for CasConfig {
    fn default() -> Self {
        Self {
            max_blob_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            key_requests_per_second: 100,
            key_burst: 200,
            failed_per_minute: 30,
            failed_burst: 10,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".into(),
            token: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            sample_rate: 1.0,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay_ms: 0,
            timeout_ms: 30_000,
        }
    }
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        Self {
            compaction_every: 100,
            sse_heartbeat_ms: 15_000,
            document_cache_entries: 128,
            max_patch_ops: 1_000,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key} = {value:?}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

impl Config {
    /// Loads defaults, then the optional TOML file, then `PATCHBAY_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(config_env());
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, allowed: &'static str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                allowed,
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                &self.listen,
                "an IP address and port such as 127.0.0.1:8080 (port 0 picks a free one)",
            ));
        }
        if !(0.0..=1.0).contains(&self.log.sample_rate) || self.log.sample_rate.is_nan() {
            return Err(invalid(
                "log.sample_rate",
                self.log.sample_rate,
                "a number from 0 to 1",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "a tracing filter such as info, debug or patchbay=debug,sqlx=warn",
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                mask_url(url),
                "sqlite:PATH or postgres://USER@HOST/DB",
            ));
        }
        if let Some(url) = &self.blob_url
            && !["file://", "memory://", "s3://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return Err(invalid(
                "blob_url",
                url,
                "file:///PATH, memory:// or s3://BUCKET",
            ));
        }
        if !self.metrics.path.starts_with('/') || self.metrics.path.starts_with("/api") {
            return Err(invalid(
                "metrics.path",
                &self.metrics.path,
                "an absolute path outside /api, such as /metrics",
            ));
        }
        let positive: [(&'static str, u64); 12] = [
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.max_header_bytes", self.http.max_header_bytes as u64),
            (
                "http.json_body_limit_bytes",
                self.http.json_body_limit_bytes as u64,
            ),
            (
                "database.max_connections",
                self.database.max_connections as u64,
            ),
            ("cas.max_blob_bytes", self.cas.max_blob_bytes),
            ("auth.key_burst", self.auth.key_burst as u64),
            (
                "workflows.compaction_every",
                self.workflows.compaction_every,
            ),
            (
                "workflows.sse_heartbeat_ms",
                self.workflows.sse_heartbeat_ms,
            ),
            (
                "workflows.document_cache_entries",
                self.workflows.document_cache_entries as u64,
            ),
            (
                "workflows.max_patch_ops",
                self.workflows.max_patch_ops as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, value, "a whole number above 0"));
            }
        }
        for (key, value) in [
            (
                "auth.key_requests_per_second",
                self.auth.key_requests_per_second,
            ),
            ("auth.failed_per_minute", self.auth.failed_per_minute),
            ("auth.failed_burst", self.auth.failed_burst),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "a whole number above 0"));
            }
        }
        self.cache.validate()?;
        if self.database.min_connections > self.database.max_connections {
            return Err(invalid(
                "database.min_connections",
                self.database.min_connections,
                "at most database.max_connections",
            ));
        }
        Ok(())
    }

    /// Worker threads actually used.
    pub fn workers(&self) -> usize {
        if self.http.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.http.workers
        }
    }

    /// The effective configuration as TOML-like JSON with secrets replaced by `***`.
    pub fn masked(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("config serializes");
        for pointer in [
            "/admin_token",
            "/metrics/token",
            "/blob/s3_secret_access_key",
            "/cache/embedder/api_key",
        ] {
            if let Some(v) = value.pointer_mut(pointer)
                && !v.is_null()
            {
                *v = "***".into();
            }
        }
        if let Some(url) = self.database_url.as_deref() {
            value["database_url"] = mask_url(url).into();
        }
        value
    }
}

/// Node types that get their own `node_type` label value; the others share `other`.
pub const MAX_LABELED_NODE_TYPES: usize = 32;

impl CacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, allowed: &'static str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                allowed,
            }
        }
        for (key, value) in [
            ("cache.default_ttl_seconds", self.default_ttl_seconds),
            ("cache.max_ttl_seconds", self.max_ttl_seconds),
            (
                "cache.max_entries_per_workspace",
                self.max_entries_per_workspace,
            ),
            ("cache.purge_interval_seconds", self.purge_interval_seconds),
            ("cache.max_result_bytes", self.max_result_bytes as u64),
            (
                "cache.semantic.max_prompt_bytes",
                self.semantic.max_prompt_bytes as u64,
            ),
            ("cache.embedder.timeout_ms", self.embedder.timeout_ms),
            (
                "cache.semantic.max_scan_tuples",
                u64::from(self.semantic.max_scan_tuples),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "a whole number above 0"));
            }
        }
        if !(1..=1000).contains(&self.max_batch) {
            return Err(invalid(
                "cache.max_batch",
                self.max_batch,
                "a whole number from 1 to 1000",
            ));
        }
        if self.default_ttl_seconds > self.max_ttl_seconds {
            return Err(invalid(
                "cache.default_ttl_seconds",
                self.default_ttl_seconds,
                "at most cache.max_ttl_seconds",
            ));
        }
        for (key, table) in [
            ("cache.exact.ttl_seconds", &self.exact.ttl_seconds),
            ("cache.semantic.ttl_seconds", &self.semantic.ttl_seconds),
        ] {
            for (node_type, ttl) in table {
                if *ttl == 0 || *ttl > self.max_ttl_seconds {
                    return Err(invalid(
                        key,
                        format!("{node_type} = {ttl}"),
                        "TTLs from 1 to cache.max_ttl_seconds",
                    ));
                }
                if node_type.is_empty() || node_type.len() > 64 {
                    return Err(invalid(
                        key,
                        node_type,
                        "node type names of 1 to 64 characters",
                    ));
                }
            }
        }
        let node_types: BTreeSet<&String> = self
            .exact
            .ttl_seconds
            .keys()
            .chain(self.semantic.ttl_seconds.keys())
            .collect();
        if node_types.len() > MAX_LABELED_NODE_TYPES {
            return Err(invalid(
                "cache.exact.ttl_seconds",
                node_types.len(),
                "at most 32 node types over both caches (they are metric labels)",
            ));
        }
        let semantic = &self.semantic;
        // pgvector's HNSW index takes vectors of up to 2,000 dimensions.
        if !(1..=2000).contains(&semantic.dimensions) {
            return Err(invalid(
                "cache.semantic.dimensions",
                semantic.dimensions,
                "a whole number from 1 to 2000",
            ));
        }
        let thresholds_ok = [
            semantic.min_threshold,
            semantic.default_threshold,
            semantic.max_threshold,
        ]
        .iter()
        .all(|t| (0.0..=1.0).contains(t))
            && semantic.min_threshold <= semantic.default_threshold
            && semantic.default_threshold <= semantic.max_threshold;
        if !thresholds_ok {
            return Err(invalid(
                "cache.semantic.default_threshold",
                format!(
                    "{} (bounds {} to {})",
                    semantic.default_threshold, semantic.min_threshold, semantic.max_threshold
                ),
                "0 <= min_threshold <= default_threshold <= max_threshold <= 1",
            ));
        }
        if !(1..=1000).contains(&semantic.ef_search) {
            return Err(invalid(
                "cache.semantic.ef_search",
                semantic.ef_search,
                "a whole number from 1 to 1000",
            ));
        }
        // pgvector's bounds: m from 2 to 100, ef_construction from 4 to 1000 and >= 2 * m.
        if !(2..=100).contains(&semantic.hnsw_m) {
            return Err(invalid(
                "cache.semantic.hnsw_m",
                semantic.hnsw_m,
                "a whole number from 2 to 100",
            ));
        }
        if !(4..=1000).contains(&semantic.hnsw_ef_construction)
            || semantic.hnsw_ef_construction < 2 * semantic.hnsw_m
        {
            return Err(invalid(
                "cache.semantic.hnsw_ef_construction",
                semantic.hnsw_ef_construction,
                "a whole number from 4 to 1000, at least twice cache.semantic.hnsw_m",
            ));
        }
        if let Some(url) = &self.embedder.url {
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(invalid(
                    "cache.embedder.url",
                    url,
                    "an http:// or https:// base URL such as http://127.0.0.1:11434",
                ));
            }
            if self.embedder.model.trim().is_empty() {
                return Err(invalid(
                    "cache.embedder.model",
                    &self.embedder.model,
                    "the embedding model's name",
                ));
            }
        }
        let mut names = BTreeSet::new();
        for deny in &self.deny_list {
            if deny.name.is_empty() || !names.insert(deny.name.as_str()) {
                return Err(invalid(
                    "cache.deny_list",
                    &deny.name,
                    "patterns with distinct, non-empty names",
                ));
            }
            if let Err(e) = regex::Regex::new(&deny.pattern) {
                return Err(ConfigError::Parse(format!(
                    "cache.deny_list {}: {:?} is not a regular expression: {e}",
                    deny.name, deny.pattern
                )));
            }
        }
        Ok(())
    }
}

/// `PATCHBAY_*` variables that name a configuration key. Other `PATCHBAY_` variables (the CLI's
/// `PATCHBAY_SERVER` and `PATCHBAY_KEY`, the tests' `PATCHBAY_TEST_*`) are not configuration.
fn config_env() -> Env {
    let top_level: BTreeSet<String> = match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
        // figment hands the filter the key before lower-casing, and after `split` has
        // turned `__` into `.`: `HTTP.WORKERS`.
        let key = key.as_str().to_ascii_lowercase();
        let first = key.split('.').next().unwrap_or_default();
        top_level.contains(first)
    })
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
// figment's Jail closures return its large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn environment_overrides_file_and_nested_keys_use_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "patchbay.toml",
                "listen = \"127.0.0.1:9000\"\n[http]\nworkers = 3\n",
            )?;
            jail.set_env("PATCHBAY_HTTP__WORKERS", "5");
            jail.set_env("PATCHBAY_DATABASE__MAX_CONNECTIONS", "7");
            jail.set_env("PATCHBAY_TEST_DATABASE_URL", "ignored");
            let config = Config::load(Some(Path::new("patchbay.toml"))).unwrap();
            assert_eq!(config.listen, "127.0.0.1:9000");
            assert_eq!(config.http.workers, 5);
            assert_eq!(config.database.max_connections, 7);
            Ok(())
        });
    }

    #[test]
    fn garbage_is_refused_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_LOG__SAMPLE_RATE", "often");
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(
                err.contains("log.sample_rate") && err.contains("often"),
                "{err}"
            );
            jail.set_env("PATCHBAY_LOG__SAMPLE_RATE", "1.5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("log.sample_rate") && err.contains("1.5"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn hnsw_graph_parameters_have_pgvectors_bounds() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).unwrap();
            assert_eq!(
                config.cache.semantic.table(),
                SemanticTable::new(config.cache.semantic.dimensions)
            );
            jail.set_env("PATCHBAY_CACHE__SEMANTIC__HNSW_M", "32");
            jail.set_env("PATCHBAY_CACHE__SEMANTIC__HNSW_EF_CONSTRUCTION", "128");
            let table = Config::load(None).unwrap().cache.semantic.table();
            assert_eq!((table.hnsw_m, table.hnsw_ef_construction), (32, 128));
            // ef_construction below 2 * m is refused, as pgvector would refuse the index.
            jail.set_env("PATCHBAY_CACHE__SEMANTIC__HNSW_EF_CONSTRUCTION", "63");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("cache.semantic.hnsw_ef_construction"), "{err}");
            jail.set_env("PATCHBAY_CACHE__SEMANTIC__HNSW_M", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("cache.semantic.hnsw_m"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn workflow_keys_have_defaults_env_overrides_and_bounds() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).unwrap();
            assert_eq!(config.workflows.compaction_every, 100);
            assert_eq!(config.workflows.sse_heartbeat_ms, 15_000);
            jail.create_file("patchbay.toml", "[workflows]\nmax_patch_ops = 50\n")?;
            jail.set_env("PATCHBAY_WORKFLOWS__COMPACTION_EVERY", "3");
            let config = Config::load(Some(Path::new("patchbay.toml"))).unwrap();
            assert_eq!(
                (
                    config.workflows.compaction_every,
                    config.workflows.max_patch_ops
                ),
                (3, 50)
            );
            jail.set_env("PATCHBAY_WORKFLOWS__COMPACTION_EVERY", "0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("workflows.compaction_every"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        figment::Jail::expect_with(|_| {
            let example = Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../deploy/patchbay.toml"
            ));
            let config = Config::load(Some(example)).unwrap();
            assert_eq!(config.workflows.compaction_every, 100);
            Ok(())
        });
    }

    #[test]
    fn secrets_are_masked() {
        let config = Config {
            admin_token: Some("secret-token".into()),
            database_url: Some("postgres://u:pw@localhost/db".into()),
            ..Config::default()
        };
        let shown = config.masked().to_string();
        assert!(
            !shown.contains("secret-token") && !shown.contains(":pw@"),
            "{shown}"
        );
    }
}
