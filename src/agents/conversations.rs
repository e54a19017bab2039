//! PostgreSQL adapter of the `conversation_list` projector (table `conversation_list`), and
//! the page query `GET /api/conversations` reads it with.

use projections::conversation_list::{Change, merge};
use sqlx::{AssertSqlSafe, PgConnection};
use time::OffsetDateTime;

use crate::eventlog::projectors::PgWriter;

#[derive(Debug, Default, Clone, Copy)]
pub struct ConversationListWriter;

impl PgWriter<Change> for ConversationListWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["conversation_list"]
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<Change>,
    ) -> Result<(), sqlx::Error> {
        let rows = merge(changes);
        if rows.is_empty() {
            return Ok(());
        }
        let (mut ids, mut agents, mut by, mut titles) = (vec![], vec![], vec![], vec![]);
        let (mut messages, mut started, mut updated, mut positions) =
            (vec![], vec![], vec![], vec![]);
        for row in rows {
            ids.push(row.conversation_id);
            agents.push(row.agent);
            by.push(row.started_by);
            titles.push(row.title);
            messages.push(row.messages as i32);
            started.push(row.started_at);
            updated.push(row.updated_at.unwrap_or(OffsetDateTime::UNIX_EPOCH));
            positions.push(row.last_position as i64);
        }
        let table = format!("conversation_list{suffix}");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS t (conversation_id, agent, started_by, title, messages,
                                       started_at, updated_at, last_position)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[],
                                  $6::timestamptz[], $7::timestamptz[], $8::int8[])
             ON CONFLICT (conversation_id) DO UPDATE
             SET agent = coalesce(t.agent, excluded.agent),
                 started_by = coalesce(t.started_by, excluded.started_by),
                 title = coalesce(t.title, excluded.title),
                 messages = t.messages + excluded.messages,
                 started_at = coalesce(t.started_at, excluded.started_at),
                 updated_at = greatest(t.updated_at, excluded.updated_at),
                 last_position = greatest(t.last_position, excluded.last_position)"
        )))
        .bind(&ids)
        .bind(&agents)
        .bind(&by)
        .bind(&titles)
        .bind(&messages)
        .bind(&started)
        .bind(&updated)
        .bind(&positions)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// One conversation as listed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub agent: Option<String>,
    pub started_by: Option<String>,
    /// The start of its first message.
    pub title: Option<String>,
    pub messages: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The position of its last change: pass the last row's as `before` for the next page.
    pub last_position: i64,
}

/// A page, newest change first: rows changed before `before` (a `last_position`), of one
/// agent kind when given.
pub async fn page<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    agent: Option<&str>,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT conversation_id, agent, started_by, title, messages, started_at, updated_at,
                last_position
         FROM conversation_list
         WHERE ($1::text IS NULL OR agent = $1) AND ($2::int8 IS NULL OR last_position < $2)
         ORDER BY last_position DESC
         LIMIT $3",
    )
    .bind(agent)
    .bind(before.map(|b| b as i64))
    .bind(i64::from(limit))
    .fetch_all(executor)
    .await
}
