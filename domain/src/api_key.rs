//! An API key as an aggregate: one stream per key (`api_key/<key id>`), so every grant,
//! rotation and revocation is an event with who and why, and every process builds its key
//! cache by following the log.
//!
//! The secret itself never enters an event: a key is created and rotated with the hash of
//! its secret, made where the secret is drawn (`brain`'s identity module). A key's token is
//! `brn_<key id>_<secret>`; the key id is public (lists, logs, the actor of its events).
//!
//! | from | event | to |
//! |---|---|---|
//! | (none) | `ApiKeyCreated` (name, owner, role and/or permissions, agent kinds, expiry, limits, secret hash) | active |
//! | active | `ApiKeyRotated` (new secret hash; the old one accepted until the grace time) | active |
//! | active | `ApiKeyRevoked` (reason) | revoked |
//!
//! Expiry is not an event: a key past its `expires_at_ms` is refused by whoever checks it,
//! against that checker's clock, and stays in the log as it was.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent};

/// Characters of a key id: lowercase hexadecimal, so a token splits on `_` without doubt.
pub const KEY_ID_LEN: usize = 16;
/// Characters of a secret hash: a SHA-256 in lowercase hexadecimal.
pub const SECRET_HASH_LEN: usize = 64;
/// Longest key name, in characters.
pub const NAME_LEN_MAX: usize = 100;
/// Longest owner, in characters.
pub const OWNER_LEN_MAX: usize = 100;
/// Longest revocation reason, in characters.
pub const REASON_LEN_MAX: usize = 500;
/// Most agent kinds one key may be scoped to.
pub const KINDS_MAX: usize = 64;
/// Most models one key's allow-list may name.
pub const MODELS_MAX: usize = 64;
/// The grace window of a rotation when the caller names none: the old secret keeps working
/// this long, so clients can be moved to the new one.
pub const ROTATION_GRACE_MS_DEFAULT: i64 = 24 * 3_600 * 1_000;
/// The longest grace window a rotation may grant.
pub const ROTATION_GRACE_MS_MAX: i64 = 7 * 24 * 3_600 * 1_000;

/// What a key may do. Each route of the HTTP API names the one it needs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read missions, the queue, the workers and the mission tree.
    #[serde(rename = "missions.read")]
    MissionsRead,
    /// Enqueue, cancel, retry, fork missions.
    #[serde(rename = "missions.write")]
    MissionsWrite,
    /// Read the agent registry and the supervisor's view.
    #[serde(rename = "agents.read")]
    AgentsRead,
    /// Stop, start and restart agents; register and deregister them for others.
    #[serde(rename = "agents.control")]
    AgentsControl,
    /// Act as an agent bound to this key: register itself, heartbeat, claim and report for
    /// the kinds the key allows.
    #[serde(rename = "agents.self")]
    AgentsSelf,
    /// Register agent kinds.
    #[serde(rename = "kinds.manage")]
    KindsManage,
    /// Call models: `/v1/chat/completions` and chat with agents.
    #[serde(rename = "llm.call")]
    LlmCall,
    /// Read the LLM gateway's configuration, usage and limits.
    #[serde(rename = "llm.read")]
    LlmRead,
    /// Change the LLM gateway's configuration.
    #[serde(rename = "llm.config")]
    LlmConfig,
    /// Read the event log (`/api/events`, `/ws/events`): prompts, answers, tool output.
    #[serde(rename = "events.read")]
    EventsRead,
    /// Create, list, rotate and revoke keys.
    #[serde(rename = "keys.manage")]
    KeysManage,
    /// Read `/metrics`.
    #[serde(rename = "metrics")]
    Metrics,
    /// Name another actor (`X-Actor`) as `on_behalf_of` beside the key itself.
    #[serde(rename = "impersonate")]
    Impersonate,
}

impl Permission {
    pub const ALL: [Permission; 13] = [
        Permission::MissionsRead,
        Permission::MissionsWrite,
        Permission::AgentsRead,
        Permission::AgentsControl,
        Permission::AgentsSelf,
        Permission::KindsManage,
        Permission::LlmCall,
        Permission::LlmRead,
        Permission::LlmConfig,
        Permission::EventsRead,
        Permission::KeysManage,
        Permission::Metrics,
        Permission::Impersonate,
    ];

    /// The name a permission has in JSON, the CLI and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::MissionsRead => "missions.read",
            Permission::MissionsWrite => "missions.write",
            Permission::AgentsRead => "agents.read",
            Permission::AgentsControl => "agents.control",
            Permission::AgentsSelf => "agents.self",
            Permission::KindsManage => "kinds.manage",
            Permission::LlmCall => "llm.call",
            Permission::LlmRead => "llm.read",
            Permission::LlmConfig => "llm.config",
            Permission::EventsRead => "events.read",
            Permission::KeysManage => "keys.manage",
            Permission::Metrics => "metrics",
            Permission::Impersonate => "impersonate",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|permission| permission.as_str() == name)
    }
}

/// A named permission set.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, keys and the LLM configuration included.
    Admin,
    /// Reads everything; controls missions, agents and the supervisor.
    Operator,
    /// Reads everything; enqueues, cancels and retries missions, chats, calls `/v1`.
    Developer,
    /// Reads everything, changes nothing.
    Viewer,
    /// An agent process: registers itself, heartbeats, claims and reports for its kinds.
    Agent,
}

const READ: [Permission; 4] =
    [Permission::MissionsRead, Permission::AgentsRead, Permission::LlmRead, Permission::EventsRead];

impl Role {
    pub const ALL: [Role; 5] =
        [Role::Admin, Role::Operator, Role::Developer, Role::Viewer, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The permissions the role grants.
    pub fn permissions(self) -> BTreeSet<Permission> {
        let with_read = |more: &[Permission]| READ.iter().chain(more).copied().collect();
        match self {
            Role::Admin => Permission::ALL.into_iter().collect(),
            Role::Operator => with_read(&[
                Permission::MissionsWrite,
                Permission::AgentsControl,
                Permission::Metrics,
            ]),
            Role::Developer => with_read(&[Permission::MissionsWrite, Permission::LlmCall]),
            Role::Viewer => with_read(&[]),
            Role::Agent => [Permission::AgentsSelf].into_iter().collect(),
        }
    }
}

/// What a key may spend and how fast it may call, held before each call like a mission's
/// budget. `None` (or an empty list) means no limit of that kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute over the whole API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// LLM tokens (input and output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// LLM tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// LLM tokens over the key's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_total: Option<u64>,
    /// Cost per UTC day, in millionths of the price table's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros_per_day: Option<u64>,
    /// Cost over the key's life, in millionths of the price table's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros_total: Option<u64>,
    /// The models (or routes) the key may call; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// What a new key is, as its creator asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub name: String,
    /// Who the key is for (a person, a team, a program). Kept ready for tenants.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Permissions beside (or, without a role, instead of) the role's.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub permissions: BTreeSet<Permission>,
    /// The agent kinds an agent key may register, claim and report for; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub limits: KeyLimits,
}

impl KeyGrant {
    /// Every permission the key holds: its role's and its own.
    pub fn effective(&self) -> BTreeSet<Permission> {
        let mut all = self.role.map(Role::permissions).unwrap_or_default();
        all.extend(self.permissions.iter().copied());
        all
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create {
        grant: Box<KeyGrant>,
        secret_hash: String,
        now_ms: i64,
    },
    /// A new secret; the old one is accepted for `grace_ms` more.
    Rotate {
        secret_hash: String,
        grace_ms: i64,
        now_ms: i64,
    },
    Revoke {
        reason: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    ApiKeyCreated { grant: Box<KeyGrant>, secret_hash: String, at_ms: i64 },
    ApiKeyRotated { secret_hash: String, previous_valid_until_ms: i64, at_ms: i64 },
    ApiKeyRevoked { reason: String, at_ms: i64 },
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ApiKeyEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            ApiKeyEvent::ApiKeyRotated { .. } => "ApiKeyRotated",
            ApiKeyEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the key already exists")]
    AlreadyExists,
    #[error("no such key")]
    NotFound,
    #[error("the key is revoked")]
    Revoked,
    #[error("the key expired")]
    Expired,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyStatus {
    #[default]
    Absent,
    Active,
    Revoked,
}

/// A key's state: enough to decide, and what the key cache keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiKey {
    pub status: KeyStatus,
    pub grant: Option<KeyGrant>,
    pub secret_hash: String,
    /// The secret before the last rotation, and until when it is accepted.
    pub previous: Option<(String, i64)>,
    pub created_at_ms: i64,
}

impl ApiKey {
    /// Whether a key is past its expiry at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.grant.as_ref().and_then(|grant| grant.expires_at_ms).is_some_and(|at| now_ms >= at)
    }

    /// Whether `hash` opens this key at `now_ms`: active, not expired, and the current secret
    /// or a previous one within its grace. Callers compare hashes in constant time first;
    /// this only says which hashes count.
    pub fn accepts_hash(&self, now_ms: i64) -> impl Iterator<Item = &str> {
        let usable = self.status == KeyStatus::Active && !self.expired(now_ms);
        let current = usable.then_some(self.secret_hash.as_str());
        let previous = self
            .previous
            .as_ref()
            .filter(|(_, until)| usable && now_ms < *until)
            .map(|(hash, _)| hash.as_str());
        current.into_iter().chain(previous)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ApiKeyError {
    ApiKeyError::Invalid { field, reason: reason.into() }
}

/// Whether `value` is a key id: [`KEY_ID_LEN`] lowercase hexadecimal characters.
pub fn is_key_id(value: &str) -> bool {
    value.len() == KEY_ID_LEN
        && value.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn check_hash(hash: &str) -> Result<(), ApiKeyError> {
    let hex = hash.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if hash.len() != SECRET_HASH_LEN || !hex {
        return Err(invalid("secret_hash", "a SHA-256 in lowercase hexadecimal"));
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ApiKeyError> {
    let length = value.chars().count();
    if value.trim().is_empty() || length > max || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("1 to {max} characters, not blank, no control characters"),
        ));
    }
    Ok(())
}

fn check_grant(grant: &KeyGrant, now_ms: i64) -> Result<(), ApiKeyError> {
    check_text("name", &grant.name, NAME_LEN_MAX)?;
    check_text("owner", &grant.owner, OWNER_LEN_MAX)?;
    if grant.role.is_none() && grant.permissions.is_empty() {
        return Err(invalid("role", "a role or at least one permission"));
    }
    if grant.kinds.len() > KINDS_MAX {
        return Err(invalid("kinds", format!("at most {KINDS_MAX} agent kinds")));
    }
    for kind in &grant.kinds {
        crate::mission::check_agent(kind).map_err(|error| invalid("kinds", error.to_string()))?;
    }
    if grant.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Err(invalid("expires_at", "must be in the future"));
    }
    if grant.limits.requests_per_minute == Some(0) {
        // A key that may never call is a revoked one; no limit is the field left out.
        return Err(invalid("limits.requests_per_minute", "at least 1, or left out for none"));
    }
    if grant.limits.models.len() > MODELS_MAX {
        return Err(invalid("limits.models", format!("at most {MODELS_MAX} models")));
    }
    for model in &grant.limits.models {
        check_text("limits.models", model, NAME_LEN_MAX)?;
    }
    Ok(())
}

impl Aggregate for ApiKey {
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;

    fn stream_type() -> StreamType {
        StreamType::parse("api_key").expect("a valid stream type")
    }

    fn decide(&self, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        match command {
            ApiKeyCommand::Create { grant, secret_hash, now_ms } => {
                if self.status != KeyStatus::Absent {
                    return Err(ApiKeyError::AlreadyExists);
                }
                check_grant(&grant, now_ms)?;
                check_hash(&secret_hash)?;
                Ok(vec![ApiKeyEvent::ApiKeyCreated { grant, secret_hash, at_ms: now_ms }])
            }
            ApiKeyCommand::Rotate { secret_hash, grace_ms, now_ms } => {
                self.check_usable(now_ms)?;
                check_hash(&secret_hash)?;
                if !(0..=ROTATION_GRACE_MS_MAX).contains(&grace_ms) {
                    let max_h = ROTATION_GRACE_MS_MAX / 3_600_000;
                    return Err(invalid("grace_h", format!("0 to {max_h} hours")));
                }
                let previous_valid_until_ms = now_ms + grace_ms;
                Ok(vec![ApiKeyEvent::ApiKeyRotated {
                    secret_hash,
                    previous_valid_until_ms,
                    at_ms: now_ms,
                }])
            }
            ApiKeyCommand::Revoke { reason, now_ms } => {
                match self.status {
                    KeyStatus::Absent => return Err(ApiKeyError::NotFound),
                    KeyStatus::Revoked => return Err(ApiKeyError::Revoked),
                    KeyStatus::Active => {}
                }
                check_text("reason", &reason, REASON_LEN_MAX)?;
                Ok(vec![ApiKeyEvent::ApiKeyRevoked { reason, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyCreated { grant, secret_hash, at_ms } => {
                self.status = KeyStatus::Active;
                self.grant = Some((**grant).clone());
                self.secret_hash = secret_hash.clone();
                self.created_at_ms = *at_ms;
            }
            ApiKeyEvent::ApiKeyRotated { secret_hash, previous_valid_until_ms, .. } => {
                assert_eq!(self.status, KeyStatus::Active, "only an active key is rotated");
                let previous = std::mem::replace(&mut self.secret_hash, secret_hash.clone());
                self.previous = Some((previous, *previous_valid_until_ms));
            }
            ApiKeyEvent::ApiKeyRevoked { .. } => self.status = KeyStatus::Revoked,
        }
    }
}

impl ApiKey {
    fn check_usable(&self, now_ms: i64) -> Result<(), ApiKeyError> {
        match self.status {
            KeyStatus::Absent => Err(ApiKeyError::NotFound),
            KeyStatus::Revoked => Err(ApiKeyError::Revoked),
            KeyStatus::Active if self.expired(now_ms) => Err(ApiKeyError::Expired),
            KeyStatus::Active => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
