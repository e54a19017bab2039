//! `brain bench missions`: the whole mission path against a running `brain serve`. Many HTTP
//! clients enqueue `echo` missions as fast as the server answers, while the server's workers
//! (or `brain worker` processes) run them. It reports enqueue requests per second and their
//! latency, missions completed per second, and enqueue→completed latency.
//!
//! Completions are observed on the bus (a core NATS subscription to the namespace's mission
//! subjects), so watching costs the server nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{histogram, ms_at, ms_max};

use crate::config::{NATS_URL_DEFAULT, Namespace};
use crate::eventlog::bus;

#[derive(Debug, clap::Args)]
pub struct MissionsBench {
    /// The running `brain serve` to measure.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(flatten)]
    key: super::BenchKey,
    /// NATS server the serve publishes to, to watch completions.
    #[arg(long, env = "NATS_URL", default_value = NATS_URL_DEFAULT)]
    nats_url: String,
    /// The serve's namespace.
    #[arg(long, env = "BRAIN_NAMESPACE", default_value = "brain")]
    namespace: Namespace,
    /// Missions to enqueue.
    #[arg(long, default_value_t = 20_000)]
    missions: u64,
    /// Concurrent HTTP clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Agent kind of the missions; the serve's workers must run it with the echo agent.
    #[arg(long, default_value = "echo")]
    agent: String,
    /// Gives up waiting for completions after this long without one.
    #[arg(long, default_value_t = 30)]
    idle_timeout_s: u64,
}

/// When each mission completed, as seen on the bus, by mission id.
type Completions = Arc<Mutex<HashMap<String, Instant>>>;

/// What the enqueueing clients did: request latencies in microseconds, and each mission's id
/// with the time its enqueue was sent.
struct Enqueued {
    latencies: Histogram<u64>,
    sent: Vec<(String, Instant)>,
    elapsed: Duration,
}

impl MissionsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let completions = Completions::default();
        let completed = Arc::new(AtomicU64::new(0));
        let watcher = self.watch(completions.clone(), completed.clone()).await?;
        let started = Instant::now();
        let enqueued = self.enqueue_all(started).await?;
        self.wait_for_completions(&completed).await;
        watcher.abort();
        let completions = completions.lock().await;
        let mut end_to_end = histogram();
        let mut last_completion = started;
        for (id, at) in &enqueued.sent {
            if let Some(done) = completions.get(id) {
                end_to_end.record(done.saturating_duration_since(*at).as_micros() as u64).ok();
                last_completion = last_completion.max(*done);
            }
        }
        self.print(&enqueued, &end_to_end, last_completion - started);
        let (sent, done) = (enqueued.sent.len() as u64, end_to_end.len());
        if done < sent {
            bail!("{} missions did not complete", sent - done);
        }
        Ok(())
    }

    /// Notes every `MissionCompleted` on the bus in `completions` and counts it in
    /// `completed`; the subscription is in place before this returns, so before the first
    /// mission can complete.
    async fn watch(
        &self,
        completions: Completions,
        completed: Arc<AtomicU64>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let nats = bus::connect(&self.nats_url).await?;
        let subject = format!("{}.events.mission.>", self.namespace);
        let mut subscription = nats.subscribe(subject).await.context("subscribe")?;
        let connection = nats.clone();
        let watcher = tokio::spawn(async move {
            // The connection stays open for as long as the watcher runs.
            let _connection = connection;
            while let Some(message) = subscription.next().await {
                let Ok(envelope) = bus::Envelope::decode(&message.payload) else { continue };
                if envelope.event_type == "MissionCompleted" {
                    completions.lock().await.insert(envelope.stream_id, Instant::now());
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        nats.flush().await.context("NATS flush")?;
        Ok(watcher)
    }

    /// Enqueues the missions from the clients, each with one request in flight.
    async fn enqueue_all(&self, started: Instant) -> anyhow::Result<Enqueued> {
        let client = super::http_client(self.key.key.as_deref())
            .pool_max_idle_per_host(self.clients)
            .build()
            .context("HTTP client")?;
        let url = format!("{}/api/missions/enqueue", self.url.trim_end_matches('/'));
        let next = Arc::new(AtomicU64::new(0));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..self.clients {
            let (client, url, next, agent) =
                (client.clone(), url.clone(), next.clone(), self.agent.clone());
            clients.spawn(enqueue_from_one_client(client, url, next, self.missions, agent));
        }
        let mut latencies = histogram();
        let mut sent = Vec::with_capacity(self.missions as usize);
        while let Some(result) = clients.join_next().await {
            let (mine, my_sent) = result.context("client task")??;
            latencies.add(mine).expect("same bounds");
            sent.extend(my_sent);
        }
        Ok(Enqueued { latencies, sent, elapsed: started.elapsed() })
    }

    /// Waits until every mission completed, or none did for `--idle-timeout-s`.
    async fn wait_for_completions(&self, completed: &AtomicU64) {
        let idle = Duration::from_secs(self.idle_timeout_s);
        let mut last = (completed.load(Ordering::Relaxed), Instant::now());
        while completed.load(Ordering::Relaxed) < self.missions {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = completed.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > idle {
                eprintln!("no completion for {idle:?}; reporting what completed");
                break;
            }
        }
    }

    fn print(&self, enqueued: &Enqueued, end_to_end: &Histogram<u64>, completing: Duration) {
        let (sent, done) = (enqueued.sent.len(), end_to_end.len());
        let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "missions:            {sent} enqueued by {} clients, {done} completed",
            self.clients
        );
        println!(
            "enqueue:             {:.0} requests/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            per_s(sent as u64, enqueued.elapsed),
            ms_at(&enqueued.latencies, 0.5),
            ms_at(&enqueued.latencies, 0.99),
            ms_max(&enqueued.latencies)
        );
        println!(
            "completed:           {:.0} missions/s end to end ({done} in {:.2} s)",
            per_s(done, completing),
            completing.as_secs_f64()
        );
        println!(
            "enqueue → completed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms_at(end_to_end, 0.5),
            ms_at(end_to_end, 0.99),
            ms_max(end_to_end)
        );
    }
}

/// One client's enqueues: missions numbered from the shared `next` until `total`, one request
/// at a time. Returns its latencies in microseconds and each mission's id with its send time.
async fn enqueue_from_one_client(
    client: reqwest::Client,
    url: String,
    next: Arc<AtomicU64>,
    total: u64,
    agent: String,
) -> anyhow::Result<(Histogram<u64>, Vec<(String, Instant)>)> {
    let mut latencies = histogram();
    let mut sent = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return Ok((latencies, sent));
        }
        let body = serde_json::json!({ "name": format!("bench {n}"), "agent": agent });
        let at = Instant::now();
        let response = client.post(&url).json(&body).send().await?;
        let status = response.status();
        let mission: serde_json::Value = response.json().await?;
        latencies.record(at.elapsed().as_micros() as u64).expect("in range");
        if status.as_u16() != 201 {
            bail!("enqueue answered {status}: {mission}");
        }
        let id = mission["mission_id"].as_str().unwrap_or_default().to_owned();
        sent.push((id, at));
    }
}
