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
//! The stream is not trusted either (design invariant 11): a message someone else put on it
//! takes a sequence that then holds something other than the store's event. So the relay
//! believes the stream's last sequence only after checking the messages it did not see
//! acknowledged as its own against the store ([`mirror`]): at the start of every round the
//! last [`RelayConfig::verify_tail`] (what a predecessor, or the round an error ended, may
//! have left unconfirmed), on every idle check what came after its last publish and the last
//! message, and wherever a reader reports a message it refused ([`verify::report_refused`]).
//! Where they disagree, the relay rebuilds the stream from the store (deleting it and
//! publishing from position 1, since a sequence cannot be rewritten), counts it in
//! `brain_relay_repairs_total`, and reports itself repairing ([`RelayStatus`], shown by
//! `/ready`) until the stream is caught up again. `brain_relay_lag_events` is the store's
//! head less what the stream holds correctly.
//!
//! One relay per namespace is active at a time: it holds a PostgreSQL advisory lock on a
//! connection of its own. Others stand by, trying the lock, and take over when the holder's
//! connection goes away (process killed, network cut). The lock is for efficiency; the
//! headers above are what keep the stream correct.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::config::Namespace;
use crate::eventlog::leader::{self, Leadership};
use crate::eventlog::mirror::{self, Disagreement, MirrorError};
use crate::eventlog::store::{self, StoreError};
use crate::eventlog::{bus, verify};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events read from PostgreSQL per query.
    pub page_events_max: u32,
    /// Publishes awaiting their acknowledgement at once.
    pub inflight_max: usize,
    /// How often an idle relay checks the stream for a lost tail or a message it did not
    /// publish, and a standby the lock.
    pub idle_check: Duration,
    /// Wait before retrying after an error (NATS or PostgreSQL unreachable).
    pub retry_backoff: Duration,
    /// How long shutdown waits for the relay to publish what is already committed.
    pub flush_timeout: Duration,
    /// Messages at the stream's tail checked against the store at the start of each round:
    /// more than a round can leave unconfirmed ([`inflight_max`](Self::inflight_max)).
    pub verify_tail: u64,
    /// Least time between two rebuilds of the stream, so that two stores fighting over one
    /// namespace (or a publisher injecting message after message) cannot keep the relay
    /// rebuilding without pause.
    pub rebuild_interval_min: Duration,
    /// Fault injection for tests: after sending this many publishes, stop at once without
    /// awaiting their acknowledgements, as a killed process would.
    pub crash_after_publishes: Option<u64>,
    /// Fault injection for tests: a rebuild waits, reported as repairing, until this token is
    /// cancelled (as a rebuild of a long log takes a while).
    pub hold_rebuild: Option<CancellationToken>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            page_events_max: 2_000,
            inflight_max: 1_024,
            idle_check: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(200),
            flush_timeout: Duration::from_secs(10),
            verify_tail: 2_048,
            rebuild_interval_min: Duration::from_secs(30),
            crash_after_publishes: None,
            hold_rebuild: None,
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
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("publishing event {position}: {message}")]
    Publish { position: u64, message: String },
    #[error("stopped before rebuilding the stream: {0}")]
    RebuildCancelled(Disagreement),
    #[error("stopped by fault injection after {0} publishes")]
    InjectedCrash(u64),
}

/// What `/ready` says of this process's relay: nothing while it mirrors the store or stands
/// by, and why while it is rebuilding the stream; and its lag, as `brain_relay_lag_events`
/// says it. Cheap to clone; shared with the relay.
#[derive(Debug, Clone, Default)]
pub struct RelayStatus {
    repair: Arc<Mutex<Option<String>>>,
    lag: Arc<AtomicU64>,
    repairs: Arc<AtomicU64>,
}

impl RelayStatus {
    /// `Some(why)` while this process's relay is rebuilding a stream that disagreed with the
    /// store (or waiting to).
    pub fn repairing(&self) -> Option<String> {
        self.repair.lock().map(|repair| repair.clone()).unwrap_or_default()
    }

    /// The store's head less what the stream holds correctly, when this process's relay
    /// last looked (0 while it stands by).
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Rebuilds this process's relay has begun, as `brain_relay_repairs_total` counts them.
    pub fn repairs(&self) -> u64 {
        self.repairs.load(Ordering::Relaxed)
    }

    fn set(&self, repair: Option<String>) {
        if let Ok(mut current) = self.repair.lock() {
            *current = repair;
        }
    }

    /// Records the lag: `head` committed, the stream right up to `mirrored`.
    fn lagging(&self, head: u64, mirrored: u64) {
        let lag = head.saturating_sub(mirrored);
        self.lag.store(lag, Ordering::Relaxed);
        metrics::gauge!("brain_relay_lag_events").set(lag as f64);
    }
}

pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    namespace: Namespace,
    config: RelayConfig,
    published: Arc<AtomicU64>,
    status: RelayStatus,
    last_rebuild: Option<Instant>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        client: async_nats::Client,
        namespace: Namespace,
        config: RelayConfig,
    ) -> Relay {
        let jetstream = bus::jetstream(client, config.inflight_max);
        Relay {
            pool,
            jetstream,
            namespace,
            config,
            published: Arc::default(),
            status: RelayStatus::default(),
            last_rebuild: None,
        }
    }

    /// Events this relay has published and seen confirmed, shared with the caller.
    pub fn published_counter(&self) -> Arc<AtomicU64> {
        self.published.clone()
    }

    /// Whether this relay is repairing the stream, shared with the caller (for `/ready`).
    pub fn status(&self) -> RelayStatus {
        self.status.clone()
    }

    /// Runs until `shutdown` is cancelled: stands by until it holds the namespace's lock,
    /// then relays. On shutdown the active relay first publishes what is already committed.
    /// Returns an error only for fault injection; every other failure is logged and retried.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let lock = format!("{}:relay", self.namespace);
        while !shutdown.is_cancelled() {
            let acquired = self.acquire(&lock, &shutdown).await;
            let result = match acquired {
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

    /// Leadership of the namespace's relay, once this process holds it. A process still
    /// standing by after two idle checks repairs nothing: another leads, and reports.
    async fn acquire(
        &self,
        lock: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Leadership>, sqlx::Error> {
        let acquire = leader::acquire(&self.pool, lock, self.config.idle_check, shutdown);
        tokio::pin!(acquire);
        tokio::select! {
            biased;
            acquired = &mut acquire => acquired,
            _ = tokio::time::sleep(self.config.idle_check * 2) => {
                self.status.set(None);
                self.status.lagging(0, 0);
                acquire.await
            }
        }
    }

    async fn relay(
        &mut self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let commits = store::notify_channel(self.namespace.as_str());
        let refusals = verify::refused_channel(self.namespace.as_str());
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([commits.as_str(), refusals.as_str()]).await?;
        // Nothing this round has seen acknowledged yet: check the tail a predecessor (or the
        // round an error ended) may have left unconfirmed.
        let mut published = self.mirrored(0, shutdown).await?;
        let mut sent_total = 0u64;
        loop {
            let head = store::head(&self.pool).await?;
            self.status.lagging(head, published);
            if published < head {
                published = self.publish_page(published, head, &mut sent_total).await?;
                continue;
            }
            if published == head && self.status.repairing().is_some() {
                tracing::info!(position = published, "stream rebuilt: it mirrors the store again");
                self.status.set(None);
            }
            if shutdown.is_cancelled() {
                tracing::info!(position = published, "relay flushed, stopping");
                return Ok(());
            }
            // Idle: wait for a commit's NOTIFY or a reader's report, or check the stream and
            // our lock on a tick.
            tokio::select! {
                notification = listener.recv() => {
                    let notification = notification?;
                    if notification.channel() == refusals
                        && let Ok(sequence) = notification.payload().parse::<u64>()
                        && sequence > 0
                        && sequence <= published
                    {
                        published = self.reported(sequence, published, shutdown).await?;
                    }
                }
                _ = tokio::time::sleep(self.config.idle_check) => {
                    leadership.check().await?;
                    published = self.mirrored(published, shutdown).await?;
                }
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// How far the stream mirrors the store, given that it did up to `known`: its last
    /// sequence, once the messages after `known` (at most [`RelayConfig::verify_tail`], and
    /// always the last one) are found to be the store's events; 0 after rebuilding a stream
    /// that disagreed.
    async fn mirrored(
        &mut self,
        known: u64,
        shutdown: &CancellationToken,
    ) -> Result<u64, RelayError> {
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let last = stream.cached_info().state.last_sequence;
        if last < known {
            tracing::warn!(last, published = known, "stream lost its tail, publishing it again");
        }
        let after =
            known.min(last.saturating_sub(1)).max(last.saturating_sub(self.config.verify_tail));
        let found =
            mirror::first_disagreement(&self.pool, &stream, &self.namespace, after, last).await?;
        match found {
            None => Ok(last),
            Some(disagreement) => self.rebuild(disagreement, shutdown).await,
        }
    }

    /// A reader refused the message at `sequence`: check it, and rebuild if it is not the
    /// store's event. Answers the new mirrored position.
    async fn reported(
        &mut self,
        sequence: u64,
        published: u64,
        shutdown: &CancellationToken,
    ) -> Result<u64, RelayError> {
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let found = mirror::first_disagreement(
            &self.pool,
            &stream,
            &self.namespace,
            sequence - 1,
            sequence,
        )
        .await?;
        match found {
            None => Ok(published),
            Some(disagreement) => self.rebuild(disagreement, shutdown).await,
        }
    }

    /// Rebuilds a stream that disagrees with the store: deletes it and answers 0, from where
    /// the relay publishes the log again. Waits first if the last rebuild was less than
    /// [`RelayConfig::rebuild_interval_min`] ago.
    async fn rebuild(
        &mut self,
        disagreement: Disagreement,
        shutdown: &CancellationToken,
    ) -> Result<u64, RelayError> {
        let head = store::head(&self.pool).await?;
        let mirrored = disagreement.position - 1;
        self.status.lagging(head, mirrored);
        self.status.repairs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("brain_relay_repairs_total", "reason" => disagreement.kind.label())
            .increment(1);
        tracing::error!(
            %disagreement,
            head,
            "the stream does not mirror the store; rebuilding it from the store"
        );
        self.status.set(Some(format!(
            "{disagreement}; rebuilding the stream from the store ({head} events)"
        )));
        let due =
            self.last_rebuild.map_or_else(Instant::now, |at| at + self.config.rebuild_interval_min);
        let hold = self.config.hold_rebuild.clone().unwrap_or_else(|| {
            let released = CancellationToken::new();
            released.cancel();
            released
        });
        // While it waits (for the interval, or a test's hold), the lag goes on being told.
        while Instant::now() < due || !hold.is_cancelled() {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RelayError::RebuildCancelled(disagreement)),
                _ = tokio::time::sleep_until(due.into()), if Instant::now() < due => {}
                _ = hold.cancelled(), if !hold.is_cancelled() => {}
                _ = tokio::time::sleep(self.config.idle_check) => {
                    self.status.lagging(store::head(&self.pool).await?, mirrored);
                }
            }
        }
        self.last_rebuild = Some(Instant::now());
        mirror::rebuild(&self.jetstream, &self.namespace).await?;
        metrics::gauge!("brain_relay_position").set(0.0);
        Ok(0)
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
        // Before they can arrive: this process's readers then need not ask the store.
        verify::remember(&self.pool, &events);
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
    // A duplicate ack names the sequence a message with this event id already has: not one
    // this relay published (it never publishes a position the stream holds), so perhaps one
    // carrying a copied id. Like any ack but our position, it ends the round, and the next
    // round checks what the stream holds there.
    if ack.duplicate {
        return Err(RelayError::Publish {
            position,
            message: format!("a message with this event id is already at {}", ack.sequence),
        });
    }
    if ack.sequence != position {
        return Err(RelayError::Publish {
            position,
            message: format!("stream stored it at sequence {}", ack.sequence),
        });
    }
    Ok(position)
}
