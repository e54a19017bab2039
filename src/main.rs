//! The `brain` command line: parses arguments and hands over to the library.

use std::net::SocketAddr;

use anyhow::Context;
use brain::config::Services;
use brain::serve::{self, ServeOptions};
use brain::telemetry::{self, LogFormat};
use brain::{bench, db};
use clap::{Parser, Subcommand};
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
enum Command {
    /// Run the HTTP API, the group committer, the relay and the projectors.
    Serve {
        #[command(flatten)]
        services: Services,
        /// Address the HTTP API listens on.
        #[arg(long, env = "BRAIN_HTTP_ADDR", default_value = "127.0.0.1:8000")]
        http_addr: SocketAddr,
        /// Agent kind of a mission enqueued without one.
        #[arg(long, env = "BRAIN_DEFAULT_AGENT", default_value = serve::DEFAULT_AGENT)]
        default_agent: String,
        #[command(flatten)]
        feed: brain::feed::FeedConfig,
    },
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate {
        #[command(flatten)]
        services: Services,
    },
    /// Measure this machine: see `brain bench --help`.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { services, http_addr, default_agent, feed } => {
            let shutdown = CancellationToken::new();
            serve::cancel_on_signal(shutdown.clone());
            let options = ServeOptions {
                services,
                http_addr,
                relay: Default::default(),
                committer: Default::default(),
                default_agent,
                feed,
            };
            let server = serve::start(options, shutdown).await?;
            // One plain line on stdout, for scripts and tests that start on port 0.
            println!("brain serve listening on http://{}", server.local_addr);
            server.task.await.context("server task")?
        }
        Command::Migrate { services } => {
            let pool = db::connect(&services.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bench { bench } => bench.run().await,
    }
}
