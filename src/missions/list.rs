//! PostgreSQL adapter of the `mission_list` projector (table `mission_list`): the writer the
//! projector runtime calls, and the reads the query API makes of it, side by side so the
//! table's columns are named in one file.

use projections::mission_list::{RowChange, merge};
use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::eventlog::projectors::PgWriter;

#[derive(Debug, Default, Clone, Copy)]
pub struct MissionListWriter;

/// The word a status is stored as: the same as its JSON form.
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        other => panic!("a unit enum serialises to a string, got {other:?}"),
    }
}

impl PgWriter<RowChange> for MissionListWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["mission_list"]
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<RowChange>,
    ) -> Result<(), sqlx::Error> {
        let rows = merge(changes);
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let (mut names, mut priorities, mut agents, mut by) = (vec![], vec![], vec![], vec![]);
        let (mut statuses, mut attempts, mut enqueued_positions) = (vec![], vec![], vec![]);
        let (mut updated, mut positions) = (vec![], vec![]);
        for row in rows {
            ids.push(row.mission_id);
            let enqueued = row.enqueued.as_ref();
            names.push(enqueued.map(|e| e.name.clone()));
            priorities.push(enqueued.map(|e| word(&e.priority)));
            agents.push(enqueued.map(|e| e.agent.clone()));
            by.push(enqueued.map(|e| e.enqueued_by.clone()));
            statuses.push(word(&row.status));
            attempts.push(row.attempt.map(|a| a as i32));
            enqueued_positions.push(enqueued.map(|_| row.position as i64));
            updated.push(row.updated_at);
            positions.push(row.position as i64);
        }
        let table = format!("mission_list{suffix}");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS m (mission_id, name, priority, agent, enqueued_by, status,
                                       attempt, enqueued_position, enqueued_at, updated_at,
                                       last_position)
             SELECT u.id, u.name, u.priority, u.agent, u.by, u.status, u.attempt,
                    u.enqueued_position,
                    CASE WHEN u.enqueued_position IS NOT NULL THEN u.updated END,
                    u.updated, u.position
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::int4[], $8::int8[], $9::timestamptz[], $10::int8[])
                  AS u(id, name, priority, agent, by, status, attempt, enqueued_position,
                       updated, position)
             ON CONFLICT (mission_id) DO UPDATE
             SET name = coalesce(excluded.name, m.name),
                 priority = coalesce(excluded.priority, m.priority),
                 agent = coalesce(excluded.agent, m.agent),
                 enqueued_by = coalesce(excluded.enqueued_by, m.enqueued_by),
                 status = excluded.status,
                 attempt = coalesce(excluded.attempt, m.attempt),
                 enqueued_position = coalesce(excluded.enqueued_position, m.enqueued_position),
                 enqueued_at = coalesce(excluded.enqueued_at, m.enqueued_at),
                 updated_at = excluded.updated_at,
                 last_position = excluded.last_position"
        )))
        .bind(&ids)
        .bind(&names)
        .bind(&priorities)
        .bind(&agents)
        .bind(&by)
        .bind(&statuses)
        .bind(&attempts)
        .bind(&enqueued_positions)
        .bind(&updated)
        .bind(&positions)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// A mission as the list shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MissionRow {
    pub mission_id: String,
    pub name: Option<String>,
    pub status: String,
    pub priority: Option<String>,
    pub agent: Option<String>,
    pub attempt: Option<i32>,
    pub enqueued_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub enqueued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(skip)]
    pub enqueued_position: Option<i64>,
}

/// What `list` selects; `None` matches everything. Statuses and priorities are their JSON
/// words.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub priority: Option<String>,
    pub agent: Option<String>,
    pub since: Option<OffsetDateTime>,
    /// Only missions enqueued before this position (the cursor of the previous page).
    pub before_position: Option<u64>,
    pub limit: u32,
}

/// One page of missions, newest first, and the checkpoint the page reflects, read in one
/// snapshot so the position matches the rows.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
) -> Result<(Vec<MissionRow>, u64), sqlx::Error> {
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(pool).await?;
    let missions: Vec<MissionRow> = sqlx::query_as(
        "SELECT mission_id, name, status, priority, agent, attempt, enqueued_by, enqueued_at,
                updated_at, enqueued_position
         FROM mission_list
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR priority = $2)
           AND ($3::text IS NULL OR agent = $3)
           AND ($4::timestamptz IS NULL OR enqueued_at >= $4)
           AND ($5::int8 IS NULL OR enqueued_position < $5)
         ORDER BY enqueued_position DESC
         LIMIT $6",
    )
    .bind(&filter.status)
    .bind(&filter.priority)
    .bind(&filter.agent)
    .bind(filter.since)
    .bind(filter.before_position.map(|position| position as i64))
    .bind(i64::from(filter.limit))
    .fetch_all(snapshot.conn())
    .await?;
    let position = snapshot.position(projections::mission_list::NAME).await?;
    Ok((missions, position))
}

/// Name and priority of each mission id given that the list knows.
pub async fn describe(
    pool: &PgPool,
    ids: &[String],
) -> Result<BTreeMap<String, (Option<String>, Option<String>)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT mission_id, name, priority FROM mission_list WHERE mission_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id, name, priority)| (id, (name, priority))).collect())
}

/// Missions per status.
pub async fn count_by_status(pool: &PgPool) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM mission_list GROUP BY status")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}
