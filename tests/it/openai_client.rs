//! BRAiN's own `POST /v1/chat/completions`, called by the official `openai` Python package
//! (installed by `scripts/services.sh`): a completion and a streamed one, answered through the
//! gateway's configured route (here the fake provider), with the usage. The client's
//! `api_key` is a BRAiN key.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::{redis_url, serve_in_process, services};
use crate::support::TestEnv;

const CLIENT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0, timeout=30)
asked = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello"}]
plain = client.chat.completions.create(model="default", messages=asked)
stream = client.chat.completions.create(model="default", messages=asked, stream=True,
                                        stream_options={"include_usage": True})
pieces, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.total_tokens
print(json.dumps({"text": plain.choices[0].message.content, "tokens": plain.usage.total_tokens,
                  "pieces": pieces, "stream_tokens": usage}))
"#;

#[tokio::test]
async fn the_openai_python_client_completes_and_streams_through_brain() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let fake = FakeLlm::start(vec![], Scripted::text("hello there friend"), None).await;
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "fake-2" });
    crate::serve::crypto_provider();
    let response = crate::support::client()
        .put(format!("http://{addr}/api/llm/config"))
        .header("content-type", "application/json")
        .body(config.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let url = format!("http://{addr}");
    // Run off the runtime, which serves the client's requests meanwhile.
    let client = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", CLIENT, &url, crate::support::ADMIN_TOKEN])
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the client finishes")
        .unwrap()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client failed: {stderr}");
    let answer: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(answer["text"], "hello there friend", "{answer}");
    assert_eq!(answer["pieces"], json!(["hello", " there", " friend"]), "{answer}");
    assert_eq!(
        (&answer["tokens"], &answer["stream_tokens"]),
        (&json!(18), &json!(18)),
        "11 in + 7 out: {answer}"
    );
    // Both went to the configured model, the second streamed.
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((&seen[0].body["model"], &seen[1].body["stream"]), (&json!("fake-2"), &json!(true)));
    // Usage by kind names them as the API's calls.
    crate::support::wait_until("the usage to show both calls", Duration::from_secs(10), || async {
        let (_, usage) = crate::serve::get(addr, "/api/llm/usage?by=kind").await;
        usage["groups"].as_array().is_some_and(|groups| {
            groups.len() == 1 && groups[0]["key"] == "api" && groups[0]["calls"] == 2
        })
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
