//! Support for this crate's own tests and the black-box tests in `tests/`: throwaway PostgreSQL
//! databases on the server that `PATCHBAY_TEST_DATABASE_URL` names (`cargo xtask test` starts one).

use sqlx::Connection as _;

/// The variable naming an administrative PostgreSQL URL for tests.
pub const DATABASE_URL_VAR: &str = "PATCHBAY_TEST_DATABASE_URL";

/// Creates an empty database with a unique name and returns its URL.
///
/// Panics with instructions when no test PostgreSQL is configured: a PostgreSQL test that
/// quietly skipped would pass without testing anything.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!("{DATABASE_URL_VAR} is not set: run the tests with `cargo xtask test`, which starts a throwaway PostgreSQL with pgvector, or point {DATABASE_URL_VAR} at one")
    });
    let name = format!("pb_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {DATABASE_URL_VAR} failed: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let mut url = url::Url::parse(&admin).expect("PATCHBAY_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}
