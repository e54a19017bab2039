//! The silence watchdog: one per namespace (advisory-lock leadership), sweeping the agent view
//! every `BRAIN_SUPERVISOR_INTERVAL_S` (30 s) for active agents not heard from in
//! `BRAIN_AGENT_UNRESPONSIVE_AFTER_S` (60 s). Each verdict is a command, so it is an event:
//! `AgentUnresponsive`, then a `MissionLeaseExpired` for every mission the agent held, which
//! puts them back in the queue at once instead of when their leases run out.
//!
//! An agent silent since `t` is therefore marked at the first sweep after `t + window`: never
//! before the window, and at most one interval after it. A sweep waits (a bounded time) for
//! the view to reach the log's head first, so that a view catching up after a restart never
//! makes a live agent look silent. The last sweep's report is kept in Redis, so every
//! process can show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use domain::agent::{Agent, AgentCommand, AgentError};
use domain::mission::{Mission, MissionCommand};
use domain::{EventMetadata, StreamId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agents::view::AgentViewStore;
use crate::clock::LeaseClock;
use crate::config::Namespace;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::eventlog::{leader, store};
use crate::missions::queue::Queue;

/// Longest a sweep waits for the agent view to reach the log's head before it gives up
/// (and reports that it did).
pub const VIEW_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
const VIEW_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    pub interval: Duration,
    /// Silence after which an active agent is marked unresponsive.
    pub unresponsive_after: Duration,
    /// Most agents marked in one sweep; the rest wait for the next.
    pub sweep_max: usize,
}

impl Default for WatchdogConfig {
    fn default() -> WatchdogConfig {
        WatchdogConfig {
            interval: Duration::from_secs(30),
            unresponsive_after: Duration::from_secs(60),
            sweep_max: 1_000,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SweepReport {
    /// When it ran, on the database's clock (Unix ms).
    pub at_ms: i64,
    pub duration_ms: u64,
    /// Agents found silent.
    pub silent: u64,
    /// Of those, marked unresponsive by this sweep.
    pub marked: u64,
    /// Missions they held, put back in the queue.
    pub requeued: u64,
    /// The view had not reached the log's head in time: nothing was judged.
    pub skipped_view_behind: bool,
    /// The view was filled from nothing less than one window ago: nothing was judged.
    pub grace: bool,
}

pub struct SilenceWatchdog {
    pub store: EventStore,
    pub view: AgentViewStore,
    pub queue: Queue,
    pub pool: PgPool,
    pub namespace: Namespace,
    pub config: WatchdogConfig,
    /// Whether this process leads the sweeps (for `/api/supervisor/status`).
    pub leading: Arc<AtomicBool>,
}

/// Where the last sweep's report is kept.
pub fn report_key(namespace: &Namespace) -> String {
    format!("{{{namespace}}}:agent_supervisor:last_sweep")
}

/// The prefix of the worker id a claim over HTTP gives an external agent's lease; each claim
/// adds a nonce of its own (`agent:<id>:<nonce>`), which fences a retried mission's new run
/// from an old one's late reports.
pub fn worker_id(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

impl SilenceWatchdog {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let lock = format!("{}:agent_supervisor", self.namespace);
        let this = &self;
        leader::lead(
            &self.pool,
            &lock,
            self.config.interval,
            &shutdown,
            &self.leading,
            |clock| async move {
                match this.sweep(&clock).await {
                    Ok(report) if report.marked > 0 || report.skipped_view_behind => {
                        tracing::info!(?report, "agent sweep");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "agent sweep failed"),
                }
            },
        )
        .await;
        self.leading.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// One sweep: marks the silent agents and puts their missions back.
    pub async fn sweep(&self, clock: &LeaseClock) -> Result<SweepReport, String> {
        let now = clock.now_ms_synced().await;
        self.sweep_with(now, || clock.now_ms()).await
    }

    /// One sweep judged at `now` (Unix ms on the lease clock) from start to end: what the
    /// interval does, with the time given, so a caller (a test) puts a sweep on either side of
    /// a window exactly instead of waiting for the clock.
    pub async fn sweep_at(&self, now: i64) -> Result<SweepReport, String> {
        self.sweep_with(now, || now).await
    }

    /// A sweep that starts at `now` and reads `clock` again before judging each agent.
    async fn sweep_with(&self, now: i64, clock: impl Fn() -> i64) -> Result<SweepReport, String> {
        let started = Instant::now();
        let mut report = SweepReport { at_ms: now, ..SweepReport::default() };
        let head = store::head(&self.pool).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + VIEW_CATCH_UP_WAIT;
        while self.view.position().await.map_err(|e| e.to_string())? < head {
            if Instant::now() >= deadline {
                report.skipped_view_behind = true;
                return self.finish(report, started).await;
            }
            tokio::time::sleep(VIEW_POLL).await;
        }
        let silent_after_ms = self.config.unresponsive_after.as_millis() as i64;
        // A view refilled from the log (Redis lost) has only the log's heartbeat times, older
        // than the agents' real ones: every agent gets one window from the refill to be heard.
        let watch_since = self.view.watch_since().await.map_err(|e| e.to_string())?;
        if watch_since.is_some_and(|since| now - since < silent_after_ms) {
            report.grace = true;
            return self.finish(report, started).await;
        }
        let silent = self
            .view
            .silent(now - silent_after_ms, self.config.sweep_max)
            .await
            .map_err(|e| e.to_string())?;
        report.silent = silent.len() as u64;
        // Read once per sweep, only when someone is marked: who holds which lease.
        let mut holders: Option<Vec<(String, String)>> = None;
        for (agent_id, _) in silent {
            let Ok(stream_id) = StreamId::parse(&agent_id) else { continue };
            // The list is as old as the sweep; marking a thousand agents takes seconds, and an
            // agent heard from meanwhile is alive.
            let now = clock();
            let Some(last_seen_ms) =
                self.view.ping_of(&agent_id).await.map_err(|e| e.to_string())?
            else {
                continue;
            };
            if now - last_seen_ms < silent_after_ms {
                continue;
            }
            let marked = command::execute::<Agent>(&self.store, &stream_id, metadata(), || {
                AgentCommand::MarkUnresponsive { last_seen_ms, silent_after_ms, now_ms: now }
            })
            .await;
            match marked {
                Ok(_) => {
                    report.marked += 1;
                    metrics::counter!("brain_agents_marked_unresponsive_total").increment(1);
                    tracing::info!(agent_id, last_seen_ms, "agent marked unresponsive");
                    if holders.is_none() {
                        match self.queue.holders().await {
                            Ok(all) => holders = Some(all),
                            Err(error) => tracing::warn!(%error, "cannot list lease holders"),
                        }
                    }
                    let held = holders.as_deref().unwrap_or_default();
                    report.requeued += self.requeue_held(&agent_id, held, now).await;
                }
                // The view was a moment behind: the agent moved on already.
                Err(CommandError::Rejected(
                    AgentError::NotActive { .. } | AgentError::NotSilent { .. },
                )) => {}
                Err(error) => tracing::warn!(agent_id, %error, "cannot mark agent unresponsive"),
            }
        }
        self.finish(report, started).await
    }

    async fn finish(
        &self,
        mut report: SweepReport,
        started: Instant,
    ) -> Result<SweepReport, String> {
        report.duration_ms = started.elapsed().as_millis() as u64;
        metrics::histogram!("brain_agent_sweep_seconds").record(started.elapsed().as_secs_f64());
        let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        let mut connection = self.queue.connection();
        let _: () =
            connection.set(report_key(&self.namespace), json).await.map_err(|e| e.to_string())?;
        Ok(report)
    }

    /// Ends the leases the agent holds, so its missions run elsewhere now. A built-in agent's
    /// leases are its worker's (its owner names it); an external agent's are held under
    /// `agent:<id>:<claim>`.
    async fn requeue_held(&self, agent_id: &str, holders: &[(String, String)], now: i64) -> u64 {
        let owner = match self.view.get(agent_id).await {
            Ok(record) => record.map(|record| record.owner).unwrap_or_default(),
            Err(error) => {
                tracing::warn!(agent_id, %error, "cannot read the agent's record");
                return 0;
            }
        };
        let external = format!("{}:", worker_id(agent_id));
        let builtin = owner.strip_prefix(crate::agents::host::OWNER_PREFIX);
        let held = holders.iter().filter(|(_, holder)| match builtin {
            Some(worker) => holder == worker,
            None => holder.starts_with(&external),
        });
        let mut requeued = 0;
        for (mission_id, holder) in held {
            let Ok(stream_id) = StreamId::parse(mission_id) else { continue };
            let revoked = command::execute::<Mission>(&self.store, &stream_id, metadata(), || {
                MissionCommand::RevokeLease {
                    worker_id: holder.clone(),
                    backoff_ms: 0,
                    now_ms: now,
                }
            })
            .await;
            match revoked {
                Ok(_) => requeued += 1,
                Err(CommandError::Rejected(error)) => {
                    tracing::debug!(mission_id, %error, "lease moved on already");
                }
                Err(error) => {
                    tracing::warn!(mission_id, %error, "cannot revoke a dead agent's lease")
                }
            }
        }
        requeued
    }
}

/// The last sweep's report, from whichever process ran it.
pub async fn last_sweep(
    connection: &mut redis::aio::ConnectionManager,
    namespace: &Namespace,
) -> Result<Option<SweepReport>, redis::RedisError> {
    let json: Option<String> = connection.get(report_key(namespace)).await?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

fn metadata() -> EventMetadata {
    let mut metadata = EventMetadata::new("agent-supervisor", OffsetDateTime::now_utc());
    metadata.command_id = Some(Uuid::now_v7());
    metadata
}
