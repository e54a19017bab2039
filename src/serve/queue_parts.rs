//! The parts of `brain serve` that live on the Redis queue: the queue's and the agent view's
//! projectors, the lease reaper, the silence watchdog and the in-process workers. They start
//! once Redis answers, so that a Redis that is down at start-up shows in `/ready` instead of
//! stopping the process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use projections::mission_queue::Scoring;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentSettings;
use crate::agents::restart::Intensity;
use crate::agents::view::AgentViewStore;
use crate::agents::watchdog::SilenceWatchdog;
use crate::eventlog::projector::{Runner, RunnerConfig};
use crate::eventlog::store::EventStore;
use crate::missions::queue::Queue;
use crate::missions::reaper::{LeaseReaper, ReaperConfig};
use crate::missions::worker::WorkerConfig;

/// The parts that live on the Redis queue: its projector, the lease reaper, the watchdog and the in-process
/// workers. They start once Redis answers.
pub(super) struct QueueParts {
    pub(super) redis: redis::Client,
    pub(super) cell: Arc<OnceCell<Queue>>,
    pub(super) store: EventStore,
    pub(super) pool: sqlx::PgPool,
    pub(super) nats: async_nats::Client,
    pub(super) feed: crate::eventlog::feed::FeedHandle,
    pub(super) mcp: crate::agents::tools::mcp::McpHub,
    pub(super) namespace: crate::config::Namespace,
    pub(super) scoring: Scoring,
    pub(super) reaper: ReaperConfig,
    pub(super) agents: AgentSettings,
    pub(super) intensity: Intensity,
    pub(super) clock: crate::clock::LeaseClock,
    pub(super) watchdog_leading: Arc<std::sync::atomic::AtomicBool>,
    pub(super) workers: Option<WorkerConfig>,
}

impl QueueParts {
    /// Runs until `stop_projector`; the reaper, the watchdog and the workers stop earlier, at
    /// `stop_workers`, and cancel `workers_done` once they have (with them go their event
    /// store handles, which the committer's drain waits for).
    pub(super) async fn run(
        self,
        stop_projector: CancellationToken,
        stop_workers: CancellationToken,
        workers_done: CancellationToken,
    ) -> Result<(), String> {
        let workers_guard = workers_done.drop_guard();
        let queue = loop {
            match Queue::connect(&self.redis, &self.namespace).await {
                Ok(queue) => break queue,
                Err(error) => tracing::warn!(%error, "queue waits for Redis"),
            }
            tokio::select! {
                _ = stop_workers.cancelled() => {
                    drop(workers_guard);
                    stop_projector.cancelled().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let _ = self.cell.set(queue.clone());
        let (projector, view) = self.projectors(&queue, stop_projector).await?;
        let watchdog = SilenceWatchdog {
            store: self.store.clone(),
            view,
            queue: queue.clone(),
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
            config: self.agents.watchdog(),
            leading: self.watchdog_leading,
        };
        let reaper = LeaseReaper {
            store: self.store.clone(),
            queue: queue.clone(),
            pool: self.pool,
            namespace: self.namespace.clone(),
            config: self.reaper,
        };
        let workers = async move {
            let _done = workers_guard;
            let reaper = reaper.run(stop_workers.clone());
            let watchdog = watchdog.run(stop_workers.clone());
            let workers = async {
                match self.workers {
                    None => Ok(()),
                    Some(config) => crate::agents::host::run_worker(
                        self.store,
                        queue,
                        self.namespace,
                        config,
                        crate::agents::host::Hosting {
                            builtin: Arc::new(self.agents.builtin.clone()),
                            llm: Arc::new(self.agents.llm.clone()),
                            intensity: self.intensity,
                            record_every: self.agents.record_every(),
                            tokens: Some(self.nats.clone()),
                            mcp: Some(self.mcp.clone()),
                        },
                        stop_workers.clone(),
                    )
                    .await
                    .map_err(|error| format!("workers: {error}")),
                }
            };
            tokio::try_join!(reaper, watchdog, workers).map(|_| ())
        };
        tokio::try_join!(projector, workers).map(|_| ())
    }

    /// The queue's projector and the agent view's, running until `stop`; and the view.
    async fn projectors(
        &self,
        queue: &Queue,
        stop: CancellationToken,
    ) -> Result<(impl Future<Output = Result<(), String>> + use<>, AgentViewStore), String> {
        let runner = Runner::new(
            projections::mission_queue::MissionQueue { scoring: self.scoring },
            queue.store(None),
            self.pool.clone(),
            self.feed.clone(),
            self.namespace.clone(),
            RunnerConfig::default(),
        )
        .await
        .map_err(|error| format!("queue projector: {error}"))?;
        let view =
            AgentViewStore::new(queue.connection(), &self.namespace).with_clock(self.clock.clone());
        let view_runner = Runner::new(
            projections::agent_view::AgentView,
            view.clone(),
            self.pool.clone(),
            self.feed.clone(),
            self.namespace.clone(),
            RunnerConfig::default(),
        )
        .await
        .map_err(|error| format!("agent view projector: {error}"))?;
        let projector = async move {
            tokio::join!(runner.run(stop.clone()), view_runner.run(stop));
            Ok::<(), String>(())
        };
        Ok((projector, view))
    }
}
