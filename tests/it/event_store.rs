//! The event store against a real PostgreSQL: optimistic concurrency, the gapless global
//! order under concurrent, slow and failing transactions, idempotency, reads.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brain::eventlog::store::{
    ACTOR_BYTES_MAX, APPEND_EVENTS_MAX, AppendError, CommitterConfig, EVENT_PAYLOAD_BYTES_MAX,
    EventStore,
};
use domain::{ExpectedVersion, NewEvent};
use uuid::Uuid;

use crate::support::{TestEnv, append, new_stream_id, stream_type};

#[tokio::test]
async fn two_concurrent_appends_at_the_same_expected_version_one_wins_the_other_conflicts() {
    // Given a stream, and two committers: two processes' worth of transactions.
    let env = TestEnv::new().await;
    let (first, _c1) = env.store();
    let other_pool = env.other_pool().await;
    let (second, _c2) =
        EventStore::start(other_pool, env.namespace.as_str(), CommitterConfig::default());
    let mission = stream_type("mission");

    for (round, (a, b)) in [(&first, &second), (&first, &first), (&second, &second)]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let id = new_stream_id();
        let mut version = 0;
        for step in 0..5u64 {
            // When both append at the version they read.
            let expected = ExpectedVersion::Exact(version);
            let (x, y) = tokio::join!(
                a.append(append(&mission, &id, expected, "Stepped", 1)),
                b.append(append(&mission, &id, expected, "Stepped", 2)),
            );
            // Then exactly one wins, and the loser learns the version it lost to.
            let (won, lost) = match (x, y) {
                (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
                other => panic!("round {round} step {step}: expected one winner, got {other:?}"),
            };
            assert_eq!(won.first_version, version + 1);
            match lost {
                AppendError::Conflict { expected, actual, .. } => {
                    assert_eq!((expected, actual), (version, won.last_version));
                }
                other => panic!("expected a conflict, got {other:?}"),
            }
            version = won.last_version;
        }
        // And the stream's versions are 1..=n with no gap and no duplicate.
        let events = first.load_stream(&mission, &id, None).await.unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_stale_command_in_a_batch_fails_alone_and_the_rest_commit() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let busy = new_stream_id();
    store.append(append(&mission, &busy, ExpectedVersion::Exact(0), "Created", 3)).await.unwrap();

    // Many commands at once, so they share batches; every fifth one is stale.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let store = store.clone();
        let (mission, busy) = (mission.clone(), busy.clone());
        tasks.push(tokio::spawn(async move {
            let command = if n % 5 == 0 {
                append(&mission, &busy, ExpectedVersion::Exact(1), "Stale", 1)
            } else {
                append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Fresh", 2)
            };
            (n, store.append(command).await)
        }));
    }
    for task in tasks {
        let (n, outcome) = task.await.unwrap();
        match (n % 5 == 0, outcome) {
            (true, Err(AppendError::Conflict { actual: 3, .. })) => {}
            (false, Ok(appended)) => assert_eq!(appended.last_version, 2),
            (stale, outcome) => panic!("command {n} (stale: {stale}) got {outcome:?}"),
        }
    }
    assert_eq!(env.head().await, 3 + 80 * 2);
    assert_eq!(store.load_stream(&mission, &busy, None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_command_carrying_an_already_stored_event_id_fails_alone() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let stored = store
        .append(append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Created", 1))
        .await
        .unwrap();
    let taken_id = store.read_all(0, 1).await.unwrap()[0].event_id;

    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        let mission = mission.clone();
        tasks.push(tokio::spawn(async move {
            let mut command =
                append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Created", 1);
            if n == 17 {
                command.events[0].event_id = taken_id;
            }
            (n, store.append(command).await)
        }));
    }
    for task in tasks {
        let (n, outcome) = task.await.unwrap();
        assert_eq!(outcome.is_err(), n == 17, "command {n}: {outcome:?}");
    }
    assert_eq!(env.head().await, stored.last_position + 39);
    assert_gapless(&env).await;
}

#[tokio::test]
async fn many_writers_with_slow_and_rolled_back_transactions_leave_no_hole_and_a_tailing_reader_sees_each_event_once()
 {
    // Given three committers (three processes' worth), writers on shared streams, a task
    // that holds stream locks to make some transactions slow, and commands whose event id
    // is already stored, which roll back their batch after it has taken positions.
    let env = TestEnv::new().await;
    let mut stores = vec![env.store().0];
    for _ in 0..2 {
        let pool = env.other_pool().await;
        stores.push(EventStore::start(pool, env.namespace.as_str(), CommitterConfig::default()).0);
    }
    let mission = stream_type("mission");
    let shared: Vec<_> = (0..8).map(|_| new_stream_id()).collect();
    let seed = stores[0]
        .append(append(&mission, &shared[0], ExpectedVersion::Exact(0), "Seeded", 1))
        .await
        .unwrap();
    let taken_id = stores[0].read_all(0, 1).await.unwrap()[0].event_id;
    assert_eq!(seed.last_position, 1);
    let writing = Arc::new(AtomicBool::new(true));

    // A reader tailing by position the whole time.
    let tailer = tokio::spawn({
        let (pool, writing) = (env.pool.clone(), writing.clone());
        async move {
            let (mut after, mut seen) = (0u64, Vec::new());
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let page = brain::eventlog::store::read_all(&pool, after, 50).await.unwrap();
                for event in &page {
                    // A late commit would show up here as a position below one already seen.
                    assert_eq!(event.global_position, after + 1, "tailer saw a hole or a repeat");
                    after = event.global_position;
                    seen.push(event.event_id);
                }
                if page.is_empty() {
                    if done {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    });

    let staller = tokio::spawn({
        let (pool, shared, writing) = (env.pool.clone(), shared.clone(), writing.clone());
        async move {
            let mut n = 0;
            while writing.load(Ordering::SeqCst) {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT 1 FROM streams WHERE stream_type = 'mission' AND stream_id = $1 FOR UPDATE")
                    .bind(shared[n % shared.len()].as_str())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // The slowness under test: this transaction holds the stream lock a while.
                sqlx::query("SELECT pg_sleep(0.05)").execute(&mut *tx).await.unwrap();
                tx.rollback().await.unwrap();
                n += 1;
            }
        }
    });

    let mut writers = Vec::new();
    for w in 0..24 {
        let store = stores[w % stores.len()].clone();
        let (mission, shared) = (mission.clone(), shared.clone());
        writers.push(tokio::spawn(async move {
            let mut committed = 0u64;
            for n in 0..40 {
                let outcome = if n % 13 == 7 {
                    let mut command =
                        append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Doomed", 1);
                    command.events[0].event_id = taken_id;
                    store.append(command).await
                } else if n % 3 == 0 {
                    let command = append(
                        &mission,
                        &shared[(w + n) % shared.len()],
                        ExpectedVersion::Any,
                        "Shared",
                        1 + n % 3,
                    );
                    store.append(command).await
                } else {
                    let command = append(
                        &mission,
                        &new_stream_id(),
                        ExpectedVersion::Exact(0),
                        "Own",
                        1 + n % 2,
                    );
                    store.append(command).await
                };
                if let Ok(appended) = outcome {
                    committed += appended.last_version - appended.first_version + 1;
                }
            }
            committed
        }));
    }
    let mut committed = 1;
    for writer in writers {
        committed += writer.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    staller.await.unwrap();
    let seen = tailer.await.unwrap();

    // Then positions are 1..=head with no hole, the tailer saw each event exactly once,
    // and every stream's versions are gapless.
    assert_eq!(env.head().await, committed);
    assert_gapless(&env).await;
    let distinct: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!((seen.len() as u64, distinct.len() as u64), (committed, committed));
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_type, stream_id, count(*) AS n, max(version) AS v
                               FROM events GROUP BY 1, 2) s
         JOIN streams USING (stream_type, stream_id) WHERE s.n <> s.v OR streams.version <> s.v",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(gaps, 0, "streams with a version gap or a stale streams row");
}

async fn assert_gapless(env: &TestEnv) {
    let (count, min, max): (i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(global_position), max(global_position) FROM events")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((min.unwrap_or(1), max.unwrap_or(0)), (1, count), "positions are 1..=count");
    assert_eq!(count as u64, env.head().await, "head is the last position");
}

#[tokio::test]
async fn a_repeated_command_id_returns_the_first_result_and_appends_nothing() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let other = EventStore::start(
        env.other_pool().await,
        env.namespace.as_str(),
        CommitterConfig::default(),
    )
    .0;
    let mission = stream_type("mission");
    let id = new_stream_id();
    let mut command = append(&mission, &id, ExpectedVersion::Exact(0), "Enqueued", 2);
    command.metadata.command_id = Some(Uuid::now_v7());

    // Sequentially: the repeat is answered from the stored outcome.
    let first = store.append(command.clone()).await.unwrap();
    assert!(!first.duplicate);
    let again = other.append(command.clone()).await.unwrap();
    assert_eq!(again, brain::eventlog::store::Appended { duplicate: true, ..first.clone() });

    // Concurrently, through two committers and within one batch: one appends, the rest repeat.
    let mut concurrent =
        append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Enqueued", 1);
    concurrent.metadata.command_id = Some(Uuid::now_v7());
    let outcomes = futures::future::join_all((0..6).map(|n| {
        if n % 2 == 0 { store.append(concurrent.clone()) } else { other.append(concurrent.clone()) }
    }))
    .await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.first_position == outcomes[0].first_position));
    assert_eq!(env.head().await, 3);
}

#[tokio::test]
async fn a_command_refused_for_conflict_can_be_retried_with_the_same_id() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let id = new_stream_id();
    store.append(append(&mission, &id, ExpectedVersion::Exact(0), "Enqueued", 1)).await.unwrap();
    let command_id = Uuid::now_v7();

    let mut stale = append(&mission, &id, ExpectedVersion::Exact(0), "Started", 1);
    stale.metadata.command_id = Some(command_id);
    assert!(matches!(store.append(stale).await, Err(AppendError::Conflict { actual: 1, .. })));

    // Re-decided against the fresh version, under the same command id.
    let mut retried = append(&mission, &id, ExpectedVersion::Exact(1), "Started", 1);
    retried.metadata.command_id = Some(command_id);
    let appended = store.append(retried).await.unwrap();
    assert_eq!((appended.last_version, appended.duplicate), (2, false));
}

#[tokio::test]
async fn streams_load_in_version_order_up_to_a_version_and_the_log_reads_in_pages() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let (mission, agent) = (stream_type("mission"), stream_type("agent"));
    let (m, a) = (new_stream_id(), new_stream_id());
    store.append(append(&mission, &m, ExpectedVersion::Exact(0), "Enqueued", 2)).await.unwrap();
    store.append(append(&agent, &a, ExpectedVersion::Exact(0), "Registered", 1)).await.unwrap();
    let mut command = append(&mission, &m, ExpectedVersion::Exact(2), "Started", 1);
    command.metadata.command_id = Some(Uuid::now_v7());
    let metadata = command.metadata.clone();
    store.append(command).await.unwrap();

    let whole = store.load_stream(&mission, &m, None).await.unwrap();
    let types: Vec<&str> = whole.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Enqueued", "Enqueued", "Started"]);
    assert_eq!(whole[2].metadata, metadata, "metadata is stored with every event");
    assert_eq!(whole[2].global_position, 4);
    assert_eq!(store.load_stream(&mission, &m, Some(2)).await.unwrap().len(), 2);
    assert!(store.load_stream(&mission, &new_stream_id(), None).await.unwrap().is_empty());

    let page = store.read_all(1, 2).await.unwrap();
    let positions: Vec<u64> = page.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, [2, 3]);
    assert_eq!(page[1].stream_type, agent);
    assert!(store.read_all(4, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn empty_and_oversized_appends_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let empty = append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "X", 0);
    assert!(matches!(store.append(empty).await, Err(AppendError::NoEvents)));
    let mut big = append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "X", 1);
    big.events = vec![NewEvent::new("X", serde_json::json!({})); APPEND_EVENTS_MAX + 1];
    assert!(matches!(
        store.append(big).await,
        Err(AppendError::TooManyEvents { count: 1001, max: 1000 })
    ));
    assert_eq!(env.head().await, 0);
}

#[tokio::test]
async fn the_committer_commits_what_is_queued_before_it_stops() {
    let env = TestEnv::new().await;
    let (store, committer) = env.store();
    let mission = stream_type("mission");
    let pending: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let command =
                append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Queued", 1);
            tokio::spawn(async move { store.append(command).await })
        })
        .collect();
    drop(store);
    for task in pending {
        task.await.unwrap().expect("accepted before shutdown");
    }
    tokio::time::timeout(Duration::from_secs(10), committer)
        .await
        .expect("committer stops")
        .unwrap();
    assert_eq!(env.head().await, 200);
}

#[tokio::test]
async fn appends_the_bus_could_not_carry_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let with_type = |event_type: &str| {
        let mut command = append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Ok", 1);
        command.events[0].event_type = event_type.to_owned();
        command
    };
    for bad in ["", "Line\nBreak", "a.b", "has space", &"X".repeat(129)] {
        let outcome = store.append(with_type(bad)).await;
        assert!(
            matches!(outcome, Err(AppendError::InvalidEventType { .. })),
            "{bad:?}: {outcome:?}"
        );
    }
    let mut huge = with_type("Huge");
    huge.events[0].payload = serde_json::json!({ "blob": "x".repeat(EVENT_PAYLOAD_BYTES_MAX) });
    assert!(matches!(store.append(huge).await, Err(AppendError::PayloadTooLarge { index: 0, .. })));
    let mut chatty = with_type("Ok");
    chatty.metadata.actor = "a".repeat(ACTOR_BYTES_MAX + 1);
    assert!(matches!(store.append(chatty).await, Err(AppendError::ActorTooLong { .. })));
    assert_eq!(env.head().await, 0);
}

#[tokio::test]
async fn a_burst_larger_than_one_transaction_carries_is_committed_in_parts() {
    // 120 commands of ~200 KB each: more payload than one transaction takes (16 MiB).
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let blob = "y".repeat(200 * 1024);
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let store = store.clone();
            let mut command =
                append(&mission, &new_stream_id(), ExpectedVersion::Exact(0), "Big", 1);
            command.events[0].payload = serde_json::json!({ "blob": blob });
            tokio::spawn(async move { store.append(command).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("accepted");
    }
    assert_eq!(env.head().await, 120);
    assert_gapless(&env).await;
}

#[tokio::test]
async fn command_outcomes_past_their_window_are_pruned_and_recent_ones_kept() {
    // Given ten commands, four of them stored eight days ago.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut command =
            append(&stream_type("order"), &new_stream_id(), ExpectedVersion::Exact(0), "Placed", 1);
        let id = uuid::Uuid::now_v7();
        command.metadata.command_id = Some(id);
        store.append(command).await.unwrap();
        ids.push(id);
    }
    sqlx::query(
        "UPDATE commands SET recorded_at = now() - interval '8 days' WHERE command_id = ANY($1)",
    )
    .bind(&ids[..4])
    .execute(&env.pool)
    .await
    .unwrap();

    // When outcomes older than seven days are pruned.
    let keep = std::time::Duration::from_secs(7 * 24 * 3_600);
    let deleted = brain::eventlog::store::prune_command_outcomes(&env.pool, keep).await.unwrap();

    // Then the four old ones are gone and the six recent ones still answer repeats.
    assert_eq!(deleted, 4);
    for (n, id) in ids.iter().enumerate() {
        let kept = store.command_outcome(*id).await.unwrap().is_some();
        assert_eq!(kept, n >= 4, "command {n}");
    }
    assert_eq!(env.head().await, 10, "events are never pruned");
}
