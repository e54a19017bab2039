//! The mission routes over HTTP against real services: enqueue, idempotency, bad input,
//! cancel and retry, each answered in the one error shape.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::serve::{
    crypto_provider, get, redis_url, serve_in_process, serve_in_process_with, services,
};
use crate::support::TestEnv;

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    crypto_provider();
    let response = crate::support::client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-actor", "user:alice")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn an_enqueued_mission_is_queued_and_its_history_says_who_enqueued_it() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    let body = json!({ "name": "summarise logs", "priority": "high", "payload": { "path": "/var/log" }, "agent": "ops" });
    let (status, mission) = post(addr, "/api/missions/enqueue", &body.to_string()).await;
    assert_eq!(status, 201, "{mission}");
    assert_eq!(
        (mission["status"].as_str(), mission["priority"].as_str()),
        (Some("queued"), Some("high"))
    );
    assert_eq!(
        (mission["agent"].as_str(), mission["max_attempts"].as_u64()),
        (Some("ops"), Some(3))
    );
    assert_eq!(mission["payload"], json!({ "path": "/var/log" }));
    assert_eq!(mission["enqueued_by"], crate::support::ADMIN_ACTOR);

    let id = mission["mission_id"].as_str().unwrap();
    let (status, fetched) = get(addr, &format!("/api/missions/{id}")).await;
    assert_eq!((status, &fetched), (200, &mission));
    let (status, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    assert_eq!(status, 200);
    assert_eq!(events[0]["event_type"], "MissionEnqueued");
    assert_eq!(events[0]["metadata"]["actor"], crate::support::ADMIN_ACTOR);
    assert_eq!(events[0]["metadata"]["on_behalf_of"], "user:alice");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_mission_and_never_a_second() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let body =
        json!({ "name": "nightly build", "idempotency_key": "build-2026-11-25" }).to_string();

    let (first_status, first) = post(addr, "/api/missions/enqueue", &body).await;
    let (again_status, again) = post(addr, "/api/missions/enqueue", &body).await;

    assert_eq!((first_status, again_status), (201, 200));
    assert_eq!(first["mission_id"], again["mission_id"]);
    assert_eq!(env.head().await, crate::support::KEY_EVENTS + 1, "one mission, one event");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_enqueue_bodies_get_a_4xx_naming_the_problem_and_change_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let huge = "x".repeat(300 * 1024);
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("{".into(), 400, "invalid_body", None),
        (json!({}).to_string(), 422, "invalid_body", None),
        (json!({ "name": "a", "priority": "urgent" }).to_string(), 422, "invalid_body", None),
        (json!({ "name": "a", "max_attempts": "three" }).to_string(), 422, "invalid_body", None),
        (json!({ "name": "a", "colour": "blue" }).to_string(), 422, "invalid_body", None),
        (json!({ "name": "  " }).to_string(), 422, "invalid_field", Some("name")),
        (json!({ "name": "a", "payload": [1] }).to_string(), 422, "invalid_field", Some("payload")),
        (
            json!({ "name": "a", "max_attempts": 0 }).to_string(),
            422,
            "invalid_field",
            Some("max_attempts"),
        ),
        (
            json!({ "name": "a", "timeout_s": 0 }).to_string(),
            422,
            "invalid_field",
            Some("timeout_s"),
        ),
        (
            json!({ "name": "a", "agent": "Bad Agent" }).to_string(),
            422,
            "invalid_field",
            Some("agent"),
        ),
        (
            json!({ "name": "a", "idempotency_key": "" }).to_string(),
            422,
            "invalid_field",
            Some("idempotency_key"),
        ),
        (
            json!({ "name": "a", "payload": { "blob": huge } }).to_string(),
            413,
            "payload_too_large",
            Some("payload"),
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = post(addr, "/api/missions/enqueue", &body).await;
        let shown = &body[..body.len().min(80)];
        assert_eq!(got, status, "{shown}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{shown}: {answer}");
        assert_eq!(answer["error"]["field"].as_str(), field, "{shown}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(env.head().await, crate::support::KEY_EVENTS);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn cancel_and_retry_answer_by_the_missions_state() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let (_, mission) =
        post(addr, "/api/missions/enqueue", &json!({ "name": "n" }).to_string()).await;
    let id = mission["mission_id"].as_str().unwrap();

    let (status, retried) = post(addr, &format!("/api/missions/{id}/retry"), "").await;
    assert_eq!((status, &retried["error"]["code"]), (409, &json!("mission_not_failed")));

    let (status, cancelled) = post(
        addr,
        &format!("/api/missions/{id}/cancel"),
        &json!({ "reason": "superseded" }).to_string(),
    )
    .await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    let (status, again) = post(addr, &format!("/api/missions/{id}/cancel"), "").await;
    assert_eq!((status, &again["error"]["code"]), (409, &json!("mission_already_finished")));

    let unknown = uuid::Uuid::now_v7();
    let (status, missing) = post(addr, &format!("/api/missions/{unknown}/cancel"), "").await;
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("mission_not_found")));
    let (status, missing) = get(addr, &format!("/api/missions/{unknown}")).await;
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("mission_not_found")));
    let (status, bad) = get(addr, "/api/missions/not-a-uuid").await;
    assert_eq!((status, &bad["error"]["field"]), (400, &json!("mission_id")));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_mission_that_names_no_agent_goes_to_the_configured_default() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process_with(services(&env, &redis_url()), "ops").await;
    let (status, mission) =
        post(addr, "/api/missions/enqueue", &json!({ "name": "n" }).to_string()).await;
    assert_eq!((status, mission["agent"].as_str()), (201, Some("ops")));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
