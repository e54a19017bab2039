//! `brain projections`: a rebuild run from another process while a serve takes missions and
//! answers reads swaps the models in without one failed read, the serve's projectors carry on
//! from the rebuilt models, and `status` then shows each model at the head with its reset;
//! a name that is no model, or a model without a shadow, is refused with exit code 2 and why.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{TestEnv, client, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// Most missions the load enqueues.
const LOAD_MISSIONS_MAX: u64 = 600;

fn projections(env: &TestEnv, args: &[&str]) -> Output {
    let mut command = crate::support::brain_command();
    command
        .arg("projections")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", redis_url())
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn");
    command.output().expect("run brain projections")
}

async fn projections_async(env: &TestEnv, args: &'static [&'static str]) -> Output {
    let (database_url, namespace) = (env.database_url.clone(), env.namespace.to_string());
    tokio::task::spawn_blocking(move || {
        let mut command = crate::support::brain_command();
        command
            .arg("projections")
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("BRAIN_NAMESPACE", namespace)
            .env("RUST_LOG", "warn");
        command.output().expect("run brain projections")
    })
    .await
    .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn enqueue(addr: SocketAddr, n: u64) -> reqwest::StatusCode {
    let body = json!({ "name": format!("load {n}"), "agent": "echo", "payload": { "n": n } });
    let url = format!("http://{addr}/api/missions/enqueue");
    let response = client().post(url).json(&body).send().await;
    response.expect("enqueue answers").status()
}

/// Counts reads of the two rebuilt models' routes, and those that did not answer 200.
#[derive(Default)]
struct Reads {
    done: AtomicU64,
    failed: AtomicU64,
}

async fn read_while(addr: SocketAddr, reads: Arc<Reads>, going: Arc<AtomicBool>) {
    let paths = ["/api/missions?limit=20", "/api/missions/queue?limit=20", "/api/agents?limit=20"];
    while going.load(Ordering::SeqCst) {
        for path in paths {
            let response = client().get(format!("http://{addr}{path}")).send().await;
            let ok = response.is_ok_and(|response| response.status().is_success());
            reads.done.fetch_add(1, Ordering::SeqCst);
            if !ok {
                reads.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&env.pool).await.unwrap()
}

#[tokio::test]
async fn a_rebuild_from_another_process_under_load_fails_no_read_and_the_models_carry_on() {
    // Given a serve and a worker running echo missions, with missions enqueued and reads
    // going on.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let _worker = crate::workers::WorkerProcess::start(&env, "rebuild-worker", &[]);
    for n in 0..100 {
        assert!(enqueue(addr, n).await.is_success());
    }
    // A longer log, so that the rebuild takes a while under the reads.
    let (store, _committer) = env.store();
    crate::support::append_streams(&store, 200, 50).await;
    let going = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(Reads::default());
    let readers: Vec<_> =
        (0..2).map(|_| tokio::spawn(read_while(addr, reads.clone(), going.clone()))).collect();
    let writer = {
        let going = going.clone();
        tokio::spawn(async move {
            // Bounded, so that the missions' end comes in time on a slow machine.
            let mut n = 100;
            while going.load(Ordering::SeqCst) && n < LOAD_MISSIONS_MAX {
                assert!(enqueue(addr, n).await.is_success());
                n += 1;
            }
        })
    };

    // When the mission list, the queue, the stats, the agent view and the tree are rebuilt
    // from another process.
    const MODELS: [&str; 5] =
        ["mission_list", "mission_queue", "event_type_stats", "agent_view", "mission_tree"];
    let rebuilt = projections_async(
        &env,
        &["rebuild", MODELS[0], MODELS[1], MODELS[2], MODELS[3], MODELS[4], "--json"],
    )
    .await;

    // Then it succeeded, and no read failed meanwhile.
    assert_eq!(rebuilt.status.code(), Some(0), "{}", said(&rebuilt));
    let lines: Vec<Value> = String::from_utf8_lossy(&rebuilt.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line per model"))
        .collect();
    let names: Vec<&str> = lines.iter().map(|line| line["name"].as_str().unwrap()).collect();
    assert_eq!(names, MODELS);
    going.store(false, Ordering::SeqCst);
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(reads.done.load(Ordering::SeqCst) > 0);
    assert_eq!(reads.failed.load(Ordering::SeqCst), 0, "reads failed during the rebuild");

    // And the serve's projectors carried on from the rebuilt models: every mission runs to
    // its end (the queue) and the list holds each one as the log says.
    let enqueued =
        count(&env, "SELECT count(*) FROM events WHERE event_type = 'MissionEnqueued'").await;
    wait_until("every mission to complete", WAIT, || async {
        count(&env, "SELECT count(*) FROM events WHERE event_type = 'MissionCompleted'").await
            == enqueued
    })
    .await;
    wait_until("the list to show every mission completed", WAIT, || async {
        count(&env, "SELECT count(*) FROM mission_list WHERE status = 'completed'").await
            == enqueued
    })
    .await;

    // And status shows each model at the head, the rebuilt ones with their reset.
    let head = env.head().await;
    let status = || async {
        let output = projections_async(&env, &["status", "--json", "--sample-ms", "1"]).await;
        assert_eq!(output.status.code(), Some(0), "{}", said(&output));
        serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
    };
    wait_until("status to show every model at the head", WAIT, || async {
        let statuses = status().await;
        statuses.iter().all(|status| status["position"] == head && status["lag_events"] == 0)
    })
    .await;
    let statuses = status().await;
    for status in &statuses {
        let reason = &status["last_reset"]["reason"];
        if names.contains(&status["name"].as_str().unwrap()) {
            assert_eq!(reason, "rebuild", "{status}");
        } else {
            assert!(reason.is_null(), "{status}");
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unknown_model_is_refused_with_exit_2_and_why() {
    let env = TestEnv::new().await;

    let unknown = projections(&env, &["rebuild", "missions"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", said(&unknown));
    let why = String::from_utf8_lossy(&unknown.stderr);
    assert!(why.contains("\"missions\" is no read model") && why.contains("mission_list"), "{why}");

    let listed = projections(&env, &["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", said(&listed));
    let models: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(models.len(), 7);
    assert!(models.iter().all(|m| m["rebuilds"] == true), "every model rebuilds: {models:?}");
}
