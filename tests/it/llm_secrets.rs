//! A provider key given to `brain serve` and `brain worker` in their environment reaches the
//! provider, and nothing else: not an event, not an answer of the API, not a log line (debug
//! level included), whether the key is right or wrong.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::support::{TestEnv, nats_url, redis_url, wait_until};
use crate::workers::{enqueue, mission_status};

const SECRET: &str = "sk-s3cr3t-do-not-leak-4f1c9a";

#[tokio::test]
async fn the_provider_key_is_in_no_event_answer_or_log_line() {
    let env = TestEnv::new().await;
    let fake = FakeLlm::start(vec![], Scripted::text("keyed answer"), Some(SECRET)).await;
    let logs = tempdir();
    let spawn = |args: &[&str], log: &str| {
        crate::support::brain_command()
            .args(args)
            .env("DATABASE_URL", &env.database_url)
            .env("NATS_URL", nats_url())
            .env("REDIS_URL", redis_url())
            .env("BRAIN_NAMESPACE", env.namespace.as_str())
            .env("BRAIN_HTTP_ADDR", "127.0.0.1:0")
            .env("OPENAI_API_KEY", SECRET)
            // The fake is where the operator lets the key go; the API only points a route at it.
            .env("BRAIN_LLM_KEY_HOSTS", fake.url())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(logs.join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let mut serve = spawn(&["serve", "--workers", "0"], "serve.log");
    let stdout = serve.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default()
    })
    .await
    .unwrap();
    let addr: std::net::SocketAddr = line.rsplit("http://").next().unwrap().parse().unwrap();
    let mut worker =
        spawn(&["worker", "--agents", "coder=plain", "--worker-id", "keyed"], "worker.log");

    let mut answers = Vec::new();
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "m" });
    crate::serve::crypto_provider();
    let client = crate::support::client();
    let put =
        client.put(format!("http://{addr}/api/llm/config")).json(&config).send().await.unwrap();
    answers.push(put.text().await.unwrap());
    let id = enqueue(addr, json!({ "name": "keyed", "payload": { "prompt": "hi" } })).await;
    wait_until("the keyed mission to complete", Duration::from_secs(30), || async {
        mission_status(addr, &id).await == "completed"
    })
    .await;
    let body = json!({ "model": "default", "messages": [{ "role": "user", "content": "hi" }] });
    for stream in [false, true] {
        let mut body = body.clone();
        body["stream"] = json!(stream);
        let answer = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        answers.push(answer.text().await.unwrap());
    }
    // A wrong model and an unreachable host fail; their errors must not carry the key either.
    let wrong = json!({ "provider": "openai", "host": "http://127.0.0.1:9", "model": "m" });
    client.put(format!("http://{addr}/api/llm/config")).json(&wrong).send().await.unwrap();
    let failed =
        client.post(format!("http://{addr}/v1/chat/completions")).json(&body).send().await.unwrap();
    answers.push(failed.text().await.unwrap());
    for path in [
        "/api/llm/config",
        &format!("/api/missions/{id}"),
        &format!("/api/missions/{id}/events"),
        "/metrics",
    ] {
        answers.push(
            client.get(format!("http://{addr}{path}")).send().await.unwrap().text().await.unwrap(),
        );
    }

    // The key went where it belongs.
    let seen = fake.seen();
    assert!(seen.len() >= 3, "{}", seen.len());
    assert!(seen.iter().all(|s| s.headers["authorization"] == format!("Bearer {SECRET}").as_str()));
    assert!(
        answers.iter().any(|a| a.contains("keyed answer")),
        "the calls were answered: {answers:?}"
    );
    assert!(answers.iter().any(|a| a.contains("provider_unreachable")), "{answers:?}");

    let _ = serve.kill();
    let _ = worker.kill();
    let _ = serve.wait();
    let _ = worker.wait();
    let events: Vec<(Value, Value)> =
        sqlx::query_as("SELECT payload, metadata FROM events").fetch_all(&env.pool).await.unwrap();
    assert!(events.len() > 5);
    for (payload, metadata) in &events {
        assert!(
            !payload.to_string().contains(SECRET) && !metadata.to_string().contains(SECRET),
            "{payload}"
        );
    }
    for answer in &answers {
        assert!(!answer.contains(SECRET), "an answer holds the key: {answer}");
    }
    for log in ["serve.log", "worker.log"] {
        let text = std::fs::read_to_string(logs.join(log)).unwrap();
        assert!(text.lines().count() > 5, "{log} was written at debug level");
        assert!(!text.contains(SECRET), "{log} holds the key");
    }
    let _ = std::fs::remove_dir_all(&logs);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brain-secrets-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
