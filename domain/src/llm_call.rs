//! LLM calls made outside any mission (through `POST /v1/chat/completions`), each in a stream
//! of its own (`llm_call/<call id>`, one event): the audit trail and the usage count hold for
//! them as for a mission's calls, which its own history records (`MissionLlmCalled`).

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::DomainEvent;
use crate::mission::LlmCall;

pub fn stream_type() -> StreamType {
    StreamType::parse("llm_call").expect("a valid stream type")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LlmCallEvent {
    /// `by`: who asked (the calling principal, `key:<id>`).
    LlmCalled { call: LlmCall, by: String, at_ms: i64 },
}

impl DomainEvent for LlmCallEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LlmCallEvent::LlmCalled { .. } => "LlmCalled",
        }
    }
}
