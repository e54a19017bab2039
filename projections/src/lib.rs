//! BRAiN's projectors: each one a pure transition from events to changes of a read model,
//! and the contract ([`ProjectionStore`]) that the adapter holding that read model fulfils.
//!
//! Nothing here does I/O. The runtime in `brain` feeds events, in position order, from
//! PostgreSQL (catch-up, rebuild, holes) or JetStream (live); the checkpoint rule that makes a
//! redelivery or a restart harmless is written once, in [`checkpoint`].

pub mod agent_view;
pub mod checkpoint;
pub mod conversation_list;
pub mod event_type_stats;
pub mod llm_usage;
pub mod mission_list;
pub mod mission_queue;
pub mod mission_tree;

use std::future::Future;

use domain::RecordedEvent;

pub use checkpoint::{Admit, Checkpoint};

/// A read model's pure transition.
pub trait Projector: Send + Sync + 'static {
    /// One change to the read model, applied by its store adapter.
    type Change: Send + std::fmt::Debug;

    /// Stable name: the key of its checkpoint and of its JetStream consumer.
    fn name(&self) -> &'static str;

    /// The events this projector applies. The runtime reads only these (its JetStream
    /// consumer is filtered on their stream types, its reads of PostgreSQL on both) and still
    /// moves the checkpoint past the others; `apply` sees no other event.
    fn reads(&self) -> Reads;

    /// Appends what `event` changes to `changes`. Must depend on nothing but the event (and
    /// the store's current state, through the changes' own semantics), so that a rebuild
    /// from the log gives the live model again. An event this code cannot read (a type or
    /// layout from a newer release, during a rolling deploy) is [`Unreadable`]: never skipped
    /// (the model would be wrong for ever), never a panic (it would stop the server); the
    /// runtime stops this projector before it and lets another process lead it.
    fn apply(
        &self,
        event: &RecordedEvent,
        changes: &mut Vec<Self::Change>,
    ) -> Result<(), Unreadable>;
}

/// Which events a projector applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every event of the log.
    All,
    /// Only events of these stream types, each with all its event types or some.
    Streams(&'static [StreamEvents]),
}

/// One stream type a projector reads, and which of its event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEvents {
    pub stream_type: &'static str,
    /// `None`: every event type of the stream, including ones a newer release adds (which a
    /// projector that must not miss a transition then reports [`Unreadable`]). `Some`: only
    /// these; a projector declares this only if it ignores every other type anyway.
    pub event_types: Option<&'static [&'static str]>,
}

impl StreamEvents {
    /// Every event of streams of `stream_type`.
    pub const fn all(stream_type: &'static str) -> StreamEvents {
        StreamEvents { stream_type, event_types: None }
    }

    /// Only the events of these types in streams of `stream_type`.
    pub const fn only(
        stream_type: &'static str,
        event_types: &'static [&'static str],
    ) -> StreamEvents {
        StreamEvents { stream_type, event_types: Some(event_types) }
    }
}

impl Reads {
    pub fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        match self {
            Reads::All => true,
            Reads::Streams(streams) => streams.iter().any(|wanted| {
                wanted.stream_type == stream_type
                    && wanted.event_types.is_none_or(|types| types.contains(&event_type))
            }),
        }
    }

    /// Whether any event of streams of `stream_type` may be wanted.
    pub fn wants_stream_type(&self, stream_type: &str) -> bool {
        match self {
            Reads::All => true,
            Reads::Streams(streams) => streams.iter().any(|w| w.stream_type == stream_type),
        }
    }

    /// The stream types read, `None` for all.
    pub fn stream_types(&self) -> Option<Vec<&'static str>> {
        match self {
            Reads::All => None,
            Reads::Streams(streams) => Some(streams.iter().map(|w| w.stream_type).collect()),
        }
    }
}

/// An event a projector cannot read, at its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: cannot read {event_type}: {message}")]
pub struct Unreadable {
    pub position: u64,
    pub event_type: String,
    pub message: String,
}

impl Unreadable {
    pub fn of(event: &RecordedEvent, error: impl std::fmt::Display) -> Unreadable {
        Unreadable {
            position: event.global_position,
            event_type: event.event_type.clone(),
            message: error.to_string(),
        }
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError<E> {
    /// The stored checkpoint is not where the batch starts: another writer (a rebuild's swap)
    /// moved it. Nothing was applied; continue from `actual`.
    Moved { actual: u64 },
    /// The store failed; nothing was applied.
    Store(E),
}

/// Where a projector's read model lives (PostgreSQL tables, Redis keys, ...).
pub trait ProjectionStore<C>: Send {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The last position whose effects are in the store (0 before any).
    fn checkpoint(&mut self) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Applies `changes`, which came from events in `after < position <= up_to`, and moves
    /// the checkpoint from `after` to `up_to`, atomically (design invariant 4).
    fn commit(
        &mut self,
        after: u64,
        up_to: u64,
        changes: Vec<C>,
    ) -> impl Future<Output = Result<(), CommitError<Self::Error>>> + Send;

    /// Drops the whole read model and its checkpoint (back to 0), for when the log it was
    /// built from is gone: its checkpoint is ahead of the store's head (a database restored
    /// or recreated while the read model was kept).
    fn reset(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projector_wants_its_stream_types_and_only_the_event_types_it_names() {
        const READS: Reads = Reads::Streams(&[
            StreamEvents::only("mission", &["MissionLlmCalled"]),
            StreamEvents::all("llm_call"),
        ]);
        assert!(READS.wants("mission", "MissionLlmCalled"));
        assert!(!READS.wants("mission", "MissionStarted"));
        assert!(READS.wants("llm_call", "LlmCalled"));
        assert!(READS.wants("llm_call", "AnyTypeOfANewerRelease"));
        assert!(!READS.wants("agent", "AgentRegistered"));
        assert!(READS.wants_stream_type("mission") && !READS.wants_stream_type("agent"));
        assert_eq!(READS.stream_types(), Some(vec!["mission", "llm_call"]));
        assert!(Reads::All.wants("anything", "Whatever"));
        assert_eq!(Reads::All.stream_types(), None);
    }
}
