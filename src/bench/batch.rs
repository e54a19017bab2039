//! `brain bench batch`: missions per second through `POST /api/missions/enqueue/batch` of a
//! running `brain serve`, from several concurrent HTTP clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;

use super::{cores, ms_at, ms_max, timed_loops};

#[derive(Debug, clap::Args)]
pub struct BatchBench {
    /// Base URL of the `brain serve` to measure; it must be running.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(flatten)]
    key: super::BenchKey,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Missions per request (1 to 1,000).
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Missions in the timed phase, rounded up to whole batches.
    #[arg(long, default_value_t = 500_000)]
    missions: u64,
    /// Approximate size of each mission's JSON payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Give every mission an idempotency key (a fresh one), as careful clients do.
    #[arg(long)]
    idempotency_keys: bool,
}

struct Report {
    missions_per_s: f64,
    requests: u64,
    request_ms: [f64; 3],
    elapsed: Duration,
}

impl BatchBench {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.clients == 0 || self.missions == 0 || !(1..=1_000).contains(&self.batch_size) {
            bail!("--clients and --missions must be at least 1, --batch-size 1 to 1000");
        }
        let client = super::http_client(self.key.key.as_deref())
            .pool_max_idle_per_host(self.clients)
            .build()
            .context("HTTP client")?;
        let endpoint = format!("{}/api/missions/enqueue/batch", self.url.trim_end_matches('/'));
        let health = client.get(format!("{}/health", self.url.trim_end_matches('/'))).send();
        health.await.with_context(|| format!("no brain serve answers at {}", self.url))?;

        let warmup = (self.clients * 4) as u64;
        eprintln!("bench: warm-up, {warmup} requests of {} missions", self.batch_size);
        self.drive(&client, &endpoint, warmup).await?;
        let requests = self.missions.div_ceil(self.batch_size as u64);
        eprintln!(
            "bench: {requests} requests of {} missions from {} clients",
            self.batch_size, self.clients
        );
        let started = Instant::now();
        let latencies = self.drive(&client, &endpoint, requests).await?;
        let elapsed = started.elapsed();
        let report = Report {
            missions_per_s: (requests * self.batch_size as u64) as f64 / elapsed.as_secs_f64(),
            requests,
            request_ms: [ms_at(&latencies, 0.5), ms_at(&latencies, 0.99), ms_max(&latencies)],
            elapsed,
        };
        self.print(&report);
        Ok(())
    }

    /// Sends `requests` batches from the clients; returns request latencies in microseconds.
    async fn drive(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        requests: u64,
    ) -> anyhow::Result<Histogram<u64>> {
        let padding = "x".repeat(self.payload_bytes.saturating_sub(30));
        // Without keys every batch can be the same bytes (the server gives each mission a
        // new id), so the clients spend next to nothing of the machine they share.
        let fixed = (!self.idempotency_keys).then(|| body(self.batch_size, &padding, None));
        let (client, endpoint) = (client.clone(), Arc::<str>::from(endpoint));
        let batch_size = self.batch_size;
        let send = move |_| {
            let body = match &fixed {
                Some(body) => body.clone(),
                None => body(batch_size, &padding, Some(uuid::Uuid::now_v7())),
            };
            let (client, endpoint) = (client.clone(), endpoint.clone());
            async move {
                let response = client
                    .post(&*endpoint)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let answer = response.bytes().await?;
                if status != reqwest::StatusCode::CREATED {
                    let answer = String::from_utf8_lossy(&answer[..answer.len().min(300)]);
                    bail!("batch answered {status}: {answer}");
                }
                Ok(())
            }
        };
        timed_loops(self.clients, requests, 1, send).await
    }

    fn print(&self, r: &Report) {
        let cores = cores();
        println!(
            "brain bench batch: {} clients, {} requests x {} missions, {} B payloads{}, {cores} cores",
            self.clients,
            r.requests,
            self.batch_size,
            self.payload_bytes,
            if self.idempotency_keys { ", idempotency keys" } else { "" }
        );
        println!(
            "  enqueued        {:>10.0} missions/s  ({:.1} s)",
            r.missions_per_s,
            r.elapsed.as_secs_f64()
        );
        println!(
            "  request latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            r.request_ms[0], r.request_ms[1], r.request_ms[2]
        );
        let json = serde_json::json!({
            "bench": "batch",
            "params": { "clients": self.clients, "batch_size": self.batch_size, "requests": r.requests, "payload_bytes": self.payload_bytes, "idempotency_keys": self.idempotency_keys, "cores": cores },
            "results": { "missions_per_s": r.missions_per_s, "request_p50_ms": r.request_ms[0], "request_p99_ms": r.request_ms[1], "request_max_ms": r.request_ms[2], "elapsed_s": r.elapsed.as_secs_f64() },
        });
        println!("{json}");
    }
}

/// A batch request body; with `keys`, each mission gets an idempotency key of its own.
fn body(batch_size: usize, padding: &str, keys: Option<uuid::Uuid>) -> bytes::Bytes {
    let missions: Vec<serde_json::Value> = (0..batch_size)
        .map(|n| {
            let priority = ["low", "normal", "high", "critical"][n % 4];
            let mut mission = serde_json::json!({
                "name": format!("bench mission {n}"),
                "priority": priority,
                "payload": { "n": n, "pad": padding },
            });
            if let Some(prefix) = keys {
                mission["idempotency_key"] = format!("{prefix}-{n}").into();
            }
            mission
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "missions": missions })).expect("serialises").into()
}
