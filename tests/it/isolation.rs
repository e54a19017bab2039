//! One request's failure is its own (design invariant 9): what no store can carry is refused
//! at the edge naming the field, a command the database refuses is isolated from the batch it
//! shared, concurrent repeats of one idempotency key all get the first mission, a commit whose
//! answer never came says so, and a fresh `brain serve` runs a mission with its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use brain::eventlog::store::{AppendError, CommitterConfig};
use brain::serve::ServeOptions;
use domain::{EventMetadata, ExpectedVersion, NewEvent};
use serde_json::{Value, json};

use crate::missions_api::post;
use crate::serve::{Process, crypto_provider, get, serve_in_process, serve_with_options, services};
use crate::support::{
    StallingProxy, TestEnv, append, new_stream_id, redis_url, stream_type, wait_until,
};
use crate::workers::{enqueue, mission};

const WAIT: Duration = Duration::from_secs(60);

async fn post_with_headers(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    headers: &[(&str, &[u8])],
) -> (u16, Value) {
    crypto_provider();
    let mut request = crate::support::client().post(format!("http://{addr}{path}")).json(body);
    for (name, value) in headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn count_events(env: &TestEnv, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn nul_characters_anywhere_in_a_body_are_refused_naming_the_field_and_valid_enqueues_beside_them_all_succeed()
 {
    // Given a serve and, per burst, 48 valid enqueues sent together with 4 that hold a NUL.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let poisoned = [
        (json!({ "name": "a\0b" }), "name"),
        (json!({ "name": "n", "description": "d\0" }), "description"),
        (
            json!({ "name": "n", "payload": { "deep": [1, { "note": "x\0" }] } }),
            "payload.deep[1].note",
        ),
        (json!({ "name": "n", "payload": { "k\0ey": 1 } }), "payload.k\\u0000ey"),
    ];

    // When eight such bursts arrive.
    let mut valid_failed = 0;
    for burst in 0..8 {
        let mut requests = Vec::new();
        for n in 0..48 {
            let body = json!({ "name": format!("valid {burst}-{n}"), "agent": "echo" });
            requests.push(tokio::spawn(async move {
                (None, post(addr, "/api/missions/enqueue", &body.to_string()).await)
            }));
        }
        for (body, field) in poisoned.clone() {
            requests.push(tokio::spawn(async move {
                (Some(field), post(addr, "/api/missions/enqueue", &body.to_string()).await)
            }));
        }
        for request in requests {
            match request.await.unwrap() {
                (None, (201, _)) => {}
                (None, (status, body)) => {
                    valid_failed += 1;
                    eprintln!("a valid enqueue failed: {status} {body}");
                }
                // Then each poisoned one gets a 400 naming the string that holds the NUL.
                (Some(field), (status, body)) => {
                    assert_eq!(status, 400, "{field}: {body}");
                    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
                    assert_eq!(body["error"]["field"], field, "{body}");
                    assert!(body["error"]["message"].as_str().unwrap().contains("NUL"), "{body}");
                }
            }
        }
    }
    // And not one valid enqueue failed; only they were recorded.
    println!("valid enqueues failed beside poisoned ones: {valid_failed} of 384");
    assert_eq!(valid_failed, 0);
    assert_eq!(count_events(&env, "MissionEnqueued").await, 384);

    // A batch item and a query value are held to the same rule.
    let batch = json!({ "missions": [{ "name": "a" }, { "name": "b", "payload": { "x": "\0" } }] });
    let (status, body) = post(addr, "/api/missions/enqueue/batch", &batch.to_string()).await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("missions[1].payload.x")), "{body}");
    let (status, body) = get(addr, "/api/missions?agent=ec%00ho").await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_field")), "{body}");
    assert_eq!(count_events(&env, "MissionEnqueued").await, 384);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn actor_and_correlation_headers_that_are_not_what_they_must_be_get_a_400_naming_the_header()
{
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let body = json!({ "name": "m", "agent": "echo" });
    let long = "a".repeat(201);
    let cases: [(&str, &[u8]); 5] = [
        ("x-actor", long.as_bytes()),
        ("x-actor", b""),
        ("x-actor", "caf\u{e9}".as_bytes()),
        ("x-correlation-id", b"not-a-uuid"),
        ("x-correlation-id", b""),
    ];
    for (header, value) in cases {
        let (status, answer) =
            post_with_headers(addr, "/api/missions/enqueue", &body, &[(header, value)]).await;
        assert_eq!(status, 400, "{header}={value:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_header", "{answer}");
        assert_eq!(answer["error"]["field"], header, "{answer}");
    }
    assert_eq!(env.head().await, crate::support::KEY_EVENTS, "nothing was recorded");

    // Valid ones are recorded as given.
    let id = "0191f0c4-8b1e-7c3a-9d2e-5f6a7b8c9d0e";
    let headers: [(&str, &[u8]); 2] =
        [("x-actor", b"user:bob"), ("x-correlation-id", id.as_bytes())];
    let (status, answer) = post_with_headers(addr, "/api/missions/enqueue", &body, &headers).await;
    assert_eq!(status, 201, "{answer}");
    let (_, events) =
        get(addr, &format!("/api/missions/{}/events", answer["mission_id"].as_str().unwrap()))
            .await;
    assert_eq!(events[0]["metadata"]["actor"], crate::support::ADMIN_ACTOR);
    assert_eq!(events[0]["metadata"]["on_behalf_of"], "user:bob");
    assert_eq!(events[0]["metadata"]["correlation_id"], id);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_command_the_database_refuses_is_isolated_and_every_valid_append_batched_with_it_commits()
{
    // Given a store and an event id already stored: appending it again slips past every
    // check before the database (which refuses it with a unique violation).
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let taken = order(ExpectedVersion::Exact(0), 1);
    let taken_id = taken.events[0].event_id;
    store.append(taken).await.unwrap();

    // When 16 valid writers append beside a writer of poisoned appends.
    let mut writers = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..50 {
                let valid = order(ExpectedVersion::Exact(0), 2);
                if let Err(error) = store.append(valid).await {
                    eprintln!("a valid append failed: {error}");
                    failed += 1;
                }
            }
            failed
        }));
    }
    let poisoner = tokio::spawn({
        let store = store.clone();
        async move {
            let mut refused = 0;
            for _ in 0..50 {
                let mut poisoned = order(ExpectedVersion::Exact(0), 1);
                poisoned.events[0].event_id = taken_id;
                match store.append(poisoned).await {
                    Err(AppendError::Refused { message }) => {
                        assert!(message.contains("23505"), "{message}");
                        refused += 1;
                    }
                    other => panic!("a poisoned append got {other:?}"),
                }
            }
            refused
        }
    });

    // Then no valid append failed and every poisoned one was refused on its own.
    let mut failed = 0;
    for writer in writers {
        failed += writer.await.unwrap();
    }
    println!("valid appends failed beside poisoned ones: {failed} of 800");
    assert_eq!(failed, 0);
    assert_eq!(poisoner.await.unwrap(), 50);
    assert_eq!(env.head().await, 1 + 16 * 50 * 2);
    assert!(store.committer_stats().health(brain::clock::now_ms()).is_ok());
}

#[tokio::test]
async fn the_store_refuses_a_nul_it_cannot_carry_before_it_reaches_a_transaction() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mut bad = order(ExpectedVersion::Any, 1);
    bad.events[0] = NewEvent::new("Noted", json!({ "list": ["fine", "not\0fine"] }));
    match store.append(bad).await {
        Err(AppendError::Unstorable { index: Some(0), path }) => {
            assert_eq!(path, "payload.list[1]")
        }
        other => panic!("expected Unstorable, got {other:?}"),
    }
    let mut bad_actor = order(ExpectedVersion::Any, 1);
    bad_actor.metadata = EventMetadata::new("user:\0", time::OffsetDateTime::now_utc());
    assert!(matches!(store.append(bad_actor).await, Err(AppendError::Unstorable { .. })));
    assert_eq!(env.head().await, 0);
}

#[tokio::test]
async fn concurrent_enqueues_with_one_idempotency_key_all_answer_2xx_with_the_same_mission() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    // Twenty at once, several rounds, each round its own key.
    for round in 0..5 {
        let body =
            json!({ "name": "once", "agent": "echo", "idempotency_key": format!("k{round}") });
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let body = body.to_string();
                tokio::spawn(async move { post(addr, "/api/missions/enqueue", &body).await })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        let mut created = 0;
        for request in requests {
            let (status, mission) = request.await.unwrap();
            assert!(status == 200 || status == 201, "{status}: {mission}");
            created += usize::from(status == 201);
            ids.insert(mission["mission_id"].as_str().unwrap().to_owned());
        }
        assert_eq!((ids.len(), created), (1, 1), "one mission, created once");
    }
    assert_eq!(count_events(&env, "MissionEnqueued").await, 5);

    // Batch items too: ten batches at once, each naming the same five keys.
    let items: Vec<Value> = (0..5)
        .map(|n| json!({ "name": "b", "agent": "echo", "idempotency_key": format!("b{n}") }))
        .collect();
    let batch = json!({ "missions": items }).to_string();
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let batch = batch.clone();
            tokio::spawn(async move { post(addr, "/api/missions/enqueue/batch", &batch).await })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for request in requests {
        let (status, answer) = request.await.unwrap();
        assert!(status == 200 || status == 201, "{status}: {answer}");
        let ids: Vec<String> = answer["missions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mission_id"].as_str().unwrap().to_owned())
            .collect();
        seen.insert(ids);
    }
    assert_eq!(seen.len(), 1, "every batch answered with the same five missions");
    assert_eq!(count_events(&env, "MissionEnqueued").await, 10);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_fresh_serve_runs_a_mission_enqueued_without_an_agent_and_refuses_unknown_kinds() {
    // Given `brain serve` with nothing configured but where the services are.
    let env = TestEnv::new().await;
    let serve = Process::start(&env).await;

    // When a mission names no agent, it runs on the default kind and completes.
    let id = enqueue(serve.addr, json!({ "name": "hello" })).await;
    wait_until("the first mission to complete", WAIT, || async {
        mission(serve.addr, &id).await["status"] == "completed"
    })
    .await;

    // A kind this deployment does not know is refused: client input cannot make queues.
    let body = json!({ "name": "m", "agent": "made-up-kind" }).to_string();
    let (status, answer) = post(serve.addr, "/api/missions/enqueue", &body).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        (&answer["error"]["code"], &answer["error"]["field"]),
        (&json!("unknown_agent"), &json!("agent"))
    );
    assert_eq!(count_events(&env, "MissionEnqueued").await, 1);
}

#[tokio::test]
async fn an_agents_result_the_store_cannot_take_fails_the_attempt_with_the_reason_instead_of_running_again()
 {
    let env = TestEnv::new().await;
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 2);
    let (addr, shutdown, task) = serve_with_options(options).await;

    let too_large = enqueue(
        addr,
        json!({ "name": "big", "agent": "echo", "payload": { "answer_bytes": 300_000 } }),
    )
    .await;
    let nul =
        enqueue(addr, json!({ "name": "nul", "agent": "echo", "payload": { "answer_nul": true } }))
            .await;
    let nul_error =
        enqueue(addr, json!({ "name": "err", "agent": "echo", "payload": { "error_nul": true } }))
            .await;
    for (id, status) in [(&too_large, "failed"), (&nul, "failed"), (&nul_error, "completed")] {
        wait_until(&format!("{id} to be {status}"), WAIT, || async {
            mission(addr, id).await["status"] == status
        })
        .await;
    }
    for id in [&too_large, &nul] {
        let mission = mission(addr, id).await;
        assert_eq!(mission["attempt"], 1, "not run again: {mission}");
        let error = mission["errors"][0]["error"].as_str().unwrap();
        assert!(error.contains("result cannot be stored"), "{error}");
    }
    // An error message with a NUL is recorded (with a replacement character), not refused.
    let mission = mission(addr, &nul_error).await;
    assert_eq!(mission["errors"][0]["error"], "echo: failed with a \u{fffd} in its message");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_commit_whose_answer_never_comes_is_abandoned_as_outcome_unknown_and_writes_resume() {
    // Given a serve whose PostgreSQL traffic passes a proxy that can drop the committer's
    // next COMMIT on the floor (a half-open connection: no answer, nothing closed).
    let env = TestEnv::new().await;
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = StallingProxy::start(upstream, b"lock_timeout=5s").await;
    let mut services = services(&env, &redis_url());
    services.database_url = env.database_url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let mut options = ServeOptions::new(services, "127.0.0.1:0".parse().unwrap());
    options.committer =
        CommitterConfig { transaction_timeout: Duration::from_secs(2), ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options).await;
    let (status, ready) = get(addr, "/ready").await;
    assert_eq!(status, 200, "{ready}");

    // When the commit of an enqueue never answers.
    proxy.stall_next_commit();
    let body = json!({ "name": "m", "agent": "echo", "idempotency_key": "stalled" }).to_string();
    let (status, answer) = post(addr, "/api/missions/enqueue", &body).await;

    // Then the client hears that the outcome is unknown and that a retry is safe, and the
    // server says it is not ready while the committer cannot commit.
    assert_eq!(proxy.stalled(), 1);
    assert_eq!((status, &answer["error"]["code"]), (503, &json!("outcome_unknown")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("idempotency_key"), "{answer}");
    let (status, ready) = get(addr, "/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_ne!(ready["checks"]["committer"], "ok", "{ready}");

    // And once PostgreSQL has ended the stalled session, the retry goes in, exactly once.
    wait_until("the retry to be accepted", WAIT, || async {
        let (status, _) = post(addr, "/api/missions/enqueue", &body).await;
        status == 201 || status == 200
    })
    .await;
    let (status, ready) = get(addr, "/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(count_events(&env, "MissionEnqueued").await, 1);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// An append of `count` events to a new `order` stream.
fn order(expected: ExpectedVersion, count: usize) -> brain::eventlog::store::Append {
    append(&stream_type("order"), &new_stream_id(), expected, "Placed", count)
}
