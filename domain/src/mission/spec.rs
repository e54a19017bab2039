//! What an enqueue fixes about a mission, and the checks a caller's spec must pass.

use serde::{Deserialize, Serialize};

use super::MissionError;
use super::tree::{CopyLink, ForkLink, ParentLink};

pub const NAME_LEN_MAX: usize = 200;
pub const DESCRIPTION_LEN_MAX: usize = 4_000;
pub const ATTEMPT_MAX_DEFAULT: u32 = 3;
pub const ATTEMPT_MAX_LIMIT: u32 = 100;
pub const AGENT_LEN_MAX: usize = 64;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

/// Everything an enqueue fixes about a mission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissionSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub priority: Priority,
    /// Any JSON object, handed to the agent.
    pub payload: serde_json::Value,
    /// The kind of agent that runs it: `coder`, `ops`, ...
    pub agent: String,
    pub attempt_max: u32,
    /// Deadline of one attempt, enforced by the worker.
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// What this mission's LLM calls may spend, over all its attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::Budget>,
    /// The mission that spawned this one and waits for it (set by a fan-out, never by an
    /// API caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// The run this one was forked from: its first steps replay that run's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkLink>,
    /// The finished mission this one is a copy of (a re-enqueue): run afresh, not replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopyLink>,
}

pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> MissionError {
    MissionError::Invalid { field, reason: reason.into() }
}

/// Checks an agent kind's name: 1 to 64 characters of a-z, 0-9, `_` and `-`.
pub fn check_agent(agent: &str) -> Result<(), MissionError> {
    let agent_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if agent.is_empty() || agent.len() > AGENT_LEN_MAX || !agent.chars().all(agent_ok) {
        return Err(invalid(
            "agent",
            format!("must be 1 to {AGENT_LEN_MAX} characters of a-z, 0-9, _ and -"),
        ));
    }
    Ok(())
}

/// Checks a spec as given by a caller; every refusal names the field.
pub fn validate_spec(spec: &MissionSpec) -> Result<(), MissionError> {
    let name = spec.name.trim();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if spec.name.chars().count() > NAME_LEN_MAX {
        return Err(invalid("name", format!("must be at most {NAME_LEN_MAX} characters")));
    }
    if spec.description.chars().count() > DESCRIPTION_LEN_MAX {
        return Err(invalid(
            "description",
            format!("must be at most {DESCRIPTION_LEN_MAX} characters"),
        ));
    }
    if !spec.payload.is_object() {
        return Err(invalid("payload", "must be a JSON object"));
    }
    check_agent(&spec.agent)?;
    if spec.attempt_max == 0 || spec.attempt_max > ATTEMPT_MAX_LIMIT {
        return Err(invalid("max_attempts", format!("must be between 1 and {ATTEMPT_MAX_LIMIT}")));
    }
    if spec.timeout_ms == 0 {
        return Err(invalid("timeout_s", "must be positive"));
    }
    if let Some(budget) = &spec.budget
        && let Err(bad) = budget.check()
    {
        let field = match bad.field {
            "tokens_max" => "budget.tokens_max",
            _ => "budget.cost_usd_max",
        };
        return Err(invalid(field, bad.reason));
    }
    if let Some(parent) = &spec.parent
        && parent.depth > super::DEPTH_MAX
    {
        return Err(invalid(
            "parent",
            format!("depth limit: missions nest at most {} deep", super::DEPTH_MAX),
        ));
    }
    Ok(())
}
