//! In-memory read models of one small stream type (API keys, agent kinds) that every process
//! keeps for itself, current within a moment of the log.
//!
//! Such a model is not a projector: the runtime's projectors are led by one process and
//! written to a shared store, while these must answer in every process without a round trip
//! (a key is checked on every request). So each process loads the stream type's events in
//! position order, and reads again after its position whenever the live feed carries an event
//! of that type, after the feed lagged, and every [`RECONCILE_EVERY`] whatever the feed said:
//! a feed that lost its bus must not leave a revocation unseen for longer. Positions are
//! gapless and in commit order (design invariant 2), so "everything after my position" is the
//! complete rest. An event the model cannot read stops it before that event, loudly, rather
//! than skip what might be a revocation.

use std::sync::Arc;
use std::time::Duration;

use domain::{RecordedEvent, StreamType};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::eventlog::feed::FeedEvent;
use crate::eventlog::store::{self, StoreError};

/// Events read per query while loading or catching up.
pub const PAGE_EVENTS_MAX: u32 = 1_000;
/// How often a model reads the log even when the feed said nothing: the most a revocation
/// can go unseen when the feed is down (design invariant 12 asks for a second). One indexed
/// query that finds nothing, per model and process.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// An event of the model's stream type that this code cannot read: the projectors' own
/// type, since it means the same here.
pub use projections::Unreadable;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
}

/// A model kept in memory and shared by a process's tasks (cheap to clone).
pub trait Folded: Clone + Send + Sync + 'static {
    /// The stream type the model is made of.
    fn stream_type(&self) -> StreamType;
    /// The last event folded in (0 before any).
    fn position(&self) -> u64;
    /// Folds a page of events, in position order, moving the position with each.
    fn fold(&self, page: &[RecordedEvent]) -> Result<(), Unreadable>;
}

/// Folds in the events after the model's position; answers how many.
pub async fn catch_up<M: Folded>(model: &M, pool: &PgPool) -> Result<usize, FollowError> {
    let stream_type = model.stream_type();
    let mut folded = 0;
    loop {
        let after = model.position();
        let page = store::read_stream_type(pool, &stream_type, after, PAGE_EVENTS_MAX).await?;
        folded += page.len();
        model.fold(&page)?;
        if page.len() < PAGE_EVENTS_MAX as usize {
            return Ok(folded);
        }
    }
}

/// Keeps `model` current until `stop`. A failed read is logged and tried again at the next
/// event, lag or reconcile.
pub async fn follow<M: Folded>(
    model: M,
    pool: PgPool,
    mut feed: broadcast::Receiver<Arc<FeedEvent>>,
    stop: CancellationToken,
) {
    let stream_type = model.stream_type();
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_open = true;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reconcile.tick() => true,
            received = feed.recv(), if feed_open => match received {
                Ok(event) => *event.stream_type == *stream_type.as_str(),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => {
                    feed_open = false;
                    true
                }
            },
        };
        if read && let Err(error) = catch_up(&model, &pool).await {
            tracing::error!(%stream_type, %error, "an in-memory model cannot read the log; it keeps what it has");
        }
    }
}
