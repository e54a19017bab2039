//! PostgreSQL adapter of the `mission_list` projector (table `mission_list`).

use projections::mission_list::{RowChange, merge};
use sqlx::{AssertSqlSafe, PgConnection};

use super::PgWriter;

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
