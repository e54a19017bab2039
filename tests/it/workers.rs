//! Missions run end to end by workers, in-process and as `brain worker` processes: every
//! mission completes exactly once, a killed worker's mission runs again elsewhere after its
//! lease expires, failures are retried with backoff until `max_attempts`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brain::missions::worker::Backoff;
use brain::serve::ServeOptions;
use serde_json::{Value, json};

use crate::serve::{Process, crypto_provider, get, serve_with_options, services};
use crate::support::{TestEnv, nats_url, redis_url, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// Enqueues a mission and returns its id.
pub async fn enqueue(addr: SocketAddr, body: Value) -> String {
    crypto_provider();
    let response = crate::support::client()
        .post(format!("http://{addr}/api/missions/enqueue"))
        .json(&body)
        .send()
        .await
        .expect("enqueue request");
    let status = response.status().as_u16();
    let mission: Value = response.json().await.expect("JSON body");
    assert_eq!(status, 201, "{mission}");
    mission["mission_id"].as_str().unwrap().to_owned()
}

pub async fn mission(addr: SocketAddr, id: &str) -> Value {
    get(addr, &format!("/api/missions/{id}")).await.1
}

/// The mission once it is completed or failed (within 30 s).
pub async fn finished(addr: SocketAddr, id: &str) -> Value {
    crate::support::wait_until(
        "the mission to finish",
        std::time::Duration::from_secs(30),
        || async { matches!(mission_status(addr, id).await.as_str(), "completed" | "failed") },
    )
    .await;
    mission(addr, id).await
}

pub async fn mission_status(addr: SocketAddr, id: &str) -> String {
    mission(addr, id).await["status"].as_str().unwrap_or_default().to_owned()
}

pub async fn event_types(addr: SocketAddr, id: &str) -> Vec<String> {
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

/// The tool calls a mission's `MissionToolCalled` events record, in order.
pub async fn tool_calls(addr: SocketAddr, id: &str) -> Vec<Value> {
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "MissionToolCalled")
        .map(|e| e["payload"]["call"].clone())
        .collect()
}

/// Every mission's event types in order, by mission id.
pub async fn mission_histories(env: &TestEnv) -> Vec<(String, Vec<String>)> {
    sqlx::query_as(
        "SELECT stream_id, array_agg(event_type ORDER BY version)
         FROM events WHERE stream_type = 'mission' GROUP BY stream_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

/// A server without workers of its own, for tests that bring `brain worker` processes.
pub async fn serve_without_workers(
    env: &TestEnv,
) -> (SocketAddr, tokio_util::sync::CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>)
{
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.reaper.backoff = Backoff { base_ms: 50, max_ms: 200 };
    serve_with_options(options).await
}

/// A `brain worker` process; killed when dropped.
pub struct WorkerProcess {
    child: Child,
    id: String,
}

impl WorkerProcess {
    pub fn start(env: &TestEnv, id: &str, extra: &[&str]) -> WorkerProcess {
        WorkerProcess::start_in(crate::support::brain_command(), env, id, extra)
    }

    /// A worker whose wall clock runs `offset` (`-40s`: 40 seconds behind), through
    /// libfaketime (Debian's `faketime`, installed by `scripts/services.sh`) preloaded into
    /// the worker itself, so that killing the child kills the worker; its monotonic clock is
    /// left alone.
    fn start_skewed(env: &TestEnv, id: &str, offset: &str, extra: &[&str]) -> WorkerProcess {
        let library = std::fs::read_dir("/usr/lib")
            .unwrap()
            .filter_map(Result::ok)
            .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
            .find(|path| path.exists())
            .expect("libfaketime installed (scripts/services.sh installs it)");
        let mut command = crate::support::brain_command();
        command.env("LD_PRELOAD", library).env("FAKETIME", offset);
        command.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        WorkerProcess::start_in(command, env, id, extra)
    }

    pub fn start_in(
        mut command: Command,
        env: &TestEnv,
        id: &str,
        extra: &[&str],
    ) -> WorkerProcess {
        let agents: &[&str] = if extra.contains(&"--agents") { &[] } else { &["--agents", "echo"] };
        let slots: &[&str] =
            if extra.contains(&"--concurrency") { &[] } else { &["--concurrency", "8"] };
        let child = command
            .args(["worker", "--worker-id", id])
            .args(slots)
            .args(agents)
            .args(["--retry-backoff-ms", "50"])
            .args(extra)
            .env("DATABASE_URL", &env.database_url)
            .env("NATS_URL", nats_url())
            .env("REDIS_URL", redis_url())
            .env("BRAIN_NAMESPACE", env.namespace.as_str())
            .env("BRAIN_ECHO_FAULTS", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start brain worker");
        WorkerProcess { child, id: id.to_owned() }
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Enough for three processes to contend for every claim throughout (320 missions); the
/// benches, not this test, measure how many a second they take.
const MISSIONS_PER_CLIENT: usize = 40;

#[tokio::test]
async fn hundreds_of_missions_on_three_worker_processes_each_complete_exactly_once() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let workers: Vec<WorkerProcess> =
        ["wa", "wb", "wc"].iter().map(|id| WorkerProcess::start(&env, id, &[])).collect();

    // Enqueued from 8 clients at once while the workers already run.
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        clients.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..MISSIONS_PER_CLIENT {
                let body = json!({ "name": format!("m{client}-{n}"), "agent": "echo", "payload": { "n": n } });
                ids.push(enqueue(addr, body).await);
            }
            ids
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(batch) = clients.join_next().await {
        ids.extend(batch.unwrap());
    }
    assert_eq!(ids.len(), 8 * MISSIONS_PER_CLIENT);

    wait_until("every mission to complete", WAIT, || async {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mission_list WHERE status = 'completed'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        completed == (8 * MISSIONS_PER_CLIENT) as i64
    })
    .await;

    // Exactly once: one start and one completion per mission in the log, no failure.
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream_id,
                count(*) FILTER (WHERE event_type = 'MissionStarted'),
                count(*) FILTER (WHERE event_type = 'MissionCompleted')
         FROM events WHERE stream_type = 'mission' GROUP BY stream_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(counts.len(), 8 * MISSIONS_PER_CLIENT);
    for (id, started, completed) in &counts {
        assert!(ids.contains(id), "unknown mission {id}");
        assert_eq!((*started, *completed), (1, 1), "mission {id}");
    }
    // Every worker took part.
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT metadata->>'actor' FROM events WHERE event_type = 'MissionCompleted'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for worker in &workers {
        assert!(actors.contains(&format!("worker:{}", worker.id)), "{actors:?}");
    }
    // The status route lists the three, alive, with their counts adding up.
    let (status, page) = get(addr, "/api/missions/worker/status").await;
    assert_eq!(status, 200, "{page}");
    let listed = page["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{page}");
    assert!(listed.iter().all(|worker| worker["alive"] == true), "{page}");
    drop(workers);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_killed_workers_mission_completes_on_another_after_its_lease_expires() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let mut first = WorkerProcess::start(&env, "first", &["--lease-ms", "1500"]);

    // The first attempt never answers on its own: only the lease can free the mission.
    let body = json!({ "name": "stubborn", "agent": "echo", "payload": { "hang_attempts": 1 } });
    let id = enqueue(addr, body).await;
    wait_until("the first worker to run the mission", WAIT, || async {
        mission(addr, &id).await["worker_id"] == "first"
    })
    .await;
    first.kill();
    let _second = WorkerProcess::start(&env, "second", &["--lease-ms", "1500"]);

    wait_until("the mission to complete", WAIT, || async {
        mission_status(addr, &id).await == "completed"
    })
    .await;
    // Lease renewals may or may not have happened before the kill; the rest is fixed.
    let mut types = event_types(addr, &id).await;
    types.retain(|event_type| event_type != "MissionProgressed");
    assert_eq!(
        types,
        [
            "MissionEnqueued",
            "MissionStarted",
            "MissionLeaseExpired",
            "MissionRetryDue",
            "MissionStarted",
            "MissionCompleted"
        ]
    );
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    let started: Vec<&Value> =
        events.as_array().unwrap().iter().filter(|e| e["event_type"] == "MissionStarted").collect();
    assert_eq!(started[0]["payload"]["worker_id"], "first");
    assert_eq!(started[1]["payload"]["worker_id"], "second");
    let completed = events.as_array().unwrap().last().unwrap();
    assert_eq!(completed["metadata"]["actor"], "worker:second");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn failures_are_retried_with_backoff_until_max_attempts() {
    let env = TestEnv::new().await;
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let workers = options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 2);
    workers.backoff = Backoff { base_ms: 100, max_ms: 1_000 };
    let (addr, shutdown, task) = serve_with_options(options).await;

    let twice = json!({ "name": "flaky", "agent": "echo", "payload": { "fail_attempts": 2 } });
    let always = json!({ "name": "broken", "agent": "echo", "payload": { "fail_attempts": 99 } });
    let slow = json!({
        "name": "slow", "agent": "echo", "timeout_s": 1, "max_attempts": 1,
        "payload": { "delay_ms": 60_000 }
    });
    let (twice, always) = (enqueue(addr, twice).await, enqueue(addr, always).await);
    let slow = enqueue(addr, slow).await;
    for (id, status) in [(&twice, "completed"), (&always, "failed"), (&slow, "failed")] {
        wait_until(&format!("{id} to be {status}"), WAIT, || async {
            mission_status(addr, id).await == status
        })
        .await;
    }

    // Failing twice then succeeding: three attempts, two backoffs, in the history.
    let (_, events) = get(addr, &format!("/api/missions/{twice}/events")).await;
    let events = events.as_array().unwrap();
    let of = |t: &str| events.iter().filter(|e| e["event_type"] == t).collect::<Vec<_>>();
    assert_eq!(of("MissionStarted").len(), 3);
    let failures = of("MissionAttemptFailed");
    assert_eq!(failures.len(), 2);
    for failure in failures {
        let (at, retry_at) = (
            failure["payload"]["at_ms"].as_i64().unwrap(),
            failure["payload"]["retry_at_ms"].as_i64(),
        );
        let backoff = retry_at.expect("a retry is scheduled") - at;
        assert!((50..=1_000).contains(&backoff), "backoff {backoff} ms");
    }
    let done = mission(addr, &twice).await;
    assert_eq!(done["result"], json!({ "echo": { "fail_attempts": 2 }, "attempt": 3 }));
    assert_eq!(done["errors"].as_array().unwrap().len(), 2);

    // Always failing: `failed` after max_attempts (3), every attempt's error kept.
    let failed = mission(addr, &always).await;
    assert_eq!(failed["attempt"], 3);
    let errors: Vec<&str> =
        failed["errors"].as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(
        errors,
        [
            "echo: asked to fail attempt 1",
            "echo: asked to fail attempt 2",
            "echo: asked to fail attempt 3"
        ]
    );
    let last = event_types(addr, &always).await;
    assert_eq!(last.last().map(String::as_str), Some("MissionAttemptFailed"));

    // An attempt past the mission's timeout fails like any other.
    let timed_out = mission(addr, &slow).await;
    assert_eq!(timed_out["errors"][0]["error"], "timed out after 1000 ms");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn killing_a_serve_with_workers_under_load_loses_no_accepted_mission() {
    let env = TestEnv::new().await;
    let args = ["--workers", "8", "--lease-ms", "1500", "--retry-backoff-ms", "50"];
    let mut doomed = Process::start_with(&env, &args).await;

    // Missions that take a moment each; the first four never answer on their first attempt,
    // so the doomed server surely holds some when it dies.
    let body = |n: usize| {
        let payload = if n < 4 { json!({ "hang_attempts": 1 }) } else { json!({ "delay_ms": 20 }) };
        json!({ "name": format!("m{n}"), "agent": "echo", "payload": payload })
    };
    let mut ids = Vec::new();
    for n in 0..150 {
        ids.push(enqueue(doomed.addr, body(n)).await);
    }
    wait_until("the doomed server to run missions", WAIT, || async {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MissionStarted'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        running > 20
    })
    .await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let survivor = Process::start_with(&env, &args).await;
    for n in 150..300 {
        ids.push(enqueue(survivor.addr, body(n)).await);
    }

    wait_until("every accepted mission to complete", WAIT, || async {
        let completed: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'MissionCompleted'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        completed == 300
    })
    .await;
    // Every accepted mission is in the log, completed once; those the killed server held
    // were put back by lease expiry and completed by the survivor.
    let histories = mission_histories(&env).await;
    assert_eq!(histories.len(), 300);
    let mut expired = 0;
    for (id, types) in &histories {
        assert!(ids.contains(id));
        assert_eq!(types.iter().filter(|t| *t == "MissionCompleted").count(), 1, "{id}: {types:?}");
        expired += types.iter().filter(|t| *t == "MissionLeaseExpired").count();
    }
    assert!(expired >= 4, "the missions the killed server held came back by lease expiry");
}

#[tokio::test]
async fn workers_whose_wall_clocks_run_5_s_and_40_s_behind_never_lose_a_live_lease_or_share_a_mission()
 {
    // Given a supervisor on a true clock and two workers whose wall clocks run behind by more
    // than a lease lasts (3 s): judged on their own clocks, every lease they granted would
    // look expired the moment it was granted.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let lease = ["--lease-ms", "3000"];
    let skewed = [
        WorkerProcess::start_skewed(&env, "w-5s", "-5s", &lease),
        WorkerProcess::start_skewed(&env, "w-40s", "-40s", &lease),
    ];

    // When missions that outlast a lease (each renews it) run on them.
    let mut ids = Vec::new();
    for n in 0..24 {
        let body =
            json!({ "name": format!("m{n}"), "agent": "echo", "payload": { "delay_ms": 2_500 } });
        ids.push(enqueue(addr, body).await);
    }
    wait_until("every mission to complete", WAIT, || async {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MissionCompleted'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        completed == 24
    })
    .await;

    // Then no lease expired while its holder was alive and renewing, and no mission ever ran
    // on two workers: each started once, on one of the skewed workers, and completed once.
    let histories = mission_histories(&env).await;
    assert_eq!(histories.len(), 24);
    for (id, types) in &histories {
        let count = |wanted: &str| types.iter().filter(|t| *t == wanted).count();
        assert_eq!(count("MissionLeaseExpired"), 0, "{id}: {types:?}");
        assert_eq!((count("MissionStarted"), count("MissionCompleted")), (1, 1), "{id}: {types:?}");
        assert!(count("MissionProgressed") >= 1, "the lease was renewed: {id}: {types:?}");
    }
    let workers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT payload->>'worker_id' FROM events WHERE event_type = 'MissionStarted'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(workers.iter().all(|w| w == "w-5s" || w == "w-40s"), "{workers:?}");
    drop(skewed);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
