//! The LLM gateway against the fake providers: each protocol streaming and not (answer,
//! usage, tool calls, embeddings), retries that honour `Retry-After`, failures that are not
//! retried, fallback to a route's next target, a key that never shows in an error, and a
//! `coder` mission that completes offline out of the box.

use std::time::{Duration, Instant};

use brain::backoff::Backoff;
use brain::llm::gateway::{Gateway, ProviderKind, Route, Target};
use brain::llm::retry::RetryPolicy;
use brain::llm::{Message, Reason, Role, Timeouts, ToolSpec};
use serde_json::json;

use crate::fake_llm::{FakeLlm, Scripted, UNKNOWN_MODEL};

const KEY: &str = "sk-test-5ecret-v4lue-0123456789";

fn gateway() -> Gateway {
    crate::serve::crypto_provider();
    let credentials = crate::fake_llm::credentials(KEY);
    let retry =
        RetryPolicy { backoff: Backoff { base_ms: 50, max_ms: 200 }, ..RetryPolicy::default() };
    Gateway::new(credentials, Timeouts::default(), retry)
}

fn route(provider: ProviderKind, host: &str, model: &str) -> Route {
    Route {
        targets: vec![Target::new(provider, host, model)],
        temperature: Some(0.2),
        max_tokens: Some(64),
    }
}

fn ask() -> Vec<Message> {
    vec![Message::new(Role::System, "be brief"), Message::new(Role::User, "what is two plus two")]
}

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "read_file".into(),
        description: "read a file".into(),
        parameters: json!({ "type": "object", "properties": { "path": { "type": "string" } } }),
    }]
}

#[tokio::test]
async fn every_provider_answers_with_text_usage_and_tool_calls_streaming_and_not() {
    let answer = Scripted::Answer {
        text: "it is four".into(),
        tool_calls: vec![("read_file".into(), json!({ "path": "src/main.rs" }))],
        usage: (21, 9),
    };
    let fake = FakeLlm::start(vec![], answer, Some(KEY)).await;
    let gateway = gateway();
    for provider in [ProviderKind::Openai, ProviderKind::Ollama, ProviderKind::Anthropic] {
        for streaming in [false, true] {
            let mut streamed = Vec::new();
            let mut sink = |piece: &str| streamed.push(piece.to_owned());
            let sink: Option<brain::llm::TokenSink> =
                if streaming { Some(&mut sink) } else { None };
            let answered = gateway
                .chat(&route(provider, &fake.url(), "m-1"), &ask(), &tools(), sink)
                .await
                .unwrap_or_else(|failed| panic!("{provider:?} streaming={streaming}: {failed}"));
            let what = format!("{provider:?} streaming={streaming}");
            assert_eq!(answered.answer.content, "it is four", "{what}");
            assert_eq!(
                (answered.answer.usage.input_tokens, answered.answer.usage.output_tokens),
                (21, 9),
                "{what}"
            );
            let call = &answered.answer.tool_calls[0];
            assert_eq!(
                (call.name.as_str(), &call.arguments),
                ("read_file", &json!({ "path": "src/main.rs" })),
                "{what}"
            );
            if streaming {
                assert_eq!(streamed, ["it", " is", " four"], "{what}: tokens arrive one by one");
            }
        }
    }
    // What went on the wire: each protocol's own shape, key and headers.
    let seen = fake.seen();
    let openai =
        seen.iter().find(|s| s.path == "/v1/chat/completions" && s.body["stream"] == true).unwrap();
    assert_eq!(openai.headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(openai.body["stream_options"]["include_usage"], true);
    assert_eq!(openai.body["tools"][0]["function"]["name"], "read_file");
    let anthropic = seen.iter().find(|s| s.path == "/v1/messages").unwrap();
    assert_eq!(anthropic.headers["x-api-key"], KEY);
    assert_eq!(anthropic.body["system"], "be brief", "system prompt at the top level");
    assert_eq!(anthropic.body["tools"][0]["input_schema"]["type"], "object");
    let ollama = seen.iter().find(|s| s.path == "/api/chat").unwrap();
    assert_eq!(ollama.body["options"]["num_predict"], 64);
    assert!(ollama.headers.get("authorization").is_none(), "Ollama gets no key");

    // Embeddings, where the protocol has them.
    for (provider, path) in
        [(ProviderKind::Openai, "/v1/embeddings"), (ProviderKind::Ollama, "/api/embed")]
    {
        let vectors = gateway
            .embed(&route(provider, &fake.url(), "e-1").targets[0], &["abc".into(), "hello".into()])
            .await
            .unwrap();
        assert_eq!(vectors.len(), 2, "{path}");
        assert_eq!(vectors[1][0], 5.0, "{path}");
    }
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after_and_a_500_is_retried() {
    let script = vec![
        Scripted::Status { code: 429, retry_after: Some("2".into()) },
        Scripted::Status { code: 500, retry_after: None },
    ];
    let fake = FakeLlm::start(script, Scripted::text("done"), Some(KEY)).await;
    let answered = gateway()
        .chat(&route(ProviderKind::Openai, &fake.url(), "m"), &ask(), &[], None)
        .await
        .unwrap();
    assert_eq!(answered.answer.content, "done");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "429, then 500, then the answer");
    let waited = seen[1].at.duration_since(seen[0].at);
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}, before its Retry-After");
    let failures: Vec<_> = answered.tries.iter().map(|t| t.failure).collect();
    assert_eq!(failures, [Some(Reason::RateLimited), Some(Reason::BadResponse), None]);
}

#[tokio::test]
async fn a_malformed_answer_an_unknown_model_and_a_bad_key_fail_clearly_without_retry() {
    let fake = FakeLlm::start(vec![], Scripted::Malformed, Some(KEY)).await;
    let gateway = gateway();
    for provider in [ProviderKind::Openai, ProviderKind::Ollama, ProviderKind::Anthropic] {
        let before = fake.seen().len();
        let failed =
            gateway.chat(&route(provider, &fake.url(), "m"), &ask(), &[], None).await.unwrap_err();
        assert_eq!(
            (failed.error.reason, fake.seen().len() - before),
            (Reason::BadResponse, 1),
            "{provider:?}: {failed}"
        );
        let before = fake.seen().len();
        let failed = gateway
            .chat(&route(provider, &fake.url(), UNKNOWN_MODEL), &ask(), &[], None)
            .await
            .unwrap_err();
        assert_eq!(
            (failed.error.reason, fake.seen().len() - before),
            (Reason::ModelNotFound, 1),
            "{provider:?}: {failed}"
        );
    }
    // A wrong key: auth_failed, once, and the key we sent is in no message.
    let wrong = Gateway::new(
        crate::fake_llm::credentials("sk-wrong-key-000"),
        Timeouts::default(),
        RetryPolicy::default(),
    );
    for provider in [ProviderKind::Openai, ProviderKind::Anthropic] {
        let before = fake.seen().len();
        let failed =
            wrong.chat(&route(provider, &fake.url(), "m"), &ask(), &[], None).await.unwrap_err();
        assert_eq!(
            (failed.error.reason, fake.seen().len() - before),
            (Reason::AuthFailed, 1),
            "{provider:?}"
        );
        let shown = format!("{failed} {failed:?} {:?}", failed.tries);
        assert!(!shown.contains("sk-wrong-key-000") && !shown.contains(KEY), "{shown}");
    }
}

#[tokio::test]
async fn a_route_falls_back_to_its_next_target_when_the_first_is_down() {
    let fake = FakeLlm::start(vec![], Scripted::text("from the second"), Some(KEY)).await;
    // Nothing listens on the first target's port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let route = Route {
        targets: vec![
            Target::new(ProviderKind::Ollama, down, "m"),
            Target::new(ProviderKind::Anthropic, fake.url(), "claude"),
        ],
        temperature: None,
        max_tokens: None,
    };
    let started = Instant::now();
    let answered = gateway().chat(&route, &ask(), &[], None).await.unwrap();
    assert_eq!(
        (answered.provider, answered.answer.content.as_str()),
        (ProviderKind::Anthropic, "from the second")
    );
    let first: Vec<_> = answered
        .tries
        .iter()
        .filter(|t| t.provider == ProviderKind::Ollama)
        .map(|t| t.failure)
        .collect();
    assert_eq!(first, [Some(Reason::ProviderUnreachable); 3], "the first target tried three times");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_coder_mission_completes_offline_out_of_the_box() {
    let env = crate::support::TestEnv::new().await;
    let mut options = brain::serve::ServeOptions::new(
        crate::serve::services(&env, &crate::serve::redis_url()),
        "127.0.0.1:0".parse().unwrap(),
    );
    options.run_workers(
        brain::config::agents::AgentSpec::parse(brain::config::WORKER_AGENTS_DEFAULT).unwrap(),
        2,
    );
    let (addr, shutdown, task) = crate::serve::serve_with_options(options).await;
    let id = crate::workers::enqueue(
        addr,
        json!({ "name": "first", "payload": { "prompt": "say hello" } }),
    )
    .await;
    crate::support::wait_until(
        "the coder mission to complete",
        Duration::from_secs(20),
        || async { crate::workers::mission_status(addr, &id).await == "completed" },
    )
    .await;
    let result = crate::workers::mission(addr, &id).await["result"].clone();
    assert_eq!(
        (&result["provider"], &result["model"]),
        (&json!("offline"), &json!("offline")),
        "{result}"
    );
    let answer = result["answer"].as_str().unwrap();
    assert!(answer.starts_with("[offline]") && answer.contains("say hello"), "{answer}");
    let (_, metrics) = crate::serve::get(addr, "/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    for name in
        ["brain_llm_call_seconds", "brain_llm_tokens_total", "brain_llm_cost_microusd_total"]
    {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_missions_answer_streams_to_an_sse_client_as_it_is_generated() {
    use futures::StreamExt;
    let env = crate::support::TestEnv::new().await;
    let fake = FakeLlm::start(vec![], Scripted::text("one two three four"), None).await;
    let mut options = brain::serve::ServeOptions::new(
        crate::serve::services(&env, &crate::serve::redis_url()),
        "127.0.0.1:0".parse().unwrap(),
    );
    options.run_workers(brain::config::agents::AgentSpec::parse("coder=plain").unwrap(), 1);
    let (addr, shutdown, task) = crate::serve::serve_with_options(options).await;
    crate::serve::crypto_provider();
    let client = crate::support::client();
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "m" });
    assert_eq!(
        client
            .put(format!("http://{addr}/api/llm/config"))
            .json(&config)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Due in two seconds: time to subscribe before the agent speaks.
    let due = (time::OffsetDateTime::now_utc() + Duration::from_secs(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = crate::workers::enqueue(
        addr,
        json!({ "name": "stream", "not_before": due, "payload": { "prompt": "count" } }),
    )
    .await;
    // The same pieces on the WebSocket feed, between the mission's events.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/ws/events?mission_id={id}&tokens=true&from=0");
    let (mut socket, _) =
        tokio_tungstenite::client_async(crate::support::ws_request(&url), tcp).await.unwrap();
    let response =
        client.get(format!("http://{addr}/api/missions/{id}/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("event: done") {
        assert!(Instant::now() < deadline, "no done event: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pieces: Vec<String> = text
        .split("\n\n")
        .filter(|event| event.starts_with("event: token"))
        .map(|event| {
            let data = event.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
            serde_json::from_str::<serde_json::Value>(data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(pieces, ["one", " two", " three", " four"], "{text}");
    let mut feed = Vec::new();
    while !feed.iter().any(|m: &serde_json::Value| m["event_type"] == "MissionCompleted") {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the feed goes on")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            feed.push(serde_json::from_str(&text).unwrap());
        }
    }
    let tokens: Vec<&str> =
        feed.iter().filter_map(|m| m["token"]["text"].as_str()).filter(|t| !t.is_empty()).collect();
    assert_eq!(tokens, ["one", " two", " three", " four"], "{feed:?}");
    // Pieces are live and carry no position (they come over NATS core, not the log, so
    // they may overtake the event of the attempt's start); the events keep their order.
    assert!(
        feed.iter()
            .filter(|m| m.get("token").is_some())
            .all(|m| m.get("global_position").is_none())
    );
    let positions: Vec<u64> = feed.iter().filter_map(|m| m["global_position"].as_u64()).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{positions:?}");
    let types: Vec<&str> = feed.iter().filter_map(|m| m["event_type"].as_str()).collect();
    assert!(
        types.contains(&"MissionLlmCalled") && types.ends_with(&["MissionCompleted"]),
        "{types:?}"
    );
    crate::support::wait_until("the mission to complete", Duration::from_secs(10), || async {
        crate::workers::mission_status(addr, &id).await == "completed"
    })
    .await;
    assert_eq!(crate::workers::mission(addr, &id).await["result"]["answer"], "one two three four");
    // A stream opened on a finished mission ends by itself, saying why.
    let late = client.get(format!("http://{addr}/api/missions/{id}/stream")).send().await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), late.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(text.contains("event: done") && text.contains("completed"), "{text}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
