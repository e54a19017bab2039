//! A chat with an agent as an aggregate: one stream per conversation (`conversation/<id>`),
//! holding every turn, so a conversation continues across processes and restarts, and can be
//! read back (or replayed) from the log.
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | `ConversationStarted` (agent kind, who) | open |
//! | open | `ConversationMessageAdded` (role, text; an answer also its provider, model, usage) | open, one more message |

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent, Snapshots};

/// Longest message one turn may carry, in characters.
pub const MESSAGE_LEN_MAX: usize = 32_000;
/// Most messages one conversation holds (both sides).
pub const MESSAGES_MAX: usize = 1_000;

/// Events between two snapshots of a conversation.
pub const SNAPSHOT_EVERY: u64 = 200;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    User,
    Agent,
}

/// One message of a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
    /// For an agent's answer: who answered and what it used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    /// Adds a turn, starting the conversation with `agent` if it has none yet.
    Add { agent: String, by: String, turn: Turn },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationStarted { agent: String, by: String, at_ms: i64 },
    ConversationMessageAdded { turn: Turn },
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted",
            ConversationEvent::ConversationMessageAdded { .. } => "ConversationMessageAdded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("this conversation is with {started_with}, not {asked}")]
    OtherAgent { started_with: String, asked: String },
    #[error("the conversation holds its most messages ({MESSAGES_MAX}): start another")]
    Full,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `None` until started.
    pub agent: Option<String>,
    pub started_by: String,
    pub turns: Vec<Turn>,
}

impl Aggregate for Conversation {
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;

    /// A conversation's state is every turn, so each snapshot rewrites them all: taken less
    /// often than an agent's, it still bounds a load at its last snapshot and 200 events.
    const SNAPSHOTS: Option<Snapshots<Self>> = Some(Snapshots::json(SNAPSHOT_EVERY, 1));

    fn stream_type() -> StreamType {
        StreamType::parse("conversation").expect("a valid stream type")
    }

    fn decide(
        &self,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        let ConversationCommand::Add { agent, by, turn } = command;
        if turn.text.trim().is_empty() || turn.text.chars().count() > MESSAGE_LEN_MAX {
            return Err(ConversationError::Invalid {
                field: "message",
                reason: format!("1 to {MESSAGE_LEN_MAX} characters, not blank"),
            });
        }
        if self.turns.len() >= MESSAGES_MAX {
            return Err(ConversationError::Full);
        }
        let mut events = Vec::new();
        match &self.agent {
            None => {
                events.push(ConversationEvent::ConversationStarted { agent, by, at_ms: turn.at_ms })
            }
            Some(started_with) if *started_with != agent => {
                return Err(ConversationError::OtherAgent {
                    started_with: started_with.clone(),
                    asked: agent,
                });
            }
            Some(_) => {}
        }
        events.push(ConversationEvent::ConversationMessageAdded { turn });
        Ok(events)
    }

    fn apply(&mut self, event: &ConversationEvent) {
        match event {
            ConversationEvent::ConversationStarted { agent, by, .. } => {
                self.agent = Some(agent.clone());
                self.started_by = by.clone();
            }
            ConversationEvent::ConversationMessageAdded { turn } => self.turns.push(turn.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(speaker: Speaker, text: &str) -> Turn {
        Turn {
            speaker,
            text: text.into(),
            provider: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            at_ms: 1,
        }
    }

    #[test]
    fn a_conversation_starts_with_its_first_turn_and_stays_with_its_agent() {
        let add = |agent: &str, t| ConversationCommand::Add {
            agent: agent.into(),
            by: "ann".into(),
            turn: t,
        };
        let events =
            Conversation::default().decide(add("coder", turn(Speaker::User, "hi"))).unwrap();
        assert_eq!(events.len(), 2);
        let conversation = Conversation::fold(&events);
        assert_eq!((conversation.agent.as_deref(), conversation.turns.len()), (Some("coder"), 1));
        assert_eq!(
            conversation.decide(add("coder", turn(Speaker::Agent, "hello"))).unwrap().len(),
            1
        );
        assert!(matches!(
            conversation.decide(add("ops", turn(Speaker::User, "x"))),
            Err(ConversationError::OtherAgent { .. })
        ));
        assert!(matches!(
            conversation.decide(add("coder", turn(Speaker::User, " "))),
            Err(ConversationError::Invalid { field: "message", .. })
        ));
    }
}
