//! `brain bench agent-loop`: the thinking agents' loop with a provider that answers at once
//! ([`llm_fake`], asking for one `list_dir` call before it answers), so what is measured is the
//! loop's own work: a model call through the gateway and its record, a tool call and its
//! record, the answer. It starts a `brain serve` of its own (a database and namespace it drops
//! after, in-process `coder` workers with a scratch root), enqueues `--missions` missions and
//! reports model calls (steps) per second and the time each step took, from the mission
//! histories (one step: from the previous step's end, or the start, to its model call's
//! record).
//!
//! [`llm_fake`]: super::llm_fake

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::PgPool;

use super::own_serve::InstantServe;
use super::{histogram, ms_at, ms_max};

#[derive(Debug, clap::Args)]
pub struct AgentLoopBench {
    #[command(flatten)]
    services: super::BenchServices,
    #[arg(long, default_value_t = 1_000)]
    missions: usize,
    /// Missions the serve runs at once.
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

/// A mission's recorded steps: event type and time, in order.
type History = Vec<(String, time::OffsetDateTime)>;

/// What the mission histories say.
struct Steps {
    /// Time per step, in microseconds.
    steps: Histogram<u64>,
    completed: u64,
    tool_calls: u64,
}

impl AgentLoopBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let vars = [
            ("BRAIN_WORKERS", self.workers.to_string()),
            ("BRAIN_WORKER_AGENTS", "coder".to_owned()),
        ];
        let serve =
            InstantServe::start(&self.services, "brain_bench_loop", "bench_loop", &vars, 0).await?;
        let outcome = self.measure(&serve).await;
        serve.drop_all().await?;
        outcome
    }

    async fn measure(&self, serve: &InstantServe) -> anyhow::Result<()> {
        let started = Instant::now();
        self.enqueue_all(serve).await?;
        self.wait_until_finished(&serve.pool).await?;
        let elapsed = started.elapsed();
        let Steps { steps, completed, tool_calls } = steps(&histories(&serve.pool).await?);
        println!(
            "agent loop: {} coder missions ({} completed), {} workers, provider answering at once",
            self.missions, completed, self.workers
        );
        println!(
            "  {} steps, {} tool calls in {:.1} s: {:.0} steps/s ({:.0} missions/s)",
            steps.len(),
            tool_calls,
            elapsed.as_secs_f64(),
            steps.len() as f64 / elapsed.as_secs_f64(),
            completed as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  per step: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            ms_at(&steps, 0.5),
            ms_at(&steps, 0.99),
            ms_max(&steps)
        );
        Ok(())
    }

    /// Enqueues the missions, all at once.
    async fn enqueue_all(&self, serve: &InstantServe) -> anyhow::Result<()> {
        let url = serve.serve.url.as_str();
        let enqueues: Vec<_> = (0..self.missions)
            .map(|n| {
                let (client, url) = (serve.client.clone(), url.to_owned());
                let body = json!({ "name": format!("loop {n}"), "agent": "coder", "payload": { "prompt": "look around" } });
                tokio::spawn(async move { client.post(format!("{url}/api/missions/enqueue")).json(&body).send().await })
            })
            .collect();
        for enqueue in enqueues {
            let response = enqueue.await??;
            anyhow::ensure!(response.status().is_success(), "enqueue: {}", response.status());
        }
        Ok(())
    }

    /// Waits (at most 10 minutes) until every mission completed or failed an attempt.
    async fn wait_until_finished(&self, pool: &PgPool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let finished: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type IN ('MissionCompleted', 'MissionAttemptFailed')",
            )
            .fetch_one(pool)
            .await?;
            if finished as usize >= self.missions {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {finished} of {} missions finished in 10 min",
                self.missions
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Each mission's starts, model calls, tool calls and completions, by mission.
async fn histories(pool: &PgPool) -> anyhow::Result<BTreeMap<String, History>> {
    let rows: Vec<(String, String, time::OffsetDateTime)> = sqlx::query_as(
        "SELECT stream_id, event_type, recorded_at FROM events WHERE stream_type = 'mission'
         AND event_type IN ('MissionStarted', 'MissionLlmCalled', 'MissionToolCalled', 'MissionCompleted')
         ORDER BY global_position",
    )
    .fetch_all(pool)
    .await?;
    let mut histories: BTreeMap<String, History> = BTreeMap::new();
    for (stream, event_type, at) in rows {
        histories.entry(stream).or_default().push((event_type, at));
    }
    Ok(histories)
}

/// The steps in the histories: one step runs from the previous step's end, or the start, to
/// its model call's record.
fn steps(histories: &BTreeMap<String, History>) -> Steps {
    let mut steps = histogram();
    let (mut completed, mut tool_calls) = (0, 0);
    for history in histories.values() {
        let mut since = None;
        for (event_type, at) in history {
            match event_type.as_str() {
                "MissionStarted" => since = Some(*at),
                "MissionLlmCalled" => {
                    if let Some(from) = since {
                        steps
                            .record((*at - from).whole_microseconds().max(1) as u64)
                            .expect("in range");
                    }
                    since = Some(*at);
                }
                "MissionToolCalled" => tool_calls += 1,
                _ => completed += 1,
            }
        }
    }
    Steps { steps, completed, tool_calls }
}
