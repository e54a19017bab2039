//! Heartbeats and the agent supervisor against a real serve: silence is judged on the exact
//! moment of the last heartbeat (never before the window, at most one sweep after it), a
//! heartbeat afterwards recovers the agent, unchanged heartbeats are coalesced in the log, and
//! the agent view rebuilt from the log equals the live one. The watchdog's verdicts at the
//! edges of its window, and its grace after a refilled view, are pinned without a serve or a
//! wall clock in `watchdog`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brain::agents::AgentSettings;
use brain::agents::view::AgentViewStore;
use brain::eventlog::projector::Feeder;
use brain::serve::ServeOptions;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::missions_api::post;
use crate::serve::{get, redis_url, serve_with_options, services};
use crate::support::{TestEnv, wait_until};

pub type Serve = (SocketAddr, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>);

/// A serve whose supervisor sweeps every `interval_s` and calls `after_s` of silence dead.
pub async fn serve_supervising(env: &TestEnv, interval_s: u64, after_s: u64) -> Serve {
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.agents = AgentSettings {
        supervisor_interval_s: interval_s,
        unresponsive_after_s: after_s,
        ..AgentSettings::default()
    };
    options.reaper.backoff = brain::backoff::Backoff { base_ms: 50, max_ms: 200 };
    serve_with_options(options).await
}

pub async fn register(addr: SocketAddr, name: &str, kind: &str) -> String {
    let body = json!({ "name": name, "kind": kind, "owner": "tests" });
    let (status, agent) = post(addr, "/api/agents/register", &body.to_string()).await;
    assert_eq!(status, 201, "{agent}");
    agent["agent_id"].as_str().unwrap().to_owned()
}

pub async fn heartbeat(addr: SocketAddr, id: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({ "agent_id": id });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    post(addr, "/api/agents/heartbeat", &body.to_string()).await
}

pub async fn agent_state(addr: SocketAddr, id: &str) -> String {
    get(addr, &format!("/api/agents/{id}")).await.1["state"].as_str().unwrap_or_default().to_owned()
}

/// The agent's history as `(event_type, payload)`, oldest first.
pub async fn agent_history(addr: SocketAddr, id: &str) -> Vec<(String, Value)> {
    let (_, view) = get(addr, &format!("/api/agents/{id}")).await;
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event_type"].as_str().unwrap().to_owned(), e["payload"].clone()))
        .collect()
}

#[tokio::test]
async fn a_silent_agent_is_marked_after_the_window_not_before_and_recovers_at_its_next_heartbeat() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 1, 3).await;
    let silent = register(addr, "silent", "coder").await;
    let chatty = register(addr, "chatty", "coder").await;
    let (status, answer) = heartbeat(addr, &silent, json!({ "status": "idle" })).await;
    assert_eq!((status, &answer["state"]), (200, &json!("active")), "{answer}");
    let last_beat = Instant::now();

    // The chatty one keeps beating, unchanged (so coalesced: the log hears of it once); the
    // exact moment of each beat is what keeps it alive.
    let deadline = last_beat + Duration::from_secs(10);
    while agent_state(addr, &silent).await == "active" {
        assert!(Instant::now() < deadline, "the silent agent was never marked");
        let (status, _) = heartbeat(addr, &chatty, json!({ "status": "idle" })).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let noticed = last_beat.elapsed();
    assert!(noticed >= Duration::from_secs(3), "marked after {noticed:?}, before the window");
    assert_eq!(agent_state(addr, &chatty).await, "active");

    // The verdict is an event, judged on the supervisor's clock: silent for the window, and
    // no more than one sweep (plus a moment for the command) past it.
    let history = agent_history(addr, &silent).await;
    let (_, unresponsive) = history.iter().find(|(t, _)| t == "AgentUnresponsive").unwrap();
    let silent_for =
        unresponsive["at_ms"].as_i64().unwrap() - unresponsive["last_seen_ms"].as_i64().unwrap();
    assert!((3_000..=4_500).contains(&silent_for), "silent for {silent_for} ms when marked");
    let (_, supervisor_view) = get(addr, "/api/supervisor/status").await;
    assert_eq!(supervisor_view["leading"], true, "{supervisor_view}");
    assert!(supervisor_view["last_sweep"]["marked"].as_u64().is_some(), "{supervisor_view}");

    // Its next heartbeat recovers it, recorded.
    let (status, answer) = heartbeat(addr, &silent, json!({ "status": "idle" })).await;
    assert_eq!(
        (status, &answer["state"], &answer["recorded"]),
        (200, &json!("active"), &json!(true))
    );
    let types: Vec<String> =
        agent_history(addr, &silent).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, ["AgentRegistered", "AgentUnresponsive", "AgentRecovered"]);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

async fn heartbeat_events(env: &TestEnv, id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_type = 'agent_heartbeat' AND stream_id = $1",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn unchanged_heartbeats_are_coalesced_and_a_change_is_recorded_at_once() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let id = register(addr, "steady", "coder").await;
    let (_, first) = heartbeat(addr, &id, json!({ "status": "idle", "load": 0.2 })).await;
    assert_eq!(first["recorded"], true, "{first}");
    // The view must have the first one before it can coalesce the next.
    wait_until("the view to hold the heartbeat", Duration::from_secs(10), || async {
        get(addr, "/api/agents?kind=coder").await.1["agents"][0]["status"] == "idle"
    })
    .await;
    for _ in 0..20 {
        let (status, answer) =
            heartbeat(addr, &id, json!({ "status": "idle", "load": 0.25 })).await;
        assert_eq!((status, &answer["recorded"]), (200, &json!(false)), "{answer}");
    }
    let mission = uuid::Uuid::now_v7().to_string();
    let (_, changed) =
        heartbeat(addr, &id, json!({ "status": "busy", "load": 0.9, "running": [mission] })).await;
    assert_eq!(changed["recorded"], true, "{changed}");
    assert_eq!(heartbeat_events(&env, &id).await, 2, "22 heartbeats, 2 of them news");

    wait_until("the view to show the change", Duration::from_secs(10), || async {
        let (_, page) = get(addr, "/api/agents?state=active").await;
        page["agents"][0]["running"][0] == json!(mission)
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_agent_list_filters_by_kind_and_state_and_pages() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let mut coders = Vec::new();
    for n in 0..5 {
        coders.push(register(addr, &format!("coder-{n}"), "coder").await);
    }
    let ops = register(addr, "ops-0", "ops").await;
    let (status, _) = post(
        addr,
        "/api/supervisor/control",
        &json!({ "agent_id": coders[0], "action": "stop", "reason": "maintenance" }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    wait_until("the view to hold every agent", Duration::from_secs(10), || async {
        get(addr, "/api/agents/info").await.1["counts_by_state"]
            == json!({ "active": 5, "stopped": 1 })
    })
    .await;

    let (_, page) = get(addr, "/api/agents?kind=ops").await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 1);
    assert_eq!(page["agents"][0]["agent_id"], json!(ops));
    let (_, page) = get(addr, "/api/agents?state=stopped").await;
    assert_eq!(page["agents"][0]["agent_id"], json!(coders[0]), "{page}");

    // Pages of two cover the five coders once each, in id order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("/api/agents?kind=coder&limit=2&after={after}"),
            None => "/api/agents?kind=coder&limit=2".to_owned(),
        };
        let (status, page) = get(addr, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["agent_id"].as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected = coders.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let (_, info) = get(addr, "/api/agents/info").await;
    assert_eq!(info["registered_by_kind"], json!({ "coder": 5, "ops": 1 }), "{info}");
    assert_eq!(info["builtin"][0]["name"], "echo");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_agent_view_rebuilt_from_the_log_equals_the_live_one() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 1, 2).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let id =
            register(addr, &format!("agent-{n}"), if n % 2 == 0 { "coder" } else { "ops" }).await;
        heartbeat(addr, &id, json!({ "status": format!("s{n}"), "load": n as f64 / 10.0 })).await;
        ids.push(id);
    }
    let control = |id: &str, action: &str| json!({ "agent_id": id, "action": action }).to_string();
    post(addr, "/api/supervisor/control", &control(&ids[1], "stop")).await;
    post(addr, "/api/supervisor/control", &control(&ids[2], "restart")).await;
    post(addr, &format!("/api/agents/{}/deregister", ids[3]), "").await;
    // One goes silent and is marked, then comes back.
    wait_until("the silent agent to be marked", Duration::from_secs(15), || async {
        for id in [&ids[0], &ids[2], &ids[5]] {
            heartbeat(addr, id, json!({ "status": "on" })).await;
        }
        get(addr, "/api/agents/info").await.1["counts_by_state"]["unresponsive"] == 1
    })
    .await;
    heartbeat(addr, &ids[4], json!({})).await;

    let redis = redis::Client::open(redis_url()).unwrap();
    let connection = redis.get_connection_manager().await.unwrap();
    let live = AgentViewStore::new(connection.clone(), &env.namespace);
    let head = env.head().await;
    wait_until("the live view to reach the head", Duration::from_secs(10), || async {
        live.position().await.unwrap() >= head
    })
    .await;
    let rebuilt = AgentViewStore::at(connection, &env.namespace, "av_rebuilt");
    let mut feeder =
        Feeder::new(projections::agent_view::AgentView, rebuilt.clone(), env.pool.clone(), 100)
            .await
            .unwrap();
    feeder.catch_up().await.unwrap();
    let (live_snapshot, rebuilt_snapshot) =
        (live.snapshot().await.unwrap(), rebuilt.snapshot().await.unwrap());
    assert!(live_snapshot.len() > 6, "{live_snapshot:?}");
    assert_eq!(live_snapshot, rebuilt_snapshot);
    rebuilt.drop_all().await.unwrap();

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_heartbeats_and_controls_name_the_field_and_append_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let id = register(addr, "a", "coder").await;
    let head = env.head().await;
    let many: Vec<String> = (0..257).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (path, body, status, code, field) in [
        ("/api/agents/heartbeat", json!({ "agent_id": unknown }), 404, "agent_not_found", None),
        (
            "/api/agents/heartbeat",
            json!({ "agent_id": id, "load": -1 }),
            422,
            "invalid_field",
            Some("load"),
        ),
        (
            "/api/agents/heartbeat",
            json!({ "agent_id": id, "status": "a\u{0}b" }),
            400,
            "invalid_field",
            Some("status"),
        ),
        (
            "/api/agents/heartbeat",
            json!({ "agent_id": id, "running": many }),
            422,
            "invalid_field",
            Some("running"),
        ),
        (
            "/api/agents/heartbeat",
            json!({ "agent_id": id, "running": ["x"] }),
            422,
            "invalid_field",
            Some("running"),
        ),
        (
            "/api/supervisor/control",
            json!({ "agent_id": id, "action": "explode" }),
            422,
            "invalid_field",
            Some("action"),
        ),
        (
            "/api/supervisor/control",
            json!({ "agent_id": unknown, "action": "stop" }),
            404,
            "agent_not_found",
            None,
        ),
        (
            "/api/supervisor/control",
            json!({ "agent_id": id, "action": "start" }),
            409,
            "control_not_applicable",
            None,
        ),
        (
            "/api/supervisor/control",
            json!({ "agent_id": id, "action": "stop", "reason": "r".repeat(2_001) }),
            422,
            "invalid_field",
            Some("reason"),
        ),
    ] {
        let (got, answer) = post(addr, path, &body.to_string()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        }
    }
    for (query, field) in [("state=asleep", "state"), ("limit=0", "limit"), ("after=x", "after")] {
        let (got, answer) = get(addr, &format!("/api/agents?{query}")).await;
        assert_eq!((got, &answer["error"]["field"]), (400, &json!(field)), "{query}: {answer}");
    }
    let (got, answer) = get(addr, "/api/agents?kind=made-up").await;
    assert_eq!((got, &answer["error"]["code"]), (422, &json!("unknown_agent")), "{answer}");
    assert_eq!(env.head().await, head, "nothing was appended");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
