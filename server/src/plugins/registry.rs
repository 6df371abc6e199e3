//! The plugin host: which plugins are active, their compiled components, the route table built
//! from them, and their pools. Uploads, deletions and rollbacks go through the store, so every
//! node picks them up (`sync`); the table is rebuilt and swapped atomically on each change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::manifest::{Limits, Manifest, ManifestError, RouteAuth};
use super::pool::{GlobalCap, Pool, PoolFigures};
use super::routes::{RouteConflict, RouteTable};
use super::runtime::{EngineConfig, LoadError, Plugin, RequestLimits, Runtime};
use crate::cas::{Cas, Digest};
use crate::clock;
use crate::config::Config;
use crate::store::{PluginVersionRecord, Store, StoreError};
use crate::telemetry::names::*;

/// Consecutive failures after which a plugin's health gauge reads 0.
const UNHEALTHY_AFTER: u64 = 3;

/// Where a loaded plugin came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Uploaded over the API, kept in the store.
    Store,
    /// Loaded from `plugins_dir` at start.
    Directory,
}

/// Request outcomes of one plugin, for its health figures.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub consecutive_failures: AtomicU64,
    /// Milliseconds since the Unix epoch of the last success; 0 before any.
    pub last_success_ms: AtomicI64,
}

impl PluginStats {
    pub fn record(&self, ok: bool) {
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.last_success_ms
                .store(clock::now_ms(), Ordering::Relaxed);
        } else {
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < UNHEALTHY_AFTER
    }
}

/// A plugin version that is loaded and serving.
pub struct ActivePlugin {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub origin: Origin,
    pub manifest: Manifest,
    pub component: Plugin,
    pub stats: Arc<PluginStats>,
}

/// What a matched route needs to serve a request.
pub struct RouteEntry {
    pub plugin: Arc<ActivePlugin>,
    pub methods: Vec<Method>,
    /// The `Allow` header for 405s.
    pub allow: String,
    pub auth: RouteAuth,
    pub schema: Option<Arc<jsonschema::Validator>>,
    pub pool: Arc<Pool>,
    pub request_limits: RequestLimits,
}

/// A plugin load at start; the error carries where the plugin came from.
type LoadTask<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Arc<ActivePlugin>, (String, HostError)>> + 'a>,
>;

/// Two plugins claiming one route.
#[derive(Debug)]
pub struct Clash {
    pub conflict: RouteConflict,
    pub existing_owner: String,
    pub inserting: String,
}

impl Clash {
    /// The error for a change made to `changed`: it names the other plugin.
    fn blame(self, changed: &str) -> HostError {
        let owner = if self.existing_owner == changed {
            self.inserting
        } else {
            self.existing_owner
        };
        HostError::RouteConflict {
            conflict: self.conflict,
            owner,
        }
    }
}

/// Why an upload or load was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Component(#[from] LoadError),
    #[error("{conflict} (plugin {owner})")]
    RouteConflict {
        conflict: RouteConflict,
        owner: String,
    },
    #[error("the server holds at most {0} plugins")]
    TooMany(u32),
    #[error("no such plugin")]
    NotFound,
    #[error("plugin {0} comes from the plugins directory; change it there")]
    FromDirectory(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

pub struct PluginHost {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    cas: Arc<Cas>,
    config: Arc<Config>,
    global: GlobalCap,
    table: ArcSwap<RouteTable<RouteEntry>>,
    /// Serializes changes to the active set; requests never take it.
    active: tokio::sync::Mutex<BTreeMap<String, Arc<ActivePlugin>>>,
    /// Pools outlive versions while a route's limits stay the same, so a hot swap does not
    /// double a route's capacity.
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    stats: Mutex<HashMap<String, Arc<PluginStats>>>,
    generation: AtomicI64,
}

impl PluginHost {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, cas: Arc<Cas>) -> anyhow::Result<Self> {
        let plugins = &config.plugins;
        let cache_dir = plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("plugin-cache"));
        let runtime = Runtime::new(EngineConfig {
            max_instances: plugins.max_instances_total,
            max_memory_bytes_per_instance: plugins.max_memory_mb << 20,
            max_stack_bytes: (plugins.max_stack_kb << 10) as usize,
            cache_dir: Some(cache_dir),
            guest_threads: plugins.guest_threads,
            ..EngineConfig::default()
        })?;
        Ok(Self {
            runtime: Arc::new(runtime),
            global: Arc::new(Semaphore::new(plugins.max_instances_total as usize)),
            store,
            cas,
            config,
            table: ArcSwap::from_pointee(RouteTable::default()),
            active: tokio::sync::Mutex::new(BTreeMap::new()),
            pools: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            generation: AtomicI64::new(-1),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The current route table; cheap, lock-free.
    pub fn table(&self) -> arc_swap::Guard<Arc<RouteTable<RouteEntry>>> {
        self.table.load()
    }

    /// Loads the store's plugins and the plugins directory's, in parallel. A broken plugin is
    /// reported and skipped; it never blocks the others.
    pub async fn start(&self) {
        let started = Instant::now();
        let mut loads = Vec::new();
        let generation = self.store.plugin_generation().await.unwrap_or(0);
        match self.store.active_plugins().await {
            Ok(records) => {
                for record in records {
                    loads.push(self.load_record_task(record.version));
                }
            }
            Err(err) => tracing::error!(error = %err, "listing plugins in the store failed"),
        }
        if let Some(dir) = &self.config.plugins_dir {
            for manifest_path in plugin_manifests(dir) {
                loads.push(Box::pin(self.load_directory_task(manifest_path)));
            }
        }
        let results = futures_util::future::join_all(loads).await;
        let mut active = self.active.lock().await;
        for result in results {
            match result {
                Ok(plugin) => {
                    if active.contains_key(&plugin.name) {
                        tracing::error!(plugin = %plugin.name, "a plugin of this name is already loaded; skipping the copy from the plugins directory");
                        metrics::counter!(PLUGIN_AUTOLOAD_TOTAL, "outcome" => "duplicate")
                            .increment(1);
                        continue;
                    }
                    metrics::counter!(PLUGIN_AUTOLOAD_TOTAL, "outcome" => "loaded").increment(1);
                    active.insert(plugin.name.clone(), plugin);
                }
                Err((source, err)) => {
                    metrics::counter!(PLUGIN_AUTOLOAD_TOTAL, "outcome" => "failed").increment(1);
                    tracing::error!(source = %source, error = %err, "a plugin failed to load and was skipped");
                }
            }
        }
        if let Err(clash) = self.rebuild(&active) {
            tracing::error!(error = %clash.conflict, "plugins with clashing routes were left out");
        }
        self.generation.store(generation, Ordering::SeqCst);
        metrics::histogram!(PLUGIN_AUTOLOAD_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::info!(
            plugins = active.len(),
            routes = self.table.load().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plugins loaded"
        );
    }

    fn load_record_task(&self, record: PluginVersionRecord) -> LoadTask<'_> {
        Box::pin(async move {
            let source = format!("store:{}@{}", record.name, record.version);
            self.load_record(&record).await.map_err(|e| (source, e))
        })
    }

    async fn load_directory_task(
        &self,
        manifest_path: PathBuf,
    ) -> Result<Arc<ActivePlugin>, (String, HostError)> {
        let source = manifest_path.display().to_string();
        self.load_directory(&manifest_path)
            .await
            .map_err(|e| (source, e))
    }

    async fn load_record(
        &self,
        record: &PluginVersionRecord,
    ) -> Result<Arc<ActivePlugin>, HostError> {
        let manifest: Manifest = serde_json::from_str(&record.manifest)
            .map_err(|e| HostError::Internal(format!("stored manifest: {e}")))?;
        let digest = Digest::parse(&record.digest)
            .ok_or_else(|| HostError::Internal("stored digest is malformed".into()))?;
        let wasm = self
            .cas
            .read_all(&digest)
            .await
            .map_err(|e| HostError::Internal(format!("reading the component: {e}")))?;
        self.compile(
            manifest,
            wasm.to_vec(),
            record.digest.clone(),
            Origin::Store,
        )
        .await
    }

    async fn load_directory(&self, manifest_path: &Path) -> Result<Arc<ActivePlugin>, HostError> {
        let text = tokio::fs::read_to_string(manifest_path)
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        let manifest = Manifest::parse(&text)?;
        let file = manifest
            .component
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", manifest.name));
        let wasm_path = manifest_path.parent().unwrap_or(Path::new(".")).join(file);
        let wasm = tokio::fs::read(&wasm_path)
            .await
            .map_err(|e| HostError::Internal(format!("{}: {e}", wasm_path.display())))?;
        let digest = sha256_hex(&wasm);
        self.compile(manifest, wasm, digest, Origin::Directory)
            .await
    }

    /// Validates the manifest and compiles (or loads the precompiled) component off the async
    /// workers.
    async fn compile(
        &self,
        manifest: Manifest,
        wasm: Vec<u8>,
        digest: String,
        origin: Origin,
    ) -> Result<Arc<ActivePlugin>, HostError> {
        manifest.resolve(&self.config.plugins)?;
        let runtime = Arc::clone(&self.runtime);
        let digest_for_load = digest.clone();
        let component = tokio::task::spawn_blocking(move || runtime.load(&wasm, &digest_for_load))
            .await
            .map_err(|e| HostError::Internal(e.to_string()))??;
        let stats = Arc::clone(
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(manifest.name.clone())
                .or_default(),
        );
        Ok(Arc::new(ActivePlugin {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest,
            origin,
            manifest,
            component,
            stats,
        }))
    }

    /// Uploads a new version: stores the component and manifest, compiles, checks routes, and
    /// makes it active on this node at once (other nodes follow within `sync_interval_ms`).
    pub async fn upload(
        &self,
        manifest: Manifest,
        wasm: Vec<u8>,
        workspace_id: &str,
    ) -> Result<Arc<ActivePlugin>, HostError> {
        if let Some((path, prefix)) = manifest.reserved_route() {
            let conflict = RouteConflict {
                path,
                existing: prefix.to_string(),
            };
            return Err(HostError::RouteConflict {
                conflict,
                owner: "patchbay".into(),
            });
        }
        manifest.resolve(&self.config.plugins)?;
        let mut active = self.active.lock().await;
        if let Some(existing) = active.get(&manifest.name)
            && existing.origin == Origin::Directory
        {
            return Err(HostError::FromDirectory(manifest.name.clone()));
        }
        if !active.contains_key(&manifest.name)
            && active.len() >= self.config.plugins.max_plugins as usize
        {
            return Err(HostError::TooMany(self.config.plugins.max_plugins));
        }
        let digest = sha256_hex(&wasm);
        let stored = self
            .cas
            .put(
                workspace_id,
                Digest::parse(&digest),
                futures_util::stream::iter([Ok::<_, actix_web::error::PayloadError>(
                    bytes::Bytes::from(wasm.clone()),
                )]),
            )
            .await
            .map_err(|e| HostError::Internal(format!("storing the component: {e}")))?;
        let plugin = self
            .compile(manifest, wasm, stored.digest.hex(), Origin::Store)
            .await?;
        // Check the routes against everyone else before anything is recorded.
        let mut candidate = active.clone();
        candidate.insert(plugin.name.clone(), Arc::clone(&plugin));
        let table = self
            .build_table(&candidate)
            .map_err(|c| c.blame(&plugin.name))?;
        let record = PluginVersionRecord {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            manifest: serde_json::to_string(&plugin.manifest)
                .map_err(|e| HostError::Internal(e.to_string()))?,
            digest: plugin.digest.clone(),
            created_at_ms: clock::now_ms(),
        };
        self.store.add_plugin_version(&record).await?;
        self.store
            .activate_plugin(&plugin.name, &plugin.version, clock::now_ms())
            .await?;
        self.table.store(Arc::new(table));
        *active = candidate;
        self.generation.store(
            self.store.plugin_generation().await.unwrap_or(-1),
            Ordering::SeqCst,
        );
        Ok(plugin)
    }

    /// Makes an earlier version active again: `version`, or the one before the active one.
    pub async fn rollback(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ActivePlugin>, HostError> {
        let mut active = self.active.lock().await;
        let current = active.get(name).cloned().ok_or(HostError::NotFound)?;
        if current.origin == Origin::Directory {
            return Err(HostError::FromDirectory(name.to_string()));
        }
        let versions = self.store.plugin_versions(name).await?;
        let target = match version {
            Some(v) => versions.iter().find(|r| r.version == v),
            None => {
                let at = versions.iter().position(|r| r.version == current.version);
                at.and_then(|i| i.checked_sub(1))
                    .and_then(|i| versions.get(i))
            }
        }
        .cloned()
        .ok_or(HostError::NotFound)?;
        let plugin = self.load_record(&target).await?;
        let mut candidate = active.clone();
        candidate.insert(name.to_string(), Arc::clone(&plugin));
        let table = self.build_table(&candidate).map_err(|c| c.blame(name))?;
        self.store
            .activate_plugin(name, &target.version, clock::now_ms())
            .await?;
        self.table.store(Arc::new(table));
        *active = candidate;
        Ok(plugin)
    }

    pub async fn delete(&self, name: &str) -> Result<(), HostError> {
        let mut active = self.active.lock().await;
        match active.get(name) {
            None => return Err(HostError::NotFound),
            Some(p) if p.origin == Origin::Directory => {
                return Err(HostError::FromDirectory(name.to_string()));
            }
            Some(_) => {}
        }
        self.store.delete_plugin(name).await?;
        active.remove(name);
        let _ = self.rebuild(&active);
        Ok(())
    }

    /// The active plugins, by name.
    pub async fn list(&self) -> Vec<Arc<ActivePlugin>> {
        self.active.lock().await.values().cloned().collect()
    }

    pub async fn get(&self, name: &str) -> Option<Arc<ActivePlugin>> {
        self.active.lock().await.get(name).cloned()
    }

    /// Pool figures of a plugin's routes, by route template.
    pub fn pool_figures(&self, name: &str) -> Vec<(String, PoolFigures)> {
        self.table
            .load()
            .entries()
            .filter(|(_, e)| e.plugin.name == name)
            .map(|(template, e)| (template.to_string(), e.pool.figures()))
            .collect()
    }

    /// Picks up changes other nodes made: reloads when the store's generation moved.
    pub async fn sync(&self) {
        let Ok(generation) = self.store.plugin_generation().await else {
            return;
        };
        if generation == self.generation.load(Ordering::SeqCst) {
            return;
        }
        let records = match self.store.active_plugins().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(error = %err, "reading plugins for sync failed");
                return;
            }
        };
        let mut active = self.active.lock().await;
        let mut next: BTreeMap<String, Arc<ActivePlugin>> = active
            .iter()
            .filter(|(_, p)| p.origin == Origin::Directory)
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for record in records {
            let record = record.version;
            let unchanged = active
                .get(&record.name)
                .filter(|p| p.version == record.version && p.digest == record.digest)
                .cloned();
            let plugin = match unchanged {
                Some(p) => p,
                None => match self.load_record(&record).await {
                    Ok(p) => p,
                    Err(err) => {
                        tracing::error!(plugin = %record.name, error = %err, "loading a plugin changed by another node failed");
                        continue;
                    }
                },
            };
            next.insert(record.name.clone(), plugin);
        }
        let _ = self.rebuild(&next);
        *active = next;
        self.generation.store(generation, Ordering::SeqCst);
        tracing::info!(
            generation,
            plugins = active.len(),
            "plugins synchronised from the store"
        );
    }

    pub fn spawn_sync(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let every = Duration::from_millis(self.config.plugins.sync_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.sync().await;
            }
        });
    }

    /// Rebuilds and swaps the table; on a clash the clashing plugin's routes are left out.
    fn rebuild(&self, active: &BTreeMap<String, Arc<ActivePlugin>>) -> Result<(), Clash> {
        let mut ok = active.clone();
        let mut first_clash = None;
        loop {
            match self.build_table(&ok) {
                Ok(table) => {
                    self.table.store(Arc::new(table));
                    return first_clash.map_or(Ok(()), Err);
                }
                Err(clash) => {
                    tracing::error!(error = %clash.conflict, plugin = %clash.inserting, other = %clash.existing_owner, "route conflict; leaving the plugin out");
                    // Leave out the plugin whose route clashed, so the rest keep serving.
                    ok.remove(&clash.inserting);
                    first_clash.get_or_insert(clash);
                }
            }
        }
    }

    fn build_table(
        &self,
        active: &BTreeMap<String, Arc<ActivePlugin>>,
    ) -> Result<RouteTable<RouteEntry>, Clash> {
        let mut table = RouteTable::default();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut used = std::collections::HashSet::new();
        for plugin in active.values() {
            let limits = match plugin.manifest.resolve(&self.config.plugins) {
                Ok(l) => l,
                Err(_) => continue,
            };
            for (route, limits) in plugin.manifest.routes.iter().zip(limits) {
                let key = (plugin.name.clone(), route.path.clone());
                let pool = match pools.get(&key) {
                    Some(pool) if *pool.limits() == limits => Arc::clone(pool),
                    _ => Arc::new(Pool::new(limits.clone(), Arc::clone(&self.global))),
                };
                used.insert(key.clone());
                let entry = RouteEntry {
                    plugin: Arc::clone(plugin),
                    methods: route
                        .methods
                        .iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect(),
                    allow: route.methods.join(", "),
                    auth: route.auth,
                    schema: route
                        .request_schema
                        .as_ref()
                        .and_then(|s| jsonschema::validator_for(s).ok())
                        .map(Arc::new),
                    pool: Arc::clone(&pool),
                    request_limits: request_limits(plugin, &limits),
                };
                if let Err(conflict) = table.insert(&route.path, Arc::new(entry)) {
                    let owner = owners.get(&conflict.existing).cloned().unwrap_or_default();
                    return Err(Clash {
                        conflict,
                        existing_owner: owner,
                        inserting: plugin.name.clone(),
                    });
                }
                owners.insert(route.path.clone(), plugin.name.clone());
                pools.insert(key, pool);
            }
        }
        pools.retain(|key, _| used.contains(key));
        Ok(table)
    }

    /// Sets the per-plugin gauges; called at scrape time.
    pub fn publish_gauges(&self) {
        metrics::counter!(PLUGIN_COMPILES_TOTAL).absolute(self.runtime.compile_count());
        let mut per_plugin: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
        let table = self.table.load();
        for (_, entry) in table.entries() {
            let f = entry.pool.figures();
            let sums = per_plugin.entry(entry.plugin.name.clone()).or_default();
            sums.0 += f.capacity;
            sums.1 += f.busy;
            sums.2 += f.queued;
        }
        for (name, (capacity, busy, queued)) in &per_plugin {
            metrics::gauge!(PLUGIN_CAPACITY, "plugin" => name.clone()).set(f64::from(*capacity));
            metrics::gauge!(PLUGIN_BUSY_INSTANCES, "plugin" => name.clone()).set(f64::from(*busy));
            metrics::gauge!(PLUGIN_QUEUE_DEPTH, "plugin" => name.clone()).set(f64::from(*queued));
        }
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let now = clock::now_ms();
        for (name, s) in stats.iter().filter(|(n, _)| per_plugin.contains_key(*n)) {
            metrics::gauge!(PLUGIN_HEALTHY, "plugin" => name.clone()).set(if s.healthy() {
                1.0
            } else {
                0.0
            });
            metrics::gauge!(PLUGIN_CONSECUTIVE_FAILURES, "plugin" => name.clone())
                .set(s.consecutive_failures.load(Ordering::Relaxed) as f64);
            let last = s.last_success_ms.load(Ordering::Relaxed);
            if last > 0 {
                metrics::gauge!(PLUGIN_SECONDS_SINCE_SUCCESS, "plugin" => name.clone())
                    .set((now - last) as f64 / 1000.0);
            }
        }
    }
}

fn request_limits(plugin: &ActivePlugin, limits: &Limits) -> RequestLimits {
    RequestLimits {
        timeout: limits.timeout(),
        memory_bytes: limits.memory_mb << 20,
        max_request_body: limits.max_request_body_bytes,
        max_response_body: limits.max_response_body_bytes,
        env: plugin
            .manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        allowed_outbound_hosts: plugin.manifest.allowed_outbound_hosts.clone(),
        plugin_name: plugin.name.clone(),
    }
}

/// `*/plugin.toml` under the directory.
fn plugin_manifests(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::error!(dir = %dir.display(), "the plugins directory cannot be read");
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join("plugin.toml"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
