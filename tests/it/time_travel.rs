//! Time travel: `?at_position=N` or `?at=<time>` on a mission, an agent or the LLM
//! configuration (a conversation's: in `chat`) answers it as the log held it then, folded from its events up to that moment;
//! before it existed it is unknown (the configuration: its defaults); a bad moment is refused
//! with the parameter at fault and changes nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::missions_api::post;
use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::{TestEnv, call, wait_until};
use crate::workers::WorkerProcess;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_mission_is_seen_as_it_stood_at_each_of_its_events_and_not_before() {
    // Given a mission that ran to its end.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let _worker = WorkerProcess::start(&env, "time-worker", &[]);
    let body = json!({ "name": "then and now", "agent": "echo", "payload": { "say": "hi" } });
    let (status, enqueued) = post(addr, "/api/missions/enqueue", &body.to_string()).await;
    assert_eq!(status, 201, "{enqueued}");
    let id = enqueued["mission_id"].as_str().unwrap().to_owned();
    wait_until("the mission to complete", WAIT, || async {
        get(addr, &format!("/api/missions/{id}")).await.1["status"] == "completed"
    })
    .await;
    let (_, now) = get(addr, &format!("/api/missions/{id}")).await;
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    let events = events.as_array().unwrap().clone();
    let position = |i: usize| events[i]["global_position"].as_u64().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["MissionEnqueued", "MissionStarted", "MissionCompleted"]);

    // When it is asked for at each of its events' positions, and at the time of its start.
    let at = |query: String| {
        let path = format!("/api/missions/{id}?{query}");
        async move { get(addr, &path).await }
    };
    let (_, queued) = at(format!("at_position={}", position(0))).await;
    let (_, running) = at(format!("at_position={}", position(1))).await;
    let (_, completed) = at(format!("at_position={}", position(2))).await;
    let started_at = events[1]["recorded_at"].as_str().unwrap();
    let (status, by_time) = at(format!("at={}", urlencoding(started_at))).await;

    // Then each answer is the mission as it stood then, naming the event it ends with.
    assert_eq!((queued["status"].clone(), queued["version"].clone()), (json!("queued"), json!(1)));
    assert_eq!(queued["as_of"]["position"], position(0));
    assert_eq!(queued["worker_id"], Value::Null);
    assert_eq!(
        (running["status"].clone(), running["attempt"].clone()),
        (json!("running"), json!(1))
    );
    assert!(running["worker_id"].is_string(), "{running}");
    assert_eq!(running["result"], Value::Null);
    assert_eq!(status, 200, "{by_time}");
    assert_eq!(by_time["status"], "running");
    assert_eq!(by_time["as_of"]["position"], position(1));
    let mut completed_now = completed.clone();
    completed_now.as_object_mut().unwrap().remove("as_of");
    assert_eq!(completed_now, now, "at its last event it is what it is now");
    assert!(now.get("as_of").is_none(), "the present has no as_of");

    // And before its first event, it did not exist yet.
    let (status, before) = at(format!("at_position={}", position(0) - 1)).await;
    assert_eq!(status, 404, "{before}");
    assert_eq!(before["error"]["code"], "mission_not_found");

    // And a bad moment is refused, naming the parameter at fault: a rule it breaks as its
    // `field`, a value that does not parse (or a parameter that does not exist) in the message.
    for (query, code, named) in [
        ("at_position=0".to_owned(), "invalid_field", "at_position"),
        (
            format!("at_position={}&at={}", position(1), urlencoding(started_at)),
            "invalid_field",
            "at",
        ),
        ("at=yesterday".to_owned(), "invalid_query", "at"),
        ("at_position=-3".to_owned(), "invalid_query", "at_position"),
        ("as_of=3".to_owned(), "invalid_query", "as_of"),
    ] {
        let (status, refused) = at(query.clone()).await;
        assert_eq!(status, 400, "{query}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{query}: {refused}");
        let said = if code == "invalid_field" {
            refused["error"]["field"].as_str().unwrap().to_owned()
        } else {
            refused["error"]["message"].as_str().unwrap().to_owned()
        };
        assert!(said.contains(named), "{query}: {refused}");
    }

    // And without a key, a moment is no way in.
    let path = format!("/api/missions/{id}?at_position={}", position(1));
    assert_eq!(call(addr, "GET", &path, None).await.0, 401);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// `+` and `:` of an RFC 3339 time, escaped for a query string.
fn urlencoding(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn an_agent_is_seen_as_it_stood_at_its_registration_and_not_before() {
    // Given a worker's built-in agent, registered and running.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let _worker = WorkerProcess::start(&env, "time-agents", &[]);
    let first_agent = || async {
        let (_, agents) = get(addr, "/api/agents").await;
        let first = agents["agents"].as_array().and_then(|agents| agents.first().cloned());
        first.map(|agent| agent["agent_id"].as_str().unwrap().to_owned())
    };
    wait_until("the worker's agent to register", WAIT, || async { first_agent().await.is_some() })
        .await;
    let agent_id = first_agent().await.unwrap();
    let (_, now) = get(addr, &format!("/api/agents/{agent_id}")).await;
    let history = now["history"].as_array().unwrap();
    let registered = history[0]["global_position"].as_u64().unwrap();
    assert_eq!(history[0]["event_type"], "AgentRegistered");

    // When it is asked for at its registration, and before it.
    let (status, then) =
        get(addr, &format!("/api/agents/{agent_id}?at_position={registered}")).await;
    let (before, unknown) =
        get(addr, &format!("/api/agents/{agent_id}?at_position={}", registered - 1)).await;

    // Then it is the agent as registered, one event long; before, it did not exist.
    assert_eq!(status, 200, "{then}");
    assert_eq!(then["stream_version"], 1);
    assert_eq!(then["as_of"]["position"], registered);
    assert_eq!(then["history"].as_array().unwrap().len(), 1);
    assert_eq!(then["name"], now["name"]);
    assert_eq!((before, unknown["error"]["code"].clone()), (404, json!("agent_not_found")));
    let (status, refused) = get(addr, &format!("/api/agents/{agent_id}?at_position=0")).await;
    assert_eq!((status, refused["error"]["field"].clone()), (400, json!("at_position")));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_llm_configuration_is_seen_as_each_change_left_it_and_as_the_defaults_before() {
    // Given two changes of the configuration.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let first = json!({ "provider": "openai", "model": "first-model", "temperature": 0.3 });
    let (status, changed) = crate::llm_config::put(addr, &first).await;
    assert_eq!(status, 200, "{changed}");
    let first_at = env.head().await;
    let second = json!({ "provider": "openai", "model": "second-model", "temperature": 0.7 });
    assert_eq!(crate::llm_config::put(addr, &second).await.0, 200);

    // When it is asked for right after the first change, and before any.
    let (_, then) = get(addr, &format!("/api/llm/config?at_position={first_at}")).await;
    let (_, before) = get(addr, &format!("/api/llm/config?at_position={}", first_at - 1)).await;
    let (_, now) = get(addr, "/api/llm/config").await;

    // Then each is the configuration as it stood: the first change's, the defaults, today's.
    assert_eq!(then["settings"]["model"], "first-model", "{then}");
    assert_eq!(
        (then["version"].clone(), then["as_of"]["position"].clone()),
        (json!(1), json!(first_at))
    );
    assert_eq!(before["settings"]["provider"], "offline", "{before}");
    assert_eq!(before["version"], 0);
    assert!(before.get("as_of").is_none(), "nothing was folded: {before}");
    assert_eq!(now["settings"]["model"], "second-model");
    assert!(now.get("as_of").is_none());
    let (status, refused) =
        get(addr, "/api/llm/config?at_position=1&at=2026-01-01T00%3A00%3A00Z").await;
    assert_eq!((status, refused["error"]["field"].clone()), (400, json!("at")));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
