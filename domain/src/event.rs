//! Event envelopes: what a command hands to the store (`NewEvent` plus `EventMetadata`) and
//! what the store hands back (`RecordedEvent`, with its place in the global order).
//!
//! These types cross every boundary (PostgreSQL rows, the bus envelope, the JSON API), so
//! their serialised shape is a compatibility promise: fields are only ever added.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::names::{StreamId, StreamType};

/// The stream version an append expects to find, checked atomically with the append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Append whatever the stream holds. For streams with a single writer by construction
    /// (a heartbeat stream), where a conflict can only be a bug.
    Any,
    /// The stream must be at exactly this version; `Exact(0)` means it must not exist yet.
    Exact(u64),
}

/// Who caused an event and why (design invariant 7). One value is shared by all events of a
/// command; the store copies it onto each.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The principal that issued the command: an API key (`key:<id>`), a process's own part
    /// (`worker:w1`, `supervisor`), or the CLI (`cli`).
    pub actor: String,
    /// The name the actor's key had when it acted (`key:<id>` alone says which key, not whose):
    /// kept beside the id so that the audit trail reads without the key list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// Whom a key allowed to impersonate (`impersonate`) said it acted for (`X-Actor`):
    /// recorded beside the actor, never in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Shared by everything that follows from one outside request.
    pub correlation_id: Uuid,
    /// The event or command this one directly follows from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The command that produced the event; the idempotency key of the append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// When the command was decided, by the deciding process's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

impl EventMetadata {
    /// Metadata for a command with no outside cause: a fresh correlation id and no causation.
    pub fn new(actor: impl Into<String>, timestamp: OffsetDateTime) -> EventMetadata {
        EventMetadata {
            actor: actor.into(),
            actor_name: None,
            on_behalf_of: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            command_id: None,
            timestamp,
        }
    }
}

/// An event not yet stored: it gets its stream version and global position at commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    /// Past tense, PascalCase: `MissionEnqueued`.
    pub event_type: String,
    /// The payload's layout version; older ones are upcast when loaded.
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// An event at schema version 1 with a fresh, time-ordered id.
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
        }
    }
}

/// A stored event. `global_position` is its place in the one total order of the store
/// (1, 2, 3... gapless, in commit order) and equals its JetStream stream sequence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub global_position: u64,
    pub stream_type: StreamType,
    pub stream_id: StreamId,
    /// Its place in its own stream: 1, 2, 3... gapless.
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}
