//! Missions that fan out and wait: the links between a parent and its children, what a
//! parent learns when a child ends, and the links between a run and its fork or its copy.
//!
//! A parent that spawns children is suspended (`MissionSuspended`, naming them): it holds no
//! worker and no lease. Each child's end is reported to it (`MissionChildFinished`, its
//! status and result or error); the report of the last one it waits for also resumes it
//! (`MissionResumed`, queued again under the same attempt), and its agent carries on with
//! what its children did.

use serde::{Deserialize, Serialize};

use super::{MissionEvent, MissionStatus};

/// Children one mission may spawn over its whole life.
pub const CHILDREN_MAX: usize = 100;
/// How deep missions may nest: a root mission is at depth 0.
pub const DEPTH_MAX: u32 = 3;
/// Longest child result its parent's history keeps, in bytes of JSON text; the whole result
/// stays in the child's own history.
pub const CHILD_RESULT_BYTES_MAX: usize = 16 * 1024;

/// Where a child comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub mission_id: String,
    /// The parent's depth plus one.
    pub depth: u32,
    /// The mission at the top of the tree: its budget is the whole tree's.
    pub root: String,
}

/// The run a fork replays its first steps from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkLink {
    pub mission_id: String,
    pub attempt: u32,
    /// Steps (model calls, with the tool calls each asked for) taken from the record.
    pub steps: u32,
}

/// The finished mission a copy was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyLink {
    pub mission_id: String,
}

/// How a child ended, as its parent is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub mission_id: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: MissionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChildOutcome {
    /// How mission `mission_id` ended, if `event` ends it (for good: a failed attempt that is
    /// retried does not).
    pub fn of(mission_id: &str, event: &MissionEvent) -> Option<ChildOutcome> {
        use MissionEvent as E;
        let ended = |status, result, error| {
            Some(ChildOutcome { mission_id: mission_id.to_owned(), status, result, error })
        };
        match event {
            E::MissionCompleted { result, .. } => {
                ended(MissionStatus::Completed, Some(cut(result, CHILD_RESULT_BYTES_MAX)), None)
            }
            E::MissionAttemptFailed { error, retry_at_ms: None, .. } => {
                ended(MissionStatus::Failed, None, Some(error.clone()))
            }
            E::MissionLeaseExpired { retry_at_ms: None, .. } => {
                ended(MissionStatus::Failed, None, Some(super::LEASE_EXPIRED_ERROR.to_owned()))
            }
            E::MissionCancelled { reason, .. } => {
                ended(MissionStatus::Cancelled, None, Some(reason.clone()))
            }
            _ => None,
        }
    }
}

/// `value` whole when its JSON text fits in `bytes_max`, else its first bytes and its size.
pub fn cut(value: &serde_json::Value, bytes_max: usize) -> serde_json::Value {
    let text = value.to_string();
    if text.len() <= bytes_max {
        return value.clone();
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({ "truncated": true, "bytes": text.len(), "head": &text[..end] })
}
