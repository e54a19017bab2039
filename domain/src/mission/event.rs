//! What happened to a mission: its events, as stored (they only ever gain fields).

use serde::{Deserialize, Serialize};

use super::{ChildOutcome, LlmCall, MissionSpec, ToolCallRecord};
use crate::aggregate::{DomainEvent, Upcaster};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MissionEvent {
    MissionEnqueued {
        spec: MissionSpec,
        due_at_ms: i64,
        at_ms: i64,
    },
    MissionRetryDue {
        at_ms: i64,
    },
    /// Schema version 2 added `lease_ms` (see [`super::upcast`]).
    MissionStarted {
        worker_id: String,
        attempt: u32,
        /// The length of the lease granted, which the holder renews by.
        lease_ms: u64,
        lease_expires_at_ms: i64,
        at_ms: i64,
    },
    MissionProgressed {
        attempt: u32,
        lease_expires_at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        at_ms: i64,
    },
    /// One call through the LLM gateway, as the agent made it.
    MissionLlmCalled {
        attempt: u32,
        call: LlmCall,
        at_ms: i64,
    },
    /// One tool call the model asked for, run or refused.
    MissionToolCalled {
        attempt: u32,
        call: ToolCallRecord,
        at_ms: i64,
    },
    MissionCompleted {
        attempt: u32,
        result: serde_json::Value,
        at_ms: i64,
    },
    /// `retry_at_ms` is set when another attempt is scheduled; unset, the mission has failed.
    MissionAttemptFailed {
        attempt: u32,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<i64>,
        at_ms: i64,
    },
    MissionLeaseExpired {
        attempt: u32,
        worker_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<i64>,
        at_ms: i64,
    },
    MissionCancelled {
        reason: String,
        by: String,
        at_ms: i64,
    },
    /// Waits for `children` (spawned at the tool call `call_id` of step `step` of `attempt`);
    /// the attempt is not counted, and goes on when the mission is resumed.
    MissionSuspended {
        attempt: u32,
        step: u32,
        call_id: String,
        children: Vec<String>,
        at_ms: i64,
    },
    MissionChildFinished {
        outcome: ChildOutcome,
        at_ms: i64,
    },
    /// Its last child ended: queued again, to go on under the same attempt.
    MissionResumed {
        at_ms: i64,
    },
    /// A fork of the run of `attempt`, replaying its first `steps`, was enqueued as `fork_id`.
    MissionForked {
        fork_id: String,
        attempt: u32,
        steps: u32,
        by: String,
        at_ms: i64,
    },
    /// Handed back unfinished by the worker holding `attempt`, which is not counted.
    MissionReleased {
        attempt: u32,
        worker_id: String,
        reason: String,
        at_ms: i64,
    },
    /// A failed mission queued again by hand. `reason` came later, as an optional field: the
    /// retries recorded before it read as given none.
    MissionRetried {
        by: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        at_ms: i64,
    },
    /// A copy of this finished mission, run afresh from its spec, was enqueued as `copy_id`.
    MissionCopied {
        copy_id: String,
        reason: String,
        by: String,
        at_ms: i64,
    },
}

impl MissionEvent {
    /// When the command that led to this event was decided (Unix ms).
    pub fn at_ms(&self) -> i64 {
        use MissionEvent as E;
        match self {
            E::MissionEnqueued { at_ms, .. }
            | E::MissionRetryDue { at_ms }
            | E::MissionStarted { at_ms, .. }
            | E::MissionProgressed { at_ms, .. }
            | E::MissionLlmCalled { at_ms, .. }
            | E::MissionToolCalled { at_ms, .. }
            | E::MissionCompleted { at_ms, .. }
            | E::MissionAttemptFailed { at_ms, .. }
            | E::MissionLeaseExpired { at_ms, .. }
            | E::MissionCancelled { at_ms, .. }
            | E::MissionReleased { at_ms, .. }
            | E::MissionSuspended { at_ms, .. }
            | E::MissionChildFinished { at_ms, .. }
            | E::MissionResumed { at_ms }
            | E::MissionForked { at_ms, .. }
            | E::MissionRetried { at_ms, .. }
            | E::MissionCopied { at_ms, .. } => *at_ms,
        }
    }
}

impl DomainEvent for MissionEvent {
    const UPCASTERS: &'static [Upcaster] = super::upcast::UPCASTERS;

    fn event_type(&self) -> &'static str {
        match self {
            MissionEvent::MissionEnqueued { .. } => "MissionEnqueued",
            MissionEvent::MissionRetryDue { .. } => "MissionRetryDue",
            MissionEvent::MissionStarted { .. } => "MissionStarted",
            MissionEvent::MissionProgressed { .. } => "MissionProgressed",
            MissionEvent::MissionLlmCalled { .. } => "MissionLlmCalled",
            MissionEvent::MissionToolCalled { .. } => "MissionToolCalled",
            MissionEvent::MissionCompleted { .. } => "MissionCompleted",
            MissionEvent::MissionAttemptFailed { .. } => "MissionAttemptFailed",
            MissionEvent::MissionLeaseExpired { .. } => "MissionLeaseExpired",
            MissionEvent::MissionCancelled { .. } => "MissionCancelled",
            MissionEvent::MissionReleased { .. } => "MissionReleased",
            MissionEvent::MissionRetried { .. } => "MissionRetried",
            MissionEvent::MissionSuspended { .. } => "MissionSuspended",
            MissionEvent::MissionChildFinished { .. } => "MissionChildFinished",
            MissionEvent::MissionResumed { .. } => "MissionResumed",
            MissionEvent::MissionForked { .. } => "MissionForked",
            MissionEvent::MissionCopied { .. } => "MissionCopied",
        }
    }
}
