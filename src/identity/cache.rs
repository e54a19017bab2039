//! The key cache: every key of the namespace folded from its `api_key` events, held in memory
//! by each process, and the one place a token is checked.
//!
//! It loads by reading the `api_key` events in position order and then stays current by
//! reading again after its position whenever the live feed carries an `api_key` event, and
//! every [`RECONCILE_EVERY`] in any case (a feed that lagged or lost its bus must not leave a
//! revoked key working). Positions are gapless and in commit order (design invariant 2), so
//! "everything after my position" is always the complete rest. An event this code cannot
//! read stops the cache before it, loudly, rather than skip what might be a revocation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use domain::aggregate::DomainEvent;
use domain::api_key::{ApiKey, ApiKeyEvent, KeyStatus};
use domain::{Aggregate, RecordedEvent};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Principal;
use super::token::{self, TokenError};
use crate::eventlog::feed::FeedEvent;
use crate::eventlog::store::{self, StoreError};

/// Events read per query while loading or catching up.
pub const PAGE_EVENTS_MAX: u32 = 1_000;
/// How often the cache reads the log even when the feed said nothing: the bound on how long a
/// revocation can go unseen if the feed itself failed.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Why a token opens nothing. Unknown key and wrong secret are one answer, so the API does not
/// tell a guesser which key ids exist; revoked and expired are told only to the holder of the
/// right secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Malformed(#[from] TokenError),
    #[error("the key is not valid")]
    Invalid,
    #[error("the key {key_id} was revoked")]
    Revoked { key_id: String },
    #[error("the key {key_id} expired")]
    Expired { key_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("position {position}: cannot read {event_type}: {message}")]
    Unreadable { position: u64, event_type: String, message: String },
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, ApiKey>,
    /// The last `api_key` event folded in (or 0).
    position: u64,
}

/// Every key of the namespace, shared by the tasks of one process.
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<RwLock<Keys>>,
}

impl KeyCache {
    /// A cache holding every key the log has now.
    pub async fn load(pool: &PgPool) -> Result<KeyCache, CacheError> {
        let cache = KeyCache::default();
        cache.catch_up(pool).await?;
        Ok(cache)
    }

    /// Folds in the `api_key` events after the cache's position; answers how many.
    pub async fn catch_up(&self, pool: &PgPool) -> Result<usize, CacheError> {
        let stream_type = ApiKey::stream_type();
        let mut folded = 0;
        loop {
            let after = self.position();
            let page = store::read_stream_type(pool, &stream_type, after, PAGE_EVENTS_MAX).await?;
            let full = page.len() == PAGE_EVENTS_MAX as usize;
            folded += page.len();
            self.fold(&page)?;
            if !full {
                return Ok(folded);
            }
        }
    }

    fn fold(&self, page: &[RecordedEvent]) -> Result<(), CacheError> {
        let mut keys = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for recorded in page {
            let event = ApiKeyEvent::upcast(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload.clone(),
            )
            .map_err(|error| CacheError::Unreadable {
                position: recorded.global_position,
                event_type: recorded.event_type.clone(),
                message: error.to_string(),
            })?;
            let key = keys.by_id.entry(recorded.stream_id.as_str().to_owned()).or_default();
            key.apply(&event);
            keys.position = recorded.global_position;
        }
        Ok(())
    }

    /// The last `api_key` event the cache has folded in.
    pub fn position(&self) -> u64 {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).position
    }

    /// A key as the cache knows it.
    pub fn get(&self, key_id: &str) -> Option<ApiKey> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.by_id.get(key_id).cloned()
    }

    /// Every key id with its state, for listings.
    pub fn all(&self) -> Vec<(String, ApiKey)> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut all: Vec<_> =
            keys.by_id.iter().map(|(id, key)| (id.clone(), key.clone())).collect();
        all.sort_by_key(|(_, key)| key.created_at_ms);
        all
    }

    /// Whether any active key exists (a first start makes an admin key when none does).
    pub fn has_active_key(&self) -> bool {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.by_id.values().any(|key| key.status == KeyStatus::Active)
    }

    /// The principal a token stands for at `now_ms`.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Principal, AuthError> {
        let token = token::parse(token)?;
        let presented = token.secret.hash();
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(key) = keys.by_id.get(&token.key_id) else { return Err(AuthError::Invalid) };
        let mut known =
            [Some(key.secret_hash.as_str()), key.previous.as_ref().map(|(hash, _)| hash.as_str())]
                .into_iter()
                .flatten();
        if !known.any(|hash| token::hashes_equal(hash, &presented)) {
            return Err(AuthError::Invalid);
        }
        let key_id = token.key_id.clone();
        match key.status {
            KeyStatus::Revoked => return Err(AuthError::Revoked { key_id }),
            KeyStatus::Absent => return Err(AuthError::Invalid),
            KeyStatus::Active if key.expired(now_ms) => return Err(AuthError::Expired { key_id }),
            KeyStatus::Active => {}
        }
        if !key.accepts_hash(now_ms).any(|hash| token::hashes_equal(hash, &presented)) {
            // The old secret of a rotated key, past its grace window.
            return Err(AuthError::Invalid);
        }
        let grant = key.grant.as_ref().ok_or(AuthError::Invalid)?;
        Ok(Principal::of(&token.key_id, grant))
    }

    /// Keeps the cache current until `stop`: reads the log again after every `api_key` event
    /// the feed carries, after the feed lagged, and every [`RECONCILE_EVERY`]. A failed read is
    /// logged and tried again at the next of those.
    pub async fn follow(
        self,
        pool: PgPool,
        mut feed: broadcast::Receiver<Arc<FeedEvent>>,
        stop: CancellationToken,
    ) {
        let stream_type = ApiKey::stream_type();
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
            if read && let Err(error) = self.catch_up(&pool).await {
                tracing::error!(%error, "the key cache cannot read the log; it keeps what it has");
            }
        }
    }
}
