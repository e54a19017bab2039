//! `brain events verify` (and `POST /api/admin/verify`): whether the log, its chain, the
//! JetStream stream and every read model agree, each check reported by name.
//!
//! The checks of the log itself live here: [`log`] (positions 1..head without a hole, the
//! head row, each stream's versions 1..n, in SQL), the chain ([`crate::eventlog::chain`],
//! reused as it is), [`snapshots`] (each stored snapshot equals a fold of its stream), and
//! [`bus`] (the stream mirrors the log). A read model is checked by a
//! [`ModelCheck`] that builds the model from the log into a scratch copy up to the position
//! the live model has reached, compares the two and drops the copy: [`tables`] does it for
//! the PostgreSQL models; the queue's lives with the queue (`missions::queue::verify`), and
//! `serve::verify` lists them all, since only the composition root knows every model.
//!
//! One verify runs at a time per database (an advisory lock): scratch tables and keys have
//! fixed names, and two verifies would only slow each other. Memory stays bounded: events
//! are read in pages, tables are compared by PostgreSQL, Redis keys one at a time.

pub mod bus;
pub mod log;
pub mod snapshots;
pub mod tables;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::eventlog::{chain, leader, store};

/// Findings a check lists; past this it only counts them.
pub const FINDINGS_LISTED_MAX: usize = 20;
/// Longest one statement of a check may run (a table copied or compared whole), instead of
/// the pool's 60 s.
pub const STATEMENT_TIMEOUT: &str = "900s";
/// The advisory lock one verify holds on its database.
pub const LOCK_NAME: &str = "brain:verify";

/// The checks of the log itself, in the order they run, before the read models'.
pub const LOG_CHECKS: [&str; 5] =
    ["positions", "stream_versions", "chain", "snapshots", "jetstream"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked, nothing found.
    Ok,
    /// Checked, something found: see `findings`.
    Findings,
    /// Not checked, for the reason in `detail` (a model without a scratch build yet, NATS
    /// not configured).
    Skipped,
    /// Could not run to its end: the reason is in `detail`.
    Error,
}

/// One thing a check found: where (`key`: a position, a stream, a table and primary key, a
/// Redis key and member) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub key: String,
    pub detail: String,
}

/// What one check found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub name: String,
    pub status: Status,
    /// What was checked (a range, a position), or why not.
    pub detail: String,
    /// The position the check compared at: the head it read, or a model's own position.
    pub position: Option<u64>,
    /// Items checked: positions, streams, events, rows or keys.
    pub checked: u64,
    /// Up to [`FINDINGS_LISTED_MAX`], the first in the check's order.
    pub findings: Vec<Finding>,
    pub findings_total: u64,
    pub seconds: f64,
}

impl CheckReport {
    pub fn new(name: &str) -> CheckReport {
        CheckReport {
            name: name.to_owned(),
            status: Status::Ok,
            detail: String::new(),
            position: None,
            checked: 0,
            findings: Vec::new(),
            findings_total: 0,
            seconds: 0.0,
        }
    }

    pub fn skipped(name: &str, reason: impl Into<String>) -> CheckReport {
        CheckReport { status: Status::Skipped, detail: reason.into(), ..CheckReport::new(name) }
    }

    pub fn add(&mut self, key: impl Into<String>, detail: impl Into<String>) {
        self.findings_total += 1;
        self.status = Status::Findings;
        if self.findings.len() < FINDINGS_LISTED_MAX {
            self.findings.push(Finding { key: key.into(), detail: detail.into() });
        }
    }
}

/// Where a long check has got to, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    pub check: &'a str,
    pub done: u64,
    pub total: u64,
}

/// Told of each check's progress; the CLI draws a line on stderr, the API ignores it.
pub type Progress<'a> = &'a (dyn Fn(Tick<'_>) + Send + Sync);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The check of one read model: build it from the log in scratch up to the live model's
/// position, compare, drop the scratch copy.
pub trait ModelCheck: Send + Sync {
    fn name(&self) -> &'static str;
    fn check<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, anyhow::Result<CheckReport>>;
}

/// A model that cannot be built in scratch yet: reported `skipped`, never passed silently.
pub struct Unchecked {
    pub name: &'static str,
    pub reason: &'static str,
}

impl ModelCheck for Unchecked {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check<'a>(&'a self, _: Progress<'a>) -> BoxFuture<'a, anyhow::Result<CheckReport>> {
        Box::pin(async move { Ok(CheckReport::skipped(self.name, self.reason)) })
    }
}

/// Builds the read models' checks when a verify starts: the queue's needs a Redis
/// connection, which a serve may get only after it started.
pub type ModelChecks = std::sync::Arc<
    dyn Fn() -> BoxFuture<'static, anyhow::Result<Vec<Box<dyn ModelCheck>>>> + Send + Sync,
>;

/// What to check.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Options {
    /// Only these checks (names from [`Verifier::names`]); all when `None`.
    pub only: Option<Vec<String>>,
    /// Messages of the JetStream stream compared at random positions; every one when `None`.
    pub sample: Option<u64>,
}

/// Everything `verify` reports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The log's head when the verify started.
    pub head: u64,
    /// No check found anything or failed to run (skipped ones aside).
    pub clean: bool,
    pub checks: Vec<CheckReport>,
    pub seconds: f64,
}

impl Report {
    /// 1 if any check found something, else 2 if any could not run, else 0.
    pub fn exit_code(&self) -> i32 {
        let any = |status| self.checks.iter().any(|check| check.status == status);
        if any(Status::Findings) {
            1
        } else if any(Status::Error) {
            2
        } else {
            0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("another verify is running on this database")]
    Busy,
    #[error("{0:?} is no check; checks: {1}")]
    UnknownCheck(String, String),
    #[error("--sample must be at least 1")]
    EmptySample,
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// What verify checks with: the store, the stream (when NATS is configured), the models.
pub struct Verifier {
    pub pool: PgPool,
    pub namespace: crate::config::Namespace,
    /// The stream's JetStream, or why it could not be reached (the check then reports
    /// [`Status::Error`]).
    pub jetstream: Result<async_nats::jetstream::Context, String>,
    pub models: Vec<Box<dyn ModelCheck>>,
}

impl Verifier {
    /// Every check's name, in the order they run.
    pub fn names(&self) -> Vec<&str> {
        LOG_CHECKS.iter().copied().chain(self.models.iter().map(|model| model.name())).collect()
    }

    /// Refuses a name that is no check, or an empty sample.
    pub fn validate(&self, options: &Options) -> Result<(), VerifyError> {
        let names = self.names();
        for name in options.only.iter().flatten() {
            if !names.contains(&name.as_str()) {
                return Err(VerifyError::UnknownCheck(name.clone(), names.join(", ")));
            }
        }
        if options.sample == Some(0) {
            return Err(VerifyError::EmptySample);
        }
        Ok(())
    }

    /// Runs the chosen checks one after the other. `Busy` if another verify holds the
    /// database's lock; a check that fails is reported with [`Status::Error`].
    pub async fn run(
        &self,
        options: &Options,
        progress: Progress<'_>,
    ) -> Result<Report, VerifyError> {
        self.validate(options)?;
        let started = Instant::now();
        let _lock = lock(&self.pool).await?;
        let head = store::head(&self.pool).await?;
        let wanted =
            |name: &str| options.only.as_ref().is_none_or(|only| only.iter().any(|o| o == name));
        let mut checks = Vec::new();
        for name in LOG_CHECKS {
            if !wanted(name) {
                continue;
            }
            let check_started = Instant::now();
            let result = match name {
                "positions" => log::positions(&self.pool, progress).await,
                "stream_versions" => log::stream_versions(&self.pool).await,
                "chain" => chain_check(&self.pool, progress).await,
                "snapshots" => snapshots::check(&self.pool, progress).await,
                _ => match &self.jetstream {
                    Ok(jetstream) => {
                        bus::check(&self.pool, jetstream, &self.namespace, options.sample, progress)
                            .await
                    }
                    Err(why) => Err(anyhow::anyhow!("NATS: {why}")),
                },
            };
            checks.push(finish(name, result, check_started));
        }
        for model in &self.models {
            if !wanted(model.name()) {
                continue;
            }
            let check_started = Instant::now();
            let result = model.check(progress).await;
            checks.push(finish(model.name(), result, check_started));
        }
        let clean = checks.iter().all(|check| matches!(check.status, Status::Ok | Status::Skipped));
        Ok(Report { head, clean, checks, seconds: started.elapsed().as_secs_f64() })
    }
}

fn finish(name: &str, result: anyhow::Result<CheckReport>, started: Instant) -> CheckReport {
    let mut report = result.unwrap_or_else(|error| CheckReport {
        status: Status::Error,
        detail: format!("{error:#}"),
        ..CheckReport::new(name)
    });
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Takes the database's verify lock on a connection of its own, closed (so released) when
/// dropped, even if the verify is abandoned half-way (a request past its deadline).
async fn lock(pool: &PgPool) -> Result<PgConnection, VerifyError> {
    let mut connection = pool.acquire().await?.detach();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(leader::lock_key(LOCK_NAME))
        .fetch_one(&mut connection)
        .await?;
    if held { Ok(connection) } else { Err(VerifyError::Busy) }
}

/// The chain (decision 0046), as `brain events verify-chain` checks it.
async fn chain_check(pool: &PgPool, progress: Progress<'_>) -> anyhow::Result<CheckReport> {
    let found = chain::verify(pool, None, |at| {
        progress(Tick { check: "chain", done: at.through, total: at.head })
    })
    .await?;
    let mut report = CheckReport::new("chain");
    report.position = Some(found.head.chain_position);
    report.checked = found.events_checked;
    report.detail = format!(
        "every event's hash recomputed up to {}:{}",
        found.head.chain_position, found.head.chain_hash
    );
    if let Some(from) = found.unchained_from {
        report.detail.push_str(&format!("; {from}..={} not chained yet", found.head.position));
    }
    for finding in &found.findings {
        let kind = serde_json::to_value(finding.kind).unwrap_or_default();
        let kind = kind.as_str().unwrap_or("finding").to_owned();
        report.add(format!("position {}", finding.position), format!("{kind}: {}", finding.detail));
    }
    report.findings_total = found.findings_total;
    Ok(report)
}

/// The report as a person reads it: one line per check, its findings under it.
pub fn describe(report: &Report) -> String {
    let mut text = format!(
        "{:<18}  {:<8}  {:>10}  {:>10}  {:>7}  detail\n",
        "check", "status", "position", "checked", "s"
    );
    for check in &report.checks {
        let status = serde_json::to_value(check.status).unwrap_or_default();
        let position = check.position.map_or("-".to_owned(), |p| p.to_string());
        text.push_str(&format!(
            "{:<18}  {:<8}  {:>10}  {:>10}  {:>7.1}  {}\n",
            check.name,
            status.as_str().unwrap_or("?"),
            position,
            check.checked,
            check.seconds,
            check.detail
        ));
        for finding in &check.findings {
            text.push_str(&format!("    {}: {}\n", finding.key, finding.detail));
        }
        let listed = check.findings.len() as u64;
        if check.findings_total > listed {
            text.push_str(&format!("    … and {} more\n", check.findings_total - listed));
        }
    }
    let verdict = match report.exit_code() {
        0 => "clean",
        1 => "findings",
        _ => "incomplete: a check could not run",
    };
    text.push_str(&format!("head {}, {:.1} s: {verdict}\n", report.head, report.seconds));
    text
}
