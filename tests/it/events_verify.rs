//! `brain events verify` and `POST /api/admin/verify` against the real services: a clean
//! system reports clean; a member removed from a queue set in Redis, a row edited in the
//! mission list, a link made up in the mission tree, an agent's record edited in the agent
//! view, a message deleted from the JetStream stream, a hole in the log and an edited payload are each found and named; a rebuild of the models makes them clean again;
//! the route is an admin's alone, one verify at a time.

use std::process::Output;
use std::time::Duration;

use brain::eventlog::bus;
use brain::eventlog::leader::lock_key;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{TestEnv, append_streams, call, client, make_key, nats_url, wait_until};

const WAIT: Duration = Duration::from_secs(60);
const MISSIONS: u64 = 12;
/// Most missions the busy system's load enqueues.
const BUSY_MISSIONS_MAX: u64 = 2_000;

pub fn brain(env: &TestEnv, args: &[&str]) -> Output {
    let mut command = crate::support::brain_command();
    command
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", redis_url())
        .env("NATS_URL", nats_url())
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn");
    command.output().expect("run brain")
}

async fn brain_async(env: &TestEnv, args: &[&str]) -> Output {
    let (database_url, namespace) = (env.database_url.clone(), env.namespace.to_string());
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut command = crate::support::brain_command();
        command
            .args(&args)
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("NATS_URL", nats_url())
            .env("BRAIN_NAMESPACE", namespace)
            .env("RUST_LOG", "warn");
        command.output().expect("run brain")
    })
    .await
    .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `brain events verify --json ARGS`: its exit code and report.
pub async fn verify(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["events", "verify", "--json"];
    all.extend_from_slice(args);
    let output = brain_async(env, &all).await;
    let code = output.status.code().expect("an exit code");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("a JSON report: {}", said(&output)));
    (code, report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    let checks = report["checks"].as_array().expect("checks");
    checks
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

fn keys(check: &Value) -> Vec<String> {
    let findings = check["findings"].as_array().expect("findings");
    findings.iter().map(|finding| finding["key"].as_str().unwrap().to_owned()).collect()
}

async fn enqueue(addr: std::net::SocketAddr, n: u64) -> String {
    let body = json!({ "name": format!("verify {n}"), "agent": "echo", "payload": { "n": n } });
    let response = client()
        .post(format!("http://{addr}/api/missions/enqueue"))
        .json(&body)
        .send()
        .await
        .expect("enqueue answers");
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    body["mission_id"].as_str().expect("a mission id").to_owned()
}

async fn redis() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_connection_manager().await.unwrap()
}

#[tokio::test]
async fn each_tampering_is_found_and_named_and_a_rebuild_makes_the_models_clean() {
    // Given a serve that took missions (queued: no worker runs them), its models caught up
    // and the stream mirrored.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let mut missions = Vec::new();
    for n in 0..MISSIONS {
        missions.push(enqueue(addr, n).await);
    }
    let head = env.head().await;
    wait_until("the stream to mirror the log", WAIT, || async {
        env.stream_last_sequence().await == head
    })
    .await;
    wait_until("the mission list to hold every mission", WAIT, || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mission_list")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        rows == MISSIONS as i64
    })
    .await;

    // Then verify is clean while the serve runs, every check by name.
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["clean"], true);
    for name in
        ["positions", "stream_versions", "chain", "jetstream", "mission_queue", "mission_list"]
    {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    for name in ["agent_view", "mission_tree"] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert!(check(&report, "mission_queue")["checked"].as_u64().unwrap() > 0, "{report:#}");
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // When a member is removed from a ready set, a list row is edited and a message deleted.
    let mut redis = redis().await;
    let ready_keys = brain::kv::scan(&mut redis, &format!("{{{}}}:q:*:ready:echo", env.namespace))
        .await
        .unwrap();
    assert_eq!(ready_keys.len(), 1, "{ready_keys:?}");
    let ready = &ready_keys[0];
    let removed = &missions[3];
    let gone: i64 = redis.zrem(ready, removed).await.unwrap();
    assert_eq!(gone, 1);
    let edited = &missions[5];
    sqlx::query("UPDATE mission_list SET status = 'completed' WHERE mission_id = $1")
        .bind(edited)
        .execute(&env.pool)
        .await
        .unwrap();
    let stream = env.jetstream.get_stream(bus::stream_name(&env.namespace)).await.unwrap();
    assert!(stream.delete_message(2).await.unwrap());
    sqlx::query("INSERT INTO mission_links (child_id, parent_id, position) VALUES ($1, $2, 1)")
        .bind("made-up-child")
        .bind(&missions[0])
        .execute(&env.pool)
        .await
        .unwrap();

    // Then each is found and named, and the verify exits 1.
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["clean"], false);
    let queue = check(&report, "mission_queue");
    assert_eq!(queue["status"], "findings", "{queue}");
    assert_eq!(keys(queue), [format!("{ready} member {removed}")], "{queue}");
    let list = check(&report, "mission_list");
    assert_eq!(keys(list), [format!("mission_list mission_id={edited}")], "{list}");
    let detail = list["findings"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("status: live completed, log queued"), "{detail}");
    let mirror = check(&report, "jetstream");
    assert!(keys(mirror).contains(&"message 2".to_owned()), "{mirror}");
    let tree = check(&report, "mission_tree");
    assert_eq!(keys(tree), ["mission_links child_id=made-up-child"], "{tree}");
    for name in ["positions", "stream_versions", "chain", "llm_usage", "event_type_stats"] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }

    // And a rebuild of the two models makes them verify clean again.
    let rebuilt = brain(&env, &["projections", "rebuild", "mission_queue", "mission_list"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", said(&rebuilt));
    let (code, report) = verify(&env, &["--only", "mission_queue,mission_list"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 2, "{report:#}");

    // And a sample of the stream finds the deleted message when it draws it: the whole
    // stream sampled is every message.
    let (code, report) = verify(&env, &["--only", "jetstream", "--sample", "1000"]).await;
    assert_eq!(code, 1, "{report:#}");
    assert!(keys(check(&report, "jetstream")).contains(&"message 2".to_owned()), "{report:#}");
}

#[tokio::test]
async fn an_agent_record_edited_in_redis_is_found_by_the_agent_views_check_and_a_rebuild_mends_it()
{
    // Given a serve and a worker registered in the agent view.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let _worker = crate::workers::WorkerProcess::start(&env, "viewed-worker", &[]);
    wait_until("the agent view to hold the worker's agent", WAIT, || async {
        let (_, page) = crate::serve::get(addr, "/api/agents").await;
        page["agents"].as_array().is_some_and(|agents| !agents.is_empty())
    })
    .await;
    let (_, page) = crate::serve::get(addr, "/api/agents").await;
    let agent_id = page["agents"][0]["agent_id"].as_str().unwrap().to_owned();
    let record = format!("{{{}}}:av:a:{agent_id}", env.namespace);
    let mut redis = redis().await;
    enqueue(addr, 0).await;

    // Then its check compares every key of the view, and finds nothing.
    let (code, report) = verify(&env, &["--only", "agent_view"]).await;
    assert_eq!(code, 0, "{report:#}");
    let view = check(&report, "agent_view");
    assert!(view["checked"].as_u64().unwrap() >= 1, "{view}");

    // When a field of the agent's record is changed behind the projector's back,
    let fields: std::collections::BTreeMap<String, String> = redis.hgetall(&record).await.unwrap();
    let (field, _) = fields.iter().next().expect("a field");
    let _: () = redis.hset(&record, field, "tampered").await.unwrap();

    // Then the check names the key, and says what each side holds.
    let (code, report) = verify(&env, &["--only", "agent_view"]).await;
    assert_eq!(code, 1, "{report:#}");
    let view = check(&report, "agent_view");
    assert_eq!(keys(view), [format!("agent view key a:{agent_id}")], "{view}");
    let detail = view["findings"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("tampered"), "{detail}");

    // And a rebuild beside the live view, swapped in while the serve runs, makes it clean,
    // the agent still listed and its heartbeats still followed.
    let pings = format!("{{{}}}:av:pings", env.namespace);
    let ping: Option<f64> = redis.zscore(&pings, &agent_id).await.unwrap();
    let rebuilt = brain(&env, &["projections", "rebuild", "agent_view"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", said(&rebuilt));
    let (code, report) = verify(&env, &["--only", "agent_view"]).await;
    assert_eq!(code, 0, "{report:#}");
    let (_, page) = crate::serve::get(addr, "/api/agents").await;
    assert_eq!(page["agents"][0]["agent_id"], agent_id.as_str(), "{page}");
    let kept: Option<f64> = redis.zscore(&pings, &agent_id).await.unwrap();
    assert!(kept >= ping && kept.is_some(), "the live ping {ping:?} is kept: {kept:?}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_busy_system_verifies_clean_each_model_at_its_own_position() {
    // Given a serve and a worker running missions while more are enqueued, so that the
    // models, the queue's claims and the stream move all through the verify.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let _worker = crate::workers::WorkerProcess::start(&env, "verify-worker", &[]);
    for n in 0..20 {
        enqueue(addr, n).await;
    }
    let going = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let going = going.clone();
        tokio::spawn(async move {
            let mut n = 20;
            // Bounded, so that a slow machine's verify is not outrun for ever.
            while going.load(std::sync::atomic::Ordering::SeqCst) && n < BUSY_MISSIONS_MAX {
                enqueue(addr, n).await;
                n += 1;
            }
            n
        })
    };

    // When verify runs meanwhile, every check (twice: the second while the load is surely on).
    for _ in 0..2 {
        let (code, report) = verify(&env, &[]).await;

        // Then it is clean: each model compared at its own position, not the head.
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(check(&report, "mission_queue")["status"], "ok", "{report:#}");
        assert_eq!(check(&report, "mission_list")["status"], "ok", "{report:#}");
        assert_eq!(check(&report, "agent_view")["status"], "ok", "{report:#}");
    }
    going.store(false, std::sync::atomic::Ordering::SeqCst);
    let enqueued = writer.await.unwrap();
    assert!(enqueued > 20, "the load ran during the verify");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_hole_an_edited_payload_and_a_broken_stream_are_found_by_the_log_checks() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 10, 3).await;
    let (code, report) = verify(&env, &["--only", "positions,stream_versions,chain"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(check(&report, "positions")["checked"], 30);
    assert_eq!(check(&report, "stream_versions")["checked"], 10);

    // When one payload is edited and one event removed from the middle of its stream.
    sqlx::query("UPDATE events SET payload = '{\"n\": 99}' WHERE global_position = 7")
        .execute(&env.pool)
        .await
        .unwrap();
    let (hole, stream_type, stream_id): (i64, String, String) = sqlx::query_as(
        "DELETE FROM events WHERE global_position = (
             SELECT min(global_position) FROM events WHERE version = 2 AND global_position > 10)
         RETURNING global_position, stream_type, stream_id",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let hole = format!("position {hole}");

    // Then the chain names the edited position, the positions check the hole, and the
    // stream check the stream.
    let (code, report) = verify(&env, &["--only", "positions,stream_versions,chain"]).await;
    assert_eq!(code, 1, "{report:#}");
    let chain = check(&report, "chain");
    assert_eq!(keys(chain)[0], "position 7", "{chain}");
    assert!(keys(chain).contains(&hole), "{chain}");
    assert_eq!(keys(check(&report, "positions")), [hole], "{report:#}");
    let streams = check(&report, "stream_versions");
    assert_eq!(keys(streams), [format!("stream {stream_type}/{stream_id}")], "{streams}");

    // And a name that is no check could not run: exit 2, and why.
    let output = brain(&env, &["events", "verify", "--only", "nope"]);
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"nope\" is no check"));
}

#[tokio::test]
async fn the_verify_route_is_an_admins_alone_one_at_a_time() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let path = "/api/admin/verify";

    // No key, an operator's key: refused.
    let (status, body) = call(addr, "POST", path, None).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthenticated")), "{body}");
    let operator = make_key(addr, json!({ "name": "operator", "role": "operator" })).await;
    let (status, body) = call(addr, "POST", path, Some(&operator)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no admin"), "{body}");

    // A foreign Origin, even with the admin's key: refused.
    let url = format!("http://{addr}{path}");
    let foreign = client().post(&url).header("origin", "https://evil.example").body("{}");
    let response = foreign.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_refused", "{body}");

    // Hostile arguments: named.
    for (request, field) in
        [(json!({ "only": ["positions", "../etc"] }), "only"), (json!({ "sample": 0 }), "sample")]
    {
        let response = client().post(&url).json(&request).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let response = client().post(&url).json(&json!({ "hostile": true })).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);

    // The admin: the report.
    let response = client().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(check(&report, "mission_list")["status"], "ok", "{report:#}");

    // While another verify holds the database: 409, at once.
    let mut holder = env.other_pool().await.acquire().await.unwrap().detach();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key(brain::eventlog::audit::LOCK_NAME))
        .execute(&mut holder)
        .await
        .unwrap();
    let response = client().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "verify_running", "{body}");
    let (code, _) = {
        let output = brain_async(&env, &["events", "verify"]).await;
        (output.status.code(), ())
    };
    assert_eq!(code, Some(2));
    drop(holder);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
