//! Workers: claim a mission and `start` it with a lease (through [`crate::missions::claim`],
//! the claim sequence external agents use too), run it through the agent for its kind, keep
//! the lease alive while it runs, and `complete` or `fail` it.
//! `brain serve` runs some in-process; `brain worker` runs them anywhere else.
//!
//! One claim loop fills the worker's `concurrency` slots: whenever some are free, a batch
//! claim pops and starts as many missions as are free (up to
//! [`crate::missions::claim::CLAIM_BATCH_MAX`]) with one queue call, one load and one group
//! of starts, with up to [`CLAIMS_IN_FLIGHT_MAX`] batches at once, and each mission started
//! runs in a task of its own until its attempt ends, which frees its slot. Idle slots cost nothing: with the queue empty, the loop alone looks
//! again when this process's queue projector makes a mission ready
//! ([`crate::missions::queue::Queue::readiness`]), or after `idle_poll` at the latest (a
//! delayed mission coming due, a worker with no projector beside it).
//!
//! The event store decides everything that matters (design invariant 6): a start against a
//! mission that is no longer queued is refused, and so is a report from a worker whose lease was taken away, which also stops
//! the agent (a cancelled mission stops at its next lease extension). A failed attempt is
//! retried after an exponential backoff with jitter; an attempt past the mission's timeout
//! fails like any other.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::EventMetadata;
use domain::StreamId;
use domain::mission::{Mission, MissionCommand, MissionError, MissionSpec};
use futures::FutureExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod claims;
pub use claims::CLAIMS_IN_FLIGHT_MAX;

pub use crate::backoff::Backoff;
use crate::clock::{LeaseClock, now_ms};
use crate::config::Namespace;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::{AppendError, EventStore};
use crate::missions::agent::{Agents, ChildRequest, Failure, Outcome, Task};
use crate::missions::claim::Started;
use crate::missions::queue::Queue;
use crate::missions::status::{RunningMission, StatusBoard, Tally};
use crate::missions::tree::{self, Fanout};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub agents: Agents,
    pub concurrency: usize,
    /// How long a start or a progress report holds the mission.
    pub lease_ms: u64,
    /// How long a popped mission is reserved for this worker before its start.
    pub claim_ms: u64,
    /// Wait between claims while the queue is empty.
    pub idle_poll: Duration,
    pub backoff: Backoff,
    /// At shutdown, how long running attempts may go on before they are handed back.
    pub drain_ms: u64,
}

impl WorkerConfig {
    pub fn new(agents: Agents, concurrency: usize) -> WorkerConfig {
        WorkerConfig {
            worker_id: default_worker_id(),
            agents,
            concurrency,
            lease_ms: 30_000,
            // Covers only the moment between a pop and its start; expiring early is safe
            // (the second start is refused), expiring late delays a dead claimer's mission.
            claim_ms: 5_000,
            idle_poll: Duration::from_millis(50),
            backoff: Backoff::default(),
            drain_ms: 10_000,
        }
    }
}

pub use crate::config::worker::Tuning;

impl Tuning {
    pub fn backoff(&self) -> Backoff {
        Backoff { base_ms: self.retry_backoff_ms, max_ms: self.retry_backoff_max_ms }
    }

    pub fn worker(&self, agents: Agents, concurrency: usize) -> WorkerConfig {
        WorkerConfig {
            lease_ms: self.lease_ms.max(1),
            backoff: self.backoff(),
            ..WorkerConfig::new(agents, concurrency)
        }
    }
}

/// `<host>-<pid>-<random>`: unique per process, readable in a dashboard. The host is the
/// kernel's name for it (a container's name inside a container).
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let suffix = &Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Longest error message an attempt records, in characters; an agent's longer message is cut.
pub const ERROR_CHARS_MAX: usize = 4_000;

/// An agent's error message as the log can hold it: NUL characters replaced (PostgreSQL
/// refuses them), cut to [`ERROR_CHARS_MAX`]. A failure must be recorded, never refused.
pub fn recordable(message: &str) -> String {
    let clean = domain::text::without_nul(message);
    match clean.char_indices().nth(ERROR_CHARS_MAX) {
        Some((cut, _)) => format!("{}… (cut at {ERROR_CHARS_MAX} characters)", &clean[..cut]),
        None => clean.into_owned(),
    }
}

/// Pause between tries of a report the store failed to take.
const REPORT_RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the worker serves no agent kind")]
    NoAgents,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot read the database clock: {0}")]
    Clock(#[from] sqlx::Error),
    #[error("cannot load the MCP servers' configuration: {0}")]
    Mcp(String),
}

/// Runs the worker until `shutdown`; running missions finish first (their leases would
/// otherwise have to expire before anyone else could run them).
pub async fn run(
    store: EventStore,
    queue: Queue,
    namespace: Namespace,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    if config.agents.is_empty() {
        return Err(WorkerError::NoAgents);
    }
    let config = Arc::new(config);
    let stats = Arc::new(Mutex::new(Tally::default()));
    // Leases are granted on the database's clock, the one the supervisor judges them on.
    let clock = LeaseClock::connect(store.pool().clone()).await?;
    tracing::info!(
        worker = %config.worker_id,
        agents = ?config.agents,
        concurrency = config.concurrency,
        "worker started"
    );
    let board = StatusBoard::new(queue.connection(), &namespace);
    let reporter = {
        let worker = (config.worker_id.clone(), config.agents.kinds(), config.concurrency);
        tokio::spawn(board.clone().keep_publishing(worker, stats.clone(), shutdown.clone()))
    };
    let slot = Slot { clock, store, queue, config: config.clone(), stats };
    let mut running = tokio::task::JoinSet::new();
    slot.claim_loop(&mut running, &shutdown).await;
    // Running missions finish first (each gives up at its drain time).
    while let Some(ended) = running.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a mission's run ended abnormally");
        }
    }
    let _ = reporter.await;
    board.remove(&config.worker_id).await?;
    tracing::info!(worker = %config.worker_id, "worker stopped");
    Ok(())
}

/// What every slot works with; a running mission's task holds a clone.
#[derive(Clone)]
struct Slot {
    clock: LeaseClock,
    store: EventStore,
    queue: Queue,
    config: Arc<WorkerConfig>,
    stats: Arc<Mutex<Tally>>,
}

impl Slot {
    fn metadata(&self, mission_id: &StreamId) -> EventMetadata {
        let mut metadata = EventMetadata::new(
            format!("worker:{}", self.config.worker_id),
            OffsetDateTime::now_utc(),
        );
        metadata.command_id = Some(Uuid::now_v7());
        // Worker commands correlate on the mission, so its whole run groups together.
        if let Ok(id) = Uuid::parse_str(&mission_id.to_string()) {
            metadata.correlation_id = id;
        }
        metadata
    }

    /// Runs a worker command under a fresh command id; `known` is the mission as this worker
    /// last saw it (a conflict reloads it).
    async fn command(
        &self,
        mission_id: &StreamId,
        known: Option<(Mission, u64)>,
        command: MissionCommand,
    ) -> Result<(Mission, u64), CommandError<MissionError>> {
        let metadata = self.metadata(mission_id);
        command::execute_new::<Mission>(&self.store, mission_id, metadata, known, || {
            command.clone()
        })
        .await
        .map(|executed| (executed.state, executed.version))
    }

    /// Runs the attempt of a mission just started, and reports how it ended.
    async fn run(self, started: Started, shutdown: CancellationToken) {
        let task = self.task(&started);
        let Started { mission_id, stream_id, agent, mission, spec, version, mut lease_until } =
            started;
        let attempt = mission.attempt;
        let running =
            RunningMission { mission_id: mission_id.clone(), agent, attempt, since_ms: now_ms() };
        self.stats.lock().expect("not poisoned").running.insert(mission_id.clone(), running);
        let mut held = (mission, version);
        let outcome = self
            .attempt(&stream_id, task, spec.timeout_ms, &mut held, &mut lease_until, &shutdown)
            .await;
        let now = self.clock.now_ms();
        let worker_id = &self.config.worker_id;
        if let Attempt::Done(Ok(Outcome::Wait { step, call_id, children })) = &outcome {
            let fanout = Fanout { worker_id, attempt, step: *step, call_id, now_ms: now };
            self.suspend(&stream_id, held, lease_until, fanout, &spec, children).await;
            self.stats.lock().expect("not poisoned").finished(&mission_id, None);
            return;
        }
        let report = self.report_for(&mission_id, outcome, attempt, spec.timeout_ms, now);
        if let Some(report) = &report {
            self.report(&stream_id, held, lease_until, report.clone()).await;
        }
        // Counted as finished: completed, or failed (a release or a lost mission is neither).
        let completed = match &report {
            Some(MissionCommand::Complete { .. }) => Some(true),
            Some(MissionCommand::Fail { .. }) => Some(false),
            _ => None,
        };
        self.stats.lock().expect("not poisoned").finished(&mission_id, completed);
    }

    /// What the agent is given for the attempt just started.
    fn task(&self, started: &Started) -> Task {
        let (mission, spec) = (&started.mission, &started.spec);
        Task {
            mission_id: started.mission_id.clone(),
            name: spec.name.clone(),
            description: spec.description.clone(),
            agent: started.agent.clone(),
            payload: spec.payload.clone(),
            attempt: mission.attempt,
            worker_id: self.config.worker_id.clone(),
            budget: spec.budget,
            budget_scope: spec
                .parent
                .as_ref()
                .map_or(&started.mission_id, |parent| &parent.root)
                .clone(),
            playback: mission.carried_over || spec.forked_from.is_some(),
            children_spawned: mission.children.len(),
            depth: spec.parent.as_ref().map_or(0, |parent| parent.depth),
        }
    }

    /// The command that reports how an attempt ended (a suspension is reported apart);
    /// `None` when the mission was taken away.
    fn report_for(
        &self,
        mission_id: &str,
        outcome: Attempt,
        attempt: u32,
        timeout_ms: u64,
        now_ms: i64,
    ) -> Option<MissionCommand> {
        let worker_id = self.config.worker_id.clone();
        let Failure { message, retryable, .. } = match outcome {
            Attempt::Done(Ok(Outcome::Done(result))) => {
                return Some(MissionCommand::Complete { worker_id, attempt, result, now_ms });
            }
            Attempt::Done(Err(failure)) => failure,
            Attempt::TimedOut => Failure::retryable(format!("timed out after {timeout_ms} ms")),
            // Handed back without counting the attempt: a deploy must not fail missions.
            Attempt::Abandoned => {
                let reason = "the worker shut down before the attempt finished".to_owned();
                return Some(MissionCommand::Release { worker_id, attempt, reason, now_ms });
            }
            Attempt::Lost(reason) => {
                tracing::info!(mission_id, %reason, "mission taken away while running");
                return None;
            }
            Attempt::Done(Ok(Outcome::Wait { .. })) => return None,
        };
        let (error, backoff_ms) = (recordable(&message), self.config.backoff.draw(attempt));
        Some(MissionCommand::Fail { worker_id, attempt, error, retryable, backoff_ms, now_ms })
    }

    /// Reports an attempt's outcome. A failure of the store (not a refusal) is retried while
    /// the lease lasts, so a blip does not throw a finished result away; a retry after a
    /// report that did commit is refused as stale, which is harmless. A result the store
    /// cannot take (too large, a NUL in a string) fails the attempt with that reason instead:
    /// left unreported, the lease would expire and the agent run again for nothing.
    async fn report(
        &self,
        mission_id: &StreamId,
        held: (Mission, u64),
        lease_until: Instant,
        report: MissionCommand,
    ) {
        let mut report = report;
        loop {
            match self.command(mission_id, Some(held.clone()), report.clone()).await {
                Ok(_) => return,
                Err(CommandError::Rejected(reason)) => {
                    // Lease expired meanwhile, cancelled: the log holds what happened.
                    tracing::info!(%mission_id, %reason, "attempt report refused");
                    return;
                }
                Err(CommandError::Append(
                    error @ (AppendError::Unstorable { .. }
                    | AppendError::PayloadTooLarge { .. }
                    | AppendError::Refused { .. }),
                )) if matches!(report, MissionCommand::Complete { .. }) => {
                    tracing::warn!(%mission_id, %error, "the agent's result cannot be stored");
                    let MissionCommand::Complete { worker_id, attempt, .. } = report else {
                        unreachable!("matched above")
                    };
                    report = MissionCommand::Fail {
                        worker_id,
                        attempt,
                        error: format!("the agent's result cannot be stored: {error}"),
                        // The same input would give the same result: retry by command.
                        retryable: false,
                        backoff_ms: 0,
                        now_ms: self.clock.now_ms(),
                    };
                }
                Err(error) if Instant::now() + REPORT_RETRY_PAUSE < lease_until => {
                    tracing::warn!(%mission_id, %error, "cannot report the attempt; retrying");
                    tokio::time::sleep(REPORT_RETRY_PAUSE).await;
                }
                Err(error) => {
                    // The lease is over: the supervisor puts the mission back.
                    tracing::warn!(%mission_id, %error, "cannot report the attempt");
                    return;
                }
            }
        }
    }

    /// Enqueues the children the agent asked for and suspends the mission, retrying a failure
    /// of the store while the lease lasts (the same group each time). Children the store
    /// refuses (a spec past a limit, a value it cannot keep) fail the attempt with the reason.
    async fn suspend(
        &self,
        mission_id: &StreamId,
        held: (Mission, u64),
        lease_until: Instant,
        fanout: Fanout<'_>,
        spec: &MissionSpec,
        children: &[ChildRequest],
    ) {
        let metadata = self.metadata(mission_id);
        let fail = |error: String| MissionCommand::Fail {
            worker_id: fanout.worker_id.to_owned(),
            attempt: fanout.attempt,
            error: format!("cannot spawn the sub-missions: {error}"),
            retryable: false,
            backoff_ms: 0,
            now_ms: self.clock.now_ms(),
        };
        let planned = match tree::plan(mission_id, spec, &metadata, children, fanout.now_ms) {
            Ok(planned) => planned,
            Err(refused) => {
                return self.report(mission_id, held, lease_until, fail(refused.to_string())).await;
            }
        };
        loop {
            match tree::suspend(&self.store, mission_id, held.clone(), &metadata, fanout, &planned)
                .await
            {
                Ok(()) => {
                    tracing::debug!(%mission_id, children = planned.ids.len(), "suspended");
                    return;
                }
                Err(CommandError::Rejected(MissionError::Invalid { field, reason })) => {
                    let error = format!("{field}: {reason}");
                    return self.report(mission_id, held, lease_until, fail(error)).await;
                }
                Err(CommandError::Append(
                    error @ (AppendError::Unstorable { .. }
                    | AppendError::PayloadTooLarge { .. }
                    | AppendError::Refused { .. }),
                )) => {
                    return self
                        .report(mission_id, held, lease_until, fail(error.to_string()))
                        .await;
                }
                Err(CommandError::Rejected(reason)) => {
                    tracing::info!(%mission_id, %reason, "suspension refused");
                    return;
                }
                Err(error) if Instant::now() + REPORT_RETRY_PAUSE < lease_until => {
                    tracing::warn!(%mission_id, %error, "cannot suspend the mission; retrying");
                    tokio::time::sleep(REPORT_RETRY_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(%mission_id, %error, "cannot suspend the mission");
                    return;
                }
            }
        }
    }

    /// Runs the agent under the mission's timeout while renewing the lease.
    async fn attempt(
        &self,
        mission_id: &StreamId,
        task: Task,
        timeout_ms: u64,
        held: &mut (Mission, u64),
        lease_until: &mut Instant,
        shutdown: &CancellationToken,
    ) -> Attempt {
        let Some(implementation) = self.config.agents.get(&task.agent) else {
            let message = format!("this worker has no agent for kind {}", task.agent);
            return Attempt::Done(Err(Failure::retryable(message)));
        };
        let attempt = task.attempt;
        // A panicking agent fails its attempt instead of taking the slot down with it.
        let run =
            std::panic::AssertUnwindSafe(implementation.run(task)).catch_unwind().map(|outcome| {
                outcome.unwrap_or_else(|_| Err(Failure::retryable("the agent panicked")))
            });
        let deadline = tokio::time::sleep(Duration::from_millis(timeout_ms));
        tokio::pin!(run, deadline);
        let renew_every = Duration::from_millis((self.config.lease_ms / 3).max(1));
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        // Shutdown gives the attempt `drain_ms` more, then hands the mission back.
        let drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_millis(self.config.drain_ms)).await;
        };
        tokio::pin!(drained);
        loop {
            // If renewals keep failing (PostgreSQL away), the worker stops before its lease
            // runs out, on its own monotonic clock: past that, the supervisor may hand the
            // mission to someone else.
            let margin = Duration::from_millis(self.config.lease_ms / 10);
            let lease_end = tokio::time::sleep_until((*lease_until - margin).into());
            tokio::select! {
                outcome = &mut run => return Attempt::Done(outcome),
                _ = &mut deadline => return Attempt::TimedOut,
                _ = &mut drained => return Attempt::Abandoned,
                _ = lease_end => {
                    return Attempt::Lost(MissionError::LeaseNotExpired {
                        lease_expires_at_ms: held.0.lease_expires_at_ms.unwrap_or_default(),
                    });
                }
                _ = renew.tick() => {
                    let progress = MissionCommand::Progress {
                        worker_id: self.config.worker_id.clone(),
                        attempt,
                        lease_ms: self.config.lease_ms,
                        note: None,
                        now_ms: self.clock.now_ms_synced().await,
                    };
                    let sent = Instant::now();
                    match self.command(mission_id, Some(held.clone()), progress).await {
                        Ok(renewed) => {
                            *held = renewed;
                            *lease_until = sent + Duration::from_millis(self.config.lease_ms);
                        }
                        Err(CommandError::Rejected(reason)) => return Attempt::Lost(reason),
                        Err(error) => tracing::warn!(%error, "cannot extend lease"),
                    }
                }
            }
        }
    }
}

enum Attempt {
    Done(Result<Outcome, Failure>),
    TimedOut,
    /// Shutdown came and the attempt did not finish within the drain time.
    Abandoned,
    /// The mission is no longer ours: cancelled, or the lease expired and moved on.
    Lost(MissionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_error_is_recorded_without_nul_and_within_its_bound() {
        assert_eq!(recordable("bad\0thing"), "bad\u{fffd}thing");
        let long = "é".repeat(ERROR_CHARS_MAX + 10);
        let kept = recordable(&long);
        assert!(kept.starts_with(&"é".repeat(ERROR_CHARS_MAX)));
        assert!(kept.ends_with("(cut at 4000 characters)"), "{kept}");
        assert_eq!(recordable("fine"), "fine");
    }
}
