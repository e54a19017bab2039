//! The group committer: one task per process that turns many concurrent appends into one
//! transaction of a few round trips, so that they share one fsync.
//!
//! Per batch, in one transaction:
//! 1. claim the batch's command ids (`INSERT .. ON CONFLICT DO NOTHING`); an id that was
//!    already there is a repeat, answered with its first outcome and appending nothing;
//! 2. lock the rows of every stream involved, in a fixed order, creating missing ones, and
//!    read their versions; a command whose expected version is stale gets a conflict and its
//!    claim is released, the rest of the batch is unaffected;
//! 3. as the last statement: bump `head` by the number of events, insert them at the
//!    positions just taken, store the new stream versions and command outcomes, `NOTIFY`;
//! 4. commit.
//!
//! Why positions are gapless and in commit order: `head` is bumped only in step 3, so its row
//! lock is held just for that statement and the commit. A second transaction's step 3 waits
//! on that lock until the first has committed (PostgreSQL makes a commit visible before it
//! releases its locks), then continues from the new head. So position N+1 can only become
//! visible after position N is: a reader tailing by position never skips a late commit.
//!
//! The unit the committer decides on is a *group*: one command's append, or the appends of
//! [`super::EventStore::append_all`], which go in together or not at all. A group is checked
//! against the versions the groups before it left; if any of its commands conflicts (or
//! repeats a command of a refused group), the whole group gets that error, its claims are
//! released and nothing of it is written, while the rest of the batch carries on. A command
//! of a group whose id was already stored is answered with its first outcome, like a lone
//! command, and does not refuse its group: re-sending a group that went in appends nothing
//! and answers as the first time.
//!
//! Locks are always taken in the same order (command ids sorted, then streams sorted, then
//! `head`), so two committers (two processes) can never deadlock.

mod plan;
pub(super) mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use plan::Commands;
pub(crate) use plan::GroupOutcome;

use super::validate::{BATCH_PAYLOAD_BYTES_MAX, Encoded};
use super::{Append, AppendError};

#[derive(Debug, Clone, Copy)]
pub struct CommitterConfig {
    /// Most commands one transaction carries. Larger batches share an fsync more widely but
    /// make each transaction, and so each command's wait, longer.
    pub batch_commands_max: usize,
    /// Appends queued for the committer before `append` callers wait (back-pressure).
    pub queue_len_max: usize,
    /// Batches in flight at once. While one waits for its commit (fsync), the next can
    /// already claim ids and lock streams; only the final statement and commit serialise,
    /// on the head row.
    pub transactions_in_flight_max: usize,
    /// Longest a batch waits to grow to the size of the one before it.
    pub linger: std::time::Duration,
    /// Longest one batch transaction may take, from `BEGIN` to the answer to `COMMIT`
    /// ([`TRANSACTION_TIMEOUT`] by default).
    pub transaction_timeout: std::time::Duration,
}

impl Default for CommitterConfig {
    fn default() -> CommitterConfig {
        CommitterConfig {
            batch_commands_max: 512,
            queue_len_max: 8_192,
            transactions_in_flight_max: 1,
            linger: std::time::Duration::from_millis(1),
            transaction_timeout: TRANSACTION_TIMEOUT,
        }
    }
}

/// Totals since start, for benchmarks and metrics, and whether the committer can commit.
#[derive(Debug, Default)]
pub struct CommitterStats {
    pub transactions: std::sync::atomic::AtomicU64,
    pub commands: std::sync::atomic::AtomicU64,
    /// The last batch failed for a reason of the database's (not a refused command).
    failing: std::sync::atomic::AtomicBool,
    /// When the batch now committing started (ms since the epoch), 0 when none is.
    batch_started_ms: std::sync::atomic::AtomicI64,
}

/// A batch committing for longer than this counts as stalled for [`CommitterStats::health`].
pub const BATCH_STALLED_AFTER_MS: i64 = 2_000;

impl CommitterStats {
    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::Relaxed);
    }

    fn batch_started(&self, now_ms: i64) {
        self.batch_started_ms.store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn batch_ended(&self) {
        self.batch_started_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Ok` while the committer commits; otherwise why not: its last batch failed, or the one
    /// now committing has run past [`BATCH_STALLED_AFTER_MS`].
    pub fn health(&self, now_ms: i64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = self.batch_started_ms.load(Relaxed);
        if started > 0 && now_ms - started > BATCH_STALLED_AFTER_MS {
            return Err(format!("a batch has been committing for {} ms", now_ms - started));
        }
        if self.failing.load(Relaxed) {
            return Err("the last batch failed to commit".to_owned());
        }
        Ok(())
    }
}

/// What the committer is asked to write: one command's append, or a group of appends that
/// commit together or not at all ([`super::EventStore::append_all`]).
pub(super) struct Pending {
    pub group: Vec<Append>,
    /// Each append's JSON text, in the order of `group`.
    pub encoded: Vec<Encoded>,
    /// Payload bytes of the whole group, as measured by `validate`.
    pub bytes: usize,
    pub reply: oneshot::Sender<GroupOutcome>,
}

/// Server-side limits on the committer's sessions (PostgreSQL interval syntax). A lock wait
/// or a statement gives up, with a definite error, before the client-side deadline of the
/// whole transaction, which can only say the outcome is unknown.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";
const LOCK_TIMEOUT: &str = "5s";
const STATEMENT_TIMEOUT: &str = "10s";
/// Longest one batch transaction may take, from `BEGIN` to the answer to `COMMIT`. Batches
/// take milliseconds; past this the connection is taken to be dead (half-open, the server
/// stopped answering), the transaction is abandoned and its callers hear `outcome_unknown`.
pub const TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Longest the committer waits for a connection of its own.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) fn spawn(
    pool: PgPool,
    notify_channel: Arc<str>,
    config: CommitterConfig,
    stats: Arc<CommitterStats>,
) -> (mpsc::Sender<Pending>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel::<Pending>(config.queue_len_max.max(1));
    let in_flight_max = config.transactions_in_flight_max.clamp(1, 64);
    // The committer runs on a thread and runtime of its own, with connections of its own:
    // its round trips to PostgreSQL are the store's critical path, and on the shared runtime
    // each of its wake-ups waited behind whatever tasks were queued there (measured on 2
    // cores: about 6k against 10k commands/s from `brain bench append`).
    let options = pool
        .options()
        .clone()
        .min_connections(0)
        .max_connections(in_flight_max as u32)
        .acquire_timeout(ACQUIRE_TIMEOUT);
    let connect = pool.connect_options();
    let (done, finished) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("brain-committer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.expect("committer runtime").block_on(async move {
                // A committer that stalls inside a transaction (paused, cut off) holds the
                // head row; the server ends such a session instead of letting every other
                // committer wait on it until TCP keepalive notices, hours later.
                let connect = (*connect).clone().options([
                    ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
                    ("lock_timeout", LOCK_TIMEOUT),
                    ("statement_timeout", STATEMENT_TIMEOUT),
                ]);
                let own_pool = options.connect_lazy_with(connect);
                run(own_pool.clone(), notify_channel, receiver, config, in_flight_max, stats).await;
                own_pool.close().await;
            });
            let _ = done.send(());
        })
        .expect("spawn the committer thread");
    let handle = tokio::spawn(async move {
        let _ = finished.await;
    });
    (sender, handle)
}

async fn run(
    pool: PgPool,
    notify_channel: Arc<str>,
    mut receiver: mpsc::Receiver<Pending>,
    config: CommitterConfig,
    in_flight_max: usize,
    stats: Arc<CommitterStats>,
) {
    let batch_max = config.batch_commands_max.max(1);
    let context = Context {
        stats: stats.clone(),
        transaction_timeout: config.transaction_timeout,
        fill: Arc::default(),
        tip: Arc::default(),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    let mut last_batch_len = 1;
    loop {
        // A slot first, then the batch: while every slot is busy the queue keeps filling,
        // so the next batch is as large as the wait allowed.
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let mut batch = Vec::with_capacity(batch_max);
        // `recv_many` waits for one and takes whatever else is already queued.
        if receiver.recv_many(&mut batch, batch_max).await == 0 {
            break;
        }
        // The writers the last batch answered are usually about to send again. Waiting a
        // moment for as many keeps batches large under load (fewer transactions per
        // command); when load falls, the wait is bounded by `linger` and the target
        // shrinks with the batches.
        let target = last_batch_len.min(batch_max);
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < target {
            let room = batch_max - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(received) if received > 0 => {}
                _ => break,
            }
        }
        last_batch_len = batch.len();
        stats.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let commands = batch.iter().map(|pending| pending.group.len() as u64).sum();
        stats.commands.fetch_add(commands, std::sync::atomic::Ordering::Relaxed);
        let (pool, notify_channel) = (pool.clone(), notify_channel.clone());
        let context = context.clone();
        tokio::spawn(async move {
            for part in split_by_bytes(batch) {
                commit(&pool, &notify_channel, part, &context).await;
            }
            drop(slot);
        });
    }
    // Every handle is gone and the queue is empty: wait for the batches in flight.
    let _ = slots.acquire_many(in_flight_max as u32).await;
    tracing::debug!("committer stopped: every event store handle is gone");
}

/// Splits a batch into consecutive parts of at most `BATCH_PAYLOAD_BYTES_MAX` payload bytes
/// (a single larger append still forms a part of its own; a group never exceeds the bound,
/// `validate` refuses it).
fn split_by_bytes(batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for pending in batch {
        let current = parts.last_mut().expect("never empty");
        if !current.is_empty() && bytes + pending.bytes > BATCH_PAYLOAD_BYTES_MAX {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += pending.bytes;
        parts.last_mut().expect("never empty").push(pending);
    }
    parts
}

async fn commit(pool: &PgPool, notify_channel: &str, batch: Vec<Pending>, context: &Context) {
    let stats = &context.stats;
    let started = std::time::Instant::now();
    stats.batch_started(crate::clock::now_ms());
    let outcomes = commit_isolating(pool, notify_channel, &batch, context).await;
    stats.batch_ended();
    reply_all(batch, outcomes);
    metrics::histogram!("brain_append_batch_seconds").record(started.elapsed().as_secs_f64());
}

/// Commits `batch`. When its transaction fails for a reason that belongs to one command (a
/// data exception or a constraint violation: an event id stored before, a value the store
/// cannot take), the batch is split in halves and each half committed on its own, down to the
/// offending group, which alone is refused: one client's bad command never fails the others
/// it was batched with (design invariant 9). A poisoned batch of `n` groups costs about
/// `2 log2 n` extra transactions, not `n`.
fn commit_isolating<'a>(
    pool: &'a PgPool,
    notify_channel: &'a str,
    batch: &'a [Pending],
    context: &'a Context,
) -> futures::future::BoxFuture<'a, Vec<GroupOutcome>> {
    Box::pin(async move {
        let stats = &context.stats;
        let mut result = commit_batch(pool, notify_channel, batch, context).await;
        if let Err(BatchError::ChainBehind(error)) = &result {
            // Events were stored without a chain hash (by an older build, or in bulk): chain
            // them, then try once more. Fills of batches in flight together take turns.
            tracing::warn!(%error, "the event chain stops short of the head; computing it");
            let _turn = context.fill.lock().await;
            if let Err(error) = super::chain::fill(pool).await {
                tracing::error!(%error, "could not compute the event chain");
            }
            result = commit_batch(pool, notify_channel, batch, context).await;
        }
        match result {
            Ok(outcomes) => {
                stats.set_failing(false);
                outcomes
            }
            Err(BatchError::Refused(error)) if batch.len() > 1 => {
                tracing::warn!(%error, groups = batch.len(), "a command of the batch was refused; isolating it");
                let (left, right) = batch.split_at(batch.len() / 2);
                let mut outcomes = commit_isolating(pool, notify_channel, left, context).await;
                outcomes.extend(commit_isolating(pool, notify_channel, right, context).await);
                outcomes
            }
            Err(BatchError::Refused(error)) => {
                tracing::warn!(%error, "the event store refused a command");
                vec![Err(AppendError::Refused { message: refusal_message(&error) })]
            }
            Err(BatchError::Failed(error) | BatchError::ChainBehind(error)) => {
                stats.set_failing(true);
                tracing::error!(%error, groups = batch.len(), "append batch failed, nothing written");
                let error = AppendError::from(error);
                batch.iter().map(|_| Err(error.clone())).collect()
            }
            Err(BatchError::Unknown(error)) => {
                stats.set_failing(true);
                tracing::error!(%error, groups = batch.len(), "append batch outcome unknown");
                let error = AppendError::OutcomeUnknown(Arc::new(error));
                batch.iter().map(|_| Err(error.clone())).collect()
            }
        }
    })
}

/// What every batch of one committer shares.
#[derive(Clone)]
struct Context {
    stats: Arc<CommitterStats>,
    transaction_timeout: std::time::Duration,
    /// Held while this committer computes a missing stretch of the event chain.
    fill: Arc<tokio::sync::Mutex<()>>,
    /// Where this committer's last commit left the head, if it knows: the next batch links
    /// its events' hashes from there (`take_positions` checks that the head is still there).
    tip: Arc<std::sync::Mutex<Option<sql::Tip>>>,
}

/// Why a batch transaction did not commit.
#[derive(Debug)]
enum BatchError {
    /// PostgreSQL refused something a command carries; nothing was written.
    Refused(sqlx::Error),
    /// Failed before `COMMIT` was sent (connection lost, timeout while locking): nothing was
    /// written, a retry is safe.
    Failed(sqlx::Error),
    /// `COMMIT` was sent and its answer never came (or the transaction ran past its
    /// deadline): it may or may not have committed. A retry with the same command id learns
    /// which without appending twice.
    Unknown(sqlx::Error),
    /// The event chain stops short of the head (`take_positions` refused): nothing was
    /// written; [`super::chain::fill`] must run before the batch can.
    ChainBehind(sqlx::Error),
}

impl BatchError {
    fn before_commit(error: sqlx::Error) -> BatchError {
        let code = error.as_database_error().and_then(|db| db.code());
        if code.as_deref() == Some(super::chain::CHAIN_BEHIND_SQLSTATE) {
            BatchError::ChainBehind(error)
        } else if belongs_to_one_command(&error) {
            BatchError::Refused(error)
        } else {
            BatchError::Failed(error)
        }
    }
}

/// SQLSTATE classes 22 (data exception: a value the store cannot take) and 23 (integrity
/// constraint violation: an event id stored before) are caused by what one command carries,
/// not by the database's state; anything else (connection, lock timeout, shutdown) would fail
/// any batch.
fn belongs_to_one_command(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
        }
        _ => false,
    }
}

/// What a client is told about a refusal: the database's reason, without the offending value
/// (PostgreSQL's detail line may quote it, and it may be a secret).
fn refusal_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => {
            format!("{} (SQLSTATE {})", db.message(), db.code().unwrap_or_default())
        }
        other => other.to_string(),
    }
}

fn reply_all(batch: Vec<Pending>, outcomes: Vec<GroupOutcome>) {
    debug_assert_eq!(batch.len(), outcomes.len());
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        // The caller may have gone away (its request was cancelled): the append stands.
        let _ = pending.reply.send(outcome);
    }
}

/// Runs the batch's transaction on a connection of its own, within
/// [`TRANSACTION_TIMEOUT`]: the SQL steps of [`sql`] around the decision of [`plan`]; returns
/// one outcome per group, in batch order. A transaction past its deadline (a half-open
/// connection, a server that stopped answering) is abandoned and its connection closed, never
/// returned to the pool.
async fn commit_batch(
    pool: &PgPool,
    notify_channel: &str,
    batch: &[Pending],
    context: &Context,
) -> Result<Vec<GroupOutcome>, BatchError> {
    let mut connection = pool.acquire().await.map_err(BatchError::Failed)?;
    let committing = std::sync::atomic::AtomicBool::new(false);
    let run = transaction(&mut connection, notify_channel, batch, &committing, &context.tip);
    let outcome = match tokio::time::timeout(context.transaction_timeout, run).await {
        Ok(outcome) => outcome,
        // Past the deadline before `COMMIT` was sent, nothing can have been written.
        Err(_) if !committing.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(BatchError::Failed(sqlx::Error::Protocol("transaction timed out".into())))
        }
        Err(_) => Err(BatchError::Unknown(sqlx::Error::Protocol("commit timed out".into()))),
    };
    if let Err(BatchError::Failed(_) | BatchError::Unknown(_)) = &outcome {
        // The connection's state is unknown (half-open, mid-statement): drop it for good.
        connection.close_on_drop();
    }
    outcome
}

async fn transaction(
    connection: &mut sqlx::PgConnection,
    notify_channel: &str,
    batch: &[Pending],
    committing: &std::sync::atomic::AtomicBool,
    tip: &std::sync::Mutex<Option<sql::Tip>>,
) -> Result<Vec<GroupOutcome>, BatchError> {
    let commands = Commands::new(batch.iter().map(|pending| pending.group.as_slice()));
    let encoded: Vec<&Encoded> = batch.iter().flat_map(|pending| &pending.encoded).collect();
    let failed = BatchError::before_commit;

    let mut tx = sqlx::Connection::begin(connection).await.map_err(failed)?;
    let ids = commands.ids();
    let (mut seen, mut earlier) = (Vec::new(), HashMap::new());
    if !ids.is_empty() {
        let claimed = sql::claim_ids(&mut tx, &ids).await.map_err(failed)?;
        seen = ids.into_iter().filter(|id| !claimed.contains(id)).collect::<Vec<Uuid>>();
        if !seen.is_empty() {
            earlier = sql::earlier_outcomes(&mut tx, &seen).await.map_err(failed)?;
        }
    }
    let stored = commands.stored(&seen, earlier);
    let live = commands.live(&stored);
    let versions = sql::lock_streams(&mut tx, &commands.streams(&live)).await.map_err(failed)?;
    let plan = plan::plan(&commands, &stored, &live, versions);
    sql::release(&mut tx, &plan.released).await.map_err(failed)?;
    let (base, reached) = if plan.placed.is_empty() {
        (0, None)
    } else {
        let expected = *tip.lock().expect("never poisoned");
        let written = sql::write(&mut tx, notify_channel, &commands, &encoded, &plan, expected);
        let (base, reached) = written.await.map_err(failed)?;
        (base, Some(reached))
    };
    committing.store(true, std::sync::atomic::Ordering::Relaxed);
    tx.commit().await.map_err(BatchError::Unknown)?;
    if let Some(reached) = reached {
        // Only a commit moves the expectation: after a failure it stays where it was, and a
        // wrong one costs the next batch the chain computed in SQL, never a wrong hash.
        *tip.lock().expect("never poisoned") = Some(reached);
    }
    metrics::counter!("brain_events_appended_total").increment(plan.event_count);
    Ok(plan::answers(&commands, plan, stored, base))
}
