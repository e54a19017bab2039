//! Agent registry over HTTP: registration is idempotent on the agent's id (chosen, or derived
//! from name and owner), every refusal names its field and appends nothing, and an agent's
//! view carries its recent history and, of now, its last report.

use serde_json::json;

use crate::missions_api::post;
use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::TestEnv;

#[tokio::test]
async fn an_agent_registers_once_finds_itself_again_and_deregisters_with_its_reason() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let body = json!({ "name": "reviewer", "kind": "coder", "capabilities": ["rust"], "version": "1.0", "owner": "team-a" });

    // Registering creates it; the same registration again finds it (same id, nothing new).
    let (status, first) = post(addr, "/api/agents/register", &body.to_string()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!((&first["state"], &first["kind"]), (&json!("active"), &json!("coder")));
    let (status, again) = post(addr, "/api/agents/register", &body.to_string()).await;
    assert_eq!((status, &again["agent_id"]), (200, &first["agent_id"]), "{again}");
    assert_eq!(again["stream_version"], 1);

    // Another registration under the same name and owner is a conflict.
    let other = json!({ "name": "reviewer", "kind": "coder", "version": "2.0", "owner": "team-a" });
    let (status, answer) = post(addr, "/api/agents/register", &other.to_string()).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (409, &json!("agent_registered_otherwise")),
        "{answer}"
    );

    // The view shows its history, who registered it included.
    let id = first["agent_id"].as_str().unwrap();
    let (status, view) = get(addr, &format!("/api/agents/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["history"][0]["event_type"], "AgentRegistered");
    assert_eq!(view["history"][0]["metadata"]["actor"], crate::support::ADMIN_ACTOR);
    assert_eq!(view["history"][0]["metadata"]["on_behalf_of"], "user:alice");

    // Deregistered with a reason; its id is not reused.
    let (status, gone) =
        post(addr, &format!("/api/agents/{id}/deregister"), r#"{"reason":"retired"}"#).await;
    assert_eq!((status, &gone["state"]), (200, &json!("deregistered")), "{gone}");
    assert_eq!(gone["history"][1]["payload"]["reason"], "retired");
    let (status, answer) = post(addr, "/api/agents/register", &body.to_string()).await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("agent_deregistered")), "{answer}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_registrations_are_refused_naming_the_field_and_append_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let many: Vec<String> = (0..65).map(|n| format!("c{n}")).collect();
    for (body, status, code, field) in [
        (json!({ "name": "a", "kind": "made-up" }), 422, "unknown_agent", "kind"),
        (json!({ "name": "a", "kind": "Not A Kind" }), 422, "invalid_field", "kind"),
        (json!({ "name": " ", "kind": "coder" }), 422, "invalid_field", "name"),
        (json!({ "name": "a\0b", "kind": "coder" }), 400, "invalid_field", "name"),
        (
            json!({ "name": "a", "kind": "coder", "capabilities": many }),
            422,
            "invalid_field",
            "capabilities",
        ),
        (json!({ "name": "a", "kind": "coder", "agent_id": "nope" }), 422, "invalid_body", ""),
    ] {
        let (got, answer) = post(addr, "/api/agents/register", &body.to_string()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}: {answer}"
        );
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        }
    }
    let (status, answer) = get(addr, "/api/agents/not-a-uuid").await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("agent_id")));
    let (status, answer) = get(addr, &format!("/api/agents/{}", uuid::Uuid::now_v7())).await;
    assert_eq!((status, &answer["error"]["code"]), (404, &json!("agent_not_found")));
    assert_eq!(env.head().await, crate::support::KEY_EVENTS, "nothing was appended");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_agents_view_of_now_carries_its_last_report_and_one_of_the_past_does_not() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let body = json!({ "name": "reporter", "kind": "coder", "owner": "team-b" });
    let (status, agent) = post(addr, "/api/agents/register", &body.to_string()).await;
    assert_eq!(status, 201, "{agent}");
    let id = agent["agent_id"].as_str().unwrap();
    let mission = uuid::Uuid::now_v7().to_string();
    let beat = json!({ "status": "busy", "load": 0.5, "running": [mission] });
    let (status, answer) = crate::agent_supervision::heartbeat(addr, id, beat).await;
    assert_eq!(status, 200, "{answer}");

    let url = format!("/api/agents/{id}");
    crate::support::wait_until("the view to hold the report", crate::deck::WAIT, || async {
        get(addr, &url).await.1["live"]["status"] == json!("busy")
    })
    .await;
    let (status, view) = get(addr, &url).await;
    assert_eq!(status, 200, "{view}");
    let live = &view["live"];
    assert_eq!((&live["load"], &live["running"]), (&json!(0.5), &json!([mission])), "{view}");
    assert!(live["last_seen_ms"].as_i64().unwrap() > 0, "{view}");
    assert!(live["silent_for_ms"].as_i64().unwrap() >= 0, "{view}");

    // Of an earlier moment, the view has no report of now to give.
    let head = env.head().await;
    let (status, past) = get(addr, &format!("{url}?at_position={head}")).await;
    assert_eq!(status, 200, "{past}");
    assert!(past.get("live").is_none() && past["as_of"].is_object(), "{past}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
