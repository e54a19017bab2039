//! PostgreSQL connections and schema: creates the database when missing and applies the
//! migrations embedded from `migrations/`.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

/// Deadline for taking a connection from the pool.
pub const ACQUIRE_TIMEOUT_S: u64 = 10;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the database: {0}")]
    Create(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects, creating the database first if it does not exist.
pub async fn connect(database_url: &str, connections_max: u32) -> Result<PgPool, DbError> {
    if !Postgres::database_exists(database_url).await.map_err(DbError::Connect)? {
        // Two processes starting together may race here; the loser's error is harmless.
        if let Err(error) = Postgres::create_database(database_url).await
            && !Postgres::database_exists(database_url).await.unwrap_or(false)
        {
            return Err(DbError::Create(error));
        }
        tracing::info!("created the database");
    }
    PgPoolOptions::new()
        .max_connections(connections_max.max(4))
        .acquire_timeout(Duration::from_secs(ACQUIRE_TIMEOUT_S))
        // A ping before every checkout costs a round trip per transaction; a dead
        // connection fails its first statement instead, and callers retry.
        .test_before_acquire(false)
        .connect(database_url)
        .await
        .map_err(DbError::Connect)
}

/// Applies pending migrations. Safe to run from several processes at once: sqlx serialises
/// them with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
