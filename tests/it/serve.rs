//! `brain serve` as users run it: the HTTP endpoints in-process, and two real processes
//! sharing one namespace, of which only one relays.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brain::config::Services;
use brain::serve::{self, ServeOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{TestEnv, append_streams, nats_url, wait_until};

const WAIT: Duration = Duration::from_secs(30);

pub fn services(env: &TestEnv, redis_url: &str) -> Services {
    Services {
        database_url: env.database_url.clone(),
        nats_url: nats_url(),
        redis_url: redis_url.to_owned(),
        namespace: env.namespace.clone(),
        db_connections_max: 8,
    }
}

pub use crate::support::redis_url;

pub async fn serve_in_process_with(
    services: Services,
    default_agent: &str,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut options = ServeOptions::new(services, "127.0.0.1:0".parse().unwrap());
    options.default_agent = default_agent.to_owned();
    serve_with_options(options).await
}

pub async fn serve_with_options(
    mut options: ServeOptions,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    options.access.admin_key.get_or_insert_with(|| crate::support::ADMIN_TOKEN.to_owned());
    // A serve started for tests: echo obeys the payload's failure switches.
    options.agents.builtin.echo_faults = true;
    test_log();
    let shutdown = CancellationToken::new();
    let server = serve::start(options, shutdown.clone()).await.expect("server starts");
    (server.local_addr, shutdown, server.task)
}

/// A serve whose workers run the `echo` agent (two slots), left running for the test.
pub async fn serve_with_echo(env: &crate::support::TestEnv) -> SocketAddr {
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let workers = options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 2);
    workers.worker_id = format!("w-{}", uuid::Uuid::now_v7().simple());
    let (addr, _shutdown, _task) = serve_with_options(options).await;
    addr
}

pub async fn serve_in_process(
    services: Services,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    serve_in_process_with(services, brain::config::DEFAULT_AGENT).await
}

/// Serve's errors and warnings go to the test's captured output, so a test that fails on a
/// 5xx shows the cause beside the failure (`RUST_LOG` overrides the level).
fn test_log() {
    static LOG: std::sync::Once = std::sync::Once::new();
    LOG.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// reqwest is built without a default crypto provider (one TLS stack in the tree): a
/// process installs ring's before its first client.
pub fn crypto_provider() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn http_get(
    url: String,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    crate::support::client().get(url).send()
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let response = http_get(format!("http://{addr}{path}")).await.expect("request");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[tokio::test]
async fn serve_reports_health_readiness_metrics_and_the_event_log() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    assert_eq!(get(addr, "/health").await, (200, serde_json::json!({ "status": "ok" })));
    let (status, ready) = get(addr, "/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["checks"],
        serde_json::json!({
            "postgres": "ok", "nats": "ok", "redis": "ok", "committer": "ok", "relay": "ok"
        })
    );

    let (store, _committer) = env.store();
    append_streams(&store, 30, 2).await;
    let (status, page) = get(addr, "/api/events?after=10&limit=5").await;
    assert_eq!(status, 200);
    let positions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [11, 12, 13, 14, 15]);
    let head = crate::support::KEY_EVENTS + 60;
    assert_eq!((page["next_after"].as_u64(), page["head"].as_u64()), (Some(15), Some(head)));

    // The projector behind the stats endpoint catches up with what was appended.
    wait_until("event type stats to count every event", WAIT, || async {
        let (_, stats) = get(addr, "/api/stats/event-types").await;
        stats["position"] == head
    })
    .await;
    let (_, stats) = get(addr, "/api/stats/event-types").await;
    let total: u64 = stats["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["events"].as_u64().unwrap())
        .sum();
    assert_eq!(total, head);

    let metrics = http_get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("brain_relay_lag_events"), "{metrics}");
    assert!(
        metrics.contains("brain_projector_position{projector=\"event_type_stats\"}"),
        "{metrics}"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_query_strings_get_a_4xx_with_the_error_shape_and_change_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    for (query, status, code) in [
        ("limit=0", 400, "invalid_field"),
        ("limit=1001", 400, "invalid_field"),
        ("after=-1", 400, "invalid_query"),
        ("after=abc", 400, "invalid_query"),
        ("colour=blue", 400, "invalid_query"),
    ] {
        let (got, body) = get(addr, &format!("/api/events?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{query}: {body}"
        );
    }
    assert_eq!(env.head().await, crate::support::KEY_EVENTS);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn ready_answers_503_naming_the_service_that_does_not_answer() {
    let env = TestEnv::new().await;
    // A port with nothing behind it stands in for a Redis that is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, shutdown, task) =
        serve_in_process(services(&env, &format!("redis://{closed}"))).await;
    let (status, ready) = get(addr, "/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(
        (ready["checks"]["postgres"].as_str(), ready["checks"]["nats"].as_str()),
        (Some("ok"), Some("ok"))
    );
    assert_ne!(ready["checks"]["redis"], "ok");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A `brain serve` process; killed when dropped.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    pub async fn start(env: &TestEnv) -> Process {
        Process::start_with(env, &[]).await
    }

    /// With extra `brain serve` arguments.
    pub async fn start_with(env: &TestEnv, args: &[&str]) -> Process {
        let mut child = crate::support::brain_command()
            .arg("serve")
            .args(args)
            .env("DATABASE_URL", &env.database_url)
            .env("NATS_URL", nats_url())
            .env("REDIS_URL", redis_url())
            .env("BRAIN_NAMESPACE", env.namespace.as_str())
            .env("BRAIN_HTTP_ADDR", "127.0.0.1:0")
            .env("BRAIN_ECHO_FAULTS", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start brain serve");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default()
        });
        let line = tokio::time::timeout(WAIT, line).await.expect("serve starts").unwrap();
        let addr = line.rsplit("http://").next().and_then(|a| a.parse().ok());
        Process { child, addr: addr.unwrap_or_else(|| panic!("unexpected first line {line:?}")) }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text =
            http_get(format!("http://{}/metrics", self.addr)).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn of_two_serve_processes_only_one_relays_and_the_other_takes_over_when_it_is_killed() {
    let env = TestEnv::new().await;
    // No workers: their built-in agents would add registrations and heartbeats to the log.
    let processes = [
        Process::start_with(&env, &["--workers", "0"]).await,
        Process::start_with(&env, &["--workers", "0"]).await,
    ];
    let (store, _committer) = env.store();
    append_streams(&store, 100, 1).await;
    wait_until("the stream to hold every event", WAIT, || async {
        env.stream_last_sequence().await == crate::support::KEY_EVENTS + 100
    })
    .await;

    // Only one of them published what was appended once both ran. (The admin key's event,
    // recorded while the first one started, went out from whichever led then.)
    let all = (crate::support::KEY_EVENTS + 100) as f64;
    let mut published = Vec::new();
    for process in &processes {
        published.push(process.metric("brain_relay_published_total").await);
    }
    // (The admin key's event may also have gone out before either counted it.)
    let total: f64 = published.iter().sum();
    assert!(total == all || total == 100.0, "published: {published:?}");
    assert!(published.iter().any(|&n| n >= 100.0), "one published it all: {published:?}");
    let active = if published[0] >= 100.0 { 0 } else { 1 };
    let survivor_before = published[1 - active];
    let [first, second] = processes;
    let (mut killed, survivor) = if active == 0 { (first, second) } else { (second, first) };

    // When the active one is killed outright, the other takes over.
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    append_streams(&store, 50, 1).await;
    wait_until("the survivor to relay what followed", WAIT, || async {
        env.stream_last_sequence().await == crate::support::KEY_EVENTS + 150
    })
    .await;
    assert_eq!(survivor.metric("brain_relay_published_total").await, survivor_before + 50.0);
    env.assert_bus_mirrors_store().await;
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_with_everything_relayed() {
    let env = TestEnv::new().await;
    let mut process = Process::start(&env).await;
    let (store, _committer) = env.store();
    append_streams(&store, 40, 1).await;
    let status =
        Command::new("kill").arg("-TERM").arg(process.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = process.child.wait();
        (process, status)
    });
    let (_process, status) = tokio::time::timeout(WAIT, exit).await.expect("exits").unwrap();
    assert!(status.unwrap().success(), "brain serve exits 0 on SIGTERM");
    env.assert_bus_mirrors_store().await;
}

#[test]
fn namespace_is_validated_on_the_command_line() {
    let output = crate::support::brain_command()
        .args(["serve", "--namespace", "Not.Valid"])
        .output()
        .expect("run brain");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("namespace \"Not.Valid\" must be"), "{stderr}");
}
