//! `GET /api/analytics/missions?by=&bucket=&since=&until=`: how missions fared over time, per
//! agent kind: how many finished and how (completed, failed, cancelled), the success rate,
//! queue wait and run time percentiles, and the LLM tokens and cost their kind spent.
//!
//! Read from two read models in one snapshot: `mission_list` (a finished row knows when it
//! became ready, started and finished: index `mission_list_finished_at`) and `llm_calls`
//! (index `llm_calls_at`), aggregated by PostgreSQL over the window asked, never more than
//! [`BUCKETS_MAX`] buckets of it. Buckets where nothing finished and nothing was called are
//! left out: the answer grows with what happened, not with the window.

use std::collections::BTreeMap;

use axum::extract::State;
use domain::api_key::Permission;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::auth::Access;
use super::error::errors;
use super::extract::ApiQuery;
use super::{ApiError, ApiJson, ApiRoutes, AppState};

/// Most buckets one answer covers (per kind).
pub const BUCKETS_MAX: i64 = 1_000;
/// The window when `since` is absent.
pub const WINDOW_DEFAULT_S: i64 = 24 * 3_600;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::needs(Permission::MissionsRead), routes!(missions))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AnalyticsQuery {
    /// `kind` (one series per agent kind, the default) or `all` (one series).
    by: Option<String>,
    /// `minute`, `hour` (the default) or `day`.
    bucket: Option<String>,
    /// Start of the window (RFC 3339); 24 hours before `until` when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    /// End of the window, excluded (RFC 3339); now when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
}

/// Two percentiles of a duration, in milliseconds; absent when nothing was measured.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// One bucket of one series.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct AnalyticsBucket {
    /// Start of the bucket (RFC 3339).
    pub at: String,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// `completed / (completed + failed)`; absent when neither happened.
    pub success_rate: Option<f64>,
    /// From becoming ready to the first start, of the missions that finished here.
    pub queue_wait: Percentiles,
    /// From the first start to the end.
    pub run_time: Percentiles,
    pub llm_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsSeries {
    /// The agent kind, or `all`.
    pub kind: String,
    /// Oldest first; buckets where nothing happened are left out.
    pub buckets: Vec<AnalyticsBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MissionAnalytics {
    pub bucket: String,
    pub since: String,
    pub until: String,
    pub series: Vec<AnalyticsSeries>,
    /// The log position the mission figures reflect (the `mission_list` projector's
    /// checkpoint).
    pub position: u64,
}

errors! { AnalyticsErrors = READ + QUERY + [] }

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

/// `GET /api/analytics/missions`: per kind and per bucket, missions finished and how, the
/// success rate, queue wait and run time p50/p95, and LLM calls, tokens and cost.
#[utoipa::path(get, path = "/api/analytics/missions", tag = "missions", params(AnalyticsQuery),
    responses((status = 200, description = "The window's figures", body = MissionAnalytics), AnalyticsErrors))]
async fn missions(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<AnalyticsQuery>,
) -> Result<ApiJson<MissionAnalytics>, ApiError> {
    let by_kind = match query.by.as_deref() {
        None | Some("kind") => true,
        Some("all") => false,
        Some(other) => return Err(invalid("by", format!("kind or all, got {other:?}"))),
    };
    let (bucket, width_s) = match query.bucket.as_deref() {
        Some("minute") => ("minute", 60),
        None | Some("hour") => ("hour", 3_600),
        Some("day") => ("day", 86_400),
        Some(other) => {
            return Err(invalid("bucket", format!("minute, hour or day, got {other:?}")));
        }
    };
    let until = query.until.unwrap_or_else(OffsetDateTime::now_utc);
    let since = query.since.unwrap_or(until - time::Duration::seconds(WINDOW_DEFAULT_S));
    if since >= until {
        return Err(invalid("since", "must be before until".into()));
    }
    let buckets = ((until - since).whole_seconds() + width_s - 1) / width_s;
    if buckets > BUCKETS_MAX {
        let message = format!(
            "the window holds {buckets} {bucket}s; at most {BUCKETS_MAX}: a later since, or a wider bucket"
        );
        return Err(invalid("since", message));
    }
    let width = format!("{width_s} seconds");
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(app.pool()).await?;
    // Buckets start at multiples of their width from `since`, so the first is whole.
    let finished: Vec<MissionRow> = sqlx::query_as(
        "SELECT CASE WHEN $5 THEN agent ELSE 'all' END AS kind,
                date_bin($3::interval, finished_at, $1) AS at,
                count(*) FILTER (WHERE status = 'completed') AS completed,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
                    (ORDER BY mission_list_ms(ready_at, started_at)) AS queue_wait,
                percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY run_ms) AS run_time
         FROM mission_list
         WHERE finished_at >= $1 AND finished_at < $2
           AND status IN ('completed', 'failed', 'cancelled')
         GROUP BY 1, 2 ORDER BY 1, 2 LIMIT $4",
    )
    .bind(since)
    .bind(until)
    .bind(&width)
    .bind(ROWS_MAX)
    .bind(by_kind)
    .fetch_all(snapshot.conn())
    .await?;
    let spent: Vec<LlmRow> = sqlx::query_as(
        "SELECT CASE WHEN $5 THEN kind ELSE 'all' END AS kind,
                date_bin($3::interval, at, $1) AS at,
                count(*) AS calls, sum(input_tokens)::int8 AS input_tokens,
                sum(output_tokens)::int8 AS output_tokens, sum(cost_usd) AS cost_usd
         FROM llm_calls WHERE at >= $1 AND at < $2
         GROUP BY 1, 2 ORDER BY 1, 2 LIMIT $4",
    )
    .bind(since)
    .bind(until)
    .bind(&width)
    .bind(ROWS_MAX)
    .bind(by_kind)
    .fetch_all(snapshot.conn())
    .await?;
    let position = snapshot.position(projections::mission_list::NAME).await?;
    Ok(ApiJson(MissionAnalytics {
        bucket: bucket.to_owned(),
        since: rfc3339(since),
        until: rfc3339(until),
        series: series(finished, spent),
        position,
    }))
}

/// Most rows either query returns: every bucket of the window for a few hundred kinds.
const ROWS_MAX: i64 = 100_000;

#[derive(sqlx::FromRow)]
struct MissionRow {
    kind: Option<String>,
    at: OffsetDateTime,
    completed: i64,
    failed: i64,
    cancelled: i64,
    queue_wait: Option<Vec<f64>>,
    run_time: Option<Vec<f64>>,
}

#[derive(sqlx::FromRow)]
struct LlmRow {
    kind: String,
    at: OffsetDateTime,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn percentiles(values: Option<Vec<f64>>) -> Percentiles {
    let values = values.unwrap_or_default();
    Percentiles { p50_ms: values.first().copied(), p95_ms: values.get(1).copied() }
}

/// The two queries' rows as one series per kind, buckets in time order.
fn series(finished: Vec<MissionRow>, spent: Vec<LlmRow>) -> Vec<AnalyticsSeries> {
    type Kinds = BTreeMap<String, BTreeMap<OffsetDateTime, AnalyticsBucket>>;
    fn slot(kinds: &mut Kinds, kind: String, at: OffsetDateTime) -> &mut AnalyticsBucket {
        kinds
            .entry(kind)
            .or_default()
            .entry(at)
            .or_insert_with(|| AnalyticsBucket { at: rfc3339(at), ..AnalyticsBucket::default() })
    }
    let mut by_kind = Kinds::new();
    for row in finished {
        let kind = row.kind.unwrap_or_else(|| "(unknown)".into());
        let bucket = slot(&mut by_kind, kind, row.at);
        bucket.completed = row.completed;
        bucket.failed = row.failed;
        bucket.cancelled = row.cancelled;
        let decided = row.completed + row.failed;
        bucket.success_rate = (decided > 0).then(|| row.completed as f64 / decided as f64);
        bucket.queue_wait = percentiles(row.queue_wait);
        bucket.run_time = percentiles(row.run_time);
    }
    for row in spent {
        let bucket = slot(&mut by_kind, row.kind, row.at);
        bucket.llm_calls = row.calls;
        bucket.input_tokens = row.input_tokens;
        bucket.output_tokens = row.output_tokens;
        bucket.cost_usd = row.cost_usd;
    }
    by_kind
        .into_iter()
        .map(|(kind, buckets)| AnalyticsSeries { kind, buckets: buckets.into_values().collect() })
        .collect()
}
