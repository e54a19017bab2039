//! The command handler with the mission aggregate against a real store: re-deciding on
//! conflict is what keeps one mission on one worker (design invariants 5 and 6).

use brain::eventlog::command::{CommandError, execute, load, load_many};
use brain::eventlog::store::{Append, CommitterConfig, EventStore};
use domain::aggregate::Aggregate;
use domain::mission::{
    Mission, MissionCommand, MissionError, MissionSpec, MissionStatus, Priority,
};
use domain::{EventMetadata, ExpectedVersion, NewEvent, StreamId};
use serde_json::json;
use uuid::Uuid;

use crate::support::TestEnv;

fn metadata(actor: &str) -> EventMetadata {
    EventMetadata::new(actor, time::OffsetDateTime::now_utc())
}

fn spec() -> MissionSpec {
    MissionSpec {
        name: "write the tests".into(),
        description: String::new(),
        priority: Priority::High,
        payload: json!({ "n": 1 }),
        agent: "coder".into(),
        attempt_max: 3,
        timeout_ms: 60_000,
        not_before_ms: None,
        budget: None,
        parent: None,
        forked_from: None,
        copied_from: None,
    }
}

async fn enqueue(store: &EventStore) -> StreamId {
    let id = StreamId::from(Uuid::now_v7());
    let enqueue = || MissionCommand::Enqueue { spec: spec(), now_ms: 1_000 };
    execute::<Mission>(store, &id, metadata("user:test"), enqueue).await.expect("enqueued");
    id
}

fn start(worker: &str) -> impl FnMut() -> MissionCommand {
    let worker = worker.to_owned();
    move || MissionCommand::Start { worker_id: worker.clone(), lease_ms: 30_000, now_ms: 2_000 }
}

#[tokio::test]
async fn two_workers_starting_one_mission_at_once_one_wins_and_the_other_is_refused() {
    let env = TestEnv::new().await;
    let (first, _c1) = env.store();
    let (second, _c2) = EventStore::start(
        env.other_pool().await,
        env.namespace.as_str(),
        CommitterConfig::default(),
    );
    for _ in 0..20 {
        let id = enqueue(&first).await;
        let (a, b) = tokio::join!(
            execute::<Mission>(&first, &id, metadata("worker:w1"), start("w1")),
            execute::<Mission>(&second, &id, metadata("worker:w2"), start("w2")),
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("expected one winner, got {other:?}"),
        };
        assert_eq!((won.state.status, won.state.attempt), (MissionStatus::Running, 1));
        assert!(
            matches!(
                lost,
                CommandError::Rejected(MissionError::NotQueued { status: MissionStatus::Running })
            ),
            "{lost:?}"
        );
        let (mission, version) = load::<Mission>(&first, &id).await.unwrap();
        assert_eq!((version, mission.worker_id), (2, won.state.worker_id));
    }
}

#[tokio::test]
async fn a_repeated_command_gets_its_first_outcome_even_where_deciding_again_would_refuse() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = enqueue(&store).await;
    let mut once = metadata("worker:w1");
    once.command_id = Some(Uuid::now_v7());

    let first = execute::<Mission>(&store, &id, once.clone(), start("w1")).await.unwrap();
    let again = execute::<Mission>(&store, &id, once, start("w1")).await.unwrap();

    let (first, again) = (first.appended.unwrap(), again.appended.unwrap());
    assert_eq!((first.duplicate, again.duplicate), (false, true));
    assert_eq!(again.first_position, first.first_position);
    assert_eq!(load::<Mission>(&store, &id).await.unwrap().1, 2, "nothing appended twice");
}

#[tokio::test]
async fn a_refused_command_appends_nothing() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = enqueue(&store).await;
    execute::<Mission>(&store, &id, metadata("worker:w1"), start("w1")).await.unwrap();
    let complete = || MissionCommand::Complete {
        worker_id: "w2".into(),
        attempt: 1,
        result: json!({}),
        now_ms: 3_000,
    };
    let refused = execute::<Mission>(&store, &id, metadata("worker:w2"), complete).await;
    assert!(matches!(refused, Err(CommandError::Rejected(MissionError::HeldByAnother { .. }))));
    assert_eq!(env.head().await, 2);
}

/// A start stored before `MissionStarted` carried its lease's length (schema version 1) loads
/// through its upcaster wherever the handler loads a stream, and the holder goes on under it;
/// the next start is written at version 2.
#[tokio::test]
async fn a_start_stored_at_an_older_schema_version_loads_and_new_ones_are_written_at_today_s() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = enqueue(&store).await;
    let mut v1 = NewEvent::new(
        "MissionStarted",
        json!({ "worker_id": "w1", "attempt": 1, "lease_expires_at_ms": 32_000, "at_ms": 2_000 }),
    );
    v1.schema_version = 1;
    let stored_v1 = Append {
        stream_type: Mission::stream_type(),
        stream_id: id.clone(),
        expected: ExpectedVersion::Exact(1),
        events: vec![v1],
        metadata: metadata("worker:w1"),
    };
    store.append(stored_v1).await.expect("a v1 start appended as an older release wrote it");

    let (mission, version) = load::<Mission>(&store, &id).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        (mission.status, mission.worker_id.as_deref(), mission.lease_expires_at_ms),
        (MissionStatus::Running, Some("w1"), Some(32_000))
    );
    let many = load_many::<Mission>(&store, std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(many[0], (mission, 2), "the bulk load reads it the same way");

    let release = || MissionCommand::Release {
        worker_id: "w1".into(),
        attempt: 1,
        reason: "shutting down".into(),
        now_ms: 3_000,
    };
    execute::<Mission>(&store, &id, metadata("worker:w1"), release).await.unwrap();
    execute::<Mission>(&store, &id, metadata("worker:w2"), start("w2")).await.unwrap();
    let stored = store.load_stream(&Mission::stream_type(), &id, None).await.unwrap();
    let starts: Vec<_> = stored
        .iter()
        .filter(|event| event.event_type == "MissionStarted")
        .map(|event| (event.schema_version, event.payload.get("lease_ms").cloned()))
        .collect();
    assert_eq!(starts, [(1, None), (2, Some(json!(30_000)))], "stored as each was written");
}
