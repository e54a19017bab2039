//! Every event family the domain stores: per stream type, its event enum's types, their
//! current schema versions, and the one way a stored payload of it is read
//! ([`DomainEvent::upcast`]). The golden-file test walks this list, so an event enum the log
//! holds must be named here (a new aggregate adds one line); the event types within each
//! family come from the enum itself.

use serde_json::Value;

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, Upcaster};
use crate::names::StreamType;
use crate::{
    agent, agent_kind, api_key, conversation, heartbeat, llm_call, llm_config, mcp_config, mission,
};

/// One stream type and the event enum its streams hold.
#[derive(Clone, Copy)]
pub struct EventFamily {
    pub stream_type: fn() -> StreamType,
    /// The enum's event types, from its variants.
    pub event_types: fn() -> &'static [&'static str],
    /// The schema version an event type is written at today.
    pub current_version: fn(&str) -> u32,
    pub upcasters: &'static [Upcaster],
    /// Reads a stored event as the code does, and stores it again as the code would today.
    pub load: fn(&str, u32, Value) -> Result<Stored, UpcastError>,
}

/// An event as the code writes it: the form a stored event takes once loaded and written
/// again.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub payload: Value,
}

impl EventFamily {
    fn of<E: DomainEvent>(stream_type: fn() -> StreamType) -> EventFamily {
        EventFamily {
            stream_type,
            event_types: E::event_types,
            current_version: E::current_version,
            upcasters: E::UPCASTERS,
            load: load::<E>,
        }
    }
}

fn load<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    payload: Value,
) -> Result<Stored, UpcastError> {
    let event = E::upcast(event_type, schema_version, payload)?;
    Ok(Stored {
        event_type: event.event_type(),
        schema_version: event.schema_version(),
        payload: event.payload(),
    })
}

/// Every family, one per stream type.
pub fn families() -> [EventFamily; 9] {
    [
        EventFamily::of::<mission::MissionEvent>(mission::Mission::stream_type),
        EventFamily::of::<agent::AgentEvent>(agent::Agent::stream_type),
        EventFamily::of::<heartbeat::HeartbeatEvent>(heartbeat::stream_type),
        EventFamily::of::<agent_kind::AgentKindEvent>(agent_kind::AgentKinds::stream_type),
        EventFamily::of::<api_key::ApiKeyEvent>(api_key::ApiKey::stream_type),
        EventFamily::of::<conversation::ConversationEvent>(conversation::Conversation::stream_type),
        EventFamily::of::<llm_call::LlmCallEvent>(llm_call::stream_type),
        EventFamily::of::<llm_config::LlmConfigEvent>(llm_config::LlmConfig::stream_type),
        EventFamily::of::<mcp_config::McpConfigEvent>(mcp_config::McpConfig::stream_type),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::upcast::check_upcasters;

    #[test]
    fn every_familys_upcasters_reach_each_version_from_1_in_single_steps() {
        for family in families() {
            let stream_type = (family.stream_type)();
            let checked = check_upcasters(family.upcasters, (family.event_types)());
            assert_eq!(checked, Ok(()), "{}", stream_type.as_str());
        }
    }

    #[test]
    fn stream_types_and_event_types_are_each_held_by_one_family() {
        let mut stream_types = BTreeSet::new();
        let mut event_types = BTreeSet::new();
        for family in families() {
            assert!(stream_types.insert((family.stream_type)()), "a stream type named twice");
            for event_type in (family.event_types)() {
                assert!(event_types.insert(*event_type), "{event_type} in two families");
            }
        }
    }
}
