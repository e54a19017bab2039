//! The live event feed: one task per `brain serve` process follows the log and hands every
//! event, serialised to JSON once, to all of the process's WebSocket clients
//! (`GET /ws/events`, in `api::ws`).
//!
//! Why one shared fan-out rather than a JetStream consumer per client: a process should carry
//! ten thousand clients, and ten thousand consumers would mean ten thousand server-side
//! consumer states, ten thousand copies of every message on the NATS connection and ten
//! thousand envelope decodes per event. Here an event costs one JetStream delivery, one decode,
//! one check against the store and one JSON encoding per process; each client then costs an
//! `Arc` clone and a socket write.
//!
//! Why the feed follows JetStream and not PostgreSQL (LISTEN plus reads): PostgreSQL is the one
//! part that cannot be scaled out (every append serialises on its head row), so API processes
//! read live events from the bus, which exists to fan them out, and go to PostgreSQL only for
//! what the bus cannot give: the word that a message is genuine (a digest per event, below),
//! a hole, a silent bus, and a client's replay. Since the stream
//! sequence is the global position (design invariant 3), the feed starts its ordered consumer
//! at exactly `position + 1`, and any jump in positions is a hole it fills from the store
//! before going on. If the consumer stays silent for two idle checks while the store is ahead
//! (NATS down, relay stopped, a stream reset), the feed reads the store itself and starts a
//! new consumer, so clients keep receiving events, only later.
//!
//! The bus is not trusted (design invariant 11): every batch of messages is checked against
//! the store before anything in it is broadcast ([`verify`]: one primary-key range query per
//! batch, returning 32-byte digests rather than payloads). A message that is not the store's
//! event at its sequence (a forgery, a stream from another store, a damaged message) is never
//! sent to a client; the store's event at that position is.
//!
//! So what the feed broadcasts is the log itself: positions strictly increasing, without a
//! hole. Clients subscribe to a bounded [`tokio::sync::broadcast`] channel; one that falls
//! further behind than its capacity is told so (`Lagged`) and dropped by its session rather
//! than holding everyone back. A client's replay of what it missed (`?from=`) reads PostgreSQL
//! on its own, never through the shared task: see `api::ws` for how replay and live join
//! without a gap or a duplicate, which rests on the order kept in [`Feed::publish`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use domain::RecordedEvent;
use futures::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Namespace;
use crate::eventlog::bus::{self, Envelope};
use crate::eventlog::store::{self, Selection, StoreError, StoredEvent};
use crate::eventlog::verify;

/// PostgreSQL connections of the feed's own pool (replays, hole fills, catch-up).
pub const REPLAY_CONNECTIONS_MAX: u32 = 4;

/// WebSocket clients one process admits by default: the measured 10,000 and some room.
pub const WS_CLIENTS_MAX_DEFAULT: usize = 11_000;

/// Most events the feed keeps for clients that are behind.
pub const BUFFER_EVENTS_MAX: usize = 1 << 20;

/// Live events kept for clients that are behind, by default.
pub const WS_BUFFER_EVENTS_DEFAULT: usize = 4096;
/// Longest write to one WebSocket client before it is dropped as slow, by default.
pub const WS_SEND_TIMEOUT_MS_DEFAULT: u64 = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct FeedConfig {
    /// Live events kept for WebSocket clients that are behind; a client further behind is
    /// dropped as a slow consumer.
    #[arg(long = "ws-buffer-events", env = "BRAIN_WS_BUFFER_EVENTS", default_value_t = WS_BUFFER_EVENTS_DEFAULT)]
    pub buffer_events: usize,
    /// Longest one write to a WebSocket client may take before it is dropped as a slow
    /// consumer, in milliseconds.
    #[arg(long = "ws-send-timeout-ms", env = "BRAIN_WS_SEND_TIMEOUT_MS", default_value_t = WS_SEND_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout_ms: u64,
    /// How long a closing client gets to receive its close frame and answer it.
    #[arg(skip = Duration::from_secs(5))]
    pub close_timeout: Duration,
    /// How often a client is pinged (keeps proxies from closing it; one that answers none of
    /// `api::ws::PINGS_UNANSWERED_MAX` in a row is dropped).
    #[arg(skip = Duration::from_secs(15))]
    pub ping_interval: Duration,
    /// WebSocket clients one process admits at once; more are refused (503) with a reason.
    #[arg(long = "ws-clients-max", env = "BRAIN_WS_CLIENTS_MAX", default_value_t = WS_CLIENTS_MAX_DEFAULT)]
    pub clients_max: usize,
    /// Events per PostgreSQL read when replaying or filling a hole.
    #[arg(skip = 1_000u32)]
    pub page_events_max: u32,
    /// How long a silent bus is trusted before the feed compares with the store.
    #[arg(skip = Duration::from_secs(1))]
    pub idle_check: Duration,
    /// Wait before following again after an error.
    #[arg(skip = Duration::from_millis(500))]
    pub retry_backoff: Duration,
}

impl FeedConfig {
    /// Longest one write to a WebSocket client may take.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
}

impl Default for FeedConfig {
    fn default() -> FeedConfig {
        FeedConfig {
            buffer_events: WS_BUFFER_EVENTS_DEFAULT,
            send_timeout_ms: WS_SEND_TIMEOUT_MS_DEFAULT,
            close_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            page_events_max: 1_000,
            clients_max: WS_CLIENTS_MAX_DEFAULT,
            idle_check: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("JetStream: {0}")]
    Consumer(String),
    #[error("event {position} cannot be shown as JSON: {message}")]
    Encode { position: u64, message: String },
    #[error("the bus holds event {position} but the store ends at {head}")]
    StoreBehind { position: u64, head: u64 },
}

fn consumer_error(error: impl std::fmt::Display) -> FeedError {
    FeedError::Consumer(error.to_string())
}

/// One event as clients receive it: its JSON text, built once, shared by every client; and,
/// for the process's projectors, the event itself, parsed once on first use.
#[derive(Debug)]
pub struct FeedEvent {
    pub position: u64,
    pub stream_type: Box<str>,
    pub stream_id: Box<str>,
    pub event_type: Box<str>,
    /// The event as `GET /api/events` shows it (the fields of `RecordedEvent`): UTF-8 JSON
    /// text, as bytes so that every client shares one copy whatever its transport.
    pub json: Bytes,
    /// [`FeedEvent::event`]: parsed by the first projector that reads this event, so that
    /// one that skips it by its types never pays for the payload, and the others share it.
    parsed: OnceLock<Option<RecordedEvent>>,
}

/// The JSON shape of `domain::RecordedEvent`, written from the stored text without parsing
/// payload and metadata into values.
#[derive(Serialize)]
struct EventJson<'a> {
    global_position: u64,
    stream_type: &'a str,
    stream_id: &'a str,
    version: u64,
    event_id: Uuid,
    event_type: &'a str,
    schema_version: u32,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
}

impl EventJson<'_> {
    fn encode(&self) -> Result<Bytes, FeedError> {
        let position = self.global_position;
        let bad =
            |error: serde_json::Error| FeedError::Encode { position, message: error.to_string() };
        let text = serde_json::to_string(self).map_err(bad)?;
        Ok(Bytes::from(text))
    }
}

fn raw_json(position: u64, text: &str) -> Result<&RawValue, FeedError> {
    serde_json::from_str(text)
        .map_err(|error| FeedError::Encode { position, message: error.to_string() })
}

impl FeedEvent {
    /// An event with its JSON text (`GET /api/events`'s shape) already written.
    pub fn new(
        position: u64,
        stream_type: &str,
        stream_id: &str,
        event_type: &str,
        json: Bytes,
    ) -> FeedEvent {
        FeedEvent {
            position,
            stream_type: stream_type.into(),
            stream_id: stream_id.into(),
            event_type: event_type.into(),
            json,
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text of an event read from the store.
    pub fn encode_stored(event: &StoredEvent) -> Result<Bytes, FeedError> {
        let position = event.global_position as u64;
        EventJson {
            global_position: position,
            stream_type: &event.stream_type,
            stream_id: &event.stream_id,
            version: event.version as u64,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version as u32,
            payload: raw_json(position, &event.payload_json)?,
            metadata: raw_json(position, &event.metadata_json)?,
            recorded_at: event.recorded_at,
        }
        .encode()
    }

    fn from_stored(event: &StoredEvent) -> Result<FeedEvent, FeedError> {
        Ok(FeedEvent {
            position: event.global_position as u64,
            stream_type: event.stream_type.as_str().into(),
            stream_id: event.stream_id.as_str().into(),
            event_type: event.event_type.as_str().into(),
            json: FeedEvent::encode_stored(event)?,
            parsed: OnceLock::new(),
        })
    }

    fn from_envelope(envelope: Envelope) -> Result<FeedEvent, FeedError> {
        let position = envelope.global_position;
        let recorded_at =
            OffsetDateTime::from_unix_timestamp_nanos(envelope.recorded_at_unix_ns)
                .map_err(|error| FeedError::Encode { position, message: error.to_string() })?;
        let json = EventJson {
            global_position: position,
            stream_type: &envelope.stream_type,
            stream_id: &envelope.stream_id,
            version: envelope.version,
            event_id: Uuid::from_bytes(envelope.event_id),
            event_type: &envelope.event_type,
            schema_version: envelope.schema_version,
            payload: raw_json(position, &envelope.payload_json)?,
            metadata: raw_json(position, &envelope.metadata_json)?,
            recorded_at,
        }
        .encode()?;
        Ok(FeedEvent {
            position,
            stream_type: envelope.stream_type.into_boxed_str(),
            stream_id: envelope.stream_id.into_boxed_str(),
            event_type: envelope.event_type.into_boxed_str(),
            json,
            parsed: OnceLock::new(),
        })
    }

    /// The event, parsed from its JSON text the first time any reader asks; `None` if that
    /// text does not read as an event of this release (a projector then takes the event from
    /// the store, where the same failure stops it before the event).
    pub fn event(&self) -> Option<&RecordedEvent> {
        self.parsed
            .get_or_init(|| {
                serde_json::from_slice(&self.json)
                    .inspect_err(|error| {
                        tracing::warn!(position = self.position, %error, "live event does not parse");
                    })
                    .ok()
            })
            .as_ref()
    }

    pub fn selected_by(&self, selection: &Selection) -> bool {
        selection.matches(&self.stream_type, &self.stream_id)
    }
}

struct Shared {
    sender: broadcast::Sender<Arc<FeedEvent>>,
    /// The last position broadcast. Written before the event is sent: see [`Feed::publish`].
    position: AtomicU64,
    pool: PgPool,
    config: FeedConfig,
    /// Cancelled when the server shuts down: sessions then close their clients.
    sessions_stop: CancellationToken,
    clients: AtomicUsize,
    /// Sessions admitted (from before their upgrade to their end), bounded by `clients_max`.
    admitted: AtomicUsize,
    clients_gone: Notify,
    slow_drops: AtomicU64,
}

/// What sessions use: subscribe, the feed's position, reads for replay, and client counts.
/// Cheap to clone.
#[derive(Clone)]
pub struct FeedHandle {
    shared: Arc<Shared>,
}

impl FeedHandle {
    /// A receiver of every event broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.shared.sender.subscribe()
    }

    /// The last position broadcast. Read after [`subscribe`](Self::subscribe), every event
    /// after it reaches the new receiver.
    pub fn position(&self) -> u64 {
        self.shared.position.load(Ordering::SeqCst)
    }

    pub fn config(&self) -> &FeedConfig {
        &self.shared.config
    }

    /// Cancelled when the server starts shutting down.
    pub fn stopping(&self) -> &CancellationToken {
        &self.shared.sessions_stop
    }

    /// The selected events in `after < position <= up_to`, from the store.
    pub async fn read(
        &self,
        selection: &Selection,
        after: u64,
        up_to: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = self.shared.config.page_events_max.max(1);
        store::read_range_stored_selected(&self.shared.pool, selection, after, up_to, limit).await
    }

    /// The last position committed to the store.
    pub async fn head(&self) -> Result<u64, StoreError> {
        store::head(&self.shared.pool).await
    }

    /// Admits one more session if fewer than `clients_max` are admitted, until the returned
    /// guard is dropped; `None` when the process is full.
    pub fn admit(&self) -> Option<Admission> {
        let max = self.shared.config.clients_max;
        let admitted = &self.shared.admitted;
        admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Admission { shared: self.shared.clone() })
    }

    /// Counts a connected client until the returned guard is dropped.
    pub fn client(&self) -> ClientGuard {
        let clients = self.shared.clients.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("brain_ws_clients").increment(1.0);
        tracing::debug!(clients, "WebSocket client connected");
        ClientGuard { shared: self.shared.clone() }
    }

    /// Records that a client was dropped for being slow.
    pub fn slow_drop(&self) {
        self.shared.slow_drops.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("brain_ws_slow_consumer_drops_total").increment(1);
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::SeqCst)
    }

    /// Clients dropped as slow consumers since the server started.
    pub fn slow_drops(&self) -> u64 {
        self.shared.slow_drops.load(Ordering::SeqCst)
    }

    /// Resolves once no client is connected.
    pub async fn clients_gone(&self) {
        loop {
            let notified = self.shared.clients_gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.clients() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A session's place under `clients_max`, given back when dropped.
pub struct Admission {
    shared: Arc<Shared>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connected client, as counted by the feed.
pub struct ClientGuard {
    shared: Arc<Shared>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        metrics::gauge!("brain_ws_clients").decrement(1.0);
        if self.shared.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.clients_gone.notify_waiters();
        }
    }
}

/// The task that follows the log and broadcasts it.
pub struct Feed {
    shared: Arc<Shared>,
    jetstream: jetstream::Context,
    namespace: Namespace,
    /// The last position broadcast.
    last: u64,
}

impl Feed {
    /// A feed that starts after the store's current head. `sessions_stop` is the server's
    /// shutdown signal, on which sessions close their clients.
    pub async fn new(
        pool: PgPool,
        nats: async_nats::Client,
        namespace: Namespace,
        config: FeedConfig,
        sessions_stop: CancellationToken,
    ) -> Result<Feed, FeedError> {
        let head = store::head(&pool).await?;
        // Replays and the feed's own reads get a pool of their own: a thousand clients
        // replaying at once wait for these few connections, never for those commands need.
        let pool = pool
            .options()
            .clone()
            .min_connections(0)
            .max_connections(REPLAY_CONNECTIONS_MAX)
            .connect_lazy_with((*pool.connect_options()).clone());
        let capacity = config.buffer_events.clamp(1, BUFFER_EVENTS_MAX);
        let (sender, _) = broadcast::channel(capacity);
        let shared = Arc::new(Shared {
            sender,
            position: AtomicU64::new(head),
            pool,
            config,
            sessions_stop,
            clients: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            clients_gone: Notify::new(),
            slow_drops: AtomicU64::new(0),
        });
        let jetstream = bus::jetstream(nats, 1);
        Ok(Feed { shared, jetstream, namespace, last: head })
    }

    pub fn handle(&self) -> FeedHandle {
        FeedHandle { shared: self.shared.clone() }
    }

    /// Follows the log until `stop` is cancelled, retrying after any failure.
    pub async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(error) = self.follow(&stop).await {
                tracing::warn!(%error, position = self.last, "live feed interrupted, retrying");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(self.shared.config.retry_backoff) => {}
                }
            }
        }
    }

    /// Catches up from the store, then follows an ordered consumer from the next position
    /// until it fails, or falls silent while the store is ahead.
    async fn follow(&mut self, stop: &CancellationToken) -> Result<(), FeedError> {
        self.catch_up().await?;
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let config = consumer::pull::OrderedConfig {
            description: Some("BRAiN live feed".to_owned()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.last + 1,
            },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(consumer_error)?;
        // Whatever has arrived is checked as one batch: one store query per batch, however
        // many messages it holds.
        let batch_max = self.shared.config.page_events_max.max(1) as usize;
        let mut messages =
            consumer.messages().await.map_err(consumer_error)?.ready_chunks(batch_max);
        let idle_check = self.shared.config.idle_check;
        let mut progressed = true;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = tokio::time::timeout(idle_check, messages.next()) => next,
            };
            match next {
                Ok(Some(batch)) => {
                    self.admit(batch).await?;
                    progressed = true;
                }
                Ok(None) => return Err(consumer_error("message stream ended")),
                Err(_silent) => {
                    let head = store::head(&self.shared.pool).await?;
                    if head > self.last && !progressed {
                        tracing::info!(
                            position = self.last,
                            head,
                            "bus silent while the store is ahead; reading the store"
                        );
                        return Ok(());
                    }
                    progressed = false;
                }
            }
        }
    }

    /// Broadcasts a batch from the bus once it is checked against the store (design invariant
    /// 11): each message must be the store's event at its sequence ([`verify`]). If one is not
    /// (it does not decode, sits at the wrong sequence, or differs from the store's event:
    /// a forgery, a stream from another store), nothing of the batch is broadcast from the bus:
    /// its range is read from the store instead, the refusal is counted and the relay told.
    /// A message beyond the store's head has no event to stand for and is dropped. Holes
    /// before a message are filled from the store, as ever.
    async fn admit(
        &mut self,
        batch: Vec<Result<jetstream::Message, consumer::pull::OrderedError>>,
    ) -> Result<(), FeedError> {
        let mut received = Vec::with_capacity(batch.len());
        for message in batch {
            let message = message.map_err(consumer_error)?;
            let sequence = message.info().map_err(consumer_error)?.stream_sequence;
            if sequence <= self.last {
                continue;
            }
            let envelope = Envelope::decode(&message.payload)
                .inspect_err(|error| {
                    tracing::warn!(sequence, %error, "bus message does not decode");
                })
                .ok();
            received.push((sequence, envelope));
        }
        let (Some(&(first, _)), Some(&(last, _))) = (received.first(), received.last()) else {
            return Ok(());
        };
        let stored = verify::fingerprints(&self.shared.pool, first - 1, last).await?;
        let refused: Vec<u64> = received
            .iter()
            .filter(|(sequence, envelope)| {
                !envelope.as_ref().is_some_and(|e| verify::is_the_stores(*sequence, e, &stored))
            })
            .map(|(sequence, _)| *sequence)
            .collect();
        if let Some(&first_refused) = refused.first() {
            tracing::warn!(
                first = first_refused,
                refused = refused.len(),
                "bus messages are not the store's events; reading the store instead"
            );
            metrics::counter!("brain_bus_messages_refused_total", "reader" => "live_feed")
                .increment(refused.len() as u64);
            verify::report_refused(&self.shared.pool, self.namespace.as_str(), first_refused).await;
            if let Some(&stored_last) = stored.keys().max() {
                self.fill_to(stored_last).await?;
            }
            return Ok(());
        }
        for (sequence, envelope) in received {
            let Some(envelope) = envelope else { continue };
            if sequence > self.last + 1 {
                self.fill_to(sequence - 1).await?;
            }
            self.publish(FeedEvent::from_envelope(envelope)?);
        }
        Ok(())
    }

    /// Broadcasts what the store holds after the last position.
    async fn catch_up(&mut self) -> Result<(), FeedError> {
        let page_max = self.shared.config.page_events_max.max(1);
        loop {
            let page =
                store::read_range_stored(&self.shared.pool, self.last, u64::MAX, page_max).await?;
            if page.is_empty() {
                return Ok(());
            }
            for event in &page {
                self.publish(FeedEvent::from_stored(event)?);
            }
        }
    }

    /// Broadcasts the store's events up to `position` (inclusive).
    async fn fill_to(&mut self, position: u64) -> Result<(), FeedError> {
        let page_max = self.shared.config.page_events_max.max(1);
        while self.last < position {
            let page =
                store::read_range_stored(&self.shared.pool, self.last, position, page_max).await?;
            if page.is_empty() {
                let head = store::head(&self.shared.pool).await?;
                return Err(FeedError::StoreBehind { position, head });
            }
            for event in &page {
                self.publish(FeedEvent::from_stored(event)?);
            }
        }
        Ok(())
    }

    /// Broadcasts the next event. The position is stored *before* the send: a session that
    /// subscribes and then reads the position P is thereby sure to receive every event after
    /// P (had the send come first, an event could be sent before the subscription yet show
    /// in the position read after it, and that session would never see it).
    fn publish(&mut self, event: FeedEvent) {
        debug_assert_eq!(event.position, self.last + 1, "the feed broadcasts the log in order");
        self.last = event.position;
        self.shared.position.store(event.position, Ordering::SeqCst);
        // An error only means that no client is listening.
        let _ = self.shared.sender.send(Arc::new(event));
        metrics::gauge!("brain_ws_feed_position").set(self.last as f64);
    }
}
