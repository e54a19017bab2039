//! `POST /api/missions/bulk`: cancel, retry or re-enqueue many missions at once, named by id
//! or by the same filter as `GET /api/missions`, at most [`BULK_MISSIONS_MAX`] of them. Each
//! mission is its own command (its own event, with the caller as actor and the reason), so
//! one refused mission (already finished, not failed, not finished) is answered as refused
//! and the others go on; the answer says, per mission, what happened.
//!
//! With an `idempotency_key`, each mission's command id (and a copy's id) is derived from the
//! caller, the key, the action and the mission: the same request sent again is answered with
//! the first outcomes and changes nothing more.

use axum::extract::State;
use domain::mission::Mission;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::control::{Reasoned, checked_reason, copy_ids};
use super::list::ListQuery;
use crate::api::error::{ErrorCode, errors};
use crate::api::extract::Metadata;
use crate::api::{ApiError, ApiJson, AppState};
use crate::clock::now_ms;
use crate::eventlog::command::{self, CommandError};
use crate::missions::copy;
use crate::missions::search::{self, Search};

/// Most missions one request acts on.
pub const BULK_MISSIONS_MAX: usize = 10_000;
/// Commands of one request in flight at once: enough to fill the group committer's batches,
/// few enough to leave it to other callers too.
pub const BULK_IN_FLIGHT_MAX: usize = 32;
/// Longest idempotency key, in characters.
pub const KEY_LEN_MAX: usize = 200;
/// Rows read per page when a filter names the missions.
const FILTER_PAGE: u32 = 200;
/// Namespace of the command ids derived from an idempotency key.
const BULK_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_3b8e_51d2_4a47_9c1e_b2d4_0a17_55e3);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRequest {
    /// `cancel`, `retry` (failed missions) or `reenqueue` (a copy of each finished one).
    action: String,
    /// The missions, by id (1 to 10,000). Give this or `filter`.
    #[serde(default)]
    mission_ids: Option<Vec<String>>,
    /// Every mission `GET /api/missions` would list with these parameters (`q`, `error`,
    /// `kind`, `status`, `priority`, `since`, `until`, `min_attempts`, as strings), at most
    /// 10,000 of them.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Map<String, Value>>,
    /// Why: recorded in each mission's history (1 to 2,000 characters).
    reason: String,
    /// The same key (1 to 200 characters) from the same caller gives the first answers again
    /// and changes nothing more.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// What happened to one mission.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BulkOutcome {
    mission_id: String,
    /// `cancelled`, `retried`, `reenqueued`, or `refused` (then `error` says why).
    outcome: &'static str,
    /// Its status afterwards, where it was acted on (a re-enqueued mission's is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// The copy a re-enqueue made.
    #[serde(skip_serializing_if = "Option::is_none")]
    copy_id: Option<String>,
    /// `true`: an earlier request with the same key had done it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    repeated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Refusal>,
}

/// Why one mission was refused, as the single-mission route would have said it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Refusal {
    #[schema(value_type = String)]
    code: ErrorCode,
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BulkAnswer {
    action: String,
    /// Missions named (by id, or matched by the filter).
    matched: usize,
    /// How many were acted on, and how many refused.
    done: usize,
    refused: usize,
    /// One per mission, in the order they were named.
    results: Vec<BulkOutcome>,
}

errors! { BulkErrors = COMMAND + JSON_BODY + CALLER + [InvalidField] }

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField { field, message: message.into() }
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Retry,
    Reenqueue,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Reenqueue => "reenqueue",
        }
    }
}

/// `POST /api/missions/bulk`: 200 with each mission's outcome; 422 naming the field when the
/// request itself is wrong (then nothing is done).
#[utoipa::path(post, path = "/api/missions/bulk", tag = "missions",
    params(Metadata),
    request_body = BulkRequest,
    responses((status = 200, description = "Each mission's outcome", body = BulkAnswer), BulkErrors))]
pub(super) async fn bulk(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    crate::api::ApiJson(request): crate::api::ApiJson<BulkRequest>,
) -> Result<ApiJson<BulkAnswer>, ApiError> {
    let action = match request.action.as_str() {
        "cancel" => Action::Cancel,
        "retry" => Action::Retry,
        "reenqueue" => Action::Reenqueue,
        other => {
            return Err(invalid("action", format!("cancel, retry or reenqueue, got {other:?}")));
        }
    };
    let reason = checked_reason(&request.reason, true)?;
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.chars().count() > KEY_LEN_MAX)
    {
        return Err(invalid("idempotency_key", format!("1 to {KEY_LEN_MAX} characters")));
    }
    let ids = match (request.mission_ids, request.filter) {
        (Some(ids), None) => named(ids)?,
        (None, Some(filter)) => matched(&app, filter).await?,
        _ => return Err(invalid("mission_ids", "give mission_ids or filter, one of them")),
    };
    let caller = metadata.actor.clone();
    let key = request.idempotency_key;
    let outcomes = futures::stream::iter(ids.iter().cloned())
        .map(|mission_id| {
            let (app, reason, key) = (&app, &reason, key.as_deref());
            let mut metadata = metadata.clone();
            metadata.command_id = key.map(|key| {
                let verb = action.verb();
                Uuid::new_v5(
                    &BULK_NAMESPACE,
                    format!("{caller}\n{key}\n{verb}\n{mission_id}").as_bytes(),
                )
            });
            async move { act(app, action, mission_id, metadata, reason, key).await }
        })
        .buffered(BULK_IN_FLIGHT_MAX)
        .collect::<Vec<_>>()
        .await;
    let refused = outcomes.iter().filter(|outcome| outcome.outcome == "refused").count();
    Ok(ApiJson(BulkAnswer {
        action: request.action,
        matched: ids.len(),
        done: outcomes.len() - refused,
        refused,
        results: outcomes,
    }))
}

/// The ids given, each once, in their order.
fn named(ids: Vec<String>) -> Result<Vec<domain::StreamId>, ApiError> {
    if ids.is_empty() || ids.len() > BULK_MISSIONS_MAX {
        return Err(invalid("mission_ids", format!("1 to {BULK_MISSIONS_MAX} ids")));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    for id in ids {
        let id = domain::StreamId::parse(id.clone())
            .map_err(|why| invalid("mission_ids", format!("{id:?}: {why}")))?;
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// The ids of every mission the list's filter matches, newest first; more than
/// [`BULK_MISSIONS_MAX`] is refused (a narrower filter, or ids).
async fn matched(
    app: &AppState,
    filter: serde_json::Map<String, Value>,
) -> Result<Vec<domain::StreamId>, ApiError> {
    for paging in ["sort", "order", "limit", "cursor"] {
        if filter.contains_key(paging) {
            return Err(invalid("filter", format!("{paging} is not part of a bulk filter")));
        }
    }
    let query: ListQuery = serde_json::from_value(Value::Object(filter))
        .map_err(|error| invalid("filter", error.to_string()))?;
    let mut search: Search = query.search()?;
    search.limit = FILTER_PAGE;
    let mut ids = Vec::new();
    loop {
        let page = search::search(app.store.pool(), &search).await?;
        for row in page.missions {
            let id = domain::StreamId::parse(row.mission_id)
                .map_err(|why| ApiError::Internal(anyhow::anyhow!("a listed mission id: {why}")))?;
            ids.push(id);
        }
        if ids.len() > BULK_MISSIONS_MAX {
            let message = format!("matches more than {BULK_MISSIONS_MAX} missions: narrow it");
            return Err(invalid("filter", message));
        }
        match page.next {
            Some(next) => search.after = Some(next),
            None => return Ok(ids),
        }
    }
}

/// One mission's command, and what came of it.
async fn act(
    app: &AppState,
    action: Action,
    stream_id: domain::StreamId,
    metadata: domain::EventMetadata,
    reason: &str,
    key: Option<&str>,
) -> BulkOutcome {
    let by = metadata.actor.clone();
    let now = now_ms();
    let mission_id = stream_id.to_string();
    let done = |outcome, status: Option<String>, copy_id, repeated| BulkOutcome {
        mission_id: mission_id.clone(),
        outcome,
        status,
        copy_id,
        repeated,
        error: None,
    };
    let acted = match action {
        Action::Reenqueue => {
            let ids = copy_ids(&by, key, &mission_id);
            copy::reenqueue(&app.store, &stream_id, reason, metadata, ids, now).await.map(
                |copied| {
                    done("reenqueued", None, Some(copied.copy_id.to_string()), copied.repeated)
                },
            )
        }
        Action::Cancel | Action::Retry => {
            let kind = match action {
                Action::Retry => Reasoned::Retry,
                _ => Reasoned::Cancel,
            };
            command::execute::<Mission>(&app.store, &stream_id, metadata, || {
                kind.command(reason, &by, now)
            })
            .await
            .map(|executed| {
                let outcome = if matches!(action, Action::Retry) { "retried" } else { "cancelled" };
                let repeated =
                    executed.appended.as_ref().is_some_and(|appended| appended.duplicate);
                done(outcome, Some(executed.state.status.to_string()), None, repeated)
            })
        }
    };
    acted.unwrap_or_else(|error: CommandError<_>| BulkOutcome {
        mission_id: mission_id.clone(),
        outcome: "refused",
        status: None,
        copy_id: None,
        repeated: false,
        error: Some({
            let error = super::refusal(error);
            Refusal { code: error.code(), message: error.to_string() }
        }),
    })
}
