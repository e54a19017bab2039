//! PostgreSQL connections and schema: creates the database when missing and applies the
//! migrations embedded from `migrations/`.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// Deadline for taking a connection from the pool.
pub const ACQUIRE_TIMEOUT_S: u64 = 10;

/// Server-side limits every session of every pool carries (PostgreSQL interval syntax). A
/// statement that runs past `statement_timeout` is cancelled by the server, a session idle
/// inside a transaction is ended (freeing its locks), and the server's TCP keepalive finds a
/// client that vanished (a half-open connection) within about 25 s instead of the kernel's
/// two hours. sqlx has no client-side keepalive; the client side is bounded by each caller's
/// own deadline (the committer's transaction timeout, the HTTP request timeout).
pub const SESSION_OPTIONS: [(&str, &str); 6] = [
    ("statement_timeout", "60s"),
    ("idle_in_transaction_session_timeout", "60s"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("lock_timeout", "30s"),
];

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the database: {0}")]
    Create(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("computing the event chain failed: {0}")]
    Chain(#[source] crate::eventlog::store::StoreError),
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
    let options: PgConnectOptions = database_url.parse().map_err(DbError::Connect)?;
    PgPoolOptions::new()
        .max_connections(connections_max.max(4))
        .acquire_timeout(Duration::from_secs(ACQUIRE_TIMEOUT_S))
        // A ping before every checkout costs a round trip per transaction; a dead
        // connection fails its first statement instead, and callers retry.
        .test_before_acquire(false)
        .connect_with(options.options(SESSION_OPTIONS))
        .await
        .map_err(DbError::Connect)
}

/// Applies pending migrations, then computes the event chain of any events stored without
/// it (a log from before migration `0010_event_chain.sql`; nothing to do otherwise, one
/// read). Safe to run from several processes at once: sqlx serialises the migrations with an
/// advisory lock, and fillers take turns on the head row.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    // A migration (an index on a large table) may rightly take longer than a statement of
    // the running service may.
    let mut connection = pool.acquire().await.map_err(DbError::Connect)?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *connection)
        .await
        .map_err(DbError::Connect)?;
    MIGRATOR.run(&mut *connection).await?;
    sqlx::query("RESET statement_timeout")
        .execute(&mut *connection)
        .await
        .map_err(DbError::Connect)?;
    drop(connection);
    let chained = crate::eventlog::store::chain::fill(pool).await.map_err(DbError::Chain)?;
    if chained > 0 {
        tracing::info!(events = chained, "computed the event chain of events stored without it");
    }
    Ok(())
}
