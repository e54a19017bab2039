//! Suspension, child reports and resumption as given/when/then over events.

use serde_json::json;

use super::tests::{enqueued, failed, started};
use super::*;

fn suspend(children: &[&str], now_ms: i64) -> MissionCommand {
    MissionCommand::Suspend {
        worker_id: "w1".into(),
        attempt: 1,
        step: 2,
        call_id: "call-1".into(),
        children: children.iter().map(|child| (*child).to_owned()).collect(),
        now_ms,
    }
}

fn child_ended(child: &str, status: MissionStatus) -> ChildOutcome {
    ChildOutcome { mission_id: child.into(), status, result: Some(json!(child)), error: None }
}

#[test]
fn a_suspended_mission_holds_nothing_and_its_last_childs_report_resumes_it_under_the_same_attempt()
{
    let mut mission = Mission::default();
    for event in [enqueued(), started("w1", 1, 2_000)] {
        mission.apply(&event);
    }
    let events = mission.decide(suspend(&["a", "b"], 3_000)).unwrap();
    for event in &events {
        mission.apply(event);
    }
    assert_eq!(mission.status, MissionStatus::Suspended);
    assert_eq!((mission.worker_id.as_ref(), mission.lease_expires_at_ms), (None, None));
    assert_eq!(mission.attempt, 0, "the suspended attempt is not counted");
    // A child it does not wait for changes nothing; the first of two is only noted.
    assert_eq!(
        mission.decide(MissionCommand::ReportChildren {
            outcomes: vec![child_ended("z", MissionStatus::Completed)],
            now_ms: 4_000
        }),
        Ok(vec![])
    );
    let first = MissionCommand::ReportChildren {
        outcomes: vec![child_ended("a", MissionStatus::Failed)],
        now_ms: 4_000,
    };
    let noted = mission.decide(first.clone()).unwrap();
    assert_eq!(noted.len(), 1);
    mission.apply(&noted[0]);
    assert_eq!(mission.decide(first), Ok(vec![]), "a report repeated changes nothing");
    let last = mission
        .decide(MissionCommand::ReportChildren {
            outcomes: vec![child_ended("b", MissionStatus::Completed)],
            now_ms: 5_000,
        })
        .unwrap();
    assert!(matches!(
        last.as_slice(),
        [MissionEvent::MissionChildFinished { .. }, MissionEvent::MissionResumed { at_ms: 5_000 }]
    ));
    for event in &last {
        mission.apply(event);
    }
    assert_eq!(mission.status, MissionStatus::Queued);
    let restarted = mission
        .decide(MissionCommand::Start { worker_id: "w2".into(), lease_ms: 1_000, now_ms: 6_000 })
        .unwrap();
    assert!(matches!(restarted[0], MissionEvent::MissionStarted { attempt: 1, .. }));
}

#[test]
fn only_the_holder_suspends_and_a_suspension_keeps_within_the_child_limit() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let mut mission = Mission::default();
    for event in &given {
        mission.apply(event);
    }
    let mut other = suspend(&["a"], 3_000);
    if let MissionCommand::Suspend { worker_id, .. } = &mut other {
        *worker_id = "w2".into();
    }
    assert!(matches!(mission.decide(other), Err(MissionError::HeldByAnother { .. })));
    assert!(matches!(mission.decide(suspend(&[], 3_000)), Err(MissionError::Invalid { .. })));
    let many: Vec<String> = (0..=CHILDREN_MAX).map(|n| n.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let refused = mission.decide(suspend(&many, 3_000)).unwrap_err();
    assert!(refused.to_string().contains("child limit"), "{refused}");
}

#[test]
fn several_children_reported_at_once_resume_the_parent_once_the_last_is_in() {
    let mut mission = Mission::default();
    for event in [enqueued(), started("w1", 1, 2_000)] {
        mission.apply(&event);
    }
    for event in mission.decide(suspend(&["a", "b", "c"], 3_000)).unwrap() {
        mission.apply(&event);
    }
    let report = |children: &[&str]| MissionCommand::ReportChildren {
        outcomes: children.iter().map(|c| child_ended(c, MissionStatus::Completed)).collect(),
        now_ms: 4_000,
    };
    let two = mission.decide(report(&["a", "a", "z", "b"])).unwrap();
    assert_eq!(two.len(), 2, "a repeat and a stranger are skipped: {two:?}");
    for event in &two {
        mission.apply(event);
    }
    let last = mission.decide(report(&["b", "c"])).unwrap();
    assert!(matches!(
        last.as_slice(),
        [MissionEvent::MissionChildFinished { .. }, MissionEvent::MissionResumed { .. }]
    ));
}

#[test]
fn a_suspended_mission_can_be_cancelled_and_then_waits_for_nobody() {
    let given = [enqueued(), started("w1", 1, 2_000)];
    let mut mission = Mission::default();
    for event in &given {
        mission.apply(event);
    }
    for event in mission.decide(suspend(&["a"], 3_000)).unwrap() {
        mission.apply(&event);
    }
    let cancel = MissionCommand::Cancel { reason: "no".into(), by: "u".into(), now_ms: 4_000 };
    for event in mission.decide(cancel).unwrap() {
        mission.apply(&event);
    }
    assert_eq!(mission.status, MissionStatus::Cancelled);
    let late = MissionCommand::ReportChildren {
        outcomes: vec![child_ended("a", MissionStatus::Cancelled)],
        now_ms: 5_000,
    };
    assert_eq!(mission.decide(late), Ok(vec![]));
}

#[test]
fn a_childs_outcome_is_its_last_event_only() {
    let retried = failed(1, Some(9_000), 3_000);
    assert_eq!(ChildOutcome::of("a", &retried), None);
    let ended = ChildOutcome::of("a", &failed(3, None, 3_000)).unwrap();
    assert_eq!((ended.status, ended.error.as_deref()), (MissionStatus::Failed, Some("boom")));
    let done = MissionEvent::MissionCompleted { attempt: 1, result: json!(7), at_ms: 1 };
    assert_eq!(ChildOutcome::of("a", &done).unwrap().result, Some(json!(7)));
}
