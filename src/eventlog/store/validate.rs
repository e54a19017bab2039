//! What an append must satisfy before it is queued: limits that keep every event storable
//! and publishable (a NATS header, one NATS message), checked once at the edge of the store.

use domain::text::{json_has_nul, nul_path};

use super::chain::Content;
use super::{Append, AppendError, canonical};

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

/// An append's payloads and metadata as JSON text. Encoded by the caller before the append
/// is queued, so that the committer, whose work is serial, only copies them.
pub(super) struct Encoded {
    pub payloads: Vec<String>,
    pub metadata: String,
    /// Each event's chain digest ([`super::chain::Content::digest`]), computed here rather
    /// than in the committer's transaction, whose work is serial.
    pub digests: Vec<[u8; 32]>,
    /// Payload bytes.
    pub bytes: usize,
}

/// Checks what the store and the bus need of an append; returns its payload bytes.
pub fn validate(append: &Append) -> Result<usize, AppendError> {
    check(append, |payload| (json_len(payload), nul_path(payload, "").is_some()))
}

/// [`validate`], keeping the JSON text it measured.
pub(super) fn encode(append: &Append) -> Result<Encoded, AppendError> {
    let mut payloads = Vec::with_capacity(append.events.len());
    let bytes = check(append, |payload| {
        let text = serde_json::to_string(payload).expect("a JSON value always serialises");
        let measured = (text.len(), json_has_nul(text.as_bytes()));
        payloads.push(text);
        measured
    })?;
    let metadata = serde_json::to_string(&append.metadata).expect("metadata always serialises");
    let digests = digests(append);
    Ok(Encoded { payloads, metadata, digests, bytes })
}

/// The chain digest of each event of an accepted append.
fn digests(append: &Append) -> Vec<[u8; 32]> {
    let metadata = serde_json::to_value(&append.metadata).expect("metadata always serialises");
    let metadata = canonical::to_vec(&metadata);
    let mut scratch = Vec::new();
    let events = append.events.iter().map(|event| {
        let content = Content {
            stream_type: append.stream_type.as_str(),
            stream_id: append.stream_id.as_str(),
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &event.payload,
        };
        content.digest(&metadata, &mut scratch)
    });
    events.collect()
}

/// [`encode`] for every append of an atomic group, and the group's own bounds. A refused
/// member is named by its index.
pub(super) fn encode_group(appends: &[Append]) -> Result<Vec<Encoded>, AppendError> {
    if appends.len() > GROUP_APPENDS_MAX {
        return Err(AppendError::TooManyAppends { count: appends.len(), max: GROUP_APPENDS_MAX });
    }
    let mut total = 0;
    let mut encoded = Vec::with_capacity(appends.len());
    for (index, append) in appends.iter().enumerate() {
        let append = encode(append)
            .map_err(|error| AppendError::InGroup { index, error: Box::new(error) })?;
        total += append.bytes;
        encoded.push(append);
    }
    if total > BATCH_PAYLOAD_BYTES_MAX {
        return Err(AppendError::GroupTooLarge { bytes: total, max: BATCH_PAYLOAD_BYTES_MAX });
    }
    Ok(encoded)
}

/// The checks, measuring each payload's JSON length, and whether it holds a NUL, with
/// `measure`.
fn check(
    append: &Append,
    mut measure: impl FnMut(&serde_json::Value) -> (usize, bool),
) -> Result<usize, AppendError> {
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
    if append.metadata.actor.contains('\0') {
        return Err(AppendError::Unstorable { index: None, path: "actor".to_owned() });
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
        let (bytes, nul) = measure(&event.payload);
        if nul {
            let path = nul_path(&event.payload, "payload").unwrap_or_else(|| "payload".into());
            return Err(AppendError::Unstorable { index: Some(index), path });
        }
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

/// The length of a value's JSON text, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}
