//! PostgreSQL backend: metadata (and, with pgvector, vectors) for many stateless server nodes.

use std::str::FromStr;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Postgres;

use super::{PoolOptions, StoreResult, sql};

pub struct PostgresStore {
    pool: PgPool,
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
            .connect_with(connect)
            .await?;
        // Many nodes may start at once: sqlx takes an advisory lock so one migrates at a time.
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    async fn acquire(&self) -> StoreResult<PoolConnection<Postgres>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        sql::record_acquire(started);
        Ok(conn)
    }
}

sql::impl_sql_store!(PostgresStore, "postgres");
