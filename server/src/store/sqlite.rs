//! SQLite backend: the embedded default for one node (WAL journal, one file in the data dir).

use std::str::FromStr;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;

use super::{PoolOptions, StoreResult, WorkflowChange, sql};

pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl SqliteStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; only an OS crash may lose the
            // last commits, the usual trade for one-node servers.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Sqlite>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        sql::record_acquire(started);
        Ok(conn)
    }

    /// One SQLite database serves one node, which hears its own changes in process.
    async fn notify(_tx: &mut sqlx::Transaction<'_, Sqlite>, _change: &WorkflowChange) -> StoreResult<()> {
        Ok(())
    }

    async fn change_feed(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<WorkflowChange>>> {
        Ok(None)
    }
}

sql::impl_sql_store!(SqliteStore, "sqlite");
