//! The projector runtime: feeds a [`Projector`] the events it reads, in position order, and
//! keeps its checkpoint exact, whatever the events' source.
//!
//! A [`Runner`] leads one projector (advisory lock, like the relay): it starts at the stored
//! checkpoint, catches up from PostgreSQL in pages, then follows a durable JetStream consumer
//! from checkpoint + 1. Because the stream's sequence is the global position, that switch is
//! exact. A projector declares what it applies ([`Projector::reads`]); its consumer is
//! filtered on its stream type when it reads one ([`ConsumerFilter`]; several: unfiltered,
//! decision 0043), and reads of PostgreSQL select only the wanted events. So gaps in the
//! delivered sequence are normal: each batch is checked with one range query against the
//! store's wanted events between the checkpoint and the batch's last message
//! ([`verify::fingerprints_wanted`]); if the batch holds them all, each the store's, the
//! checkpoint moves to its last message, past the events the projector does not read;
//! otherwise (a wanted event the bus lost, a refused message) the range is read from
//! PostgreSQL. Each batch's effect and checkpoint commit together, once, then the batch is
//! acked, so a crash between the two only causes a redelivery that the checkpoint skips. A
//! consumer quiet for [`RunnerConfig::quiet_advance`] has the checkpoint moved to the store's
//! head from PostgreSQL (read models' positions reach the head though only other events are
//! appended); one silent while the store held its events is recreated.
//!
//! [`rebuild`] replays the log's wanted events through the same `apply` into shadow tables
//! and swaps them in atomically.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use domain::RecordedEvent;
use futures::StreamExt;
use projections::{Admit, Checkpoint, CommitError, ProjectionStore, Projector, Reads};
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
    /// How long a consumer may stay silent before the runner reads the store past what it
    /// brought: a filtered consumer is silent while only other events are appended, and the
    /// checkpoint must still reach the head (readers wait on it).
    pub quiet_advance: Duration,
    pub retry_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            page_events_max: 1_000,
            batch_events_max: 1_000,
            idle_check: Duration::from_secs(1),
            quiet_advance: Duration::from_millis(200),
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
/// following, catch-up and rebuild. It reads from PostgreSQL only the events its projector
/// [`Projector::reads`], and moves the checkpoint past the others without reading them.
pub struct Feeder<P: Projector, S: ProjectionStore<P::Change>> {
    projector: P,
    reads: Reads,
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
            reads: projector.reads(),
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

    /// Applies what the store holds after the checkpoint, page by page, up to the store's
    /// head when called.
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        let head = store::head(&self.pool).await?;
        self.catch_up_to(head).await?;
        Ok(self.checkpoint())
    }

    /// Applies the wanted events of the store up to `position` (inclusive), which the store
    /// must hold (the head read before, or an event found in it), page by page, and moves the
    /// checkpoint to `position`. Returns how many wanted events it applied.
    async fn catch_up_to(&mut self, position: u64) -> Result<usize, RunnerError> {
        let mut applied = 0;
        while self.checkpoint() < position {
            let page = store::read_wanted(
                &self.pool,
                &self.reads,
                self.checkpoint(),
                position,
                self.page_events_max,
            )
            .await?;
            applied += page.events.len();
            // A rebuild that moved the checkpoint makes the loop read on from there.
            self.commit(page.events, page.through).await?;
        }
        Ok(applied)
    }

    /// Applies events given in position order, as if from a consumer that reads every
    /// subject; what is at or below the checkpoint is skipped, and what is missing between
    /// them (a hole) is read from the store, only the wanted events.
    pub async fn feed(&mut self, events: Vec<RecordedEvent>) -> Result<(), RunnerError> {
        let mut run = Vec::with_capacity(events.len());
        let mut expected = self.checkpoint;
        for event in events {
            let position = event.global_position;
            match expected.admit(position) {
                Admit::Seen => continue,
                Admit::Next => {}
                Admit::Hole { to, .. } => {
                    self.commit_through(std::mem::take(&mut run), expected.position()).await?;
                    let head = store::head(&self.pool).await?;
                    if head < to {
                        return Err(RunnerError::StoreBehind { position, head });
                    }
                    self.catch_up_to(to).await?;
                    expected = self.checkpoint;
                    if expected.admit(position) != Admit::Next {
                        continue;
                    }
                }
            }
            expected.advance(position);
            run.push(event);
        }
        self.commit_through(run, expected.position()).await
    }

    /// Applies `events`, every event the projector wants in `checkpoint < position <=
    /// through` (others among them are skipped), and moves the checkpoint to `through`. If a
    /// rebuild moved the checkpoint meanwhile, the rest is read from the store.
    async fn commit_through(
        &mut self,
        events: Vec<RecordedEvent>,
        through: u64,
    ) -> Result<(), RunnerError> {
        if !self.commit(events, through).await? {
            self.catch_up_to(through).await?;
        }
        Ok(())
    }

    /// One commit of the store: the changes of `events` (every wanted event after the
    /// checkpoint up to `up_to`, in order) with the checkpoint moved to `up_to`. An event the
    /// projector cannot read ends the run before it: what precedes it is committed, and
    /// [`RunnerError::Unreadable`] tells the runner to stop there. Returns false, having
    /// applied nothing, if a rebuild moved the checkpoint (now the store's).
    async fn commit(
        &mut self,
        events: Vec<RecordedEvent>,
        mut up_to: u64,
    ) -> Result<bool, RunnerError> {
        let after = self.checkpoint();
        if up_to <= after {
            return Ok(true);
        }
        let mut changes = Vec::new();
        let mut unreadable = None;
        for event in &events {
            debug_assert!(
                event.global_position > after && event.global_position <= up_to,
                "a commit's events lie between its checkpoints"
            );
            if !self.reads.wants(event.stream_type.as_str(), &event.event_type) {
                continue;
            }
            if let Err(error) = self.projector.apply(event, &mut changes) {
                // Changes of the unreadable event itself were never pushed.
                up_to = event.global_position - 1;
                unreadable = Some(error);
                break;
            }
        }
        if up_to > after {
            match self.store.commit(after, up_to, changes).await {
                Ok(()) => {
                    self.checkpoint = Checkpoint::new(up_to);
                    let name = self.projector.name();
                    metrics::gauge!("brain_projector_position", "projector" => name)
                        .set(up_to as f64);
                }
                // A rebuild swapped the model under us: continue from where it got to.
                Err(CommitError::Moved { actual }) => {
                    tracing::info!(projector = self.projector.name(), actual, "checkpoint moved");
                    self.checkpoint = Checkpoint::new(actual);
                    return Ok(false);
                }
                Err(CommitError::Store(error)) => return Err(projection_error(error)),
            }
        }
        match unreadable {
            Some(error) => Err(RunnerError::Unreadable(error)),
            None => Ok(true),
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

/// Which subjects a projector's consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerFilter {
    /// Every subject: the projector reads every stream type, or several (a consumer filters
    /// on one subject on NATS before 2.10; design decision 0043).
    Unfiltered,
    /// One stream type's subjects, `<ns>.events.<type>.>`.
    Subject(String),
}

impl ConsumerFilter {
    pub fn of(reads: &Reads, namespace: &Namespace) -> ConsumerFilter {
        let Some(mut types) = reads.stream_types() else { return ConsumerFilter::Unfiltered };
        types.sort_unstable();
        types.dedup();
        match types.as_slice() {
            [only] => ConsumerFilter::Subject(format!("{namespace}.events.{only}.>")),
            _ => ConsumerFilter::Unfiltered,
        }
    }

    /// The consumer's `filter_subject` (empty: none).
    pub fn subject(&self) -> &str {
        match self {
            ConsumerFilter::Unfiltered => "",
            ConsumerFilter::Subject(subject) => subject,
        }
    }
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

    /// One term as leader. Loops over catch-up + live phases. While the consumer is quiet the
    /// runner reads the store past what it brought (only other stream types were appended
    /// to, or the bus lost or has not yet got this projector's); a consumer silent for a
    /// whole idle check while the store held events it should have brought ends a live phase.
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
        let quiet = self.config.quiet_advance.min(self.config.idle_check);
        while !shutdown.is_cancelled() {
            self.feeder.catch_up().await?;
            let consumer = self.recreate_consumer().await?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(consumer_error)?
                .ready_chunks(self.config.batch_events_max.max(1));
            let mut progressed = true;
            let mut from_store = 0;
            let mut checked_at = tokio::time::Instant::now();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    next = tokio::time::timeout(quiet, messages.next()) => next,
                };
                match next {
                    Ok(Some(batch)) => {
                        self.apply_messages(batch).await?;
                        progressed = true;
                    }
                    Ok(None) => return Err(consumer_error("message stream ended")),
                    Err(_quiet) => {
                        let head = store::head(&self.feeder.pool).await?;
                        let check_due = checked_at.elapsed() >= self.config.idle_check;
                        if check_due && self.heal(head).await? {
                            break;
                        }
                        // Past what the consumer does not bring: events of other stream
                        // types, or (counted) its own that the bus lost or has not got yet.
                        from_store += self.feeder.catch_up_to(head).await?;
                        let lag = head.saturating_sub(self.feeder.checkpoint());
                        metrics::gauge!("brain_projector_lag_events", "projector" => name)
                            .set(lag as f64);
                    }
                }
                if checked_at.elapsed() < self.config.idle_check {
                    continue;
                }
                checked_at = tokio::time::Instant::now();
                leadership.check().await?;
                // Silent for a whole interval while the store held events this consumer
                // should have brought: the stream will not bring them (reset, lost tail),
                // so follow a new consumer from the checkpoint.
                if from_store > 0 && !progressed {
                    tracing::info!(projector = name, from_store, "consumer silent, recreating it");
                    break;
                }
                (progressed, from_store) = (false, 0);
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

    /// Applies a batch from the bus. The bus is not trusted (design invariant 11), and a
    /// filtered consumer's sequence has gaps, so one query asks the store for the
    /// fingerprints of every event this projector wants between the checkpoint and the
    /// batch's last message, and of that last one ([`verify::fingerprints_wanted`]). The
    /// batch is applied as it came only if it holds exactly those wanted events, each the
    /// store's, and its last message is the store's event: the checkpoint then moves to that
    /// message, past the other events in the gaps. Otherwise (a wanted event the bus lost; a
    /// message that does not decode or is not the store's event at its sequence: a foreign
    /// publisher, a forged payload under a real event id, a stream from another store) the
    /// range is read from PostgreSQL instead; a refused message is logged, counted and
    /// reported to the relay.
    async fn apply_messages(
        &mut self,
        batch: Vec<Result<jetstream::Message, consumer::pull::MessagesError>>,
    ) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        let after = self.feeder.checkpoint();
        let mut received = Vec::with_capacity(batch.len());
        let mut last = None;
        for message in batch {
            let message = message.map_err(consumer_error)?;
            let info = message.info().map_err(consumer_error)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence > after {
                received.push((sequence, message.subject.clone(), message.payload.clone()));
            }
            last = Some((message, pending));
        }
        metrics::counter!("brain_projector_messages_total", "projector" => name)
            .increment(received.len() as u64);
        if let Some(&(last_sequence, ..)) = received.last() {
            self.apply_received(received, last_sequence).await?;
        }
        if let Some((message, pending)) = last {
            // Ack policy `All`: this acknowledges the whole batch.
            message.ack().await.map_err(consumer_error)?;
            metrics::gauge!("brain_projector_lag_events", "projector" => name).set(pending as f64);
        }
        Ok(())
    }

    /// [`Runner::apply_messages`] for the messages past the checkpoint, in sequence order.
    async fn apply_received(
        &mut self,
        received: Vec<(u64, async_nats::Subject, bytes::Bytes)>,
        last: u64,
    ) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        let reads = self.feeder.reads;
        let first = received[0].0;
        // A long run before the batch (a quiet advance has not passed it yet) is read from
        // the store in pages, so that the one check below spans about a batch.
        if first - 1 - self.feeder.checkpoint() > u64::from(self.feeder.page_events_max) {
            let head = store::head(&self.feeder.pool).await?;
            self.feeder.catch_up_to((first - 1).min(head)).await?;
        }
        let after = self.feeder.checkpoint();
        let stored = verify::fingerprints_wanted(&self.feeder.pool, &reads, after, last).await?;
        let wanted_at = |sequence: u64| {
            stored.get(&sequence).is_some_and(|f| reads.wants(&f.stream_type, &f.event_type))
        };
        let mut events = Vec::new();
        let mut refused = Vec::new();
        let mut last_is_the_stores = false;
        for (sequence, subject, payload) in received {
            if sequence <= after {
                continue;
            }
            // What is not the store's wanted event at its sequence, does not claim to be one
            // (by its subject), and does not end the batch is another projector's: it is not
            // even decoded.
            let claims_wanted = subject_stream_type(&subject)
                .is_none_or(|stream_type| reads.wants_stream_type(stream_type));
            if !(wanted_at(sequence) || claims_wanted || sequence == last) {
                continue;
            }
            let envelope = match bus::Envelope::decode(&payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    tracing::warn!(projector = name, sequence, %error, "bus message does not decode");
                    refused.push(sequence);
                    continue;
                }
            };
            if !verify::is_the_stores(sequence, &envelope, &stored) {
                // An event type of a wanted stream type that the projector does not read,
                // at a position whose event it does not want either: the filtered check holds
                // no fingerprint for it, and it is not applied whatever it is.
                let not_ours = !wanted_at(sequence)
                    && sequence != last
                    && !reads.wants(&envelope.stream_type, &envelope.event_type);
                if !not_ours {
                    refused.push(sequence);
                }
                continue;
            }
            last_is_the_stores |= sequence == last;
            if wanted_at(sequence) {
                match envelope.into_event() {
                    Ok(event) => events.push(event),
                    Err(error) => {
                        tracing::warn!(projector = name, sequence, %error, "bus message does not decode");
                        refused.push(sequence);
                    }
                }
            }
        }
        let wanted = stored.values().filter(|f| reads.wants(&f.stream_type, &f.event_type)).count();
        if refused.is_empty() && events.len() == wanted && last_is_the_stores {
            return self.feeder.commit_through(events, last).await;
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
            verify::report_refused(&self.feeder.pool, self.namespace.as_str(), first_refused).await;
        } else {
            let lost = wanted.saturating_sub(events.len());
            tracing::info!(
                projector = name,
                lost,
                "events the bus did not bring; reading the store"
            );
            metrics::counter!("brain_projector_filled_total", "projector" => name)
                .increment(lost as u64);
        }
        // What the store holds of the batch's range; a message past its head stands for no
        // event and is dropped.
        let through =
            if last_is_the_stores { last } else { last.min(store::head(&self.feeder.pool).await?) };
        self.feeder.catch_up_to(through).await.map(|_| ())
    }

    /// (Re)creates the durable consumer to start right after the checkpoint, filtered on the
    /// projector's stream type ([`ConsumerFilter`]). The store's checkpoint, not the
    /// consumer's ack floor, is the truth about what was applied; and a consumer left by an
    /// earlier release (another filter, another start) is never reused as it is.
    async fn recreate_consumer(&self) -> Result<consumer::PullConsumer, RunnerError> {
        let stream = bus::ensure_stream(&self.jetstream, &self.namespace).await?;
        let name = self.consumer_name();
        match stream.delete_consumer(&name).await {
            Ok(_) => {}
            Err(error) if error.to_string().contains("not found") => {}
            Err(error) => return Err(consumer_error(error)),
        }
        let filter = ConsumerFilter::of(&self.feeder.reads, &self.namespace);
        let config = consumer::pull::Config {
            durable_name: Some(name),
            description: Some(format!("BRAiN projector {}", self.feeder.projector.name())),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.feeder.checkpoint() + 1,
            },
            filter_subject: filter.subject().to_owned(),
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

/// The stream type a bus subject (`<ns>.events.<stream_type>.<stream_id>`) names.
fn subject_stream_type(subject: &str) -> Option<&str> {
    subject.split('.').nth(2)
}

#[cfg(test)]
mod tests {
    use projections::StreamEvents;

    use super::*;

    #[test]
    fn a_consumer_filters_on_the_one_stream_type_its_projector_reads_and_not_on_several() {
        let namespace = Namespace::parse("t_abc").unwrap();
        const ONE: Reads = Reads::Streams(&[StreamEvents::only("mission", &["MissionEnqueued"])]);
        let one = ONE;
        assert_eq!(
            ConsumerFilter::of(&one, &namespace),
            ConsumerFilter::Subject("t_abc.events.mission.>".into())
        );
        const TWO: Reads =
            Reads::Streams(&[StreamEvents::all("agent"), StreamEvents::all("agent_heartbeat")]);
        let two = TWO;
        assert_eq!(ConsumerFilter::of(&two, &namespace), ConsumerFilter::Unfiltered);
        assert_eq!(ConsumerFilter::of(&Reads::All, &namespace), ConsumerFilter::Unfiltered);
        assert_eq!(ConsumerFilter::Unfiltered.subject(), "");
    }

    #[test]
    fn a_subject_names_its_stream_type_third() {
        assert_eq!(subject_stream_type("t_abc.events.mission.m-1"), Some("mission"));
        assert_eq!(subject_stream_type("t_abc.events"), None);
    }
}
