//! Chat with an agent: three turns keep their context across a restart of the serve (the
//! conversation is in the log), the second streamed; bad input is refused naming the field.

use serde_json::{Value, json};

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

use crate::fake_llm::{FakeLlm, Scripted};
use crate::missions_api::post;
use crate::serve::get;
use crate::support::TestEnv;
use crate::workers::serve_without_workers;

async fn say(addr: std::net::SocketAddr, body: Value) -> (u16, Value) {
    post(addr, "/api/agents/chat", &body.to_string()).await
}

#[tokio::test]
async fn a_three_turn_chat_keeps_its_context_across_a_serve_restart() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let script = vec![
        Scripted::text("hello ann"),
        Scripted::text("it is rust"),
        Scripted::text("you are ann"),
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "fake-1" });
    assert_eq!(crate::llm_config::put(addr, &config).await.0, 200);

    let (status, first) = say(addr, json!({ "agent": "coder", "message": "I am ann" })).await;
    assert_eq!((status, &first["answer"]), (200, &json!("hello ann")), "{first}");
    let id = first["conversation_id"].as_str().unwrap().to_owned();

    // The second turn streams.
    crate::serve::crypto_provider();
    let streamed = crate::support::client()
        .post(format!("http://{addr}/api/agents/chat"))
        .json(&json!({ "agent": "coder", "message": "what language is this?", "conversation_id": id, "stream": true }))
        .send()
        .await
        .unwrap();
    assert!(streamed.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = tokio::time::timeout(std::time::Duration::from_secs(20), streamed.text())
        .await
        .unwrap()
        .unwrap();
    let pieces: Vec<String> = text
        .split("\n\n")
        .filter(|event| event.starts_with("event: token"))
        .map(|event| {
            let data = event.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
            serde_json::from_str::<Value>(data).unwrap()["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(pieces, ["it", " is", " rust"], "{text}");
    assert!(text.contains("event: done") && text.contains("\"answer\":\"it is rust\""), "{text}");

    // Usage counts the chat under its own label, not an agent kind's (nor "none").
    crate::support::wait_until(
        "the usage to show the chat",
        std::time::Duration::from_secs(10),
        || async {
            let (_, usage) = crate::serve::get(addr, "/api/llm/usage?by=kind").await;
            usage["groups"].as_array().is_some_and(|groups| {
                groups.iter().any(|g| g["key"] == "chat:coder" && g["calls"] == 2)
                    && groups.iter().all(|g| g["key"] != "" && g["key"] != "coder")
            })
        },
    )
    .await;

    // A restart between turns: the conversation is in the log.
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (status, third) =
        say(addr, json!({ "agent": "coder", "message": "who am I?", "conversation_id": id })).await;
    assert_eq!((status, &third["answer"]), (200, &json!("you are ann")), "{third}");
    let sent: Vec<(String, String)> = fake.seen()[2].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned())
        })
        .collect();
    let said: Vec<(&str, &str)> = sent[1..].iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
    assert_eq!(sent[0].0, "system");
    assert_eq!(
        said,
        [
            ("user", "I am ann"),
            ("assistant", "hello ann"),
            ("user", "what language is this?"),
            ("assistant", "it is rust"),
            ("user", "who am I?")
        ]
    );
    let (status, conversation) = get(addr, &format!("/api/conversations/{id}")).await;
    assert_eq!((status, &conversation["agent"]), (200, &json!("coder")), "{conversation}");
    assert_eq!(conversation["messages"].as_array().unwrap().len(), 6);
    assert_eq!(conversation["messages"][5]["provider"], "openai");
    // As the log held it after its third event: fewer turns, and the moment named.
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(&id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let third_at = positions[2];
    let (status, then) =
        get(addr, &format!("/api/conversations/{id}?at_position={third_at}")).await;
    assert_eq!(
        (status, &then["version"], &then["as_of"]["position"]),
        (200, &json!(3), &json!(third_at))
    );
    let turns = then["messages"].as_array().unwrap();
    assert!(
        turns.len() < 6 && turns[..] == conversation["messages"].as_array().unwrap()[..turns.len()]
    );
    let (status, _) =
        get(addr, &format!("/api/conversations/{id}?at_position={}", positions[0] - 1)).await;
    assert_eq!(status, 404, "before its first event it did not exist");

    // Bad input changes nothing.
    for (body, status, field) in [
        (json!({ "agent": "nobody", "message": "hi" }), 422, json!("agent")),
        (json!({ "agent": "coder", "message": " " }), 422, json!("message")),
        (
            json!({ "agent": "coder", "message": "hi", "conversation_id": "x" }),
            400,
            json!("conversation_id"),
        ),
    ] {
        let (got, answer) = say(addr, body.clone()).await;
        assert_eq!((got, &answer["error"]["field"]), (status, &field), "{body}: {answer}");
    }
    let unknown = json!({ "agent": "coder", "message": "hi", "conversation_id": uuid::Uuid::now_v7().to_string() });
    assert_eq!(say(addr, unknown).await.0, 404);
    let (_, other) =
        say(addr, json!({ "agent": "ops", "message": "hi", "conversation_id": id })).await;
    assert_eq!(other["error"]["code"], "other_agent", "{other}");
    assert_eq!(
        get(addr, &format!("/api/conversations/{id}")).await.1["version"],
        conversation["version"]
    );
    assert_eq!(fake.seen().len(), 3);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn conversations_are_listed_most_recently_changed_first() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    // The default configuration is offline: every chat answers without a model.
    let (_, first) =
        say(addr, json!({ "agent": "coder", "message": "first question\nmore" })).await;
    let first = first["conversation_id"].as_str().unwrap().to_owned();
    let (_, other) = say(addr, json!({ "agent": "architect", "message": "design?" })).await;
    let other = other["conversation_id"].as_str().unwrap().to_owned();
    let (status, _) =
        say(addr, json!({ "agent": "coder", "message": "again", "conversation_id": first })).await;
    assert_eq!(status, 200);

    let list = || async { get(addr, "/api/conversations").await.1 };
    crate::support::wait_until("both listed, the first changed last", WAIT, || async {
        let page = list().await;
        page["conversations"].as_array().is_some_and(|rows| {
            rows.len() == 2
                && rows[0]["conversation_id"] == json!(first)
                && rows[0]["messages"] == json!(4)
        })
    })
    .await;
    let page = list().await;
    let row = &page["conversations"][0];
    assert_eq!(
        (&row["agent"], &row["title"], &row["started_by"]),
        (&json!("coder"), &json!("first question"), &json!(crate::support::ADMIN_ACTOR)),
        "{page}"
    );
    assert_eq!(page["conversations"][1]["conversation_id"], json!(other));
    assert_eq!(page["next_before"], Value::Null, "{page}");

    let (_, coder) = get(addr, "/api/conversations?agent=architect").await;
    assert_eq!(coder["conversations"].as_array().unwrap().len(), 1, "{coder}");
    let (_, one) = get(addr, "/api/conversations?limit=1").await;
    let before = one["next_before"].as_u64().expect("a next page");
    let (_, rest) = get(addr, &format!("/api/conversations?limit=1&before={before}")).await;
    assert_eq!(rest["conversations"][0]["conversation_id"], json!(other), "{rest}");
    let (status, bad) = get(addr, "/api/conversations?limit=0").await;
    assert_eq!((status, &bad["error"]["field"]), (400, &json!("limit")), "{bad}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
