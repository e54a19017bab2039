//! The serve's identity at start-up: every key loaded and followed in the log, the agent kinds
//! likewise, the session secret, and the admin key that `BRAIN_ADMIN_KEY` names or that a
//! first start with no key makes for the operator.

use std::net::SocketAddr;

use anyhow::Context;

use super::{Connected, ServeOptions, Stages};
use crate::eventlog::feed::FeedHandle;
use crate::eventlog::store::EventStore;
use crate::identity::cache::KeyCache;

/// What the API checks callers against, and the admin key a first start made.
pub(super) struct Identity {
    pub keys: KeyCache,
    /// The agent kinds registered in the log.
    pub kinds: crate::agents::kinds::KindCache,
    pub sessions: crate::identity::session::Sessions,
    pub sign_in_codes: crate::identity::session::SignInCodes,
    pub first_token: Option<crate::identity::token::Token>,
}

/// The actor of what `brain serve` records about keys itself.
const SERVE_ACTOR: &str = "serve";

/// Loads every key and follows the log for changes; makes sure `BRAIN_ADMIN_KEY` exists, or,
/// on a first start with no key at all, makes an admin key for the operator.
pub(super) async fn start_identity(
    services: &Connected,
    store: &EventStore,
    options: &ServeOptions,
    feed: &FeedHandle,
    stages: &Stages,
) -> anyhow::Result<Identity> {
    use crate::identity::{keys, token};
    use domain::api_key::{KeyGrant, Role};
    let pool = &services.pool;
    // Subscribed before loading: whatever is recorded between reaches the follower.
    let changes = feed.subscribe();
    let cache = KeyCache::load(pool).await.context("loading API keys")?;
    let grant = |name: &str| KeyGrant {
        name: name.to_owned(),
        owner: "admin".to_owned(),
        role: Some(Role::Admin),
        permissions: Default::default(),
        kinds: Vec::new(),
        expires_at_ms: None,
        limits: Default::default(),
    };
    let metadata = || domain::EventMetadata::new(SERVE_ACTOR, time::OffsetDateTime::now_utc());
    let now = crate::clock::now_ms();
    let mut first_token = None;
    if let Some(text) = &options.access.admin_key {
        let token = token::parse(text).context("BRAIN_ADMIN_KEY")?;
        match cache.get(&token.key_id) {
            None => {
                let made = keys::create_with(
                    store,
                    &token,
                    grant("admin (BRAIN_ADMIN_KEY)"),
                    metadata(),
                    now,
                )
                .await;
                // Another serve starting beside this one may have made it first.
                if let Err(error) = made {
                    cache.catch_up(pool).await?;
                    if cache.get(&token.key_id).is_none() {
                        return Err(anyhow::anyhow!("BRAIN_ADMIN_KEY could not be made: {error}"));
                    }
                }
            }
            Some(key) if !token::hashes_equal(&key.secret_hash, &token.secret.hash()) => {
                tracing::warn!(key_id = %token.key_id, "BRAIN_ADMIN_KEY names a key whose secret has changed since; it does not open it");
            }
            Some(key) if key.status != domain::api_key::KeyStatus::Active => {
                tracing::warn!(key_id = %token.key_id, "BRAIN_ADMIN_KEY names a revoked key; revocation is for good, so set a new one");
            }
            Some(_) => {}
        }
    } else if !cache.has_active_key() {
        let token = keys::create(store, grant("admin (first start)"), metadata(), now).await?;
        tracing::info!(key_id = %token.key_id, "no key existed: made an admin key (shown once on stdout)");
        first_token = Some(token);
    }
    cache.catch_up(pool).await?;
    let follower = crate::eventlog::follow::follow(
        cache.clone(),
        pool.clone(),
        changes,
        stages.server.clone(),
    );
    tokio::spawn(follower);
    // The registered agent kinds, followed the same way.
    let kind_changes = feed.subscribe();
    let kinds = crate::agents::kinds::KindCache::default();
    crate::eventlog::follow::catch_up(&kinds, pool).await.context("loading agent kinds")?;
    let stop = stages.server.clone();
    tokio::spawn(crate::eventlog::follow::follow(kinds.clone(), pool.clone(), kind_changes, stop));
    let sessions = crate::identity::session::Sessions::load(pool, options.access.session_ttl_s)
        .await
        .context("loading the session secret")?;
    Ok(Identity { keys: cache, kinds, sessions, sign_in_codes: Default::default(), first_token })
}

/// The host a sign-in link names: the bound address, or `localhost` for an unspecified one.
pub(super) fn sign_in_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() }
}
