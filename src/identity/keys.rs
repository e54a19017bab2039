//! Making, rotating and revoking keys: each a command on the key's `api_key` stream, so the
//! log says who did it and why. The secret is drawn here and leaves only in the answer, once;
//! the event holds its hash.

use domain::api_key::{
    ApiKey, ApiKeyCommand, ApiKeyError, KeyGrant, KeyLimits, KeyStatus, Permission, Role,
};
use domain::{EventMetadata, StreamId};

use super::token::{self, Secret, Token, TokenError};
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Command(#[from] CommandError<ApiKeyError>),
    #[error("{0:?} is not a key id")]
    BadId(String),
}

fn stream_id(key_id: &str) -> Result<StreamId, KeyError> {
    if !domain::api_key::is_key_id(key_id) {
        return Err(KeyError::BadId(key_id.to_owned()));
    }
    StreamId::parse(key_id).map_err(|_| KeyError::BadId(key_id.to_owned()))
}

/// Makes a key; the answer is the only place its token ever appears.
pub async fn create(
    store: &EventStore,
    grant: KeyGrant,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<Token, KeyError> {
    let token = token::generate()?;
    create_with(store, &token, grant, metadata, now_ms).await?;
    Ok(token)
}

/// Makes a key with a token chosen elsewhere (`BRAIN_ADMIN_KEY`: automation that must know
/// its key before the first start).
pub async fn create_with(
    store: &EventStore,
    token: &Token,
    grant: KeyGrant,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<(), KeyError> {
    let id = stream_id(&token.key_id)?;
    let secret_hash = token.secret.hash();
    let grant = Box::new(grant);
    command::execute_new::<ApiKey>(store, &id, metadata, None, || ApiKeyCommand::Create {
        grant: grant.clone(),
        secret_hash: secret_hash.clone(),
        now_ms,
    })
    .await?;
    Ok(())
}

/// Gives a key a new secret; the old one keeps working for `grace_ms`.
pub async fn rotate(
    store: &EventStore,
    key_id: &str,
    grace_ms: i64,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<Token, KeyError> {
    let id = stream_id(key_id)?;
    let secret: Secret = token::new_secret()?;
    let secret_hash = secret.hash();
    command::execute_new::<ApiKey>(store, &id, metadata, None, || ApiKeyCommand::Rotate {
        secret_hash: secret_hash.clone(),
        grace_ms,
        now_ms,
    })
    .await?;
    Ok(Token { key_id: key_id.to_owned(), secret })
}

/// Revokes a key for good.
pub async fn revoke(
    store: &EventStore,
    key_id: &str,
    reason: &str,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<(), KeyError> {
    let id = stream_id(key_id)?;
    command::execute::<ApiKey>(store, &id, metadata, || ApiKeyCommand::Revoke {
        reason: reason.to_owned(),
        now_ms,
    })
    .await?;
    Ok(())
}

/// A key as lists show it: everything but its secret and the secret's hash.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub key_id: String,
    pub name: String,
    pub owner: String,
    pub role: Option<Role>,
    /// Every permission the key holds: its role's and its own.
    pub permissions: Vec<Permission>,
    /// The agent kinds an agent key may serve; empty: any.
    pub kinds: Vec<String>,
    pub expires_at_ms: Option<i64>,
    pub limits: KeyLimits,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    pub created_at_ms: i64,
    /// Until when the secret before the last rotation is still accepted, if it is.
    pub previous_secret_until_ms: Option<i64>,
}

impl KeyView {
    /// The view of a key at `now_ms`; `None` for an id the log has no key under.
    pub fn of(key_id: &str, key: &ApiKey, now_ms: i64) -> Option<KeyView> {
        let grant = key.grant.as_ref()?;
        let status = match key.status {
            KeyStatus::Revoked => "revoked",
            KeyStatus::Active if key.expired(now_ms) => "expired",
            KeyStatus::Active => "active",
            KeyStatus::Absent => return None,
        };
        Some(KeyView {
            key_id: key_id.to_owned(),
            name: grant.name.clone(),
            owner: grant.owner.clone(),
            role: grant.role,
            permissions: grant.effective().into_iter().collect(),
            kinds: grant.kinds.clone(),
            expires_at_ms: grant.expires_at_ms,
            limits: grant.limits.clone(),
            status,
            created_at_ms: key.created_at_ms,
            previous_secret_until_ms: key
                .previous
                .as_ref()
                .map(|(_, until)| *until)
                .filter(|until| *until > now_ms),
        })
    }
}
