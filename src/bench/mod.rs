//! `brain bench …`: measurements users run on their own hardware, one module a bench, and what
//! they share. `brain bench append` works in a database and namespace of its own, created for
//! the run and dropped after (unless `--keep`), so it never touches a deployment's data;
//! `brain bench search`, `heal`, `rebuild` and `snapshots` likewise fill a database of their own;
//! `brain bench missions` (unless `--own-serve`), `batch`, `ws` and `agents` measure a running
//! `brain serve` over HTTP, in whatever database and namespace that server uses; the others
//! start a `brain serve` of their own (`own_serve`).

mod agent_loop;
mod agents;
mod append;
mod batch;
mod console;
mod fanout;
mod heal;
mod llm;
mod llm_fake;
mod mcp;
mod missions;
mod missions_report;
mod open_loop;
mod own_serve;
mod rebuild;
mod round_trips;
mod search;
mod snapshots;
mod verify;
/// Headless Chromium over WebDriver, for the console's tests and benches.
pub mod webdriver;
mod ws;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::config::{DATABASE_URL_DEFAULT, NATS_URL_DEFAULT};

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Enqueue echo missions over HTTP against a running `brain serve` (or one of its own)
    /// and follow them to completion; report enqueue and completion rates and latencies, in a
    /// closed loop or at a fixed rate, and optionally the round trips per mission.
    Missions(missions::MissionsBench),
    /// Append events from many concurrent writers through the group committer while the
    /// relay publishes them; report append and publish rates and latencies.
    Append(append::AppendBench),
    /// Post batches of missions to a running `brain serve` from concurrent HTTP clients;
    /// report missions/s and request latencies.
    Batch(batch::BatchBench),
    /// Connect many WebSocket clients to a running `brain serve`, enqueue missions at a steady
    /// rate and report how long events take to reach every client.
    Ws(ws::WsBench),
    /// Fill a store with missions, build the Redis queue, lose its keys, and time the refill
    /// from the log and its peak memory.
    Heal(heal::HealBench),
    /// Fill the mission list with a million missions (straight into its table) and time a
    /// mix of searches of `GET /api/missions`: p50 and p99 of each, the plan of the slowest.
    Search(search::SearchBench),
    /// Fill a store with missions, then time a plain read of the log and the rebuild of each
    /// read model beside the live one, with each one's peak memory.
    Rebuild(rebuild::RebuildBench),
    /// Fill a store with missions and build its read models, then time each check of `brain
    /// events verify` alone, with each one's peak memory.
    Verify(verify::VerifyBench),
    /// Load an agent of 100,000 events and a conversation at its 1,000-message bound, folding
    /// the whole stream and through its snapshot: p50 and p99 of each.
    Snapshots(snapshots::SnapshotsBench),
    /// Heartbeat a fleet of simulated agents against a running `brain serve` (store growth,
    /// sweep duration, time to detect a silent agent), then claim missions over HTTP.
    Agents(agents::AgentsBench),
    /// The LLM gateway against a capacity-limited fake provider: throughput and 429s of a
    /// fleet of callers with and without the shared limits, and the latency the gateway adds
    /// to concurrent streaming calls.
    Llm(llm::LlmBench),
    /// The thinking agents' loop with a provider that answers at once (one tool call, then
    /// an answer): steps per second and the time per step, from the mission histories.
    AgentLoop(agent_loop::AgentLoopBench),
    /// What BRAiN's MCP client adds to a tool call over a bare `rmcp` client, against
    /// server-everything's `echo` over stdio and streamable HTTP: p50 and p99 of each.
    Mcp(mcp::McpBench),
    /// One supervisor mission fanning out to many sub-missions: time from its enqueue to its
    /// completion, and where it went (suspension, children, resume, last step).
    Fanout(fanout::FanoutBench),
    /// The Control Deck in headless Chromium: the overview's first load (bytes, time to the
    /// first live update) and the event-feed page under a steady event rate (frames, main
    /// thread, memory).
    Console(console::ConsoleBench),
    /// One process of callers of `brain bench llm`.
    #[command(hide = true)]
    LlmCallers(llm::LlmCallers),
}

impl Bench {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Bench::Append(bench) => bench.run().await,
            Bench::Missions(bench) => bench.run().await,
            Bench::Batch(bench) => bench.run().await,
            Bench::Ws(bench) => bench.run().await,
            Bench::Heal(bench) => bench.run().await,
            Bench::Rebuild(bench) => bench.run().await,
            Bench::Search(bench) => bench.run().await,
            Bench::Verify(bench) => bench.run().await,
            Bench::Snapshots(bench) => bench.run().await,
            Bench::Agents(bench) => bench.run().await,
            Bench::Llm(bench) => bench.run().await,
            Bench::AgentLoop(bench) => bench.run().await,
            Bench::Mcp(bench) => bench.run().await,
            Bench::Fanout(bench) => bench.run().await,
            Bench::Console(bench) => bench.run().await,
            Bench::LlmCallers(callers) => callers.run().await,
        }
    }
}

/// The services a bench that makes its own database and namespace runs against.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchServices {
    /// PostgreSQL server; the bench creates its own database on it.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    pub database_url: String,
    #[arg(long, env = "NATS_URL", default_value = NATS_URL_DEFAULT)]
    pub nats_url: String,
    #[arg(long, env = "REDIS_URL", default_value = crate::config::REDIS_URL_DEFAULT)]
    pub redis_url: String,
}

/// The key a bench's requests carry to a serve it did not start itself.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchKey {
    /// An API key of the serve (`brn_...`) with the permissions the bench's requests need.
    #[arg(long = "key", env = "BRAIN_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

/// An HTTP client builder whose requests carry `key` (if any) and send JSON: what every
/// bench's client starts from.
pub(crate) fn http_client(key: Option<&str>) -> reqwest::ClientBuilder {
    // reqwest is built without a default TLS provider; plain HTTP still needs one set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::CONTENT_TYPE, "application/json".parse().expect("a value"));
    if let Some(value) = key.and_then(|key| format!("Bearer {key}").parse().ok()) {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().default_headers(headers)
}

/// An empty latency histogram (three significant figures), in whatever unit its user records.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("three significant figures is a valid precision")
}

/// The `quantile` of a histogram of microseconds, in milliseconds.
pub(crate) fn ms_at(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

/// The largest value of a histogram of microseconds, in milliseconds.
pub(crate) fn ms_max(histogram: &Histogram<u64>) -> f64 {
    histogram.max() as f64 / 1_000.0
}

/// This machine's cores, for the reports (0 when unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Runs `loops` concurrent loops that share `units` of work. Each loop takes up to `per_take`
/// units at a time, calls `op` with how many it took and times the future `op` returns (what
/// `op` does before returning it is not timed), until no unit is left. Returns the times in
/// microseconds, merged; the first error ends the run.
pub(crate) async fn timed_loops<Op, Fut>(
    loops: usize,
    units: u64,
    per_take: u64,
    op: Op,
) -> anyhow::Result<Histogram<u64>>
where
    Op: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let remaining = Arc::new(AtomicU64::new(units));
    let tasks: Vec<_> = (0..loops)
        .map(|_| {
            let (remaining, op) = (remaining.clone(), op.clone());
            tokio::spawn(async move {
                let mut latencies = histogram();
                let take = |n: u64| n.checked_sub(1).map(|_| n.saturating_sub(per_take));
                while let Ok(before) =
                    remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
                {
                    let pending = op(before.min(per_take));
                    let started = Instant::now();
                    pending.await?;
                    let _ = latencies.record(started.elapsed().as_micros() as u64);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = histogram();
    for task in tasks {
        all.add(task.await??).expect("same histogram bounds");
    }
    Ok(all)
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("DATABASE_URL has no scheme")? + 3;
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_replaces_only_the_database_name() {
        let url = "postgres://u:p@h:5432/brain?sslmode=disable";
        assert_eq!(with_database(url, "b1").unwrap(), "postgres://u:p@h:5432/b1?sslmode=disable");
        assert_eq!(with_database("postgres://h", "b2").unwrap(), "postgres://h/b2");
    }
}
