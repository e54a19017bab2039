//! Atomic group appends (`EventStore::append_all`) against a real PostgreSQL: all or
//! nothing on conflict, consecutive and gapless positions beside concurrent single appends,
//! repeated command ids, limits, and two committers taking the same streams in opposite order.

use std::collections::HashSet;

use brain::eventlog::store::{
    Append, AppendError, Appended, BATCH_PAYLOAD_BYTES_MAX, CommitterConfig,
    EVENT_PAYLOAD_BYTES_MAX, EventStore, GROUP_APPENDS_MAX,
};
use domain::{ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::support::{TestEnv, append, new_stream_id, stream_type};

/// An append creating a new stream, carrying a command id.
fn creation(events: usize) -> Append {
    let mut append = append(
        &stream_type("mission"),
        &new_stream_id(),
        ExpectedVersion::Exact(0),
        "Made",
        events,
    );
    append.metadata.command_id = Some(Uuid::now_v7());
    append
}

fn assert_consecutive(appended: &[Appended]) {
    for pair in appended.windows(2) {
        assert_eq!(pair[1].first_position, pair[0].last_position + 1, "{appended:?}");
    }
}

async fn count_events(env: &TestEnv, stream_id: &StreamId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(stream_id.as_str())
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_conflict_on_one_stream_refuses_the_whole_group_and_its_ids_stay_free() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mission = stream_type("mission");
    let existing = new_stream_id();
    store.append(append(&mission, &existing, ExpectedVersion::Exact(0), "Made", 1)).await.unwrap();
    let head = env.head().await;

    // Given a group whose third append expects a version the stream has left behind.
    let mut group = vec![creation(1), creation(2)];
    let mut stale = append(&mission, &existing, ExpectedVersion::Exact(0), "Changed", 1);
    stale.metadata.command_id = Some(Uuid::now_v7());
    group.push(stale);
    group.push(creation(1));

    // When it is appended, then it is refused with that conflict, and nothing of it exists.
    match store.append_all(group.clone()).await {
        Err(AppendError::Conflict { stream_id, expected, actual, .. }) => {
            assert_eq!((stream_id, expected, actual), (existing.clone(), 0, 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(env.head().await, head, "nothing appended");
    for append in &group {
        let expected = if append.stream_id == existing { 1 } else { 0 };
        assert_eq!(count_events(&env, &append.stream_id).await, expected);
    }
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commands").fetch_one(&env.pool).await.unwrap();
    assert_eq!(claimed, 0, "the refused group's command ids were released");

    // And once corrected, the same group (same command ids) goes in whole.
    group[2].expected = ExpectedVersion::Exact(1);
    let appended = store.append_all(group.clone()).await.unwrap();
    assert_eq!(appended.len(), 4);
    assert!(appended.iter().all(|a| !a.duplicate));
    assert_eq!(appended[0].first_position, head + 1);
    assert_consecutive(&appended);
    assert_eq!((appended[2].first_version, appended[2].last_version), (2, 2));
    assert_eq!(env.head().await, head + 5);
}

#[tokio::test]
async fn groups_beside_single_appends_keep_positions_gapless_and_each_group_consecutive() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let mut tasks = Vec::new();
    for n in 0..120 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if n % 3 == 0 {
                let group: Vec<Append> = (0..25).map(|i| creation(1 + i % 3)).collect();
                let sizes: Vec<u64> = group.iter().map(|a| a.events.len() as u64).collect();
                let appended = store.append_all(group).await.expect("group");
                assert_consecutive(&appended);
                for (a, size) in appended.iter().zip(sizes) {
                    assert_eq!((a.first_version, a.last_version), (1, size));
                    assert_eq!(a.last_position - a.first_position + 1, size);
                }
                appended.iter().map(|a| a.last_position - a.first_position + 1).sum::<u64>()
            } else {
                let appended = store.append(creation(2)).await.expect("single");
                appended.last_position - appended.first_position + 1
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(env.head().await, total);
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(positions, (1..=total as i64).collect::<Vec<_>>(), "positions are 1..=head");
    let batches = store.committer_stats().transactions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches < 120, "groups and single appends shared transactions ({batches})");
}

#[tokio::test]
async fn a_group_sent_again_appends_nothing_and_answers_as_the_first_time() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let group: Vec<Append> = (0..50).map(|_| creation(1)).collect();
    let first = store.append_all(group.clone()).await.unwrap();
    let head = env.head().await;

    let again = store.append_all(group.clone()).await.unwrap();
    assert_eq!(env.head().await, head, "nothing appended");
    assert!(again.iter().all(|a| a.duplicate));
    let strip = |a: &Appended| Appended { duplicate: false, ..a.clone() };
    assert_eq!(again.iter().map(strip).collect::<Vec<_>>(), first);

    // Half old, half new: the old half answers as before, the new half goes in.
    let mut mixed: Vec<Append> = group[..25].to_vec();
    mixed.extend((0..25).map(|_| creation(1)));
    let answered = store.append_all(mixed).await.unwrap();
    assert!(answered[..25].iter().all(|a| a.duplicate));
    assert!(answered[25..].iter().all(|a| !a.duplicate));
    assert_eq!(answered[25].first_position, head + 1);
    assert_consecutive(&answered[25..]);
    assert_eq!(env.head().await, head + 25);

    // A command id twice in one group: the second answers like the first, appending nothing.
    let mut twice = vec![creation(1), creation(1)];
    twice[1].metadata.command_id = twice[0].metadata.command_id;
    let answered = store.append_all(twice).await.unwrap();
    assert_eq!((answered[0].duplicate, answered[1].duplicate), (false, true));
    assert_eq!(answered[1].first_position, answered[0].first_position);
    assert_eq!(env.head().await, head + 26);
}

#[tokio::test]
async fn two_committers_taking_the_same_streams_in_opposite_order_neither_deadlock_nor_both_win() {
    let env = TestEnv::new().await;
    let (first, _c1) = env.store();
    let (second, _c2) = EventStore::start(
        env.other_pool().await,
        env.namespace.as_str(),
        CommitterConfig::default(),
    );
    let mission = stream_type("mission");
    for _ in 0..20 {
        let ids: Vec<StreamId> = (0..10).map(|_| new_stream_id()).collect();
        let group = |ids: &[StreamId]| -> Vec<Append> {
            ids.iter()
                .map(|id| append(&mission, id, ExpectedVersion::Exact(0), "Made", 1))
                .collect()
        };
        let reversed: Vec<StreamId> = ids.iter().rev().cloned().collect();
        let (a, b) =
            tokio::join!(first.append_all(group(&ids)), second.append_all(group(&reversed)));
        match (a, b) {
            (Ok(_), Err(AppendError::Conflict { .. }))
            | (Err(AppendError::Conflict { .. }), Ok(_)) => {}
            other => panic!("expected one group to win whole, got {other:?}"),
        }
        for id in &ids {
            assert_eq!(count_events(&env, id).await, 1);
        }
    }
    let streams: HashSet<String> = sqlx::query_scalar("SELECT stream_id FROM events")
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(streams.len(), 200);
}

#[tokio::test]
async fn groups_over_the_limits_are_refused_before_the_store_and_change_nothing() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();

    assert_eq!(store.append_all(Vec::new()).await.unwrap(), Vec::new());

    let too_many: Vec<Append> = (0..=GROUP_APPENDS_MAX).map(|_| creation(1)).collect();
    match store.append_all(too_many).await {
        Err(AppendError::TooManyAppends { count, max }) => {
            assert_eq!((count, max), (GROUP_APPENDS_MAX + 1, GROUP_APPENDS_MAX));
        }
        other => panic!("expected TooManyAppends, got {other:?}"),
    }

    let mut bad_member = vec![creation(1), creation(1), creation(1)];
    bad_member[1].events.clear();
    match store.append_all(bad_member).await {
        Err(AppendError::InGroup { index: 1, error }) => {
            assert!(matches!(*error, AppendError::NoEvents), "{error:?}");
        }
        other => panic!("expected the second append named, got {other:?}"),
    }

    // Each event within its own limit, the group above the transaction's bound.
    let blob = "x".repeat(EVENT_PAYLOAD_BYTES_MAX - 64);
    let count = BATCH_PAYLOAD_BYTES_MAX / EVENT_PAYLOAD_BYTES_MAX + 2;
    let huge: Vec<Append> = (0..count)
        .map(|_| {
            let mut append = creation(1);
            append.events = vec![NewEvent::new("Made", serde_json::json!({ "blob": blob }))];
            append
        })
        .collect();
    match store.append_all(huge).await {
        Err(AppendError::GroupTooLarge { bytes, max }) => {
            assert!(bytes > max && max == BATCH_PAYLOAD_BYTES_MAX);
        }
        other => panic!("expected GroupTooLarge, got {other:?}"),
    }
    assert_eq!(env.head().await, 0);
}
