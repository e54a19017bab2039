//! `mission_list`: one row per mission with what a dashboard searches, filters and sorts on
//! (name and description, status, priority, agent, attempt, the last error, when enqueued,
//! started, finished and last changed). Every change is derived from the event alone: each
//! mission event names the status it leads to, and what depends on the row before (the run's
//! first start, its run time) is resolved by the store from the row it holds.

use std::collections::BTreeMap;

use crate::Unreadable;
use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::mission::{LEASE_EXPIRED_ERROR, MissionEvent, MissionStatus, Priority};
use time::OffsetDateTime;

use crate::{Projector, Reads, StreamEvents};

pub const NAME: &str = "mission_list";

/// Characters of a mission's last error the row keeps (the mission's history keeps it whole):
/// enough to recognise and search it, bounded so a page of rows stays small.
pub const LAST_ERROR_CHARS_MAX: usize = 2_000;

/// What one event sets on a mission's row; `None` leaves a column as it is.
///
/// A *run* is what a queue wait and a run time measure: it begins when the mission becomes
/// due (its enqueue, or a `MissionRetried` that runs a failed mission again) and its first
/// start within it stays its start, whatever attempts, releases or suspensions follow. It
/// ends when the mission reaches a final status (completed, failed, cancelled), the time the
/// store keeps as `finished_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub mission_id: String,
    pub status: MissionStatus,
    pub attempt: Option<u32>,
    /// Set by the enqueue only.
    pub enqueued: Option<Enqueued>,
    /// A run begins: due from this time. Also clears the run's start, so the next start is
    /// the new run's.
    pub ready_at: Option<OffsetDateTime>,
    /// A start; the store keeps the first of the run.
    pub started_at: Option<OffsetDateTime>,
    /// An attempt failed with this error (its first [`LAST_ERROR_CHARS_MAX`] characters).
    pub last_error: Option<String>,
    pub updated_at: OffsetDateTime,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The enqueue's own position and time, which a batch's later events of the same
    /// mission must not replace when [`merge`] folds them into one change.
    pub position: u64,
    pub at: OffsetDateTime,
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub agent: String,
    pub enqueued_by: String,
}

/// The last error as the row keeps it.
fn kept_error(error: &str) -> String {
    match error.char_indices().nth(LAST_ERROR_CHARS_MAX) {
        Some((end, _)) => error[..end].to_owned(),
        None => error.to_owned(),
    }
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
        let at = event.recorded_at;
        let after_attempt =
            |retry_at_ms: &Option<i64>| if retry_at_ms.is_some() { S::Pending } else { S::Failed };
        let mut change = RowChange {
            mission_id: event.stream_id.to_string(),
            status: S::Queued,
            attempt: None,
            enqueued: None,
            ready_at: None,
            started_at: None,
            last_error: None,
            updated_at: at,
            position: event.global_position,
        };
        change.status = match &mission {
            E::MissionEnqueued { spec, due_at_ms, at_ms } => {
                change.enqueued = Some(Enqueued {
                    position: event.global_position,
                    at,
                    name: spec.name.clone(),
                    description: spec.description.clone(),
                    priority: spec.priority,
                    agent: spec.agent.clone(),
                    enqueued_by: event.metadata.actor.clone(),
                });
                change.attempt = Some(0);
                // Due later than enqueued (`not_before`): the wait starts then. The delay is
                // the decider's, laid on the store's clock that every other time here uses.
                let delay_ms = due_at_ms.saturating_sub(*at_ms).max(0);
                change.ready_at = Some(at + time::Duration::milliseconds(delay_ms));
                if due_at_ms > at_ms { S::Pending } else { S::Queued }
            }
            E::MissionRetryDue { .. } => S::Queued,
            E::MissionStarted { attempt, .. } => {
                change.attempt = Some(*attempt);
                change.started_at = Some(at);
                S::Running
            }
            E::MissionProgressed { .. }
            | E::MissionLlmCalled { .. }
            | E::MissionToolCalled { .. } => S::Running,
            E::MissionCompleted { .. } => S::Completed,
            E::MissionAttemptFailed { retry_at_ms, error, .. } => {
                change.last_error = Some(kept_error(error));
                after_attempt(retry_at_ms)
            }
            E::MissionLeaseExpired { retry_at_ms, .. } => {
                change.last_error = Some(LEASE_EXPIRED_ERROR.to_owned());
                after_attempt(retry_at_ms)
            }
            E::MissionCancelled { .. } => S::Cancelled,
            E::MissionRetried { .. } => {
                change.attempt = Some(0);
                change.ready_at = Some(at);
                S::Queued
            }
            E::MissionReleased { attempt, .. } => {
                change.attempt = Some(attempt.saturating_sub(1));
                S::Queued
            }
            E::MissionSuspended { attempt, .. } => {
                change.attempt = Some(attempt.saturating_sub(1));
                S::Suspended
            }
            E::MissionChildFinished { .. } => S::Suspended,
            E::MissionResumed { .. } => S::Queued,
            // A fork or a copy is linked in the history; the row does not change.
            E::MissionForked { .. } | E::MissionCopied { .. } => return Ok(()),
        };
        changes.push(change);
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
                // A new run forgets the start of the one before; within a run the first
                // start stays.
                if change.ready_at.is_some() {
                    row.ready_at = change.ready_at;
                    row.started_at = change.started_at;
                } else {
                    row.started_at = row.started_at.or(change.started_at);
                }
                row.last_error = change.last_error.or(row.last_error.take());
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
            ready_at: None,
            started_at: None,
            last_error: None,
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
mod runs {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    fn change(
        position: u64,
        ready: Option<i64>,
        started: Option<i64>,
        error: Option<&str>,
    ) -> RowChange {
        RowChange {
            mission_id: "m".into(),
            status: MissionStatus::Running,
            attempt: None,
            enqueued: None,
            ready_at: ready.map(at),
            started_at: started.map(at),
            last_error: error.map(str::to_owned),
            updated_at: at(position as i64),
            position,
        }
    }

    #[test]
    fn a_run_keeps_its_first_start_and_a_new_run_forgets_it() {
        let merged = merge(vec![
            change(1, Some(1), None, None),
            change(2, None, Some(2), None),
            change(3, None, None, Some("boom")),
            change(4, None, Some(4), None),
        ]);
        assert_eq!(merged[0].started_at, Some(at(2)), "the second attempt is the same run");
        assert_eq!(merged[0].last_error.as_deref(), Some("boom"));

        let merged = merge(vec![change(5, None, Some(5), None), change(6, Some(6), None, None)]);
        assert_eq!((merged[0].ready_at, merged[0].started_at), (Some(at(6)), None));
        let merged = merge(vec![change(6, Some(6), None, None), change(7, None, Some(7), None)]);
        assert_eq!((merged[0].ready_at, merged[0].started_at), (Some(at(6)), Some(at(7))));
    }

    #[test]
    fn the_last_error_is_kept_to_its_bound_in_characters() {
        let long = "é".repeat(LAST_ERROR_CHARS_MAX + 5);
        assert_eq!(kept_error(&long).chars().count(), LAST_ERROR_CHARS_MAX);
        assert_eq!(kept_error("short"), "short");
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
