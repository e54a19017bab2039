//! Whether the JetStream stream mirrors the store, message by message, and rebuilding it when
//! it does not: the relay's means of recovering, without anyone's help, from a message it did
//! not publish (a forgery, a stream left from another store or from before a database
//! restore, a message deleted by hand).
//!
//! [`first_disagreement`] reads the stream's messages in a range and compares each with the
//! store's event at that position ([`verify`]), subject and routing headers included, since
//! outside subscribers route by them. A message the store has no event for (the stream is
//! ahead of the log), one that differs, and one missing above the stream's first sequence all
//! disagree.
//!
//! JetStream cannot change what a sequence holds: deleting or purging a message leaves its
//! sequence used, and a purge only removes messages *below* a sequence. So once a sequence
//! holds a message that is not the store's event, the stream can be made a mirror again only
//! by deleting it and publishing the log again from position 1 ([`rebuild`]), which keeps
//! stream sequence = global position (design invariant 3). Readers meanwhile take events from
//! PostgreSQL: a silent or vanished stream is something they already ride out.

use std::collections::HashMap;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sqlx::PgPool;

use crate::config::Namespace;
use crate::eventlog::bus::{self, BusError, Envelope};
use crate::eventlog::store::StoreError;
use crate::eventlog::verify::{self, Fingerprint};

/// Messages read from the stream at once while checking it.
pub const CHECK_CONCURRENCY: usize = 64;

/// Positions checked per store query.
const CHECK_PAGE: u64 = 1_024;

/// Where the stream stops mirroring the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub position: u64,
    pub kind: DisagreementKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisagreementKind {
    /// The stream holds a message where the store has no event yet.
    AheadOfStore,
    /// The message is not the store's event at its position.
    Differs,
    /// The message is gone (deleted by hand), above the stream's first sequence.
    Missing,
}

impl DisagreementKind {
    /// The label of `brain_relay_repairs_total`.
    pub fn label(self) -> &'static str {
        match self {
            DisagreementKind::AheadOfStore => "ahead_of_store",
            DisagreementKind::Differs => "differs",
            DisagreementKind::Missing => "missing",
        }
    }
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let position = self.position;
        match self.kind {
            DisagreementKind::AheadOfStore => {
                write!(f, "the stream holds a message at {position}, where the store has no event")
            }
            DisagreementKind::Differs => {
                write!(f, "the stream's message {position} is not the store's event {position}")
            }
            DisagreementKind::Missing => write!(f, "the stream's message {position} is missing"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("reading the stream's message {sequence}: {message}")]
    Read { sequence: u64, message: String },
    #[error("deleting the stream to rebuild it: {0}")]
    Delete(String),
}

/// The first message in `after < sequence <= up_to` that is not the store's event at its
/// position, reading [`CHECK_CONCURRENCY`] messages at a time and stopping at the first that
/// disagrees. Sequences below the stream's first (removed by an age or size limit) are not
/// checked.
pub async fn first_disagreement(
    pool: &PgPool,
    stream: &stream::Stream,
    namespace: &Namespace,
    after: u64,
    up_to: u64,
) -> Result<Option<Disagreement>, MirrorError> {
    let mut first = None;
    let found = |disagreement| {
        first = Some(disagreement);
        false
    };
    each_disagreement(pool, stream, namespace, after, up_to, found, |_| {}).await?;
    Ok(first)
}

/// Gives `found` each message in `after < sequence <= up_to` that is not the store's event
/// at its position, in order, until it answers false; `page_done` hears the last sequence
/// of each page checked. Sequences below the stream's first are not checked. Returns how
/// many messages were checked.
pub async fn each_disagreement(
    pool: &PgPool,
    stream: &stream::Stream,
    namespace: &Namespace,
    after: u64,
    up_to: u64,
    mut found: impl FnMut(Disagreement) -> bool,
    mut page_done: impl FnMut(u64),
) -> Result<u64, MirrorError> {
    let first_kept = stream.cached_info().state.first_sequence;
    let mut from = after.max(first_kept.saturating_sub(1));
    let mut checked = 0;
    while from < up_to {
        let to = up_to.min(from + CHECK_PAGE);
        let stored = verify::fingerprints(pool, from, to).await?;
        let mut reads = futures::stream::iter(from + 1..=to)
            .map(|sequence| async move { (sequence, stream.get_raw_message(sequence).await) })
            .buffered(CHECK_CONCURRENCY);
        while let Some((sequence, read)) = reads.next().await {
            checked += 1;
            if let Some(kind) = judge(sequence, read, &stored, namespace)?
                && !found(Disagreement { position: sequence, kind })
            {
                return Ok(checked);
            }
        }
        page_done(to);
        from = to;
    }
    Ok(checked)
}

/// Whether the message at `sequence` is the store's event there: `None` if it is.
pub async fn check_one(
    pool: &PgPool,
    stream: &stream::Stream,
    namespace: &Namespace,
    sequence: u64,
) -> Result<Option<DisagreementKind>, MirrorError> {
    let stored = verify::fingerprints(pool, sequence - 1, sequence).await?;
    let read = stream.get_raw_message(sequence).await;
    judge(sequence, read, &stored, namespace)
}

/// How one read message compares with the store's event at its sequence.
fn judge(
    sequence: u64,
    read: Result<jetstream::message::StreamMessage, stream::RawMessageError>,
    stored: &HashMap<u64, Fingerprint>,
    namespace: &Namespace,
) -> Result<Option<DisagreementKind>, MirrorError> {
    let message = match read {
        Ok(message) => message,
        Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => {
            return Ok(Some(DisagreementKind::Missing));
        }
        Err(error) => {
            return Err(MirrorError::Read { sequence, message: error.to_string() });
        }
    };
    if !stored.contains_key(&sequence) {
        return Ok(Some(DisagreementKind::AheadOfStore));
    }
    let genuine = Envelope::decode(&message.payload).is_ok_and(|envelope| {
        verify::is_the_stores(sequence, &envelope, stored)
            && message.subject.as_str() == envelope.subject(namespace)
            && same_routing_headers(&message.headers, &envelope.headers())
    });
    Ok((!genuine).then_some(DisagreementKind::Differs))
}

/// Whether a message carries the headers the relay puts on its event.
fn same_routing_headers(on_bus: &async_nats::HeaderMap, expected: &async_nats::HeaderMap) -> bool {
    [
        async_nats::header::NATS_MESSAGE_ID.as_ref(),
        bus::HEADER_EVENT_TYPE,
        bus::HEADER_SCHEMA_VERSION,
        bus::HEADER_STREAM_TYPE,
    ]
    .into_iter()
    .all(|name| on_bus.get(name) == expected.get(name))
}

/// Deletes the namespace's stream and creates it empty, for the relay to publish the log
/// into again from position 1.
pub async fn rebuild(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Result<stream::Stream, MirrorError> {
    let name = bus::stream_name(namespace);
    match jetstream.delete_stream(&name).await {
        Ok(_) => {}
        // Gone already (another reader of the namespace, or an operator, deleted it).
        Err(error) if error.to_string().contains("not found") => {}
        Err(error) => return Err(MirrorError::Delete(error.to_string())),
    }
    Ok(bus::ensure_stream(jetstream, namespace).await?)
}
