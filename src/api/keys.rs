//! API keys over HTTP: create (the token is in the answer, once), list, rotate, revoke. Each
//! change is a command on the key's `api_key` stream, so the log says who did it and why;
//! `brain keys` does the same against the database.
//!
//! A key never grants more than its maker holds: a key with `keys.manage` and nothing else
//! cannot mint an admin.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::api_key::{
    ApiKeyError, KeyGrant, KeyLimits, Permission, ROTATION_GRACE_MS_DEFAULT, ROTATION_GRACE_MS_MAX,
    Role,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::auth::{Access, Authed};
use super::error::{ErrorCode, append_refusal, errors, refused};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::eventlog::command::CommandError;
use crate::identity::keys::{self, KeyError, KeyView};

pub fn routes() -> ApiRoutes {
    let manage = Access::needs(Permission::KeysManage);
    ApiRoutes::new()
        .routes(manage, routes!(create_key))
        .routes(manage, routes!(list_keys))
        .routes(manage, routes!(rotate_key))
        .routes(manage, routes!(revoke_key))
}

/// `{key_id}` of the path (a string that is no key id is a 404 `key_not_found`).
#[derive(Debug, Deserialize, IntoParams)]
#[expect(dead_code, reason = "documents the path parameter; handlers take it as a String")]
#[into_params(parameter_in = Path)]
pub struct KeyIdPath {
    /// The key's id: 16 lowercase hexadecimal characters.
    pub key_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for, shown in lists: 1 to 100 characters.
    pub name: String,
    /// Who the key is for (a person, a team, a program); the maker's owner when absent.
    #[serde(default)]
    pub owner: Option<String>,
    /// `admin`, `operator`, `developer`, `viewer` or `agent`.
    #[serde(default)]
    pub role: Option<Role>,
    /// Permissions beside (or, without a role, instead of) the role's.
    #[serde(default)]
    pub permissions: BTreeSet<Permission>,
    /// The agent kinds an agent key may serve; empty: any.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// When the key stops working, in milliseconds since 1970; never when absent.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub limits: KeyLimits,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key's token: shown here once, kept only as its hash.
    pub token: String,
    pub key: KeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old secret keeps working, in seconds: default a day, at most 7 days.
    #[serde(default)]
    pub grace_s: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    /// Why, for the audit trail: 1 to 500 characters.
    pub reason: String,
}

/// Maps a key command's failure to its answer.
fn refusal(error: KeyError) -> ApiError {
    let message = error.to_string();
    match error {
        KeyError::BadId(_) => refused(ErrorCode::KeyNotFound, Some("key_id"), message),
        KeyError::Token(error) => ApiError::Internal(error.into()),
        KeyError::Command(CommandError::Rejected(rejection)) => match rejection {
            ApiKeyError::Invalid { field, .. } => {
                refused(ErrorCode::InvalidField, Some(field), message)
            }
            ApiKeyError::NotFound => refused(ErrorCode::KeyNotFound, None, message),
            ApiKeyError::Revoked | ApiKeyError::Expired => {
                refused(ErrorCode::KeyRevoked, None, message)
            }
            // A new id drawn twice: 2^64 ids make it an error of ours, not the caller's.
            ApiKeyError::AlreadyExists => ApiError::Internal(anyhow::anyhow!(message)),
        },
        KeyError::Command(CommandError::Contended(_)) => {
            refused(ErrorCode::KeyContended, None, message)
        }
        KeyError::Command(CommandError::Append(error)) => append_refusal(error),
        KeyError::Command(CommandError::Store(error)) => ApiError::from(error),
        KeyError::Command(CommandError::Upcast(error)) => ApiError::Internal(error.into()),
    }
}

/// Makes the process's cache hold what was just recorded, so the answer's token works on
/// this process at once (others follow within their reconcile interval).
async fn caught_up(app: &AppState) -> Result<(), ApiError> {
    app.keys.catch_up(app.pool()).await.map_err(|error| ApiError::Internal(error.into()))?;
    Ok(())
}

fn view(app: &AppState, key_id: &str) -> Result<KeyView, ApiError> {
    let now = crate::clock::now_ms();
    app.keys
        .get(key_id)
        .and_then(|key| KeyView::of(key_id, &key, now))
        .ok_or_else(|| refused(ErrorCode::KeyNotFound, None, format!("no key {key_id}")))
}

errors! { CreateKeyErrors = COMMAND + JSON_BODY + CALLER + [InvalidField] }

/// `POST /api/keys`: makes a key. Its token is in this answer and nowhere else.
#[utoipa::path(post, path = "/api/keys", tag = "keys",
    params(Metadata),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Made; `token` is shown this once", body = CreatedKey),
        CreateKeyErrors,
    ))]
async fn create_key(
    State(app): State<AppState>,
    Authed(maker): Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, ApiJson<CreatedKey>), ApiError> {
    let grant = KeyGrant {
        name: request.name,
        owner: request.owner.unwrap_or_else(|| maker.owner.clone()),
        role: request.role,
        permissions: request.permissions,
        kinds: request.kinds,
        expires_at_ms: request.expires_at_ms,
        limits: request.limits,
    };
    let beyond: Vec<&str> = grant
        .effective()
        .into_iter()
        .filter(|permission| !maker.can(*permission))
        .map(Permission::as_str)
        .collect();
    if !beyond.is_empty() {
        let message = format!("a key cannot grant what its maker lacks: {}", beyond.join(", "));
        return Err(refused(ErrorCode::Forbidden, Some("permissions"), message));
    }
    let now = crate::clock::now_ms();
    let token = keys::create(&app.store, grant, metadata, now).await.map_err(refusal)?;
    caught_up(&app).await?;
    let key = view(&app, &token.key_id)?;
    Ok((StatusCode::CREATED, ApiJson(CreatedKey { token: token.expose(), key })))
}

errors! { ListKeysErrors = READ + [] }

/// `GET /api/keys`: every key, oldest first, without secrets.
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        ListKeysErrors,
    ))]
async fn list_keys(State(app): State<AppState>) -> Result<ApiJson<KeyList>, ApiError> {
    caught_up(&app).await?;
    let now = crate::clock::now_ms();
    let keys = app.keys.all().iter().filter_map(|(id, key)| KeyView::of(id, key, now)).collect();
    Ok(ApiJson(KeyList { keys }))
}

errors! { RotateKeyErrors = COMMAND + JSON_BODY + CALLER + [InvalidField, KeyNotFound, KeyRevoked, KeyContended] }

/// `POST /api/keys/{key_id}/rotate`: a new secret under the same id; the old one keeps
/// working for the grace, so clients can move.
#[utoipa::path(post, path = "/api/keys/{key_id}/rotate", tag = "keys",
    params(KeyIdPath, Metadata),
    request_body = RotateKeyRequest,
    responses(
        (status = 200, description = "Rotated; `token` is shown this once", body = CreatedKey),
        RotateKeyErrors,
    ))]
async fn rotate_key(
    State(app): State<AppState>,
    Path(key_id): Path<String>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RotateKeyRequest>,
) -> Result<ApiJson<CreatedKey>, ApiError> {
    let grace_ms = match request.grace_s {
        None => ROTATION_GRACE_MS_DEFAULT,
        Some(seconds) => i64::try_from(seconds.saturating_mul(1_000)).unwrap_or(i64::MAX),
    };
    if grace_ms > ROTATION_GRACE_MS_MAX {
        let message = format!("at most {} seconds", ROTATION_GRACE_MS_MAX / 1_000);
        return Err(refused(ErrorCode::InvalidField, Some("grace_s"), message));
    }
    let now = crate::clock::now_ms();
    let token =
        keys::rotate(&app.store, &key_id, grace_ms, metadata, now).await.map_err(refusal)?;
    caught_up(&app).await?;
    let key = view(&app, &key_id)?;
    Ok(ApiJson(CreatedKey { token: token.expose(), key }))
}

errors! { RevokeKeyErrors = COMMAND + JSON_BODY + CALLER + [InvalidField, KeyNotFound, KeyRevoked, KeyContended] }

/// `POST /api/keys/{key_id}/revoke`: the key stops working in every process within a
/// second, for good.
#[utoipa::path(post, path = "/api/keys/{key_id}/revoke", tag = "keys",
    params(KeyIdPath, Metadata),
    request_body = RevokeKeyRequest,
    responses(
        (status = 200, description = "Revoked", body = KeyView),
        RevokeKeyErrors,
    ))]
async fn revoke_key(
    State(app): State<AppState>,
    Path(key_id): Path<String>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RevokeKeyRequest>,
) -> Result<ApiJson<KeyView>, ApiError> {
    let now = crate::clock::now_ms();
    keys::revoke(&app.store, &key_id, &request.reason, metadata, now).await.map_err(refusal)?;
    caught_up(&app).await?;
    Ok(ApiJson(view(&app, &key_id)?))
}
