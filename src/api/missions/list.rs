//! `GET /api/missions`: find missions in the `mission_list` read model by text, error, kind,
//! status, time and attempts, sorted and paged by cursor, with a bounded total
//! ([`crate::missions::search`] holds the query). Every parameter is checked here, and one
//! that is not what it must be is a 400 naming it.

use axum::extract::State;
use domain::mission::{AGENT_LEN_MAX, MissionStatus, Priority};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::errors;
use crate::api::extract::page_limit;
use crate::api::{ApiError, ApiJson, ApiQuery, AppState};
use crate::missions::search::{
    self, Cursor, MissionRow, Order, Search, Sort, TEXT_LEN_MAX, TEXT_LEN_MIN, TOTAL_BOUND,
};

/// Most rows one page returns.
pub const LIST_LIMIT_MAX: u32 = 200;
/// Rows a page returns when `limit` is absent.
const LIST_LIMIT_DEFAULT: u32 = 50;
/// Most attempts a `min_attempts` may ask for (a mission has at most 100).
const MIN_ATTEMPTS_MAX: u32 = domain::mission::ATTEMPT_MAX_LIMIT;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::api) struct ListQuery {
    /// A phrase anywhere in the name or description (3 to 200 characters, any case), or the
    /// start of the mission id.
    q: Option<String>,
    /// A phrase anywhere in the last error (3 to 200 characters, any case).
    error: Option<String>,
    /// Agent kind.
    kind: Option<String>,
    /// Agent kind (the older name of `kind`; give one of them).
    agent: Option<String>,
    /// A status, or several separated by commas: `failed,cancelled`.
    status: Option<String>,
    priority: Option<Priority>,
    /// Enqueued at or after this time (RFC 3339).
    since: Option<String>,
    /// Enqueued before this time (RFC 3339); not before `since`.
    until: Option<String>,
    /// At least this many attempts started in the current run (0 to 100).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 100)]
    min_attempts: Option<String>,
    /// `enqueued` (the default), `updated` or `duration` (run time; missions without one
    /// come last either way).
    sort: Option<String>,
    /// `desc` (the default: newest, latest or longest first) or `asc`.
    order: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same `sort` and `order`.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct MissionPage {
    pub(in crate::api) missions: Vec<MissionRow>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub(in crate::api) next_cursor: Option<String>,
    /// Missions matching the filters (all pages), counted exactly up to 1,000.
    total: u64,
    /// `false`: more than `total` missions match.
    total_exact: bool,
    /// The log position the list reflects (the `mission_list` projector's checkpoint).
    position: u64,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField { field, message: message.into() }
}

/// A phrase to search for, trimmed: 3 to 200 characters.
fn phrase(field: &'static str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.trim();
    let chars = text.chars().count();
    if !(TEXT_LEN_MIN..=TEXT_LEN_MAX).contains(&chars) {
        let message = format!("must be {TEXT_LEN_MIN} to {TEXT_LEN_MAX} characters, got {chars}");
        return Err(invalid(field, message));
    }
    Ok(Some(text.to_owned()))
}

fn time(field: &'static str, raw: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|raw| {
        OffsetDateTime::parse(&raw, &Rfc3339)
            .map_err(|_| invalid(field, format!("{raw:?} is not an RFC 3339 time")))
    })
    .transpose()
}

/// The statuses of `status=a,b`: each a status word, none twice.
fn statuses(raw: Option<String>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut statuses = Vec::new();
    for word in raw.split(',').map(str::trim) {
        let status: MissionStatus = serde_json::from_value(serde_json::Value::from(word))
            .ok()
            .filter(|status| *status != MissionStatus::New)
            .ok_or_else(|| {
                let known = "pending, queued, running, suspended, completed, failed, cancelled";
                invalid("status", format!("{word:?} is not a status (one of {known})"))
            })?;
        let word = status.to_string();
        if !statuses.contains(&word) {
            statuses.push(word);
        }
    }
    Ok(statuses)
}

/// The agent kind from `kind` or its older name `agent`.
fn kind(kind: Option<String>, agent: Option<String>) -> Result<Option<String>, ApiError> {
    let kind = match (kind, agent) {
        (Some(kind), Some(agent)) if kind != agent => {
            return Err(invalid("kind", "give kind or agent (its older name), not both"));
        }
        (kind, agent) => kind.or(agent),
    };
    if let Some(kind) = &kind
        && (kind.is_empty() || kind.len() > AGENT_LEN_MAX)
    {
        return Err(invalid("kind", format!("must be 1 to {AGENT_LEN_MAX} characters")));
    }
    Ok(kind)
}

impl ListQuery {
    /// The search this query asks for, or a 400 naming the first parameter at fault.
    pub(super) fn search(self) -> Result<Search, ApiError> {
        let limit = page_limit(self.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
        let sort = match self.sort.as_deref() {
            None => Sort::default(),
            Some(word) => Sort::parse(word).ok_or_else(|| {
                invalid("sort", format!("{word:?} is not a sort (enqueued, updated, duration)"))
            })?,
        };
        let order = match self.order.as_deref() {
            None => Order::default(),
            Some(word) => Order::parse(word)
                .ok_or_else(|| invalid("order", format!("{word:?} is not asc or desc")))?,
        };
        let after = match self.cursor.as_deref() {
            None => None,
            Some(text) => {
                let cursor = Cursor::parse(text)
                    .map_err(|why| invalid("cursor", format!("{text:?} {why}")))?;
                if (cursor.sort, cursor.order) != (sort, order) {
                    let message = format!(
                        "was given by sort={}&order={}, not sort={}&order={}",
                        cursor.sort.word(),
                        cursor.order.word(),
                        sort.word(),
                        order.word()
                    );
                    return Err(invalid("cursor", message));
                }
                Some(cursor)
            }
        };
        let (since, until) = (time("since", self.since)?, time("until", self.until)?);
        if let (Some(since), Some(until)) = (since, until)
            && until < since
        {
            return Err(invalid("until", "is before since"));
        }
        let min_attempts = match self.min_attempts {
            None => None,
            Some(raw) => {
                Some(raw.parse::<u32>().ok().filter(|n| *n <= MIN_ATTEMPTS_MAX).ok_or_else(
                    || invalid("min_attempts", format!("must be 0 to {MIN_ATTEMPTS_MAX}")),
                )?)
            }
        };
        let priority = self.priority.map(|priority| {
            serde_json::to_value(priority)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        Ok(Search {
            text: phrase("q", self.q)?,
            error: phrase("error", self.error)?,
            kind: kind(self.kind, self.agent)?,
            priority,
            statuses: statuses(self.status)?,
            since,
            until,
            min_attempts,
            sort,
            order,
            after,
            limit,
        })
    }
}

errors! { ListMissionsErrors = READ + QUERY + [] }

/// `GET /api/missions?q=&error=&kind=&status=&priority=&since=&until=&min_attempts=&sort=
/// &order=&limit=&cursor=`: missions from the `mission_list` read model, newest first by
/// default, with how many match (exactly up to 1,000).
#[utoipa::path(get, path = "/api/missions", tag = "missions", params(ListQuery),
    responses(
        (status = 200, description = "A page of missions", body = MissionPage),
        ListMissionsErrors,
    ))]
pub(super) async fn list_missions(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<MissionPage>, ApiError> {
    Ok(ApiJson(page(&app, query).await?))
}

/// The page of missions `query` asks for, or a 400 naming the first parameter at fault: what
/// `GET /api/missions` and the MCP tool `list_missions` both answer.
pub(in crate::api) async fn page(
    app: &AppState,
    query: ListQuery,
) -> Result<MissionPage, ApiError> {
    let search = query.search()?;
    let page = search::search(app.store.pool(), &search).await?;
    debug_assert!(page.total <= TOTAL_BOUND);
    Ok(MissionPage {
        missions: page.missions,
        next_cursor: page.next.map(|cursor| cursor.to_string()),
        total: page.total,
        total_exact: page.total_exact,
        position: page.position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &str) -> Result<Search, ApiError> {
        let uri: axum::http::Uri = format!("/api/missions?{pairs}").parse().expect("a URI");
        let axum::extract::Query(query) =
            axum::extract::Query::<ListQuery>::try_from_uri(&uri).expect("parses");
        query.search()
    }

    fn refused_field(pairs: &str) -> String {
        match query(pairs) {
            Err(ApiError::InvalidField { field, .. }) => field.to_owned(),
            other => panic!("{pairs}: {other:?}"),
        }
    }

    #[test]
    fn each_bad_parameter_is_refused_naming_it() {
        let long = "x".repeat(TEXT_LEN_MAX + 1);
        for (pairs, field) in [
            ("status=failed,lost", "status"),
            ("status=new", "status"),
            ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
            ("since=yesterday", "since"),
            (&format!("q={long}") as &str, "q"),
            ("q=ab", "q"),
            ("error=%20%20", "error"),
            ("sort=name", "sort"),
            ("order=up", "order"),
            ("min_attempts=-1", "min_attempts"),
            ("min_attempts=101", "min_attempts"),
            ("cursor=12", "cursor"),
            ("sort=updated&cursor=enqueued.desc.5.m1", "cursor"),
            ("kind=coder&agent=ops", "kind"),
            ("limit=0", "limit"),
        ] {
            assert_eq!(refused_field(pairs), field, "{pairs}");
        }
    }

    #[test]
    fn a_status_set_is_read_once_each_and_agent_still_names_the_kind() {
        let search = query("status=failed,cancelled,failed&agent=coder").unwrap();
        assert_eq!(search.statuses, ["failed", "cancelled"]);
        assert_eq!(search.kind.as_deref(), Some("coder"));
        let search = query("q=%20%20load%20&sort=duration&order=asc").unwrap();
        assert_eq!(search.text.as_deref(), Some("load"));
        assert_eq!((search.sort, search.order), (Sort::Duration, Order::Asc));
    }
}
