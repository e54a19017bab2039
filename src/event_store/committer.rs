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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use domain::ExpectedVersion;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::validate::{BATCH_PAYLOAD_BYTES_MAX, Encoded};
use super::{Append, AppendError, Appended, StoreError, to_i64};

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
}

impl Default for CommitterConfig {
    fn default() -> CommitterConfig {
        CommitterConfig {
            batch_commands_max: 512,
            queue_len_max: 8_192,
            transactions_in_flight_max: 1,
            linger: std::time::Duration::from_millis(1),
        }
    }
}

/// Totals since start, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct CommitterStats {
    pub transactions: std::sync::atomic::AtomicU64,
    pub commands: std::sync::atomic::AtomicU64,
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

/// One command's outcome.
type Outcome = Result<Appended, AppendError>;
/// A group's outcome: every append's, in order, or the error that refused them all.
pub(super) type GroupOutcome = Result<Vec<Appended>, AppendError>;

/// Server-side limits on the committer's sessions (PostgreSQL interval syntax).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";
const LOCK_TIMEOUT: &str = "30s";

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
    let options = pool.options().clone().min_connections(0).max_connections(in_flight_max as u32);
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
        tokio::spawn(async move {
            for part in split_by_bytes(batch) {
                commit(&pool, &notify_channel, part).await;
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

async fn commit(pool: &PgPool, notify_channel: &str, batch: Vec<Pending>) {
    let started = std::time::Instant::now();
    match commit_batch(pool, notify_channel, &batch).await {
        Ok(outcomes) => reply_all(batch, outcomes),
        // A unique violation here means some command carried an event id already stored.
        // Only that command (and its group) should fail, so retry each group in a
        // transaction of its own.
        Err(error) if batch.len() > 1 && is_unique_violation(&error) => {
            tracing::warn!(%error, commands = batch.len(), "batch hit a unique key, retrying alone");
            for pending in batch {
                let single = std::slice::from_ref(&pending);
                let outcome = match commit_batch(pool, notify_channel, single).await {
                    Ok(mut outcomes) => outcomes.pop().expect("one outcome per group"),
                    Err(error) => Err(error.into()),
                };
                let _ = pending.reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::error!(%error, commands = batch.len(), "append batch failed");
            let error = AppendError::from(error);
            let outcomes = batch.iter().map(|_| Err(error.clone())).collect();
            reply_all(batch, outcomes);
        }
    }
    metrics::histogram!("brain_append_batch_seconds").record(started.elapsed().as_secs_f64());
}

fn reply_all(batch: Vec<Pending>, outcomes: Vec<GroupOutcome>) {
    debug_assert_eq!(batch.len(), outcomes.len());
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        // The caller may have gone away (its request was cancelled): the append stands.
        let _ = pending.reply.send(outcome);
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// A command that passed the version check, with the offsets of its events in the batch.
struct Placed {
    index: usize,
    first_version: u64,
    last_version: u64,
    first_offset: u64,
    last_offset: u64,
}

/// A stream as `(stream_type, stream_id)`, borrowed from the batch's appends.
type StreamKey<'a> = (&'a str, &'a str);

fn key(append: &Append) -> StreamKey<'_> {
    (append.stream_type.as_str(), append.stream_id.as_str())
}

/// A batch seen as its commands: every append of every group, flattened in arrival order.
struct Commands<'a> {
    appends: Vec<&'a Append>,
    encoded: Vec<&'a Encoded>,
    /// The group (the pending entry) each command belongs to.
    group_of: Vec<usize>,
    /// Each group's commands, as a range of `appends`.
    groups: Vec<std::ops::Range<usize>>,
    /// A command whose id an earlier command of the batch already carries, with that one.
    first_of: HashMap<usize, usize>,
    /// Each command id of the batch, with the command that carries it first.
    first_with_id: HashMap<Uuid, usize>,
}

impl<'a> Commands<'a> {
    fn new(batch: &'a [Pending]) -> Commands<'a> {
        let mut commands = Commands {
            appends: Vec::with_capacity(batch.len()),
            encoded: Vec::with_capacity(batch.len()),
            group_of: Vec::with_capacity(batch.len()),
            groups: Vec::with_capacity(batch.len()),
            first_of: HashMap::new(),
            first_with_id: HashMap::new(),
        };
        for (group, pending) in batch.iter().enumerate() {
            let start = commands.appends.len();
            for (append, encoded) in pending.group.iter().zip(&pending.encoded) {
                let index = commands.appends.len();
                if let Some(id) = append.metadata.command_id {
                    match commands.first_with_id.entry(id) {
                        Entry::Occupied(first) => {
                            commands.first_of.insert(index, *first.get());
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(index);
                        }
                    }
                }
                commands.appends.push(append);
                commands.encoded.push(encoded);
                commands.group_of.push(group);
            }
            commands.groups.push(start..commands.appends.len());
        }
        commands
    }
}

/// Runs steps 1 to 4 for a batch; returns one outcome per group, in batch order.
async fn commit_batch(
    pool: &PgPool,
    notify_channel: &str,
    batch: &[Pending],
) -> Result<Vec<GroupOutcome>, sqlx::Error> {
    let commands = Commands::new(batch);
    let appends = &commands.appends;
    // Decided before the version check: commands whose id an earlier transaction stored.
    let mut outcomes: Vec<Option<Outcome>> = vec![None; appends.len()];

    let mut tx = pool.begin().await?;

    // Step 1: claim command ids. Sorted, so concurrent committers lock them in one order.
    let mut ids: Vec<Uuid> = commands.first_with_id.keys().copied().collect();
    ids.sort_unstable();
    if !ids.is_empty() {
        let claimed: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO commands (command_id) SELECT unnest($1::uuid[]) ORDER BY 1
             ON CONFLICT DO NOTHING RETURNING command_id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let seen: Vec<Uuid> = ids.iter().filter(|id| !claimed.contains(id)).copied().collect();
        if !seen.is_empty() {
            let mut earlier = earlier_outcomes(&mut tx, &seen).await?;
            for id in seen {
                // A claim is only ever committed together with its outcome.
                let outcome = earlier.remove(&id).unwrap_or_else(|| Err(corrupt_command(id)));
                outcomes[commands.first_with_id[&id]] = Some(outcome);
            }
        }
    }

    // Step 2: lock and read the versions of the streams still to be appended to.
    let live: Vec<bool> = (0..appends.len())
        .map(|index| outcomes[index].is_none() && !commands.first_of.contains_key(&index))
        .collect();
    let mut keys: Vec<StreamKey> =
        (0..appends.len()).filter(|index| live[*index]).map(|index| key(appends[index])).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut versions: HashMap<StreamKey, u64> = HashMap::with_capacity(keys.len());
    if !keys.is_empty() {
        let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        // The no-op DO UPDATE locks an existing row and returns its version; a missing row
        // is created at version 0, so a new stream is locked just the same.
        let rows = sqlx::query(
            "INSERT INTO streams (stream_type, stream_id, version)
             SELECT t, i, 0 FROM unnest($1::text[], $2::text[]) AS s(t, i) ORDER BY t, i
             ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = streams.version
             RETURNING stream_type, stream_id, version",
        )
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let (stream_type, stream_id): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
            let found = keys.binary_search(&(stream_type, stream_id));
            let index = found.map_err(|_| sqlx::Error::Protocol("unasked stream".into()))?;
            versions.insert(keys[index], row.try_get::<i64, _>(2)? as u64);
        }
    }

    // Decide group by group in arrival order, each against the versions its predecessors
    // left, so that two commands on one stream behave as if they had come one after the
    // other. A group goes in whole or not at all.
    let mut failed: Vec<Option<AppendError>> = vec![None; batch.len()];
    let mut events = EventColumns::default();
    let mut placed: Vec<Placed> = Vec::with_capacity(appends.len());
    let mut released: Vec<Uuid> = Vec::new();
    for (group, members) in commands.groups.iter().enumerate() {
        match decide_group(&commands, members.clone(), &outcomes, &failed, &versions) {
            Ok(staged) => {
                for (index, current) in staged {
                    let append = appends[index];
                    let first_offset = events.len() as u64 + 1;
                    events.push(append, commands.encoded[index], current);
                    let last_version = current + append.events.len() as u64;
                    versions.insert(key(append), last_version);
                    placed.push(Placed {
                        index,
                        first_version: current + 1,
                        last_version,
                        first_offset,
                        last_offset: events.len() as u64,
                    });
                }
            }
            Err(error) => {
                // A refused group changed nothing, so the ids it claimed stay free for a retry.
                released.extend(
                    members
                        .clone()
                        .filter(|index| live[*index])
                        .filter_map(|index| appends[index].metadata.command_id),
                );
                failed[group] = Some(error);
            }
        }
    }

    // Refused commands give their ids back. Rare, so one primary-key delete each: a plan
    // that cannot turn into a scan, whatever the table's statistics say.
    for id in &released {
        sqlx::query("DELETE FROM commands WHERE command_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }

    // Step 3, the last statement: take positions from head and write everything.
    let base = if placed.is_empty() {
        0
    } else {
        write_batch(&mut tx, notify_channel, appends, &placed, &events, &versions).await?
    };

    // Step 4.
    tx.commit().await?;
    metrics::counter!("brain_events_appended_total").increment(events.len() as u64);

    for p in &placed {
        let append = appends[p.index];
        outcomes[p.index] = Some(Ok(Appended {
            stream_type: append.stream_type.clone(),
            stream_id: append.stream_id.clone(),
            first_version: p.first_version,
            last_version: p.last_version,
            first_position: base + p.first_offset,
            last_position: base + p.last_offset,
            duplicate: false,
        }));
    }
    let mut answers = Vec::with_capacity(batch.len());
    for (group, members) in commands.groups.iter().enumerate() {
        if let Some(error) = failed[group].take() {
            answers.push(Err(error));
            continue;
        }
        let mut appended = Vec::with_capacity(members.len());
        for index in members.clone() {
            let outcome = match commands.first_of.get(&index) {
                // A repeated id is answered like its first occurrence, as a duplicate.
                Some(first) => outcomes[*first].clone().expect("first occurrence decided"),
                None => outcomes[index].clone().expect("every command of a group decided"),
            };
            match outcome {
                Ok(done) => appended.push(Appended {
                    duplicate: done.duplicate || commands.first_of.contains_key(&index),
                    ..done
                }),
                Err(error) => unreachable!("a group with a failed command is refused: {error}"),
            }
        }
        answers.push(Ok(appended));
    }
    Ok(answers)
}

/// Checks one group's commands against the current versions. Returns the commands to
/// append, each with the version it starts from, or the error that refuses the whole group.
fn decide_group<'a>(
    commands: &Commands<'a>,
    members: std::ops::Range<usize>,
    outcomes: &[Option<Outcome>],
    failed: &[Option<AppendError>],
    versions: &HashMap<StreamKey<'a>, u64>,
) -> Result<Vec<(usize, u64)>, AppendError> {
    // Versions this group has moved so far; they count only if the whole group goes in.
    let mut moved: HashMap<StreamKey<'a>, u64> = HashMap::new();
    let mut staged = Vec::with_capacity(members.len());
    for index in members {
        // Stored by an earlier transaction: nothing to append, unless the row is corrupt.
        if let Some(outcome) = &outcomes[index] {
            outcome.clone()?;
            continue;
        }
        // A repeat within this batch stands or falls with its first occurrence.
        if let Some(&first) = commands.first_of.get(&index) {
            if let Some(Err(error)) = &outcomes[first] {
                return Err(error.clone());
            }
            if let Some(error) = &failed[commands.group_of[first]] {
                return Err(error.clone());
            }
            continue;
        }
        let append = commands.appends[index];
        let stream = key(append);
        let current = moved
            .get(&stream)
            .or_else(|| versions.get(&stream))
            .copied()
            .expect("every live stream was locked");
        if let ExpectedVersion::Exact(expected) = append.expected
            && expected != current
        {
            return Err(AppendError::Conflict {
                stream_type: append.stream_type.clone(),
                stream_id: append.stream_id.clone(),
                expected,
                actual: current,
            });
        }
        moved.insert(stream, current + append.events.len() as u64);
        staged.push((index, current));
    }
    Ok(staged)
}

/// The stored outcomes of commands seen in an earlier transaction, in one query.
async fn earlier_outcomes(
    tx: &mut Transaction<'static, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Outcome>, sqlx::Error> {
    match super::command_outcomes(tx, ids).await {
        Ok(found) => Ok(found.into_iter().map(|(id, appended)| (id, Ok(appended))).collect()),
        Err(StoreError::Corrupt(what)) => {
            Ok(ids.iter().map(|id| (*id, Err(corrupt_row(&what)))).collect())
        }
        Err(StoreError::Database(error)) => Err(error),
    }
}

fn corrupt_row(what: &str) -> AppendError {
    AppendError::from(sqlx::Error::Protocol(format!("corrupt command outcome: {what}")))
}

fn corrupt_command(id: Uuid) -> AppendError {
    AppendError::from(sqlx::Error::Protocol(format!("command {id} is stored without its outcome")))
}

/// The batch's events as one array per column, for a single `unnest` insert.
#[derive(Default)]
struct EventColumns {
    stream_types: Vec<String>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    /// Payloads and metadata as JSON text (encoded before queueing), cast to `jsonb` by the
    /// statement. Binding `serde_json::Value`s instead meant a deep copy of each payload and
    /// a serialisation inside sqlx, both on the committer's serial path.
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl EventColumns {
    fn len(&self) -> usize {
        self.event_ids.len()
    }

    fn push(&mut self, append: &Append, encoded: &Encoded, current_version: u64) {
        let texts = append.events.iter().zip(&encoded.payloads);
        for (offset, (event, payload)) in texts.enumerate() {
            self.stream_types.push(append.stream_type.as_str().to_owned());
            self.stream_ids.push(append.stream_id.as_str().to_owned());
            self.versions.push(to_i64(current_version + 1 + offset as u64));
            self.event_ids.push(event.event_id);
            self.event_types.push(event.event_type.clone());
            self.schema_versions.push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
            self.payloads.push(payload.clone());
            self.metadata.push(encoded.metadata.clone());
        }
    }
}

/// Step 3 as one statement. Data-modifying CTEs run exactly once, all against the `base`
/// that the head update returned, so the head row is locked from here to the commit only.
/// Rows are written with `INSERT .. ON CONFLICT` rather than `UPDATE .. FROM unnest(..)`:
/// an upsert always finds its row through the unique index, while a join's plan follows
/// table statistics, and a plan cached while a table was small turns into a sequential
/// scan per batch once it has grown (measured: 30 ms per transaction at 30k streams).
async fn write_batch(
    tx: &mut Transaction<'static, Postgres>,
    notify_channel: &str,
    appends: &[&Append],
    placed: &[Placed],
    events: &EventColumns,
    versions: &HashMap<StreamKey<'_>, u64>,
) -> Result<u64, sqlx::Error> {
    let mut touched: Vec<StreamKey> = placed.iter().map(|p| key(appends[p.index])).collect();
    touched.sort_unstable();
    touched.dedup();
    let (stream_types, stream_ids): (Vec<&str>, Vec<&str>) = touched.iter().copied().unzip();
    let stream_versions: Vec<i64> = touched.iter().map(|stream| to_i64(versions[stream])).collect();

    let mut command = CommandColumns::default();
    for p in placed {
        let append = appends[p.index];
        if let Some(id) = append.metadata.command_id {
            command.ids.push(id);
            command.stream_types.push(append.stream_type.as_str());
            command.stream_ids.push(append.stream_id.as_str());
            command.first_versions.push(to_i64(p.first_version));
            command.last_versions.push(to_i64(p.last_version));
            command.first_offsets.push(to_i64(p.first_offset));
            command.last_offsets.push(to_i64(p.last_offset));
        }
    }

    let count = events.len() as i64;
    let row = sqlx::query(
        "WITH h AS (
            UPDATE head SET position = position + $1 RETURNING position - $1 AS base
         ), ev AS (
            INSERT INTO events (global_position, stream_type, stream_id, version, event_id,
                                event_type, schema_version, payload, metadata)
            SELECT h.base + e.ord, e.st, e.sid, e.v, e.eid, e.et, e.sv, e.p::jsonb, e.m::jsonb
            FROM h, unnest($2::text[], $3::text[], $4::int8[], $5::uuid[], $6::text[],
                           $7::int4[], $8::text[], $9::text[])
                    WITH ORDINALITY AS e(st, sid, v, eid, et, sv, p, m, ord)
         ), st AS (
            INSERT INTO streams (stream_type, stream_id, version)
            SELECT * FROM unnest($10::text[], $11::text[], $12::int8[])
            ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version
         ), cmd AS (
            INSERT INTO commands (command_id, stream_type, stream_id, first_version,
                                  last_version, first_position, last_position)
            SELECT u.id, u.st, u.sid, u.fv, u.lv, h.base + u.fo, h.base + u.lo
            FROM h, unnest($13::uuid[], $14::text[], $15::text[], $16::int8[], $17::int8[],
                           $18::int8[], $19::int8[]) AS u(id, st, sid, fv, lv, fo, lo)
            ON CONFLICT (command_id) DO UPDATE
            SET stream_type = excluded.stream_type, stream_id = excluded.stream_id,
                first_version = excluded.first_version, last_version = excluded.last_version,
                first_position = excluded.first_position,
                last_position = excluded.last_position
         )
         SELECT h.base, pg_notify($20, (h.base + $1)::text)::text FROM h",
    )
    .bind(count)
    .bind(&events.stream_types)
    .bind(&events.stream_ids)
    .bind(&events.versions)
    .bind(&events.event_ids)
    .bind(&events.event_types)
    .bind(&events.schema_versions)
    .bind(&events.payloads)
    .bind(&events.metadata)
    .bind(&stream_types)
    .bind(&stream_ids)
    .bind(&stream_versions)
    .bind(&command.ids)
    .bind(&command.stream_types)
    .bind(&command.stream_ids)
    .bind(&command.first_versions)
    .bind(&command.last_versions)
    .bind(&command.first_offsets)
    .bind(&command.last_offsets)
    .bind(notify_channel)
    .fetch_one(&mut **tx)
    .await?;
    let base: i64 = row.try_get(0)?;
    Ok(base as u64)
}

#[derive(Default)]
struct CommandColumns<'a> {
    ids: Vec<Uuid>,
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    first_versions: Vec<i64>,
    last_versions: Vec<i64>,
    first_offsets: Vec<i64>,
    last_offsets: Vec<i64>,
}
