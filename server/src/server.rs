//! `patchbay serve`: wires the services, binds, and shuts down gracefully on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::dev::ServerHandle;
use actix_web::http::KeepAlive;

use crate::app::{self, AppState, Lifecycle};
use crate::auth::AuthService;
use crate::cache::Caches;
use crate::cas::{self, Cas};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::plugins::registry::PluginHost;
use crate::store;
use crate::telemetry::{Metrics, logging::LIFECYCLE};
use crate::workflows::WorkflowService;

/// Opens the store and the blob store and builds the shared state.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let metrics = if config.metrics.enabled {
        Some(Arc::new(Metrics::install()?))
    } else {
        None
    };
    let store = store::open(&config).await?;
    let objects = cas::backend::open(&config)?;
    let cas = Arc::new(Cas::new(
        objects,
        Arc::clone(&store),
        config.cas.max_blob_bytes,
    ));
    let auth = Arc::new(AuthService::new(Arc::clone(&store), &config));
    let config = Arc::new(config);
    let plugins = Arc::new(PluginHost::new(
        Arc::clone(&config),
        Arc::clone(&store),
        Arc::clone(&cas),
    )?);
    let workflows = WorkflowService::start(
        Arc::clone(&store),
        Arc::clone(&cas),
        config.workflows.clone(),
    )
    .await?;
    let caches =
        Arc::new(Caches::new(Arc::clone(&store), &config.cache, Arc::new(SystemClock)).await?);
    Ok(AppState {
        config,
        store,
        cas,
        auth,
        workflows,
        caches,
        metrics,
        lifecycle: Arc::new(Lifecycle::default()),
        plugins,
    })
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = build_state(config).await?;
    let config = Arc::clone(&state.config);
    if let Some(key) = state.auth.bootstrap(config.admin_token.as_deref()).await? {
        // Shown once, on stdout, for the person who started the server; never logged.
        println!("admin API key (system key of workspace \"default\"; shown only now): {key}");
    }
    if let Some(metrics) = &state.metrics {
        metrics.spawn_upkeep();
    }
    state.auth.spawn_sweeper();
    state.plugins.start().await;
    state.plugins.spawn_sync();
    state.caches.spawn_purger();
    let sweeper = Arc::clone(&state.cas);
    tokio::spawn(async move { sweeper.sweep_stale_temporaries().await });

    let http = &config.http;
    let workers = config.workers();
    let keep_alive = match http.keep_alive_ms {
        0 => KeepAlive::Disabled,
        ms => KeepAlive::Timeout(Duration::from_millis(ms)),
    };
    let app_state = state.clone();
    let head_window = Duration::from_millis(http.keep_alive_ms + http.header_read_timeout_ms);
    let server = HttpServer::new(move || app::build(app_state.clone()))
        .workers(workers)
        // actix counts connections per worker; the setting is for the whole server.
        .max_connections(http.max_connections.div_ceil(workers).max(1))
        .max_connection_rate(http.max_connection_rate.max(1))
        .backlog(http.backlog)
        .client_request_timeout(Duration::from_millis(http.header_read_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(http.client_disconnect_timeout_ms))
        .keep_alive(keep_alive)
        .shutdown_timeout(config.shutdown.timeout_ms.div_ceil(1000))
        .disable_signals()
        .on_connect(crate::http::head_deadline::on_connect(head_window))
        .bind(&config.listen)?;
    for addr in server.addrs() {
        tracing::info!(target: LIFECYCLE, "listening on http://{addr}");
    }
    tracing::info!(
        target: LIFECYCLE,
        database = state.store.backend(),
        workers,
        metrics = state.metrics.is_some(),
        "patchbay {} started",
        env!("CARGO_PKG_VERSION")
    );
    let server = server.run();
    let drain = Duration::from_millis(config.shutdown.drain_delay_ms);
    actix_web::rt::spawn(stop_on_signal(
        server.handle(),
        Arc::clone(&state.lifecycle),
        Arc::clone(&state.workflows),
        drain,
    ));
    server.await?;
    tracing::info!(target: LIFECYCLE, "stopped");
    Ok(())
}

/// First signal: `/ready` turns 503 at once, the server keeps serving for the drain delay, then
/// stops accepting, ends workflow event streams (clients resume elsewhere) and lets in-flight
/// requests finish. A second signal stops at once.
async fn stop_on_signal(
    handle: ServerHandle,
    lifecycle: Arc<Lifecycle>,
    workflows: Arc<WorkflowService>,
    drain: Duration,
) {
    wait_for_signal().await;
    lifecycle.begin_shutdown();
    tracing::info!(target: LIFECYCLE, drain_ms = drain.as_millis() as u64, "shutting down: draining");
    let graceful = async {
        tokio::time::sleep(drain).await;
        // `stop` sends its command at once; ending the streams lets the graceful stop finish.
        let stopped = handle.stop(true);
        workflows.close_streams();
        stopped.await;
    };
    tokio::select! {
        () = graceful => {}
        () = wait_for_signal() => {
            tracing::warn!(target: LIFECYCLE, "second signal: stopping now");
            handle.stop(false).await;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
