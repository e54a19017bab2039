//! The `brain` command line: every subcommand's arguments, each also settable by an
//! environment variable, parsed once at start-up into the typed configuration of
//! [`crate::config`], and the hand-over to the library. A bad value stops the process before
//! anything starts, with clap's message, which says what the argument accepts, and the
//! environment variable that sets it.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use projections::mission_queue::Scoring;
use tokio_util::sync::CancellationToken;

use crate::config::Services;
use crate::config::agents::{AgentSettings, RestartSettings};
use crate::config::serve::ServeSettings;
use crate::config::worker::Tuning;
use crate::eventlog::db;
use crate::missions::agent::Agents;
use crate::serve::{self, ServeOptions};
use crate::telemetry::LogFormat;

pub const LOG_FORMAT_DEFAULT: &str = "pretty";

#[derive(Debug, Parser)]
#[command(name = "brain", version, about = "BRAiN: event-sourced backend for AI agent systems")]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "BRAIN_LOG_FORMAT", value_enum, default_value = LOG_FORMAT_DEFAULT, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up, never moved around")]
pub enum Command {
    /// Run the HTTP API, the group committer, the relay and the projectors.
    Serve(ServeArgs),
    /// Run missions: claim them from the queue, run their agent, report the outcome.
    Worker(crate::worker::WorkerOptions),
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate {
        #[command(flatten)]
        services: Services,
    },
    /// Missions on a running serve (list, show, enqueue, watch, cancel, retry), and replay or
    /// fork of a recorded run: see `brain missions --help`.
    Missions {
        #[command(subcommand)]
        missions: crate::client::missions::MissionsCli,
    },
    /// Agents on a running serve (list, show, stop, start, restart): see `brain agents --help`.
    Agents {
        #[command(subcommand)]
        agents: crate::client::agents::AgentsCli,
    },
    /// Tools for the event log itself (its head, the event chain): see `brain events --help`.
    Events {
        #[command(subcommand)]
        events: crate::eventlog::cli::EventsCli,
    },
    /// Make, list, rotate and revoke API keys against the store: see `brain keys --help`.
    Keys {
        #[command(subcommand)]
        keys: crate::identity::cli::KeysCli,
    },
    /// The read models: list them, see how far behind the log each is, rebuild one beside
    /// the live one: see `brain projections --help`.
    Projections {
        #[command(subcommand)]
        projections: crate::serve::projections_cli::ProjectionsCli,
    },
    /// An MCP server on stdin/stdout for local clients, relaying to a running serve's
    /// `/mcp` (`BRAIN_URL`, with the key in `BRAIN_API_KEY`).
    Mcp {
        #[command(flatten)]
        remote: crate::client::Remote,
    },
    /// Measure this machine: see `brain bench --help`.
    Bench {
        #[command(subcommand)]
        bench: crate::bench::Bench,
    },
}

/// Everything `brain serve` is configured with.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub services: Services,
    #[command(flatten)]
    pub serve: ServeSettings,
    #[command(flatten)]
    pub access: crate::config::serve::AccessSettings,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub feed: crate::eventlog::feed::FeedConfig,
    #[command(flatten)]
    pub http: crate::api::server::HttpLimits,
    #[command(flatten)]
    pub agents: AgentSettings,
    #[command(flatten)]
    pub restarts: RestartSettings,
}

impl ServeArgs {
    /// The options `serve::start` takes.
    pub fn options(self) -> ServeOptions {
        let ServeArgs { services, serve, access, tuning, feed, http, agents, restarts } = self;
        let mut options = ServeOptions::new(services, serve.http_addr);
        options.default_agent = serve.default_agent;
        options.agent_kinds = serve.agent_kinds;
        options.scoring =
            Scoring { weights: serve.queue_weights, aging_ms: serve.queue_aging_s * 1_000 };
        options.reaper.backoff = tuning.backoff();
        let runs_missions = serve.workers > 0 && !agents.builtin.worker_agents.is_empty();
        options.workers = runs_missions.then(|| tuning.worker(Agents::default(), serve.workers));
        options.feed = feed;
        options.http = http;
        options.command_outcomes_keep = Duration::from_secs(serve.command_outcomes_keep_h * 3_600);
        options.agents = agents;
        options.intensity = restarts.intensity();
        options.access = access;
        options
    }
}

impl Cli {
    /// Parses the process's arguments and environment; on a bad value, prints what is wrong
    /// (and which environment variable set it) and exits.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// Parses `args` (the program's name first) and the environment. A value refused names
    /// the environment variable that sets it, since that is usually where it came from.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = crate::config::unset_empty_variables(Cli::command());
        let parsed = command
            .try_get_matches_from_mut(args)
            .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
        parsed.map_err(|error| with_variable(error, &command))
    }

    /// Runs the subcommand to its end.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => {
                let shutdown = CancellationToken::new();
                serve::cancel_on_signal(shutdown.clone());
                let server = serve::start(args.options(), shutdown).await?;
                // One plain line on stdout, for scripts and tests that start on port 0.
                println!("brain serve listening on http://{}", server.local_addr);
                if let Some(first) = &server.first_key {
                    // Shown once, here, and never logged: only its hash is kept.
                    println!(
                        "\nNo key existed, so an admin key was made. It is shown this once:\n\n    {}\n\n\
                         Sign in to the console within 15 minutes at (good once):\n\n    {}\n\n\
                         Make more keys with `brain keys create` or POST /api/keys.\n",
                        first.token, first.sign_in_url
                    );
                }
                server.task.await.context("server task")?
            }
            Command::Worker(options) => {
                let shutdown = CancellationToken::new();
                serve::cancel_on_signal(shutdown.clone());
                crate::worker::run(options, shutdown).await
            }
            Command::Migrate { services } => {
                let pool = db::connect(&services.database_url, 2).await?;
                db::migrate(&pool).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Missions { missions } => missions.run().await,
            Command::Agents { agents } => agents.run().await,
            Command::Events { events: crate::eventlog::cli::EventsCli::Verify(args) } => {
                serve::verify::run_cli(args).await
            }
            Command::Events { events } => events.run().await,
            Command::Keys { keys } => keys.run().await,
            Command::Projections { projections } => projections.run().await,
            Command::Mcp { remote } => crate::api::mcp::stdio::run(&remote.url, remote.key).await,
            Command::Bench { bench } => bench.run().await,
        }
    }
}

/// `error`, with a tip naming the environment variable of the argument it refused.
fn with_variable(mut error: clap::Error, command: &clap::Command) -> clap::Error {
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return error;
    }
    let Some(ContextValue::String(refused)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let Some(variable) = variable_of(command, refused) else { return error };
    let tip = format!("{variable} (or {}) sets this", refused.split(' ').next().unwrap_or(refused));
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    error
}

/// The environment variable of the argument clap names `shown` (`--agent-steps-max <N>`),
/// in any subcommand.
fn variable_of(command: &clap::Command, shown: &str) -> Option<String> {
    let long = shown.split(' ').next()?.strip_prefix("--")?;
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| variable_of(sub, shown)))
}
