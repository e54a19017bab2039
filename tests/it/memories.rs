//! Agent memory through the API against the real services, with the embedded index and the
//! offline (lexical) embeddings: record and search a scope by text with a metadata filter;
//! supersede (the old one kept in its history, gone from search); forget (gone at once, its
//! event kept); expiry by `ttl_s`; the index directory deleted and rebuilt from the log with
//! the same top-k; and the security cases (no key, a key without the permission, a foreign
//! `Origin`, hostile input).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use brain::serve::ServeOptions;
use serde_json::{Value, json};

use crate::serve::{serve_with_options, services};
use crate::support::{TestEnv, client, client_with, make_key, redis_url, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A serve with its memory index in a directory of the test's own.
async fn serve(
    env: &TestEnv,
) -> (
    SocketAddr,
    PathBuf,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let dir = std::env::temp_dir().join(format!("brain-memory-it-{}", uuid::Uuid::now_v7()));
    options.memory_dir = dir.clone();
    let (addr, shutdown, task) = serve_with_options(options).await;
    (addr, dir.join(env.namespace.as_str()), shutdown, task)
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn record(addr: SocketAddr, body: Value) -> (u16, Value) {
    send(client().post(format!("http://{addr}/api/memories")).json(&body)).await
}

/// `query` as a URL's query string, every byte but the unreserved ones escaped.
fn query_string(query: &[(&str, &str)]) -> String {
    let escape = |text: &str| {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect::<String>()
    };
    query.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect::<Vec<_>>().join("&")
}

async fn search(addr: SocketAddr, query: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("http://{addr}/api/memories/search?{}", query_string(query));
    send(client().get(url)).await
}

fn texts(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {results}"))
        .iter()
        .map(|hit| hit["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn seed(addr: SocketAddr) -> Vec<String> {
    let memories = [
        (
            "kind/coder",
            "The staging database restores from the nightly dump at two",
            json!({"topic": "ops", "priority": 3}),
        ),
        (
            "kind/coder",
            "Run cargo fmt before every commit of the rust code",
            json!({"topic": "style", "priority": 1}),
        ),
        (
            "kind/coder/project/x",
            "Project x deploys the staging database on fridays",
            json!({"topic": "ops", "priority": 5}),
        ),
        (
            "kind/ops",
            "The staging database password rotates monthly",
            json!({"topic": "ops", "priority": 2}),
        ),
    ];
    let mut ids = Vec::new();
    for (scope, text, metadata) in memories {
        let (status, body) =
            record(addr, json!({ "scope": scope, "text": text, "metadata": metadata })).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn memories_are_found_by_scope_and_text_with_filters_superseded_and_forgotten() {
    let env = TestEnv::new().await;
    let (addr, _dir, shutdown, task) = serve(&env).await;
    let ids = seed(addr).await;

    // The scope and those below it, best match first; another scope's memory is not found.
    let (status, found) =
        search(addr, &[("scope", "kind/coder"), ("q", "when does the staging database restore")])
            .await;
    assert_eq!(status, 200, "{found}");
    let got = texts(&found);
    assert_eq!(got.len(), 3, "{found}");
    assert!(got[0].contains("restores from the nightly dump"), "{found}");
    assert!(!got.iter().any(|t| t.contains("password")), "another scope leaked: {found}");
    assert_eq!(found["lexical"], true);
    let hit = &found["results"][0];
    assert_eq!(hit["recorded_by"], crate::support::ADMIN_ACTOR);
    assert_eq!(hit["metadata"]["topic"], "ops");
    assert!(hit["score"].as_f64().unwrap() > found["results"][2]["score"].as_f64().unwrap());

    // Filters: equals, any-of, range.
    for (filter, expected) in [
        (json!({"topic": "style"}), 1),
        (json!({"topic": {"any": ["ops", "none"]}}), 2),
        (json!({"priority": {"gte": 3, "lt": 10}}), 2),
        (json!({"topic": "ops", "priority": {"gt": 4}}), 1),
    ] {
        let filter_text = filter.to_string();
        let (status, found) = search(
            addr,
            &[("scope", "kind/coder"), ("q", "staging database"), ("filter", &filter_text)],
        )
        .await;
        assert_eq!((status, texts(&found).len()), (200, expected), "{filter}: {found}");
    }

    // Supersede: the new text is found, the old one is not, and its history says why.
    let (status, replaced) = send(
        client()
            .post(format!("http://{addr}/api/memories/{}/supersede", ids[0]))
            .json(&json!({ "text": "The staging database restores from the nightly dump at three", "reason": "moved an hour" })),
    )
    .await;
    assert_eq!(status, 201, "{replaced}");
    let (_, found) =
        search(addr, &[("scope", "kind/coder"), ("q", "staging database restores nightly dump")])
            .await;
    let got = texts(&found);
    assert!(got.iter().any(|t| t.ends_with("at three")), "{found}");
    assert!(!got.iter().any(|t| t.ends_with("at two")), "superseded still found: {found}");
    let (status, old) = send(client().get(format!("http://{addr}/api/memories/{}", ids[0]))).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(
        (&old["status"], &old["superseded_by"], &old["ended_reason"]),
        (&json!("superseded"), &replaced["id"], &json!("moved an hour"))
    );
    let (_, new) = send(
        client().get(format!("http://{addr}/api/memories/{}", replaced["id"].as_str().unwrap())),
    )
    .await;
    assert_eq!((&new["supersedes"], &new["metadata"]["topic"]), (&json!(ids[0]), &json!("ops")));
    // Superseding it again is refused, naming why.
    let (status, again) = send(
        client()
            .post(format!("http://{addr}/api/memories/{}/supersede", ids[0]))
            .json(&json!({ "text": "x", "reason": "again" })),
    )
    .await;
    assert_eq!((status, &again["error"]["code"]), (409, &json!("memory_ended")), "{again}");

    // Forget: gone from search at once (no waiting), its events kept.
    let (status, forgotten) = send(
        client()
            .delete(format!("http://{addr}/api/memories/{}", ids[1]))
            .json(&json!({ "reason": "outdated" })),
    )
    .await;
    assert_eq!(status, 200, "{forgotten}");
    let (_, found) = search(addr, &[("scope", "kind/coder"), ("q", "cargo fmt commit rust")]).await;
    assert!(!texts(&found).iter().any(|t| t.contains("cargo fmt")), "{found}");
    let (_, kept) = send(client().get(format!("http://{addr}/api/memories/{}", ids[1]))).await;
    assert_eq!((&kept["status"], &kept["ended_reason"]), (&json!("forgotten"), &json!("outdated")));
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT stream_id, event_type FROM events WHERE stream_type = 'memory' ORDER BY global_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(events.contains(&(ids[1].clone(), "MemoryRecorded".into())));
    assert!(events.contains(&(ids[1].clone(), "MemoryForgotten".into())));
    assert!(events.contains(&(ids[0].clone(), "MemorySuperseded".into())));
    // Each embedding was a recorded call of the gateway.
    let calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_type = 'llm_call'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(calls >= 5, "{calls} embedding calls recorded");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_memory_expires_after_its_ttl_and_a_deleted_index_is_rebuilt_with_the_same_top_k() {
    let env = TestEnv::new().await;
    let (addr, dir, shutdown, task) = serve(&env).await;
    seed(addr).await;
    let (status, body) = record(
        addr,
        json!({ "scope": "kind/coder", "text": "A short lived staging database note", "ttl_s": 2 }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let query = [("scope", "kind"), ("q", "staging database note"), ("k", "10")];
    let (_, before) = search(addr, &query).await;
    assert!(texts(&before).iter().any(|t| t.contains("short lived")), "{before}");
    wait_until("the memory to expire", WAIT, || async {
        let (_, found) = search(addr, &query).await;
        !texts(&found).iter().any(|t| t.contains("short lived"))
    })
    .await;
    let (_, live) = search(addr, &query).await;
    let ids = |found: &Value| -> Vec<(String, String)> {
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| {
                (
                    hit["id"].as_str().unwrap().to_owned(),
                    format!("{:.5}", hit["score"].as_f64().unwrap()),
                )
            })
            .collect()
    };

    // The index directory is deleted: noticed and rebuilt from the log within seconds, with
    // the same answer to the same query.
    std::fs::remove_dir_all(&dir).unwrap();
    wait_until("the index to be rebuilt", WAIT, || async {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|generation| generation.path().join("checkpoint").exists())
    })
    .await;
    // A change waits for the rebuild to end (one writer at a time), so once it is answered
    // the rebuilt index is the one that answers.
    let (status, body) = record(addr, json!({ "scope": "other/x", "text": "zebra quartz" })).await;
    assert_eq!(status, 201, "{body}");
    let (status, rebuilt) = search(addr, &query).await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(ids(&rebuilt), ids(&live), "the rebuilt index answers as the live one did");
    assert_eq!(texts(&live).len(), 4, "{live}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn memories_refuse_callers_without_the_permission_a_foreign_origin_and_hostile_input() {
    let env = TestEnv::new().await;
    let (addr, _dir, shutdown, task) = serve(&env).await;
    let id = seed(addr).await.remove(0);
    let url = |path: &str| format!("http://{addr}{path}");
    crate::serve::crypto_provider();

    // No key.
    let anonymous = reqwest::Client::new();
    let (status, _) = send(anonymous.get(url("/api/memories/search?scope=kind&q=x"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        anonymous
            .post(url("/api/memories"))
            .header("content-type", "application/json")
            .body(r#"{"scope":"a","text":"b"}"#),
    )
    .await;
    assert_eq!(status, 401);

    // A key that may read memories but not change them, and one that may do neither.
    let reader =
        make_key(addr, json!({ "name": "reader", "permissions": ["memories.read"] })).await;
    let other = make_key(addr, json!({ "name": "other", "permissions": ["missions.read"] })).await;
    let (status, _) =
        send(client_with(&reader).get(url("/api/memories/search?scope=kind&q=staging"))).await;
    assert_eq!(status, 200);
    let (status, body) = send(
        client_with(&reader).post(url("/api/memories")).json(&json!({"scope": "a", "text": "b"})),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    let (status, _) = send(
        client_with(&reader)
            .delete(url(&format!("/api/memories/{id}")))
            .json(&json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(client_with(&other).get(url(&format!("/api/memories/{id}")))).await;
    assert_eq!(status, 403);

    // A foreign Origin.
    let (status, body) = send(
        client()
            .post(url("/api/memories"))
            .header("origin", "http://evil.example")
            .json(&json!({"scope": "a", "text": "b"})),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("origin_refused")), "{body}");

    // Hostile input: each refused naming the field, nothing recorded.
    let head_before = env.head().await;
    let huge = "x".repeat(10 * 1024 * 1024);
    let too_deep = ["a"; 9].join("/");
    for (body, field) in [
        (json!({ "scope": "kind/../etc", "text": "x" }), "scope"),
        (json!({ "scope": "/abs", "text": "x" }), "scope"),
        (json!({ "scope": too_deep, "text": "x" }), "scope"),
        (json!({ "scope": "a", "text": "x".repeat(8_001) }), "text"),
        (json!({ "scope": "a", "text": "x", "metadata": { "deep": { "a": 1 } } }), "metadata"),
        (json!({ "scope": "a", "text": "x", "ttl_s": 0 }), "ttl_s"),
    ] {
        let (status, answer) = record(addr, body.clone()).await;
        assert_eq!((status, &answer["error"]["field"]), (422, &json!(field)), "{body}: {answer}");
    }
    let (status, _) = record(addr, json!({ "scope": "a", "text": huge })).await;
    assert_eq!(status, 413, "a 10 MB text is over the body limit");
    let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    let nested =
        format!("{}{}{}", r#"{"a":"#, "{\"any\":".repeat(1000) + "1" + &"}".repeat(1000), "}");
    for (query, field) in [
        (vec![("scope", "kind"), ("q", "x"), ("k", "1000000000")], "k"),
        (vec![("scope", "kind"), ("q", "x"), ("k", "0")], "k"),
        (vec![("scope", "../kind"), ("q", "x")], "scope"),
        (vec![("scope", "kind"), ("q", "")], "q"),
        (vec![("scope", "kind"), ("q", "x"), ("filter", deep.as_str())], "filter"),
        (vec![("scope", "kind"), ("q", "x"), ("filter", nested.as_str())], "filter"),
        (vec![("scope", "kind"), ("q", "x"), ("filter", r#"{"a": {"gt": "x"}}"#)], "filter"),
        (vec![("scope", "kind"), ("q", "x"), ("filter", r#"{"a": 1.5}"#)], "filter"),
    ] {
        let (status, answer) = search(addr, &query).await;
        assert!(status == 422 || status == 400, "{query:?}: {status} {answer}");
        assert_eq!(answer["error"]["field"], field, "{query:?}: {answer}");
    }
    let (status, answer) = send(client().get(url("/api/memories/not-a-uuid"))).await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("id")), "{answer}");
    let (status, answer) =
        send(client().get(url(&format!("/api/memories/{}", uuid::Uuid::now_v7())))).await;
    assert_eq!((status, &answer["error"]["code"]), (404, &json!("memory_not_found")), "{answer}");
    let (status, answer) =
        send(client().delete(url(&format!("/api/memories/{id}"))).json(&json!({"reason": " "})))
            .await;
    assert_eq!((status, &answer["error"]["field"]), (422, &json!("reason")), "{answer}");
    assert_eq!(env.head().await, head_before, "refused input recorded nothing");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn brain_answers_openai_embeddings_offline_and_through_openai_and_ollama_protocols() {
    let env = TestEnv::new().await;
    let (addr, _dir, shutdown, task) = serve(&env).await;
    let embed =
        |body: Value| send(client().post(format!("http://{addr}/v1/embeddings")).json(&body));

    // Offline out of the box: 384 lexical dimensions, unit length.
    let (status, body) =
        embed(json!({ "model": "default", "input": ["staging database", "cargo fmt"] })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["object"], &body["lexical"], &body["model"]),
        (&json!("list"), &json!(true), &json!("offline-lexical-384"))
    );
    let vector: Vec<f64> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 384);
    assert!((vector.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-3);

    // Through an OpenAI-compatible provider, then an Ollama one, configured as the embed route.
    let fake =
        crate::fake_llm::FakeLlm::start(vec![], crate::fake_llm::Scripted::text("-"), None).await;
    for (provider, path) in [("openai", "/v1/embeddings"), ("ollama", "/api/embed")] {
        let config = json!({ "provider": "offline", "model": "offline",
            "routes": { "embed": [{ "provider": provider, "host": fake.url(), "model": "e-1" }] } });
        assert_eq!(crate::llm_config::put(addr, &config).await.0, 200);
        let (status, body) = embed(json!({ "model": "default", "input": "hello" })).await;
        assert_eq!(status, 200, "{provider}: {body}");
        assert_eq!(
            (&body["lexical"], &body["provider"]),
            (&json!(false), &json!(provider)),
            "{body}"
        );
        assert_eq!(body["data"][0]["embedding"][0], 5.0, "{provider}: {body}");
        assert!(fake.seen().iter().any(|seen| seen.path == path), "{provider} spoke {path}");
    }
    // A memory recorded now carries that provider's vector and model.
    let (status, body) = record(addr, json!({ "scope": "a", "text": "hello" })).await;
    assert_eq!(status, 201, "{body}");
    let (_, memory) =
        send(client().get(format!("http://{addr}/api/memories/{}", body["id"].as_str().unwrap())))
            .await;
    assert_eq!(
        (&memory["provider"], &memory["model"]),
        (&json!("ollama"), &json!("e-1")),
        "{memory}"
    );

    // Bad input names the field; no key is refused.
    let (status, body) = embed(json!({ "input": [] })).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("input")), "{body}");
    let (status, body) = embed(json!({ "input": [[1, 2]] })).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("input")), "{body}");
    let (status, _) = send(
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/embeddings"))
            .header("content-type", "application/json")
            .body(r#"{"input":"x"}"#),
    )
    .await;
    assert_eq!(status, 401);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
