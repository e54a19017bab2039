//! `brain keys create | list | rotate | revoke`: keys managed against the store directly, with
//! no server needed (the first admin key of an automated deployment, a key revoked while the
//! API is down). Each change is a command on the key's stream with actor `cli`: whoever can run
//! this can reach the database, and the log says the change came that way.

use std::collections::BTreeSet;

use domain::EventMetadata;
use domain::api_key::{KeyGrant, KeyLimits, Permission, ROTATION_GRACE_MS_DEFAULT, Role};
use serde_json::json;

use super::cache::KeyCache;
use super::keys;
use crate::config::Services;
use crate::eventlog::store::EventStore;

/// The actor of the events `brain keys` records.
pub const CLI_ACTOR: &str = "cli";

fn role(value: &str) -> Result<Role, String> {
    Role::parse(value).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
        format!("{value:?} is not a role; roles: {}", known.join(", "))
    })
}

fn permission(value: &str) -> Result<Permission, String> {
    Permission::parse(value).ok_or_else(|| {
        let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        format!("{value:?} is not a permission; permissions: {}", known.join(", "))
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCli {
    /// Make a key; prints its token once (only its hash is kept).
    Create {
        #[command(flatten)]
        services: Services,
        /// What the key is for, shown in lists.
        #[arg(long)]
        name: String,
        /// Who the key is for (a person, a team, a program).
        #[arg(long)]
        owner: String,
        /// admin, operator, developer, viewer or agent.
        #[arg(long, value_parser = role)]
        role: Option<Role>,
        /// A permission beside the role's (repeat for more), e.g. `metrics`.
        #[arg(long = "permission", value_parser = permission)]
        permissions: Vec<Permission>,
        /// An agent kind the key may serve (repeat for more; none: any).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Hours until the key expires (none: never).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=87_600))]
        expires_in_h: Option<u64>,
        /// Print `{"key_id", "token"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys: id, name, owner, grant, status. Never a secret.
    List {
        #[command(flatten)]
        services: Services,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new secret; prints its new token once. The old one works for the grace.
    Rotate {
        #[command(flatten)]
        services: Services,
        key_id: String,
        /// Hours the old secret keeps working (at most 168).
        #[arg(long, default_value_t = (ROTATION_GRACE_MS_DEFAULT / 3_600_000) as u64)]
        grace_h: u64,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key for good.
    Revoke {
        #[command(flatten)]
        services: Services,
        key_id: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
}

impl KeysCli {
    fn services(&self) -> &Services {
        match self {
            KeysCli::Create { services, .. }
            | KeysCli::List { services, .. }
            | KeysCli::Rotate { services, .. }
            | KeysCli::Revoke { services, .. } => services,
        }
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let services = self.services().clone();
        let pool = crate::eventlog::db::connect(&services.database_url, 2).await?;
        crate::eventlog::db::migrate(&pool).await?;
        let (store, committer) =
            EventStore::start(pool.clone(), services.namespace.as_str(), Default::default());
        let outcome = self.execute(&store, &pool).await;
        drop(store);
        committer.await?;
        outcome
    }

    async fn execute(self, store: &EventStore, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        let now_ms = crate::clock::now_ms();
        let metadata = EventMetadata::new(CLI_ACTOR, time::OffsetDateTime::now_utc());
        match self {
            KeysCli::Create {
                name, owner, role, permissions, kinds, expires_in_h, json, ..
            } => {
                let permissions: BTreeSet<Permission> = permissions.into_iter().collect();
                let expires_at_ms = expires_in_h.map(|hours| now_ms + hours as i64 * 3_600_000);
                let limits = KeyLimits::default();
                let grant =
                    KeyGrant { name, owner, role, permissions, kinds, expires_at_ms, limits };
                let token = keys::create(store, grant, metadata, now_ms).await?;
                print_token(&token.key_id, &token.expose(), json);
            }
            KeysCli::Rotate { key_id, grace_h, json, .. } => {
                let grace_ms = i64::try_from(grace_h.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
                let token = keys::rotate(store, &key_id, grace_ms, metadata, now_ms).await?;
                print_token(&token.key_id, &token.expose(), json);
            }
            KeysCli::Revoke { key_id, reason, .. } => {
                keys::revoke(store, &key_id, &reason, metadata, now_ms).await?;
                println!("revoked {key_id}");
            }
            KeysCli::List { json, .. } => list(pool, now_ms, json).await?,
        }
        Ok(())
    }
}

fn print_token(key_id: &str, token: &str, json: bool) {
    if json {
        println!("{}", json!({ "key_id": key_id, "token": token }));
    } else {
        println!("key {key_id}\n{token}\n(shown once: only its hash is kept)");
    }
}

async fn list(pool: &sqlx::PgPool, now_ms: i64, json: bool) -> anyhow::Result<()> {
    let cache = KeyCache::load(pool).await?;
    let rows: Vec<serde_json::Value> = cache
        .all()
        .iter()
        .filter_map(|(key_id, key)| keys::KeyView::of(key_id, key, now_ms))
        .map(|view| serde_json::to_value(view).expect("a key view serialises"))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<16}  {:<8}  {:<10}  {:<24}  owner", "key", "status", "role", "name");
    for row in &rows {
        let field = |name: &str| row[name].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<16}  {:<8}  {:<10}  {:<24}  {}",
            field("key_id"),
            field("status"),
            field("role"),
            field("name"),
            field("owner")
        );
    }
    Ok(())
}
