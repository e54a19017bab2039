//! External agents over HTTP: a claim starts a mission under a lease for the agent, the lease
//! token fences every report (an expired lease, and a lease that moved to another agent, are
//! refused with 409 and change nothing), a stopped agent cannot claim until started, and the
//! missions of an agent marked dead go back to the queue at once.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent_supervision::{agent_history, heartbeat, register, serve_supervising};
use crate::missions_api::post;
use crate::support::{TestEnv, wait_until};
use crate::workers::{enqueue, mission, mission_status};

pub async fn claim(addr: SocketAddr, agent: &str, query: &str) -> (u16, Value) {
    post(addr, &format!("/api/agents/{agent}/claim?{query}"), "").await
}

/// Claims until a mission comes (the queue projection may be a moment behind the enqueue).
async fn claim_one(addr: SocketAddr, agent: &str, query: &str) -> Value {
    let (status, claimed) = claim(addr, agent, &format!("wait_s=10&{query}")).await;
    assert_eq!(status, 200, "{claimed}");
    claimed
}

async fn report(addr: SocketAddr, mission_id: &str, what: &str, body: Value) -> (u16, Value) {
    post(addr, &format!("/api/missions/{mission_id}/{what}"), &body.to_string()).await
}

#[tokio::test]
async fn a_stale_lease_token_is_refused_for_every_report_and_no_mission_completes_twice() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let first = register(addr, "first", "echo").await;
    let second = register(addr, "second", "echo").await;
    let mission_id =
        enqueue(addr, json!({ "name": "m", "agent": "echo", "max_attempts": 5 })).await;

    // The first claims under a short lease and reports progress with its token.
    let claimed = claim_one(addr, &first, "lease_s=5").await;
    assert_eq!((&claimed["mission_id"], &claimed["attempt"]), (&json!(mission_id), &json!(1)));
    let stale = claimed["lease_token"].as_str().unwrap().to_owned();
    let (status, view) = report(
        addr,
        &mission_id,
        "progress",
        json!({ "lease_token": stale, "note": "half", "lease_s": 5 }),
    )
    .await;
    assert_eq!(status, 200, "{view}");

    // Its lease runs out (never extended again): the mission supervisor puts it back, and the
    // second agent takes it.
    let claimed = claim_one(addr, &second, "lease_s=60").await;
    assert_eq!((&claimed["mission_id"], &claimed["attempt"]), (&json!(mission_id), &json!(2)));
    let fresh = claimed["lease_token"].as_str().unwrap().to_owned();

    // Every report under the old token is refused, and changes nothing.
    let before: i64 = env.head().await as i64;
    for (what, body) in [
        ("progress", json!({ "lease_token": stale })),
        ("complete", json!({ "lease_token": stale, "result": { "by": "first" } })),
        ("fail", json!({ "lease_token": stale, "error": "late" })),
    ] {
        let (status, answer) = report(addr, &mission_id, what, body).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (409, &json!("stale_lease")),
            "{what}: {answer}"
        );
    }
    assert_eq!(env.head().await as i64, before, "the refused reports appended nothing");

    // The holder completes once; a repeat is refused.
    let done = json!({ "lease_token": fresh, "result": { "by": "second" } });
    let (status, view) = report(addr, &mission_id, "complete", done.clone()).await;
    assert_eq!((status, &view["status"]), (200, &json!("completed")), "{view}");
    let (status, answer) = report(addr, &mission_id, "complete", done).await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("stale_lease")), "{answer}");
    assert_eq!(mission(addr, &mission_id).await["result"], json!({ "by": "second" }));
    let completions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MissionCompleted'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(completions, 1);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_refused_even_before_anyone_else_claims() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let agent = register(addr, "slow", "echo").await;
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    let claimed = claim_one(addr, &agent, "lease_s=5").await;
    let token = claimed["lease_token"].as_str().unwrap().to_owned();
    wait_until("the lease to expire", Duration::from_secs(20), || async {
        mission_status(addr, &mission_id).await != "running"
    })
    .await;
    let (status, answer) =
        report(addr, &mission_id, "complete", json!({ "lease_token": token })).await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("stale_lease")), "{answer}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stopped_agent_cannot_claim_until_started_and_each_control_says_who() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let agent = register(addr, "worker", "echo").await;
    let control = |action: &str| {
        json!({ "agent_id": agent, "action": action, "reason": format!("{action} for the test") })
            .to_string()
    };
    let (status, view) = post(addr, "/api/supervisor/control", &control("stop")).await;
    assert_eq!((status, &view["state"]), (200, &json!("stopped")), "{view}");
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    let (status, answer) = claim(addr, &agent, "wait_s=0").await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("agent_not_active")), "{answer}");
    // The heartbeat answer tells it too.
    let (_, answer) = heartbeat(addr, &agent, json!({})).await;
    assert_eq!(answer["state"], "stopped");

    let (status, _) = post(addr, "/api/supervisor/control", &control("start")).await;
    assert_eq!(status, 200);
    let claimed = claim_one(addr, &agent, "").await;
    assert_eq!(claimed["mission_id"], json!(mission_id));

    // A restart is a request the agent sees in a heartbeat answer (as soon as the view has
    // it: a moment after the control), and reports done.
    post(addr, "/api/supervisor/control", &control("restart")).await;
    wait_until("a heartbeat answer to ask for the restart", Duration::from_secs(10), || async {
        heartbeat(addr, &agent, json!({})).await.1["restart_requested"] == true
    })
    .await;
    let (_, answer) = heartbeat(addr, &agent, json!({ "restarted": true })).await;
    assert_eq!(answer["restart_requested"], false, "{answer}");

    let history = agent_history(addr, &agent).await;
    let controls: Vec<(&str, &str)> = history
        .iter()
        .filter(|(t, _)| t == "AgentControlRequested")
        .map(|(_, p)| (p["action"].as_str().unwrap(), p["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        controls,
        [
            ("stop", crate::support::ADMIN_ACTOR),
            ("start", crate::support::ADMIN_ACTOR),
            ("restart", crate::support::ADMIN_ACTOR)
        ]
    );
    assert!(history.iter().any(|(t, _)| t == "AgentRestarted"), "{history:?}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_missions_of_an_agent_marked_dead_go_back_at_once_not_when_their_lease_runs_out() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 1, 2).await;
    let doomed = register(addr, "doomed", "echo").await;
    let rescuer = register(addr, "rescuer", "echo").await;
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    // A lease of an hour: only the verdict on the agent can bring the mission back soon.
    let claimed = claim_one(addr, &doomed, "lease_s=3600").await;
    assert_eq!(claimed["mission_id"], json!(mission_id));
    heartbeat(addr, &doomed, json!({ "running": [mission_id] })).await;

    // The rescuer keeps beating and waits for work; the doomed one falls silent.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let rescued = loop {
        assert!(std::time::Instant::now() < deadline, "the mission never came back to the queue");
        heartbeat(addr, &rescuer, json!({})).await;
        let (status, claimed) = claim(addr, &rescuer, "wait_s=1").await;
        if status == 200 {
            break claimed;
        }
        assert_eq!(status, 204, "{claimed}");
    };
    assert_eq!((&rescued["mission_id"], &rescued["attempt"]), (&json!(mission_id), &json!(2)));
    let history = mission(addr, &mission_id).await;
    assert_eq!(history["status"], "running", "{history}");
    let types: Vec<String> =
        agent_history(addr, &doomed).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, ["AgentRegistered", "AgentUnresponsive"]);
    // An unresponsive agent cannot claim.
    let (status, answer) = claim(addr, &doomed, "wait_s=0").await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("agent_not_active")), "{answer}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_claims_and_reports_name_the_field_and_append_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let agent = register(addr, "a", "echo").await;
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    wait_until("the queue to hold the mission", Duration::from_secs(10), || async {
        crate::serve::get(addr, "/api/missions/queue?agent=echo")
            .await
            .1
            .to_string()
            .contains(&mission_id)
    })
    .await;
    let head = env.head().await;
    let unknown = uuid::Uuid::now_v7();
    for (query, status, code, field) in [
        ("wait_s=31", 400, "invalid_field", Some("wait_s")),
        ("lease_s=1", 400, "invalid_field", Some("lease_s")),
        ("kinds=made-up", 422, "unknown_agent", Some("kinds")),
        ("wait_s=-1", 400, "invalid_query", None),
        ("colour=blue", 400, "invalid_query", None),
    ] {
        let (got, answer) = claim(addr, &agent, query).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap_or_default()),
            (status, code),
            "{query}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
        }
    }
    let (got, answer) = claim(addr, &unknown.to_string(), "").await;
    assert_eq!((got, &answer["error"]["code"]), (404, &json!("agent_not_found")), "{answer}");
    let (got, answer) = claim(addr, "nope", "").await;
    assert_eq!((got, &answer["error"]["field"]), (400, &json!("agent_id")), "{answer}");
    for body in
        [json!({ "lease_token": "garbage" }), json!({ "lease_token": format!("1:{unknown}x") })]
    {
        let (got, answer) = report(addr, &mission_id, "complete", body).await;
        assert_eq!((got, &answer["error"]["field"]), (422, &json!("lease_token")), "{answer}");
    }
    let (got, answer) = report(
        addr,
        &mission_id,
        "fail",
        json!({ "lease_token": format!("1:{unknown}"), "error": "a\u{0}" }),
    )
    .await;
    assert_eq!((got, &answer["error"]["field"]), (400, &json!("error")), "{answer}");
    assert_eq!(env.head().await, head, "nothing was appended");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
