//! The worker status board: one Redis hash per namespace where every worker publishes what
//! it runs, and where `GET /api/missions/worker/status` reads them back. One type owns the
//! key, the encoding and the rules for silent workers, so the writer and the reader cannot
//! drift apart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Namespace;

/// How often a worker refreshes its status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// A worker silent for this many status intervals is shown as not alive.
pub const WORKER_SILENT_INTERVALS: u32 = 5;
/// A worker silent this long is dropped from the board.
pub const WORKER_FORGET_AFTER_MS: i64 = 60 * 60 * 1_000;

/// What a worker publishes about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub agents: Vec<String>,
    pub concurrency: usize,
    pub running: Vec<RunningMission>,
    pub completed: u64,
    pub failed: u64,
    /// Missions finished (completed or failed) in the last minute, per second.
    pub throughput_per_s: f64,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunningMission {
    pub mission_id: String,
    pub agent: String,
    pub attempt: u32,
    pub since_ms: i64,
}

/// What a worker's slots tell its status publisher: what runs now, and how runs ended.
#[derive(Default)]
pub struct Tally {
    pub running: BTreeMap<String, RunningMission>,
    completed: u64,
    failed: u64,
    finished_at: VecDeque<Instant>,
}

impl Tally {
    /// A run is over: `Some(true)` completed, `Some(false)` failed, `None` neither (handed
    /// back, suspended, taken away).
    pub fn finished(&mut self, mission_id: &str, completed: Option<bool>) {
        self.running.remove(mission_id);
        match completed {
            Some(true) => self.completed += 1,
            Some(false) => self.failed += 1,
            None => return,
        }
        self.finished_at.push_back(Instant::now());
    }
}

/// A status as the board shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub status: WorkerStatus,
    /// Reported within the last [`WORKER_SILENT_INTERVALS`] intervals.
    pub alive: bool,
}

/// The board of one namespace (the hash `{ns}:workers`, keyed by worker id).
#[derive(Clone)]
pub struct StatusBoard {
    connection: ConnectionManager,
    key: String,
}

impl StatusBoard {
    pub fn new(connection: ConnectionManager, namespace: &Namespace) -> StatusBoard {
        StatusBoard { connection, key: format!("{{{namespace}}}:workers") }
    }

    /// Publishes (or replaces) one worker's status.
    pub async fn publish(&self, status: &WorkerStatus) -> Result<(), redis::RedisError> {
        let json = serde_json::to_string(status).expect("a status serialises");
        redis::cmd("HSET")
            .arg(&self.key)
            .arg(&status.worker_id)
            .arg(json)
            .query_async(&mut self.connection.clone())
            .await
    }

    /// Takes a stopped worker off the board.
    pub async fn remove(&self, worker_id: &str) -> Result<(), redis::RedisError> {
        redis::cmd("HDEL")
            .arg(&self.key)
            .arg(worker_id)
            .query_async(&mut self.connection.clone())
            .await
    }

    /// Every worker heard from within [`WORKER_FORGET_AFTER_MS`] of `now_ms`, by id. Older
    /// entries and unreadable ones are deleted on the way (a worker killed without a chance
    /// to remove itself leaves one behind).
    pub async fn read(&self, now_ms: i64) -> Result<Vec<Seen>, redis::RedisError> {
        let mut connection = self.connection.clone();
        let reports: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(&self.key).query_async(&mut connection).await?;
        let silent_ms = (STATUS_INTERVAL.as_millis() as i64) * i64::from(WORKER_SILENT_INTERVALS);
        let mut seen = Vec::new();
        let mut forgotten = Vec::new();
        for (worker_id, json) in reports {
            match serde_json::from_str::<WorkerStatus>(&json) {
                Ok(status) if now_ms - status.last_seen_ms > WORKER_FORGET_AFTER_MS => {
                    forgotten.push(worker_id)
                }
                Ok(status) => {
                    let alive = now_ms - status.last_seen_ms <= silent_ms;
                    seen.push(Seen { status, alive });
                }
                Err(_) => forgotten.push(worker_id),
            }
        }
        if !forgotten.is_empty() {
            // Best effort: a failed clean-up is retried by the next read.
            let _: Result<(), _> = redis::cmd("HDEL")
                .arg(&self.key)
                .arg(&forgotten)
                .query_async(&mut connection)
                .await;
        }
        Ok(seen)
    }
    /// Publishes a worker's status every [`STATUS_INTERVAL`] until `shutdown`. `worker` is
    /// its id, agent kinds and concurrency.
    pub async fn keep_publishing(
        self,
        worker: (String, Vec<String>, usize),
        tally: Arc<Mutex<Tally>>,
        shutdown: CancellationToken,
    ) {
        let (worker_id, agents, concurrency) = worker;
        let started_at_ms = now_ms();
        loop {
            let status = {
                let mut tally = tally.lock().expect("not poisoned");
                let minute_ago = Instant::now() - Duration::from_secs(60);
                while tally.finished_at.front().is_some_and(|at| *at < minute_ago) {
                    tally.finished_at.pop_front();
                }
                let window =
                    (Instant::now() - started_at(started_at_ms)).min(Duration::from_secs(60));
                WorkerStatus {
                    worker_id: worker_id.clone(),
                    agents: agents.clone(),
                    concurrency,
                    running: tally.running.values().cloned().collect(),
                    completed: tally.completed,
                    failed: tally.failed,
                    throughput_per_s: tally.finished_at.len() as f64
                        / window.as_secs_f64().max(1.0),
                    started_at_ms,
                    last_seen_ms: now_ms(),
                }
            };
            if let Err(error) = self.publish(&status).await {
                tracing::warn!(%error, "cannot publish worker status");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            }
        }
    }
}

/// The `Instant` matching a wall-clock start, for the throughput window.
fn started_at(started_at_ms: i64) -> Instant {
    let age_ms = (now_ms() - started_at_ms).max(0) as u64;
    Instant::now() - Duration::from_millis(age_ms)
}
