//! The agent kinds a deployment knows, as one aggregate (`agent_kinds/all`): each kind is a
//! queue of its own in Redis, so the set is bounded and grows only by a decision in the log
//! (an admin, or an agent key allowed to serve the kind), never by a mission naming a kind.
//! One stream holds them all so that the bound is decided atomically.
//!
//! | from | event | to |
//! |---|---|---|
//! | absent | `AgentKindRegistered` (kind) | registered |
//! | registered | `AgentKindRemoved` (kind, reason) | absent |

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::{StreamId, StreamType};

/// Most agent kinds one deployment may have.
pub const KINDS_MAX: usize = 256;
/// Longest reason for removing a kind, in characters.
pub const REASON_LEN_MAX: usize = 500;

/// The id of the one stream that holds every kind.
pub fn stream_id() -> StreamId {
    StreamId::parse("all").expect("a valid stream id")
}

#[derive(Debug, Clone, PartialEq)]
pub enum AgentKindCommand {
    /// Registers `kind`; registering a known kind changes nothing.
    Register {
        kind: String,
        now_ms: i64,
    },
    Remove {
        kind: String,
        reason: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentKindEvent {
    AgentKindRegistered { kind: String, at_ms: i64 },
    AgentKindRemoved { kind: String, reason: String, at_ms: i64 },
}

impl DomainEvent for AgentKindEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AgentKindEvent::AgentKindRegistered { .. } => "AgentKindRegistered",
            AgentKindEvent::AgentKindRemoved { .. } => "AgentKindRemoved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentKindError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the deployment has its most agent kinds ({KINDS_MAX}): remove one first")]
    Full,
    #[error("no agent kind {0:?}")]
    Unknown(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentKinds {
    pub kinds: BTreeSet<String>,
}

impl Aggregate for AgentKinds {
    type Command = AgentKindCommand;
    type Event = AgentKindEvent;
    type Error = AgentKindError;

    fn stream_type() -> StreamType {
        StreamType::parse("agent_kinds").expect("a valid stream type")
    }

    fn decide(&self, command: AgentKindCommand) -> Result<Vec<AgentKindEvent>, AgentKindError> {
        match command {
            AgentKindCommand::Register { kind, now_ms } => {
                crate::mission::check_agent(&kind).map_err(|error| AgentKindError::Invalid {
                    field: "kind",
                    reason: error.to_string(),
                })?;
                if self.kinds.contains(&kind) {
                    return Ok(Vec::new());
                }
                if self.kinds.len() >= KINDS_MAX {
                    return Err(AgentKindError::Full);
                }
                Ok(vec![AgentKindEvent::AgentKindRegistered { kind, at_ms: now_ms }])
            }
            AgentKindCommand::Remove { kind, reason, now_ms } => {
                if !self.kinds.contains(&kind) {
                    return Err(AgentKindError::Unknown(kind));
                }
                let length = reason.chars().count();
                if reason.trim().is_empty() || length > REASON_LEN_MAX {
                    return Err(AgentKindError::Invalid {
                        field: "reason",
                        reason: format!("1 to {REASON_LEN_MAX} characters, not blank"),
                    });
                }
                Ok(vec![AgentKindEvent::AgentKindRemoved { kind, reason, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &AgentKindEvent) {
        match event {
            AgentKindEvent::AgentKindRegistered { kind, .. } => {
                self.kinds.insert(kind.clone());
            }
            AgentKindEvent::AgentKindRemoved { kind, .. } => {
                self.kinds.remove(kind);
            }
        }
        assert!(self.kinds.len() <= KINDS_MAX, "more than {KINDS_MAX} agent kinds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(kind: &str) -> AgentKindEvent {
        AgentKindEvent::AgentKindRegistered { kind: kind.into(), at_ms: 1 }
    }

    fn register(kind: &str) -> AgentKindCommand {
        AgentKindCommand::Register { kind: kind.into(), now_ms: 2 }
    }

    #[test]
    fn registering_a_new_kind_records_it_and_a_known_one_changes_nothing() {
        let kinds = AgentKinds::fold(&[registered("coder")]);
        assert_eq!(
            kinds.decide(register("reviewer")),
            Ok(vec![AgentKindEvent::AgentKindRegistered { kind: "reviewer".into(), at_ms: 2 }])
        );
        assert_eq!(kinds.decide(register("coder")), Ok(vec![]));
    }

    #[test]
    fn a_kind_breaking_the_naming_rule_is_refused_naming_the_field() {
        let refused = AgentKinds::default().decide(register("Bad Kind"));
        assert!(
            matches!(refused, Err(AgentKindError::Invalid { field: "kind", .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn the_set_stops_at_its_bound_until_a_kind_is_removed() {
        let given: Vec<_> = (0..KINDS_MAX).map(|n| registered(&format!("k{n}"))).collect();
        let full = AgentKinds::fold(&given);
        assert_eq!(full.decide(register("one-more")), Err(AgentKindError::Full));
        let remove =
            AgentKindCommand::Remove { kind: "k0".into(), reason: "unused".into(), now_ms: 3 };
        let removed = full.decide(remove).unwrap();
        let mut after = full.clone();
        removed.iter().for_each(|event| after.apply(event));
        assert_eq!(after.decide(register("one-more")).unwrap().len(), 1);
    }

    #[test]
    fn removing_an_unknown_kind_or_without_a_reason_is_refused() {
        let kinds = AgentKinds::fold(&[registered("coder")]);
        let unknown =
            AgentKindCommand::Remove { kind: "ops".into(), reason: "x".into(), now_ms: 3 };
        assert_eq!(kinds.decide(unknown), Err(AgentKindError::Unknown("ops".into())));
        let blank =
            AgentKindCommand::Remove { kind: "coder".into(), reason: " ".into(), now_ms: 3 };
        assert!(matches!(
            kinds.decide(blank),
            Err(AgentKindError::Invalid { field: "reason", .. })
        ));
    }
}
