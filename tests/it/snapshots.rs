//! Snapshots of long streams (decision 0049) against a real store: a load through a snapshot
//! equals a fold of the whole stream; a snapshot of another version, or one that names an
//! event the log does not hold there, is ignored and replaced; the command handler still
//! detects conflicts; time travel before a snapshot still folds the log; a snapshot that
//! cannot be written fails no command; and `verify` names an edited snapshot, and is clean
//! once the table is emptied.

use std::collections::BTreeMap;
use std::time::Duration;

use brain::eventlog::audit::{Options, Report, Verifier};
use brain::eventlog::command::{
    self, CommandError, execute, execute_at, execute_new, load, load_as_of, load_whole,
    load_with_recent_events,
};
use brain::eventlog::snapshot;
use brain::eventlog::store::{Append, AppendError, AsOf, EventStore};
use domain::agent::{Agent, AgentCommand, AgentEvent, AgentState, Registration};
use domain::aggregate::Aggregate;
use domain::conversation::{
    Conversation, ConversationCommand, ConversationError, ConversationEvent, MESSAGES_MAX, Speaker,
    Turn,
};
use domain::{EventMetadata, ExpectedVersion, StreamId};
use uuid::Uuid;

use crate::support::{TestEnv, wait_until};

fn metadata() -> EventMetadata {
    EventMetadata::new("user:test", time::OffsetDateTime::now_utc())
}

/// The agent's `n`th event (from 1): registered, then unresponsive, recovered and restarted
/// in turn, so that its state keeps changing.
fn agent_event(n: u64) -> AgentEvent {
    let at_ms = 1_700_000_000_000 + n as i64;
    match n % 3 {
        _ if n == 1 => AgentEvent::AgentRegistered {
            registration: Registration {
                name: "long-lived".into(),
                kind: "coder".into(),
                capabilities: vec!["rust".into()],
                version: "1.0.0".into(),
                owner: "team".into(),
                labels: BTreeMap::from([("zone".into(), "eu".into())]),
                key_id: None,
            },
            at_ms,
        },
        2 => AgentEvent::AgentUnresponsive { last_seen_ms: at_ms - 10_000, at_ms },
        0 => AgentEvent::AgentRecovered { at_ms },
        _ => AgentEvent::AgentRestarted { reason: format!("restart {n}"), at_ms },
    }
}

/// Appends the agent's events `from..=to` straight to the store, in appends of up to 1,000.
async fn append_agent(store: &EventStore, id: &StreamId, from: u64, to: u64) {
    let mut next = from;
    while next <= to {
        let last = to.min(next + 999);
        let events = (next..=last).map(|n| command::new_event(&agent_event(n))).collect();
        store
            .append(Append {
                stream_type: Agent::stream_type(),
                stream_id: id.clone(),
                expected: ExpectedVersion::Exact(next - 1),
                events,
                metadata: metadata(),
            })
            .await
            .expect("appended");
        next = last + 1;
    }
}

async fn agent_with(store: &EventStore, events: u64) -> StreamId {
    let id = StreamId::from(Uuid::now_v7());
    append_agent(store, &id, 1, events).await;
    id
}

/// The version of the stream's stored snapshot and its snapshot version, if any.
async fn stored(env: &TestEnv, id: &StreamId) -> Option<(i64, i32)> {
    sqlx::query_as("SELECT version, snapshot_version FROM snapshots WHERE stream_id = $1")
        .bind(id.as_str())
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

async fn wait_for_snapshot(env: &TestEnv, id: &StreamId, version: i64) {
    wait_until(&format!("a snapshot at version {version}"), Duration::from_secs(10), || async {
        stored(env, id).await == Some((version, 1))
    })
    .await;
}

async fn verify(env: &TestEnv) -> Report {
    let verifier = Verifier {
        pool: env.pool.clone(),
        namespace: env.namespace.clone(),
        jetstream: Err("not checked here".into()),
        models: Vec::new(),
    };
    let options = Options { only: Some(vec!["snapshots".into()]), sample: None };
    verifier.run(&options, &|_| {}).await.expect("verify runs")
}

async fn assert_loads_equal(store: &EventStore, id: &StreamId, version: u64) -> Agent {
    let (through, at) = load::<Agent>(store, id).await.unwrap();
    let (whole, whole_at) = load_whole::<Agent>(store, id).await.unwrap();
    assert_eq!((at, whole_at), (version, version));
    assert_eq!(through, whole);
    through
}

#[tokio::test]
async fn a_load_through_a_snapshot_equals_a_whole_fold_and_verify_names_an_edited_one() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = agent_with(&store, 250).await;

    // A load that folds past `every` events leaves a snapshot of what it found.
    assert_eq!(stored(&env, &id).await, None);
    let agent = assert_loads_equal(&store, &id, 250).await;
    assert_eq!((agent.state, agent.restarts), (AgentState::Active, 83));
    wait_for_snapshot(&env, &id, 250).await;

    // Commands crossing a multiple of `every` leave one at their own version.
    for n in 0..75 {
        let now_ms = 1_800_000_000_000 + n * 10;
        let silent = move || AgentCommand::MarkUnresponsive {
            last_seen_ms: now_ms - 5_000,
            silent_after_ms: 1_000,
            now_ms,
        };
        execute::<Agent>(&store, &id, metadata(), silent).await.unwrap();
        let heartbeat = move || AgentCommand::Heartbeat { now_ms: now_ms + 1 };
        execute::<Agent>(&store, &id, metadata(), heartbeat).await.unwrap();
    }
    wait_for_snapshot(&env, &id, 400).await;
    let agent = assert_loads_equal(&store, &id, 400).await;

    // A view's load takes the state through the snapshot and only the history it shows.
    let (viewed, recent) = load_with_recent_events::<Agent>(&store, &id, 50).await.unwrap();
    assert_eq!(viewed, agent);
    let versions: Vec<u64> = recent.iter().map(|event| event.version).collect();
    assert_eq!(versions, (351..=400).collect::<Vec<_>>());
    let report = verify(&env).await;
    assert_eq!(report.exit_code(), 0, "{report:#?}");
    assert_eq!(report.checks[0].checked, 1, "{report:#?}");

    // An edited snapshot is what loads start from, and verify names it.
    sqlx::query("UPDATE snapshots SET state = jsonb_set(state, '{restarts}', '777')")
        .execute(&env.pool)
        .await
        .unwrap();
    let (edited, _) = load::<Agent>(&store, &id).await.unwrap();
    assert_eq!(edited.restarts, 777, "the load started from the snapshot");
    let report = verify(&env).await;
    assert_eq!(report.exit_code(), 1, "{report:#?}");
    let check = &report.checks[0];
    assert_eq!(check.findings.len(), 1, "{check:#?}");
    assert_eq!(check.findings[0].key, format!("snapshot agent/{id} version 400"));
    assert_eq!(check.findings[0].detail, "restarts: snapshot 777, log 83");

    // Emptied, the table changes nothing but speed: verify is clean and loads are right.
    sqlx::query("DELETE FROM snapshots").execute(&env.pool).await.unwrap();
    let report = verify(&env).await;
    assert_eq!((report.exit_code(), report.checks[0].checked), (0, 0), "{report:#?}");
    assert_eq!(assert_loads_equal(&store, &id, 400).await.restarts, 83);
}

#[tokio::test]
async fn a_snapshot_of_another_version_or_event_or_shape_is_ignored_and_replaced() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = agent_with(&store, 250).await;
    assert_eq!(snapshot::take::<Agent>(&store, &id).await.unwrap(), Some(250));
    assert_eq!(stored(&env, &id).await, Some((250, 1)));
    let (whole, _) = load_whole::<Agent>(&store, &id).await.unwrap();

    // Another snapshot version, with a state the code could not read: never loaded, and
    // replaced by the load that had to fold the whole stream.
    sqlx::query("UPDATE snapshots SET snapshot_version = 99, state = '{\"old\": true}'")
        .execute(&env.pool)
        .await
        .unwrap();
    let report = verify(&env).await;
    assert_eq!(report.exit_code(), 0, "{report:#?}");
    assert!(report.checks[0].detail.contains("1 of another snapshot version"), "{report:#?}");
    assert_loads_equal(&store, &id, 250).await;
    wait_for_snapshot(&env, &id, 250).await;

    // The right version, a state that does not decode: found by verify, ignored by a load
    // and replaced.
    sqlx::query("UPDATE snapshots SET state = '{\"old\": true}'").execute(&env.pool).await.unwrap();
    let report = verify(&env).await;
    assert_eq!(report.exit_code(), 1, "{report:#?}");
    assert_eq!(report.checks[0].findings[0].detail, "old: snapshot true, log absent");
    assert_eq!(load::<Agent>(&store, &id).await.unwrap(), (whole.clone(), 250));
    wait_until("the unreadable snapshot replaced", Duration::from_secs(10), || async {
        verify(&env).await.exit_code() == 0
    })
    .await;

    // A snapshot naming an event the log does not hold at its version: found, ignored by a
    // load and replaced.
    sqlx::query("UPDATE snapshots SET event_id = $1, state = jsonb_set(state, '{restarts}', '5')")
        .bind(Uuid::now_v7())
        .execute(&env.pool)
        .await
        .unwrap();
    let report = verify(&env).await;
    let finding = &report.checks[0].findings[0];
    assert!(finding.detail.contains("which the log does not hold there"), "{finding:?}");
    assert_eq!(load::<Agent>(&store, &id).await.unwrap(), (whole, 250));
    wait_until("the mismatched snapshot replaced", Duration::from_secs(10), || async {
        verify(&env).await.exit_code() == 0
    })
    .await;
}

#[tokio::test]
async fn the_command_handler_detects_conflicts_with_a_snapshot() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = agent_with(&store, 250).await;
    snapshot::take::<Agent>(&store, &id).await.unwrap();
    let (seen, version) = load::<Agent>(&store, &id).await.unwrap();
    assert_eq!(version, 250);

    // Another writer appends after the snapshot: loads see it, stale versions conflict.
    append_agent(&store, &id, 251, 252).await;
    assert_loads_equal(&store, &id, 252).await;
    let control = AgentCommand::RequestControl {
        action: domain::agent::ControlAction::Stop,
        by: "user:ann".into(),
        reason: "maintenance".into(),
        now_ms: 1_900_000_000_000,
    };
    let stale = execute_at::<Agent>(&store, &id, metadata(), 250, control.clone()).await;
    assert!(
        matches!(
            stale,
            Err(CommandError::Append(AppendError::Conflict { expected: 250, actual: 252, .. }))
        ),
        "{stale:?}"
    );
    let append = Append {
        stream_type: Agent::stream_type(),
        stream_id: id.clone(),
        expected: ExpectedVersion::Exact(250),
        events: vec![command::new_event(&agent_event(251))],
        metadata: metadata(),
    };
    assert!(matches!(store.append(append).await, Err(AppendError::Conflict { .. })));

    // Decided first against the stale state, the command conflicts, reloads through the
    // snapshot and is decided again against the stream as it is.
    let executed =
        execute_new::<Agent>(&store, &id, metadata(), Some((seen, 250)), || control.clone())
            .await
            .unwrap();
    assert_eq!((executed.version, executed.state.state), (254, AgentState::Stopped));
    assert_eq!(assert_loads_equal(&store, &id, 254).await, executed.state);
}

#[tokio::test]
async fn time_travel_before_a_snapshot_folds_the_log_up_to_that_moment() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = agent_with(&store, 250).await;
    snapshot::take::<Agent>(&store, &id).await.unwrap();
    let events = store.load_stream(&Agent::stream_type(), &id, None).await.unwrap();
    let fiftieth = &events[49];
    let (then, seen) =
        load_as_of::<Agent>(&store, &id, AsOf::Position(fiftieth.global_position)).await.unwrap();
    let expected = Agent::fold(&(1..=50).map(agent_event).collect::<Vec<_>>());
    assert_eq!(then, expected);
    assert_eq!(seen.last().map(|event| event.version), Some(50));
    assert_ne!(then, load::<Agent>(&store, &id).await.unwrap().0);
}

#[tokio::test]
async fn a_conversation_at_its_bound_loads_through_its_snapshot_and_stays_full() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = StreamId::from(Uuid::now_v7());
    let turn = |n: usize| Turn {
        speaker: if n.is_multiple_of(2) { Speaker::User } else { Speaker::Agent },
        text: format!("message {n}"),
        provider: None,
        model: None,
        input_tokens: n as u64,
        output_tokens: 0,
        at_ms: n as i64,
    };
    let mut events = vec![ConversationEvent::ConversationStarted {
        agent: "coder".into(),
        by: "user:ann".into(),
        at_ms: 0,
    }];
    events.extend(
        (0..MESSAGES_MAX).map(|n| ConversationEvent::ConversationMessageAdded { turn: turn(n) }),
    );
    for (i, chunk) in events.chunks(500).enumerate() {
        let append = Append {
            stream_type: Conversation::stream_type(),
            stream_id: id.clone(),
            expected: ExpectedVersion::Exact(i as u64 * 500),
            events: chunk.iter().map(command::new_event).collect(),
            metadata: metadata(),
        };
        store.append(append).await.unwrap();
    }
    let (first, version) = load::<Conversation>(&store, &id).await.unwrap();
    assert_eq!((first.turns.len(), version), (MESSAGES_MAX, 1_001));
    wait_for_snapshot(&env, &id, 1_001).await;
    let (through, _) = load::<Conversation>(&store, &id).await.unwrap();
    assert_eq!(through, load_whole::<Conversation>(&store, &id).await.unwrap().0);
    assert_eq!(through, first);
    let add =
        || ConversationCommand::Add { agent: "coder".into(), by: "ann".into(), turn: turn(0) };
    let full = execute::<Conversation>(&store, &id, metadata(), add).await;
    assert!(matches!(full, Err(CommandError::Rejected(ConversationError::Full))), "{full:?}");
    assert_eq!(verify(&env).await.exit_code(), 0);
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_written_never_fails_a_command() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let id = agent_with(&store, 99).await;
    // Every snapshot write is refused from now on.
    sqlx::query("ALTER TABLE snapshots ADD CONSTRAINT refuse_all CHECK (version < 0) NOT VALID")
        .execute(&env.pool)
        .await
        .unwrap();
    assert!(snapshot::take::<Agent>(&store, &id).await.is_err());

    // Commands crossing a multiple of `every` (and loads folding past it) still succeed.
    for n in 0..3 {
        let now_ms = 1_800_000_000_000 + n * 10;
        let silent = move || AgentCommand::MarkUnresponsive {
            last_seen_ms: now_ms - 5_000,
            silent_after_ms: 1_000,
            now_ms,
        };
        let executed = execute::<Agent>(&store, &id, metadata(), silent).await.unwrap();
        assert_eq!(executed.state.state, AgentState::Unresponsive);
        let heartbeat = move || AgentCommand::Heartbeat { now_ms: now_ms + 1 };
        execute::<Agent>(&store, &id, metadata(), heartbeat).await.unwrap();
    }
    assert_loads_equal(&store, &id, 105).await;
    assert_eq!(stored(&env, &id).await, None);
}
