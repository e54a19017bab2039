//! A provider key given to `brain serve` and `brain worker` in their environment reaches the
//! provider, and nothing else: not an event, not an answer of the API, not a log line (debug
//! level included), whether the key is right or wrong. A configuration change cannot point a
//! keyed target at another host without the key itself, nor at a URL that is more than a base,
//! nor over plain http to another machine. A provider's error body reaches its caller only as
//! a short, clean summary. What a tool read or a model said is recorded without the process's
//! secrets.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::llm_config::put;
use crate::support::{ADMIN_TOKEN, TestEnv, nats_url, redis_url, wait_until};
use crate::workers::{enqueue, finished, mission_status};

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
    // A wrong model and an unreachable host fail; their errors must not carry the key either,
    // nor does the change that came with the key to point the target there.
    let wrong = json!({ "provider": "openai", "host": "http://127.0.0.1:9", "model": "m",
        "keys": { "openai": SECRET } });
    let moved =
        client.put(format!("http://{addr}/api/llm/config")).json(&wrong).send().await.unwrap();
    assert_eq!(moved.status(), 200);
    answers.push(moved.text().await.unwrap());
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

/// A serve in this process holding `SECRET` as its OpenAI key, bound to `key_hosts`, with
/// coder workers whose tools read `root` when one is given.
async fn serve_keyed(
    env: &TestEnv,
    key_hosts: &[String],
    root: Option<&std::path::Path>,
) -> (
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut options = brain::serve::ServeOptions::new(
        crate::serve::services(env, &redis_url()),
        "127.0.0.1:0".parse().unwrap(),
    );
    options.agents.llm.openai_api_key = Some(brain::config::llm::Secret::new(SECRET));
    options.agents.llm.key_hosts = key_hosts.to_vec();
    if let Some(root) = root {
        options.agents.builtin.tools.root = Some(root.to_path_buf());
        options.run_workers(brain::config::agents::AgentSpec::parse("coder").unwrap(), 1);
    }
    crate::serve::serve_with_options(options).await
}

/// Every event's payload and metadata, as text.
async fn recorded(env: &TestEnv) -> Vec<String> {
    let events: Vec<(Value, Value)> =
        sqlx::query_as("SELECT payload, metadata FROM events").fetch_all(&env.pool).await.unwrap();
    events.iter().map(|(payload, metadata)| format!("{payload}{metadata}")).collect()
}

async fn config_events(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_type = 'llm_config'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

async fn chat(addr: std::net::SocketAddr, stream: bool) -> (u16, String) {
    let body = json!({ "model": "default", "stream": stream,
        "messages": [{ "role": "user", "content": "hi" }] });
    let answer = crate::support::client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn a_keyed_target_points_elsewhere_only_with_its_key_and_never_in_clear_text() {
    // Given a serve whose OpenAI key is bound to one server, configured to call it.
    let env = TestEnv::new().await;
    let trusted = FakeLlm::start(vec![], Scripted::text("trusted"), Some(SECRET)).await;
    let attacker = FakeLlm::start(vec![], Scripted::text("stolen"), None).await;
    let (addr, shutdown, task) = serve_keyed(&env, &[trusted.url()], None).await;
    let ours = json!({ "provider": "openai", "host": trusted.url(), "model": "m" });
    assert_eq!(put(addr, &ours).await.0, 200);
    let before = config_events(&env).await;

    // When changes try to send the key elsewhere without it, or aim past a base URL, or in
    // clear text: each is refused, naming the field and why.
    let (host, port) = (trusted.addr.ip(), trusted.addr.port());
    let with = |patch: Value| {
        let mut body = ours.clone();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        body
    };
    let elsewhere = attacker.url();
    for (body, field, why) in [
        (with(json!({ "host": elsewhere })), "host", "keys.openai"),
        (
            with(
                json!({ "routes": { "r": [{ "provider": "openai", "host": elsewhere, "model": "m" }] } }),
            ),
            "routes.r[0].host",
            "keys.openai",
        ),
        (
            with(json!({ "key_hosts": { "openai": [elsewhere] } })),
            "key_hosts.openai[0]",
            "keys.openai",
        ),
        (
            with(json!({ "host": elsewhere, "keys": { "openai": "sk-a-guess-0000" } })),
            "keys.openai",
            "not the openai key",
        ),
        (with(json!({ "host": format!("http://{host}:{port}/v1/x?x=") })), "host", "base URL"),
        (with(json!({ "host": format!("http://{host}:{port}/#x") })), "host", "base URL"),
        (with(json!({ "host": format!("http://u:p@{host}:{port}") })), "host", "base URL"),
        (with(json!({ "host": format!("http://{host}:{port}/a/../v1") })), "host", "base URL"),
        (
            with(json!({ "host": "http://gw.example", "keys": { "openai": SECRET } })),
            "host",
            "clear text",
        ),
    ] {
        let (status, answer) = put(addr, &body).await;
        assert_eq!((status, &answer["error"]["field"]), (422, &json!(field)), "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
        assert!(!answer.to_string().contains(SECRET), "{answer}");
    }

    // Then nothing changed, a call still goes where the key belongs, and the attacker's
    // listener heard nothing at all.
    assert_eq!(config_events(&env).await, before, "nothing was appended");
    let (_, config) = crate::serve::get(addr, "/api/llm/config").await;
    assert_eq!(config["settings"]["host"], json!(trusted.url()));
    let (status, answer) = chat(addr, false).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("trusted"), "{answer}");
    assert!(attacker.seen().is_empty(), "the attacker's listener was never called");

    // And with the key in hand, a keyed target moves, here to a fixed path prefix of another
    // server, which is bound to it (and the key goes along).
    let moved = FakeLlm::start(vec![], Scripted::text("moved"), Some(SECRET)).await;
    let change =
        with(json!({ "host": format!("{}/gw/v1", moved.url()), "keys": { "openai": SECRET } }));
    let (status, config) = put(addr, &change).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(
        config["settings"]["key_hosts"],
        json!({ "openai": [format!("{}/gw", moved.url())] })
    );
    let (status, answer) = chat(addr, false).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("moved"), "{answer}");
    let seen = moved.seen();
    assert_eq!(seen[0].path, "/gw/v1/chat/completions");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {SECRET}").as_str());
    for text in recorded(&env).await {
        assert!(!text.contains(SECRET), "the supplied key is in no event: {text}");
    }
    assert!(attacker.seen().is_empty());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_provider_error_reaches_its_caller_short_and_clean_and_its_record_bounded_and_redacted() {
    // Given a provider that answers 401s carrying the key and internal addresses: first with a
    // megabyte of body, then with a few kilobytes of JSON whose error message holds them.
    let env = TestEnv::new().await;
    let huge = json!({
        "debug": format!("postgres://brain:Hunter2-pw@db.internal/brain {SECRET} {}", "x".repeat(1 << 20)),
        "error": { "message": format!("Incorrect API key {SECRET}") },
    });
    let words = format!(
        "Incorrect API key {SECRET} for org-7\u{1b}[2J at 10.20.0.7:5432; {}",
        "internal stack frame; ".repeat(200)
    );
    let long = json!({ "error": { "message": words, "type": "invalid_request_error" } });
    let script: Vec<Scripted> = [&huge, &huge, &long, &long]
        .into_iter()
        .map(|body| Scripted::Body { code: 401, body: body.to_string() })
        .collect();
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    let (addr, shutdown, task) = serve_keyed(&env, &[fake.url()], None).await;
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "m" });
    assert_eq!(put(addr, &config).await.0, 200);

    // When a client calls, answered whole and streamed, for each body.
    for (body, stream) in [("huge", false), ("huge", true), ("long", false), ("long", true)] {
        let (status, answer) = chat(addr, stream).await;

        // Then it is told the typed reason, and at most a cleaned, redacted summary of 200
        // characters of the provider's own message; from a body too big to read whole, the
        // status alone.
        let answer: Value = if stream {
            let chunks = answer.lines().filter_map(|line| line.strip_prefix("data: "));
            let chunks = chunks.filter_map(|data| serde_json::from_str::<Value>(data).ok());
            let failed = chunks.into_iter().find(|chunk| chunk.get("error").is_some());
            failed.unwrap_or_else(|| panic!("{status}: {answer}"))
        } else {
            assert_eq!(status, 502, "{answer}");
            serde_json::from_str(&answer).unwrap()
        };
        let error = &answer["error"];
        let message = error["message"].as_str().unwrap();
        let reason = if stream { &error["type"] } else { &error["code"] };
        assert_eq!(reason, "auth_failed", "{answer}");
        if body == "huge" {
            assert_eq!(message, "auth_failed: HTTP 401");
            continue;
        }
        let start = "auth_failed: HTTP 401: Incorrect API key [redacted] for org-7 [2J at 10.20";
        assert!(message.starts_with(start), "{message}");
        let length = message.chars().count();
        assert!(length <= "auth_failed: HTTP 401: ".len() + 201, "{length} characters: {message}");
        assert!(!message.contains('\u{1b}') && !message.contains(SECRET), "{message}");
    }

    // And each call's record holds what the provider said, bounded and redacted.
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'call'->'response'->'error'->>'detail' FROM events
          WHERE event_type = 'LlmCalled' ORDER BY global_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(details.len(), 4);
    for detail in &details[..2] {
        assert!(detail.len() <= 16 * 1024 + 64, "{} bytes kept", detail.len());
        assert!(detail.contains("postgres://brain:[redacted]@db.internal"), "{detail:.300}");
        assert!(detail.contains("brain [redacted] xxx"), "{detail:.300}");
    }
    for detail in &details[2..] {
        assert!(detail.contains("Incorrect API key [redacted] for org-7"), "{detail:.300}");
        assert!(detail.contains("internal stack frame; internal stack frame;"), "{detail:.300}");
    }
    for text in recorded(&env).await {
        assert!(!text.contains(SECRET) && !text.contains("Hunter2"), "{text:.300}");
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_secret_a_tool_reads_or_the_model_echoes_is_recorded_redacted() {
    // Given a coder whose root holds a file of secrets, and a model that reads it and then
    // says the key back.
    let env = TestEnv::new().await;
    let root = tempdir();
    let db_password = "Hunter2-db-pw";
    let file = format!(
        "OPENAI_API_KEY={SECRET}\nDATABASE_URL=postgres://brain:{db_password}@db:5432/brain\n\
         BRAIN_ADMIN_KEY={ADMIN_TOKEN}\n"
    );
    std::fs::write(root.join("secrets.env"), file).unwrap();
    let echo = format!("The key is {SECRET}; the admin's is {ADMIN_TOKEN}.");
    let script = vec![
        Scripted::Answer {
            text: String::new(),
            tool_calls: vec![("read_file".into(), json!({ "path": "secrets.env" }))],
            usage: (30, 10),
        },
        Scripted::text(&echo),
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), Some(SECRET)).await;
    let (addr, shutdown, task) = serve_keyed(&env, &[fake.url()], Some(&root)).await;
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "m" });
    assert_eq!(put(addr, &config).await.0, 200);

    // When the mission runs.
    let body =
        json!({ "name": "leak", "agent": "coder", "payload": { "prompt": "read secrets.env" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");

    // Then the tool's result, the model's next request and its answer are recorded redacted.
    let admin_id = &ADMIN_TOKEN[..21];
    let (_, events) = crate::serve::get(addr, &format!("/api/missions/{id}/events")).await;
    let events = events.as_array().unwrap();
    let of = |kind: &str| -> Vec<&Value> {
        events.iter().filter(|e| e["event_type"] == kind).map(|e| &e["payload"]).collect()
    };
    let content = of("MissionToolCalled")[0]["call"]["result"]["content"].as_str().unwrap();
    assert_eq!(
        content,
        format!(
            "OPENAI_API_KEY=[redacted]\nDATABASE_URL=postgres://brain:[redacted]@db:5432/brain\n\
             BRAIN_ADMIN_KEY={admin_id}[redacted]\n"
        )
    );
    let calls = of("MissionLlmCalled");
    assert_eq!(calls.len(), 2);
    assert!(calls[1]["call"]["request"].to_string().contains("OPENAI_API_KEY=[redacted]"));
    let answer = format!("The key is [redacted]; the admin's is {admin_id}[redacted].");
    assert_eq!(calls[1]["call"]["response"]["content"], json!(answer));
    assert_eq!(of("MissionCompleted")[0]["result"]["answer"], json!(answer));
    assert_eq!(done["result"]["answer"], json!(answer));

    // And the model was given the tool's result redacted too; nothing recorded holds a secret.
    let seen = fake.seen();
    let sent = seen[1].body["messages"].to_string();
    assert!(sent.contains("OPENAI_API_KEY=[redacted]") && !sent.contains(SECRET), "{sent}");
    let admin_secret = &ADMIN_TOKEN[21..];
    for text in recorded(&env).await {
        for secret in [SECRET, db_password, admin_secret] {
            assert!(!text.contains(secret), "{secret} in {text:.400}");
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
