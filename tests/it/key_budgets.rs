//! An API key's own limits on `/v1`: its daily token budget (held before the call like a
//! mission's, so a refused stream answers 402 before any byte, and seeded from the log after
//! Redis forgets), its lifetime budget, and its model allow-list; another key is not held to
//! them.

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::support::{TestEnv, client_with, make_key};
use crate::workers::serve_without_workers;

const ANSWER: &str = "a short answer";

async fn complete(
    addr: std::net::SocketAddr,
    token: &str,
    model: &str,
    stream: bool,
) -> (u16, Value) {
    let response = client_with(token)
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({ "model": model, "stream": stream,
            "messages": [{ "role": "user", "content": "hello" }] }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    if kind.is_some_and(|kind| kind.starts_with("text/event-stream")) {
        return (status, Value::String(text));
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A serve whose gateway answers from a fake OpenAI provider, 20 tokens at most a call.
async fn serve_with_fake_gateway(
    env: &TestEnv,
) -> (
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    FakeLlm,
) {
    let (addr, shutdown, task) = serve_without_workers(env).await;
    let fake = FakeLlm::start(vec![], Scripted::text(ANSWER), None).await;
    let (status, body) = crate::llm_config::put(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": 20 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (addr, shutdown, task, fake)
}

#[tokio::test]
async fn a_keys_budgets_and_model_list_hold_before_the_call_and_bind_no_other_key() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let fake = FakeLlm::start(vec![], Scripted::text(ANSWER), None).await;
    let (status, body) = crate::llm_config::put(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": 20,
                 "routes": { "cheap": [{ "provider": "openai", "host": fake.url(), "model": "fake-1" }] } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A day's budget for one call: the worst case of a second does not fit what is left.
    let limited = make_key(
        addr,
        json!({ "name": "limited", "role": "developer",
                "limits": { "tokens_per_day": 60, "models": ["default", "cheap"] } }),
    )
    .await;
    let free = make_key(addr, json!({ "name": "free", "role": "developer" })).await;
    let calls_before = fake.seen().len();

    let (status, body) = complete(addr, &limited, "default", false).await;
    assert_eq!(status, 200, "{body}");
    // The allow-list: a model it does not name is refused, and nothing is sent.
    let (status, body) = complete(addr, &limited, "gpt-9", false).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    assert_eq!(body["error"]["field"], "model");
    // The day's budget: refused before anything is sent, streamed or not.
    let (status, body) = complete(addr, &limited, "cheap", true).await;
    assert_eq!((status, &body["error"]["code"]), (402, &json!("budget_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("daily budget of key"), "{message}");
    assert_eq!(complete(addr, &limited, "default", false).await.0, 402);
    assert_eq!(fake.seen().len() - calls_before, 1, "only the first call reached the provider");

    // Another key is held to none of it.
    for _ in 0..3 {
        let (status, body) = complete(addr, &free, "gpt-9", false).await;
        assert_eq!(status, 200, "{body}");
    }

    // The spend is the log's: after Redis forgets, the key's budget is seeded from it.
    crate::support::delete_redis_keys(&format!("{{{}}}:llm:budget:*", env.namespace)).await;
    let (status, body) = complete(addr, &limited, "default", false).await;
    assert_eq!(status, 402, "{body}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_keys_lifetime_budget_counts_every_day() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task, _fake) = serve_with_fake_gateway(&env).await;
    let key = make_key(
        addr,
        json!({ "name": "total", "role": "developer", "limits": { "tokens_total": 60 } }),
    )
    .await;
    assert_eq!(complete(addr, &key, "default", false).await.0, 200);
    let (status, body) = complete(addr, &key, "default", false).await;
    assert_eq!(status, 402, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("the budget of key"), "{body}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_keys_tokens_per_minute_answer_429_with_the_wait_until_the_next_minute() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task, _fake) = serve_with_fake_gateway(&env).await;
    let key = make_key(
        addr,
        json!({ "name": "tpm", "role": "developer", "limits": { "tokens_per_minute": 60 } }),
    )
    .await;
    assert_eq!(complete(addr, &key, "default", false).await.0, 200);
    // One call's worth a minute: of the next two, at least one falls in the first's minute
    // (a minute can turn between two calls, not twice).
    let mut refusals = Vec::new();
    for _ in 0..2 {
        let response = client_with(&key)
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({ "model": "default", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            let body: Value = response.json().await.unwrap();
            refusals.push((wait, body));
        }
    }
    let (wait, body) = refusals.first().expect("a call past the key's tokens per minute");
    assert!((1..=60).contains(wait), "{wait}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tokens per minute"), "{body}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
