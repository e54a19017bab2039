//! `brain bench agents`: a fleet of simulated agents against a running `brain serve`.
//!
//! 1. Registers `--agents` agents (default 10,000) and has each heartbeat every
//!    `--interval-s` (10) for `--duration-s`, spread evenly over the interval. In each round
//!    `--changing-percent` of them report a status other than last time (busy, idle), the rest
//!    the same as before. One agent falls silent after its first heartbeat.
//! 2. Reports the heartbeat request latency, the events and bytes the heartbeats added to the
//!    store per agent per hour after the first round (each agent's first heartbeat is always
//!    recorded; read from PostgreSQL), the supervisor's sweep durations (from
//!    `/api/supervisor/status`), and how long after its last heartbeat the silent agent was
//!    marked unresponsive.
//! 3. Enqueues `--missions` echo missions and lets `--claimers` external agents claim and
//!    complete them over HTTP beside the serve's own in-process workers: claims/s and the
//!    complete request's latency, and how the missions split between the two.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{histogram, ms_at, ms_max};
use crate::config::DATABASE_URL_DEFAULT;

#[derive(Debug, clap::Args)]
pub struct AgentsBench {
    /// The running `brain serve` to measure.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(flatten)]
    key: super::BenchKey,
    /// The serve's database, to measure what heartbeats add to the store.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    database_url: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Seconds between one agent's heartbeats.
    #[arg(long, default_value_t = 10)]
    interval_s: u64,
    /// Length of the heartbeat phase, in seconds. To see the silent agent marked, make it
    /// longer than the serve's window plus one sweep (60 + 30 s by default).
    #[arg(long, default_value_t = 150)]
    duration_s: u64,
    /// Agents whose status changes in each round, in percent (0: an idle fleet).
    #[arg(long, default_value_t = 5)]
    changing_percent: u64,
    /// Concurrent HTTP connections the fleet's heartbeats share.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Missions enqueued for the claim phase (0: skip it).
    #[arg(long, default_value_t = 2_000)]
    missions: usize,
    /// External agents claiming over HTTP in the claim phase.
    #[arg(long, default_value_t = 16)]
    claimers: usize,
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The fleet's heartbeat schedule, shared by the tasks that send it.
#[derive(Clone)]
struct Fleet {
    client: reqwest::Client,
    url: String,
    ids: Arc<Vec<String>>,
    /// When the silent agent (the first) sent its only heartbeat.
    silent_since: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Tasks sending heartbeats; task `c` sends those of agents `c`, `c + tasks`, ...
    tasks: usize,
    changing_percent: u64,
    interval: Duration,
    start: Instant,
    phase: Duration,
}

impl Fleet {
    /// Task `c`'s heartbeats, each agent once an interval at its own offset, until the phase
    /// ends: their latencies in microseconds.
    async fn beat(self, c: usize) -> anyhow::Result<Histogram<u64>> {
        let mut latencies = histogram();
        let n = self.ids.len();
        let mut round = 0u32;
        loop {
            for i in (c..n).step_by(self.tasks) {
                let offset = self.interval.mul_f64(i as f64 / n as f64);
                let due = self.start + self.interval * round + offset;
                if due.duration_since(self.start) >= self.phase {
                    return Ok(latencies);
                }
                // The silent agent beats once, then never again.
                if i == 0 && round > 0 {
                    continue;
                }
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                // Busy in some rounds, idle in others: a change each time it flips.
                let busy =
                    (i as u64 * 7_919 + u64::from(round) * 104_729) % 100 < self.changing_percent;
                let status = if busy { "busy" } else { "idle" };
                let body = json!({ "agent_id": self.ids[i], "status": status, "load": 0.0 });
                let (status, answer) = post(&self.client, &self.url, &body).await?;
                latencies.record(sent.elapsed().as_micros() as u64).expect("in range");
                if status != 200 {
                    bail!("heartbeat answered {status}: {answer}");
                }
                if i == 0 {
                    *self.silent_since.lock().expect("not poisoned") = Some(Instant::now());
                }
            }
            round += 1;
        }
    }
}

/// What was seen while the fleet beat.
struct Watched {
    /// How long after its last heartbeat the silent agent was marked unresponsive.
    detected: Option<Duration>,
    /// Sweep durations in milliseconds.
    sweeps: Histogram<u64>,
    /// The heartbeat volume once the first round was over, and when that was.
    after_first_round: Option<((i64, i64), Duration)>,
}

impl AgentsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let base = self.url.trim_end_matches('/').to_owned();
        let client = super::http_client(self.key.key.as_deref())
            .pool_max_idle_per_host(self.clients.max(self.claimers))
            .timeout(Duration::from_secs(40))
            .build()
            .context("HTTP client")?;
        let pool = crate::eventlog::db::connect(&self.database_url, 2).await?;
        let run = uuid::Uuid::now_v7().simple().to_string();
        let owner = format!("bench-{}", &run[run.len() - 8..]);

        let started = Instant::now();
        let ids = Arc::new(self.register(&client, &base, &owner).await?);
        println!(
            "registered:          {} agents in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        self.heartbeat_phase(&client, &base, &pool, &owner, &ids).await?;
        if self.missions > 0 {
            self.claim_phase(&client, &base, &owner, &ids[1..]).await?;
        }
        Ok(())
    }

    /// The fleet heartbeats for `--duration-s` while the silent agent and the supervisor's
    /// sweeps are watched; then the report of it.
    async fn heartbeat_phase(
        &self,
        client: &reqwest::Client,
        base: &str,
        pool: &PgPool,
        owner: &str,
        ids: &Arc<Vec<String>>,
    ) -> anyhow::Result<()> {
        let before = heartbeat_volume(pool, owner).await?;
        let fleet = Fleet {
            client: client.clone(),
            url: format!("{base}/api/agents/heartbeat"),
            ids: ids.clone(),
            silent_since: Arc::default(),
            tasks: self.clients.max(1),
            changing_percent: self.changing_percent.min(100),
            interval: Duration::from_secs(self.interval_s.max(1)),
            start: Instant::now(),
            phase: Duration::from_secs(self.duration_s),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..fleet.tasks {
            tasks.spawn(fleet.clone().beat(c));
        }
        let watched = watch(&fleet, pool, owner, base).await?;
        let mut heartbeats = histogram();
        while let Some(result) = tasks.join_next().await {
            heartbeats.add(result.context("heartbeat task")??).expect("same bounds");
        }
        let elapsed = fleet.start.elapsed();
        let after = heartbeat_volume(pool, owner).await?;
        self.print_heartbeats(&fleet, &heartbeats, elapsed, before, after, &watched);
        Ok(())
    }

    fn print_heartbeats(
        &self,
        fleet: &Fleet,
        heartbeats: &Histogram<u64>,
        elapsed: Duration,
        (before_events, before_bytes): (i64, i64),
        (after_events, after_bytes): (i64, i64),
        watched: &Watched,
    ) {
        let ((first_events, first_bytes), first_at) =
            watched.after_first_round.unwrap_or(((before_events, before_bytes), Duration::ZERO));
        let agent_hours =
            fleet.ids.len() as f64 * elapsed.saturating_sub(first_at).as_secs_f64() / 3_600.0;
        let (events, bytes) = (after_events - first_events, after_bytes - first_bytes);
        println!(
            "heartbeats:          {} sent in {:.0} s ({:.0}/s), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            heartbeats.len(),
            elapsed.as_secs_f64(),
            heartbeats.len() as f64 / elapsed.as_secs_f64(),
            ms_at(heartbeats, 0.5),
            ms_at(heartbeats, 0.99),
            ms_max(heartbeats)
        );
        println!(
            "store growth:        first round {} events; after it {events} heartbeat events ({:.1} MiB): {:.1} events and {:.0} bytes per agent per hour, of {:.0} heartbeats sent ({}% changing)",
            first_events - before_events,
            bytes as f64 / (1 << 20) as f64,
            events as f64 / agent_hours,
            bytes as f64 / agent_hours,
            3_600.0 / fleet.interval.as_secs_f64(),
            self.changing_percent
        );
        let sweeps = &watched.sweeps;
        if sweeps.is_empty() {
            println!("supervisor sweeps:   none seen (is this serve's supervisor leading?)");
        } else {
            println!(
                "supervisor sweeps:   {} seen, duration p50 {} ms, max {} ms",
                sweeps.len(),
                sweeps.value_at_quantile(0.5),
                sweeps.max()
            );
        }
        match watched.detected {
            Some(after) => println!(
                "silent agent:        marked unresponsive {:.1} s after its last heartbeat",
                after.as_secs_f64()
            ),
            None => println!(
                "silent agent:        not marked within the phase (make --duration-s longer than the window plus a sweep)"
            ),
        }
    }

    async fn register(
        &self,
        client: &reqwest::Client,
        base: &str,
        owner: &str,
    ) -> anyhow::Result<Vec<String>> {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.clients.max(1) {
            let (client, next, owner) = (client.clone(), next.clone(), owner.to_owned());
            let url = format!("{base}/api/agents/register");
            let total = self.agents as u64;
            tasks.spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<_, anyhow::Error>(ids);
                    }
                    let body =
                        json!({ "name": format!("agent-{n:06}"), "kind": "echo", "owner": owner });
                    let (status, agent) = post(&client, &url, &body).await?;
                    if status != 201 && status != 200 {
                        bail!("register answered {status}: {agent}");
                    }
                    ids.push((n, agent["agent_id"].as_str().unwrap_or_default().to_owned()));
                }
            });
        }
        let mut ids = Vec::with_capacity(self.agents);
        while let Some(result) = tasks.join_next().await {
            ids.extend(result.context("register task")??);
        }
        ids.sort();
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// External agents claim and complete echo missions while the serve's workers take them
    /// too.
    async fn claim_phase(
        &self,
        client: &reqwest::Client,
        base: &str,
        owner: &str,
        agents: &[String],
    ) -> anyhow::Result<()> {
        let missions: Vec<Value> = (0..self.missions)
            .map(|n| json!({ "name": format!("{owner} claim {n}"), "agent": "echo" }))
            .collect();
        for chunk in missions.chunks(1_000) {
            let (status, answer) = post(
                client,
                &format!("{base}/api/missions/enqueue/batch"),
                &json!({ "missions": chunk }),
            )
            .await?;
            if status != 201 {
                bail!("batch enqueue answered {status}: {answer}");
            }
        }
        let claimed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for agent in agents.iter().take(self.claimers.max(1)) {
            let (client, claimed, agent) = (client.clone(), claimed.clone(), agent.clone());
            let base = base.to_owned();
            tasks.spawn(async move {
                let mut completes = Histogram::<u64>::new(3).expect("histogram");
                loop {
                    let url = format!("{base}/api/agents/{agent}/claim?wait_s=1");
                    let (status, mission) = post(&client, &url, &json!({})).await?;
                    match status {
                        200 => {}
                        204 => return Ok::<_, anyhow::Error>(completes),
                        _ => bail!("claim answered {status}: {mission}"),
                    }
                    claimed.fetch_add(1, Ordering::Relaxed);
                    let id = mission["mission_id"].as_str().unwrap_or_default();
                    let body =
                        json!({ "lease_token": mission["lease_token"], "result": { "by": agent } });
                    let sent = Instant::now();
                    let (status, answer) =
                        post(&client, &format!("{base}/api/missions/{id}/complete"), &body).await?;
                    completes.record(sent.elapsed().as_micros() as u64).expect("in range");
                    if status != 200 {
                        bail!("complete answered {status}: {answer}");
                    }
                }
            });
        }
        let mut completes = Histogram::<u64>::new(3).expect("histogram");
        while let Some(result) = tasks.join_next().await {
            completes.add(result.context("claimer")??).expect("same bounds");
        }
        // The last claimers waited a second for nothing: not part of the rate.
        let elapsed = started.elapsed().saturating_sub(Duration::from_secs(1));
        let by_agents = claimed.load(Ordering::Relaxed);
        println!(
            "external claims:     {by_agents} of {} missions by {} agents over HTTP, {:.0} claims/s; complete p50 {:.1} ms, p99 {:.1} ms",
            self.missions,
            self.claimers,
            by_agents as f64 / elapsed.as_secs_f64(),
            ms_at(&completes, 0.5),
            ms_at(&completes, 0.99)
        );
        println!(
            "in-process workers:  {} missions in the same {:.1} s",
            self.missions as u64 - by_agents.min(self.missions as u64),
            elapsed.as_secs_f64()
        );
        Ok(())
    }
}

/// While the fleet beats: whether and when the silent agent is marked unresponsive, the
/// supervisor's sweeps, and the heartbeat volume after the first round.
async fn watch(fleet: &Fleet, pool: &PgPool, owner: &str, base: &str) -> anyhow::Result<Watched> {
    let (client, start, silent) = (&fleet.client, fleet.start, &fleet.ids[0]);
    let mut watched = Watched { detected: None, sweeps: histogram(), after_first_round: None };
    let mut last_sweep_at = 0;
    while start.elapsed() < fleet.phase {
        if watched.after_first_round.is_none()
            && start.elapsed() > fleet.interval + Duration::from_secs(1)
        {
            watched.after_first_round =
                Some((heartbeat_volume(pool, owner).await?, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if watched.detected.is_none() {
            let response = client.get(format!("{base}/api/agents/{silent}")).send().await?;
            let agent: Value = response.json().await?;
            if agent["state"] == "unresponsive" {
                let since = fleet.silent_since.lock().expect("not poisoned").unwrap_or(start);
                watched.detected = Some(since.elapsed());
            }
        }
        let status: Value =
            client.get(format!("{base}/api/supervisor/status")).send().await?.json().await?;
        let sweep = &status["last_sweep"];
        if let (Some(at), Some(duration)) = (sweep["at_ms"].as_i64(), sweep["duration_ms"].as_u64())
            && at != last_sweep_at
        {
            last_sweep_at = at;
            watched.sweeps.record(duration.max(1)).ok();
        }
    }
    Ok(watched)
}

/// Heartbeat events of this run's agents and their stored size (payload and metadata).
async fn heartbeat_volume(pool: &PgPool, owner: &str) -> anyhow::Result<(i64, i64)> {
    let (events, bytes): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(pg_column_size(e.payload) + pg_column_size(e.metadata))::int8
         FROM events e
         WHERE e.stream_type = 'agent_heartbeat'
           AND e.stream_id IN (SELECT stream_id FROM events
                               WHERE stream_type = 'agent' AND event_type = 'AgentRegistered'
                                 AND payload->'registration'->>'owner' = $1)",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
    .context("measuring heartbeat events")?;
    Ok((events, bytes.unwrap_or(0)))
}
