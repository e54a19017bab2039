//! `mission_queue`: the priority queue workers claim missions from, as changes to a
//! per-agent-kind ready set, a delayed set (missions waiting for a time) and the running
//! missions' leases. The Redis adapter in `brain::queue` applies them.
//!
//! A ready mission's score is `ready_at_ms − bonus_ms`, popped lowest first: "oldest first,
//! and a higher priority counts as having waited longer". `bonus_ms` is the priority's weight
//! times the aging interval (how long a mission must wait to be worth one priority level
//! more), fixed at enqueue, so scores never need recomputing. It is the design's "priority
//! weight − aging × enqueue time", negated so that the score is a time in milliseconds:
//! exact in a double, and readable.

use crate::Unreadable;
use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::mission::{MissionEvent, Priority};

use crate::{Projector, Reads, StreamEvents};

pub const NAME: &str = "mission_queue";

/// How priorities and waiting time weigh against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoring {
    /// Weight of `low`, `normal`, `high`, `critical`, in priority levels.
    pub weights: [u32; 4],
    /// How long a mission waits to gain one priority level over a fresh one.
    pub aging_ms: u64,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring { weights: [0, 1, 2, 4], aging_ms: 5 * 60 * 1_000 }
    }
}

impl Scoring {
    pub fn bonus_ms(&self, priority: Priority) -> i64 {
        let level = match priority {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        };
        let bonus = u64::from(self.weights[level]).saturating_mul(self.aging_ms);
        i64::try_from(bonus).unwrap_or(i64::MAX)
    }

    /// Where a mission that became ready at `ready_at_ms` sorts: lower pops first.
    pub fn score(ready_at_ms: i64, bonus_ms: i64) -> i64 {
        ready_at_ms.saturating_sub(bonus_ms)
    }
}

/// One change to the queue. Changes after the enqueue name only the mission: the store keeps
/// each mission's kind and bonus from its `Enqueue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueChange {
    /// A new mission: ready at `ready_at_ms`, or delayed until it when `delayed`.
    Enqueue { mission_id: String, agent: String, bonus_ms: i64, ready_at_ms: i64, delayed: bool },
    /// Waiting again, ready from `ready_at_ms` (a due retry, a manual retry).
    Ready { mission_id: String, ready_at_ms: i64 },
    /// Waiting for a time (a retry's backoff).
    Delay { mission_id: String, due_at_ms: i64 },
    /// Running under a lease until `lease_expires_at_ms` (a start or a lease extension).
    Lease { mission_id: String, worker_id: String, lease_expires_at_ms: i64 },
    /// Out of the queue: completed or cancelled, or failed for good or suspended (`failed`),
    /// in which case the store keeps the mission's kind and bonus for a retry or a resume.
    Remove { mission_id: String, failed: bool },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct MissionQueue {
    pub scoring: Scoring,
}

impl Projector for MissionQueue {
    type Change = QueueChange;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[StreamEvents::all("mission")]);
        READS
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        changes: &mut Vec<QueueChange>,
    ) -> Result<(), Unreadable> {
        // As in mission_list: an event this code cannot read is never skipped.
        let mission =
            MissionEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| Unreadable::of(event, error))?;
        let mission_id = event.stream_id.to_string();
        use MissionEvent as E;
        let after_attempt = |retry_at_ms: &Option<i64>| match retry_at_ms {
            Some(due_at_ms) => {
                QueueChange::Delay { mission_id: mission_id.clone(), due_at_ms: *due_at_ms }
            }
            None => QueueChange::Remove { mission_id: mission_id.clone(), failed: true },
        };
        let change = match &mission {
            E::MissionEnqueued { spec, due_at_ms, at_ms } => QueueChange::Enqueue {
                mission_id,
                agent: spec.agent.clone(),
                bonus_ms: self.scoring.bonus_ms(spec.priority),
                ready_at_ms: *due_at_ms,
                delayed: due_at_ms > at_ms,
            },
            E::MissionRetryDue { at_ms }
            | E::MissionRetried { at_ms, .. }
            | E::MissionResumed { at_ms }
            | E::MissionReleased { at_ms, .. } => {
                QueueChange::Ready { mission_id, ready_at_ms: *at_ms }
            }
            E::MissionStarted { worker_id, lease_expires_at_ms, .. } => QueueChange::Lease {
                mission_id,
                worker_id: worker_id.clone(),
                lease_expires_at_ms: *lease_expires_at_ms,
            },
            // The worker is the one that started it: the store keeps the name.
            E::MissionProgressed { lease_expires_at_ms, .. } => QueueChange::Lease {
                mission_id,
                worker_id: String::new(),
                lease_expires_at_ms: *lease_expires_at_ms,
            },
            E::MissionAttemptFailed { retry_at_ms, .. }
            | E::MissionLeaseExpired { retry_at_ms, .. } => after_attempt(retry_at_ms),
            // A call, a child's report, a fork or a copy changes nothing the queue holds.
            E::MissionLlmCalled { .. }
            | E::MissionToolCalled { .. }
            | E::MissionChildFinished { .. }
            | E::MissionForked { .. }
            | E::MissionCopied { .. } => return Ok(()),
            // Out of the queue while it waits for its children, its kind and bonus kept for
            // when it is resumed.
            E::MissionSuspended { .. } => QueueChange::Remove { mission_id, failed: true },
            E::MissionCompleted { .. } | E::MissionCancelled { .. } => {
                QueueChange::Remove { mission_id, failed: false }
            }
        };
        changes.push(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_low_mission_overtakes_a_fresh_normal_one_only_after_the_aging_interval() {
        let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
        let low = |at| Scoring::score(at, scoring.bonus_ms(Priority::Low));
        let normal = |at| Scoring::score(at, scoring.bonus_ms(Priority::Normal));
        // Same moment: priority decides.
        assert!(normal(1_000_000) < low(1_000_000));
        // Older by less than the interval: still behind.
        assert!(normal(1_059_999) < low(1_000_000));
        // Older by more: ahead.
        assert!(low(1_000_000) < normal(1_060_001));
        // Among equals, the older first.
        assert!(normal(1_000_000) < normal(1_000_001));
        assert_eq!(scoring.bonus_ms(Priority::Critical), 4 * 60_000);
    }
}
