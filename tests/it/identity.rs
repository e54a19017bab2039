//! Keys against a real PostgreSQL: a key made by command opens the cache of another process
//! once that cache has read the log; a rotated key takes both secrets within its grace; a
//! revoked or expired key opens nothing; a token never appears in the log.

use std::collections::BTreeSet;
use std::time::Duration;

use brain::eventlog::follow::Folded;
use brain::identity::cache::{AuthError, KeyCache};
use brain::identity::keys;
use domain::EventMetadata;
use domain::api_key::{KeyGrant, KeyLimits, Permission, Role};
use time::OffsetDateTime;

use crate::support::TestEnv;

fn grant(role: Role) -> KeyGrant {
    KeyGrant {
        name: "ci".into(),
        owner: "team-a".into(),
        role: Some(role),
        permissions: BTreeSet::new(),
        kinds: Vec::new(),
        expires_at_ms: None,
        limits: KeyLimits::default(),
    }
}

fn stream_type() -> domain::StreamType {
    <domain::api_key::ApiKey as domain::Aggregate>::stream_type()
}

fn by(actor: &str) -> EventMetadata {
    EventMetadata::new(actor, OffsetDateTime::now_utc())
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn a_key_opens_another_processes_cache_until_it_is_revoked() {
    // Given a key made by one process, and a cache loaded by another.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let cache = KeyCache::load(&env.other_pool().await).await.unwrap();
    let token =
        keys::create(&store, grant(Role::Developer), by("key:root"), now_ms()).await.unwrap();
    let text = token.expose();
    assert_eq!(cache.authenticate(&text, now_ms()), Err(AuthError::Invalid), "not read yet");

    // When the other cache reads the log.
    assert_eq!(cache.catch_up(&env.other_pool().await).await.unwrap(), 1);

    // Then the token stands for its key, with the role's permissions.
    let principal = cache.authenticate(&text, now_ms()).unwrap();
    assert_eq!(principal.actor(), format!("key:{}", token.key_id));
    assert!(principal.can(Permission::MissionsWrite) && !principal.can(Permission::KeysManage));

    // And once it is revoked, nothing opens it, and the holder of the secret is told why.
    keys::revoke(&store, &token.key_id, "left the team", by("key:root"), now_ms()).await.unwrap();
    cache.catch_up(&env.pool).await.unwrap();
    assert_eq!(
        cache.authenticate(&text, now_ms()),
        Err(AuthError::Revoked { key_id: token.key_id.clone() })
    );
}

#[tokio::test]
async fn a_wrong_secret_an_unknown_id_and_a_malformed_token_are_refused_alike() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let token = keys::create(&store, grant(Role::Viewer), by("key:root"), now_ms()).await.unwrap();
    let cache = KeyCache::load(&env.pool).await.unwrap();
    let other = brain::identity::token::generate().unwrap();
    let wrong_secret = format!("brn_{}_{}", token.key_id, other.secret.expose());
    assert_eq!(cache.authenticate(&wrong_secret, now_ms()), Err(AuthError::Invalid));
    assert_eq!(cache.authenticate(&other.expose(), now_ms()), Err(AuthError::Invalid));
    assert!(matches!(cache.authenticate("Bearer hunter2", now_ms()), Err(AuthError::Malformed(_))));
}

#[tokio::test]
async fn a_rotated_key_takes_both_secrets_within_its_grace_and_only_the_new_one_after() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let old = keys::create(&store, grant(Role::Agent), by("key:root"), now_ms()).await.unwrap();
    let grace_ms = 60_000;
    let new = keys::rotate(&store, &old.key_id, grace_ms, by("key:root"), now_ms()).await.unwrap();
    assert_eq!(new.key_id, old.key_id, "a rotation keeps the key id");
    let cache = KeyCache::load(&env.pool).await.unwrap();
    // A page read twice (two catch-ups at once) is folded in once: a rotation applied again
    // would end the old secret's grace early.
    let stream_type = stream_type();
    let page = brain::eventlog::store::read_stream_type(&env.pool, &stream_type, 0, 100);
    let page = page.await.unwrap();
    cache.fold(&page[page.len() - 1..]).unwrap();
    let now = now_ms();
    assert!(cache.authenticate(&old.expose(), now).is_ok());
    assert!(cache.authenticate(&new.expose(), now).is_ok());
    let after_grace = now + grace_ms + 1_000;
    assert_eq!(cache.authenticate(&old.expose(), after_grace), Err(AuthError::Invalid));
    assert!(cache.authenticate(&new.expose(), after_grace).is_ok());
}

#[tokio::test]
async fn an_expired_key_opens_nothing_and_its_token_is_nowhere_in_the_log() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let expires_at_ms = now_ms() + 60_000;
    let expiring = KeyGrant { expires_at_ms: Some(expires_at_ms), ..grant(Role::Admin) };
    let token = keys::create(&store, expiring, by("key:root"), now_ms()).await.unwrap();
    let cache = KeyCache::load(&env.pool).await.unwrap();
    assert!(cache.authenticate(&token.expose(), expires_at_ms - 1).is_ok());
    assert_eq!(
        cache.authenticate(&token.expose(), expires_at_ms),
        Err(AuthError::Expired { key_id: token.key_id.clone() })
    );
    let log: Vec<String> = sqlx::query_scalar("SELECT payload::text || metadata::text FROM events")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert!(log.iter().all(|row| !row.contains(token.secret.expose())), "{log:?}");
}

/// Runs `brain keys …` against the test database; answers its exit code, stdout and stderr.
fn brain_keys(env: &TestEnv, args: &[&str]) -> (Option<i32>, String, String) {
    let output = crate::support::brain_command()
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run brain keys");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn brain_keys_makes_lists_rotates_and_revokes_keys_without_a_server() {
    // Given a database and no server.
    let env = TestEnv::new().await;

    // When an operator makes a key, the token is printed once and opens the cache.
    let args = ["create", "--name", "deploy", "--owner", "ops", "--role", "operator", "--json"];
    let (code, out, err) = brain_keys(&env, &args);
    assert_eq!(code, Some(0), "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let (key_id, token) = (made["key_id"].as_str().unwrap(), made["token"].as_str().unwrap());
    let cache = KeyCache::load(&env.pool).await.unwrap();
    let principal = cache.authenticate(token, now_ms()).unwrap();
    assert!(principal.can(Permission::AgentsControl) && !principal.can(Permission::KeysManage));

    // Then the list shows it without its secret, and the log names the CLI as the actor.
    let (code, out, _) = brain_keys(&env, &["list", "--json"]);
    assert_eq!(code, Some(0));
    let secret = token.rsplit('_').next().unwrap();
    assert!(out.contains(key_id) && out.contains("\"active\"") && !out.contains(secret), "{out}");
    let actors: Vec<String> = sqlx::query_scalar("SELECT metadata->>'actor' FROM events")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(actors, ["cli"]);

    // And a rotation prints a new token for the same key; a revocation closes it.
    let (code, out, err) = brain_keys(&env, &["rotate", key_id, "--grace-h", "0", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rotated["key_id"], key_id);
    assert_ne!(rotated["token"], token);
    let (code, _, err) = brain_keys(&env, &["revoke", key_id, "--reason", "rotated out"]);
    assert_eq!(code, Some(0), "{err}");
    cache.catch_up(&env.pool).await.unwrap();
    let refused = cache.authenticate(rotated["token"].as_str().unwrap(), now_ms());
    assert_eq!(refused, Err(AuthError::Revoked { key_id: key_id.to_owned() }));
}

#[tokio::test]
async fn brain_keys_refuses_an_unknown_role_naming_the_roles_and_changes_nothing() {
    let env = TestEnv::new().await;
    let (code, _, err) =
        brain_keys(&env, &["create", "--name", "x", "--owner", "y", "--role", "root"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"root\" is not a role; roles: admin, operator"), "{err}");
    let (code, _, err) = brain_keys(&env, &["create", "--name", "x", "--owner", "y"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("a role or at least one permission"), "{err}");
    assert_eq!(env.head().await, 0);
}

#[tokio::test]
async fn a_following_cache_sees_a_revocation_as_soon_as_the_feed_carries_it() {
    // Given a cache following a feed (a broadcast the test sends on, as the live feed would),
    // and a key it has loaded.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let token = keys::create(&store, grant(Role::Viewer), by("key:root"), now_ms()).await.unwrap();
    let cache = KeyCache::load(&env.pool).await.unwrap();
    let (feed, receiver) = tokio::sync::broadcast::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let following = tokio::spawn(brain::eventlog::follow::follow(
        cache.clone(),
        env.pool.clone(),
        receiver,
        stop.clone(),
    ));

    // When the key is revoked and the feed carries the event.
    keys::revoke(&store, &token.key_id, "leaked", by("key:root"), now_ms()).await.unwrap();
    let event = brain::eventlog::feed::FeedEvent::new(
        env.head().await,
        "api_key",
        token.key_id.as_str(),
        "ApiKeyRevoked",
        bytes::Bytes::new(),
    );
    feed.send(std::sync::Arc::new(event)).unwrap();

    // Then the cache refuses the key at once: well before its next reconcile (a second after
    // the first, which ran as it started), so the feed is what told it.
    let soon = Duration::from_millis(500);
    crate::support::wait_until("the cache to see the revocation", soon, || {
        let refused = cache.authenticate(&token.expose(), now_ms()).is_err();
        async move { refused }
    })
    .await;
    stop.cancel();
    following.await.unwrap();
}
