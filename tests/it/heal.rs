//! Read models heal themselves (design invariant 11): a queue whose Redis keys are wiped is
//! refilled from the log within seconds, leases included; a queue whose checkpoint is ahead
//! of the log (the database recreated, Redis kept) is dropped and rebuilt, and a lease of a
//! mission the log does not know is forgotten instead of being retried every tick.

use std::time::Duration;

use brain::missions::worker::Backoff;
use brain::serve::ServeOptions;
use serde_json::{Value, json};

use crate::serve::{get, serve_with_options, services};
use crate::support::{TestEnv, delete_redis_keys, redis_url, wait_until};
use crate::workers::{WorkerProcess, enqueue, mission, serve_without_workers};

const WAIT: Duration = Duration::from_secs(60);

async fn health(addr: std::net::SocketAddr) -> Value {
    get(addr, "/api/missions/health").await.1
}

#[tokio::test]
async fn a_queue_wiped_from_redis_is_refilled_from_the_log_with_its_leases_and_every_mission_runs()
{
    // Given a mission whose holder died a moment ago (its 8 s lease still runs), and twenty
    // queued for a kind no worker serves: from here on, nothing appends anything.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let mut first = WorkerProcess::start(&env, "w1", &["--lease-ms", "8000"]);
    let held = enqueue(
        addr,
        json!({ "name": "held", "agent": "echo", "payload": { "hang_attempts": 1 } }),
    )
    .await;
    wait_until("the held mission to run", WAIT, || async {
        mission(addr, &held).await["status"] == "running"
    })
    .await;
    let mut queued = Vec::new();
    for n in 0..20 {
        queued.push(enqueue(addr, json!({ "name": format!("q{n}"), "agent": "ops" })).await);
    }
    first.kill();
    wait_until("the queue to hold them", WAIT, || async {
        let health = health(addr).await;
        health["queues"]["ops"]["ready"] == 20 && health["running"] == 1
    })
    .await;
    let head = env.head().await;

    // When every key of the namespace's queue is wiped.
    delete_redis_keys(&format!("{{{}}}:q:*", env.namespace)).await;
    assert_eq!(health(addr).await["running"], 0, "the wipe took the lease too");

    // Then the projection notices on its own, with no event to tell it, and refills the queue
    // and the lease from the log.
    wait_until("the queue to be refilled", Duration::from_secs(15), || async {
        let health = health(addr).await;
        health["queues"]["ops"]["ready"] == 20 && health["running"] == 1
    })
    .await;
    assert_eq!(env.head().await, head, "no event was appended: the runner noticed by itself");
    // And the reset is on record, for `brain projections status`.
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM projector_resets WHERE projector = 'mission_queue' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(reasons, ["lost_state"]);
    // And the refilled lease expires: the dead holder's mission runs again on a new worker,
    // which runs the queued ones too.
    let _second =
        WorkerProcess::start(&env, "w2", &["--lease-ms", "3000", "--agents", "echo,ops=echo"]);
    for id in queued.iter().chain([&held]) {
        wait_until(&format!("{id} to complete"), WAIT, || async {
            mission(addr, id).await["status"] == "completed"
        })
        .await;
    }
    let expired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'MissionLeaseExpired' AND stream_id = $1",
    )
    .bind(&held)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(expired, 1);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_queue_ahead_of_its_log_is_rebuilt_and_a_lease_of_an_unknown_mission_is_forgotten() {
    // Given Redis keys left from another database: a checkpoint far ahead of this log, and an
    // expired lease of a mission this log never had.
    let env = TestEnv::new().await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let base = format!("{{{}}}:q:1:", env.namespace);
    let ghost = "0191f0c4-8b1e-7c3a-9d2e-000000000001";
    let _: () = redis::cmd("SET")
        .arg(format!("{base}checkpoint"))
        .arg(1_000_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{base}leases"))
        .arg(1)
        .arg(ghost)
        .query_async(&mut redis)
        .await
        .unwrap();

    // When a serve with workers starts on this log and missions are enqueued.
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let workers = options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 2);
    workers.backoff = Backoff { base_ms: 50, max_ms: 200 };
    let (addr, shutdown, task) = serve_with_options(options).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(addr, json!({ "name": format!("m{n}"), "agent": "echo" })).await);
    }

    // Then the queue was rebuilt from this log (its missions run) and the ghost is gone.
    for id in &ids {
        wait_until(&format!("{id} to complete"), WAIT, || async {
            mission(addr, id).await["status"] == "completed"
        })
        .await;
    }
    wait_until("the queue to catch up with this log", WAIT, || async {
        health(addr).await["lag"]["projectors"]["mission_queue"] == 0
    })
    .await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM projector_resets WHERE projector = 'mission_queue' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(reasons, ["ahead_of_log"]);
    // The reset dropped the old keys; a lease of an unknown mission that appears now (the
    // supervisor finds it expired) is forgotten rather than tried every tick.
    let generation: Option<u64> = redis::cmd("GET")
        .arg(format!("{{{}}}:q:gen", env.namespace))
        .query_async(&mut redis)
        .await
        .unwrap();
    let leases = format!("{{{}}}:q:{}:leases", env.namespace, generation.unwrap_or(1));
    let _: () =
        redis::cmd("ZADD").arg(&leases).arg(1).arg(ghost).query_async(&mut redis).await.unwrap();
    wait_until("the ghost lease to be forgotten", WAIT, || async {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&leases)
            .arg(ghost)
            .query_async(&mut redis.clone())
            .await
            .unwrap();
        score.is_none()
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bus_message_that_is_not_the_stores_event_is_not_applied_and_the_serve_keeps_running() {
    // Given a serve, and a foreign message on the namespace's bus where the next event's
    // place is: garbage that decodes to nothing.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = crate::serve::serve_in_process(services(&env, &redis_url())).await;
    let first = enqueue(addr, json!({ "name": "before", "agent": "echo" })).await;
    wait_until("the first mission to be listed", WAIT, || async {
        get(addr, "/api/missions").await.1["missions"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let subject = format!("{}.events.mission.{}", env.namespace, uuid::Uuid::now_v7());
    env.jetstream.publish(subject, "not an envelope".into()).await.unwrap().await.unwrap();

    // When missions are enqueued after it.
    let second = enqueue(addr, json!({ "name": "after", "agent": "echo" })).await;

    // Then the garbage is not applied, the store's events are (taken from PostgreSQL), the
    // refusal is counted, and the serve keeps serving.
    wait_until("the second mission to be listed", WAIT, || async {
        let (_, page) = get(addr, "/api/missions").await;
        let ids: Vec<&str> = page["missions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mission_id"].as_str().unwrap())
            .collect();
        ids.len() == 2 && ids.contains(&first.as_str()) && ids.contains(&second.as_str())
    })
    .await;
    let metrics = crate::serve::http_get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("brain_bus_messages_refused_total"), "{metrics}");
    assert!(!task.is_finished());
    assert_eq!(get(addr, "/health").await.0, 200);

    shutdown.cancel();
    let _ = task.await.unwrap();
}

#[tokio::test]
async fn an_event_type_a_projector_does_not_know_stops_that_projector_before_it_not_the_serve() {
    // Given a serve, and an event of a type this release does not know (a newer release
    // wrote it during a rolling deploy) in a mission's stream.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = crate::serve::serve_in_process(services(&env, &redis_url())).await;
    let id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    let (store, _committer) = env.store();
    let newer = brain::eventlog::store::Append {
        stream_type: crate::support::stream_type("mission"),
        stream_id: domain::StreamId::parse(&id).unwrap(),
        expected: domain::ExpectedVersion::Exact(1),
        events: vec![domain::NewEvent::new("MissionTeleported", json!({ "to": "mars" }))],
        metadata: domain::EventMetadata::new("newer-release", time::OffsetDateTime::now_utc()),
    };
    let appended = store.append(newer).await.unwrap();

    // Then the projectors stop before it, counted, and the serve goes on serving.
    wait_until("the projectors to report the unreadable event", WAIT, || async {
        let metrics = crate::serve::http_get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.contains("brain_projector_unreadable_total{projector=\"mission_list\"}")
    })
    .await;
    let (_, page) = get(addr, "/api/missions").await;
    assert!(page["position"].as_u64().unwrap() < appended.first_position, "{page}");
    assert!(!task.is_finished());
    assert_eq!(get(addr, "/health").await.0, 200);
    let (status, _) = crate::missions_api::post(
        addr,
        "/api/missions/enqueue",
        &json!({ "name": "still", "agent": "echo" }).to_string(),
    )
    .await;
    assert_eq!(status, 201);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
