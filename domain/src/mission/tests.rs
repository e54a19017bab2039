//! Mission behaviour as given/when/then over events.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::aggregate::DomainEvent;

pub(super) fn spec() -> MissionSpec {
    MissionSpec {
        name: "refactor the parser".into(),
        description: String::new(),
        priority: Priority::Normal,
        payload: json!({ "repo": "brain" }),
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

pub(super) fn enqueued() -> MissionEvent {
    MissionEvent::MissionEnqueued { spec: spec(), due_at_ms: 1_000, at_ms: 1_000 }
}

pub(super) fn started(worker: &str, attempt: u32, at_ms: i64) -> MissionEvent {
    MissionEvent::MissionStarted {
        worker_id: worker.into(),
        attempt,
        lease_ms: 30_000,
        lease_expires_at_ms: at_ms + 30_000,
        at_ms,
    }
}

pub(super) fn failed(attempt: u32, retry_at_ms: Option<i64>, at_ms: i64) -> MissionEvent {
    MissionEvent::MissionAttemptFailed { attempt, error: "boom".into(), retry_at_ms, at_ms }
}

/// Given these past events, when this command is decided, then expect exactly this.
fn check(given: &[MissionEvent], when: MissionCommand, then: Decision) {
    assert_eq!(Mission::fold(given).decide(when), then);
}

fn fail(worker: &str, attempt: u32, retryable: bool, now_ms: i64) -> MissionCommand {
    MissionCommand::Fail {
        worker_id: worker.into(),
        attempt,
        error: "boom".into(),
        retryable,
        backoff_ms: 500,
        now_ms,
    }
}

#[test]
fn enqueueing_a_new_mission_queues_it_at_once() {
    let then = MissionEvent::MissionEnqueued { spec: spec(), due_at_ms: 1_000, at_ms: 1_000 };
    check(&[], MissionCommand::Enqueue { spec: spec(), now_ms: 1_000 }, Ok(vec![then]));
    assert_eq!(Mission::fold(&[enqueued()]).status, MissionStatus::Queued);
}

#[test]
fn a_mission_not_before_a_later_time_waits_pending_until_it_is_due() {
    let later = MissionSpec { not_before_ms: Some(5_000), ..spec() };
    let given = [MissionEvent::MissionEnqueued { spec: later, due_at_ms: 5_000, at_ms: 1_000 }];
    assert_eq!(Mission::fold(&given).status, MissionStatus::Pending);
    check(
        &given,
        MissionCommand::MarkDue { now_ms: 4_999 },
        Err(MissionError::NotDue { due_at_ms: 5_000 }),
    );
    check(
        &given,
        MissionCommand::MarkDue { now_ms: 5_000 },
        Ok(vec![MissionEvent::MissionRetryDue { at_ms: 5_000 }]),
    );
}

#[test]
fn a_due_pending_mission_can_be_started_directly_and_records_that_it_became_due() {
    let given = [enqueued(), started("w1", 1, 2_000), failed(1, Some(3_500), 3_000)];
    let start = |now_ms| MissionCommand::Start { worker_id: "w2".into(), lease_ms: 30_000, now_ms };
    check(&given, start(3_499), Err(MissionError::NotQueued { status: MissionStatus::Pending }));
    let then = vec![MissionEvent::MissionRetryDue { at_ms: 3_500 }, started("w2", 2, 3_500)];
    check(&given, start(3_500), Ok(then.clone()));
    let mission = Mission::fold(&[given.as_slice(), then.as_slice()].concat());
    assert_eq!((mission.status, mission.attempt), (MissionStatus::Running, 2));
    assert_eq!(mission.worker_id.as_deref(), Some("w2"));
}

#[test]
fn a_released_mission_is_queued_again_without_counting_the_attempt() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let release = |worker: &str| MissionCommand::Release {
        worker_id: worker.into(),
        attempt: 1,
        reason: "shutting down".into(),
        now_ms: 3_000,
    };
    check(
        &given,
        release("w2"),
        Err(MissionError::HeldByAnother { holder: "w1".into(), worker_id: "w2".into() }),
    );
    let released = MissionEvent::MissionReleased {
        attempt: 1,
        worker_id: "w1".into(),
        reason: "shutting down".into(),
        at_ms: 3_000,
    };
    check(&given, release("w1"), Ok(vec![released.clone()]));
    let mission = Mission::fold(&[enqueued(), started("w1", 1, 2_000), released]);
    assert_eq!((mission.status, mission.attempt), (MissionStatus::Queued, 0));
    assert_eq!(mission.worker_id, None);
    let start = MissionCommand::Start { worker_id: "w2".into(), lease_ms: 30_000, now_ms: 4_000 };
    assert_eq!(mission.decide(start), Ok(vec![started("w2", 1, 4_000)]));
}

#[test]
fn enqueue_refuses_bad_specs_naming_the_field() {
    let cases = [
        (MissionSpec { name: "  ".into(), ..spec() }, "name"),
        (MissionSpec { name: "x".repeat(NAME_LEN_MAX + 1), ..spec() }, "name"),
        (MissionSpec { payload: json!([1, 2]), ..spec() }, "payload"),
        (MissionSpec { agent: "Coder!".into(), ..spec() }, "agent"),
        (MissionSpec { attempt_max: 0, ..spec() }, "max_attempts"),
        (MissionSpec { attempt_max: ATTEMPT_MAX_LIMIT + 1, ..spec() }, "max_attempts"),
        (MissionSpec { timeout_ms: 0, ..spec() }, "timeout_s"),
    ];
    for (bad, field) in cases {
        match Mission::default().decide(MissionCommand::Enqueue { spec: bad.clone(), now_ms: 0 }) {
            Err(MissionError::Invalid { field: got, .. }) => assert_eq!(got, field, "{bad:?}"),
            other => panic!("{bad:?}: expected a refusal naming {field}, got {other:?}"),
        }
    }
}

#[test]
fn a_mission_cannot_be_enqueued_twice_nor_commanded_before_it_exists() {
    check(
        &[enqueued()],
        MissionCommand::Enqueue { spec: spec(), now_ms: 2 },
        Err(MissionError::AlreadyExists),
    );
    let start = MissionCommand::Start { worker_id: "w1".into(), lease_ms: 1, now_ms: 1 };
    check(&[], start, Err(MissionError::NotFound));
}

#[test]
fn starting_a_queued_mission_begins_attempt_one_with_a_lease() {
    let when = MissionCommand::Start { worker_id: "w1".into(), lease_ms: 30_000, now_ms: 2_000 };
    check(&[enqueued()], when, Ok(vec![started("w1", 1, 2_000)]));
}

#[test]
fn a_running_mission_cannot_be_started_again() {
    let when = MissionCommand::Start { worker_id: "w2".into(), lease_ms: 30_000, now_ms: 3_000 };
    let then = Err(MissionError::NotQueued { status: MissionStatus::Running });
    check(&[enqueued(), started("w1", 1, 2_000)], when, then);
}

#[test]
fn only_the_worker_holding_the_current_attempt_may_report_on_it() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let complete = |worker: &str, attempt| MissionCommand::Complete {
        worker_id: worker.into(),
        attempt,
        result: json!({}),
        now_ms: 3_000,
    };
    let other = Err(MissionError::HeldByAnother { holder: "w1".into(), worker_id: "w2".into() });
    check(&given, complete("w2", 1), other);
    check(&given, complete("w1", 2), Err(MissionError::StaleAttempt { current: 1, got: 2 }));
    let then = MissionEvent::MissionCompleted { attempt: 1, result: json!({}), at_ms: 3_000 };
    check(&given, complete("w1", 1), Ok(vec![then]));
}

#[test]
fn progress_extends_the_lease() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let when = MissionCommand::Progress {
        worker_id: "w1".into(),
        attempt: 1,
        lease_ms: 30_000,
        note: Some("halfway".into()),
        now_ms: 20_000,
    };
    let then = MissionEvent::MissionProgressed {
        attempt: 1,
        lease_expires_at_ms: 50_000,
        note: Some("halfway".into()),
        at_ms: 20_000,
    };
    check(&given, when, Ok(vec![then.clone()]));
    let mission = Mission::fold(&[enqueued(), started("w1", 1, 2_000), then]);
    assert_eq!(mission.lease_expires_at_ms, Some(50_000));
}

#[test]
fn a_failed_attempt_schedules_a_retry_after_the_backoff_while_attempts_remain() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    check(&given, fail("w1", 1, true, 3_000), Ok(vec![failed(1, Some(3_500), 3_000)]));
    let mission =
        Mission::fold(&[enqueued(), started("w1", 1, 2_000), failed(1, Some(3_500), 3_000)]);
    assert_eq!((mission.status, mission.due_at_ms), (MissionStatus::Pending, Some(3_500)));
}

#[test]
fn an_error_that_is_not_retryable_fails_the_mission_at_once() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    check(&given, fail("w1", 1, false, 3_000), Ok(vec![failed(1, None, 3_000)]));
}

#[test]
fn failing_twice_then_succeeding_shows_three_attempts_and_two_backoffs() {
    let history = [
        enqueued(),
        started("w1", 1, 2_000),
        failed(1, Some(3_500), 3_000),
        MissionEvent::MissionRetryDue { at_ms: 3_500 },
        started("w2", 2, 4_000),
        failed(2, Some(6_000), 5_000),
        MissionEvent::MissionRetryDue { at_ms: 6_000 },
        started("w1", 3, 7_000),
        MissionEvent::MissionCompleted { attempt: 3, result: json!({ "ok": true }), at_ms: 8_000 },
    ];
    let mission = Mission::fold(&history);
    assert_eq!((mission.status, mission.attempt), (MissionStatus::Completed, 3));
    assert_eq!(mission.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn the_last_allowed_attempt_failing_ends_the_mission_failed_with_every_error() {
    let given = [
        enqueued(),
        started("w1", 1, 2_000),
        failed(1, Some(3_500), 3_000),
        MissionEvent::MissionRetryDue { at_ms: 3_500 },
        started("w1", 2, 4_000),
        failed(2, Some(6_000), 5_000),
        MissionEvent::MissionRetryDue { at_ms: 6_000 },
        started("w1", 3, 7_000),
    ];
    check(&given, fail("w1", 3, true, 8_000), Ok(vec![failed(3, None, 8_000)]));
    let mut history = given.to_vec();
    history.push(failed(3, None, 8_000));
    let mission = Mission::fold(&history);
    assert_eq!((mission.status, mission.errors.len()), (MissionStatus::Failed, 3));
}

#[test]
fn an_expired_lease_puts_the_mission_back_and_a_live_one_cannot_be_expired() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let early = MissionCommand::ExpireLease { backoff_ms: 0, now_ms: 31_999 };
    check(&given, early, Err(MissionError::LeaseNotExpired { lease_expires_at_ms: 32_000 }));
    let then = MissionEvent::MissionLeaseExpired {
        attempt: 1,
        worker_id: "w1".into(),
        retry_at_ms: Some(32_000),
        at_ms: 32_000,
    };
    check(
        &given,
        MissionCommand::ExpireLease { backoff_ms: 0, now_ms: 32_000 },
        Ok(vec![then.clone()]),
    );
    let mission = Mission::fold(&[enqueued(), started("w1", 1, 2_000), then]);
    assert_eq!((mission.status, mission.worker_id), (MissionStatus::Pending, None));
}

#[test]
fn a_lease_is_revoked_only_from_its_holder_and_before_it_runs_out() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let revoke = |worker: &str| MissionCommand::RevokeLease {
        worker_id: worker.into(),
        backoff_ms: 0,
        now_ms: 5_000,
    };
    check(
        &given,
        revoke("w2"),
        Err(MissionError::HeldByAnother { holder: "w1".into(), worker_id: "w2".into() }),
    );
    let then = MissionEvent::MissionLeaseExpired {
        attempt: 1,
        worker_id: "w1".into(),
        retry_at_ms: Some(5_000),
        at_ms: 5_000,
    };
    check(&given, revoke("w1"), Ok(vec![then.clone()]));
    check(
        &[enqueued(), started("w1", 1, 2_000), then],
        revoke("w1"),
        Err(MissionError::NotRunning { status: MissionStatus::Pending }),
    );
}

#[test]
fn an_llm_call_is_recorded_only_for_the_current_holder() {
    let call = LlmCall {
        route: "default".into(),
        kind: "coder".into(),
        provider: "offline".into(),
        model: "offline".into(),
        tries: 1,
        request: serde_json::Value::Null,
        response: serde_json::Value::Null,
        input_tokens: 3,
        output_tokens: 5,
        cost_usd: 0.0,
        latency_ms: 1,
        outcome: "ok".into(),
        replayed: false,
        usage_estimate: None,
    };
    let given = [enqueued(), started("w1", 1, 2_000)];
    let record = |worker: &str, attempt| MissionCommand::RecordLlmCall {
        worker_id: worker.into(),
        attempt,
        call: call.clone(),
        now_ms: 3_000,
    };
    let recorded = MissionEvent::MissionLlmCalled { attempt: 1, call: call.clone(), at_ms: 3_000 };
    check(&given, record("w1", 1), Ok(vec![recorded.clone()]));
    check(&given, record("w1", 2), Err(MissionError::StaleAttempt { current: 1, got: 2 }));
    let mut history = given.to_vec();
    history.push(recorded);
    assert_eq!(Mission::fold(&history).status, MissionStatus::Running, "a call changes no status");
}

#[test]
fn a_late_report_from_a_worker_whose_lease_expired_is_refused() {
    let expired = MissionEvent::MissionLeaseExpired {
        attempt: 1,
        worker_id: "w1".into(),
        retry_at_ms: Some(32_000),
        at_ms: 32_000,
    };
    let given = [enqueued(), started("w1", 1, 2_000), expired];
    let late = MissionCommand::Complete {
        worker_id: "w1".into(),
        attempt: 1,
        result: json!({}),
        now_ms: 33_000,
    };
    check(&given, late, Err(MissionError::NotRunning { status: MissionStatus::Pending }));
}

#[test]
fn cancelling_works_until_the_mission_has_finished() {
    let cancel =
        || MissionCommand::Cancel { reason: "superseded".into(), by: "user:a".into(), now_ms: 9 };
    let then = MissionEvent::MissionCancelled {
        reason: "superseded".into(),
        by: "user:a".into(),
        at_ms: 9,
    };
    check(&[enqueued()], cancel(), Ok(vec![then.clone()]));
    check(&[enqueued(), started("w1", 1, 2)], cancel(), Ok(vec![then.clone()]));
    let done = Err(MissionError::AlreadyFinished { status: MissionStatus::Cancelled });
    check(&[enqueued(), then], cancel(), done);
}

#[test]
fn a_cancelled_mission_cannot_be_started() {
    let cancelled = MissionEvent::MissionCancelled { reason: "r".into(), by: "u".into(), at_ms: 2 };
    let when = MissionCommand::Start { worker_id: "w1".into(), lease_ms: 1, now_ms: 3 };
    check(
        &[enqueued(), cancelled],
        when,
        Err(MissionError::NotQueued { status: MissionStatus::Cancelled }),
    );
}

#[test]
fn only_a_finished_mission_is_copied_and_the_copy_leaves_it_as_it_was() {
    let copy = || MissionCommand::RecordCopy {
        copy_id: "c1".into(),
        reason: "again".into(),
        by: "u".into(),
        now_ms: 9,
    };
    check(&[enqueued()], copy(), Err(MissionError::NotFinished { status: MissionStatus::Queued }));
    check(&[], copy(), Err(MissionError::NotFound));
    let cancelled = MissionEvent::MissionCancelled { reason: "r".into(), by: "u".into(), at_ms: 2 };
    let copied = MissionEvent::MissionCopied {
        copy_id: "c1".into(),
        reason: "again".into(),
        by: "u".into(),
        at_ms: 9,
    };
    check(&[enqueued(), cancelled.clone()], copy(), Ok(vec![copied.clone()]));
    assert_eq!(Mission::fold(&[enqueued(), cancelled, copied]).status, MissionStatus::Cancelled);
}

#[test]
fn only_a_failed_mission_can_be_retried_and_it_starts_counting_afresh() {
    check(
        &[enqueued()],
        MissionCommand::Retry { by: "u".into(), reason: String::new(), now_ms: 5 },
        Err(MissionError::NotFailed { status: MissionStatus::Queued }),
    );
    let given = [enqueued(), started("w1", 1, 2), failed(1, None, 3)];
    let retried = MissionEvent::MissionRetried { by: "u".into(), reason: String::new(), at_ms: 5 };
    check(
        &given,
        MissionCommand::Retry { by: "u".into(), reason: String::new(), now_ms: 5 },
        Ok(vec![retried.clone()]),
    );
    let mut history = given.to_vec();
    history.push(retried);
    let mission = Mission::fold(&history);
    assert_eq!((mission.status, mission.attempt), (MissionStatus::Queued, 0));
    assert_eq!(mission.errors.len(), 1, "the failed attempt stays in the history");

    // Its next failure is attempt 1 again, of run 2: the two errors read apart.
    history.extend([started("w1", 1, 6), failed(1, None, 7)]);
    let mission = Mission::fold(&history);
    let runs: Vec<(u32, u32)> = mission.errors.iter().map(|e| (e.run, e.attempt)).collect();
    assert_eq!(runs, [(1, 1), (2, 1)]);
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let events = [enqueued(), started("w1", 1, 2), failed(1, Some(9), 3)];
    for event in events {
        let back =
            MissionEvent::upcast(event.event_type(), event.schema_version(), event.payload())
                .unwrap();
        assert_eq!(back, event);
    }
}

/// Any command a caller may send, with small values so that sequences hit real states.
fn any_command() -> impl Strategy<Value = MissionCommand> {
    let worker = prop_oneof![Just("w1".to_owned()), Just("w2".to_owned())];
    let now = 0i64..100;
    prop_oneof![
        now.clone().prop_map(|now_ms| MissionCommand::Enqueue { spec: spec(), now_ms }),
        (worker.clone(), now.clone()).prop_map(|(worker_id, now_ms)| MissionCommand::Start {
            worker_id,
            lease_ms: 10,
            now_ms
        }),
        (worker.clone(), 0u32..5, now.clone()).prop_map(|(worker_id, attempt, now_ms)| {
            MissionCommand::Complete { worker_id, attempt, result: json!(1), now_ms }
        }),
        (worker.clone(), 0u32..5, any::<bool>(), now.clone()).prop_map(
            |(worker_id, attempt, retryable, now_ms)| {
                MissionCommand::Fail {
                    worker_id,
                    attempt,
                    error: "e".into(),
                    retryable,
                    backoff_ms: 3,
                    now_ms,
                }
            }
        ),
        (worker.clone(), 0u32..5, now.clone()).prop_map(|(worker_id, attempt, now_ms)| {
            MissionCommand::Release { worker_id, attempt, reason: "r".into(), now_ms }
        }),
        now.clone().prop_map(|now_ms| MissionCommand::MarkDue { now_ms }),
        now.clone().prop_map(|now_ms| MissionCommand::ExpireLease { backoff_ms: 3, now_ms }),
        (worker.clone(), now.clone()).prop_map(|(worker_id, now_ms)| {
            MissionCommand::RevokeLease { worker_id, backoff_ms: 3, now_ms }
        }),
        now.clone().prop_map(|now_ms| MissionCommand::Cancel {
            reason: "r".into(),
            by: "u".into(),
            now_ms
        }),
        (worker.clone(), 0u32..5, now.clone()).prop_map(|(worker_id, attempt, now_ms)| {
            MissionCommand::Suspend {
                worker_id,
                attempt,
                step: 1,
                call_id: "c".into(),
                children: vec!["a".into(), "b".into()],
                now_ms,
            }
        }),
        (prop_oneof![Just("a"), Just("b"), Just("z")], now.clone()).prop_map(|(child, now_ms)| {
            MissionCommand::ReportChildren {
                outcomes: vec![ChildOutcome {
                    mission_id: child.into(),
                    status: MissionStatus::Completed,
                    result: Some(json!(1)),
                    error: None,
                }],
                now_ms,
            }
        }),
        now.clone().prop_map(|now_ms| MissionCommand::Retry {
            by: "u".into(),
            reason: String::new(),
            now_ms
        }),
        now.prop_map(|now_ms| MissionCommand::RecordCopy {
            copy_id: "c".into(),
            reason: "r".into(),
            by: "u".into(),
            now_ms
        }),
    ]
}

proptest! {
    /// Whatever commands arrive, accepted ones never break the aggregate's invariants
    /// (`apply` asserts them), at most one worker holds the mission, attempts never pass
    /// the maximum, and a finished mission accepts nothing but a retry of a failure and the
    /// record of a copy (which leaves it as it was).
    #[test]
    fn any_command_sequence_keeps_the_invariants(commands in proptest::collection::vec(any_command(), 1..60)) {
        let mut mission = Mission::default();
        for command in commands {
            let before = mission.status;
            let is_retry = matches!(command, MissionCommand::Retry { .. });
            let is_copy = matches!(command, MissionCommand::RecordCopy { .. });
            if let Ok(events) = mission.decide(command) {
                prop_assert!(events.is_empty() || !before.is_finished() || is_copy || (is_retry && before == MissionStatus::Failed));
                prop_assert!(!is_copy || before.is_finished(), "only a finished mission is copied");
                for event in &events {
                    mission.apply(event);
                }
            }
            prop_assert!(mission.attempt <= ATTEMPT_MAX_DEFAULT);
            prop_assert_eq!(mission.worker_id.is_some(), mission.status == MissionStatus::Running);
            prop_assert_eq!(!mission.waiting.is_empty(), mission.status == MissionStatus::Suspended);
        }
    }
}

#[test]
fn a_holder_whose_lease_ran_out_cannot_renew_complete_or_fail_even_before_it_is_expired() {
    // Given a mission started at 1 s with a lease until 31 s, not yet expired by anyone.
    let given = [enqueued(), started("w1", 1, 1_000)];
    let expired = Err(MissionError::LeaseExpired { lease_expires_at_ms: 31_000 });
    // When its holder reports at or after 31 s, then it is fenced off.
    let renew = |now_ms| MissionCommand::Progress {
        worker_id: "w1".into(),
        attempt: 1,
        lease_ms: 30_000,
        note: None,
        now_ms,
    };
    check(&given, renew(31_000), expired.clone());
    let complete = MissionCommand::Complete {
        worker_id: "w1".into(),
        attempt: 1,
        result: json!(1),
        now_ms: 45_000,
    };
    check(&given, complete, expired.clone());
    check(&given, fail("w1", 1, true, 31_000), expired);
    // And just before, the same renewal is accepted.
    let then = MissionEvent::MissionProgressed {
        attempt: 1,
        lease_expires_at_ms: 60_999,
        note: None,
        at_ms: 30_999,
    };
    check(&given, renew(30_999), Ok(vec![then]));
}

#[test]
fn a_call_recorded_before_usage_estimates_reads_as_the_providers_count() {
    // A `MissionLlmCalled` call as written before estimates existed: no `usage_estimate`.
    let old = json!({ "route": "default", "kind": "coder", "provider": "openai", "model": "m",
        "tries": 1, "request": null, "response": null, "input_tokens": 11, "output_tokens": 7,
        "cost_usd": 0.0, "latency_ms": 5, "outcome": "ok" });
    let call: LlmCall = serde_json::from_value(old.clone()).unwrap();
    assert_eq!((call.input_tokens, call.usage_estimate), (11, None));
    assert_eq!(serde_json::to_value(&call).unwrap(), old, "nothing added when not estimated");

    let estimate =
        UsageEstimate { input: true, output: false, method: EstimateMethod::ThreeBytesPerToken };
    let estimated = LlmCall { usage_estimate: Some(estimate), ..call };
    let written = serde_json::to_value(&estimated).unwrap();
    assert_eq!(
        written["usage_estimate"],
        json!({ "input": true, "output": false, "method": "three_bytes_per_token" })
    );
    assert_eq!(serde_json::from_value::<LlmCall>(written).unwrap(), estimated);
    // A method a newer version wrote still reads.
    let newer = json!({ "input": true, "output": true, "method": "some_tokenizer" });
    let read: UsageEstimate = serde_json::from_value(newer).unwrap();
    assert_eq!(read.method, EstimateMethod::Other);
}
