//! PostgreSQL backend: metadata (and, with pgvector, vectors) for many stateless server nodes.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::Postgres;
use tokio::sync::mpsc;

use super::{PoolOptions, StoreResult, WORKFLOW_CHANNEL, WorkflowChange, sql};

/// Changes buffered between the listener and its consumer.
const CHANGE_FEED_CAPACITY: usize = 1024;
/// Longest wait between attempts to re-establish a lost LISTEN connection.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub struct PostgresStore {
    pool: PgPool,
    connect: PgConnectOptions,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl PostgresStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)?
            .application_name("patchbay")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect.clone())
            .await?;
        // Many nodes may start at once: sqlx takes an advisory lock so one migrates at a time.
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, connect })
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Postgres>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        sql::record_acquire(started);
        Ok(conn)
    }

    /// Announces a change to every node's listener. PostgreSQL delivers it when, and only if,
    /// the transaction commits, and in commit order.
    async fn notify(tx: &mut sqlx::Transaction<'_, Postgres>, change: &WorkflowChange) -> StoreResult<()> {
        if let Some(payload) = change.payload() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORKFLOW_CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Starts listening (before returning, so no change committed afterwards is missed) and
    /// hands every node's changes to the receiver. A lost connection is re-established and
    /// reported as [`WorkflowChange::Resync`], since changes may have passed unheard.
    async fn change_feed(&self) -> StoreResult<Option<mpsc::Receiver<WorkflowChange>>> {
        let listener = listen(&self.connect).await?;
        let (tx, rx) = mpsc::channel(CHANGE_FEED_CAPACITY);
        tokio::spawn(run_change_feed(self.connect.clone(), listener, tx));
        Ok(Some(rx))
    }
}

/// A LISTEN connection of its own, outside the store's pool, which it would otherwise hold.
async fn listen(connect: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(WORKFLOW_CHANNEL).await?;
    Ok(listener)
}

async fn run_change_feed(connect: PgConnectOptions, mut listener: PgListener, tx: mpsc::Sender<WorkflowChange>) {
    loop {
        let change = match listener.try_recv().await {
            Ok(Some(notification)) => match WorkflowChange::parse(notification.payload()) {
                Some(change) => change,
                None => {
                    tracing::warn!(payload = notification.payload(), "ignoring a malformed workflow notification");
                    continue;
                }
            },
            // The connection dropped and sqlx re-established it (and re-issued LISTEN).
            Ok(None) => WorkflowChange::Resync,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(error = %err, "listening for workflow changes failed; reconnecting");
                let mut delay = Duration::from_millis(100);
                listener = loop {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    match listen(&connect).await {
                        Ok(listener) => break listener,
                        Err(err) => {
                            tracing::warn!(error = %err, "re-establishing LISTEN failed");
                            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                        }
                    }
                };
                WorkflowChange::Resync
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

sql::impl_sql_store!(PostgresStore, "postgres");
