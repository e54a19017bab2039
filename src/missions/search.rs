//! Finding missions in the `mission_list` read model: the filters, sorts and pages
//! `GET /api/missions` offers, each served by an index of migration `0012`.
//!
//! - Text (`q`, `error`) is matched as a phrase anywhere in the name or description, or in
//!   the last error, case-insensitively, through trigram (`pg_trgm`) indexes; `q` also
//!   matches the start of a mission id. Name and description are matched in `search_text`,
//!   a generated column holding them lowercased, so a row read costs a plain `LIKE`.
//! - Each sort is a keyset over `(sort key, mission_id)` with a btree index on that pair, so
//!   a page costs the same at any depth, and a row is never repeated or skipped across pages
//!   whatever commits in between (a row that moves while one pages may of course be met
//!   again or missed where it moved to; the list is live).
//! - The total is counted exactly up to [`TOTAL_BOUND`], then said to be more than that, so
//!   a broad filter over millions of missions costs a bounded count.
//!
//! Rows, total and the projector's checkpoint are read in one snapshot, so the position a
//! page names is the one its rows reflect.

use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::list::MS_BETWEEN;
use crate::eventlog::projectors::Snapshot;

/// Shortest `q` or `error`: a trigram index finds nothing shorter than three characters
/// without reading all of itself.
pub const TEXT_LEN_MIN: usize = 3;
/// Longest `q` or `error`.
pub const TEXT_LEN_MAX: usize = 200;
/// Matches counted exactly; past it the total reads "more than this". Counting costs a read of
/// each match (up to this many), so the bound is what a person triaging needs to know exactly,
/// not what a million-row list could count: at 10,000 a broad search spent most of its time
/// counting (`brain bench search`).
pub const TOTAL_BOUND: u64 = 1_000;

/// What a list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// When it was enqueued (by log position).
    #[default]
    Enqueued,
    /// When its row last changed.
    Updated,
    /// Its run time; those without one (not finished, or never started) come last either way.
    Duration,
}

impl Sort {
    pub const ALL: [Sort; 3] = [Sort::Enqueued, Sort::Updated, Sort::Duration];

    pub fn word(self) -> &'static str {
        match self {
            Sort::Enqueued => "enqueued",
            Sort::Updated => "updated",
            Sort::Duration => "duration",
        }
    }

    pub fn parse(word: &str) -> Option<Sort> {
        Sort::ALL.into_iter().find(|sort| sort.word() == word)
    }

    /// The SQL of its key read in `order`: each has a btree index on `(key, mission_id)`.
    fn key(self, order: Order) -> &'static str {
        match (self, order) {
            (Sort::Enqueued, _) => "enqueued_position",
            (Sort::Updated, _) => "updated_at",
            // No run time comes last: lowest read downwards, highest read upwards. Two
            // indexes, so that neither way walks past the unfinished to reach the first row.
            (Sort::Duration, Order::Desc) => "coalesce(run_ms, -1)",
            (Sort::Duration, Order::Asc) => "coalesce(run_ms, 9223372036854775807)",
        }
    }

    /// The key of a row without a run time, as [`Sort::key`] reads it.
    fn no_run_time(order: Order) -> i64 {
        match order {
            Order::Desc => -1,
            Order::Asc => i64::MAX,
        }
    }
}

/// Which way a sort runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    /// Newest, latest or longest first.
    #[default]
    Desc,
}

impl Order {
    pub fn word(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    pub fn parse(word: &str) -> Option<Order> {
        [Order::Asc, Order::Desc].into_iter().find(|order| order.word() == word)
    }
}

/// Where a page ended: the last row's sort key and id, under the sort and order it was read
/// with (a cursor read under another is refused, not misread). Its text form is
/// `<sort>.<order>.<key>.<mission id>`, URL-safe, and opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub sort: Sort,
    pub order: Order,
    /// The position, the microseconds since the Unix epoch, or the milliseconds of run time
    /// (for none, -1 read downwards and `i64::MAX` upwards).
    key: i64,
    mission_id: String,
}

impl Cursor {
    fn after(sort: Sort, order: Order, row: &MissionRow) -> Cursor {
        let key = match sort {
            // Every row built from the log has one: the enqueue is a mission's first event.
            Sort::Enqueued => row.enqueued_position.unwrap_or(0),
            Sort::Updated => (row.updated_at.unix_timestamp_nanos() / 1_000) as i64,
            Sort::Duration => row.run_ms.unwrap_or(Sort::no_run_time(order)),
        };
        Cursor { sort, order, key, mission_id: row.mission_id.clone() }
    }

    /// Reads a cursor's text form; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let mut parts = text.splitn(4, '.');
        let (Some(sort), Some(order), Some(key), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("is not a cursor this list gave".into());
        };
        let sort = Sort::parse(sort).ok_or("names no sort")?;
        let order = Order::parse(order).ok_or("names no order")?;
        let key: i64 = key.parse().map_err(|_| "has no key")?;
        let id =
            domain::StreamId::parse(id).map_err(|error| format!("has no mission id: {error}"))?;
        Ok(Cursor { sort, order, key, mission_id: id.to_string() })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sort, order) = (self.sort.word(), self.order.word());
        write!(f, "{sort}.{order}.{}.{}", self.key, self.mission_id)
    }
}

/// What to find; an empty field matches everything. Checked by the caller (the API) against
/// the bounds above; statuses and the priority are their JSON words.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// A phrase of the name or description, or the start of the mission id.
    pub text: Option<String>,
    /// A phrase of the last error.
    pub error: Option<String>,
    /// Agent kind.
    pub kind: Option<String>,
    pub priority: Option<String>,
    /// Any of these.
    pub statuses: Vec<String>,
    /// Enqueued at or after.
    pub since: Option<OffsetDateTime>,
    /// Enqueued before.
    pub until: Option<OffsetDateTime>,
    pub min_attempts: Option<u32>,
    pub sort: Sort,
    pub order: Order,
    /// The previous page's end, read under the same sort and order.
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// A mission as the list shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MissionRow {
    pub mission_id: String,
    pub name: Option<String>,
    pub status: String,
    pub priority: Option<String>,
    pub agent: Option<String>,
    /// Attempts started in the current run.
    pub attempt: Option<i32>,
    pub enqueued_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub enqueued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The first start of the current run (a retry begins a new run).
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached its final status (completed, failed, cancelled).
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Its last attempt's error, the first 2,000 characters (the history has it whole).
    pub error: Option<String>,
    /// Milliseconds from due (enqueued, `not_before`, or retried) to the run's first start.
    pub queue_wait_ms: Option<i64>,
    /// Milliseconds from the run's first start to its finish.
    pub run_ms: Option<i64>,
    #[serde(skip)]
    pub enqueued_position: Option<i64>,
}

/// One page of a search.
#[derive(Debug)]
pub struct Page {
    pub missions: Vec<MissionRow>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<Cursor>,
    /// Missions matching, at most [`TOTAL_BOUND`].
    pub total: u64,
    /// `false`: more than `total` match.
    pub total_exact: bool,
    /// The `mission_list` projector's checkpoint the page reflects.
    pub position: u64,
}

const COLUMNS: &str = "mission_id, name, status, priority, agent, attempt, enqueued_by,
    enqueued_at, updated_at, started_at, finished_at, last_error AS error, run_ms,
    enqueued_position";

/// A phrase as a `LIKE` pattern matches it literally: its wildcards and the escape escaped.
fn literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Appends ` WHERE ...` for the filters and, if `paged`, the cursor.
fn push_where(query: &mut QueryBuilder<Postgres>, search: &Search, paged: bool) {
    query.push(" WHERE true");
    if let Some(text) = &search.text {
        // `search_text` is name and description lowercased when written (migration 0012).
        query.push(" AND (search_text LIKE lower(").push_bind(format!("%{}%", literal(text)));
        query.push(")");
        // Only what could start an id is looked up as one (its index serves a prefix).
        if text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            query.push(" OR mission_id LIKE ").push_bind(format!("{}%", literal(text)));
            let lower = text.to_ascii_lowercase();
            if lower != *text {
                query.push(" OR mission_id LIKE ").push_bind(format!("{}%", literal(&lower)));
            }
        }
        query.push(")");
    }
    if let Some(error) = &search.error {
        query.push(" AND last_error ILIKE ").push_bind(format!("%{}%", literal(error)));
    }
    if let Some(kind) = &search.kind {
        query.push(" AND agent = ").push_bind(kind.clone());
    }
    if let Some(priority) = &search.priority {
        query.push(" AND priority = ").push_bind(priority.clone());
    }
    match search.statuses.as_slice() {
        [] => {}
        // `=` rather than `= ANY`: an index scan on (status, key) then yields rows in order.
        [status] => {
            query.push(" AND status = ").push_bind(status.clone());
        }
        statuses => {
            query.push(" AND status = ANY(").push_bind(statuses.to_vec()).push(")");
        }
    }
    if let Some(since) = search.since {
        query.push(" AND enqueued_at >= ").push_bind(since);
    }
    if let Some(until) = search.until {
        query.push(" AND enqueued_at < ").push_bind(until);
    }
    if let Some(min) = search.min_attempts {
        query.push(" AND attempt >= ").push_bind(i32::try_from(min).unwrap_or(i32::MAX));
    }
    if let Some(cursor) = search.after.as_ref().filter(|_| paged) {
        let beyond = if search.order == Order::Desc { "<" } else { ">" };
        let key = search.sort.key(search.order);
        query.push(format_args!(" AND ({key}, mission_id) {beyond} ("));
        match search.sort {
            Sort::Updated => {
                let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(cursor.key) * 1_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                query.push_bind(at);
            }
            Sort::Enqueued | Sort::Duration => {
                query.push_bind(cursor.key);
            }
        }
        query.push(", ").push_bind(cursor.mission_id.clone()).push(")");
    }
}

/// The page's query: one row past the page, to know whether another follows.
fn page_query(search: &Search, prefix: &str) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(format!(
        "{prefix}SELECT {COLUMNS}, {MS_BETWEEN}(ready_at, started_at) AS queue_wait_ms
         FROM mission_list"
    ));
    push_where(&mut query, search, true);
    let (key, order) = (search.sort.key(search.order), search.order.word());
    query.push(format_args!(" ORDER BY {key} {order}, mission_id {order} LIMIT "));
    query.push_bind(i64::from(search.limit) + 1);
    query
}

/// The total's query: the matches, counted up to one past the bound.
fn count_query(search: &Search, prefix: &str) -> QueryBuilder<Postgres> {
    let mut query =
        QueryBuilder::new(format!("{prefix}SELECT count(*) FROM (SELECT FROM mission_list"));
    push_where(&mut query, search, false);
    query.push(format_args!(" LIMIT {}) AS matched", TOTAL_BOUND + 1));
    query
}

/// One page of missions matching `search`, its total and the position it reflects.
pub async fn search(pool: &PgPool, search: &Search) -> Result<Page, sqlx::Error> {
    let mut snapshot = Snapshot::begin(pool).await?;
    // Unnamed statements (not kept prepared): each is planned for its own values, so a
    // pattern or a status set gets the plan it needs rather than a generic one.
    let mut missions: Vec<MissionRow> = page_query(search, "")
        .build_query_as()
        .persistent(false)
        .fetch_all(snapshot.conn())
        .await?;
    let full = missions.len() > search.limit as usize;
    // A first page that holds every match is its own count.
    let counted = if full || search.after.is_some() {
        let counted: i64 = count_query(search, "")
            .build_query_scalar()
            .persistent(false)
            .fetch_one(snapshot.conn())
            .await?;
        counted.max(0) as u64
    } else {
        missions.len() as u64
    };
    let position = snapshot.position(projections::mission_list::NAME).await?;
    let next = full.then(|| {
        missions.truncate(search.limit as usize);
        let last = missions.last().expect("a full page has a last row");
        Cursor::after(search.sort, search.order, last)
    });
    Ok(Page {
        missions,
        next,
        total: counted.min(TOTAL_BOUND),
        total_exact: counted <= TOTAL_BOUND,
        position,
    })
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the page's query and of the total's, as PostgreSQL plans
/// them for `search`: what `brain bench search` shows of its slowest search.
pub async fn explain(pool: &PgPool, search: &Search) -> Result<Vec<String>, sqlx::Error> {
    let prefix = "EXPLAIN (ANALYZE, BUFFERS) ";
    let mut lines: Vec<String> = vec!["-- page".into()];
    lines.extend(
        page_query(search, prefix)
            .build_query_scalar::<String>()
            .persistent(false)
            .fetch_all(pool)
            .await?,
    );
    lines.push("-- total".into());
    lines.extend(
        count_query(search, prefix)
            .build_query_scalar::<String>()
            .persistent(false)
            .fetch_all(pool)
            .await?,
    );
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_it_was_written() {
        for (sort, key) in
            [(Sort::Enqueued, 42), (Sort::Updated, 1_733_000_000_123_456), (Sort::Duration, -1)]
        {
            let cursor = Cursor { sort, order: Order::Asc, key, mission_id: "0193-ab_C".into() };
            assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor));
        }
    }

    #[test]
    fn a_malformed_cursor_is_refused() {
        for text in [
            "",
            "12",
            "enqueued.desc.1",
            "sideways.desc.1.m",
            "enqueued.up.1.m",
            "enqueued.desc.x.m",
            "enqueued.desc.1.m m",
            "enqueued.desc.1.",
        ] {
            assert!(Cursor::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn like_wildcards_in_a_phrase_match_themselves() {
        assert_eq!(literal(r"50%_a\b"), r"50\%\_a\\b");
    }
}
