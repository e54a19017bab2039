//! PostgreSQL adapter of the `event_type_stats` projector (table `event_type_stats`).

use projections::event_type_stats::{Counted, merge};
use sqlx::{AssertSqlSafe, PgConnection};

use super::PgWriter;

#[derive(Debug, Default, Clone, Copy)]
pub struct EventTypeStatsWriter;

impl PgWriter<Counted> for EventTypeStatsWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["event_type_stats"]
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<Counted>,
    ) -> Result<(), sqlx::Error> {
        let rows = merge(changes);
        if rows.is_empty() {
            return Ok(());
        }
        let mut columns = (vec![], vec![], vec![], vec![], vec![]);
        for row in rows {
            columns.0.push(row.stream_type);
            columns.1.push(row.event_type);
            columns.2.push(row.events as i64);
            columns.3.push(row.last_position as i64);
            columns.4.push(row.last_recorded_at);
        }
        let table = format!("event_type_stats{suffix}");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS t (stream_type, event_type, events, last_position,
                                       last_recorded_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[],
                                  $5::timestamptz[])
             ON CONFLICT (stream_type, event_type) DO UPDATE
             SET events = t.events + excluded.events,
                 last_position = greatest(t.last_position, excluded.last_position),
                 last_recorded_at = CASE WHEN excluded.last_position > t.last_position
                                         THEN excluded.last_recorded_at
                                         ELSE t.last_recorded_at END"
        )))
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&columns.4)
        .execute(connection)
        .await?;
        Ok(())
    }
}
