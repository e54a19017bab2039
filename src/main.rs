//! The `brain` command line: parses arguments and hands over to the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use brain::bench;
use brain::config::Services;
use brain::eventlog::db;
use brain::eventlog::store::EventStore;
use brain::missions::agent::Agents;
use brain::missions::queue::Queue;
use brain::missions::worker::Tuning;
use brain::serve::{self, ServeOptions};
use brain::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use projections::mission_queue::Scoring;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "brain", version, about = "BRAiN: event-sourced backend for AI agent systems")]
struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "BRAIN_LOG_FORMAT", value_enum, default_value = "pretty", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up, never moved around")]
enum Command {
    /// Run the HTTP API, the group committer, the relay and the projectors.
    Serve {
        #[command(flatten)]
        services: Services,
        /// Address the HTTP API listens on.
        #[arg(long, env = "BRAIN_HTTP_ADDR", default_value = "127.0.0.1:8000")]
        http_addr: SocketAddr,
        /// Agent kind of a mission enqueued without one.
        #[arg(long, env = "BRAIN_DEFAULT_AGENT", default_value = brain::config::DEFAULT_AGENT)]
        default_agent: String,
        /// Missions this process runs at once (0: run none here, only `brain worker`s do).
        #[arg(long, env = "BRAIN_WORKERS", default_value_t = 4)]
        workers: usize,
        /// Agent kinds this process's workers serve: `kind[=built-in agent],...`.
        #[arg(long, env = "BRAIN_WORKER_AGENTS", default_value = brain::config::WORKER_AGENTS_DEFAULT, value_parser = brain::agents::parse)]
        worker_agents: Agents,
        /// Agent kinds a mission may name (besides those the workers serve), comma-separated.
        #[arg(long, env = "BRAIN_AGENT_KINDS", default_value = brain::config::AGENT_KINDS_DEFAULT, value_delimiter = ',')]
        agent_kinds: Vec<String>,
        /// Waiting time that makes a mission worth one priority level more, in seconds.
        #[arg(long, env = "BRAIN_QUEUE_AGING_S", default_value_t = 300)]
        queue_aging_s: u64,
        /// Weights of low, normal, high and critical, in priority levels.
        #[arg(long, env = "BRAIN_QUEUE_WEIGHTS", default_value = "0,1,2,4", value_parser = parse_weights)]
        queue_weights: [u32; 4],
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        feed: brain::eventlog::feed::FeedConfig,
        #[command(flatten)]
        http: brain::api::server::HttpLimits,
        /// Hours a command's outcome is kept for idempotent repeats; older ones are pruned.
        #[arg(long, env = "BRAIN_COMMAND_OUTCOMES_KEEP_H", default_value_t = brain::eventlog::store::COMMAND_OUTCOMES_KEEP_H_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
        command_outcomes_keep_h: u64,
        #[command(flatten)]
        agents: brain::agents::AgentSettings,
        #[command(flatten)]
        restarts: brain::agents::RestartSettings,
    },
    /// Run missions: claim them from the queue, run their agent, report the outcome.
    Worker {
        #[command(flatten)]
        services: Services,
        /// Missions run at once.
        #[arg(long, env = "BRAIN_WORKER_CONCURRENCY", default_value_t = 4)]
        concurrency: usize,
        /// Agent kinds served: `kind[=built-in agent],...` (`coder=echo` runs coder missions
        /// with the echo agent).
        #[arg(long, env = "BRAIN_WORKER_AGENTS", default_value = brain::config::WORKER_AGENTS_DEFAULT, value_parser = brain::agents::parse)]
        agents: Agents,
        /// This worker's name in mission events and the status view (default: host-pid-random).
        #[arg(long, env = "BRAIN_WORKER_ID")]
        worker_id: Option<String>,
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        restarts: brain::agents::RestartSettings,
    },
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate {
        #[command(flatten)]
        services: Services,
    },
    /// Replay or fork a recorded run: see `brain missions --help`.
    Missions {
        #[command(subcommand)]
        missions: brain::agents::replay::MissionsCli,
    },
    /// Measure this machine: see `brain bench --help`.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

/// glibc's allocator took a quarter of `brain serve`'s CPU under load (fragmented frees of
/// request and event buffers, in `perf`); mimalloc does the same work with less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse_weights(value: &str) -> Result<[u32; 4], String> {
    let weights: Vec<u32> = value
        .split(',')
        .map(|weight| weight.trim().parse::<u32>().map_err(|error| format!("{weight:?}: {error}")))
        .collect::<Result<_, _>>()?;
    weights.try_into().map_err(|_| "four weights: low,normal,high,critical".to_owned())
}

fn main() -> anyhow::Result<()> {
    // One TLS stack in the build (ring): installed once, before any HTTP client exists (the
    // agent lists parsed from the command line build the LLM gateway's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            services,
            http_addr,
            default_agent,
            agent_kinds,
            workers,
            worker_agents,
            queue_aging_s,
            queue_weights,
            tuning,
            feed,
            http,
            command_outcomes_keep_h,
            agents,
            restarts,
        } => {
            let shutdown = CancellationToken::new();
            serve::cancel_on_signal(shutdown.clone());
            let mut options = ServeOptions::new(services, http_addr);
            options.default_agent = default_agent;
            options.agent_kinds = agent_kinds;
            options.scoring = Scoring { weights: queue_weights, aging_ms: queue_aging_s * 1_000 };
            options.reaper.backoff = tuning.backoff();
            options.workers = (workers > 0 && !worker_agents.is_empty())
                .then(|| tuning.worker(worker_agents, workers));
            options.feed = feed;
            options.http = http;
            options.command_outcomes_keep = Duration::from_secs(command_outcomes_keep_h * 3_600);
            options.agents = agents;
            options.intensity = restarts.intensity();
            let server = serve::start(options, shutdown).await?;
            // One plain line on stdout, for scripts and tests that start on port 0.
            println!("brain serve listening on http://{}", server.local_addr);
            server.task.await.context("server task")?
        }
        Command::Worker { services, concurrency, agents, worker_id, tuning, restarts } => {
            let shutdown = CancellationToken::new();
            serve::cancel_on_signal(shutdown.clone());
            let mut config = tuning.worker(agents, concurrency);
            if let Some(worker_id) = worker_id {
                config.worker_id = worker_id;
            }
            let pool = db::connect(&services.database_url, services.db_connections_max).await?;
            let redis = redis::Client::open(services.redis_url.as_str()).context("REDIS_URL")?;
            let queue = Queue::connect(&redis, &services.namespace).await?;
            let (store, committer) =
                EventStore::start(pool, services.namespace.as_str(), Default::default());
            println!("brain worker {} running", config.worker_id);
            // Answers stream on NATS as they are generated; without NATS the worker still
            // runs, its answers arriving whole.
            let connect = brain::eventlog::bus::connect(&services.nats_url);
            let nats = match tokio::time::timeout(Duration::from_secs(5), connect).await {
                Ok(Ok(nats)) => Some(nats),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "no NATS: answers will not stream");
                    None
                }
                Err(_) => {
                    tracing::warn!("NATS did not answer in 5 s: answers will not stream");
                    None
                }
            };
            brain::agents::host::run_worker(
                store,
                queue,
                services.namespace,
                config,
                brain::agents::host::Hosting {
                    intensity: restarts.intensity(),
                    record_every: brain::agents::heartbeat::RECORD_EVERY_DEFAULT,
                    tokens: nats,
                },
                shutdown,
            )
            .await?;
            // The last handle is gone with the workers: the committer drains and ends.
            committer.await.context("committer")?;
            Ok(())
        }
        Command::Migrate { services } => {
            let pool = db::connect(&services.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Missions { missions } => missions.run().await,
        Command::Bench { bench } => bench.run().await,
    }
}
