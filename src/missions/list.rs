//! PostgreSQL adapter of the `mission_list` projector (table `mission_list`): the writer the
//! projector runtime calls, and the small reads other routes make of it. Searching the list
//! (`GET /api/missions`) is [`super::search`].

use projections::mission_list::{RowChange, merge};
use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, PgConnection, PgPool};

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
        let (mut names, mut descriptions, mut priorities) = (vec![], vec![], vec![]);
        let (mut agents, mut by, mut statuses, mut attempts) = (vec![], vec![], vec![], vec![]);
        let (mut enqueued_positions, mut enqueued_at) = (vec![], vec![]);
        let (mut ready, mut started) = (vec![], vec![]);
        let (mut finished, mut errors, mut updated, mut positions) =
            (vec![], vec![], vec![], vec![]);
        for row in rows {
            ids.push(row.mission_id);
            let enqueued = row.enqueued.as_ref();
            names.push(enqueued.map(|e| e.name.clone()));
            descriptions.push(enqueued.map(|e| e.description.clone()));
            priorities.push(enqueued.map(|e| word(&e.priority)));
            agents.push(enqueued.map(|e| e.agent.clone()));
            by.push(enqueued.map(|e| e.enqueued_by.clone()));
            statuses.push(word(&row.status));
            attempts.push(row.attempt.map(|a| a as i32));
            enqueued_positions.push(enqueued.map(|e| e.position as i64));
            enqueued_at.push(enqueued.map(|e| e.at));
            ready.push(row.ready_at);
            started.push(row.started_at);
            finished.push(row.status.is_finished().then_some(row.updated_at));
            errors.push(row.last_error);
            updated.push(row.updated_at);
            positions.push(row.position as i64);
        }
        let table = format!("mission_list{suffix}");
        // The run's start: a change that begins a run (`ready`) brings its own (or none);
        // otherwise the first one kept wins. The run time is measured from it to the finish.
        let start = "CASE WHEN excluded.ready_at IS NOT NULL THEN excluded.started_at
                          ELSE coalesce(m.started_at, excluded.started_at) END";
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS m (mission_id, name, description, priority, agent,
                                       enqueued_by, status, attempt, enqueued_position,
                                       enqueued_at, ready_at, started_at, finished_at, run_ms,
                                       last_error, updated_at, last_position)
             SELECT u.id, u.name, u.description, u.priority, u.agent, u.by, u.status,
                    u.attempt, u.enqueued_position, u.enqueued_at, u.ready, u.started, u.finished, {MS_BETWEEN}(u.started, u.finished),
                    u.error, u.updated, u.position
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::int4[], $9::int8[], $10::timestamptz[],
                         $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
                         $14::text[], $15::timestamptz[], $16::int8[])
                  AS u(id, name, description, priority, agent, by, status, attempt,
                       enqueued_position, enqueued_at, ready, started, finished, error,
                       updated, position)
             ON CONFLICT (mission_id) DO UPDATE
             SET name = coalesce(excluded.name, m.name),
                 description = coalesce(excluded.description, m.description),
                 priority = coalesce(excluded.priority, m.priority),
                 agent = coalesce(excluded.agent, m.agent),
                 enqueued_by = coalesce(excluded.enqueued_by, m.enqueued_by),
                 status = excluded.status,
                 attempt = coalesce(excluded.attempt, m.attempt),
                 enqueued_position = coalesce(excluded.enqueued_position, m.enqueued_position),
                 enqueued_at = coalesce(excluded.enqueued_at, m.enqueued_at),
                 ready_at = coalesce(excluded.ready_at, m.ready_at),
                 started_at = {start},
                 finished_at = excluded.finished_at,
                 run_ms = {MS_BETWEEN}({start}, excluded.finished_at),
                 last_error = coalesce(excluded.last_error, m.last_error),
                 updated_at = excluded.updated_at,
                 last_position = excluded.last_position"
        )))
        .bind(&ids)
        .bind(&names)
        .bind(&descriptions)
        .bind(&priorities)
        .bind(&agents)
        .bind(&by)
        .bind(&statuses)
        .bind(&attempts)
        .bind(&enqueued_positions)
        .bind(&enqueued_at)
        .bind(&ready)
        .bind(&started)
        .bind(&finished)
        .bind(&errors)
        .bind(&updated)
        .bind(&positions)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// The SQL function (of migration `0012`) giving the milliseconds from one time to a later
/// one: NULL unless both are known, never negative (a run time, a queue wait).
pub(crate) const MS_BETWEEN: &str = "mission_list_ms";

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
