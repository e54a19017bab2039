//! `GET /api/missions/{id}/replay` and `POST /api/missions/{id}/fork`: a finished run played
//! back through the server's agent code, and a new mission that starts from a run's first
//! steps (see `crate::agents::replay`).

use crate::api::auth::Access;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use domain::api_key::Permission;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::error::{ErrorCode, errors, refused};
use super::extract::{Metadata, MissionId, parse_id};
use super::missions::{MissionView, load_view};
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::agents::replay::{self, ReplayError, ReplayReport};

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::MissionsRead), routes!(replay_mission))
        .routes(Access::needs(Permission::MissionsWrite), routes!(fork_mission))
}

fn refusal(error: ReplayError) -> ApiError {
    let message = error.to_string();
    match error {
        ReplayError::NotFound(_) => refused(ErrorCode::MissionNotFound, None, message),
        ReplayError::Refused(_) => refused(ErrorCode::NotReplayable, None, message),
        ReplayError::Store(_) => ApiError::Internal(anyhow::anyhow!(message)),
        ReplayError::Command(error) => super::missions::refusal(error),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    /// The attempt to replay (default: the last).
    attempt: Option<u32>,
}

errors! { ReplayErrors = READ + PATH_ID + QUERY + [MissionNotFound, NotReplayable] }

/// `GET /api/missions/{mission_id}/replay`: plays a finished mission's run back through the
/// server's agent code (prompts, tools) without calling the model or running a tool, and
/// says whether every step is decided as recorded or where the first difference is.
#[utoipa::path(get, path = "/api/missions/{mission_id}/replay", tag = "missions",
    params(MissionId, ReplayQuery),
    responses(
        (status = 200, description = "`verdict` `identical`, or `diverged` with the first divergent step", body = ReplayReport),
        ReplayErrors,
    ))]
async fn replay_mission(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    Query(query): Query<ReplayQuery>,
) -> Result<ApiJson<ReplayReport>, ApiError> {
    let report =
        replay::replay(&app.store, &app.agents.context(), mission_id.as_str(), query.attempt)
            .await
            .map_err(refusal)?;
    Ok(ApiJson(report))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// Steps (model calls, with their tool calls) played back from the record; the fork runs
    /// live from the next one.
    pub at_step: u32,
    /// The attempt whose run is forked (default: the last).
    #[serde(default)]
    pub attempt: Option<u32>,
}

errors! {
    ForkErrors = COMMAND + JSON_BODY + PATH_ID + CALLER + [
        MissionNotFound, NotReplayable, MissionContended
    ]
}

/// `POST /api/missions/{mission_id}/fork`: enqueues a new mission that plays back the first
/// `at_step` steps of this one's run and runs live from there. Both histories link.
#[utoipa::path(post, path = "/api/missions/{mission_id}/fork", tag = "missions",
    params(MissionId, Metadata),
    request_body = ForkRequest,
    responses((status = 201, description = "The fork, queued", body = MissionView), ForkErrors))]
async fn fork_mission(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<ForkRequest>,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let now_ms = crate::clock::now_ms();
    let fork_id = replay::fork(
        &app.store,
        mission_id.as_str(),
        request.at_step,
        request.attempt,
        metadata,
        now_ms,
    )
    .await
    .map_err(refusal)?;
    let fork_id = parse_id("mission_id", &fork_id)?;
    Ok((StatusCode::CREATED, ApiJson(load_view(&app, &fork_id).await?)))
}
