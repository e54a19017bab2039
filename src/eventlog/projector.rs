//! The projector runtime: feeds a [`Projector`] its events in position order and keeps its
//! checkpoint, whatever the events' source.
//!
//! A [`Runner`] leads one projector (advisory lock, like the relay): it starts at the stored
//! checkpoint, catches up from PostgreSQL in pages, then follows a durable JetStream consumer
//! from checkpoint + 1. Because the stream's sequence is the global position, that switch is
//! exact, and a gap in the sequence is a hole to fill from PostgreSQL. The consumer reads every
//! subject, so the sequence it delivers is contiguous; the projector's `wants` filters. Each
//! batch's effect and checkpoint commit together, then the batch is acked, so a crash between
//! the two only causes a redelivery that the checkpoint skips. A consumer that stays silent
//! while the store is ahead (its stream was reset, a tail was lost) is simply caught up from
//! PostgreSQL and recreated.
//!
//! [`rebuild`] replays the whole log through the same `apply` into shadow tables and swaps
//! them in atomically.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use domain::RecordedEvent;
use futures::StreamExt;
use projections::{Admit, Checkpoint, CommitError, ProjectionStore, Projector};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Namespace;
use crate::eventlog::bus;
use crate::eventlog::leader;
use crate::eventlog::store::{self, StoreError};
use crate::eventlog::verify;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events read from PostgreSQL per query, and applied per commit while catching up.
    pub page_events_max: u32,
    /// Most live messages applied in one commit.
    pub batch_events_max: usize,
    /// How long a silent consumer is trusted before checking the store; also how often a
    /// standby tries for leadership.
    pub idle_check: Duration,
    pub retry_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            page_events_max: 1_000,
            batch_events_max: 1_000,
            idle_check: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// How long a runner that met an unreadable event stands aside before trying to lead again.
pub const UNREADABLE_PAUSE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// An event this release's projector cannot read (a newer release wrote it): the
    /// projector stops before it, and its runner stands aside for a while so that another
    /// process (the newer release) can lead it.
    #[error("projector stops before an unreadable event: {0}")]
    Unreadable(projections::Unreadable),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("projector database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("projection store: {0}")]
    Projection(Box<dyn std::error::Error + Send + Sync>),
    #[error("JetStream consumer: {0}")]
    Consumer(String),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("the bus holds event {position} but the store ends at {head}")]
    StoreBehind { position: u64, head: u64 },
}

fn consumer_error(error: impl std::fmt::Display) -> RunnerError {
    RunnerError::Consumer(error.to_string())
}

/// Applies events to a store, keeping the checkpoint rule: the part shared by live
/// following, catch-up and rebuild.
pub struct Feeder<P: Projector, S: ProjectionStore<P::Change>> {
    projector: P,
    store: S,
    pool: PgPool,
    checkpoint: Checkpoint,
    page_events_max: u32,
}

impl<P: Projector, S: ProjectionStore<P::Change>> Feeder<P, S> {
    /// Reads the store's checkpoint to start from.
    pub async fn new(
        projector: P,
        mut store: S,
        pool: PgPool,
        page_events_max: u32,
    ) -> Result<Feeder<P, S>, RunnerError> {
        let position = store.checkpoint().await.map_err(projection_error)?;
        Ok(Feeder {
            projector,
            store,
            pool,
            checkpoint: Checkpoint::new(position),
            page_events_max: page_events_max.max(1),
        })
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.position()
    }

    /// Applies what the store holds after the checkpoint, page by page, until none is left.
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        loop {
            let page = store::read_all(&self.pool, self.checkpoint(), self.page_events_max).await?;
            if page.is_empty() {
                return Ok(self.checkpoint());
            }
            self.commit(page).await?;
        }
    }

    /// Applies the store's events up to `position` (inclusive).
    async fn catch_up_to(&mut self, position: u64) -> Result<(), RunnerError> {
        while self.checkpoint() < position {
            let page =
                store::read_range(&self.pool, self.checkpoint(), position, self.page_events_max)
                    .await?;
            if page.is_empty() {
                let head = store::head(&self.pool).await?;
                return Err(RunnerError::StoreBehind { position, head });
            }
            self.commit(page).await?;
        }
        Ok(())
    }

    /// Applies events given in position order; what is at or below the checkpoint is
    /// skipped, and a hole before an event is filled from the store first.
    pub async fn feed(&mut self, events: Vec<RecordedEvent>) -> Result<(), RunnerError> {
        let mut batch = Vec::with_capacity(events.len());
        let mut expected = self.checkpoint;
        for event in events {
            let position = event.global_position;
            match expected.admit(position) {
                Admit::Seen => continue,
                Admit::Next => {}
                Admit::Hole { to, .. } => {
                    self.commit(std::mem::take(&mut batch)).await?;
                    self.catch_up_to(to).await?;
                    expected = self.checkpoint;
                    if expected.admit(position) != Admit::Next {
                        continue;
                    }
                }
            }
            expected.advance(position);
            batch.push(event);
        }
        self.commit(batch).await
    }

    /// Commits one contiguous run of events (checkpoint + 1 onwards) with its checkpoint.
    /// An event the projector cannot read ends the run before it: what precedes it is
    /// committed, and [`RunnerError::Unreadable`] tells the runner to stop there.
    async fn commit(&mut self, mut events: Vec<RecordedEvent>) -> Result<(), RunnerError> {
        let mut unreadable = None;
        while let Some(last) = events.last() {
            debug_assert_eq!(
                events[0].global_position,
                self.checkpoint() + 1,
                "runs start after the checkpoint"
            );
            let mut changes = Vec::new();
            let mut readable = events.len();
            for (index, event) in events.iter().enumerate() {
                if self.projector.wants(event.stream_type.as_str())
                    && let Err(error) = self.projector.apply(event, &mut changes)
                {
                    // Changes of the unreadable event itself were never pushed.
                    readable = index;
                    unreadable = Some(error);
                    break;
                }
            }
            let up_to = if readable == events.len() {
                last.global_position
            } else if readable == 0 {
                break;
            } else {
                events[readable - 1].global_position
            };
            let after = self.checkpoint();
            match self.store.commit(after, up_to, changes).await {
                Ok(()) => {
                    self.checkpoint = Checkpoint::new(up_to);
                    let name = self.projector.name();
                    metrics::gauge!("brain_projector_position", "projector" => name)
                        .set(up_to as f64);
                    break;
                }
                // A rebuild swapped the model under us: continue from where it got to.
                Err(CommitError::Moved { actual }) => {
                    tracing::info!(projector = self.projector.name(), actual, "checkpoint moved");
                    self.checkpoint = Checkpoint::new(actual);
                    events = if actual < up_to {
                        store::read_range(&self.pool, actual, up_to, u32::MAX).await?
                    } else {
                        Vec::new()
                    };
                }
                Err(CommitError::Store(error)) => return Err(projection_error(error)),
            }
            unreadable = None;
        }
        match unreadable {
            Some(error) => Err(RunnerError::Unreadable(error)),
            None => Ok(()),
        }
    }

    pub fn into_store(self) -> S {
        self.store
    }
}

fn projection_error(error: impl std::error::Error + Send + Sync + 'static) -> RunnerError {
    RunnerError::Projection(Box::new(error))
}

/// Leads one projector for a namespace: catch-up, then live from JetStream.
pub struct Runner<P: Projector, S: ProjectionStore<P::Change>> {
    feeder: Feeder<P, S>,
    jetstream: jetstream::Context,
    namespace: Namespace,
    config: RunnerConfig,
}

impl<P: Projector, S: ProjectionStore<P::Change>> Runner<P, S> {
    pub async fn new(
        projector: P,
        store: S,
        pool: PgPool,
        client: async_nats::Client,
        namespace: Namespace,
        config: RunnerConfig,
    ) -> Result<Runner<P, S>, RunnerError> {
        let feeder = Feeder::new(projector, store, pool, config.page_events_max).await?;
        Ok(Runner { feeder, jetstream: bus::jetstream(client, 1), namespace, config })
    }

    fn consumer_name(&self) -> String {
        format!("projector_{}", self.feeder.projector.name())
    }

    /// Runs until `shutdown` is cancelled, retrying after any failure.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.feeder.projector.name();
        let lock = format!("{}:projector:{name}", self.namespace);
        while !shutdown.is_cancelled() {
            let pool = self.feeder.pool.clone();
            let result =
                match leader::acquire(&pool, &lock, self.config.idle_check, &shutdown).await {
                    Ok(None) => return,
                    Ok(Some(mut leadership)) => self.lead(&mut leadership, &shutdown).await,
                    Err(error) => Err(error.into()),
                };
            let pause = match result {
                Ok(()) => continue,
                Err(RunnerError::Unreadable(error)) => {
                    // Stand aside: leadership is released, so another process may lead.
                    tracing::error!(projector = name, %error, "projector stopped before an event it cannot read; standing aside");
                    metrics::counter!("brain_projector_unreadable_total", "projector" => name)
                        .increment(1);
                    UNREADABLE_PAUSE
                }
                Err(error) => {
                    tracing::warn!(projector = name, %error, "projector interrupted, retrying");
                    self.config.retry_backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One term as leader. Loops over catch-up + live phases; a silent consumer while the
    /// store is ahead ends a live phase.
    async fn lead(
        &mut self,
        leadership: &mut leader::Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        // Another leader may have moved the checkpoint while we stood by.
        self.feeder.checkpoint =
            Checkpoint::new(self.feeder.store.checkpoint().await.map_err(projection_error)?);
        self.heal(store::head(&self.feeder.pool).await?).await?;
        while !shutdown.is_cancelled() {
            self.feeder.catch_up().await?;
            let consumer = self.recreate_consumer().await?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(consumer_error)?
                .ready_chunks(self.config.batch_events_max.max(1));
            let mut progressed = true;
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    next = tokio::time::timeout(self.config.idle_check, messages.next()) => next,
                };
                match next {
                    Ok(Some(batch)) => {
                        self.apply_messages(batch).await?;
                        progressed = true;
                    }
                    Ok(None) => return Err(consumer_error("message stream ended")),
                    Err(_silent) => {
                        leadership.check().await?;
                        let head = store::head(&self.feeder.pool).await?;
                        let lag = head.saturating_sub(self.feeder.checkpoint());
                        metrics::gauge!("brain_projector_lag_events", "projector" => name)
                            .set(lag as f64);
                        if self.heal(head).await? {
                            break;
                        }
                        // Behind the store for a whole quiet interval: the stream will not
                        // bring the rest (reset, lost tail), so take it from PostgreSQL.
                        if lag > 0 && !progressed {
                            tracing::info!(projector = name, lag, "consumer silent, catching up");
                            break;
                        }
                        progressed = false;
                    }
                }
            }
        }
        Ok(())
    }

    /// Compares the read model's stored checkpoint with what this runner applied and with
    /// the log's head, so that a model that lost its state heals without anyone's help (design
    /// invariant 11). Lower than applied: the model lost state (Redis flushed or restarted);
    /// it is consistent up to its checkpoint, which commits with its effects, so it is
    /// refilled from there, page by page. Above the head: the log it was built from is gone
    /// (the database restored or recreated), so it is dropped and rebuilt from the start.
    /// Higher than applied: a rebuild moved it; carry on from there. Returns whether the
    /// runner must catch up again.
    async fn heal(&mut self, head: u64) -> Result<bool, RunnerError> {
        let name = self.feeder.projector.name();
        let stored = self.feeder.store.checkpoint().await.map_err(projection_error)?;
        let applied = self.feeder.checkpoint();
        if stored > head {
            tracing::warn!(
                projector = name,
                checkpoint = stored,
                head,
                "read model is ahead of the log; dropping and rebuilding it"
            );
            metrics::counter!("brain_projector_resets_total", "projector" => name, "reason" => "ahead_of_log").increment(1);
            self.feeder.store.reset().await.map_err(projection_error)?;
            self.feeder.checkpoint = Checkpoint::new(0);
            return Ok(true);
        }
        if stored < applied {
            tracing::warn!(
                projector = name,
                checkpoint = stored,
                applied,
                "read model lost its state; refilling it from the log"
            );
            metrics::counter!("brain_projector_resets_total", "projector" => name, "reason" => "lost_state").increment(1);
        }
        if stored != applied {
            self.feeder.checkpoint = Checkpoint::new(stored);
            return Ok(true);
        }
        Ok(false)
    }

    /// Applies a batch from the bus. The bus is not trusted (design invariant 11): a message
    /// that does not decode, or is not the store's event at its sequence ([`verify`]: a
    /// foreign publisher, a forged payload under a real event id, a stream from another
    /// store), is not applied; the batch's range is taken from PostgreSQL instead, logged,
    /// counted, and reported to the relay.
    async fn apply_messages(
        &mut self,
        batch: Vec<Result<jetstream::Message, consumer::pull::MessagesError>>,
    ) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        let mut received = Vec::with_capacity(batch.len());
        let mut last = None;
        for message in batch {
            let message = message.map_err(consumer_error)?;
            let info = message.info().map_err(consumer_error)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let envelope = bus::Envelope::decode(&message.payload)
                .inspect_err(|error| {
                    tracing::warn!(projector = name, sequence, %error, "bus message does not decode");
                })
                .ok();
            received.push((sequence, envelope));
            last = Some((message, pending));
        }
        let mut events = Vec::with_capacity(received.len());
        if let (Some(&(first, _)), Some(&(last_sequence, _))) = (received.first(), received.last())
        {
            let stored = verify::fingerprints(&self.feeder.pool, first - 1, last_sequence).await?;
            let mut refused = Vec::new();
            for (sequence, envelope) in received {
                let event = envelope
                    .filter(|envelope| verify::is_the_stores(sequence, envelope, &stored))
                    .map(bus::Envelope::into_event);
                match event {
                    Some(Ok(event)) => events.push(event),
                    Some(Err(error)) => {
                        tracing::warn!(projector = name, sequence, %error, "bus message does not decode");
                        refused.push(sequence);
                    }
                    None => refused.push(sequence),
                }
            }
            if let Some(&first_refused) = refused.first() {
                tracing::warn!(
                    projector = name,
                    first = first_refused,
                    refused = refused.len(),
                    "bus messages are not the store's events; reading the store instead"
                );
                metrics::counter!("brain_bus_messages_refused_total", "reader" => name)
                    .increment(refused.len() as u64);
                verify::report_refused(&self.feeder.pool, self.namespace.as_str(), first_refused)
                    .await;
                // What the store holds of the batch's range; a message past its head stands
                // for no event and is dropped.
                let up_to = stored.keys().max().copied().unwrap_or(first - 1);
                events = store::read_range(&self.feeder.pool, first - 1, up_to, u32::MAX).await?;
            }
        }
        self.feeder.feed(events).await?;
        if let Some((message, pending)) = last {
            // Ack policy `All`: this acknowledges the whole batch.
            message.ack().await.map_err(consumer_error)?;
            metrics::gauge!("brain_projector_lag_events", "projector" => name).set(pending as f64);
        }
        Ok(())
    }

    /// (Re)creates the durable consumer to start right after the checkpoint. The store's
    /// checkpoint, not the consumer's ack floor, is the truth about what was applied.
    async fn recreate_consumer(&self) -> Result<consumer::PullConsumer, RunnerError> {
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let name = self.consumer_name();
        match stream.delete_consumer(&name).await {
            Ok(_) => {}
            Err(error) if error.to_string().contains("not found") => {}
            Err(error) => return Err(consumer_error(error)),
        }
        let config = consumer::pull::Config {
            durable_name: Some(name),
            description: Some(format!("BRAiN projector {}", self.feeder.projector.name())),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.feeder.checkpoint() + 1,
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            ..Default::default()
        };
        stream.create_consumer(config).await.map_err(consumer_error)
    }

    pub fn checkpoint(&self) -> u64 {
        self.feeder.checkpoint()
    }
}
