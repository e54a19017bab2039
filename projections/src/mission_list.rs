//! `mission_list`: one row per mission with what a dashboard filters and sorts on (status,
//! priority, agent, attempt, when enqueued and last changed). Every row is derived from the
//! event alone: each mission event names the status it leads to.

use std::collections::BTreeMap;

use crate::Unreadable;
use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::mission::{MissionEvent, MissionStatus, Priority};
use time::OffsetDateTime;

use crate::{Projector, Reads, StreamEvents};

pub const NAME: &str = "mission_list";

/// What one event sets on a mission's row; `None` leaves a column as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub mission_id: String,
    pub status: MissionStatus,
    pub attempt: Option<u32>,
    /// Set by the enqueue only.
    pub enqueued: Option<Enqueued>,
    pub updated_at: OffsetDateTime,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub name: String,
    pub priority: Priority,
    pub agent: String,
    pub enqueued_by: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct MissionList;

impl Projector for MissionList {
    type Change = RowChange;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[StreamEvents::all("mission")]);
        READS
    }

    fn apply(&self, event: &RecordedEvent, changes: &mut Vec<RowChange>) -> Result<(), Unreadable> {
        // An event this code cannot read is not skipped: a row missing a transition would
        // show the wrong status for ever. The runtime stops before it instead.
        let mission =
            MissionEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| Unreadable::of(event, error))?;
        use MissionEvent as E;
        use MissionStatus as S;
        let after_attempt =
            |retry_at_ms: &Option<i64>| if retry_at_ms.is_some() { S::Pending } else { S::Failed };
        let (status, attempt, enqueued) = match &mission {
            E::MissionEnqueued { spec, due_at_ms, at_ms } => {
                let status = if due_at_ms > at_ms { S::Pending } else { S::Queued };
                let enqueued = Enqueued {
                    name: spec.name.clone(),
                    priority: spec.priority,
                    agent: spec.agent.clone(),
                    enqueued_by: event.metadata.actor.clone(),
                };
                (status, Some(0), Some(enqueued))
            }
            E::MissionRetryDue { .. } => (S::Queued, None, None),
            E::MissionStarted { attempt, .. } => (S::Running, Some(*attempt), None),
            E::MissionProgressed { .. }
            | E::MissionLlmCalled { .. }
            | E::MissionToolCalled { .. } => (S::Running, None, None),
            E::MissionCompleted { .. } => (S::Completed, None, None),
            E::MissionAttemptFailed { retry_at_ms, .. } => (after_attempt(retry_at_ms), None, None),
            E::MissionLeaseExpired { retry_at_ms, .. } => (after_attempt(retry_at_ms), None, None),
            E::MissionCancelled { .. } => (S::Cancelled, None, None),
            E::MissionRetried { .. } => (S::Queued, Some(0), None),
            E::MissionReleased { attempt, .. } => {
                (S::Queued, Some(attempt.saturating_sub(1)), None)
            }
            E::MissionSuspended { attempt, .. } => {
                (S::Suspended, Some(attempt.saturating_sub(1)), None)
            }
            E::MissionChildFinished { .. } => (S::Suspended, None, None),
            E::MissionResumed { .. } => (S::Queued, None, None),
            // A fork is linked in the history; the row does not change.
            E::MissionForked { .. } => return Ok(()),
        };
        changes.push(RowChange {
            mission_id: event.stream_id.to_string(),
            status,
            attempt,
            enqueued,
            updated_at: event.recorded_at,
            position: event.global_position,
        });
        Ok(())
    }
}

/// Folds a batch's changes into one per mission, in order, so a store writes each row once.
pub fn merge(changes: Vec<RowChange>) -> Vec<RowChange> {
    let mut rows: BTreeMap<String, RowChange> = BTreeMap::new();
    for change in changes {
        match rows.get_mut(&change.mission_id) {
            None => {
                rows.insert(change.mission_id.clone(), change);
            }
            Some(row) => {
                row.status = change.status;
                row.attempt = change.attempt.or(row.attempt);
                row.enqueued = change.enqueued.or(row.enqueued.take());
                row.updated_at = change.updated_at;
                row.position = change.position;
            }
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, status: MissionStatus, attempt: Option<u32>, position: u64) -> RowChange {
        RowChange {
            mission_id: id.into(),
            status,
            attempt,
            enqueued: None,
            updated_at: OffsetDateTime::from_unix_timestamp(position as i64).unwrap(),
            position,
        }
    }

    #[test]
    fn merging_keeps_the_last_status_and_the_last_known_attempt_per_mission() {
        let merged = merge(vec![
            change("a", MissionStatus::Queued, Some(0), 1),
            change("b", MissionStatus::Queued, Some(0), 2),
            change("a", MissionStatus::Running, Some(1), 3),
            change("a", MissionStatus::Pending, None, 4),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            (merged[0].status, merged[0].attempt, merged[0].position),
            (MissionStatus::Pending, Some(1), 4)
        );
        assert_eq!((merged[1].status, merged[1].position), (MissionStatus::Queued, 2));
    }
}

#[cfg(test)]
mod unreadable {
    use domain::{EventMetadata, StreamId, StreamType};

    use super::*;

    #[test]
    fn an_event_type_from_a_newer_release_is_unreadable_not_a_panic_or_a_skip() {
        let event = RecordedEvent {
            global_position: 7,
            stream_type: StreamType::parse("mission").unwrap(),
            stream_id: StreamId::parse("m1").unwrap(),
            version: 2,
            event_id: uuid::Uuid::nil(),
            event_type: "MissionTeleported".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata::new("test", time::OffsetDateTime::UNIX_EPOCH),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let mut changes = Vec::new();
        let error = MissionList.apply(&event, &mut changes).unwrap_err();
        assert_eq!((error.position, error.event_type.as_str()), (7, "MissionTeleported"));
        assert!(changes.is_empty());
    }
}
