//! The relay: copies committed events from PostgreSQL to JetStream, in position order, so
//! that each event's stream sequence equals its `global_position` (design invariant 3).
//!
//! JetStream's own state is the checkpoint: the relay asks the stream for its last sequence,
//! reads the events after it from the store and publishes them with `Nats-Msg-Id` = event id
//! and `Nats-Expected-Last-Sequence` = position - 1, many in flight. Any surprise (an ack
//! that disagrees, a timeout, NATS gone, a stream that lost its tail after a crash) ends the
//! round: the relay asks the stream again where it stands and carries on from there. The
//! expected-sequence header is what makes this safe even if two relays ever publish at once:
//! the server refuses a message that would not land at its position.
//!
//! One relay per namespace is active at a time: it holds a PostgreSQL advisory lock on a
//! connection of its own. Others stand by, trying the lock, and take over when the holder's
//! connection goes away (process killed, network cut). The lock is for efficiency; the
//! headers above are what keep the stream correct.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::config::Namespace;
use crate::eventlog::bus;
use crate::eventlog::leader::{self, Leadership};
use crate::eventlog::store::{self, StoreError};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events read from PostgreSQL per query.
    pub page_events_max: u32,
    /// Publishes awaiting their acknowledgement at once.
    pub inflight_max: usize,
    /// How often an idle relay checks the stream for a lost tail, and a standby the lock.
    pub idle_check: Duration,
    /// Wait before retrying after an error (NATS or PostgreSQL unreachable).
    pub retry_backoff: Duration,
    /// How long shutdown waits for the relay to publish what is already committed.
    pub flush_timeout: Duration,
    /// Fault injection for tests: after sending this many publishes, stop at once without
    /// awaiting their acknowledgements, as a killed process would.
    pub crash_after_publishes: Option<u64>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            page_events_max: 2_000,
            inflight_max: 1_024,
            idle_check: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(200),
            flush_timeout: Duration::from_secs(10),
            crash_after_publishes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("relay database connection: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("publishing event {position}: {message}")]
    Publish { position: u64, message: String },
    #[error(
        "stream holds {stream_last} messages but the store only {store_head} events: it belongs to another store"
    )]
    StreamAhead { stream_last: u64, store_head: u64 },
    #[error(
        "the stream's message {position} is event {on_bus:?}, the store's is {in_store}: the stream belongs to another store or to an earlier copy of this one; delete the stream to have it rebuilt"
    )]
    StreamDiverged { position: u64, on_bus: String, in_store: uuid::Uuid },
    #[error("stopped by fault injection after {0} publishes")]
    InjectedCrash(u64),
}

pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    namespace: Namespace,
    config: RelayConfig,
    published: Arc<AtomicU64>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        client: async_nats::Client,
        namespace: Namespace,
        config: RelayConfig,
    ) -> Relay {
        let jetstream = bus::jetstream(client, config.inflight_max);
        Relay { pool, jetstream, namespace, config, published: Arc::default() }
    }

    /// Events this relay has published and seen confirmed, shared with the caller.
    pub fn published_counter(&self) -> Arc<AtomicU64> {
        self.published.clone()
    }

    /// Runs until `shutdown` is cancelled: stands by until it holds the namespace's lock,
    /// then relays. On shutdown the active relay first publishes what is already committed.
    /// Returns an error only for fault injection; every other failure is logged and retried.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let lock = format!("{}:relay", self.namespace);
        while !shutdown.is_cancelled() {
            let result =
                match leader::acquire(&self.pool, &lock, self.config.idle_check, &shutdown).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(mut leadership)) => {
                        metrics::gauge!("brain_relay_active").set(1.0);
                        let result = self.relay(&mut leadership, &shutdown).await;
                        metrics::gauge!("brain_relay_active").set(0.0);
                        result
                    }
                    Err(error) => Err(error.into()),
                };
            match result {
                Ok(()) => {}
                Err(error @ RelayError::InjectedCrash(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "relay interrupted, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(self.config.retry_backoff) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn relay(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&store::notify_channel(self.namespace.as_str())).await?;
        let mut published = self.stream_last_sequence().await?;
        let mut sent_total = 0u64;
        loop {
            let head = store::head(&self.pool).await?;
            metrics::gauge!("brain_relay_lag_events").set(head.saturating_sub(published) as f64);
            if published > head {
                return Err(RelayError::StreamAhead { stream_last: published, store_head: head });
            }
            if published < head {
                published = self.publish_page(published, head, &mut sent_total).await?;
                continue;
            }
            if shutdown.is_cancelled() {
                tracing::info!(position = published, "relay flushed, stopping");
                return Ok(());
            }
            // Idle: wait for a commit's NOTIFY, or check the stream and our lock on a tick.
            tokio::select! {
                notification = listener.recv() => { notification?; }
                _ = tokio::time::sleep(self.config.idle_check) => {
                    leadership.check().await?;
                    let last = self.stream_last_sequence().await?;
                    if last < published {
                        tracing::warn!(last, published, "stream lost its tail, publishing it again");
                    }
                    published = last;
                }
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// The stream's last sequence, after checking that the message there is the store's
    /// event at that position. A stream from another store (or from before a database
    /// restore) would otherwise be extended as if it matched, silently.
    pub async fn stream_last_sequence(&self) -> Result<u64, RelayError> {
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let last = stream.cached_info().state.last_sequence;
        if last == 0 {
            return Ok(0);
        }
        // A message already removed by a retention limit cannot be checked; nothing to do.
        let Ok(message) = stream.get_raw_message(last).await else { return Ok(last) };
        let on_bus = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let in_store: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM events WHERE global_position = $1")
                .bind(last as i64)
                .fetch_optional(&self.pool)
                .await?;
        match in_store {
            // The store is behind the stream: `relay` reports it as `StreamAhead`.
            None => Ok(last),
            Some(id) if id.to_string() == on_bus => Ok(last),
            Some(id) => Err(RelayError::StreamDiverged { position: last, on_bus, in_store: id }),
        }
    }

    /// Publishes the events after `published` (up to `head`, one page), many in flight,
    /// and returns the new last published position once every ack has confirmed it.
    async fn publish_page(
        &self,
        published: u64,
        head: u64,
        sent_total: &mut u64,
    ) -> Result<u64, RelayError> {
        let events =
            store::read_range_stored(&self.pool, published, head, self.config.page_events_max)
                .await?;
        let mut inflight = VecDeque::with_capacity(self.config.inflight_max);
        let mut confirmed = published;
        for event in &events {
            let envelope = bus::Envelope::from_stored(event);
            let position = envelope.global_position;
            if position != confirmed + inflight.len() as u64 + 1 {
                return Err(RelayError::Publish {
                    position,
                    message: format!("store returned it after {}", position - 1),
                });
            }
            let publish = PublishMessage::build()
                .payload(envelope.encode())
                .headers(envelope.headers())
                .expected_last_sequence(position - 1);
            let subject = envelope.subject(&self.namespace);
            let ack =
                self.jetstream.send_publish(subject, publish).await.map_err(|error| {
                    RelayError::Publish { position, message: error.to_string() }
                })?;
            inflight.push_back((position, ack));
            *sent_total += 1;
            if self.config.crash_after_publishes == Some(*sent_total) {
                return Err(RelayError::InjectedCrash(*sent_total));
            }
            if inflight.len() >= self.config.inflight_max {
                confirmed = confirm(inflight.pop_front().expect("not empty")).await?;
            }
        }
        while let Some(next) = inflight.pop_front() {
            confirmed = confirm(next).await?;
        }
        metrics::counter!("brain_relay_published_total").increment(confirmed - published);
        self.published.fetch_add(confirmed - published, Ordering::Relaxed);
        metrics::gauge!("brain_relay_position").set(confirmed as f64);
        Ok(confirmed)
    }
}

async fn confirm(
    (position, ack): (u64, jetstream::context::PublishAckFuture),
) -> Result<u64, RelayError> {
    let ack =
        ack.await.map_err(|error| RelayError::Publish { position, message: error.to_string() })?;
    // A duplicate ack names the sequence the message already has; anything but our
    // position means the stream and the store disagree, so resynchronise.
    if ack.sequence != position {
        return Err(RelayError::Publish {
            position,
            message: format!("stream stored it at sequence {}", ack.sequence),
        });
    }
    Ok(position)
}
