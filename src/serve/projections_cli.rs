//! `brain projections list | status | rebuild`: the read models of [`super::read_models`]
//! for people (a table) and scripts (`--json`). Exit codes: 0 done, 2 could not run (a
//! service down, a model that cannot be rebuilt); the reason goes to stderr.

use std::time::{Duration, Instant};

use projections::mission_queue::Scoring;

use super::read_models::{self, Models, READ_MODELS, ReadModel};
use crate::config::Services;
use crate::config::serve::{QUEUE_AGING_S_DEFAULT, QUEUE_WEIGHTS_DEFAULT, parse_weights};

/// Longest sample `status` may take for its rates.
pub const SAMPLE_MS_MAX: u64 = 60_000;

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCli {
    /// The read models: name, where each lives, what it holds, whether it rebuilds.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Each read model's position, lag behind the log (events and seconds), rate and last
    /// reset.
    Status {
        #[command(flatten)]
        services: Services,
        /// How long positions are watched for the rates, in milliseconds.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=SAMPLE_MS_MAX))]
        sample_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild read models from the log beside the live ones, then swap them in; serves keep
    /// serving the old model until the swap, and follow the new one after it.
    Rebuild {
        #[command(flatten)]
        services: Services,
        /// The read models to rebuild (see `brain projections list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every read model that can be rebuilt.
        #[arg(long)]
        all: bool,
        /// The queue's priority weights, as its serves have them (`BRAIN_QUEUE_WEIGHTS`).
        #[arg(long, env = "BRAIN_QUEUE_WEIGHTS", default_value = QUEUE_WEIGHTS_DEFAULT, value_parser = parse_weights)]
        queue_weights: [u32; 4],
        /// The queue's aging, as its serves have it (`BRAIN_QUEUE_AGING_S`).
        #[arg(long, env = "BRAIN_QUEUE_AGING_S", default_value_t = QUEUE_AGING_S_DEFAULT)]
        queue_aging_s: u64,
        #[arg(long)]
        json: bool,
    },
}

impl ProjectionsCli {
    /// Runs the subcommand; on failure, prints why and exits with 2.
    pub async fn run(self) -> anyhow::Result<()> {
        if let Err(error) = self.execute().await {
            eprintln!("brain projections: {error:#}");
            std::process::exit(2);
        }
        Ok(())
    }

    async fn execute(self) -> anyhow::Result<()> {
        match self {
            ProjectionsCli::List { json } => list(json),
            ProjectionsCli::Status { services, sample_ms, json } => {
                let models = Models::connect(&services).await?;
                let statuses = models.status(Duration::from_millis(sample_ms)).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&statuses)?);
                    return Ok(());
                }
                println!(
                    "{:<18}  {:<8}  {:>10}  {:>10}  {:>9}  {:>9}  last reset",
                    "read model", "home", "position", "lag", "lag s", "events/s"
                );
                for status in statuses {
                    let reset = status.last_reset.map_or("-".to_owned(), |reset| {
                        format!("{} {} at {}", reset.at, reset.reason, reset.position)
                    });
                    println!(
                        "{:<18}  {:<8}  {:>10}  {:>10}  {:>9.1}  {:>9.0}  {reset}",
                        status.name,
                        home(status.home),
                        status.position,
                        status.lag_events,
                        status.lag_seconds,
                        status.rate
                    );
                }
                Ok(())
            }
            ProjectionsCli::Rebuild {
                services,
                names,
                all,
                queue_weights,
                queue_aging_s,
                json,
            } => {
                let chosen: Vec<&ReadModel> = if all {
                    READ_MODELS.iter().filter(|model| model.rebuilds).collect()
                } else {
                    names.iter().map(|name| read_models::named(name)).collect::<Result<_, _>>()?
                };
                let scoring = Scoring {
                    weights: queue_weights,
                    aging_ms: queue_aging_s.saturating_mul(1_000),
                };
                let models = Models::connect(&services).await?;
                for model in chosen {
                    let before = models.position(model).await?;
                    eprintln!("rebuilding {} (live at {before})…", model.name);
                    let started = Instant::now();
                    let reached = models.rebuild(model, scoring).await?;
                    let seconds = started.elapsed().as_secs_f64();
                    let rate = reached as f64 / seconds.max(f64::EPSILON);
                    if json {
                        let line = serde_json::json!({
                            "name": model.name, "position": reached,
                            "seconds": seconds, "events_per_second": rate,
                        });
                        println!("{line}");
                    } else {
                        println!(
                            "{:<18}  rebuilt to {reached} in {seconds:.1} s ({rate:.0} events/s of the log)",
                            model.name
                        );
                    }
                }
                Ok(())
            }
        }
    }
}

fn home(home: read_models::Home) -> &'static str {
    match home {
        read_models::Home::Postgres => "postgres",
        read_models::Home::Redis => "redis",
    }
}

fn list(json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(READ_MODELS)?);
        return Ok(());
    }
    println!("{:<18}  {:<8}  {:<8}  holds", "read model", "home", "rebuilds");
    for model in READ_MODELS {
        let rebuilds = if model.rebuilds { "yes" } else { "no" };
        println!("{:<18}  {:<8}  {:<8}  {}", model.name, home(model.home), rebuilds, model.holds);
    }
    Ok(())
}
