//! `brain events …`: tools that work on the event log itself, against the store directly (no
//! server needed). `head` prints where the log and its chain stand; `verify-chain` checks the
//! chain (decision 0046). Exit status: 0 done and clean, 1 findings, 2 could not run.

use std::io::Write;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::chain::{self, Anchor, Progress, Report};
use super::db;

/// Exit status of a check that found something.
pub const FINDINGS_EXIT: i32 = 1;
/// Exit status of a command that could not run (no database, no answer, an old schema).
pub const FAILED_EXIT: i32 = 2;
/// How often `verify-chain` prints its progress line, once it has run this long.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Subcommand)]
pub enum EventsCli {
    /// Print the log's last position and the event chain's hash there (keep it elsewhere:
    /// `verify-chain --expect POSITION:HASH` checks it later).
    Head {
        /// PostgreSQL database holding the event store.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = crate::config::DATABASE_URL_DEFAULT)]
        database_url: String,
        /// Print `{"position", "chain_position", "chain_hash"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the event chain from the stored events and name the first position whose
    /// content no longer matches its hash. Exit 0 clean, 1 findings, 2 could not run.
    VerifyChain {
        /// PostgreSQL database holding the event store.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = crate::config::DATABASE_URL_DEFAULT)]
        database_url: String,
        /// A head recorded earlier (`POSITION:HASH`, as `brain events head` prints it): the
        /// chain must still pass through it.
        #[arg(long)]
        expect: Option<Anchor>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the log (or part of it) as NDJSON, one event per line with its chain hash, then
    /// a trailer line with the count and the last hash.
    Export(super::transfer::ExportArgs),
    /// Read an export into an empty store (or one whose head it continues), checking its
    /// chain: a broken file is refused with the position at fault, and nothing is written.
    /// Exit 0 imported, 1 refused, 2 could not run.
    Import(super::transfer::ImportArgs),
    /// Check that the log, its chain, the JetStream stream and every read model agree: each
    /// check reported by name (ok, findings, skipped, error) with the first findings. Exit 0
    /// clean, 1 findings, 2 could not run.
    Verify(VerifyArgs),
}

/// The arguments of `brain events verify` (run by `serve::verify`, which knows every read
/// model).
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub services: crate::config::Services,
    /// Only these checks, comma-separated: positions, stream_versions, chain, jetstream, or a
    /// read model's name (`brain projections list`).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Compare this many JetStream messages at random positions instead of every one.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// The queue's priority weights, as its serves have them (`BRAIN_QUEUE_WEIGHTS`).
    #[arg(long, env = "BRAIN_QUEUE_WEIGHTS", default_value = crate::config::serve::QUEUE_WEIGHTS_DEFAULT, value_parser = crate::config::serve::parse_weights)]
    pub queue_weights: [u32; 4],
    /// The queue's aging, as its serves have it (`BRAIN_QUEUE_AGING_S`).
    #[arg(long, env = "BRAIN_QUEUE_AGING_S", default_value_t = crate::config::serve::QUEUE_AGING_S_DEFAULT)]
    pub queue_aging_s: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl EventsCli {
    /// Runs the command and exits with its status.
    pub async fn run(self) -> anyhow::Result<()> {
        let status = match self.execute().await {
            Ok(status) => status,
            Err(error) => {
                eprintln!("brain events: could not run: {error:#}");
                FAILED_EXIT
            }
        };
        if status != 0 {
            std::process::exit(status);
        }
        Ok(())
    }

    async fn execute(self) -> anyhow::Result<i32> {
        match self {
            EventsCli::Verify(_) => anyhow::bail!("`events verify` is run by serve::verify"),
            EventsCli::Head { database_url, json } => {
                let pool = connect(&database_url).await?;
                let head = chain::head(&pool).await?;
                if json {
                    println!("{}", serde_json::to_string(&head)?);
                } else {
                    println!("{}:{}", head.chain_position, head.chain_hash);
                    if head.chain_position < head.position {
                        eprintln!(
                            "the chain reaches position {} of {}: `brain migrate` computes the rest",
                            head.chain_position, head.position
                        );
                    }
                }
                Ok(0)
            }
            EventsCli::VerifyChain { database_url, expect, json } => {
                let pool = connect(&database_url).await?;
                let mut progress = ProgressLine::default();
                let report = chain::verify(&pool, expect, |at| progress.show(at)).await?;
                progress.finish();
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", describe(&report));
                }
                Ok(if report.clean { 0 } else { FINDINGS_EXIT })
            }
            EventsCli::Export(args) => super::transfer::export(args).await,
            EventsCli::Import(args) => super::transfer::import(args).await,
        }
    }
}

/// A pool of two connections, without creating a missing database: there is nothing to
/// read in a new one.
pub(super) async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(db::ACQUIRE_TIMEOUT_S))
        .connect_with(options.options(db::SESSION_OPTIONS))
        .await?;
    Ok(pool)
}

/// The report as a person reads it.
pub fn describe(report: &Report) -> String {
    let mut text = format!(
        "checked {} events up to position {} in {:.1} s; head {}:{}\n",
        report.events_checked,
        report.head.chain_position,
        report.seconds,
        report.head.chain_position,
        report.head.chain_hash
    );
    if let Some(from) = report.unchained_from {
        text.push_str(&format!(
            "positions {from}..={} have no chain yet (`brain migrate` computes it)\n",
            report.head.position
        ));
    }
    match report.first_position {
        None => text.push_str("clean: every event matches its hash\n"),
        Some(first) => {
            text.push_str(&format!(
                "{} finding(s), the first at position {first}:\n",
                report.findings_total
            ));
            for finding in &report.findings {
                let kind = serde_json::to_value(finding.kind).unwrap_or_default();
                let kind = kind.as_str().unwrap_or("finding").to_owned();
                text.push_str(&format!("  {} {kind}: {}\n", finding.position, finding.detail));
            }
            if report.findings_total > report.findings.len() as u64 {
                text.push_str(&format!(
                    "  … and {} more\n",
                    report.findings_total - report.findings.len() as u64
                ));
            }
        }
    }
    text
}

/// The progress line on stderr: nothing for a check done within a second, then one line a
/// second with the rate.
#[derive(Default)]
pub struct ProgressLine {
    last_shown: Option<Instant>,
    shown: bool,
}

impl ProgressLine {
    fn show(&mut self, at: Progress) {
        if at.elapsed < PROGRESS_EVERY
            || self.last_shown.is_some_and(|t| t.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        let rate = at.checked as f64 / at.elapsed.as_secs_f64().max(1e-9);
        eprint!("\rverify-chain: {} of {} positions, {rate:.0} events/s   ", at.through, at.head);
        let _ = std::io::stderr().flush();
        self.last_shown = Some(Instant::now());
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
