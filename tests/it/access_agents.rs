//! Agent keys, tried as another team's agent would: an agent is bound to the key that
//! registered it, its claims to its kinds, and a kind an allowed agent key registers reaches
//! every serve without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::call;
use crate::support::{ADMIN_TOKEN, TestEnv, client, client_with, make_key, wait_until};

#[tokio::test]
async fn an_agent_key_acts_only_for_the_agents_it_registered_and_its_kinds() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let agent_key = |name: &str| json!({ "name": name, "role": "agent", "kinds": ["echo"] });
    let mine = make_key(addr, agent_key("team a")).await;
    let theirs = make_key(addr, agent_key("team b")).await;
    let (a, b) = (client_with(&mine), client_with(&theirs));
    let url = |path: &str| format!("http://{addr}{path}");
    let send = |client: &reqwest::Client, path: &str, body: Value| {
        let request = client.post(url(path)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Registering: only for a kind the key may serve.
    let registration = json!({ "name": "a-1", "kind": "echo", "owner": "team-a" });
    let (status, agent) = send(&a, "/api/agents/register", registration).await;
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    let other_kind = json!({ "name": "a-2", "kind": "coder", "owner": "team-a" });
    let (status, body) = send(&a, "/api/agents/register", other_kind).await;
    assert_eq!((status, &body["error"]["field"]), (403, &json!("kind")), "{body}");

    // Another key cannot speak for it: heartbeat, claim, deregister.
    let beat = json!({ "agent_id": agent_id, "status": "idle" });
    let (status, body) = send(&b, "/api/agents/heartbeat", beat.clone()).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    assert_eq!(send(&a, "/api/agents/heartbeat", beat).await.0, 200);
    let claim = format!("/api/agents/{agent_id}/claim");
    assert_eq!(send(&b, &claim, json!({})).await.0, 403);
    let (status, body) = send(&a, &format!("{claim}?kinds=coder"), json!({})).await;
    assert_eq!((status, &body["error"]["field"]), (403, &json!("kinds")), "{body}");
    let deregister = format!("/api/agents/{agent_id}/deregister");
    assert_eq!(send(&b, &deregister, json!({})).await.0, 403);

    // Its own key claims, and only it reports on the lease.
    let (status, mission) =
        crate::missions_api::post(addr, "/api/missions/enqueue", r#"{"name":"m","agent":"echo"}"#)
            .await;
    assert_eq!(status, 201, "{mission}");
    // The queue is a read model a moment behind the log: the claim waits for it.
    let (status, claimed) = send(&a, &format!("{claim}?wait_s=10"), json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    let mission_id = claimed["mission_id"].as_str().unwrap();
    let report = json!({ "lease_token": claimed["lease_token"], "result": { "forged": true } });
    let complete = format!("/api/missions/{mission_id}/complete");
    let (status, body) = send(&b, &complete, report.clone()).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    let (status, done) = send(&a, &complete, report).await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")), "{done}");
    // An agent key is an agent: it enqueues nothing.
    let (status, _) = send(&a, "/api/missions/enqueue", json!({ "name": "x" })).await;
    assert_eq!(status, 403);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_kind_an_allowed_agent_key_registers_is_known_to_every_serve_within_a_second() {
    let env = TestEnv::new().await;
    let (a, stop_a, task_a) = serve_in_process(services(&env, &redis_url())).await;
    let (b, stop_b, task_b) = serve_in_process(services(&env, &redis_url())).await;
    let enqueue = |addr: SocketAddr| async move {
        let body = json!({ "name": "translate this", "agent": "translator" });
        let response =
            client().post(format!("http://{addr}/api/missions/enqueue")).json(&body).send().await;
        let response = response.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = enqueue(b).await;
    assert_eq!((status, &body["error"]["code"]), (422, &json!("unknown_agent")), "{body}");

    // A key for another kind may not bring this one in; one scoped to it may.
    let echo = make_key(a, json!({ "name": "echoes", "role": "agent", "kinds": ["echo"] })).await;
    let register = |token: String, kind: &str| {
        let body = json!({ "kind": kind });
        async move {
            let response = client_with(&token)
                .post(format!("http://{a}/api/agent-kinds"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = register(echo, "translator").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    let translators =
        make_key(a, json!({ "name": "translators", "role": "agent", "kinds": ["translator"] }))
            .await;
    let (status, body) = register(translators.clone(), "translator").await;
    assert_eq!(status, 201, "{body}");
    assert!(body["registered"].as_array().unwrap().contains(&json!("translator")), "{body}");
    assert_eq!(register(translators, "translator").await.0, 200, "known already");

    wait_until("the other serve to know the kind", Duration::from_secs(1), || async {
        enqueue(b).await.0 == 201
    })
    .await;
    let (_, kinds) = call(b, "GET", "/api/agent-kinds", Some(ADMIN_TOKEN)).await;
    assert!(kinds["kinds"].as_array().unwrap().contains(&json!("translator")), "{kinds}");

    // Removed by an admin, with why: new missions are refused again, everywhere.
    let removed = client()
        .post(format!("http://{a}/api/agent-kinds/translator/remove"))
        .json(&json!({ "reason": "the team moved on" }))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    wait_until("the other serve to forget the kind", Duration::from_secs(1), || async {
        enqueue(b).await.0 == 422
    })
    .await;

    stop_a.cancel();
    stop_b.cancel();
    task_a.await.unwrap().unwrap();
    task_b.await.unwrap().unwrap();
}
