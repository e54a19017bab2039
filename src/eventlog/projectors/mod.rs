//! Store adapters for projectors whose read models are PostgreSQL tables, and their rebuild.
//!
//! [`PgProjection`] keeps the checkpoint rule for every such projector: a commit locks the
//! projector's checkpoint row, checks it is where the batch starts, writes the changes through
//! the projector's [`PgWriter`] and moves the checkpoint, in one transaction.
//!
//! [`rebuild`] feeds the whole log through the same `apply` into shadow tables
//! (`<table>_rebuild`, under checkpoint `<name>:rebuild`), then swaps them in and moves the
//! live checkpoint in one transaction, so readers see the old model or the new one, never a
//! half-built one. A live runner commits against the same checkpoint row, so it waits out the
//! swap and then continues from the rebuilt position.

pub mod event_type_stats;

use std::future::Future;
use std::time::Duration;

use projections::{CommitError, ProjectionStore, Projector};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::eventlog::projector::{Feeder, RunnerError};
use crate::eventlog::store;

/// Writes one projector's changes into its tables.
pub trait PgWriter<C>: Send + Sync + 'static {
    /// The tables of the read model, in the order a rebuild creates and swaps them.
    fn tables(&self) -> &'static [&'static str];

    /// Applies `changes` to the tables named `<table><suffix>`, inside the caller's
    /// transaction.
    fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<C>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

pub const SHADOW_SUFFIX: &str = "_rebuild";

pub struct PgProjection<W> {
    pool: PgPool,
    writer: W,
    checkpoint_key: String,
    suffix: &'static str,
}

impl<W> PgProjection<W> {
    /// The live read model of projector `name`.
    pub fn live(pool: PgPool, writer: W, name: &str) -> PgProjection<W> {
        PgProjection { pool, writer, checkpoint_key: name.to_owned(), suffix: "" }
    }

    fn shadow(pool: PgPool, writer: W, name: &str) -> PgProjection<W> {
        let checkpoint_key = format!("{name}:rebuild");
        PgProjection { pool, writer, checkpoint_key, suffix: SHADOW_SUFFIX }
    }

    /// A scratch model of projector `name` in the tables `<table><suffix>`, under checkpoint
    /// `<name>:<purpose>`: what `brain events verify` builds to compare with the live model.
    pub fn scratch(
        pool: PgPool,
        writer: W,
        name: &str,
        purpose: &str,
        suffix: &'static str,
    ) -> PgProjection<W> {
        let checkpoint_key = format!("{name}:{purpose}");
        PgProjection { pool, writer, checkpoint_key, suffix }
    }
}

/// The position a PostgreSQL projector's read model reflects (0 before any), read with the
/// caller's executor so it can share a snapshot with the rows it describes.
pub async fn checkpoint<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    projector: &str,
) -> Result<u64, sqlx::Error> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projector_checkpoints WHERE projector = $1")
            .bind(projector)
            .fetch_optional(executor)
            .await?;
    Ok(position.unwrap_or(0) as u64)
}

/// One read-only snapshot of the database, for reading a read model's rows and then the
/// checkpoint they reflect: a commit by the projector between the two reads cannot make the
/// position disagree with the rows.
pub struct Snapshot(sqlx::Transaction<'static, sqlx::Postgres>);

impl Snapshot {
    /// Begins the snapshot. A pooled connection that its last user left inside a
    /// transaction of the server's (one sqlx no longer counted) makes the isolation level
    /// fail with `active_sql_transaction`: that transaction is rolled back, said in the log,
    /// and the snapshot begun again, rather than the caller answered a 500.
    pub async fn begin(pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
        let mut tx = pool.begin().await?;
        match Self::isolate(&mut tx).await {
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("25001") => {
                tracing::warn!(%error, "a pooled connection was inside a transaction: ended it");
                sqlx::query("ROLLBACK").execute(&mut *tx).await?;
                drop(tx);
                let mut tx = pool.begin().await?;
                Self::isolate(&mut tx).await?;
                Ok(Snapshot(tx))
            }
            outcome => outcome.map(|()| Snapshot(tx)),
        }
    }

    async fn isolate(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(tx)
            .await
            .map(drop)
    }

    /// The connection to read the rows with.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }

    /// The position `projector` had reached in this snapshot; ends it.
    pub async fn position(mut self, projector: &str) -> Result<u64, sqlx::Error> {
        let position = checkpoint(&mut *self.0, projector).await?;
        self.0.commit().await?;
        Ok(position)
    }
}

impl<C: Send + 'static, W: PgWriter<C>> ProjectionStore<C> for PgProjection<W> {
    type Error = sqlx::Error;

    async fn checkpoint(&mut self) -> Result<u64, sqlx::Error> {
        checkpoint(&self.pool, &self.checkpoint_key).await
    }

    async fn commit(
        &mut self,
        after: u64,
        up_to: u64,
        changes: Vec<C>,
    ) -> Result<(), CommitError<sqlx::Error>> {
        // On a connection taken for it, within a deadline: a commit on a dead connection
        // (half-open; sqlx has no client keepalive) would otherwise hold the projector for
        // ever. Past the deadline the connection is closed, never pooled again.
        let mut pooled = self.pool.acquire().await.map_err(CommitError::Store)?;
        let commit = async {
            let mut tx = begin_unsynced_on(&mut pooled).await?;
            if let Some(actual) =
                advance_checkpoint(&mut tx, &self.checkpoint_key, after, up_to).await?
            {
                return Ok(Some(actual));
            }
            self.writer.write(&mut tx, self.suffix, changes).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(None)
        };
        match tokio::time::timeout(store::READ_TIMEOUT, commit).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(actual))) => Err(CommitError::Moved { actual }),
            Ok(Err(error)) => Err(CommitError::Store(error)),
            Err(_) => {
                pooled.close_on_drop();
                Err(CommitError::Store(sqlx::Error::Protocol(
                    "projector commit got no answer in time".into(),
                )))
            }
        }
    }

    async fn reset(&mut self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        lock_checkpoint(&mut tx, &self.checkpoint_key).await?;
        for table in self.writer.tables() {
            let table = format!("{table}{}", self.suffix);
            sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {table}"))).execute(&mut *tx).await?;
        }
        move_checkpoint(&mut tx, &self.checkpoint_key, 0).await?;
        tx.commit().await
    }
}

/// Begins a projector's transaction, which commits without waiting for its WAL flush: a read
/// model's commit may be lost in a crash of PostgreSQL only together with its checkpoint (they
/// are one transaction), and what is lost is then applied again from the log; so projectors
/// need no fsync of their own, and do not wait on (or add to) the event store's. `BEGIN` and
/// the setting go in one simple query: one round trip, not two.
pub async fn begin_unsynced(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(BEGIN_UNSYNCED).await
}

/// [`begin_unsynced`] on a connection the caller holds.
pub async fn begin_unsynced_on(
    connection: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    sqlx::Connection::begin_with(connection, BEGIN_UNSYNCED).await
}

const BEGIN_UNSYNCED: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Moves `key`'s checkpoint from `after` to `to` inside the caller's transaction, whose lock
/// on the row then holds until it ends; answers the checkpoint's actual position, having moved
/// nothing, if it was not at `after` (a rebuild moved it). One statement in the usual case: a
/// compare-and-set, where locking the row, checking it and moving it used to take two and
/// leave two row versions per commit. A missing row (a projector's first commit) is created
/// at 0 first.
pub async fn advance_checkpoint(
    connection: &mut PgConnection,
    key: &str,
    after: u64,
    to: u64,
) -> Result<Option<u64>, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE projector_checkpoints SET position = $3, updated_at = now()
         WHERE projector = $1 AND position = $2",
    )
    .bind(key)
    .bind(after as i64)
    .bind(to as i64)
    .execute(&mut *connection)
    .await?;
    if moved.rows_affected() == 1 {
        return Ok(None);
    }
    let actual = lock_checkpoint(&mut *connection, key).await?;
    if actual != after {
        return Ok(Some(actual));
    }
    move_checkpoint(connection, key, to).await?;
    Ok(None)
}

/// Sets a projector's checkpoint, inside the caller's transaction (which locked its row).
pub async fn move_checkpoint(
    connection: &mut PgConnection,
    key: &str,
    position: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projector_checkpoints SET position = $2, updated_at = now() WHERE projector = $1",
    )
    .bind(key)
    .bind(position as i64)
    .execute(connection)
    .await
    .map(|_| ())
}

/// Locks a projector's checkpoint row (creating it at 0) and returns its position.
pub async fn lock_checkpoint(connection: &mut PgConnection, key: &str) -> Result<u64, sqlx::Error> {
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO projector_checkpoints (projector, position) VALUES ($1, 0)
         ON CONFLICT (projector) DO UPDATE SET position = projector_checkpoints.position
         RETURNING position",
    )
    .bind(key)
    .fetch_one(connection)
    .await?;
    Ok(position as u64)
}

/// Resets of one projector `projector_resets` keeps (the newest).
pub const RESETS_KEPT: i64 = 100;
/// Longest the record of a reset may take.
pub const RESET_RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// Records that `projector`'s read model was reset (`reason`: `rebuild`, `lost_state`,
/// `ahead_of_log`) and is now at `position`. Best effort: the record is for people, and a
/// model that heals must not wait on it.
pub async fn record_reset(pool: &PgPool, projector: &str, reason: &str, position: u64) {
    let record = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO projector_resets (projector, reason, position) VALUES ($1, $2, $3)",
        )
        .bind(projector)
        .bind(reason)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM projector_resets WHERE projector = $1 AND id <= (
                 SELECT id FROM projector_resets WHERE projector = $1
                 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        )
        .bind(projector)
        .bind(RESETS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    };
    match tokio::time::timeout(RESET_RECORD_TIMEOUT, record).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(projector, %error, "reset not recorded"),
        Err(_) => tracing::warn!(projector, "reset not recorded in time"),
    }
}

/// Gives `shadow`'s columns the statistics targets `table`'s were given (`LIKE ... INCLUDING
/// ALL` copies none): a rebuilt read model is planned from statistics as fine as the live one's.
async fn copy_statistics_targets(
    connection: &mut PgConnection,
    table: &str,
    shadow: &str,
) -> Result<(), sqlx::Error> {
    let targets: Vec<(String, i32)> = sqlx::query_as(
        "SELECT attname::text, attstattarget::int4 FROM pg_attribute
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
           AND attstattarget > 0",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    for (column, target) in targets {
        let column = column.replace('"', "\"\"");
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {shadow} ALTER COLUMN \"{column}\" SET STATISTICS {target}"
        )))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Most attempts to swap a rebuilt model in while a busy live runner keeps moving ahead.
pub const REBUILD_SWAP_ATTEMPTS_MAX: u32 = 50;

/// Rebuilds a projector's read model from the whole log and swaps it in. Returns the
/// position the rebuilt model reached.
pub async fn rebuild<P, W>(pool: &PgPool, projector: P, writer: W) -> Result<u64, RunnerError>
where
    P: Projector,
    W: PgWriter<P::Change>,
{
    let name = projector.name();
    let tables = writer.tables();
    let mut feeder = prepare_shadow(pool, projector, writer).await?;
    for attempt in 1..=REBUILD_SWAP_ATTEMPTS_MAX {
        let reached = feeder.catch_up().await?;
        let mut tx = pool.begin().await?;
        let live = lock_checkpoint(&mut tx, name).await?;
        if reached < live {
            // The live model moved past what we built; catch up again and retry.
            tx.rollback().await?;
            tracing::debug!(projector = name, attempt, reached, live, "rebuild behind live");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        swap_in(&mut tx, name, tables, reached).await?;
        tx.commit().await?;
        tracing::info!(projector = name, position = reached, "rebuilt and swapped in");
        return Ok(reached);
    }
    let head = store::head(pool).await?;
    Err(RunnerError::Projection(
        format!("rebuild of {name} could not overtake the live model (store at {head})").into(),
    ))
}

/// [`rebuild`] for a model whose live store acts on what it applies (the mission tree issues
/// commands): the rebuilt tables are swapped in at exactly the live model's position, never
/// past it, so that the live store still applies, and acts on, every event after it. The
/// last stretch is built while the live checkpoint is locked (the live store waits for it),
/// and the checkpoint does not move. `writer` must only write the tables.
pub async fn rebuild_at_live<P, W>(
    pool: &PgPool,
    projector: P,
    writer: W,
) -> Result<u64, RunnerError>
where
    P: Projector,
    W: PgWriter<P::Change>,
{
    let name = projector.name();
    let tables = writer.tables();
    let mut feeder = prepare_shadow(pool, projector, writer).await?;
    // Most of the way without the lock, to the live position as it was.
    let live = checkpoint(pool, name).await?;
    feeder.catch_up_to(live).await?;
    let mut tx = pool.begin().await?;
    let live = lock_checkpoint(&mut tx, name).await?;
    feeder.catch_up_to(live).await?;
    swap_in(&mut tx, name, tables, live).await?;
    tx.commit().await?;
    tracing::info!(
        projector = name,
        position = live,
        "rebuilt and swapped in at the live position"
    );
    Ok(live)
}

/// Creates the shadow tables of `writer` (dropping any left) and a feeder that fills them.
async fn prepare_shadow<P, W>(
    pool: &PgPool,
    projector: P,
    writer: W,
) -> Result<Feeder<P, PgProjection<W>>, RunnerError>
where
    P: Projector,
    W: PgWriter<P::Change>,
{
    let name = projector.name();
    let mut tx = pool.begin().await?;
    for table in writer.tables() {
        let shadow = format!("{table}{SHADOW_SUFFIX}");
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {shadow}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)")))
            .execute(&mut *tx)
            .await?;
        copy_statistics_targets(&mut tx, table, &shadow).await?;
    }
    sqlx::query("DELETE FROM projector_checkpoints WHERE projector = $1")
        .bind(format!("{name}:rebuild"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let store = PgProjection::shadow(pool.clone(), writer, name);
    Feeder::new(projector, store, pool.clone(), 1_000).await
}

/// Swaps the shadow tables in for the live ones and sets the live checkpoint to `reached`,
/// inside `tx`, which holds the live checkpoint's lock.
async fn swap_in(
    tx: &mut PgConnection,
    name: &str,
    tables: &[&str],
    reached: u64,
) -> Result<(), sqlx::Error> {
    for table in tables {
        let (old, shadow) = (format!("{table}_old"), format!("{table}{SHADOW_SUFFIX}"));
        sqlx::query(AssertSqlSafe(format!("ALTER TABLE {table} RENAME TO {old}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!("ALTER TABLE {shadow} RENAME TO {table}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {old}"))).execute(&mut *tx).await?;
    }
    move_checkpoint(&mut *tx, name, reached).await?;
    sqlx::query("DELETE FROM projector_checkpoints WHERE projector = $1")
        .bind(format!("{name}:rebuild"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}
