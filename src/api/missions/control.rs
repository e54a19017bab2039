//! Acting on one mission: cancel it, retry it (failed), or re-enqueue a copy of it
//! (finished). Each is a command of the mission, recorded with the caller and the reason it
//! gave; [`super::bulk`] does the same to many missions at once.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use domain::mission::{Mission, MissionCommand};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{IDEMPOTENCY_KEY_LEN_MAX, IDEMPOTENCY_NAMESPACE, MissionView, load_view, refusal};
use crate::api::error::{ErrorCode, errors, refused};
use crate::api::extract::{Metadata, MissionId, optional_json};
use crate::api::{ApiError, ApiJson, AppState};
use crate::clock::now_ms;
use crate::eventlog::command;
use crate::missions::copy::{self, CopyIds};

/// Longest reason, in characters.
pub const REASON_LEN_MAX: usize = 2_000;

/// The reason as recorded: trimmed, at most [`REASON_LEN_MAX`] characters; empty only
/// where `required` is false.
pub(super) fn checked_reason(reason: &str, required: bool) -> Result<String, ApiError> {
    let reason = reason.trim();
    if (required && reason.is_empty()) || reason.chars().count() > REASON_LEN_MAX {
        let message = match required {
            true => format!("1 to {REASON_LEN_MAX} characters, not blank"),
            false => format!("at most {REASON_LEN_MAX} characters"),
        };
        return Err(refused(ErrorCode::InvalidField, Some("reason"), message));
    }
    Ok(reason.to_owned())
}

/// The body of cancel and retry: optional, and so is its reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonRequest {
    /// Recorded in the mission's history (at most 2,000 characters).
    #[serde(default)]
    reason: String,
}

errors! {
    CancelErrors = COMMAND + PATH_ID + CALLER + [
        InvalidBody, InvalidField, MissionNotFound, MissionAlreadyFinished, MissionContended
    ]
}

/// `POST /api/missions/{mission_id}/cancel` with an optional `{"reason"}`: 200 with the
/// mission, 404 unknown, 409 already finished.
#[utoipa::path(post, path = "/api/missions/{mission_id}/cancel", tag = "missions",
    params(MissionId, Metadata),
    request_body(content = Option<ReasonRequest>, description = "Optional; an empty body cancels without a reason"),
    responses((status = 200, description = "Cancelled", body = MissionView), CancelErrors))]
pub(super) async fn cancel(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    body: Bytes,
) -> Result<ApiJson<MissionView>, ApiError> {
    reasoned(&app, &mission_id, metadata, &body, Reasoned::Cancel).await
}

errors! {
    RetryErrors = COMMAND + PATH_ID + CALLER + [
        InvalidBody, InvalidField, MissionNotFound, MissionNotFailed, MissionContended
    ]
}

/// `POST /api/missions/{mission_id}/retry` with an optional `{"reason"}`: runs a failed
/// mission again with fresh attempts; 200 with the mission, 404 unknown, 409 not failed.
#[utoipa::path(post, path = "/api/missions/{mission_id}/retry", tag = "missions",
    params(MissionId, Metadata),
    request_body(content = Option<ReasonRequest>, description = "Optional; an empty body retries without a reason"),
    responses((status = 200, description = "Queued again with fresh attempts", body = MissionView), RetryErrors))]
pub(super) async fn retry(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    body: Bytes,
) -> Result<ApiJson<MissionView>, ApiError> {
    reasoned(&app, &mission_id, metadata, &body, Reasoned::Retry).await
}

/// A command of one mission that records who asked and why: a cancel or a retry (the single
/// routes and the bulk one make them alike).
#[derive(Debug, Clone, Copy)]
pub(in crate::api) enum Reasoned {
    Cancel,
    Retry,
}

impl Reasoned {
    pub(super) fn command(self, reason: &str, by: &str, now_ms: i64) -> MissionCommand {
        let (reason, by) = (reason.to_owned(), by.to_owned());
        match self {
            Reasoned::Cancel => MissionCommand::Cancel { reason, by, now_ms },
            Reasoned::Retry => MissionCommand::Retry { by, reason, now_ms },
        }
    }
}

/// Runs `kind` on one mission with the optional `{"reason"}` of `body`; the mission after it.
async fn reasoned(
    app: &AppState,
    mission_id: &domain::StreamId,
    metadata: domain::EventMetadata,
    body: &[u8],
    kind: Reasoned,
) -> Result<ApiJson<MissionView>, ApiError> {
    let request: ReasonRequest = optional_json(body)?;
    Ok(ApiJson(reasoned_command(app, mission_id, metadata, &request.reason, kind).await?))
}

/// Runs `kind` on one mission with `reason` (checked here: at most [`REASON_LEN_MAX`]
/// characters); the mission after it. The routes above and the MCP tool `cancel_mission` run
/// it.
pub(in crate::api) async fn reasoned_command(
    app: &AppState,
    mission_id: &domain::StreamId,
    metadata: domain::EventMetadata,
    reason: &str,
    kind: Reasoned,
) -> Result<MissionView, ApiError> {
    let reason = checked_reason(reason, false)?;
    let by = metadata.actor.clone();
    let now = now_ms();
    command::execute::<Mission>(&app.store, mission_id, metadata, || {
        kind.command(&reason, &by, now)
    })
    .await
    .map_err(refusal)?;
    load_view(app, mission_id).await
}

/// A re-enqueue: both fields optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReenqueueRequest {
    /// Recorded in the original's history (at most 2,000 characters).
    #[serde(default)]
    reason: String,
    /// 1 to 200 characters. The same key from the same caller for the same mission names
    /// the same copy: a repeat answers it and enqueues nothing.
    #[serde(default)]
    idempotency_key: Option<String>,
}

errors! {
    ReenqueueErrors = COMMAND + PATH_ID + CALLER + [
        InvalidBody, InvalidField, MissionNotFound, MissionNotFinished, MissionContended
    ]
}

/// The ids of a re-enqueue: derived from the caller's key, or fresh.
pub(super) fn copy_ids(caller: &str, key: Option<&str>, mission_id: &str) -> CopyIds {
    match key {
        Some(key) => CopyIds::derived(
            &IDEMPOTENCY_NAMESPACE,
            &format!("reenqueue\n{caller}\n{key}\n{mission_id}"),
        ),
        None => CopyIds::fresh(),
    }
}

/// `POST /api/missions/{mission_id}/reenqueue` with an optional `{"reason",
/// "idempotency_key"}`: enqueues a copy of a finished mission (completed, failed or
/// cancelled), linked to it both ways; 201 with the copy, 200 with it when the key was used
/// before, 404 unknown, 409 not finished.
#[utoipa::path(post, path = "/api/missions/{mission_id}/reenqueue", tag = "missions",
    params(MissionId, Metadata),
    request_body(content = Option<ReenqueueRequest>, description = "Optional"),
    responses(
        (status = 201, description = "The copy, enqueued", body = MissionView),
        (status = 200, description = "The `idempotency_key` was used before: the first copy, nothing enqueued", body = MissionView),
        ReenqueueErrors,
    ))]
pub(super) async fn reenqueue(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    body: Bytes,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let request: ReenqueueRequest = optional_json(&body)?;
    let reason = checked_reason(&request.reason, false)?;
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.chars().count() > IDEMPOTENCY_KEY_LEN_MAX)
    {
        let message = format!("1 to {IDEMPOTENCY_KEY_LEN_MAX} characters");
        return Err(refused(ErrorCode::InvalidField, Some("idempotency_key"), message));
    }
    let ids = copy_ids(&metadata.actor, request.idempotency_key.as_deref(), mission_id.as_str());
    let copied = copy::reenqueue(&app.store, &mission_id, &reason, metadata, ids, now_ms())
        .await
        .map_err(refusal)?;
    let status = if copied.repeated { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, ApiJson(load_view(&app, &copied.copy_id).await?)))
}
