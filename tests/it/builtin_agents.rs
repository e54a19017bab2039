//! Built-in agents hosted by a serve's workers: registered in the registry, restarted within
//! their backoff when they die (a panic, or reporting themselves down), failed for good past
//! their restart intensity with the reason in their history, after which their missions run
//! elsewhere; and stopped and started through the supervisor like any agent.

use std::net::SocketAddr;
use std::time::Duration;

use brain::agents::restart::Intensity;
use brain::backoff::Backoff;
use brain::serve::ServeOptions;
use serde_json::{Value, json};

use crate::agent_supervision::{Serve, agent_history, register};
use crate::external_agents::claim;
use crate::missions_api::post;
use crate::serve::{get, redis_url, serve_with_options, services};
use crate::support::{TestEnv, wait_until};
use crate::workers::{enqueue, mission, mission_status};

async fn serve_with_builtin_echo(env: &TestEnv, restarts_max: u32) -> Serve {
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    // These tests kill the agent on purpose.
    options.agents.builtin.echo_faults = true;
    let workers = options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 1);
    workers.backoff = Backoff { base_ms: 50, max_ms: 100 };
    workers.worker_id = format!("w-{}", uuid::Uuid::now_v7().simple());
    options.reaper.backoff = Backoff { base_ms: 50, max_ms: 100 };
    options.intensity = Intensity {
        restarts_max,
        window: Duration::from_secs(60),
        backoff: Backoff { base_ms: 100, max_ms: 300 },
    };
    serve_with_options(options).await
}

/// The hosted echo agent, once registered.
async fn builtin_agent(addr: SocketAddr) -> Value {
    wait_until("the built-in agent to register", Duration::from_secs(10), || async {
        get(addr, "/api/agents?kind=echo").await.1["agents"][0].is_object()
    })
    .await;
    get(addr, "/api/agents?kind=echo").await.1["agents"][0].clone()
}

#[tokio::test]
async fn a_dead_builtin_agent_is_restarted_then_failed_past_its_intensity_and_its_missions_run_elsewhere()
 {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_with_builtin_echo(&env, 2).await;
    let agent = builtin_agent(addr).await;
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    assert!(agent["owner"].as_str().unwrap().starts_with("worker:"), "{agent}");

    // Dies once (reports itself down), is restarted, and the retry completes on it.
    let once = enqueue(
        addr,
        json!({ "name": "once", "agent": "echo", "payload": { "exit_attempts": 1 } }),
    )
    .await;
    wait_until("the mission to complete after a restart", Duration::from_secs(20), || async {
        mission_status(addr, &once).await == "completed"
    })
    .await;
    wait_until("the restart to be recorded", Duration::from_secs(10), || async {
        agent_history(addr, &agent_id).await.iter().any(|(t, _)| t == "AgentRestarted")
    })
    .await;

    // Dies on every attempt: restarted once more (its second restart), then its third death
    // within the window is past its limit of two, and it stays down with the reason.
    let doomed = json!({ "name": "doomed", "agent": "echo", "max_attempts": 10, "payload": { "panic_attempts": 3 } });
    let doomed = enqueue(addr, doomed).await;
    wait_until("the agent to fail", Duration::from_secs(30), || async {
        crate::agent_supervision::agent_state(addr, &agent_id).await == "failed"
    })
    .await;
    let history = agent_history(addr, &agent_id).await;
    let types: Vec<&str> = history.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["AgentRegistered", "AgentRestarted", "AgentRestarted", "AgentFailed"],
        "{history:?}"
    );
    let (_, failed) = history.last().unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("panicked") && reason.contains("limit of 2"), "{reason}");

    // It takes nothing now: the mission waits for another agent, and runs there.
    let errors = mission(addr, &doomed).await["errors"].as_array().unwrap().len();
    assert_eq!(errors, 2, "two attempts, two deaths");
    let rescuer = register(addr, "rescuer", "echo").await;
    let (status, claimed) = claim(addr, &rescuer, "wait_s=10").await;
    assert_eq!((status, &claimed["mission_id"]), (200, &json!(doomed)), "{claimed}");
    let token = claimed["lease_token"].as_str().unwrap();
    let (status, _) = post(
        addr,
        &format!("/api/missions/{doomed}/complete"),
        &json!({ "lease_token": token }).to_string(),
    )
    .await;
    assert_eq!(status, 200);

    // An operator's start brings it back: it runs missions again.
    let start = json!({ "agent_id": agent_id, "action": "start", "reason": "fixed" }).to_string();
    let (status, view) = post(addr, "/api/supervisor/control", &start).await;
    assert_eq!((status, &view["state"]), (200, &json!("active")), "{view}");
    let after = enqueue(addr, json!({ "name": "after", "agent": "echo" })).await;
    wait_until("a mission to run on the restarted agent", Duration::from_secs(20), || async {
        mission_status(addr, &after).await == "completed"
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
    // A clean shutdown deregisters it.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_type = 'agent' AND stream_id = $1 ORDER BY version",
    )
    .bind(&agent_id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(types.last().map(String::as_str), Some("AgentDeregistered"), "{types:?}");
}

#[tokio::test]
async fn a_stopped_builtin_agent_takes_no_mission_until_started() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_with_builtin_echo(&env, 3).await;
    let agent_id = builtin_agent(addr).await["agent_id"].as_str().unwrap().to_owned();
    let control = |action: &str| json!({ "agent_id": agent_id, "action": action }).to_string();
    let (status, _) = post(addr, "/api/supervisor/control", &control("stop")).await;
    assert_eq!(status, 200);
    wait_until("the worker to see the stop", Duration::from_secs(10), || async {
        get(addr, "/api/agents?kind=echo").await.1["agents"][0]["status"] == "stopped"
    })
    .await;
    let waiting = enqueue(addr, json!({ "name": "waits", "agent": "echo" })).await;
    // Two status reports later (the worker alive and polling all along) it is still queued.
    let seen = last_seen(addr).await;
    wait_until("two more status reports", Duration::from_secs(10), || async {
        last_seen(addr).await >= seen + 2_000
    })
    .await;
    assert_eq!(mission_status(addr, &waiting).await, "queued");
    post(addr, "/api/supervisor/control", &control("start")).await;
    wait_until("the mission to run once started", Duration::from_secs(20), || async {
        mission_status(addr, &waiting).await == "completed"
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// When the (only) worker last published its status.
async fn last_seen(addr: SocketAddr) -> i64 {
    let (_, workers) = get(addr, "/api/missions/worker/status").await;
    workers["workers"][0]["last_seen_ms"].as_i64().unwrap_or_else(|| panic!("{workers}"))
}
