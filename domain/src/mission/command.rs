//! What can be asked of a mission: the commands its aggregate decides on.

use super::{ChildOutcome, LlmCall, MissionSpec, ToolCallRecord};

#[derive(Debug, Clone, PartialEq)]
pub enum MissionCommand {
    Enqueue {
        spec: MissionSpec,
        now_ms: i64,
    },
    /// A worker claimed the mission from the queue.
    Start {
        worker_id: String,
        lease_ms: u64,
        now_ms: i64,
    },
    /// The worker is alive and still working: extends its lease.
    Progress {
        worker_id: String,
        attempt: u32,
        lease_ms: u64,
        note: Option<String>,
        now_ms: i64,
    },
    Complete {
        worker_id: String,
        attempt: u32,
        result: serde_json::Value,
        now_ms: i64,
    },
    /// The attempt failed. `backoff_ms` is the wait before the next attempt, if one is allowed.
    Fail {
        worker_id: String,
        attempt: u32,
        error: String,
        retryable: bool,
        backoff_ms: u64,
        now_ms: i64,
    },
    /// The worker hands the mission back unfinished (it is shutting down): queued again,
    /// and the attempt does not count against `max_attempts`.
    Release {
        worker_id: String,
        attempt: u32,
        reason: String,
        now_ms: i64,
    },
    /// The holder's agent made an LLM call: recorded in the mission's history, fenced like
    /// any report of the holder.
    RecordLlmCall {
        worker_id: String,
        attempt: u32,
        call: LlmCall,
        now_ms: i64,
    },
    /// The holder's agent ran (or refused) a tool call: recorded, fenced the same way.
    RecordToolCall {
        worker_id: String,
        attempt: u32,
        call: ToolCallRecord,
        now_ms: i64,
    },
    /// The holder's agent spawned `children` (enqueued in the same atomic group) at the tool
    /// call `call_id` of its step `step`, and waits for them without holding the lease.
    Suspend {
        worker_id: String,
        attempt: u32,
        step: u32,
        call_id: String,
        children: Vec<String>,
        now_ms: i64,
    },
    /// Children ended. Reported by whoever sees a child's last event, maybe more than once:
    /// a child the mission is not waiting for changes nothing.
    ReportChildren {
        outcomes: Vec<ChildOutcome>,
        now_ms: i64,
    },
    /// A fork of this mission's run was enqueued as `fork_id`.
    RecordFork {
        fork_id: String,
        attempt: u32,
        steps: u32,
        by: String,
        now_ms: i64,
    },
    /// A pending mission's time has come.
    MarkDue {
        now_ms: i64,
    },
    /// The supervisor found the lease past its expiry: the worker is presumed dead.
    ExpireLease {
        backoff_ms: u64,
        now_ms: i64,
    },
    /// The holder was declared dead before its lease ran out (its agent marked unresponsive):
    /// the lease ends now, as an expiry would end it.
    RevokeLease {
        worker_id: String,
        backoff_ms: u64,
        now_ms: i64,
    },
    Cancel {
        reason: String,
        by: String,
        now_ms: i64,
    },
    /// Run a failed mission again, with a fresh count of attempts.
    Retry {
        by: String,
        /// Why, for the history; may be empty.
        reason: String,
        now_ms: i64,
    },
    /// A copy of this finished mission was enqueued as `copy_id` (a re-enqueue).
    RecordCopy {
        copy_id: String,
        reason: String,
        by: String,
        now_ms: i64,
    },
}
