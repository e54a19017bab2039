//! The Redis mission queue against real services: pop order (priority, age, aging), the claim
//! that keeps a popped mission from being popped again, reclaim of a claim that never
//! started, and a rebuild from the log equal to the live queue.

use std::time::Duration;

use brain::eventlog::command;
use brain::missions::queue::{self, Queue};
use brain::serve::ServeOptions;
use domain::mission::{Mission, MissionCommand, MissionSpec, Priority};
use domain::{EventMetadata, StreamId};
use projections::mission_queue::{MissionQueue, Scoring};
use serde_json::json;
use uuid::Uuid;

use crate::serve::{get, serve_with_options, services};
use crate::support::{TestEnv, redis_url, wait_until};
use crate::workers::{enqueue, mission_status};

const WAIT: Duration = Duration::from_secs(30);

async fn connect(env: &TestEnv) -> Queue {
    let client = redis::Client::open(redis_url()).unwrap();
    Queue::connect(&client, &env.namespace).await.expect("connect to Redis")
}

fn spec(agent: &str, priority: Priority) -> MissionSpec {
    MissionSpec {
        name: format!("{priority:?}"),
        description: String::new(),
        priority,
        payload: json!({}),
        agent: agent.into(),
        attempt_max: 3,
        timeout_ms: 60_000,
        not_before_ms: None,
        budget: None,
        parent: None,
        forked_from: None,
        copied_from: None,
    }
}

/// Enqueues through the command handler with a chosen clock, so ages are exact.
async fn enqueue_at(
    store: &brain::eventlog::store::EventStore,
    spec: MissionSpec,
    now_ms: i64,
) -> String {
    let id = StreamId::from(Uuid::now_v7());
    let metadata = EventMetadata::new("test", time::OffsetDateTime::now_utc());
    command::execute::<Mission>(store, &id, metadata, || MissionCommand::Enqueue {
        spec: spec.clone(),
        now_ms,
    })
    .await
    .expect("enqueue");
    id.to_string()
}

#[tokio::test]
async fn missions_pop_by_priority_then_age_and_an_old_low_one_overtakes_after_the_aging() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let queue = connect(&env).await;
    let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
    let t0 = 1_800_000_000_000;
    // Given missions enqueued at known times...
    let low_old = enqueue_at(&store, spec("prio", Priority::Low), t0).await;
    let normal = enqueue_at(&store, spec("prio", Priority::Normal), t0 + 61_000).await;
    let normal_later = enqueue_at(&store, spec("prio", Priority::Normal), t0 + 62_000).await;
    let low_fresh = enqueue_at(&store, spec("prio", Priority::Low), t0 + 63_000).await;
    let high = enqueue_at(&store, spec("prio", Priority::High), t0 + 65_000).await;
    let other_kind = enqueue_at(&store, spec("other", Priority::Critical), t0).await;
    let mut feeder = brain::eventlog::projector::Feeder::new(
        MissionQueue { scoring },
        queue.store(None),
        env.pool.clone(),
        100,
    )
    .await
    .unwrap();
    feeder.catch_up().await.unwrap();

    // ...the queue shows them in pop order: high first; the low one that waited over a
    // minute longer than the fresh normal ones before them; among equals, the older first.
    let expected = [&high, &low_old, &normal, &normal_later, &low_fresh];
    let shown: Vec<String> =
        queue.upcoming("prio", 10).await.unwrap().into_iter().map(|m| m.mission_id).collect();
    assert_eq!(shown.iter().collect::<Vec<_>>(), expected);

    // And claims pop them in that order, each once; another kind's mission is not popped.
    let kinds = ["prio".to_owned()];
    let mut popped = Vec::new();
    while let Some(claim) = queue.claim(&kinds, "w1", t0 + 70_000, 30_000).await.unwrap() {
        assert_eq!(claim.agent, "prio");
        popped.push(claim.mission_id);
    }
    assert_eq!(popped.iter().collect::<Vec<_>>(), expected);
    let everything = ["prio".to_owned(), "other".to_owned()];
    let last = queue.claim(&everything, "w1", t0 + 70_000, 30_000).await.unwrap().unwrap();
    assert_eq!(last.mission_id, other_kind);

    // A claim that never turned into a start goes back once it expires, not before.
    assert_eq!(queue.reclaim(t0 + 70_000 + 29_999).await.unwrap(), 0);
    assert_eq!(queue.reclaim(t0 + 70_000 + 30_000).await.unwrap(), 6);
    let again = queue.claim(&kinds, "w2", t0 + 200_000, 30_000).await.unwrap().unwrap();
    assert_eq!(again.mission_id, high);
}

#[tokio::test]
async fn a_rebuilt_queue_equals_the_live_one_and_swaps_in() {
    // Given a server with workers for `echo`, and missions in every state the queue keeps:
    // done, failed for good, running, ready for a kind nobody serves, delayed.
    let env = TestEnv::new().await;
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let workers = options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 4);
    workers.lease_ms = 600_000;
    workers.drain_ms = 100;
    options.agent_kinds.push("idle".to_owned());
    let (addr, shutdown, task) = serve_with_options(options).await;
    let mut ids = Vec::new();
    for payload in [json!({}), json!({ "fail_permanently": true }), json!({ "hang_attempts": 1 })] {
        ids.push(enqueue(addr, json!({ "name": "m", "agent": "echo", "payload": payload })).await);
    }
    for priority in ["low", "critical", "normal"] {
        let body = json!({ "name": priority, "agent": "idle", "priority": priority });
        ids.push(enqueue(addr, body).await);
    }
    let later = "2100-01-01T00:00:00Z";
    ids.push(enqueue(addr, json!({ "name": "later", "agent": "idle", "not_before": later })).await);
    let expected = ["completed", "failed", "running", "queued", "queued", "queued", "pending"];
    for (id, status) in ids.iter().zip(expected) {
        wait_until(&format!("{id} to be {status}"), WAIT, || async {
            mission_status(addr, id).await == status
        })
        .await;
    }
    // A failed mission retried by hand runs (and fails) again: `MissionRetried` in the log.
    let retried = &ids[1];
    crate::serve::crypto_provider();
    let url = format!("http://{addr}/api/missions/{retried}/retry");
    let response = crate::support::client().post(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    wait_until("the retried mission to fail again", WAIT, || async {
        let mission = crate::workers::mission(addr, retried).await;
        mission["status"] == "failed" && mission["errors"].as_array().unwrap().len() == 2
    })
    .await;
    let queue = connect(&env).await;

    // The queue route shows the idle kind in pop order.
    let (status, upcoming) = get(addr, "/api/missions/queue?agent=idle").await;
    assert_eq!(status, 200, "{upcoming}");
    let names: Vec<&str> = upcoming["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["critical", "normal", "low"]);

    // When the queue is rebuilt from the log beside the live one, both hold the same. The
    // running mission's lease extensions go on landing in the log: the two are compared at
    // one head, taken again if an event landed meanwhile.
    let scoring = Scoring::default();
    let mut tries = 0;
    let (live, rebuilt) = loop {
        tries += 1;
        let head = env.head().await;
        wait_until("the live queue to reach the head", WAIT, || async {
            queue.checkpoint().await.unwrap() >= head
        })
        .await;
        let (reached, generation) =
            queue::rebuild(&env.pool, &queue, scoring, false).await.unwrap();
        let live = queue.snapshot(None).await.unwrap();
        let rebuilt = queue.snapshot(Some(generation)).await.unwrap();
        if reached == head && queue.checkpoint().await.unwrap() == head || tries == 10 {
            assert_eq!(reached, head, "the log kept moving for {tries} tries");
            break (live, rebuilt);
        }
    };
    assert!(live.keys().any(|key| key.starts_with("delayed:idle")), "{live:?}");
    assert!(live.keys().any(|key| key == "leases"), "{live:?}");
    assert_eq!(rebuilt, live);

    // And a rebuild that swaps in leaves the server working on the new generation.
    let (_, generation) = queue::rebuild(&env.pool, &queue, scoring, true).await.unwrap();
    assert_eq!(queue.snapshot(None).await.unwrap(), live);
    let id = enqueue(addr, json!({ "name": "after", "agent": "echo" })).await;
    wait_until("a mission to complete after the swap", WAIT, || async {
        mission_status(addr, &id).await == "completed"
    })
    .await;
    let (_, health) = get(addr, "/api/missions/health").await;
    let idle = &health["queues"]["idle"];
    assert_eq!((idle["ready"].as_u64(), idle["delayed"].as_u64()), (Some(3), Some(1)), "{health}");
    assert!(idle["oldest_waiting_ms"].as_i64().is_some(), "{health}");
    assert_eq!(health["running"], 1, "{health}");
    assert!(generation > 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // Shut down while it ran, the hanging mission was handed back without counting the
    // attempt: queued again for whoever runs next.
    let last: (String, i64) = sqlx::query_as(
        "SELECT event_type, (payload->>'attempt')::int8 FROM events
         WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(&ids[2])
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(last, ("MissionReleased".to_owned(), 1));
}
