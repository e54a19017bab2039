//! `brain bench missions`: the whole mission path against a `brain serve`. HTTP clients
//! enqueue `echo` missions while the server's workers (or `brain worker` processes) run them.
//! It reports enqueue requests per second and their latency, missions completed per second,
//! and enqueue→completed latency.
//!
//! Two loads: by default a closed loop (`--clients` clients, each sending its next enqueue when
//! the last is answered, so the server sets the pace); with `--rate` an open loop
//! ([`open_loop`]) that sends at a fixed rate and counts latency from each send's intended
//! time. `--own-serve` starts a serve of its own for the run (a fresh database and namespace,
//! dropped after; `--serve-binary` runs another build as that serve); `--round-trips` adds what
//! each completed mission cost in PostgreSQL transactions, Redis calls and JetStream messages
//! ([`round_trips`]); `--json` prints every figure as one JSON line.
//!
//! Completions are observed on the bus (a core NATS subscription to the namespace's mission
//! subjects), so watching costs the server nothing.
//!
//! [`open_loop`]: super::open_loop
//! [`round_trips`]: super::round_trips

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::open_loop::{self, Kept};
use super::own_serve::OwnServe;
use super::round_trips::{Meter, PerMission};
use super::{histogram, ms_at, ms_max};

use crate::config::{DATABASE_URL_DEFAULT, NATS_URL_DEFAULT, Namespace, REDIS_URL_DEFAULT};
use crate::eventlog::bus;

#[derive(Debug, clap::Args)]
pub struct MissionsBench {
    /// The running `brain serve` to measure (not with `--own-serve`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(flatten)]
    key: super::BenchKey,
    /// NATS server the serve publishes to, to watch completions.
    #[arg(long, env = "NATS_URL", default_value = NATS_URL_DEFAULT)]
    nats_url: String,
    /// The serve's namespace (not with `--own-serve`).
    #[arg(long, env = "BRAIN_NAMESPACE", default_value = "brain")]
    namespace: Namespace,
    /// The serve's PostgreSQL database, for `--round-trips`; with `--own-serve`, the server on
    /// which the bench creates the serve's database.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT, hide_env_values = true)]
    database_url: String,
    /// The serve's Redis, for `--round-trips` and `--own-serve`.
    #[arg(long, env = "REDIS_URL", default_value = REDIS_URL_DEFAULT, hide_env_values = true)]
    redis_url: String,
    /// Missions to enqueue.
    #[arg(long, default_value_t = 20_000)]
    missions: u64,
    /// Concurrent HTTP clients of the closed loop, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Send at this fixed rate (missions/s) instead, whatever the server does: an open loop,
    /// latencies counted from each send's intended time.
    #[arg(long)]
    rate: Option<f64>,
    /// Most requests in flight at once in the open loop; a send that finds them all busy waits
    /// (and its latency still counts from its intended time).
    #[arg(long, default_value_t = 256)]
    in_flight_max: usize,
    /// Start a `brain serve` of its own for the run (a fresh database and namespace, an admin
    /// key), dropped afterwards.
    #[arg(long)]
    own_serve: bool,
    /// Workers (`BRAIN_WORKERS`) of the serve `--own-serve` starts.
    #[arg(long, default_value_t = 64)]
    serve_workers: usize,
    /// Run this `brain` binary as the serve of `--own-serve` (to compare two builds).
    #[arg(long, requires = "own_serve")]
    serve_binary: Option<PathBuf>,
    /// Report round trips per completed mission: PostgreSQL transactions of the serve's
    /// database, Redis calls (of every client of that Redis) and JetStream messages.
    #[arg(long)]
    round_trips: bool,
    /// Print every figure as one JSON line on stdout (the text report goes to stderr).
    #[arg(long)]
    json: bool,
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
/// with the time its enqueue was sent (in the open loop, the time it was meant to be sent).
pub(super) struct Enqueued {
    pub latencies: Histogram<u64>,
    pub sent: Vec<(String, Instant)>,
    pub elapsed: Duration,
}

/// The serve the bench talks to.
struct Target {
    url: String,
    key: Option<String>,
    namespace: Namespace,
    database_url: String,
}

/// Everything one run measured.
struct Outcome {
    enqueued: Enqueued,
    end_to_end: Histogram<u64>,
    completing: Duration,
    kept: Option<Kept>,
    round_trips: Option<(String, PerMission)>,
}

impl MissionsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.clients == 0 || self.missions == 0 {
            bail!("--clients and --missions must be at least 1");
        }
        let outcome = if self.own_serve {
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
            let services = super::BenchServices {
                database_url: self.database_url.clone(),
                nats_url: self.nats_url.clone(),
                redis_url: self.redis_url.clone(),
            };
            let vars = [("BRAIN_WORKERS", self.serve_workers.to_string())];
            let (database, namespace) =
                (format!("brain_bench_missions_{suffix}"), format!("bench_missions_{suffix}"));
            let binary = match &self.serve_binary {
                Some(binary) => binary.clone(),
                None => std::env::current_exe()?,
            };
            let mut serve =
                OwnServe::start_binary(&services, &binary, &database, &namespace, &vars).await?;
            let target = Target {
                url: serve.url.clone(),
                key: Some(serve.key.clone()),
                namespace: Namespace::parse(serve.namespace()).map_err(anyhow::Error::msg)?,
                database_url: serve.database_url.clone(),
            };
            let outcome = self.measure(&target, Some(&mut serve)).await;
            serve.drop_all().await?;
            outcome?
        } else {
            let target = Target {
                url: self.url.clone(),
                key: self.key.key.clone(),
                namespace: self.namespace.clone(),
                database_url: self.database_url.clone(),
            };
            self.measure(&target, None).await?
        };
        self.print(&outcome);
        let (sent, done) = (outcome.enqueued.sent.len() as u64, outcome.end_to_end.len());
        if done < sent {
            bail!("{} missions did not complete", sent - done);
        }
        Ok(())
    }

    /// One run against `target`; `serve`, the bench's own, is stopped before the last
    /// PostgreSQL reading so that its backends publish their counts.
    async fn measure(
        &self,
        target: &Target,
        serve: Option<&mut OwnServe>,
    ) -> anyhow::Result<Outcome> {
        let mut meter = match self.round_trips {
            true => Some(
                Meter::connect(
                    &target.database_url,
                    &self.redis_url,
                    &self.nats_url,
                    &target.namespace,
                )
                .await?,
            ),
            false => None,
        };
        let completions = Completions::default();
        let completed = Arc::new(AtomicU64::new(0));
        let watcher = self.watch(&target.namespace, completions.clone(), completed.clone()).await?;
        let before = match &mut meter {
            Some(meter) => Some(meter.read().await?),
            None => None,
        };
        let started = Instant::now();
        let client = super::http_client(target.key.as_deref())
            .pool_max_idle_per_host(self.clients.max(self.in_flight_max))
            .build()
            .context("HTTP client")?;
        let url = format!("{}/api/missions/enqueue", target.url.trim_end_matches('/'));
        let (enqueued, kept) = match self.rate {
            Some(rate) => {
                let (enqueued, kept) = open_loop::enqueue_at_rate(
                    client,
                    url,
                    self.agent.clone(),
                    self.missions,
                    rate,
                    self.in_flight_max,
                )
                .await?;
                (enqueued, Some(kept))
            }
            None => (self.enqueue_all(client, url, started).await?, None),
        };
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
        let round_trips = match (meter, before) {
            (Some(mut meter), Some(before)) => {
                let mut after = meter.read_bus_and_redis().await?;
                if let Some(serve) = serve {
                    serve.stop().await?;
                    meter.wait_for_no_backends().await?;
                }
                after.pg_transactions = meter.pg_transactions_settled().await?;
                let per = PerMission::between(&before, &after, end_to_end.len());
                let database = meter.database().to_owned();
                meter.close().await;
                Some((database, per))
            }
            _ => None,
        };
        Ok(Outcome {
            enqueued,
            end_to_end,
            completing: last_completion - started,
            kept,
            round_trips,
        })
    }

    /// Notes every `MissionCompleted` on the bus in `completions` and counts it in
    /// `completed`; the subscription is in place before this returns, so before the first
    /// mission can complete.
    async fn watch(
        &self,
        namespace: &Namespace,
        completions: Completions,
        completed: Arc<AtomicU64>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let nats = bus::connect(&self.nats_url).await?;
        let subject = format!("{namespace}.events.mission.>");
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
    async fn enqueue_all(
        &self,
        client: reqwest::Client,
        url: String,
        started: Instant,
    ) -> anyhow::Result<Enqueued> {
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

    /// The text report (on stderr with `--json`, whose line goes to stdout).
    fn print(&self, outcome: &Outcome) {
        let lines = super::missions_report::lines(self.report_params(), outcome_figures(outcome));
        for line in &lines.text {
            if self.json { eprintln!("{line}") } else { println!("{line}") }
        }
        if self.json {
            println!("{}", lines.json);
        }
    }

    fn report_params(&self) -> super::missions_report::Params {
        super::missions_report::Params {
            missions: self.missions,
            clients: self.clients,
            rate: self.rate,
            in_flight_max: self.in_flight_max,
            own_serve: self.own_serve,
            serve_workers: self.serve_workers,
            serve_binary: self.serve_binary.as_ref().map(|path| path.display().to_string()),
            agent: self.agent.clone(),
        }
    }
}

/// The figures of an outcome, in the units the report prints.
fn outcome_figures(outcome: &Outcome) -> super::missions_report::Figures {
    let Outcome { enqueued, end_to_end, completing, kept, round_trips } = outcome;
    let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE);
    let quantiles = |h: &Histogram<u64>| [ms_at(h, 0.5), ms_at(h, 0.99), ms_max(h)];
    super::missions_report::Figures {
        enqueued: enqueued.sent.len() as u64,
        completed: end_to_end.len(),
        enqueue_per_s: per_s(enqueued.sent.len() as u64, enqueued.elapsed),
        enqueue_ms: quantiles(&enqueued.latencies),
        completed_per_s: per_s(end_to_end.len(), *completing),
        completing_s: completing.as_secs_f64(),
        end_to_end_ms: quantiles(end_to_end),
        kept: *kept,
        round_trips: round_trips.clone(),
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
