//! The mission queue in Redis: the store of the `mission_queue` projector, the claim that
//! workers pop missions with, and the reads behind the queue's query routes.
//!
//! Keys, all under the hash tag `{<namespace>}` so that one Lua script can touch any of
//! them on a Redis cluster too (see ARCHITECTURE.md: the checkpoint must commit with the
//! effect, so a namespace is one slot; namespaces spread over slots):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:q:gen` | string | the live generation `G` (absent: 1) |
//! | `{ns}:q:G:checkpoint` | string | last position applied to generation `G` |
//! | `{ns}:q:G:ready:<kind>` | sorted set | ready missions, score `ready_at − bonus`, lowest pops first |
//! | `{ns}:q:G:delayed:<kind>` | sorted set | missions waiting for a time, score = due time |
//! | `{ns}:q:G:leases` | sorted set | running missions, score = lease expiry |
//! | `{ns}:q:G:m:<id>` | hash | a mission's `agent`, `bonus`, `state` and times |
//! | `{ns}:q:G:kinds` | set | every agent kind seen |
//! | `{ns}:q:claims` | sorted set | missions popped but not yet started, score = claim expiry |
//! | `{ns}:q:claimer` | hash | who popped each of those |
//!
//! A rebuild fills generation `G + 1` from the log and switches `gen` in one step, so readers
//! and workers see the old queue or the new one, never half of one. Claims are not projected
//! state (they are the short window between a pop and the `start` event), so they live
//! outside the generations.
//!
//! What keeps a mission on one worker is the aggregate, not Redis (design invariant 6): a
//! claim only makes a second pop unlikely; a `start` against a mission that is no longer
//! queued is refused. What keeps a mission from being lost is the claim's expiry: a popped
//! mission whose `start` never came is put back by [`reclaim`].

pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use projections::mission_queue::{NAME, QueueChange, Scoring};
use projections::{CommitError, ProjectionStore};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::Notify;

use crate::config::Namespace;
use crate::eventlog::projector::{Feeder, RunnerError};

/// Applies a batch of changes and moves the checkpoint from `after` to `up_to`, or returns
/// `{0, actual}` when the checkpoint is elsewhere.
const COMMIT: &str = include_str!("commit.lua");

/// Pops the best missions (up to a count) of all the kinds given and records a claim on
/// each. A delayed mission whose due time has passed competes too (scored from its due
/// time), so a retry runs on time even before the supervisor marks it due; only those popped
/// leave the delayed set, so the queue stays what the log says until its `MissionRetryDue`.
/// Returns `{id, kind, id, kind, ...}`, best first.
const CLAIM: &str = include_str!("claim.lua");

/// Puts back missions whose claim expired while their projected state is still `ready`
/// (the claimer died or failed between the pop and the start). Returns how many.
const RECLAIM: &str = include_str!("reclaim.lua");

/// Switches the live generation to `ARGV[2]` if it has reached the live checkpoint; returns
/// `{1, old generation}` or `{0, live checkpoint}`.
const SWAP: &str = include_str!("swap.lua");

/// Takes a mission the log does not know out of the queue.
const FORGET: &str = include_str!("forget.lua");

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from a queue script: {0}")]
    Script(String),
}

/// The queue of one namespace: its keys and scripts.
#[derive(Clone)]
pub struct Queue {
    connection: ConnectionManager,
    /// `{ns}:q:`
    base: String,
    commit: Script,
    claim: Script,
    reclaim: Script,
    swap: Script,
    forget: Script,
    /// Rung when this process's queue projector has just made a mission ready, so that a
    /// claimer here that found nothing looks again at once instead of at its next poll.
    /// Claimers elsewhere (`brain worker`) have no projector beside them and poll alone.
    ready: Arc<Readiness>,
}

/// Whether a mission was made ready since a claimer looked: a count of the projector's
/// commits that made one ready, and a wake-up for those waiting on it.
#[derive(Default)]
pub struct Readiness {
    rung: AtomicU64,
    notify: Notify,
}

impl Readiness {
    /// Taken before a claim: what [`Readiness::wait_since`] compares with.
    pub fn mark(&self) -> u64 {
        self.rung.load(Ordering::Acquire)
    }

    fn ring(&self) {
        self.rung.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Returns once a mission has been made ready since `mark` was taken (at once if one
    /// was already), or after `at_most`.
    pub async fn wait_since(&self, mark: u64, at_most: Duration) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Listening before looking: a ring between the look and the wait still wakes it.
        notified.as_mut().enable();
        if self.mark() != mark {
            return;
        }
        let _ = tokio::time::timeout(at_most, notified).await;
    }
}

/// Most leases [`Queue::holders`] reads: running missions beyond it are found by their
/// lease expiry instead.
pub const LEASES_SCAN_MAX: usize = 100_000;

/// A mission popped by [`Queue::claim`] or [`Queue::claim_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub mission_id: String,
    pub agent: String,
}

/// A mission as the ready set orders it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Upcoming {
    pub mission_id: String,
    pub score: i64,
    pub ready_at_ms: i64,
    pub bonus_ms: i64,
}

impl Queue {
    pub async fn connect(
        redis: &redis::Client,
        namespace: &Namespace,
    ) -> Result<Queue, QueueError> {
        let connection = redis.get_connection_manager().await?;
        Ok(Queue::new(connection, namespace))
    }

    pub fn new(connection: ConnectionManager, namespace: &Namespace) -> Queue {
        Queue {
            connection,
            base: format!("{{{namespace}}}:q:"),
            commit: Script::new(COMMIT),
            claim: Script::new(CLAIM),
            reclaim: Script::new(RECLAIM),
            swap: Script::new(SWAP),
            forget: Script::new(FORGET),
            ready: Arc::new(Readiness::default()),
        }
    }

    /// What wakes a claimer that found nothing: rung each time this process's projector
    /// commits a mission made ready. A claimer takes its [`Readiness::mark`] before it
    /// claims, so that a mission made ready between its claim and its wait is not missed; its
    /// poll still covers delayed missions coming due and other processes.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.ready.clone()
    }

    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    async fn live_generation(&self) -> Result<u64, QueueError> {
        let generation: Option<u64> =
            self.connection.clone().get(format!("{}gen", self.base)).await?;
        Ok(generation.unwrap_or(1))
    }

    /// The one key every script declares (`KEYS[1]`): on a cluster it routes the script to
    /// the namespace's slot, where all the other keys are too.
    fn generation_key(&self) -> String {
        format!("{}gen", self.base)
    }

    fn prefix(&self, generation: u64) -> String {
        format!("{}{generation}:", self.base)
    }

    /// The position the live queue reflects.
    pub async fn checkpoint(&self) -> Result<u64, QueueError> {
        let generation = self.live_generation().await?;
        let position: Option<u64> =
            self.connection.clone().get(format!("{}checkpoint", self.prefix(generation))).await?;
        Ok(position.unwrap_or(0))
    }

    /// Pops the best mission of `agents` for `worker`, claimed until `now_ms + claim_ms`.
    pub async fn claim(
        &self,
        agents: &[String],
        worker: &str,
        now_ms: i64,
        claim_ms: u64,
    ) -> Result<Option<Claim>, QueueError> {
        Ok(self.claim_many(agents, worker, now_ms, claim_ms, 1).await?.pop())
    }

    /// Pops up to `max` of the best missions of `agents` for `worker` in one script run,
    /// best first, each claimed until `now_ms + claim_ms`: what [`Queue::claim`] pops,
    /// `max` times over.
    pub async fn claim_many(
        &self,
        agents: &[String],
        worker: &str,
        now_ms: i64,
        claim_ms: u64,
        max: usize,
    ) -> Result<Vec<Claim>, QueueError> {
        if max == 0 || agents.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.generation_key())
            .arg(&self.base)
            .arg(now_ms)
            .arg(worker)
            .arg(now_ms + claim_ms as i64)
            .arg(max);
        for agent in agents {
            invocation.arg(agent);
        }
        let popped: Vec<String> = invocation.invoke_async(&mut self.connection.clone()).await?;
        if !popped.len().is_multiple_of(2) {
            return Err(QueueError::Script(format!("claim answered {popped:?}")));
        }
        Ok(popped
            .chunks_exact(2)
            .map(|pair| Claim { mission_id: pair[0].clone(), agent: pair[1].clone() })
            .collect())
    }

    /// Ends a claim: the mission started (the event store holds its lease now) or will not.
    pub async fn release(&self, mission_id: &str) -> Result<(), QueueError> {
        self.release_many(&[mission_id]).await
    }

    /// Ends several claims in one round trip, as [`Queue::release`] ends one.
    pub async fn release_many(&self, mission_ids: &[impl AsRef<str>]) -> Result<(), QueueError> {
        if mission_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = mission_ids.iter().map(AsRef::as_ref).collect();
        let mut pipe = redis::pipe();
        pipe.zrem(format!("{}claims", self.base), &ids).hdel(format!("{}claimer", self.base), &ids);
        pipe.query_async::<()>(&mut self.connection.clone()).await?;
        Ok(())
    }

    /// Puts missions whose claim expired before `now_ms` back in their ready set.
    pub async fn reclaim(&self, now_ms: i64) -> Result<u64, QueueError> {
        let back: u64 = self
            .reclaim
            .key(self.generation_key())
            .arg(&self.base)
            .arg(now_ms)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(back)
    }

    /// Running missions whose lease ran out before `now_ms` (at most `limit`).
    pub async fn expired_leases(
        &self,
        now_ms: i64,
        limit: isize,
    ) -> Result<Vec<String>, QueueError> {
        let generation = self.live_generation().await?;
        let ids: Vec<String> = self
            .connection
            .clone()
            .zrangebyscore_limit(
                format!("{}leases", self.prefix(generation)),
                "-inf",
                now_ms,
                0,
                limit,
            )
            .await?;
        Ok(ids)
    }

    /// Every running mission with the worker holding its lease, by the projection (which may
    /// be a moment behind: the aggregate checks each command against the log). Reads at most
    /// [`LEASES_SCAN_MAX`] leases.
    pub async fn holders(&self) -> Result<Vec<(String, String)>, QueueError> {
        let generation = self.live_generation().await?;
        let prefix = self.prefix(generation);
        let mut connection = self.connection.clone();
        let ids: Vec<String> =
            connection.zrange(format!("{prefix}leases"), 0, LEASES_SCAN_MAX as isize - 1).await?;
        let mut held = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hget(format!("{prefix}m:{id}"), "worker");
            }
            let workers: Vec<Option<String>> = pipe.query_async(&mut connection).await?;
            held.extend(
                chunk.iter().zip(workers).filter_map(|(id, worker)| Some((id.clone(), worker?))),
            );
        }
        Ok(held)
    }

    /// Delayed missions of every kind due before `now_ms` (at most `limit` per kind).
    pub async fn due(&self, now_ms: i64, limit: isize) -> Result<Vec<String>, QueueError> {
        let generation = self.live_generation().await?;
        let prefix = self.prefix(generation);
        let mut connection = self.connection.clone();
        let kinds: Vec<String> = connection.smembers(format!("{prefix}kinds")).await?;
        let mut due = Vec::new();
        for kind in kinds {
            let ids: Vec<String> = connection
                .zrangebyscore_limit(format!("{prefix}delayed:{kind}"), "-inf", now_ms, 0, limit)
                .await?;
            due.extend(ids);
        }
        Ok(due)
    }

    /// The next `limit` missions of `agent` in the order they will be popped.
    pub async fn upcoming(&self, agent: &str, limit: isize) -> Result<Vec<Upcoming>, QueueError> {
        let generation = self.live_generation().await?;
        let prefix = self.prefix(generation);
        let mut connection = self.connection.clone();
        let top: Vec<(String, i64)> =
            connection.zrange_withscores(format!("{prefix}ready:{agent}"), 0, limit - 1).await?;
        if top.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &top {
            pipe.cmd("HMGET").arg(format!("{prefix}m:{id}")).arg("ready_at").arg("bonus");
        }
        let times: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut connection).await?;
        Ok(top
            .into_iter()
            .zip(times)
            .map(|((mission_id, score), (ready_at, bonus))| Upcoming {
                mission_id,
                score,
                ready_at_ms: ready_at.unwrap_or(score),
                bonus_ms: bonus.unwrap_or(0),
            })
            .collect())
    }

    /// Per agent kind: ready, delayed and running counts, and the oldest ready mission's
    /// ready time.
    pub async fn depths(&self) -> Result<BTreeMap<String, Depth>, QueueError> {
        let generation = self.live_generation().await?;
        let prefix = self.prefix(generation);
        let mut connection = self.connection.clone();
        let kinds: Vec<String> = connection.smembers(format!("{prefix}kinds")).await?;
        let mut depths = BTreeMap::new();
        for kind in kinds {
            let ready_key = format!("{prefix}ready:{kind}");
            let (ready, delayed): (u64, u64) = redis::pipe()
                .zcard(&ready_key)
                .zcard(format!("{prefix}delayed:{kind}"))
                .query_async(&mut connection)
                .await?;
            // The oldest is not the first to pop (priority), so scan the ready times; a
            // dashboard read, bounded by the set's size.
            let ids: Vec<String> = connection.zrange(&ready_key, 0, 999).await?;
            if ids.is_empty() {
                depths.insert(kind, Depth { ready, delayed, oldest_ready_at_ms: None });
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(format!("{prefix}m:{id}"), "ready_at");
            }
            let times: Vec<Option<i64>> = pipe.query_async(&mut connection).await?;
            let oldest_ready_at_ms = times.into_iter().flatten().min();
            depths.insert(kind, Depth { ready, delayed, oldest_ready_at_ms });
        }
        Ok(depths)
    }

    /// Running missions (leases held), all kinds together.
    pub async fn running(&self) -> Result<u64, QueueError> {
        let generation = self.live_generation().await?;
        Ok(self.connection.clone().zcard(format!("{}leases", self.prefix(generation))).await?)
    }

    /// Every key of generation `gen` with its contents, checkpoint left out: what a rebuilt
    /// queue is compared on.
    pub async fn snapshot(
        &self,
        generation: Option<u64>,
    ) -> Result<BTreeMap<String, String>, QueueError> {
        let generation = match generation {
            Some(generation) => generation,
            None => self.live_generation().await?,
        };
        let prefix = self.prefix(generation);
        Ok(crate::kv::snapshot(&mut self.connection.clone(), &prefix, &["checkpoint"]).await?)
    }

    /// Takes a mission out of the queue entirely: for one the log does not know.
    pub async fn forget(&self, mission_id: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .forget
            .key(self.generation_key())
            .arg(&self.base)
            .arg(mission_id)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// The generation a rebuild should fill: one past the live one, emptied first.
    pub async fn fresh_generation(&self) -> Result<u64, QueueError> {
        let generation = self.live_generation().await? + 1;
        self.drop_generation(generation).await?;
        Ok(generation)
    }

    /// Makes `gen` live if it has caught up with the live checkpoint. `Ok(None)` means it
    /// has not: catch up again and retry. On success, returns the old generation.
    pub async fn swap(&self, generation: u64) -> Result<Option<u64>, QueueError> {
        let (swapped, value): (i64, u64) = self
            .swap
            .key(self.generation_key())
            .arg(&self.base)
            .arg(generation)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok((swapped == 1).then_some(value))
    }

    pub async fn drop_generation(&self, generation: u64) -> Result<(), QueueError> {
        Ok(crate::kv::drop_prefix(&mut self.connection.clone(), &self.prefix(generation)).await?)
    }

    /// Deletes every key of the namespace's queue: for tests and benchmarks that clean up.
    pub async fn drop_all(&self) -> Result<(), QueueError> {
        Ok(crate::kv::drop_prefix(&mut self.connection.clone(), &self.base).await?)
    }

    /// A [`ProjectionStore`] over the live generation (`None`) or a given one (a rebuild).
    pub fn store(&self, generation: Option<u64>) -> QueueStore {
        QueueStore { queue: self.clone(), generation }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub ready: u64,
    pub delayed: u64,
    pub oldest_ready_at_ms: Option<i64>,
}

/// The `mission_queue` projector's store: each commit is one script run, so the changes and
/// the checkpoint land together (design invariant 4).
pub struct QueueStore {
    queue: Queue,
    generation: Option<u64>,
}

impl ProjectionStore<QueueChange> for QueueStore {
    type Error = QueueError;

    async fn checkpoint(&mut self) -> Result<u64, QueueError> {
        let generation = match self.generation {
            Some(generation) => generation,
            None => self.queue.live_generation().await?,
        };
        let position: Option<u64> = self
            .queue
            .connection
            .clone()
            .get(format!("{}checkpoint", self.queue.prefix(generation)))
            .await?;
        Ok(position.unwrap_or(0))
    }

    async fn commit(
        &mut self,
        after: u64,
        up_to: u64,
        changes: Vec<QueueChange>,
    ) -> Result<(), CommitError<QueueError>> {
        let mut invocation = self.queue.commit.prepare_invoke();
        invocation.key(self.queue.generation_key());
        let generation =
            self.generation.map(|generation| generation.to_string()).unwrap_or_default();
        invocation.arg(&self.queue.base).arg(generation).arg(after).arg(up_to);
        let readies = self.generation.is_none()
            && changes.iter().any(|change| {
                matches!(
                    change,
                    QueueChange::Enqueue { delayed: false, .. } | QueueChange::Ready { .. }
                )
            });
        for change in changes {
            match change {
                QueueChange::Enqueue { mission_id, agent, bonus_ms, ready_at_ms, delayed } => {
                    invocation.arg("E").arg(mission_id).arg(agent).arg(bonus_ms);
                    invocation.arg(ready_at_ms).arg(if delayed { "1" } else { "0" });
                }
                QueueChange::Ready { mission_id, ready_at_ms } => {
                    invocation.arg("R").arg(mission_id).arg(ready_at_ms);
                }
                QueueChange::Delay { mission_id, due_at_ms } => {
                    invocation.arg("D").arg(mission_id).arg(due_at_ms);
                }
                QueueChange::Lease { mission_id, worker_id, lease_expires_at_ms } => {
                    invocation.arg("L").arg(mission_id).arg(worker_id).arg(lease_expires_at_ms);
                }
                QueueChange::Remove { mission_id, failed } => {
                    invocation.arg("X").arg(mission_id).arg(if failed { "1" } else { "0" });
                }
            }
        }
        let (applied, position): (i64, u64) = invocation
            .invoke_async(&mut self.queue.connection.clone())
            .await
            .map_err(|error| CommitError::Store(QueueError::Redis(error)))?;
        if applied != 1 {
            return Err(CommitError::Moved { actual: position });
        }
        if readies {
            self.queue.ready.ring();
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), QueueError> {
        match self.generation {
            Some(generation) => self.queue.drop_generation(generation).await,
            None => self.queue.drop_all().await,
        }
    }
}

/// Rebuilds the queue from the whole log into a fresh generation and makes it live; returns
/// the position it reached. With `swap` false, the rebuilt generation is left beside the
/// live one (for comparing them) and its number returned in the error-free result's second
/// field.
pub async fn rebuild(
    pool: &sqlx::PgPool,
    queue: &Queue,
    scoring: Scoring,
    swap: bool,
) -> Result<(u64, u64), RunnerError> {
    let projection = |error: QueueError| RunnerError::Projection(Box::new(error));
    let generation = queue.fresh_generation().await.map_err(projection)?;
    let projector = projections::mission_queue::MissionQueue { scoring };
    let mut feeder =
        Feeder::new(projector, queue.store(Some(generation)), pool.clone(), 1_000).await?;
    if !swap {
        return Ok((feeder.catch_up().await?, generation));
    }
    for attempt in 1..=crate::eventlog::projectors::REBUILD_SWAP_ATTEMPTS_MAX {
        let reached = feeder.catch_up().await?;
        match queue.swap(generation).await.map_err(projection)? {
            Some(old) => {
                queue.drop_generation(old).await.map_err(projection)?;
                tracing::info!(
                    projector = NAME,
                    position = reached,
                    generation,
                    "rebuilt and swapped in"
                );
                return Ok((reached, generation));
            }
            None => {
                tracing::debug!(projector = NAME, attempt, reached, "rebuild behind live");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    Err(RunnerError::Projection(
        format!("rebuild of {NAME} could not overtake the live queue").into(),
    ))
}
