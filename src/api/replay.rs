//! `GET /api/missions/{id}/replay` and `POST /api/missions/{id}/fork`: a finished run played
//! back through the server's agent code, and a new mission that starts from a run's first
//! steps (see `crate::agents::replay`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::missions::{CallerHeaders, MissionView, load_view, metadata, parse_mission_id};

use super::{ApiError, ApiJson, ApiRoutes, AppState, ErrorBody, refused};
use crate::agents::replay::{self, ReplayError, ReplayReport};

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(replay_mission)).routes(routes!(fork_mission))
}

fn refusal(error: ReplayError) -> ApiError {
    let message = error.to_string();
    match error {
        ReplayError::NotFound(_) => {
            refused(StatusCode::NOT_FOUND, "mission_not_found", None, message)
        }
        ReplayError::Refused(_) => {
            refused(StatusCode::UNPROCESSABLE_ENTITY, "not_replayable", None, message)
        }
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

/// `GET /api/missions/{mission_id}/replay`: plays a finished mission's run back through the
/// server's agent code (prompts, tools) without calling the model or running a tool, and
/// says whether every step is decided as recorded or where the first difference is.
#[utoipa::path(get, path = "/api/missions/{mission_id}/replay", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id"), ReplayQuery),
    responses(
        (status = 200, description = "`verdict` `identical`, or `diverged` with the first divergent step", body = ReplayReport),
        (status = 400, description = "`invalid_field` (`mission_id`) or `invalid_query`", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 422, description = "`not_replayable`: not finished, not a thinking agent's, no step recorded", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn replay_mission(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Result<ApiJson<ReplayReport>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
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

/// `POST /api/missions/{mission_id}/fork`: enqueues a new mission that plays back the first
/// `at_step` steps of this one's run and runs live from there. Both histories link.
#[utoipa::path(post, path = "/api/missions/{mission_id}/fork", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id"), CallerHeaders),
    request_body = ForkRequest,
    responses(
        (status = 201, description = "The fork, queued", body = MissionView),
        (status = 400, description = "`invalid_field` (`mission_id`), `invalid_header` or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 413, description = "`invalid_body`: body over 2 MiB", body = ErrorBody),
        (status = 415, description = "`invalid_body`: not `application/json`", body = ErrorBody),
        (status = 409, description = "`mission_contended`", body = ErrorBody),
        (status = 422, description = "`not_replayable`: `at_step` past the run's steps, a step the record cannot give back", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `outcome_unknown`, `shutting_down`", body = ErrorBody),
    ))]
async fn fork_mission(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ForkRequest>,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let metadata = metadata(&headers)?;
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
    let fork_id = parse_mission_id(&fork_id)?;
    Ok((StatusCode::CREATED, ApiJson(load_view(&app, &fork_id).await?)))
}
