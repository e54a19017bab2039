//! The LLM gateway's runtime configuration over HTTP: defaults, validation naming the field
//! (nothing appended), the history of who changed what, and a change used by the very next
//! call in another process (a `brain worker` running the `plain` agent), then a reset.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::missions_api::post;
use crate::serve::get;
use crate::support::{TestEnv, wait_until};
use crate::workers::{
    WorkerProcess, enqueue, finished, mission, mission_status, serve_without_workers,
};

pub async fn put(addr: std::net::SocketAddr, body: &Value) -> (u16, Value) {
    crate::serve::crypto_provider();
    let response = reqwest::Client::new()
        .put(format!("http://{addr}/api/llm/config"))
        .header("content-type", "application/json")
        .header("x-actor", "user:alice")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_config_change_is_validated_recorded_and_used_by_the_next_call_in_another_process() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let fake = FakeLlm::start(vec![], Scripted::text("hello from the fake"), None).await;
    let _worker = WorkerProcess::start(&env, "llm-worker", &["--agents", "coder=plain"]);

    let (status, config) = get(addr, "/api/llm/config").await;
    assert_eq!(
        (status, &config["settings"]["provider"], &config["version"]),
        (200, &json!("offline"), &json!(0)),
        "{config}"
    );

    // Refused, naming the field, recording nothing.
    let good = json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "temperature": 0.3,
        "prices": { "fake-1": { "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0 } } });
    // (The worker's own agent events go on meanwhile: count the configuration's.)
    let config_events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE stream_type = 'llm_config'")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    for (patch, field) in [
        (json!({ "provider": "gpt" }), "provider"),
        (json!({ "host": "ftp://x" }), "host"),
        (json!({ "temperature": 3.5 }), "temperature"),
        (json!({ "max_tokens": 0 }), "max_tokens"),
        (
            json!({ "routes": { "fast": [{ "provider": "ollama", "model": "" }] } }),
            "routes.fast[0].model",
        ),
        (
            json!({ "prices": { "fake-1": { "input_usd_per_mtok": -1, "output_usd_per_mtok": 1 } } }),
            "prices.fake-1.input_usd_per_mtok",
        ),
    ] {
        let mut body = good.clone();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let (status, answer) = put(addr, &body).await;
        assert_eq!((status, &answer["error"]["field"]), (422, &json!(field)), "{body}: {answer}");
    }
    let (status, answer) =
        put(addr, &json!({ "provider": "openai", "model": "m", "colour": "blue" })).await;
    assert_eq!((status, &answer["error"]["code"]), (422, &json!("invalid_body")), "{answer}");
    assert_eq!(config_events().await, 0, "nothing was appended");

    // Accepted: recorded with who and what.
    let (status, config) = put(addr, &good).await;
    assert_eq!((status, &config["version"]), (200, &json!(1)), "{config}");
    let change = &config["history"][0];
    assert_eq!(
        (&change["by"], &change["changed"]),
        (&json!("user:alice"), &json!(["provider", "host", "model", "temperature", "prices"])),
        "{config}"
    );
    let (_, again) = put(addr, &good).await;
    assert_eq!(again["version"], 1, "the same settings again record nothing");

    // The worker process, running since before the change, uses it for its next call.
    let id = enqueue(addr, json!({ "name": "ask", "payload": { "prompt": "say hello" } })).await;
    wait_until("the mission to complete through the fake", Duration::from_secs(30), || async {
        mission_status(addr, &id).await == "completed"
    })
    .await;
    let result = mission(addr, &id).await["result"].clone();
    assert_eq!(
        (&result["answer"], &result["provider"]),
        (&json!("hello from the fake"), &json!("openai")),
        "{result}"
    );
    let asked = fake.seen();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (&asked[0].body["model"], &asked[0].body["messages"][0]["content"]),
        (&json!("fake-1"), &json!("say hello"))
    );
    // The call is in the mission's history: what was asked and answered, usage, cost.
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    let call = events.as_array().unwrap().iter().find(|e| e["event_type"] == "MissionLlmCalled");
    let call = &call.expect("the call recorded")["payload"]["call"];
    assert_eq!(
        (&call["provider"], &call["model"], &call["outcome"]),
        (&json!("openai"), &json!("fake-1"), &json!("ok")),
        "{call}"
    );
    assert_eq!((&call["input_tokens"], &call["output_tokens"]), (&json!(11), &json!(7)), "{call}");
    assert!(
        (call["cost_usd"].as_f64().unwrap() - 78e-6).abs() < 1e-12,
        "11 × $2 + 7 × $8 per million: {call}"
    );
    assert_eq!(call["request"][0]["content"], "say hello");
    assert_eq!(call["response"]["content"], "hello from the fake");

    // Reset: back to the defaults, offline here, for the next call.
    let (status, config) = post(addr, "/api/llm/config/reset", "").await;
    assert_eq!(
        (status, &config["settings"]["provider"], &config["history"][1]["event_type"]),
        (200, &json!("offline"), &json!("LlmConfigReset")),
        "{config}"
    );
    let id = enqueue(addr, json!({ "name": "ask again", "payload": { "prompt": "again" } })).await;
    wait_until("the next mission to complete offline", Duration::from_secs(30), || async {
        mission_status(addr, &id).await == "completed"
    })
    .await;
    assert_eq!(mission(addr, &id).await["result"]["provider"], "offline");
    assert_eq!(fake.seen().len(), 1, "the fake was not called again");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_mission_names_its_route_and_an_unknown_route_fails_it_at_once() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let default = FakeLlm::start(vec![], Scripted::text("from the default"), None).await;
    let fast = FakeLlm::start(vec![], Scripted::text("from the fast route"), None).await;
    let config = json!({ "provider": "openai", "host": default.url(), "model": "big",
        "routes": { "fast": [{ "provider": "openai", "host": fast.url(), "model": "small" }] } });
    assert_eq!(put(addr, &config).await.0, 200);
    let _worker = WorkerProcess::start(&env, "route-worker", &["--agents", "coder=plain"]);

    let body = json!({ "name": "quick", "payload": { "prompt": "hi", "route": "fast" } });
    let done = finished(addr, &enqueue(addr, body).await).await;
    assert_eq!(done["result"]["answer"], "from the fast route", "{done}");
    assert_eq!((fast.seen().len(), default.seen().len()), (1, 0));
    assert_eq!(fast.seen()[0].body["model"], "small");

    // No such route: a permanent failure saying which routes there are, nothing sent.
    let body = json!({ "name": "lost", "max_attempts": 3, "payload": { "prompt": "hi", "route": "nope" } });
    let lost = finished(addr, &enqueue(addr, body).await).await;
    assert_eq!((&lost["status"], &lost["attempt"]), (&json!("failed"), &json!(1)), "{lost}");
    let error = lost["errors"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no LLM route named \"nope\" (configured: default, fast)"), "{error}");
    assert_eq!((fast.seen().len(), default.seen().len()), (1, 0));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
