//! Agent registry over HTTP: registration is idempotent on the agent's id (chosen, or derived
//! from name and owner), every refusal names its field and appends nothing, and an agent's
//! view carries its recent history.

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
