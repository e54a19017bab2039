//! What the LLM calls used, from the `llm_usage` read model (one row per recorded call):
//! `GET /api/llm/usage` groups them by model, agent kind, mission, provider or route since a
//! time; `GET /api/llm/limits` shows the shared limiter of each configured target (its
//! learned rate, pause, calls in flight).

use crate::api::auth::Access;
use axum::extract::State;
use domain::api_key::Permission;
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::error::errors;
use super::extract::page_limit;
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::llm::limits::{Limiter, LimiterState};

/// Most groups one answer lists (the ones with the most calls).
pub const GROUPS_MAX: u32 = 1_000;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::LlmRead), routes!(usage))
        .routes(Access::needs(Permission::LlmRead), routes!(limits))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// `model` (the default), `kind`, `mission`, `provider` or `route`.
    by: Option<String>,
    /// From this time (RFC 3339); 24 hours ago when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    since: Option<OffsetDateTime>,
    /// 1 to 1,000 groups; 100 when absent.
    limit: Option<u32>,
}

/// Call latencies in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageGroup {
    /// The model, kind (`chat:<kind>` for chats, `api` for `POST /v1/chat/completions`),
    /// mission id, provider or route (empty: calls with no mission recorded before those
    /// labels).
    pub key: String,
    pub calls: i64,
    /// Calls that ended in a failure (`outcome` other than `ok`).
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub since: OffsetDateTime,
    /// The log position the read model reflects: calls recorded after it are not counted yet.
    pub position: u64,
    pub groups: Vec<UsageGroup>,
}

errors! { UsageErrors = INTERNAL + QUERY + [] }

/// `GET /api/llm/usage`: tokens, cost, calls, errors and latency percentiles per group.
#[utoipa::path(get, path = "/api/llm/usage", tag = "llm",
    params(UsageQuery),
    responses((status = 200, description = "Usage per group, most calls first", body = UsageReport), UsageErrors))]
async fn usage(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<ApiJson<UsageReport>, ApiError> {
    let by = query.by.unwrap_or_else(|| "model".into());
    let column = match by.as_str() {
        "model" => "model",
        "kind" => "kind",
        "mission" => "coalesce(mission_id, '')",
        "provider" => "provider",
        "route" => "route",
        _ => {
            return Err(ApiError::InvalidField {
                field: "by",
                message: format!("{by:?} is not one of model, kind, mission, provider, route"),
            });
        }
    };
    let limit = page_limit(query.limit, 100, GROUPS_MAX)?;
    let since = query.since.unwrap_or_else(|| OffsetDateTime::now_utc() - time::Duration::days(1));
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(app.pool())
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    type Row = (String, i64, i64, i64, i64, f64, f64, f64, f64, i64);
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {column}, count(*), count(*) FILTER (WHERE outcome <> 'ok'),
                sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cost_usd),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),
                max(latency_ms)
         FROM llm_calls WHERE at >= $1
         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2"
    )))
    .bind(since)
    .bind(limit as i64)
    .fetch_all(snapshot.conn())
    .await
    .map_err(|error| ApiError::Internal(error.into()))?;
    let position = snapshot
        .position(projections::llm_usage::NAME)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    let groups = rows
        .into_iter()
        .map(|(key, calls, errors, input_tokens, output_tokens, cost_usd, p50, p90, p99, max)| {
            UsageGroup {
                key,
                calls,
                errors,
                input_tokens,
                output_tokens,
                cost_usd,
                latency_ms: Latency { p50, p90, p99, max },
            }
        })
        .collect();
    Ok(ApiJson(UsageReport { by, since, position, groups }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    /// One per distinct provider+model of the configured routes.
    pub targets: Vec<LimiterState>,
}

errors! { LimitsErrors = INTERNAL + [QueueUnavailable] }

/// `GET /api/llm/limits`: the shared limiter of every configured target.
#[utoipa::path(get, path = "/api/llm/limits", tag = "llm",
    responses((status = 200, description = "Each target's limiter", body = LimitsView), LimitsErrors))]
async fn limits(State(app): State<AppState>) -> Result<ApiJson<LimitsView>, ApiError> {
    let resolved = crate::llm::config::current(&app.store, &app.agents.llm)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    let redis = super::queue::queue(&app)?.connection();
    let limiter = Limiter::new(redis, &app.namespace);
    let mut seen = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    let all =
        resolved.route.iter().chain(resolved.routes.values()).flat_map(|route| &route.targets);
    for target in all {
        if !seen.insert((target.provider.as_str(), target.model.clone())) {
            continue;
        }
        let state =
            limiter.state(target).await.map_err(|error| ApiError::Internal(error.into()))?;
        targets.push(state);
    }
    Ok(ApiJson(LimitsView { targets }))
}
