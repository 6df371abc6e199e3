//! One typed configuration: defaults < `--config patchbay.toml` < `PATCHBAY_*` environment.
//!
//! The environment variable of a key is `PATCHBAY_` + its path upper-cased with `__` between
//! levels (`cache.semantic.dimensions` -> `PATCHBAY_CACHE__SEMANTIC__DIMENSIONS`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    pub workflows: WorkflowsConfig,
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
            workflows: WorkflowsConfig::default(),
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
            ("http.header_read_timeout_ms", self.http.header_read_timeout_ms),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.max_header_bytes", self.http.max_header_bytes as u64),
            ("http.json_body_limit_bytes", self.http.json_body_limit_bytes as u64),
            ("database.max_connections", self.database.max_connections as u64),
            ("cas.max_blob_bytes", self.cas.max_blob_bytes),
            ("auth.key_burst", self.auth.key_burst as u64),
            ("workflows.compaction_every", self.workflows.compaction_every),
            ("workflows.sse_heartbeat_ms", self.workflows.sse_heartbeat_ms),
            ("workflows.document_cache_entries", self.workflows.document_cache_entries as u64),
            ("workflows.max_patch_ops", self.workflows.max_patch_ops as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, value, "a whole number above 0"));
            }
        }
        for (key, value) in [
            ("auth.key_requests_per_second", self.auth.key_requests_per_second),
            ("auth.failed_per_minute", self.auth.failed_per_minute),
            ("auth.failed_burst", self.auth.failed_burst),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "a whole number above 0"));
            }
        }
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

/// `PATCHBAY_*` variables that name a configuration key. Other `PATCHBAY_` variables (the CLI's
/// `PATCHBAY_SERVER` and `PATCHBAY_KEY`, the tests' `PATCHBAY_TEST_*`) are not configuration.
fn config_env() -> Env {
    let top_level: BTreeSet<String> = match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    Env::prefixed(ENV_PREFIX)
        .split("__")
        .filter(move |key| {
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
            jail.create_file("patchbay.toml", "listen = \"127.0.0.1:9000\"\n[http]\nworkers = 3\n")?;
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
            assert!(err.contains("log.sample_rate") && err.contains("often"), "{err}");
            jail.set_env("PATCHBAY_LOG__SAMPLE_RATE", "1.5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("log.sample_rate") && err.contains("1.5"), "{err}");
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
            assert_eq!((config.workflows.compaction_every, config.workflows.max_patch_ops), (3, 50));
            jail.set_env("PATCHBAY_WORKFLOWS__COMPACTION_EVERY", "0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("workflows.compaction_every"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        figment::Jail::expect_with(|_| {
            let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/patchbay.toml"));
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
        assert!(!shown.contains("secret-token") && !shown.contains(":pw@"), "{shown}");
    }
}
