//! The lease reaper: the timer side of missions, run by one `brain serve` per
//! namespace (advisory-lock leadership, like the relay).
//!
//! Every tick it
//! - expires the leases that ran out (the worker died or lost its way): the mission goes
//!   back, through a `MissionLeaseExpired` event, to run again elsewhere after a backoff;
//! - marks pending missions due (`MissionRetryDue`), so views show them queued even before a
//!   worker claims them (a claim would move them anyway);
//! - puts back missions that were popped but never started (the claim expired).
//!
//! It reads candidates from the queue projection, which may be behind; the aggregate checks
//! each command against the log, so a stale candidate is just refused.

use std::time::Duration;

use domain::mission::{Mission, MissionCommand, MissionError};
use domain::{EventMetadata, StreamId};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::LeaseClock;
use crate::config::Namespace;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::leader;
use crate::eventlog::store::EventStore;
use crate::missions::queue::Queue;
use crate::missions::worker::Backoff;

#[derive(Debug, Clone)]
pub struct ReaperConfig {
    pub tick: Duration,
    /// Backoff before a mission whose lease expired runs again.
    pub backoff: Backoff,
    /// Most missions of each kind handled per tick.
    pub batch_max: isize,
}

impl Default for ReaperConfig {
    fn default() -> ReaperConfig {
        ReaperConfig {
            tick: Duration::from_millis(250),
            backoff: Backoff::default(),
            batch_max: 1_000,
        }
    }
}

pub struct LeaseReaper {
    pub store: EventStore,
    pub queue: Queue,
    pub pool: PgPool,
    pub namespace: Namespace,
    pub config: ReaperConfig,
}

impl LeaseReaper {
    /// Leads, then ticks until `shutdown`. Errors of one tick are logged and retried at the
    /// next: Redis or PostgreSQL being away for a moment must not stop the server.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let lock = format!("{}:supervisor", self.namespace);
        let leading = std::sync::atomic::AtomicBool::new(false);
        let this = &self;
        leader::lead(
            &self.pool,
            &lock,
            self.config.tick,
            &shutdown,
            &leading,
            |clock| async move {
                if let Err(error) = this.tick(&clock).await {
                    tracing::warn!(%error, "supervisor tick failed");
                }
            },
        )
        .await;
        Ok(())
    }

    /// One pass on the lease clock; returns how many missions it moved.
    pub async fn tick(&self, clock: &LeaseClock) -> Result<usize, String> {
        self.sweep_once(clock.now_ms_synced().await).await
    }

    /// One pass judged at `now` (Unix ms on the lease clock), as [`Self::tick`] does it: the
    /// time is given, so a caller (a test) steps the reaper across an expiry exactly instead
    /// of waiting for the interval and the clock.
    pub async fn sweep_once(&self, now: i64) -> Result<usize, String> {
        // Each step goes on when another fails: one broken script must not stop leases
        // from expiring.
        let mut moved = match self.queue.reclaim(now).await {
            Ok(back) => back as usize,
            Err(error) => {
                tracing::warn!(%error, "reclaim failed");
                0
            }
        };
        let expired = self
            .queue
            .expired_leases(now, self.config.batch_max)
            .await
            .map_err(|e| e.to_string())?;
        for mission_id in expired {
            let backoff_ms = self.config.backoff.draw(1);
            moved += self
                .command(&mission_id, MissionCommand::ExpireLease { backoff_ms, now_ms: now })
                .await;
        }
        let due = self.queue.due(now, self.config.batch_max).await.map_err(|e| e.to_string())?;
        for mission_id in due {
            moved += self.command(&mission_id, MissionCommand::MarkDue { now_ms: now }).await;
        }
        Ok(moved)
    }

    async fn command(&self, mission_id: &str, command: MissionCommand) -> usize {
        let Ok(stream_id) = StreamId::parse(mission_id) else { return 0 };
        let mut metadata = EventMetadata::new("supervisor", OffsetDateTime::now_utc());
        metadata.command_id = Some(Uuid::now_v7());
        if let Ok(id) = Uuid::parse_str(mission_id) {
            metadata.correlation_id = id;
        }
        let executed =
            command::execute::<Mission>(&self.store, &stream_id, metadata, || command.clone())
                .await;
        match executed {
            Ok(_) => {
                if matches!(command, MissionCommand::ExpireLease { .. }) {
                    tracing::info!(mission_id, "lease expired; mission put back");
                    metrics::counter!("brain_mission_leases_expired_total").increment(1);
                }
                1
            }
            // The queue holds a mission the log does not know (it outlived its database):
            // forgotten, so that it is not tried again every tick ahead of real expiries.
            Err(CommandError::Rejected(MissionError::NotFound)) => {
                tracing::warn!(
                    mission_id,
                    "queue holds a mission the log does not know; forgetting it"
                );
                if let Err(error) = self.queue.forget(mission_id).await {
                    tracing::warn!(mission_id, %error, "cannot forget the unknown mission");
                }
                0
            }
            // The projection was behind: the mission moved on already.
            Err(CommandError::Rejected(
                MissionError::NotRunning { .. }
                | MissionError::LeaseNotExpired { .. }
                | MissionError::NotDue { .. }
                | MissionError::AlreadyFinished { .. },
            )) => 0,
            Err(error) => {
                tracing::warn!(mission_id, %error, "supervisor command failed");
                0
            }
        }
    }
}
