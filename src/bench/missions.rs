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

use crate::config::{NATS_URL_DEFAULT, Namespace};
use crate::eventlog::bus;

#[derive(Debug, clap::Args)]
pub struct MissionsBench {
    /// The running `brain serve` to measure.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
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

struct Completions {
    at: HashMap<String, Instant>,
}

impl MissionsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let nats = bus::connect(&self.nats_url).await?;
        let subject = format!("{}.events.mission.>", self.namespace);
        let mut subscription = nats.subscribe(subject).await.context("subscribe")?;
        let completions = Arc::new(Mutex::new(Completions { at: HashMap::new() }));
        let completed = Arc::new(AtomicU64::new(0));
        let watcher = {
            let (completions, completed) = (completions.clone(), completed.clone());
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let Ok(envelope) = bus::Envelope::decode(&message.payload) else { continue };
                    if envelope.event_type == "MissionCompleted" {
                        completions.lock().await.at.insert(envelope.stream_id, Instant::now());
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // The subscription must be in place before the first mission can complete.
        nats.flush().await.context("NATS flush")?;

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.clients)
            .build()
            .context("HTTP client")?;
        let url = format!("{}/api/missions/enqueue", self.url.trim_end_matches('/'));
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..self.clients {
            let (client, url, next, agent) =
                (client.clone(), url.clone(), next.clone(), self.agent.clone());
            let total = self.missions;
            clients.spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).expect("histogram");
                let mut sent = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<_, anyhow::Error>((latencies, sent));
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
            });
        }
        let mut enqueue = Histogram::<u64>::new(3).expect("histogram");
        let mut sent = Vec::with_capacity(self.missions as usize);
        while let Some(result) = clients.join_next().await {
            let (latencies, mine) = result.context("client task")??;
            enqueue.add(latencies).expect("same bounds");
            sent.extend(mine);
        }
        let enqueue_elapsed = started.elapsed();

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
        watcher.abort();
        let completions = completions.lock().await;
        let mut end_to_end = Histogram::<u64>::new(3).expect("histogram");
        let mut last_completion = started;
        for (id, at) in &sent {
            if let Some(done) = completions.at.get(id) {
                end_to_end.record(done.saturating_duration_since(*at).as_micros() as u64).ok();
                last_completion = last_completion.max(*done);
            }
        }
        let done = end_to_end.len();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "missions:            {} enqueued by {} clients, {done} completed",
            sent.len(),
            self.clients
        );
        println!(
            "enqueue:             {:.0} requests/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            per_s(sent.len() as u64, enqueue_elapsed),
            ms(&enqueue, 0.5),
            ms(&enqueue, 0.99),
            enqueue.max() as f64 / 1_000.0
        );
        println!(
            "completed:           {:.0} missions/s end to end ({done} in {:.2} s)",
            per_s(done, last_completion - started),
            (last_completion - started).as_secs_f64()
        );
        println!(
            "enqueue → completed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(&end_to_end, 0.5),
            ms(&end_to_end, 0.99),
            end_to_end.max() as f64 / 1_000.0
        );
        if done < sent.len() as u64 {
            bail!("{} missions did not complete", sent.len() as u64 - done);
        }
        Ok(())
    }
}
