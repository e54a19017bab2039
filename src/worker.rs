//! `brain worker`: a process that runs missions and nothing else. It connects to PostgreSQL
//! and Redis (NATS too when it answers, to stream answers as they are generated), starts its
//! own committer, and hosts the built-in agents it serves (`crate::agents::host`) until a
//! signal; then its workers drain, its agents deregister and its committer finishes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::agents::host::{self, Hosting};
use crate::config::Services;
use crate::config::agents::{BuiltinSettings, RestartSettings};
use crate::config::llm::LlmSettings;
use crate::config::worker::{Tuning, WorkerSettings};
use crate::eventlog::store::EventStore;
use crate::eventlog::{bus, db};
use crate::missions::agent::Agents;
use crate::missions::queue::Queue;

/// How long start-up waits for NATS before running without streamed answers.
pub const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `brain worker` is configured with.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    #[command(flatten)]
    pub services: Services,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub builtin: BuiltinSettings,
    #[command(flatten)]
    pub llm: LlmSettings,
    #[command(flatten)]
    pub restarts: RestartSettings,
}

/// Runs the worker process until `shutdown`, then drains.
pub async fn run(options: WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let WorkerOptions { services, worker, tuning, builtin, mut llm, restarts } = options;
    llm.secrets = crate::secrets::of_process(&services, None);
    let mut config = tuning.worker(Agents::default(), worker.concurrency);
    if let Some(worker_id) = worker.worker_id {
        config.worker_id = worker_id;
    }
    let pool = db::connect(&services.database_url, services.db_connections_max).await?;
    let redis = redis::Client::open(services.redis_url.as_str()).context("REDIS_URL")?;
    let queue = Queue::connect(&redis, &services.namespace).await?;
    let (store, committer) =
        EventStore::start(pool, services.namespace.as_str(), Default::default());
    println!("brain worker {} running", config.worker_id);
    let hosting = Hosting {
        builtin: Arc::new(builtin),
        llm: Arc::new(llm),
        intensity: restarts.intensity(),
        record_every: crate::agents::heartbeat::RECORD_EVERY_DEFAULT,
        tokens: connect_nats(&services.nats_url).await,
        // Started by the worker itself, following the configuration in the log.
        mcp: None,
    };
    host::run_worker(store, queue, services.namespace, config, hosting, shutdown).await?;
    // The last handle is gone with the workers: the committer drains and ends.
    committer.await.context("committer")?;
    Ok(())
}

/// Answers stream on NATS as they are generated; without NATS the worker still runs, its
/// answers arriving whole.
async fn connect_nats(url: &str) -> Option<async_nats::Client> {
    match tokio::time::timeout(NATS_CONNECT_TIMEOUT, bus::connect(url)).await {
        Ok(Ok(nats)) => Some(nats),
        Ok(Err(error)) => {
            tracing::warn!(%error, "no NATS: answers will not stream");
            None
        }
        Err(_) => {
            tracing::warn!("NATS did not answer in 5 s: answers will not stream");
            None
        }
    }
}
