//! What an append must satisfy before it is queued: limits that keep every event storable
//! and publishable (a NATS header, one NATS message), checked once at the edge of the store.

use super::{Append, AppendError};

/// Most events one command may append; a larger append is a caller error.
pub const APPEND_EVENTS_MAX: usize = 1_000;

/// Largest payload of one event, as JSON text. Every event must fit one NATS message (1 MiB
/// by default, envelope and headers included) or the relay could never publish it.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// Longest event type; it travels in a NATS header, so only word characters are allowed.
pub const EVENT_TYPE_LEN_MAX: usize = 128;
/// Longest actor in an event's metadata.
pub const ACTOR_BYTES_MAX: usize = 256;

/// Payload bytes one transaction carries at most, so that one statement never grows towards
/// PostgreSQL's limits: the committer splits a larger batch into consecutive transactions,
/// and refuses an atomic group above it, since a group cannot be split.
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most appends one atomic group may hold.
pub const GROUP_APPENDS_MAX: usize = 1_000;

/// Checks every append of an atomic group, and the group's own bounds; returns its payload
/// bytes. A refused member is named by its index.
pub(super) fn validate_group(appends: &[Append]) -> Result<usize, AppendError> {
    if appends.len() > GROUP_APPENDS_MAX {
        return Err(AppendError::TooManyAppends { count: appends.len(), max: GROUP_APPENDS_MAX });
    }
    let mut total = 0;
    for (index, append) in appends.iter().enumerate() {
        total += validate(append)
            .map_err(|error| AppendError::InGroup { index, error: Box::new(error) })?;
    }
    if total > BATCH_PAYLOAD_BYTES_MAX {
        return Err(AppendError::GroupTooLarge { bytes: total, max: BATCH_PAYLOAD_BYTES_MAX });
    }
    Ok(total)
}

/// Checks what the store and the bus need of an append; returns its payload bytes.
pub fn validate(append: &Append) -> Result<usize, AppendError> {
    let count = append.events.len();
    if count == 0 {
        return Err(AppendError::NoEvents);
    }
    if count > APPEND_EVENTS_MAX {
        return Err(AppendError::TooManyEvents { count, max: APPEND_EVENTS_MAX });
    }
    let actor = append.metadata.actor.len();
    if actor > ACTOR_BYTES_MAX {
        return Err(AppendError::ActorTooLong { bytes: actor, max: ACTOR_BYTES_MAX });
    }
    let mut total = 0;
    for (index, event) in append.events.iter().enumerate() {
        let event_type = &event.event_type;
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if event_type.is_empty()
            || event_type.len() > EVENT_TYPE_LEN_MAX
            || !event_type.chars().all(word)
        {
            return Err(AppendError::InvalidEventType { event_type: event_type.clone() });
        }
        let bytes = serde_json::to_vec(&event.payload).map_or(usize::MAX, |json| json.len());
        if bytes > EVENT_PAYLOAD_BYTES_MAX {
            return Err(AppendError::PayloadTooLarge {
                index,
                bytes,
                max: EVENT_PAYLOAD_BYTES_MAX,
            });
        }
        total += bytes;
    }
    Ok(total)
}
