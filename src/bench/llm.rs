//! `brain bench llm`: the LLM gateway against a fake provider ([`llm_fake`]), in two parts.
//!
//! 1. **Shared limits.** The provider lets R requests per second through and answers 429 with
//!    `Retry-After` beyond. `--processes` processes of `--callers` callers each call it as
//!    fast as they can for `--duration-s`, first each on its own (retrying 429s, as any client
//!    does), then through the shared limiter. After `--warmup-s`: the provider's answers per
//!    second as a fraction of R, and the share of calls that met a 429.
//! 2. **Added latency.** `--streams` concurrent streaming calls straight to an unlimited fake,
//!    then the same through `POST /v1/chat/completions` of a `brain serve` started here (on a
//!    database and namespace of its own, dropped after), in alternating rounds: p50 and p99
//!    of each, and what the gateway adds.
//!
//! [`llm_fake`]: super::llm_fake

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::llm_fake::FakeProvider;
use super::own_serve::{configure_llm, drop_everything, fresh_database};
use super::{BenchServices, histogram, ms_at};
use crate::config::{Namespace, REDIS_URL_DEFAULT, Services};
use crate::eventlog::store::{Append, CommitterConfig, EventStore};
use crate::llm::gateway::{Gateway, ProviderKind, Route, Target};
use crate::llm::limits::Limiter;
use crate::llm::{Message, Reason, Role};

#[derive(Debug, clap::Args)]
pub struct LlmBench {
    #[command(flatten)]
    services: super::BenchServices,
    /// R: requests per second the fake provider lets through.
    #[arg(long, default_value_t = 100.0)]
    capacity: f64,
    #[arg(long, default_value_t = 3)]
    processes: usize,
    /// Callers per process, each making one call at a time.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    #[arg(long, default_value_t = 40)]
    duration_s: u64,
    /// Calls started before this are not counted.
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    /// How long the fake takes to answer.
    #[arg(long, default_value_t = 20)]
    provider_latency_ms: u64,
    /// Concurrent streaming calls in the latency part.
    #[arg(long, default_value_t = 500)]
    streams: usize,
    /// Rounds of the latency part, direct and through BRAiN alternating.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long)]
    skip_limits: bool,
    #[arg(long)]
    skip_latency: bool,
}

/// One process of callers (started by `brain bench llm`, not by hand).
#[derive(Debug, clap::Args)]
pub struct LlmCallers {
    #[arg(long)]
    url: String,
    #[arg(long, env = "REDIS_URL", default_value = REDIS_URL_DEFAULT)]
    redis_url: String,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    callers: usize,
    #[arg(long)]
    duration_s: u64,
    #[arg(long)]
    warmup_s: u64,
    /// Each process on its own: no shared limiter.
    #[arg(long)]
    alone: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct CallerCounts {
    calls: u64,
    answered: u64,
    met_429: u64,
    failed: u64,
}

impl CallerCounts {
    fn add(&mut self, other: &CallerCounts) {
        self.calls += other.calls;
        self.answered += other.answered;
        self.met_429 += other.met_429;
        self.failed += other.failed;
    }
}

fn bench_route(url: &str) -> Route {
    Route {
        targets: vec![Target::new(ProviderKind::Openai, url, "bench")],
        temperature: None,
        max_tokens: Some(16),
    }
}

impl LlmCallers {
    pub async fn run(self) -> anyhow::Result<()> {
        // The bench's route is a local fake: no key, no start-up settings.
        let mut gateway = Gateway::new(
            Default::default(),
            Default::default(),
            crate::llm::retry::RetryPolicy::default(),
        );
        if !self.alone {
            let redis =
                redis::Client::open(self.redis_url.as_str())?.get_connection_manager().await?;
            let namespace = Namespace::parse(&self.namespace).map_err(anyhow::Error::msg)?;
            gateway.limiter = Some(Limiter::new(redis, &namespace));
        }
        let route = bench_route(&self.url);
        let started = Instant::now();
        let (warmup, end) =
            (Duration::from_secs(self.warmup_s), Duration::from_secs(self.duration_s));
        let tasks: Vec<_> = (0..self.callers)
            .map(|_| {
                let (gateway, route) = (gateway.clone(), route.clone());
                tokio::spawn(async move {
                    let mut counts = CallerCounts::default();
                    let messages = vec![Message::new(Role::User, "bench")];
                    while started.elapsed() < end {
                        let counted = started.elapsed() >= warmup;
                        let outcome = gateway.chat(&route, &messages, &[], None).await;
                        if !counted {
                            continue;
                        }
                        counts.calls += 1;
                        let tries = match &outcome {
                            Ok(answered) => &answered.tries,
                            Err(failed) => &failed.tries,
                        };
                        if tries.iter().any(|t| t.failure == Some(Reason::RateLimited)) {
                            counts.met_429 += 1;
                        }
                        match outcome {
                            Ok(_) => counts.answered += 1,
                            Err(_) => counts.failed += 1,
                        }
                    }
                    counts
                })
            })
            .collect();
        let mut all = CallerCounts::default();
        for task in tasks {
            all.add(&task.await?);
        }
        println!("{}", serde_json::to_string(&all)?);
        Ok(())
    }
}

impl LlmBench {
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::ensure!(self.warmup_s < self.duration_s, "--warmup-s must be below --duration-s");
        if !self.skip_limits {
            println!(
                "shared limits: a provider of R = {} requests/s, {} processes x {} callers, {} s ({} s warm-up)",
                self.capacity, self.processes, self.callers, self.duration_s, self.warmup_s
            );
            for alone in [true, false] {
                self.limits_part(alone).await?;
            }
        }
        if !self.skip_latency {
            self.latency_part().await?;
        }
        Ok(())
    }

    async fn limits_part(&self, alone: bool) -> anyhow::Result<()> {
        let fake = FakeProvider {
            capacity_per_s: Some(self.capacity),
            latency: Duration::from_millis(self.provider_latency_ms),
            pieces: 8,
            piece_gap: Duration::ZERO,
            calls_tools: false,
            spawns: 0,
        }
        .start()
        .await?;
        let namespace = format!("bench_llm_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let children = self.spawn_callers(&fake.url, &namespace, alone)?;
        tokio::time::sleep(Duration::from_secs(self.warmup_s)).await;
        fake.measure_from_now();
        let measured = Duration::from_secs(self.duration_s - self.warmup_s);
        tokio::time::sleep(measured).await;
        let answered = fake.counts.answered_measured.load(std::sync::atomic::Ordering::Relaxed);
        let all = caller_counts(children).await?;
        let throughput = answered as f64 / measured.as_secs_f64();
        println!(
            "  {:<28} throughput {:>7.1}/s = {:.3} R; calls that met a 429: {:>5.1} % ({} of {}); failed: {}",
            if alone { "each process on its own:" } else { "through the shared limiter:" },
            throughput,
            throughput / self.capacity,
            100.0 * all.met_429 as f64 / all.calls.max(1) as f64,
            all.met_429,
            all.calls,
            all.failed,
        );
        if !alone {
            self.print_limiter_and_drop(&namespace).await?;
        }
        Ok(())
    }

    /// Starts the `--processes` caller processes against the provider at `url`.
    fn spawn_callers(
        &self,
        url: &str,
        namespace: &str,
        alone: bool,
    ) -> anyhow::Result<Vec<tokio::process::Child>> {
        let exe = std::env::current_exe().context("the brain executable")?;
        let mut children = Vec::new();
        for _ in 0..self.processes {
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["bench", "llm-callers", "--url", url, "--namespace", namespace])
                .args(["--redis-url", &self.services.redis_url])
                .args(["--callers", &self.callers.to_string()])
                .args(["--duration-s", &self.duration_s.to_string()])
                .args(["--warmup-s", &self.warmup_s.to_string()])
                .stdout(Stdio::piped())
                .env("RUST_LOG", "error")
                .kill_on_drop(true);
            if alone {
                command.arg("--alone");
            }
            children.push(command.spawn().context("start a caller process")?);
        }
        Ok(children)
    }

    /// What the shared limiter of `namespace` learned, then its keys dropped.
    async fn print_limiter_and_drop(&self, namespace: &str) -> anyhow::Result<()> {
        let mut redis =
            redis::Client::open(self.services.redis_url.as_str())?.get_connection_manager().await?;
        let state: std::collections::HashMap<String, String> = redis::AsyncCommands::hgetall(
            &mut redis,
            format!("{{{namespace}}}:llm:lim:openai/bench"),
        )
        .await?;
        println!(
            "  limiter: learned rate {} requests/s, {} pauses, {} decreases",
            state
                .get("rate")
                .and_then(|r| r.parse::<f64>().ok())
                .map_or("-".into(), |r| format!("{r:.1}")),
            state.get("pauses").map_or("0", String::as_str),
            state.get("cuts").map_or("0", String::as_str),
        );
        crate::kv::drop_prefix(&mut redis, &format!("{{{namespace}}}")).await?;
        Ok(())
    }

    async fn latency_part(&self) -> anyhow::Result<()> {
        let fake = FakeProvider {
            capacity_per_s: None,
            latency: Duration::from_millis(self.provider_latency_ms),
            pieces: 16,
            piece_gap: Duration::from_millis(2),
            calls_tools: false,
            spawns: 0,
        }
        .start()
        .await?;
        let services = BenchServices {
            database_url: fresh_database(&self.services, "brain_bench_llm").await?,
            ..self.services.clone()
        };
        let namespace = Namespace::parse("bench_llm").map_err(anyhow::Error::msg)?;
        let shutdown = CancellationToken::new();
        let key = crate::identity::token::generate()?.expose();
        let server = self.start_serve(&services, &namespace, shutdown.clone(), &key).await?;
        let brain = format!("http://{}", server.local_addr);
        let client =
            super::http_client(Some(&key)).pool_max_idle_per_host(self.streams * 2).build()?;
        configure_llm(&client, &brain, &fake.url).await?;
        let direct = format!("{}/v1/chat/completions", fake.url);
        let through = format!("{brain}/v1/chat/completions");
        self.compare(&client, &direct, &through).await?;
        steps(&services.database_url, &services.redis_url, &namespace, self.streams).await?;
        shutdown.cancel();
        let _ = server.task.await;
        drop_everything(&services, &namespace).await
    }

    /// A `brain serve` in this process, with room for the streams' connections.
    async fn start_serve(
        &self,
        services: &BenchServices,
        namespace: &Namespace,
        shutdown: CancellationToken,
        key: &str,
    ) -> anyhow::Result<crate::serve::Server> {
        let services = Services {
            database_url: services.database_url.clone(),
            nats_url: services.nats_url.clone(),
            redis_url: services.redis_url.clone(),
            namespace: namespace.clone(),
            db_connections_max: 16,
        };
        let mut options = crate::serve::ServeOptions::new(services, "127.0.0.1:0".parse()?);
        options.http.connections_max = options.http.connections_max.max(self.streams * 2);
        // Every stream comes from this host's one address.
        options.http.connections_per_address_max = options.http.connections_max;
        options.access.admin_key = Some(key.to_owned());
        crate::serve::start(options, shutdown).await
    }

    /// Streaming calls straight to the provider (`direct`) and through the gateway
    /// (`through`) in alternating rounds, and what the gateway adds.
    async fn compare(
        &self,
        client: &reqwest::Client,
        direct: &str,
        through: &str,
    ) -> anyhow::Result<()> {
        println!(
            "added latency: {} concurrent streaming calls of 16 pieces ({} ms to the first, 2 ms apart), {} rounds",
            self.streams, self.provider_latency_ms, self.rounds
        );
        // Warm both paths: connections, the configuration, the limiter's keys.
        stream_round(client, direct, 50).await?;
        stream_round(client, through, 50).await?;
        let (mut direct_ms, mut through_ms) = (histogram(), histogram());
        for _ in 0..self.rounds {
            direct_ms.add(stream_round(client, direct, self.streams).await?).expect("same bounds");
            through_ms
                .add(stream_round(client, through, self.streams).await?)
                .expect("same bounds");
        }
        let (direct_ms, through_ms) = (&direct_ms, &through_ms);
        println!(
            "  straight to the provider: p50 {:>7.1} ms  p99 {:>7.1} ms",
            ms_at(direct_ms, 0.5),
            ms_at(direct_ms, 0.99)
        );
        println!(
            "  through BRAiN (/v1):      p50 {:>7.1} ms  p99 {:>7.1} ms",
            ms_at(through_ms, 0.5),
            ms_at(through_ms, 0.99)
        );
        println!(
            "  added by the gateway:     p50 {:>7.1} ms  p99 {:>7.1} ms",
            ms_at(through_ms, 0.5) - ms_at(direct_ms, 0.5),
            ms_at(through_ms, 0.99) - ms_at(direct_ms, 0.99)
        );
        Ok(())
    }
}

/// Waits for the caller processes and adds up what they counted.
async fn caller_counts(children: Vec<tokio::process::Child>) -> anyhow::Result<CallerCounts> {
    let mut all = CallerCounts::default();
    for mut child in children {
        let mut out = String::new();
        child.stdout.take().context("caller output")?.read_to_string(&mut out).await?;
        let status = child.wait().await?;
        anyhow::ensure!(status.success(), "a caller process failed: {status}");
        let counts: CallerCounts =
            serde_json::from_str(out.trim()).with_context(|| format!("caller output {out:?}"))?;
        all.add(&counts);
    }
    Ok(all)
}

/// `calls` concurrent streaming calls to `url`, each read to its `[DONE]`: their latencies in
/// microseconds.
async fn stream_round(
    client: &reqwest::Client,
    url: &str,
    calls: usize,
) -> anyhow::Result<Histogram<u64>> {
    let body = json!({ "model": "bench", "stream": true, "messages": [{ "role": "user", "content": "bench" }] });
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let response = client.post(&url).json(&body).send().await?;
                anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
                let mut stream = response.bytes_stream();
                let mut tail = Vec::new();
                while let Some(piece) = stream.next().await {
                    let piece = piece?;
                    tail.extend_from_slice(&piece);
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
                anyhow::ensure!(
                    String::from_utf8_lossy(&tail).contains("[DONE]"),
                    "{url}: the stream did not end with [DONE]"
                );
                Ok(started.elapsed())
            })
        })
        .collect();
    let mut latencies = histogram();
    for task in tasks {
        let elapsed: Duration = task.await??;
        latencies.record(elapsed.as_micros() as u64).expect("in range");
    }
    Ok(latencies)
}

/// `concurrency` runs of the step `make` builds, at once: their times in microseconds.
async fn timed<F, Fut>(concurrency: usize, make: F) -> anyhow::Result<Histogram<u64>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let step = make();
            tokio::spawn(async move {
                let started = Instant::now();
                step.await?;
                Ok::<_, anyhow::Error>(started.elapsed())
            })
        })
        .collect();
    let mut latencies = histogram();
    for task in tasks {
        latencies.record(task.await??.as_micros() as u64).expect("in range");
    }
    Ok(latencies)
}

/// The gateway's own steps of a `/v1` call, each run `concurrency` at a time on its own: read
/// the configuration, the three limiter steps, record the call. Their p50 and p99 say where
/// the added latency goes.
async fn steps(
    database_url: &str,
    redis_url: &str,
    namespace: &Namespace,
    concurrency: usize,
) -> anyhow::Result<()> {
    let pool = crate::eventlog::db::connect(database_url, 16).await?;
    let (store, committer) =
        EventStore::start(pool.clone(), namespace.as_str(), CommitterConfig::default());
    let redis = redis::Client::open(redis_url)?.get_connection_manager().await?;
    let limiter = Limiter::new(redis, namespace);
    let target = Target::new(ProviderKind::Openai, "http://unused", "steps");
    let read_config = || {
        let store = store.clone();
        async move {
            crate::llm::config::current(&store, &Default::default())
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    };
    // Warm: the pool's connections open before anything is timed.
    timed(concurrency, read_config).await?;
    let config = timed(concurrency, read_config).await?;
    let limits = timed(concurrency, || {
        let (limiter, target) = (limiter.clone(), target.clone());
        async move {
            let permit = limiter.acquire(&target, 100, Duration::from_secs(30)).await?;
            limiter.done(permit, crate::llm::limits::Outcome::Answered { tokens_used: 100 }).await;
            Ok(())
        }
    })
    .await?;
    let record = timed(concurrency, || {
        let (store, append) = (store.clone(), llm_call_recorded());
        async move { store.append(append).await.map(|_| ()).map_err(anyhow::Error::from) }
    })
    .await?;
    println!("  its steps, {concurrency} at once:");
    for (name, histogram) in [
        ("read the configuration", &config),
        ("limiter (take, enter, done)", &limits),
        ("record the call", &record),
    ] {
        println!(
            "    {name:<28} p50 {:>7.1} ms  p99 {:>7.1} ms",
            ms_at(histogram, 0.5),
            ms_at(histogram, 0.99)
        );
    }
    drop(store);
    let _ = committer.await;
    pool.close().await;
    Ok(())
}

/// The record of one `/v1` call, as the gateway appends it.
fn llm_call_recorded() -> Append {
    let call = domain::mission::LlmCall {
        route: "default".into(),
        kind: String::new(),
        provider: "openai".into(),
        model: "steps".into(),
        tries: 1,
        request: json!([{ "role": "user", "content": "bench" }]),
        response: json!({ "content": "word ".repeat(16) }),
        input_tokens: 12,
        output_tokens: 16,
        cost_usd: 0.0,
        latency_ms: 70,
        outcome: "ok".into(),
        replayed: false,
        usage_estimate: None,
    };
    let event = domain::llm_call::LlmCallEvent::LlmCalled { call, by: "bench".into(), at_ms: 0 };
    Append {
        stream_type: domain::llm_call::stream_type(),
        stream_id: domain::StreamId::from(uuid::Uuid::now_v7()),
        expected: domain::ExpectedVersion::Exact(0),
        events: vec![crate::eventlog::command::new_event(&event)],
        metadata: domain::EventMetadata::new("bench", time::OffsetDateTime::now_utc()),
    }
}
