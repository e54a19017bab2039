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
    let response = crate::support::client()
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
        (
            &json!(crate::support::ADMIN_ACTOR),
            &json!(["provider", "host", "model", "temperature", "prices"])
        ),
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

/// A request to a configuration route with `If-Match`, answering status, `ETag` and body.
async fn send_if_match(
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    if_match: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    crate::serve::crypto_provider();
    let response = crate::support::client()
        .request(method, format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-actor", "user:bob")
        .header("if-match", if_match)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    (status, etag, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_change_naming_a_version_applies_to_that_version_only() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let put_path = "/api/llm/config";
    let (status, etag, _) =
        send_if_match(addr, reqwest::Method::GET, put_path, "*", &Value::Null).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"0\"")));

    // At the version it names, a change applies and answers the new tag.
    let settings =
        |model: &str| json!({ "provider": "ollama", "host": "http://127.0.0.1:9", "model": model });
    let (status, etag, view) =
        send_if_match(addr, reqwest::Method::PUT, put_path, "\"0\"", &settings("m1")).await;
    assert_eq!(
        (status, etag.as_deref(), &view["version"]),
        (200, Some("\"1\""), &json!(1)),
        "{view}"
    );

    // Two writers that both read version 1: the first wins, the second is refused and
    // changes nothing, rather than overwriting what it never saw.
    let (m2, m3) = (settings("m2"), settings("m3"));
    let (first, second) = tokio::join!(
        send_if_match(addr, reqwest::Method::PUT, put_path, "\"1\"", &m2),
        send_if_match(addr, reqwest::Method::PUT, put_path, "1", &m3),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{first:?} {second:?}");
    let refused = if first.0 == 412 { &first.2 } else { &second.2 };
    assert_eq!(refused["error"]["code"], json!("version_mismatch"), "{refused}");
    assert_eq!(refused["error"]["field"], json!("if-match"), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("at version 2, not 1"), "{message}");
    let winner = if first.0 == 200 { "m2" } else { "m3" };
    let (_, config) = get(addr, put_path).await;
    assert_eq!((&config["version"], &config["settings"]["model"]), (&json!(2), &json!(winner)));

    // A reset naming an old version is refused too; a malformed tag is a 400; `*` and no
    // header mean whatever is current.
    let (status, _, body) =
        send_if_match(addr, reqwest::Method::POST, "/api/llm/config/reset", "\"1\"", &json!({}))
            .await;
    assert_eq!((status, &body["error"]["code"]), (412, &json!("version_mismatch")), "{body}");
    let (status, _, body) =
        send_if_match(addr, reqwest::Method::PUT, put_path, "W/\"x\"", &settings("m4")).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_header")), "{body}");
    let (_, config) = get(addr, put_path).await;
    assert_eq!(config["version"], json!(2), "nothing changed: {config}");
    let (status, etag, _) =
        send_if_match(addr, reqwest::Method::POST, "/api/llm/config/reset", "*", &json!({})).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"3\"")));
    let (status, view) = put(addr, &settings("m5")).await;
    assert_eq!((status, &view["version"]), (200, &json!(4)), "{view}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
