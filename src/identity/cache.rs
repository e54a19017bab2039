//! The key cache: every key of the namespace folded from its `api_key` events, held in memory
//! by each process and kept current by following the log (`eventlog::follow`), and the one
//! place a token is checked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use domain::aggregate::DomainEvent;
use domain::api_key::{ApiKey, ApiKeyEvent, KeyStatus};
use domain::{Aggregate, RecordedEvent, StreamType};
use sqlx::PgPool;

use super::Principal;
use super::token::{self, TokenError};
use crate::eventlog::follow::{self, Folded, FollowError, Unreadable};

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
    #[error("the session is not valid: sign in again")]
    BadSession,
    #[error("the session expired: sign in again")]
    SessionExpired,
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
    pub async fn load(pool: &PgPool) -> Result<KeyCache, FollowError> {
        let cache = KeyCache::default();
        cache.catch_up(pool).await?;
        Ok(cache)
    }

    /// Folds in the `api_key` events after the cache's position; answers how many.
    pub async fn catch_up(&self, pool: &PgPool) -> Result<usize, FollowError> {
        follow::catch_up(self, pool).await
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
        let in_grace = key
            .previous
            .as_ref()
            .is_some_and(|(hash, until)| token::hashes_equal(hash, &presented) && now_ms < *until);
        if !token::hashes_equal(&key.secret_hash, &presented) && !in_grace {
            // A wrong secret, or the old one of a rotated key past its grace: nothing more is
            // said, so that only the holder of a working secret learns a key's state.
            return Err(AuthError::Invalid);
        }
        drop(keys);
        self.principal(&token.key_id, now_ms)
    }

    /// The principal of a key whose secret (or session) was checked: refused if the key is
    /// revoked, expired or unknown at `now_ms`.
    pub fn principal(&self, key_id: &str, now_ms: i64) -> Result<Principal, AuthError> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(key) = keys.by_id.get(key_id) else { return Err(AuthError::Invalid) };
        let key_id = key_id.to_owned();
        match key.status {
            KeyStatus::Revoked => return Err(AuthError::Revoked { key_id }),
            KeyStatus::Absent => return Err(AuthError::Invalid),
            KeyStatus::Active if key.expired(now_ms) => return Err(AuthError::Expired { key_id }),
            KeyStatus::Active => {}
        }
        let grant = key.grant.as_ref().ok_or(AuthError::Invalid)?;
        Ok(Principal::of(&key_id, grant))
    }
}

impl Folded for KeyCache {
    fn stream_type(&self) -> StreamType {
        ApiKey::stream_type()
    }

    fn position(&self) -> u64 {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).position
    }

    fn fold(&self, page: &[RecordedEvent]) -> Result<(), Unreadable> {
        let mut keys = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for recorded in page {
            // Two catch-ups may read the same page; an event is folded in once.
            if recorded.global_position <= keys.position {
                continue;
            }
            let event = ApiKeyEvent::upcast(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload.clone(),
            )
            .map_err(|error| Unreadable::of(recorded, error))?;
            keys.by_id.entry(recorded.stream_id.as_str().to_owned()).or_default().apply(&event);
            keys.position = recorded.global_position;
        }
        Ok(())
    }
}
