//! A call's tokens count even when its provider reports none: each protocol answering without
//! usage gets both counts estimated and marked; a call streamed through `/v1` from a provider
//! that sends no usage chunk is recorded with its estimate, which a token budget and the usage
//! report see. A streamed `/v1` call refused by a budget or by the shared limits answers its
//! own status (`402`, `429` with `Retry-After`) and error body before any byte of a stream.

use std::time::Duration;

use brain::backoff::Backoff;
use brain::llm::estimate::{input_tokens, output_tokens};
use brain::llm::gateway::{Gateway, ProviderKind, Route, Target};
use brain::llm::retry::RetryPolicy;
use brain::llm::{EstimateMethod, Message, Role, Timeouts, ToolSpec, UsageEstimate};
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::get;
use crate::support::{TestEnv, wait_until};
use crate::workers::serve_without_workers;

const ANSWER: &str = "an old silent pond, a frog jumps into the pond";
/// The route's `max_tokens`: the output a call's worst case holds.
const OUTPUT: u64 = 20;

fn estimated_both() -> Option<UsageEstimate> {
    Some(UsageEstimate { input: true, output: true, method: EstimateMethod::ThreeBytesPerToken })
}

#[tokio::test]
async fn every_protocol_answering_without_usage_gets_its_tokens_estimated_and_marked() {
    let answer = Scripted::Answer {
        text: ANSWER.into(),
        tool_calls: vec![("read_file".into(), json!({ "path": "src/main.rs" }))],
        usage: (21, 9),
    };
    let fake = FakeLlm::start(vec![], answer, None).await;
    fake.omit_usage();
    crate::serve::crypto_provider();
    let retry =
        RetryPolicy { backoff: Backoff { base_ms: 50, max_ms: 200 }, ..RetryPolicy::default() };
    let gateway = Gateway::new(crate::fake_llm::credentials("k"), Timeouts::default(), retry);
    let messages =
        vec![Message::new(Role::System, "be brief"), Message::new(Role::User, "write a haiku")];
    let tools = vec![ToolSpec {
        name: "read_file".into(),
        description: "read a file".into(),
        parameters: json!({ "type": "object", "properties": { "path": { "type": "string" } } }),
    }];
    for provider in [ProviderKind::Openai, ProviderKind::Ollama, ProviderKind::Anthropic] {
        for streaming in [false, true] {
            let what = format!("{provider:?} streaming={streaming}");
            let route = Route {
                targets: vec![Target::new(provider, fake.url(), "m-1")],
                temperature: None,
                max_tokens: Some(64),
            };
            let mut sink = |_: &str| {};
            let sink: Option<brain::llm::TokenSink> =
                if streaming { Some(&mut sink) } else { None };
            let answered = gateway
                .chat(&route, &messages, &tools, sink)
                .await
                .unwrap_or_else(|failed| panic!("{what}: {failed}"));
            let answer = &answered.answer;
            assert_eq!(answer.content, ANSWER, "{what}");
            let usage = answer.usage;
            assert_eq!(
                (usage.input_tokens, usage.output_tokens, usage.estimate),
                (
                    input_tokens(&messages, &tools),
                    output_tokens(ANSWER, &answer.tool_calls),
                    estimated_both()
                ),
                "{what}"
            );
            assert!(
                usage.output_tokens > output_tokens(ANSWER, &[]),
                "{what}: the tool call counts"
            );
        }
    }
    // The gateway asked for the usage where the protocol lets it.
    let streamed = fake
        .seen()
        .into_iter()
        .find(|seen| seen.path == "/v1/chat/completions" && seen.body["stream"] == true)
        .unwrap();
    assert_eq!(streamed.body["stream_options"], json!({ "include_usage": true }));
}

async fn put_config(addr: std::net::SocketAddr, body: &Value) {
    let (status, answer) = crate::llm_config::put(addr, body).await;
    assert_eq!(status, 200, "{answer}");
}

/// A `/v1` completion of `prompt`, streamed or not.
async fn complete(addr: std::net::SocketAddr, prompt: &str, stream: bool) -> reqwest::Response {
    crate::support::client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({ "model": "default", "stream": stream,
            "messages": [{ "role": "user", "content": prompt }] }))
        .send()
        .await
        .unwrap()
}

/// A refusal as the client reads it: its status, `Retry-After`, content type and JSON body.
async fn refusal(response: reqwest::Response) -> (u16, Option<String>, String, Value) {
    let status = response.status().as_u16();
    let header =
        |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    let (retry_after, content_type) = (header("retry-after"), header("content-type"));
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, retry_after, content_type.unwrap_or_default(), json)
}

/// The usage of the `/v1` calls recorded in the log (`LlmCalled`), in order.
async fn recorded_calls(env: &TestEnv) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT payload->'call' FROM events WHERE stream_type = 'llm_call' ORDER BY global_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_streamed_call_without_usage_is_counted_by_estimate_and_its_budget_refuses_the_next_with_402()
 {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let fake = FakeLlm::start(vec![], Scripted::text(ANSWER), None).await;
    fake.omit_usage();
    let prompt = "write a haiku about a pond";
    let input = input_tokens(&[Message::new(Role::User, prompt)], &[]);
    let output = output_tokens(ANSWER, &[]);
    // A call holds its input and `max_tokens`; the budget lets one through, and lets a second
    // through only if the first was counted as nothing.
    let worst = input + OUTPUT;
    let budget = worst + (input + output) - 1;
    put_config(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": OUTPUT,
            "daily_budgets": { "all": { "tokens_max": budget } } }),
    )
    .await;

    let response = complete(addr, prompt, true).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let usage = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|chunk| chunk.get("usage").is_some())
        .expect("a usage chunk")["usage"]
        .clone();
    assert_eq!(
        (&usage["prompt_tokens"], &usage["completion_tokens"]),
        (&json!(input), &json!(output)),
        "the client is told the estimate: {text}"
    );

    // The record holds the estimate, marked as one.
    let calls = recorded_calls(&env).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (&calls[0]["outcome"], &calls[0]["input_tokens"], &calls[0]["output_tokens"]),
        (&json!("ok"), &json!(input), &json!(output)),
        "{}",
        calls[0]
    );
    assert!(input > 0 && output > 0);
    assert_eq!(
        calls[0]["usage_estimate"],
        json!({ "input": true, "output": true, "method": "three_bytes_per_token" })
    );

    // The budget saw it: the next call would pass it, and is refused before a byte of a
    // stream, with its status and error body.
    let (status, retry_after, content_type, body) =
        refusal(complete(addr, prompt, true).await).await;
    assert_eq!((status, &body["error"]["code"]), (402, &json!("budget_exceeded")), "{body}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert_eq!(retry_after, None);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{} tokens spent", input + output)), "{message}");
    assert_eq!(fake.seen().len(), 1, "the refused call was not sent");

    // The usage report (what a budget is seeded from after Redis lost its keys) has it too.
    wait_until("the calls in the usage report", Duration::from_secs(20), || async {
        get(addr, "/api/llm/usage?by=model").await.1["groups"][0]["calls"] == 2
    })
    .await;
    let (_, report) = get(addr, "/api/llm/usage?by=model").await;
    let group = &report["groups"][0];
    assert_eq!(
        (&group["input_tokens"], &group["output_tokens"], &group["errors"]),
        (&json!(input), &json!(output), &json!(1)),
        "{report}"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_streamed_call_the_shared_limits_refuse_answers_429_with_retry_after_before_any_byte() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let fake = FakeLlm::start(vec![], Scripted::text(ANSWER), None).await;
    // One token a minute: the first call's tokens keep the next waiting for far longer than
    // a call may wait, so it is refused at once.
    put_config(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": OUTPUT,
            "limits": { "openai/fake-1": { "tpm": 1 } } }),
    )
    .await;
    let first = complete(addr, "hello", true).await;
    assert_eq!(first.status(), 200);
    assert!(first.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    let (status, retry_after, content_type, body) =
        refusal(complete(addr, "hello", true).await).await;
    assert_eq!((status, &body["error"]["code"]), (429, &json!("rate_limited")), "{body}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(seconds > 60, "the wait the limits ask for: {seconds} s");
    // An unstreamed call is refused alike.
    let (status, retry_after, _, _) = refusal(complete(addr, "hello", false).await).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    assert_eq!(fake.seen().len(), 1, "the refused calls were not sent");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
