//! The projector runtime: feeds a [`Projector`] the events it reads, in position order, and
//! keeps its checkpoint exact, whatever the events' source.
//!
//! A [`Runner`] leads one projector (advisory lock, like the relay): it starts at the stored
//! checkpoint, catches up from PostgreSQL in pages, then follows the process's live feed
//! ([`crate::eventlog::feed`]): the one JetStream consumer of the process, whose events are
//! checked against the store once and come without a hole, in position order. Every
//! projector of the process shares each event: one delivery, one check and (for those that
//! read it) one parse per process, not one per projector (design decision 0045). A projector
//! declares what it applies ([`Projector::reads`]): an event of another type only moves its
//! checkpoint, unparsed, and reads of PostgreSQL select only the wanted events. A projector
//! that falls behind the feed's buffer, or finds the feed quiet for
//! [`RunnerConfig::quiet_advance`], reads the store past what it was given. Each batch's
//! effect and checkpoint commit together, once, so a crash between the two only causes
//! events to be applied again that the checkpoint skips.
//!
//! [`crate::eventlog::projectors::rebuild`] replays the log's wanted events through the same
//! `apply` into shadow tables and swaps them in atomically.

use std::time::Duration;

use std::sync::Arc;

use domain::RecordedEvent;
use futures::StreamExt;
use projections::{Admit, Checkpoint, CommitError, ProjectionStore, Projector, Reads};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::Namespace;
use crate::eventlog::bus;
use crate::eventlog::feed::{FeedEvent, FeedHandle};
use crate::eventlog::leader;
use crate::eventlog::projectors;
use crate::eventlog::store::{self, StoreError};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events read from PostgreSQL per query, and applied per commit while catching up.
    pub page_events_max: u32,
    /// Most live events applied in one commit.
    pub batch_events_max: usize,
    /// How often a leader checks its leadership and, when the feed is quiet, its model
    /// against the log ([`Runner::heal`]); also how often a standby tries for leadership.
    pub idle_check: Duration,
    /// How long the feed may stay quiet before the runner reads the store past what it
    /// brought (a feed that stopped or fell behind): the checkpoint must still reach the
    /// head, since readers wait on it.
    pub quiet_advance: Duration,
    /// How long a commit that would only move the checkpoint (a batch of events the
    /// projector does not read) may be put off: see [`Feeder::defer_empty_commits`].
    pub empty_commit_defer: Duration,
    pub retry_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            page_events_max: 1_000,
            batch_events_max: 1_000,
            idle_check: Duration::from_secs(1),
            quiet_advance: Duration::from_millis(200),
            empty_commit_defer: Duration::from_millis(200),
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
    #[error("the live feed has closed")]
    FeedClosed,
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("the bus holds event {position} but the store ends at {head}")]
    StoreBehind { position: u64, head: u64 },
}

/// Applies events to a store, keeping the checkpoint rule: the part shared by live
/// following, catch-up and rebuild. It reads from PostgreSQL only the events its projector
/// [`Projector::reads`], and moves the checkpoint past the others without reading them.
pub struct Feeder<P: Projector, S: ProjectionStore<P::Change>> {
    projector: P,
    reads: Reads,
    store: S,
    pool: PgPool,
    /// What this feeder has applied: the store's checkpoint, or past it by events that
    /// changed nothing (a deferred commit).
    checkpoint: Checkpoint,
    /// The store's checkpoint, as of this feeder's last commit.
    stored: u64,
    stored_at: std::time::Instant,
    empty_commit_defer: Duration,
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
            stored: position,
            stored_at: std::time::Instant::now(),
            empty_commit_defer: Duration::ZERO,
            page_events_max: page_events_max.max(1),
        })
    }

    /// Lets a commit that would only move the checkpoint wait until `defer` has passed since
    /// the store's checkpoint last moved, or until [`Feeder::flush`]: the next commit then
    /// moves it over both batches. A projector that reads few of the log's events (LLM usage,
    /// conversations) otherwise spends a transaction on every batch of the mission pipeline
    /// for nothing. Nothing is lost by the wait: the events in between change nothing, so a
    /// restart from the store's checkpoint reads them again to the same effect.
    pub fn defer_empty_commits(&mut self, defer: Duration) {
        self.empty_commit_defer = defer;
    }

    /// Commits a checkpoint move that was put off, if any.
    pub async fn flush(&mut self) -> Result<(), RunnerError> {
        if self.stored < self.checkpoint() {
            let up_to = self.checkpoint();
            self.store_commit(up_to, Vec::new()).await?;
        }
        Ok(())
    }

    /// Takes the store's checkpoint as both applied and stored (another leader or a rebuild
    /// moved it, or a heal reset the model).
    fn restart_at(&mut self, position: u64) {
        self.checkpoint = Checkpoint::new(position);
        self.stored = position;
        self.stored_at = std::time::Instant::now();
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.position()
    }

    /// Commits `changes` and moves the store's checkpoint from where this feeder left it to
    /// `up_to`. Returns false, having applied nothing, if a rebuild moved the checkpoint
    /// (now the store's).
    async fn store_commit(
        &mut self,
        up_to: u64,
        changes: Vec<P::Change>,
    ) -> Result<bool, RunnerError> {
        match self.store.commit(self.stored, up_to, changes).await {
            Ok(()) => {
                self.checkpoint = Checkpoint::new(up_to);
                self.stored = up_to;
                self.stored_at = std::time::Instant::now();
                let name = self.projector.name();
                metrics::gauge!("brain_projector_position", "projector" => name).set(up_to as f64);
                Ok(true)
            }
            // A rebuild swapped the model under us: continue from where it got to.
            Err(CommitError::Moved { actual }) => {
                tracing::info!(projector = self.projector.name(), actual, "checkpoint moved");
                self.restart_at(actual);
                Ok(false)
            }
            Err(CommitError::Store(error)) => Err(projection_error(error)),
        }
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
    /// checkpoint to `position`. Returns how many wanted events it applied. `brain events
    /// verify` builds a scratch model with it up to exactly the live model's position.
    ///
    /// The next pages are read ([`store::read_ahead`]: on their own tasks and connections)
    /// while this one is applied and committed: a long catch-up (a rebuild, a heal, a scratch
    /// build) keeps PostgreSQL's scans, the decoding and the store's writes all busy at once.
    /// Pages read ahead of a checkpoint that a rebuild then moved are dropped, and the read
    /// starts again from there.
    pub async fn catch_up_to(&mut self, position: u64) -> Result<usize, RunnerError> {
        let (pool, reads, limit) = (self.pool.clone(), self.reads, self.page_events_max);
        let read: store::read_ahead::ReadRange = Arc::new(move |after, to| {
            let pool = pool.clone();
            Box::pin(async move { store::read_wanted(&pool, &reads, after, to, limit).await })
        });
        // A range of a projector that reads everything holds one page; of one that reads
        // some stream types, as many positions as one filtered read scans.
        let span = match self.reads {
            Reads::All => u64::from(limit),
            Reads::Streams(_) => store::WANTED_SCAN_POSITIONS_MAX,
        };
        let (after, depth) = (self.checkpoint(), store::read_ahead::READ_AHEAD_PAGES);
        let mut pages = store::read_ahead::ReadAhead::new(read, after, position, span, depth);
        let mut applied = 0;
        while self.checkpoint() < position {
            let Some(page) = pages.next().await else { break };
            let page = page?;
            applied += page.events.len();
            // A rebuild that moved the checkpoint makes the read start again from there.
            if !self.commit(page.events.iter().collect(), page.through).await? {
                pages.restart(self.checkpoint());
            }
        }
        Ok(applied)
    }

    /// Applies the log's events given in position order: each position with its event when
    /// the projector reads it, `None` for an event it is known not to read. What is at or
    /// below the checkpoint is skipped, and what is missing between them (a hole: a position
    /// not given) is read from the store, only the wanted events.
    pub async fn feed<'a>(
        &mut self,
        given: impl IntoIterator<Item = (u64, Option<&'a RecordedEvent>)>,
    ) -> Result<(), RunnerError> {
        let mut run = Vec::new();
        let mut expected = self.checkpoint;
        for (position, event) in given {
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
            run.extend(event);
        }
        self.commit_through(run, expected.position()).await
    }

    /// [`Feeder::feed`] of whole events, every one given.
    pub async fn feed_events(&mut self, events: &[RecordedEvent]) -> Result<(), RunnerError> {
        self.feed(events.iter().map(|event| (event.global_position, Some(event)))).await
    }

    /// Applies `events`, every event the projector wants in `checkpoint < position <=
    /// through` (others among them are skipped), and moves the checkpoint to `through`. If a
    /// rebuild moved the checkpoint meanwhile, the rest is read from the store.
    async fn commit_through(
        &mut self,
        events: Vec<&RecordedEvent>,
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
        events: Vec<&RecordedEvent>,
        mut up_to: u64,
    ) -> Result<bool, RunnerError> {
        let after = self.checkpoint();
        if up_to <= after {
            return Ok(true);
        }
        let mut changes = Vec::new();
        let mut unreadable = None;
        for event in events {
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
        let deferred = changes.is_empty()
            && unreadable.is_none()
            && self.stored_at.elapsed() < self.empty_commit_defer;
        if up_to > after && deferred {
            self.checkpoint = Checkpoint::new(up_to);
        } else if up_to > after && !self.store_commit(up_to, changes).await? {
            return Ok(false);
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

/// Leads one projector for a namespace: catch-up from the store, then live from the
/// process's feed.
pub struct Runner<P: Projector, S: ProjectionStore<P::Change>> {
    feeder: Feeder<P, S>,
    feed: FeedHandle,
    namespace: Namespace,
    config: RunnerConfig,
}

impl<P: Projector, S: ProjectionStore<P::Change>> Runner<P, S> {
    pub async fn new(
        projector: P,
        store: S,
        pool: PgPool,
        feed: FeedHandle,
        namespace: Namespace,
        config: RunnerConfig,
    ) -> Result<Runner<P, S>, RunnerError> {
        let mut feeder = Feeder::new(projector, store, pool, config.page_events_max).await?;
        feeder.defer_empty_commits(config.empty_commit_defer);
        Ok(Runner { feeder, feed, namespace, config })
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

    /// One term as leader: subscribe to the feed, catch up from the store, then apply what
    /// the feed brings, batch by batch. The feed's events are the log's, checked against the
    /// store and without a hole; a projector that falls behind the feed's buffer is told so
    /// and finds the hole in the next event it gets, which it fills from the store. While the
    /// feed is quiet the runner reads the store past what it brought (a feed that stopped or
    /// is behind), and, once per idle check, compares its model with the log ([`Self::heal`]).
    async fn lead(
        &mut self,
        leadership: &mut leader::Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        // Another leader may have moved the checkpoint while we stood by.
        let stored = self.feeder.store.checkpoint().await.map_err(projection_error)?;
        self.feeder.restart_at(stored);
        self.heal(store::head(&self.feeder.pool).await?).await?;
        // Subscribed before the catch-up, so nothing appended meanwhile is missed: what the
        // catch-up already applied comes again and is skipped.
        let mut live = self.feed.subscribe();
        self.feeder.catch_up().await?;
        let quiet = self.config.quiet_advance.min(self.config.idle_check);
        let batch_max = self.config.batch_events_max.max(1);
        let (mut checked_at, mut healed_at) =
            (tokio::time::Instant::now(), tokio::time::Instant::now());
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => None,
                next = tokio::time::timeout(quiet, live.recv()) => Some(next),
            };
            let Some(next) = next else {
                return self.feeder.flush().await;
            };
            match next {
                Ok(Ok(first)) => {
                    let mut batch = vec![first];
                    // Whatever else has arrived goes in the same commit; a lag met here
                    // shows as a hole in the next batch.
                    while batch.len() < batch_max {
                        match live.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    self.apply_live(&batch).await?;
                }
                Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    metrics::counter!("brain_projector_lagged_events_total", "projector" => name)
                        .increment(missed);
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(RunnerError::FeedClosed);
                }
                Err(_quiet) => {
                    // Before the heal, which takes a stored checkpoint behind the applied one
                    // for a model that lost its state.
                    self.feeder.flush().await?;
                    let head = store::head(&self.feeder.pool).await?;
                    if healed_at.elapsed() >= self.config.idle_check {
                        healed_at = tokio::time::Instant::now();
                        self.heal(head).await?;
                    }
                    self.feeder.catch_up_to(head).await?;
                    let lag = head.saturating_sub(self.feeder.checkpoint());
                    metrics::gauge!("brain_projector_lag_events", "projector" => name)
                        .set(lag as f64);
                }
            }
            if checked_at.elapsed() >= self.config.idle_check {
                checked_at = tokio::time::Instant::now();
                leadership.check().await?;
            }
        }
    }

    /// Applies a batch of the feed's events. Those of types the projector does not read
    /// only move its checkpoint, and are never parsed; an event that does not parse is left
    /// out, so that it reads as a hole and is taken from the store.
    async fn apply_live(&mut self, batch: &[Arc<FeedEvent>]) -> Result<(), RunnerError> {
        let name = self.feeder.projector.name();
        let reads = self.feeder.reads;
        let after = self.feeder.checkpoint();
        let mut given = Vec::with_capacity(batch.len());
        for event in batch.iter().filter(|event| event.position > after) {
            if !reads.wants(&event.stream_type, &event.event_type) {
                given.push((event.position, None));
            } else if let Some(parsed) = event.event() {
                given.push((event.position, Some(parsed)));
            }
        }
        metrics::counter!("brain_projector_messages_total", "projector" => name)
            .increment(given.len() as u64);
        self.feeder.feed(given).await?;
        let lag = self.feed.position().saturating_sub(self.feeder.checkpoint());
        metrics::gauge!("brain_projector_lag_events", "projector" => name).set(lag as f64);
        Ok(())
    }

    /// Compares the read model's stored checkpoint with what this runner applied and with
    /// the log's head, so that a model that lost its state heals without anyone's help (design
    /// invariant 11). Lower than applied: the model lost state (Redis flushed or restarted);
    /// it is consistent up to its checkpoint, which commits with its effects, so it is
    /// refilled from there, page by page. Above the head: the log it was built from is gone
    /// (the database restored or recreated), so it is dropped and rebuilt from the start.
    /// Higher than applied: a rebuild moved it; carry on from there. Returns whether the
    /// runner's checkpoint moved.
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
            self.feeder.restart_at(0);
            projectors::record_reset(&self.feeder.pool, name, "ahead_of_log", 0).await;
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
            projectors::record_reset(&self.feeder.pool, name, "lost_state", stored).await;
        }
        if stored != applied {
            self.feeder.restart_at(stored);
            return Ok(true);
        }
        Ok(false)
    }

    pub fn checkpoint(&self) -> u64 {
        self.feeder.checkpoint()
    }
}

/// Deletes the durable JetStream consumers that projectors followed before they followed
/// the process's feed (`projector_<name>`): left in place, the server would keep their state
/// for nothing. Best effort; returns how many it deleted.
pub async fn remove_old_consumers(
    client: async_nats::Client,
    namespace: &Namespace,
) -> Result<usize, RunnerError> {
    let jetstream = bus::jetstream(client, 1);
    let stream = bus::ensure_stream(&jetstream, namespace).await?;
    let mut names = stream.consumer_names();
    let mut old = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|error| RunnerError::Consumer(error.to_string()))?;
        if name.starts_with(OLD_CONSUMER_PREFIX) {
            old.push(name);
        }
    }
    let mut deleted = 0;
    for name in old {
        match stream.delete_consumer(&name).await {
            Ok(_) => deleted += 1,
            Err(error) => tracing::warn!(consumer = name, %error, "old projector consumer stays"),
        }
    }
    Ok(deleted)
}

/// The name prefix of the durable consumers projectors once followed.
pub const OLD_CONSUMER_PREFIX: &str = "projector_";
