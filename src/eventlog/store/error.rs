//! Errors of the event store boundary.

use std::sync::Arc;

use domain::{StreamId, StreamType};

/// Why an append was refused or did not happen. Clone, because one database failure answers
/// every command of the batch it hit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Another command changed the stream first (design invariant 5). Re-decide against the
    /// fresh state, or answer 409.
    #[error(
        "stream {stream_type}/{stream_id} is at version {actual}, the command expected {expected}"
    )]
    Conflict { stream_type: StreamType, stream_id: StreamId, expected: u64, actual: u64 },
    #[error("an append needs at least one event")]
    NoEvents,
    #[error("an append of {count} events is over the limit of {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("event type {event_type:?} must be 1 to 128 characters of A-Z, a-z, 0-9 and _")]
    InvalidEventType { event_type: String },
    #[error("event {index} has a {bytes}-byte payload, the limit is {max}")]
    PayloadTooLarge { index: usize, bytes: usize, max: usize },
    /// A string the store cannot carry (PostgreSQL refuses NUL in `text` and `jsonb`).
    #[error("{path} holds a NUL character (U+0000), which cannot be stored")]
    Unstorable { index: Option<usize>, path: String },
    #[error("actor is {bytes} bytes long, the limit is {max}")]
    ActorTooLong { bytes: usize, max: usize },
    #[error("a group of {count} appends is over the limit of {max}")]
    TooManyAppends { count: usize, max: usize },
    #[error("a group of {bytes} payload bytes is over the limit of {max}")]
    GroupTooLarge { bytes: usize, max: usize },
    /// One append of a group broke a limit; the group was refused whole.
    #[error("append {index} of the group: {error}")]
    InGroup { index: usize, error: Box<AppendError> },
    #[error("event store is shutting down")]
    Closed,
    /// PostgreSQL refused what this command carries (found by isolating it from its batch,
    /// whose other commands went in).
    #[error("the event store refused the command: {message}")]
    Refused { message: String },
    /// The batch's transaction failed before it was committed: nothing was written, and a
    /// retry is safe.
    #[error("event store: {0}")]
    Database(Arc<sqlx::Error>),
    /// The commit was sent and its answer never came: the command may or may not have been
    /// recorded. A retry with the same command id learns which without appending twice.
    #[error("the event store's commit did not answer ({0}); the outcome is unknown")]
    OutcomeUnknown(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> AppendError {
        AppendError::Database(Arc::new(error))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Database(#[from] sqlx::Error),
    /// A read did not answer within `READ_TIMEOUT` (a dead connection); it was closed.
    #[error("event store: no answer within the read deadline")]
    Timeout,
    /// A stored row that breaks the store's own rules: a bug, never user input.
    #[error("event store holds a corrupt row: {0}")]
    Corrupt(String),
}
