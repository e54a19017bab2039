//! The log's own shape, checked in SQL: every position 1..head holds an event and none lies
//! past the head row ([`positions`], in pages of [`POSITIONS_PAGE`] positions along the
//! primary key), and each stream's versions are 1..n ([`stream_versions`], one grouped
//! query: PostgreSQL spills to disk, the process holds at most the listed findings).

use sqlx::PgPool;

use super::{CheckReport, FINDINGS_LISTED_MAX, Progress, STATEMENT_TIMEOUT, Tick};

/// Positions one query of [`positions`] counts.
pub const POSITIONS_PAGE: i64 = 100_000;

/// A read-only transaction (one snapshot of the log) whose statements may run
/// [`STATEMENT_TIMEOUT`].
pub async fn patient(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Positions 1..head without a hole, and the head row consistent with the events: the
/// head and the last event's position are read in one statement, so appends going on do
/// not count as findings.
pub async fn positions(pool: &PgPool, progress: Progress<'_>) -> anyhow::Result<CheckReport> {
    let mut report = CheckReport::new("positions");
    let mut connection = patient(pool).await?;
    let (head, last): (i64, Option<i64>) =
        sqlx::query_as("SELECT h.position, (SELECT max(global_position) FROM events) FROM head h")
            .fetch_one(&mut *connection)
            .await?;
    report.position = Some(head as u64);
    report.detail = format!("positions 1..={head}");
    if let Some(last) = last
        && last > head
    {
        let past: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position > $1")
                .bind(head)
                .fetch_one(&mut *connection)
                .await?;
        report.add(
            format!("head {head}"),
            format!("the head row says {head} but events go on to {last} ({past} past it)"),
        );
    }
    let mut from = 1;
    while from <= head {
        let to = head.min(from + POSITIONS_PAGE - 1);
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE global_position BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&mut *connection)
        .await?;
        if held < to - from + 1 {
            // Each hole as a range: the gaps between consecutive positions, the page's
            // bounds standing in for its neighbours.
            let holes: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT p + 1, n - 1 FROM (
                     SELECT p, lead(p) OVER (ORDER BY p) AS n FROM (
                         SELECT global_position AS p FROM events
                         WHERE global_position BETWEEN $1 AND $2
                         UNION ALL SELECT $1 - 1 UNION ALL SELECT $2 + 1) bounded) gaps
                 WHERE n > p + 1 ORDER BY p LIMIT $3",
            )
            .bind(from)
            .bind(to)
            .bind(FINDINGS_LISTED_MAX as i64 + 1)
            .fetch_all(&mut *connection)
            .await?;
            for (first, last) in holes {
                let key = if first == last {
                    format!("position {first}")
                } else {
                    format!("positions {first}..={last}")
                };
                report.add(key, format!("no event ({} missing)", last - first + 1));
            }
        }
        report.checked += (to - from + 1) as u64;
        progress(Tick { check: "positions", done: to as u64, total: head as u64 });
        from = to + 1;
    }
    connection.commit().await?;
    Ok(report)
}

/// Each stream's versions are 1..n up to the head: with `(stream_type, stream_id, version)`
/// unique, a stream whose least version is 1 and greatest its count has no hole.
pub async fn stream_versions(pool: &PgPool) -> anyhow::Result<CheckReport> {
    let mut report = CheckReport::new("stream_versions");
    let mut connection = patient(pool).await?;
    let head: i64 =
        sqlx::query_scalar("SELECT position FROM head").fetch_one(&mut *connection).await?;
    report.position = Some(head as u64);
    let streams: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT stream_type, stream_id FROM events
                               WHERE global_position <= $1) s",
    )
    .bind(head)
    .fetch_one(&mut *connection)
    .await?;
    let broken: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT stream_type, stream_id, count(*), min(version), max(version), count(*) OVER ()
         FROM events WHERE global_position <= $1
         GROUP BY stream_type, stream_id
         HAVING min(version) <> 1 OR max(version) <> count(*)
         ORDER BY stream_type, stream_id LIMIT $2",
    )
    .bind(head)
    .bind(FINDINGS_LISTED_MAX as i64)
    .fetch_all(&mut *connection)
    .await?;
    connection.commit().await?;
    report.checked = streams as u64;
    report.detail = format!("{streams} streams up to position {head}");
    let total = broken.first().map_or(0, |row| row.5 as u64);
    for (stream_type, stream_id, count, least, greatest, _) in broken {
        report.add(
            format!("stream {stream_type}/{stream_id}"),
            format!("{count} events with versions {least}..={greatest}, not 1..={count}"),
        );
    }
    report.findings_total = total;
    Ok(report)
}
