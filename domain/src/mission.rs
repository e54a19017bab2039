//! Mission aggregate: `decide` turns a command into events, `apply` folds an event into state.
//! Pure by design: no clock, no randomness, no I/O. Time arrives inside each command as
//! `now_ms` (Unix milliseconds), and a retry's backoff (which has jitter) is chosen by the
//! caller and passed in as `backoff_ms`.
//!
//! Status transitions (the table in ARCHITECTURE.md matches `apply`):
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | `MissionEnqueued` | `queued`, or `pending` when `not_before` is in the future |
//! | `pending` | `MissionRetryDue` | `queued` |
//! | `queued` | `MissionStarted` | `running` |
//! | `pending`, due | `MissionRetryDue` + `MissionStarted` (one start) | `running` |
//! | `running` | `MissionProgressed` | `running` (lease extended) |
//! | `running` | `MissionCompleted` | `completed` |
//! | `running` | `MissionAttemptFailed` | `pending` (retry scheduled) or `failed` |
//! | `running` | `MissionLeaseExpired` | `pending` (retry scheduled) or `failed` |
//! | `running` | `MissionReleased` | `queued`, the attempt not counted |
//! | `running` | `MissionSuspended` | `suspended`, the attempt not counted (it goes on when resumed) |
//! | `suspended` | `MissionChildFinished` | `suspended` |
//! | `suspended` | `MissionResumed` (with the last child's report) | `queued` |
//! | `pending`, `queued`, `running`, `suspended` | `MissionCancelled` | `cancelled` |
//! | any | `MissionForked` | unchanged |
//! | `completed`, `failed`, `cancelled` | `MissionCopied` | unchanged (the copy is a new mission) |
//! | `failed` | `MissionRetried` | `queued`, attempts counted afresh |

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::names::StreamType;

mod call;
mod command;
mod event;
mod spec;
mod tree;
mod upcast;
pub use call::{EstimateMethod, LlmCall, ToolCallRecord, UsageEstimate};
pub use command::MissionCommand;
pub use event::MissionEvent;
use spec::invalid;
pub use spec::*;
pub use tree::*;

/// The error an attempt whose lease ran out is recorded with (a `MissionLeaseExpired` carries
/// none of its own): the same words in the history, a parent's report and the mission list.
pub const LEASE_EXPIRED_ERROR: &str = "lease expired: the worker stopped renewing it";

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MissionStatus {
    /// No event yet: the mission does not exist.
    #[default]
    New,
    /// Accepted, waiting for a time: a retry's backoff or `not_before`.
    Pending,
    /// Waiting for a worker.
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Waiting for its children, holding no worker and no lease.
    Suspended,
    Completed,
    /// Attempts exhausted, or an error that is not worth retrying.
    Failed,
    Cancelled,
}

impl MissionStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, MissionStatus::Completed | MissionStatus::Failed | MissionStatus::Cancelled)
    }
}

impl std::fmt::Display for MissionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self {
            MissionStatus::New => "new",
            MissionStatus::Pending => "pending",
            MissionStatus::Queued => "queued",
            MissionStatus::Running => "running",
            MissionStatus::Suspended => "suspended",
            MissionStatus::Completed => "completed",
            MissionStatus::Failed => "failed",
            MissionStatus::Cancelled => "cancelled",
        };
        f.write_str(word)
    }
}

/// One failed attempt, kept in the mission's history (its dead-letter record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// The run it belongs to: 1 until the first manual retry, then 2, and so on (attempts
    /// are counted afresh in each run).
    pub run: u32,
    pub attempt: u32,
    pub error: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MissionError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("mission already exists")]
    AlreadyExists,
    #[error("mission does not exist")]
    NotFound,
    #[error("mission is {status}, only a queued (or due) mission can be started")]
    NotQueued { status: MissionStatus },
    #[error("mission is {status}, not running")]
    NotRunning { status: MissionStatus },
    #[error("mission is held by worker {holder}, not {worker_id}")]
    HeldByAnother { holder: String, worker_id: String },
    #[error("attempt {got} is over, the mission is on attempt {current}")]
    StaleAttempt { current: u32, got: u32 },
    #[error("mission is {status} already")]
    AlreadyFinished { status: MissionStatus },
    #[error("mission is {status}, only a failed mission can be retried")]
    NotFailed { status: MissionStatus },
    #[error("mission is {status}, only a finished mission can be copied")]
    NotFinished { status: MissionStatus },
    #[error("mission is not pending, or not due until {due_at_ms}")]
    NotDue { due_at_ms: i64 },
    #[error("lease runs until {lease_expires_at_ms}")]
    LeaseNotExpired { lease_expires_at_ms: i64 },
    /// The holder's lease ran out: it is fenced off, even before anyone expired the lease.
    #[error("the lease ran out at {lease_expires_at_ms}; this attempt may no longer report")]
    LeaseExpired { lease_expires_at_ms: i64 },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mission {
    pub status: MissionStatus,
    pub spec: Option<MissionSpec>,
    /// Attempts begun since enqueue (or since the last manual retry).
    pub attempt: u32,
    /// Manual retries so far: the current run is `retries + 1`.
    pub retries: u32,
    pub worker_id: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    /// When a pending mission becomes due.
    pub due_at_ms: Option<i64>,
    pub errors: Vec<AttemptError>,
    pub result: Option<serde_json::Value>,
    /// When it was enqueued and last changed, as the commands said (Unix ms).
    pub enqueued_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
    /// Every child it spawned, in order.
    pub children: Vec<String>,
    /// The children a suspended mission still waits for.
    pub waiting: Vec<String>,
    /// The next start goes on with an attempt begun before (it was suspended or handed
    /// back), whose steps are in the history to be played back.
    pub carried_over: bool,
}

pub type Decision = Result<Vec<MissionEvent>, MissionError>;

impl Mission {
    /// Checks that `worker_id` holds the running mission's current `attempt`.
    /// The holder's checks: the mission runs, on this attempt, held by this worker, whose
    /// lease has not run out at `now_ms` (the attempt is the fencing token, and time the
    /// fence: past its expiry a lease cannot be renewed or reported on, whether or not the
    /// supervisor has expired it yet).
    fn check_holder(&self, worker_id: &str, attempt: u32, now_ms: i64) -> Result<(), MissionError> {
        if self.status != MissionStatus::Running {
            return Err(self.not_running());
        }
        if attempt != self.attempt {
            return Err(MissionError::StaleAttempt { current: self.attempt, got: attempt });
        }
        if let Some(holder) = &self.worker_id
            && holder != worker_id
        {
            return Err(MissionError::HeldByAnother {
                holder: holder.clone(),
                worker_id: worker_id.to_owned(),
            });
        }
        match self.lease_expires_at_ms {
            Some(lease_expires_at_ms) if lease_expires_at_ms <= now_ms => {
                Err(MissionError::LeaseExpired { lease_expires_at_ms })
            }
            _ => Ok(()),
        }
    }

    fn not_running(&self) -> MissionError {
        match self.status {
            MissionStatus::New => MissionError::NotFound,
            status if status.is_finished() => MissionError::AlreadyFinished { status },
            status => MissionError::NotRunning { status },
        }
    }

    /// When the next attempt may run after this one failed, or `None` if none may.
    fn retry_at(&self, retryable: bool, backoff_ms: u64, now_ms: i64) -> Option<i64> {
        let attempt_max = self.spec.as_ref().map_or(0, |spec| spec.attempt_max);
        (retryable && self.attempt < attempt_max)
            .then(|| now_ms.saturating_add(i64::try_from(backoff_ms).unwrap_or(i64::MAX)))
    }
}

fn expiry(now_ms: i64, lease_ms: u64) -> i64 {
    now_ms.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX))
}

impl Aggregate for Mission {
    type Command = MissionCommand;
    type Event = MissionEvent;
    type Error = MissionError;

    fn stream_type() -> StreamType {
        StreamType::parse("mission").expect("a valid stream type")
    }

    fn decide(&self, command: MissionCommand) -> Decision {
        use MissionCommand as C;
        use MissionEvent as E;
        use MissionStatus as S;
        if let C::Enqueue { spec, now_ms } = command {
            if self.status != S::New {
                return Err(MissionError::AlreadyExists);
            }
            validate_spec(&spec)?;
            let due_at_ms = spec.not_before_ms.map_or(now_ms, |at| at.max(now_ms));
            return Ok(vec![E::MissionEnqueued { spec, due_at_ms, at_ms: now_ms }]);
        }
        if self.status == S::New {
            return Err(MissionError::NotFound);
        }
        match command {
            C::Enqueue { .. } => unreachable!("handled above"),
            C::Start { worker_id, lease_ms, now_ms } => {
                // The queue's claim script moves due missions to the ready set itself, so a
                // worker may claim one that is due before anything marked it so: its start
                // then records both steps.
                let due = self.status == S::Pending
                    && self.due_at_ms.is_some_and(|due_at_ms| due_at_ms <= now_ms);
                if self.status != S::Queued && !due {
                    return Err(MissionError::NotQueued { status: self.status });
                }
                let lease_expires_at_ms = expiry(now_ms, lease_ms);
                let attempt = self.attempt + 1;
                let started = E::MissionStarted {
                    worker_id,
                    attempt,
                    lease_ms,
                    lease_expires_at_ms,
                    at_ms: now_ms,
                };
                Ok(if due {
                    vec![E::MissionRetryDue { at_ms: now_ms }, started]
                } else {
                    vec![started]
                })
            }
            C::Progress { worker_id, attempt, lease_ms, note, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                let lease_expires_at_ms = expiry(now_ms, lease_ms);
                Ok(vec![E::MissionProgressed { attempt, lease_expires_at_ms, note, at_ms: now_ms }])
            }
            C::RecordLlmCall { worker_id, attempt, call, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                Ok(vec![E::MissionLlmCalled { attempt, call, at_ms: now_ms }])
            }
            C::RecordToolCall { worker_id, attempt, call, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                Ok(vec![E::MissionToolCalled { attempt, call, at_ms: now_ms }])
            }
            C::Complete { worker_id, attempt, result, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                Ok(vec![E::MissionCompleted { attempt, result, at_ms: now_ms }])
            }
            C::Fail { worker_id, attempt, error, retryable, backoff_ms, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                let retry_at_ms = self.retry_at(retryable, backoff_ms, now_ms);
                Ok(vec![E::MissionAttemptFailed { attempt, error, retry_at_ms, at_ms: now_ms }])
            }
            C::Release { worker_id, attempt, reason, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                Ok(vec![E::MissionReleased { attempt, worker_id, reason, at_ms: now_ms }])
            }
            C::MarkDue { now_ms } => match (self.status, self.due_at_ms) {
                (S::Pending, Some(due_at_ms)) if due_at_ms <= now_ms => {
                    Ok(vec![E::MissionRetryDue { at_ms: now_ms }])
                }
                (_, due_at_ms) => Err(MissionError::NotDue { due_at_ms: due_at_ms.unwrap_or(0) }),
            },
            C::ExpireLease { backoff_ms, now_ms } => {
                if self.status != S::Running {
                    return Err(self.not_running());
                }
                let lease_expires_at_ms = self.lease_expires_at_ms.unwrap_or(i64::MIN);
                if lease_expires_at_ms > now_ms {
                    return Err(MissionError::LeaseNotExpired { lease_expires_at_ms });
                }
                let worker_id = self.worker_id.clone().unwrap_or_default();
                let retry_at_ms = self.retry_at(true, backoff_ms, now_ms);
                let attempt = self.attempt;
                Ok(vec![E::MissionLeaseExpired { attempt, worker_id, retry_at_ms, at_ms: now_ms }])
            }
            C::RevokeLease { worker_id, backoff_ms, now_ms } => {
                if self.status != S::Running {
                    return Err(self.not_running());
                }
                if self.worker_id.as_deref() != Some(worker_id.as_str()) {
                    return Err(MissionError::HeldByAnother {
                        holder: self.worker_id.clone().unwrap_or_default(),
                        worker_id,
                    });
                }
                let retry_at_ms = self.retry_at(true, backoff_ms, now_ms);
                let attempt = self.attempt;
                Ok(vec![E::MissionLeaseExpired { attempt, worker_id, retry_at_ms, at_ms: now_ms }])
            }
            C::Suspend { worker_id, attempt, step, call_id, children, now_ms } => {
                self.check_holder(&worker_id, attempt, now_ms)?;
                if children.is_empty() {
                    return Err(invalid("children", "a suspension waits for at least one child"));
                }
                let mut seen = std::collections::BTreeSet::new();
                if children.iter().any(|child| !seen.insert(child) || self.children.contains(child))
                {
                    return Err(invalid("children", "a child may be named only once"));
                }
                if self.children.len() + children.len() > CHILDREN_MAX {
                    return Err(invalid(
                        "children",
                        format!(
                            "child limit: at most {CHILDREN_MAX} children per mission ({} spawned already)",
                            self.children.len()
                        ),
                    ));
                }
                Ok(vec![E::MissionSuspended { attempt, step, call_id, children, at_ms: now_ms }])
            }
            C::ReportChildren { outcomes, now_ms } => {
                if self.status != S::Suspended {
                    return Ok(vec![]);
                }
                let mut waiting = self.waiting.clone();
                let mut events = Vec::new();
                for outcome in outcomes {
                    if let Some(at) = waiting.iter().position(|child| *child == outcome.mission_id)
                    {
                        waiting.swap_remove(at);
                        events.push(E::MissionChildFinished { outcome, at_ms: now_ms });
                    }
                }
                if waiting.is_empty() {
                    events.push(E::MissionResumed { at_ms: now_ms });
                }
                Ok(events)
            }
            C::RecordFork { fork_id, attempt, steps, by, now_ms } => {
                Ok(vec![E::MissionForked { fork_id, attempt, steps, by, at_ms: now_ms }])
            }
            C::Cancel { reason, by, now_ms } => {
                if self.status.is_finished() {
                    return Err(MissionError::AlreadyFinished { status: self.status });
                }
                Ok(vec![E::MissionCancelled { reason, by, at_ms: now_ms }])
            }
            C::Retry { by, reason, now_ms } => {
                if self.status != S::Failed {
                    return Err(MissionError::NotFailed { status: self.status });
                }
                Ok(vec![E::MissionRetried { by, reason, at_ms: now_ms }])
            }
            C::RecordCopy { copy_id, reason, by, now_ms } => {
                if !self.status.is_finished() {
                    return Err(MissionError::NotFinished { status: self.status });
                }
                Ok(vec![E::MissionCopied { copy_id, reason, by, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &MissionEvent) {
        use MissionEvent as E;
        use MissionStatus as S;
        match event {
            E::MissionEnqueued { spec, due_at_ms, at_ms } => {
                self.status = if due_at_ms > at_ms { S::Pending } else { S::Queued };
                self.due_at_ms = (due_at_ms > at_ms).then_some(*due_at_ms);
                self.spec = Some(spec.clone());
            }
            E::MissionRetryDue { .. } => {
                self.status = S::Queued;
                self.due_at_ms = None;
            }
            E::MissionStarted { worker_id, attempt, lease_expires_at_ms, .. } => {
                assert_eq!(*attempt, self.attempt + 1, "attempts are counted one by one");
                self.status = S::Running;
                self.attempt = *attempt;
                self.worker_id = Some(worker_id.clone());
                self.lease_expires_at_ms = Some(*lease_expires_at_ms);
            }
            E::MissionProgressed { lease_expires_at_ms, .. } => {
                self.lease_expires_at_ms = Some(*lease_expires_at_ms);
            }
            E::MissionLlmCalled { .. }
            | E::MissionToolCalled { .. }
            | E::MissionForked { .. }
            | E::MissionCopied { .. } => {}
            E::MissionSuspended { children, .. } => {
                self.status = S::Suspended;
                self.attempt = self.attempt.saturating_sub(1);
                self.end_attempt();
                self.carried_over = true;
                self.children.extend(children.iter().cloned());
                self.waiting = children.clone();
            }
            E::MissionChildFinished { outcome, .. } => {
                self.waiting.retain(|child| *child != outcome.mission_id);
            }
            E::MissionResumed { .. } => {
                self.status = S::Queued;
                self.waiting.clear();
            }
            E::MissionCompleted { result, .. } => {
                self.status = S::Completed;
                self.result = Some(result.clone());
                self.end_attempt();
            }
            E::MissionAttemptFailed { attempt, error, retry_at_ms, at_ms } => {
                self.errors.push(AttemptError {
                    run: self.retries + 1,
                    attempt: *attempt,
                    error: error.clone(),
                    at_ms: *at_ms,
                });
                self.after_attempt(*retry_at_ms);
            }
            E::MissionLeaseExpired { attempt, retry_at_ms, at_ms, .. } => {
                let error = LEASE_EXPIRED_ERROR.to_owned();
                let run = self.retries + 1;
                self.errors.push(AttemptError { run, attempt: *attempt, error, at_ms: *at_ms });
                self.after_attempt(*retry_at_ms);
            }
            E::MissionCancelled { .. } => {
                self.status = S::Cancelled;
                self.due_at_ms = None;
                self.waiting.clear();
                self.end_attempt();
            }
            E::MissionReleased { .. } => {
                self.status = S::Queued;
                self.attempt = self.attempt.saturating_sub(1);
                self.end_attempt();
                self.carried_over = true;
            }
            E::MissionRetried { .. } => {
                self.status = S::Queued;
                self.attempt = 0;
                self.retries += 1;
            }
        }
        self.enqueued_at_ms = self.enqueued_at_ms.or(Some(event.at_ms()));
        self.updated_at_ms = Some(event.at_ms());
        let attempt_max = self.spec.as_ref().map_or(0, |spec| spec.attempt_max);
        assert!(self.attempt <= attempt_max, "attempt went past attempt_max");
    }
}

impl Mission {
    fn end_attempt(&mut self) {
        self.worker_id = None;
        self.lease_expires_at_ms = None;
    }

    fn after_attempt(&mut self, retry_at_ms: Option<i64>) {
        self.end_attempt();
        self.carried_over = false;
        match retry_at_ms {
            Some(at) => {
                self.status = MissionStatus::Pending;
                self.due_at_ms = Some(at);
            }
            None => self.status = MissionStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
