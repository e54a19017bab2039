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

use super::own_serve::OwnServe;

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

impl AgentLoopBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let fake = super::own_serve::instant_provider(0).await?;
        let vars = [
            ("BRAIN_WORKERS", self.workers.to_string()),
            ("BRAIN_WORKER_AGENTS", "coder".to_owned()),
        ];
        let serve =
            OwnServe::start(&self.services, "brain_bench_loop", "bench_loop", &vars).await?;
        let outcome = self.measure(&serve, &fake.url).await;
        serve.drop_all().await?;
        outcome
    }

    async fn measure(&self, serve: &OwnServe, provider: &str) -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        serve.configure_llm(&client, provider).await?;
        let url = serve.url.as_str();
        let pool = crate::eventlog::db::connect(&serve.database_url, 2).await?;
        let started = Instant::now();
        let enqueues: Vec<_> = (0..self.missions)
            .map(|n| {
                let (client, url) = (client.clone(), url.to_owned());
                let body = json!({ "name": format!("loop {n}"), "agent": "coder", "payload": { "prompt": "look around" } });
                tokio::spawn(async move { client.post(format!("{url}/api/missions/enqueue")).json(&body).send().await })
            })
            .collect();
        for enqueue in enqueues {
            let response = enqueue.await??;
            anyhow::ensure!(response.status().is_success(), "enqueue: {}", response.status());
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let finished: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type IN ('MissionCompleted', 'MissionAttemptFailed')",
            )
            .fetch_one(&pool)
            .await?;
            if finished as usize >= self.missions {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {finished} of {} missions finished in 10 min",
                self.missions
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let elapsed = started.elapsed();
        let rows: Vec<(String, String, time::OffsetDateTime)> = sqlx::query_as(
            "SELECT stream_id, event_type, recorded_at FROM events WHERE stream_type = 'mission'
             AND event_type IN ('MissionStarted', 'MissionLlmCalled', 'MissionToolCalled', 'MissionCompleted')
             ORDER BY global_position",
        )
        .fetch_all(&pool)
        .await?;
        let mut histories: BTreeMap<String, Vec<(String, time::OffsetDateTime)>> = BTreeMap::new();
        for (stream, event_type, at) in rows {
            histories.entry(stream).or_default().push((event_type, at));
        }
        let mut steps = Histogram::<u64>::new(3).expect("histogram");
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
        let ms = |q: f64| steps.value_at_quantile(q) as f64 / 1_000.0;
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
            ms(0.5),
            ms(0.99),
            steps.max() as f64 / 1_000.0
        );
        pool.close().await;
        Ok(())
    }
}
