//! `brain serve`: the HTTP API, the group committer, the relay and the projectors in one
//! process, with an orderly shutdown.
//!
//! Shutdown order matters for "nothing accepted is lost": first the HTTP server stops taking
//! requests and finishes those in flight (WebSocket clients of the live feed are sent a close
//! frame at the same signal, and the feed stops once they are gone); then the committer commits
//! what is queued; then the relay publishes everything committed; then the projectors stop.

mod identity;
pub mod projections_cli;
mod queue_parts;
pub mod read_models;
pub mod verify;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use projections::event_type_stats::{self, EventTypeStats};
use projections::mission_list::{self, MissionList};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentSettings;
use crate::agents::restart::Intensity;
use crate::api::server::HttpLimits;
use crate::api::{self, AppState};
use crate::config::{self, Services};
use crate::eventlog::feed::{Feed, FeedConfig, FeedHandle};
use crate::eventlog::projector::{Runner, RunnerConfig};
use crate::eventlog::projectors::PgProjection;
use crate::eventlog::projectors::event_type_stats::EventTypeStatsWriter;
use crate::eventlog::relay::{Relay, RelayConfig, RelayStatus};
use crate::eventlog::store::{CommitterConfig, EventStore};
use crate::eventlog::{bus, db};
use crate::missions::list::MissionListWriter;
use crate::missions::queue::Queue;
use crate::missions::reaper::ReaperConfig;
use crate::missions::worker::WorkerConfig;
use crate::telemetry;
use identity::{sign_in_host, start_identity};
use projections::mission_queue::Scoring;
use queue_parts::QueueParts;
use tokio::sync::OnceCell;

/// How long shutdown waits for each stage (committer, relay, projectors).
pub const SHUTDOWN_STAGE_TIMEOUT_S: u64 = 15;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub services: Services,
    pub http_addr: SocketAddr,
    pub relay: RelayConfig,
    pub committer: CommitterConfig,
    /// Agent kind of a mission enqueued without one.
    pub default_agent: String,
    /// Agent kinds a mission may name, besides those this process's workers serve: each is
    /// a Redis sorted set and a queue of its own, so the set is fixed by the operator, never
    /// grown by client input.
    pub agent_kinds: Vec<String>,
    /// How the queue weighs priority against waiting time.
    pub scoring: Scoring,
    pub reaper: ReaperConfig,
    /// Workers run inside this process; `None` runs none (use `brain worker` processes).
    /// The agents they run are made by the worker host from `agents.builtin.worker_agents`
    /// (see [`ServeOptions::run_workers`]).
    pub workers: Option<WorkerConfig>,
    /// The live event feed (`GET /ws/events`).
    pub feed: FeedConfig,
    /// The HTTP server's bounds: connections, header and request deadlines, shutdown.
    pub http: HttpLimits,
    /// How long stored command outcomes (idempotency) are kept before they are pruned.
    pub command_outcomes_keep: Duration,
    /// Agent supervision, heartbeat recording, external agents' leases.
    pub agents: AgentSettings,
    /// How often the built-in agents of this process's workers may die before staying down.
    pub intensity: Intensity,
    /// Keys, sessions, and the hosts and origins the API answers.
    pub access: config::serve::AccessSettings,
}

impl ServeOptions {
    /// Defaults for everything but where the services are and where to listen.
    pub fn new(services: Services, http_addr: SocketAddr) -> ServeOptions {
        ServeOptions {
            services,
            http_addr,
            relay: Default::default(),
            committer: Default::default(),
            default_agent: config::DEFAULT_AGENT.to_owned(),
            agent_kinds: config::AGENT_KINDS_DEFAULT.split(',').map(str::to_owned).collect(),
            scoring: Scoring::default(),
            reaper: ReaperConfig::default(),
            workers: None,
            feed: FeedConfig::default(),
            http: HttpLimits::default(),
            command_outcomes_keep: Duration::from_secs(
                config::serve::COMMAND_OUTCOMES_KEEP_H_DEFAULT * 3_600,
            ),
            agents: AgentSettings::default(),
            intensity: Intensity::default(),
            access: Default::default(),
        }
    }
}

impl ServeOptions {
    /// Runs `concurrency` missions at once in this process, with the built-in agents `agents`
    /// names; the worker's settings to adjust.
    pub fn run_workers(
        &mut self,
        agents: crate::config::agents::AgentSpec,
        concurrency: usize,
    ) -> &mut WorkerConfig {
        self.agents.builtin.worker_agents = agents;
        self.workers.insert(WorkerConfig::new(Default::default(), concurrency))
    }
}

/// The kinds missions may name: the configured ones and those the workers serve. The
/// default kind must be one of them, and is warned about when no worker here serves it.
fn agent_kinds(options: &ServeOptions) -> anyhow::Result<BTreeSet<String>> {
    domain::mission::check_agent(&options.default_agent)
        .map_err(|error| anyhow::anyhow!("default agent {:?}: {error}", options.default_agent))?;
    let mut kinds = BTreeSet::new();
    for kind in &options.agent_kinds {
        domain::mission::check_agent(kind)
            .map_err(|error| anyhow::anyhow!("agent kind {kind:?}: {error}"))?;
        kinds.insert(kind.clone());
    }
    let served = match options.workers {
        Some(_) => options.agents.builtin.worker_agents.kinds(),
        None => Vec::new(),
    };
    kinds.extend(served.iter().cloned());
    anyhow::ensure!(
        kinds.len() <= config::AGENT_KINDS_MAX,
        "more than {} agent kinds",
        config::AGENT_KINDS_MAX
    );
    anyhow::ensure!(
        kinds.contains(&options.default_agent),
        "the default agent {:?} is not one of the agent kinds {kinds:?}",
        options.default_agent
    );
    if options.workers.is_some() && !served.contains(&options.default_agent) {
        tracing::warn!(
            default_agent = %options.default_agent,
            ?served,
            "no worker of this process serves the default agent kind"
        );
    }
    Ok(kinds)
}

/// A running server: where it listens, and how to wait for it to finish.
pub struct Server {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub feed: FeedHandle,
    /// The admin key a first start made, for the one place that shows it.
    pub first_key: Option<FirstKey>,
}

/// The admin key a first start made, and a one-time sign-in link for the console.
pub struct FirstKey {
    pub token: String,
    pub sign_in_url: String,
}

impl std::fmt::Debug for FirstKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstKey(***)")
    }
}

/// Connects, migrates, sets up the stream, starts every part and returns once the HTTP
/// listener is bound. The server runs until `shutdown` is cancelled.
pub async fn start(
    mut options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Server> {
    let admin_key = options.access.admin_key.as_deref();
    options.agents.llm.secrets = crate::secrets::of_process(&options.services, admin_key);
    let agent_kinds = agent_kinds(&options)?;
    let services = connect(&options.services).await?;
    let (store, committer) =
        EventStore::start(services.pool.clone(), services.namespace.as_str(), options.committer);
    tokio::spawn(prune_command_outcomes(
        services.pool.clone(),
        options.command_outcomes_keep,
        shutdown.clone(),
    ));
    let stages = Stages::new(shutdown);
    let (relay, relay_status) = start_relay(&services, &options, &stages);
    // The projectors follow the feed: it is the process's one consumer of the bus.
    let feed = Feed::new(
        services.pool.clone(),
        services.nats.clone(),
        services.namespace.clone(),
        options.feed.clone(),
        stages.server.clone(),
    )
    .await?;
    let feed_handle = feed.handle();
    let feed = supervise("live feed", feed.run(stages.feed.clone()).map(Ok), &stages.feed, &stages);
    tokio::spawn(remove_old_consumers(services.nats.clone(), services.namespace.clone()));
    let projectors = start_projectors(&services, &store, &feed_handle, &stages).await?;
    let shared = QueueShared {
        cell: Arc::new(OnceCell::new()),
        watchdog_leading: Arc::default(),
        clock: crate::clock::LeaseClock::connect(services.pool.clone()).await?,
    };
    // The MCP servers agents use, followed in the log; stopped (children killed) once the
    // workers are done with them.
    let mcp = crate::agents::tools::mcp::McpHub::start(
        services.pool.clone(),
        Some(feed_handle.subscribe()),
        stages.workers_done.clone(),
    )
    .await
    .context("loading the MCP servers' configuration")?;
    let queue_parts =
        start_queue_parts(&services, &store, &options, &shared, &feed_handle, &stages, &mcp);
    let listener = TcpListener::bind(options.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.http_addr))?;
    let local_addr = listener.local_addr()?;
    let identity = start_identity(&services, &store, &options, &feed_handle, &stages).await?;
    let first_key = match identity.first_token {
        None => None,
        Some(token) => {
            let code = identity.sign_in_codes.issue(&token.key_id, crate::clock::now_ms())?;
            let sign_in_url = format!("http://{}/#sign-in={code}", sign_in_host(local_addr));
            Some(FirstKey { token: token.expose(), sign_in_url })
        }
    };
    tracing::info!(%local_addr, namespace = %services.namespace, "serving");
    let state = AppState::new(api::AppStateParts {
        keys: identity.keys,
        kinds: identity.kinds,
        sessions: identity.sessions,
        sign_in_codes: identity.sign_in_codes,
        web: Arc::new(api::auth::WebPolicy {
            public_hosts: options.access.public_hosts.clone(),
            allowed_origins: options.access.allowed_origins.clone(),
        }),
        relay: relay_status,
        mcp: Some(mcp),
        ..app_state(services, store, &options, shared, agent_kinds, feed_handle.clone())
    });
    let running = Running { committer, relay, feed, projectors, queue_parts };
    let serving = serve_then_stop(listener, state, options.http, stages, running);
    Ok(Server { local_addr, task: tokio::spawn(serving), feed: feed_handle, first_key })
}

/// The connections every part shares.
struct Connected {
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    redis: redis::Client,
    namespace: crate::config::Namespace,
}

/// Connects to PostgreSQL (and migrates), NATS (and makes sure the stream exists) and
/// prepares the Redis client (connected later, by what needs it).
async fn connect(services: &Services) -> anyhow::Result<Connected> {
    let namespace = services.namespace.clone();
    let pool = db::connect(&services.database_url, services.db_connections_max).await?;
    db::migrate(&pool).await?;
    let nats = bus::connect(&services.nats_url).await?;
    bus::ensure_stream(&bus::jetstream(nats.clone(), 1), &namespace).await?;
    let redis = redis::Client::open(services.redis_url.as_str()).context("REDIS_URL")?;
    Ok(Connected { pool, nats, redis, namespace })
}

/// The stop signal of each stage of the shutdown, and the failures that ended the server.
struct Stages {
    /// Cancelled by a signal, or by a part that failed.
    server: CancellationToken,
    /// Workers stop claiming as soon as shutdown is asked for, and drain while HTTP does.
    workers: CancellationToken,
    workers_done: CancellationToken,
    feed: CancellationToken,
    /// The tree's projector issues commands: it stops with the workers, before the
    /// committer drains (its store handle would keep the committer waiting).
    tree: CancellationToken,
    relay: CancellationToken,
    projectors: CancellationToken,
    failures: Failures,
}

impl Stages {
    fn new(server: CancellationToken) -> Stages {
        Stages {
            workers: server.child_token(),
            server,
            workers_done: CancellationToken::new(),
            feed: CancellationToken::new(),
            tree: CancellationToken::new(),
            relay: CancellationToken::new(),
            projectors: CancellationToken::new(),
            failures: Failures::default(),
        }
    }
}

/// The parts running in the background, awaited in shutdown order.
struct Running {
    committer: JoinHandle<()>,
    relay: JoinHandle<()>,
    feed: JoinHandle<()>,
    projectors: Projectors,
    queue_parts: JoinHandle<()>,
}

/// The PostgreSQL projectors: the tree's apart, since it stops earlier.
struct Projectors {
    tree: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

/// Starts the relay; its status is what `/ready` says of it.
fn start_relay(
    services: &Connected,
    options: &ServeOptions,
    stages: &Stages,
) -> (JoinHandle<()>, RelayStatus) {
    let relay = Relay::new(
        services.pool.clone(),
        services.nats.clone(),
        services.namespace.clone(),
        options.relay.clone(),
    );
    let status = relay.status();
    let token = stages.relay.clone();
    let part = async move { relay.run(token).await.map_err(|error| error.to_string()) };
    (supervise("relay", part, &stages.relay, stages), status)
}

async fn start_projectors(
    services: &Connected,
    store: &EventStore,
    feed: &FeedHandle,
    stages: &Stages,
) -> anyhow::Result<Projectors> {
    let projector = |name| Projector {
        pool: &services.pool,
        feed,
        namespace: &services.namespace,
        stop: &stages.projectors,
        stages,
        name,
    };
    let others = vec![
        projector(event_type_stats::NAME).start(EventTypeStats, EventTypeStatsWriter).await?,
        projector(mission_list::NAME).start(MissionList, MissionListWriter).await?,
        projector(projections::llm_usage::NAME)
            .start(projections::llm_usage::LlmUsage, crate::llm::usage::LlmUsageWriter)
            .await?,
        projector(projections::conversation_list::NAME)
            .start(
                projections::conversation_list::ConversationList,
                crate::agents::conversations::ConversationListWriter,
            )
            .await?,
    ];
    let tree_store = crate::missions::tree_store::TreeStore {
        pool: services.pool.clone(),
        store: store.clone(),
    };
    let tree = Projector { stop: &stages.tree, ..projector(projections::mission_tree::NAME) }
        .start_with(projections::mission_tree::MissionTree, tree_store)
        .await?;
    Ok(Projectors { tree, others })
}

/// What the queue's parts and the API share: the queue once Redis has answered, whether
/// this process leads the watchdog, the database's clock.
struct QueueShared {
    cell: Arc<OnceCell<Queue>>,
    watchdog_leading: Arc<std::sync::atomic::AtomicBool>,
    clock: crate::clock::LeaseClock,
}

/// Starts what lives on the Redis queue once Redis answers, so that a Redis that is down at
/// start-up shows in `/ready` instead of stopping the process.
fn start_queue_parts(
    services: &Connected,
    store: &EventStore,
    options: &ServeOptions,
    shared: &QueueShared,
    feed: &FeedHandle,
    stages: &Stages,
    mcp: &crate::agents::tools::mcp::McpHub,
) -> JoinHandle<()> {
    let parts = QueueParts {
        mcp: mcp.clone(),
        redis: services.redis.clone(),
        cell: shared.cell.clone(),
        store: store.clone(),
        pool: services.pool.clone(),
        nats: services.nats.clone(),
        feed: feed.clone(),
        namespace: services.namespace.clone(),
        scoring: options.scoring,
        reaper: options.reaper.clone(),
        agents: options.agents.clone(),
        intensity: options.intensity,
        clock: shared.clock.clone(),
        watchdog_leading: shared.watchdog_leading.clone(),
        workers: options.workers.clone(),
    };
    let part =
        parts.run(stages.projectors.clone(), stages.workers.clone(), stages.workers_done.clone());
    supervise("queue", part, &stages.projectors, stages)
}

fn app_state(
    services: Connected,
    store: EventStore,
    options: &ServeOptions,
    shared: QueueShared,
    agent_kinds: BTreeSet<String>,
    feed: FeedHandle,
) -> api::AppStateParts {
    let redis_connection = Arc::new(OnceCell::new());
    let rates = crate::identity::rate::KeyRates::new(
        services.redis.clone(),
        redis_connection.clone(),
        &services.namespace,
        options.access.key_rpm_default,
    );
    let verify_models = verify::model_checks_later(
        store.pool().clone(),
        services.redis.clone(),
        services.namespace.clone(),
        options.scoring,
    );
    api::AppStateParts {
        verify_models,
        store,
        nats: services.nats,
        redis: services.redis,
        redis_connection,
        queue: shared.cell,
        namespace: services.namespace,
        metrics: telemetry::metrics(),
        default_agent: options.default_agent.as_str().into(),
        agent_kinds: Arc::new(agent_kinds),
        feed,
        clock: shared.clock,
        agents: Arc::new(options.agents.clone()),
        redactor: crate::secrets::Redactor::of(&options.agents.llm),
        watchdog_leading: shared.watchdog_leading,
        backoff: options.reaper.backoff,
        request_timeout: options.http.request_timeout(),
        llm: Arc::new(OnceCell::new()),
        keys: Default::default(),
        kinds: Default::default(),
        mcp: None,
        sessions: crate::identity::session::Sessions::unloaded(),
        sign_in_codes: Default::default(),
        web: Default::default(),
        relay: Default::default(),
        rates,
    }
}

/// Serves HTTP until shutdown, then stops the parts in order (see the module doc): the
/// server's error, or the failures that ended it.
async fn serve_then_stop(
    listener: TcpListener,
    state: AppState,
    http: HttpLimits,
    stages: Stages,
    running: Running,
) -> anyhow::Result<()> {
    let clients = state.feed.clone();
    let app = api::router(state, http.request_timeout());
    api::server::serve(listener, app, http, stages.server.clone()).await.context("HTTP server")?;
    let stage = Duration::from_secs(SHUTDOWN_STAGE_TIMEOUT_S);
    let within = |what: &'static str, done| async move {
        if tokio::time::timeout(stage, done).await.is_err() {
            tracing::error!("{what} did not stop in time");
        }
    };
    // WebSocket sessions outlive the HTTP server (it does not track upgraded connections);
    // they saw the same signal and are closing their clients.
    if tokio::time::timeout(stage, clients.clients_gone()).await.is_err() {
        tracing::error!(clients = clients.clients(), "WebSocket clients did not close in time");
    }
    drop(clients);
    stages.feed.cancel();
    within("live feed", running.feed.map(drop).boxed()).await;
    // The workers, the reaper and the watchdog stop issuing commands, then the router (and
    // with it every event store handle) is gone: the committer drains.
    stages.workers.cancel();
    within("workers", stages.workers_done.cancelled_owned().boxed()).await;
    stages.tree.cancel();
    within("the mission tree's projector", running.projectors.tree.map(drop).boxed()).await;
    within("committer", running.committer.map(drop).boxed()).await;
    stages.relay.cancel();
    within("relay", running.relay.map(drop).boxed()).await;
    stages.projectors.cancel();
    let mut projectors = running.projectors.others;
    projectors.push(running.queue_parts);
    within("projectors", futures::future::join_all(projectors).map(drop).boxed()).await;
    tracing::info!("stopped");
    let failures = stages.failures.lock().expect("not poisoned").clone();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("stopped because a part failed: {}", failures.join("; ")))
    }
}

/// How often stored command outcomes past their window are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3_600);

/// Prunes stored command outcomes older than `keep`, a minute after start and then every
/// [`PRUNE_INTERVAL`], until `shutdown`. Every serve prunes; concurrent deletes skip each
/// other's rows. A failed round is logged and tried again at the next.
async fn prune_command_outcomes(pool: sqlx::PgPool, keep: Duration, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = PRUNE_INTERVAL;
        match crate::eventlog::store::prune_command_outcomes(&pool, keep).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned command outcomes past their window"),
            Err(error) => tracing::warn!(%error, "cannot prune command outcomes"),
        }
    }
}

type Failures = Arc<std::sync::Mutex<Vec<String>>>;

/// What starting one PostgreSQL projector under supervision needs.
struct Projector<'a> {
    pool: &'a sqlx::PgPool,
    feed: &'a FeedHandle,
    namespace: &'a crate::config::Namespace,
    stop: &'a CancellationToken,
    stages: &'a Stages,
    name: &'static str,
}

impl Projector<'_> {
    async fn start<P, W>(
        self,
        projector: P,
        writer: W,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>>
    where
        P: projections::Projector,
        W: crate::eventlog::projectors::PgWriter<P::Change>,
    {
        let store = PgProjection::live(self.pool.clone(), writer, self.name);
        self.start_with(projector, store).await
    }

    /// [`Projector::start`] for a read model whose store is not a set of tables alone.
    async fn start_with<P, S>(
        self,
        projector: P,
        store: S,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>>
    where
        P: projections::Projector,
        S: projections::ProjectionStore<P::Change> + Sync + 'static,
    {
        let runner = Runner::new(
            projector,
            store,
            self.pool.clone(),
            self.feed.clone(),
            self.namespace.clone(),
            RunnerConfig::default(),
        )
        .await?;
        let part = runner.run(self.stop.clone()).map(Ok);
        let name = format!("projector {}", self.name);
        Ok(supervise(name, part, self.stop, self.stages))
    }
}

/// Runs a background part of the server (relay, projector). If it ends before it is asked to
/// (by a panic or a return), the whole server shuts down and reports the failure: a process
/// without its relay or a projector would look healthy while doing nothing, and whatever
/// supervises the process restarting it is the better outcome.
fn supervise(
    name: impl Into<String>,
    part: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    stop: &CancellationToken,
    stages: &Stages,
) -> JoinHandle<()> {
    let name: String = name.into();
    let (stop, server_shutdown, failures) =
        (stop.clone(), stages.server.clone(), stages.failures.clone());
    tokio::spawn(async move {
        let outcome = std::panic::AssertUnwindSafe(part).catch_unwind().await;
        if stop.is_cancelled() {
            return;
        }
        let why = match outcome {
            Ok(Ok(())) => "ended on its own".to_owned(),
            Ok(Err(error)) => error,
            Err(panic) => {
                crate::telemetry::panic_message(&*panic).unwrap_or_else(|| "panicked".to_owned())
            }
        };
        tracing::error!(part = %name, %why, "a part of the server stopped; shutting down");
        failures.lock().expect("not poisoned").push(format!("{name}: {why}"));
        server_shutdown.cancel();
    })
}

/// Deletes the bus consumers projectors followed in earlier releases; a failure only leaves
/// them in place.
async fn remove_old_consumers(nats: async_nats::Client, namespace: crate::config::Namespace) {
    match crate::eventlog::projector::remove_old_consumers(nats, &namespace).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "removed the projectors' old bus consumers"),
        Err(error) => tracing::warn!(%error, "the projectors' old bus consumers stay"),
    }
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
