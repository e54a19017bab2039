//! The check of a read model kept in PostgreSQL tables: the live tables are copied, with the
//! position they reflect, from one snapshot (temporary tables of the check's own
//! connection); the same projector builds the model from the log into scratch tables
//! (`<table>_verify`, checkpoint `<name>:verify`) up to exactly that position; PostgreSQL
//! then compares the two row by row on the primary key and names the first differing rows.
//! The scratch and the copies are dropped at the end, and before a check starts (left by one
//! that was cut off).
//!
//! Comparing at the live model's own position is what lets a busy system verify clean: the
//! live model moves on while the check runs, its copy does not.

use std::marker::PhantomData;

use projections::Projector;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::{
    BoxFuture, CheckReport, FINDINGS_LISTED_MAX, ModelCheck, Progress, STATEMENT_TIMEOUT, Tick,
};
use crate::eventlog::projector::Feeder;
use crate::eventlog::projectors::{self, PgProjection, PgWriter};
use crate::eventlog::store;

/// The scratch tables' suffix.
pub const SCRATCH_SUFFIX: &str = "_verify";
/// The copies' prefix (temporary tables).
const COPY_PREFIX: &str = "verify_live_";
/// Positions the scratch build moves by between progress reports.
pub const BUILD_STEP: u64 = 50_000;
/// Longest a value is shown in a finding.
const VALUE_SHOWN_MAX: usize = 80;

/// The check of one projector's tables.
pub struct TableCheck<P, C, W> {
    pub pool: PgPool,
    pub projector: P,
    pub writer: W,
    pub change: PhantomData<fn() -> C>,
}

impl<P, W> TableCheck<P, P::Change, W>
where
    P: Projector,
{
    pub fn new(pool: PgPool, projector: P, writer: W) -> TableCheck<P, P::Change, W> {
        TableCheck { pool, projector, writer, change: PhantomData }
    }
}

impl<P, W> ModelCheck for TableCheck<P, P::Change, W>
where
    P: Projector + Clone + Send + Sync + 'static,
    W: PgWriter<P::Change> + Clone,
{
    fn name(&self) -> &'static str {
        self.projector.name()
    }

    fn check<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, anyhow::Result<CheckReport>> {
        Box::pin(async move {
            let name = self.projector.name();
            let tables = self.writer.tables();
            drop_scratch(&self.pool, name, tables).await?;
            create_scratch(&self.pool, tables).await?;
            // Its own connection, closed at the end: the copies vanish with it.
            let mut connection = self.pool.acquire().await?.detach();
            let checked = self.compare(&mut connection, progress).await;
            drop_scratch(&self.pool, name, tables).await?;
            checked
        })
    }
}

impl<P, W> TableCheck<P, P::Change, W>
where
    P: Projector + Clone + Send + Sync + 'static,
    W: PgWriter<P::Change> + Clone,
{
    async fn compare(
        &self,
        connection: &mut PgConnection,
        progress: Progress<'_>,
    ) -> anyhow::Result<CheckReport> {
        let name = self.projector.name();
        let tables = self.writer.tables();
        let mut report = CheckReport::new(name);
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        let timeout = format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'");
        sqlx::query(AssertSqlSafe(timeout)).execute(&mut *tx).await?;
        // The first read fixes the snapshot: the copies hold the rows at this position.
        let position = projectors::checkpoint(&mut *tx, name).await?;
        for table in tables {
            let copy = format!("{COPY_PREFIX}{table}");
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS pg_temp.{copy}")))
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TEMP TABLE {copy} AS SELECT * FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.position = Some(position);
        let head = store::head(&self.pool).await?;
        if position > head {
            report.detail = format!("the model is at {position}, past the log's head {head}");
            report.add(format!("{name} position"), report.detail.clone());
            return Ok(report);
        }

        let scratch = PgProjection::scratch(
            self.pool.clone(),
            self.writer.clone(),
            name,
            "verify",
            SCRATCH_SUFFIX,
        );
        let mut feeder =
            Feeder::new(self.projector.clone(), scratch, self.pool.clone(), 1_000).await?;
        while feeder.checkpoint() < position {
            let to = position.min(feeder.checkpoint() + BUILD_STEP);
            feeder.catch_up_to(to).await?;
            progress(Tick { check: name, done: to, total: position });
        }

        let mut rows = 0;
        for table in tables {
            rows += compare_table(connection, table, &mut report).await?;
        }
        report.checked = rows;
        report.detail = format!(
            "{} at its position {position} against the log's rebuild (head {head})",
            tables.join(", ")
        );
        Ok(report)
    }
}

/// Drops the scratch tables and checkpoint of `name`, if any.
async fn drop_scratch(pool: &PgPool, name: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in tables {
        let scratch = format!("{table}{SCRATCH_SUFFIX}");
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {scratch}")))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM projector_checkpoints WHERE projector = $1")
        .bind(format!("{name}:verify"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Prepares the scratch tables of `tables`, empty, shaped like the live ones.
pub async fn create_scratch(pool: &PgPool, tables: &[&str]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in tables {
        let scratch = format!("{table}{SCRATCH_SUFFIX}");
        sqlx::query(AssertSqlSafe(format!("CREATE TABLE {scratch} (LIKE {table} INCLUDING ALL)")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Compares the copy of `table` with its scratch build on the primary key (the whole row
/// for a table without one), adding each differing row to `report`. Returns the rows of
/// the copy.
async fn compare_table(
    connection: &mut PgConnection,
    table: &str,
    report: &mut CheckReport,
) -> anyhow::Result<u64> {
    let key_columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = $1::text::regclass AND i.indisprimary
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    let key = if key_columns.is_empty() {
        "to_jsonb(t)".to_owned()
    } else {
        let pairs: Vec<String> =
            key_columns.iter().map(|column| format!("'{column}', t.\"{column}\"")).collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    };
    let copy = format!("pg_temp.{COPY_PREFIX}{table}");
    let scratch = format!("{table}{SCRATCH_SUFFIX}");
    let mut tx = sqlx::Connection::begin(&mut *connection).await?;
    let timeout = format!("SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'");
    sqlx::query(AssertSqlSafe(timeout)).execute(&mut *tx).await?;
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {copy}")))
        .fetch_one(&mut *tx)
        .await?;
    let differing: Vec<(String, Option<String>, Option<String>, i64)> =
        sqlx::query_as(AssertSqlSafe(format!(
            "WITH l AS (SELECT {key} AS k, to_jsonb(t) AS r FROM {copy} t),
                  s AS (SELECT {key} AS k, to_jsonb(t) AS r FROM {scratch} t)
             SELECT coalesce(l.k, s.k)::text, l.r::text, s.r::text, count(*) OVER ()
             FROM l FULL JOIN s ON l.k = s.k
             WHERE l.r IS DISTINCT FROM s.r
             ORDER BY coalesce(l.k, s.k) LIMIT {FINDINGS_LISTED_MAX}"
        )))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let unlisted =
        differing.first().map_or(0, |row| row.3 as u64).saturating_sub(differing.len() as u64);
    for (key, live, rebuilt) in differing.into_iter().map(|(k, l, s, _)| (k, l, s)) {
        report.add(format!("{table} {}", describe_key(&key)), describe_rows(live, rebuilt));
    }
    report.findings_total += unlisted;
    Ok(rows as u64)
}

/// `{"mission_id": "m1"}` → `mission_id=m1`.
fn describe_key(key: &str) -> String {
    match serde_json::from_str::<Value>(key) {
        Ok(Value::Object(columns)) => columns
            .iter()
            .map(|(column, value)| format!("{column}={}", shown(value)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => key.to_owned(),
    }
}

fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > VALUE_SHOWN_MAX {
        let cut: String = text.chars().take(VALUE_SHOWN_MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// What differs between a live row and the log's: the row missing on one side, or the
/// columns whose values differ.
fn describe_rows(live: Option<String>, rebuilt: Option<String>) -> String {
    let parse = |row: Option<String>| row.and_then(|row| serde_json::from_str::<Value>(&row).ok());
    match (parse(live), parse(rebuilt)) {
        (None, _) => "in the log's rebuild, missing from the live model".to_owned(),
        (_, None) => "in the live model, not in the log's rebuild".to_owned(),
        (Some(Value::Object(live)), Some(Value::Object(rebuilt))) => {
            let mut columns: Vec<&String> = live.keys().chain(rebuilt.keys()).collect();
            columns.sort();
            columns.dedup();
            let differing: Vec<String> = columns
                .into_iter()
                .filter(|column| live.get(*column) != rebuilt.get(*column))
                .map(|column| {
                    let side = |row: &serde_json::Map<String, Value>| {
                        row.get(column).map_or("(none)".to_owned(), shown)
                    };
                    format!("{column}: live {}, log {}", side(&live), side(&rebuilt))
                })
                .collect();
            differing.join("; ")
        }
        _ => "the rows differ".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_differing_row_is_named_by_its_key_and_columns() {
        assert_eq!(describe_key(r#"{"mission_id": "m1", "n": 2}"#), "mission_id=m1 n=2");
        let live = Some(r#"{"a": 1, "status": "failed"}"#.to_owned());
        let rebuilt = Some(r#"{"a": 1, "status": "completed"}"#.to_owned());
        assert_eq!(describe_rows(live, rebuilt), "status: live failed, log completed");
        assert!(describe_rows(None, Some("{}".into())).contains("missing from the live"));
    }
}
