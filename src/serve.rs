//! `brain serve`: the HTTP API, the group committer, the relay and the projectors in one
//! process, with an orderly shutdown.
//!
//! Shutdown order matters for "nothing accepted is lost": first the HTTP server stops taking
//! requests and finishes those in flight; then the committer commits what is queued; then the
//! relay publishes everything committed; then the projectors stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use projections::event_type_stats::{self, EventTypeStats};
use projections::mission_list::{self, MissionList};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Services;
use crate::event_store::{CommitterConfig, EventStore};
use crate::projector::{Runner, RunnerConfig};
use crate::projectors::PgProjection;
use crate::projectors::event_type_stats::EventTypeStatsWriter;
use crate::projectors::mission_list::MissionListWriter;
use crate::relay::{Relay, RelayConfig};
use crate::{bus, db, telemetry};

/// How long shutdown waits for each stage (committer, relay, projectors).
pub const SHUTDOWN_STAGE_TIMEOUT_S: u64 = 15;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub services: Services,
    pub http_addr: SocketAddr,
    pub relay: RelayConfig,
    pub committer: CommitterConfig,
}

/// A running server: where it listens, and how to wait for it to finish.
pub struct Server {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Connects, migrates, sets up the stream, starts every part and returns once the HTTP
/// listener is bound. The server runs until `shutdown` is cancelled.
pub async fn start(options: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let services = &options.services;
    let namespace = services.namespace.clone();
    let pool = db::connect(&services.database_url, services.db_connections_max).await?;
    db::migrate(&pool).await?;
    let nats = bus::connect(&services.nats_url).await?;
    bus::ensure_stream(&bus::jetstream(nats.clone(), 1), &namespace).await?;
    let redis = redis::Client::open(services.redis_url.as_str()).context("REDIS_URL")?;

    let (store, committer) = EventStore::start(pool.clone(), namespace.as_str(), options.committer);
    let relay_shutdown = CancellationToken::new();
    let relay = Relay::new(pool.clone(), nats.clone(), namespace.clone(), options.relay.clone());
    let relay = tokio::spawn(relay.run(relay_shutdown.clone()));
    let projectors_shutdown = CancellationToken::new();
    let stats = Runner::new(
        EventTypeStats,
        PgProjection::live(pool.clone(), EventTypeStatsWriter, event_type_stats::NAME),
        pool.clone(),
        nats.clone(),
        namespace.clone(),
        RunnerConfig::default(),
    )
    .await?;
    let stats = tokio::spawn(stats.run(projectors_shutdown.clone()));
    let missions = Runner::new(
        MissionList,
        PgProjection::live(pool.clone(), MissionListWriter, mission_list::NAME),
        pool.clone(),
        nats.clone(),
        namespace.clone(),
        RunnerConfig::default(),
    )
    .await?;
    let missions = tokio::spawn(missions.run(projectors_shutdown.clone()));

    let state = AppState {
        store,
        nats,
        redis,
        redis_connection: Arc::new(tokio::sync::OnceCell::new()),
        metrics: telemetry::metrics(),
    };
    let listener = TcpListener::bind(options.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.http_addr))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, %namespace, "serving");

    let task = tokio::spawn(async move {
        let app = api::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server")?;
        // The router (and with it every event store handle) is gone: the committer drains.
        let stage = Duration::from_secs(SHUTDOWN_STAGE_TIMEOUT_S);
        if tokio::time::timeout(stage, committer).await.is_err() {
            tracing::error!("committer did not finish in time");
        }
        relay_shutdown.cancel();
        match tokio::time::timeout(stage, relay).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "relay stopped with an error"),
            Ok(Err(error)) => tracing::error!(%error, "relay task failed"),
            Err(_) => tracing::error!("relay did not flush in time"),
        }
        projectors_shutdown.cancel();
        let projectors = async { tokio::join!(stats, missions) };
        if tokio::time::timeout(stage, projectors).await.is_err() {
            tracing::error!("projectors did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Server { local_addr, task })
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}
