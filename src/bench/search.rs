//! `brain bench search`: how fast `GET /api/missions` finds missions in a large list. Fills
//! the `mission_list` read model of a database of its own (`brain_bench_search`) with
//! `--missions` rows, then times a mix of searches (a word of the name, a phrase, the start
//! of an id, a word of the last error, a status set since a date, each sort, a second page)
//! through the same function the route calls (page, total and checkpoint in one snapshot; the
//! HTTP layer is left out), and prints each one's p50 and p99 and the plan of the slowest.
//!
//! The rows are written straight into the table by one `generate_series` statement per
//! chunk, not projected from a log: a search reads only the table, and a million missions'
//! events would take the bench far longer to append and project than to measure. Names,
//! descriptions, errors, statuses, kinds and times are spread the way a busy deployment's
//! are (ids are UUIDv7-shaped, so an id's prefix matches the missions of the same moments).

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::{ConnectOptions, PgPool};
use time::OffsetDateTime;

use super::{histogram, ms_at, ms_max, with_database};
use crate::config::DATABASE_URL_DEFAULT;
use crate::eventlog::db;
use crate::missions::search::{self, Order, Search, Sort};

#[derive(Debug, clap::Args)]
pub struct SearchBench {
    /// PostgreSQL server to use; the bench creates its own database on it.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT)]
    database_url: String,
    /// Missions in the list.
    #[arg(long, default_value_t = 1_000_000)]
    missions: u64,
    /// Times each search of the mix is run (after one unmeasured round that warms the cache).
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Rows per page, as a client asks for them.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Keep the filled database (`brain_bench_search`) for another run instead of dropping it.
    #[arg(long)]
    keep: bool,
}

/// The database the list is filled in.
const SEARCH_DATABASE: &str = "brain_bench_search";
/// Rows written per statement while filling.
const FILL_CHUNK: u64 = 100_000;
/// Ids sampled for the id-prefix searches.
const SAMPLED_IDS: i64 = 64;
/// The p99 the bench aims under (the target on this machine).
const TARGET_P99_MS: f64 = 100.0;

/// One search of the mix: a name, and the search for round `n` (its words vary by round).
struct Case {
    name: &'static str,
    make: Box<dyn Fn(u32) -> Search + Send + Sync>,
    /// Run it for the page after the first (its cursor).
    second_page: bool,
}

const VERBS: [&str; 20] = [
    "load",
    "sync",
    "index",
    "migrate",
    "backup",
    "report",
    "deploy",
    "review",
    "scan",
    "build",
    "train",
    "export",
    "import",
    "audit",
    "compress",
    "render",
    "notify",
    "clean",
    "refactor",
    "summarise",
];
const NOUNS: [&str; 20] = [
    "customers",
    "orders",
    "invoices",
    "logs",
    "images",
    "metrics",
    "tickets",
    "payments",
    "users",
    "repos",
    "models",
    "events",
    "emails",
    "docs",
    "tables",
    "caches",
    "queues",
    "builds",
    "alerts",
    "shipments",
];

impl SearchBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let database_url = with_database(&self.database_url, SEARCH_DATABASE)?;
        let pool = db::connect(&database_url, 4).await?;
        db::migrate(&pool).await?;
        let have: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mission_list").fetch_one(&pool).await?;
        if (have as u64) < self.missions {
            let started = Instant::now();
            // A connection of its own, whose minute-long statements are not logged as slow.
            let options: sqlx::postgres::PgConnectOptions =
                database_url.parse().context("DATABASE_URL")?;
            let mut connection = options.disable_statement_logging().connect().await?;
            fill(&mut connection, have as u64, self.missions).await?;
            eprintln!(
                "bench: filled {} missions in {:.1} s",
                self.missions - have as u64,
                started.elapsed().as_secs_f64()
            );
        }
        let size: String =
            sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('mission_list'))")
                .fetch_one(&pool)
                .await?;
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mission_list").fetch_one(&pool).await?;
        println!("mission_list: {rows} missions, {size} with its indexes");

        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT mission_id FROM mission_list TABLESAMPLE SYSTEM (1) REPEATABLE (7) LIMIT $1",
        )
        .bind(SAMPLED_IDS)
        .fetch_all(&pool)
        .await?;
        anyhow::ensure!(!ids.is_empty(), "the list is empty");
        let cases = cases(ids, self.limit);

        // One unmeasured round: a steady server's cache holds what searches read.
        for case in &cases {
            run_case(&pool, case, 0).await?;
        }
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            "search (each {rounds}x)".replace("{rounds}", &self.rounds.to_string()),
            "p50 ms",
            "p99 ms",
            "max ms",
            "total"
        );
        let mut all = histogram();
        let mut slowest: Option<(f64, &Case, u32)> = None;
        for case in &cases {
            let mut times = histogram();
            let mut total = String::new();
            for round in 1..=self.rounds {
                let (took, page) = run_case(&pool, case, round).await?;
                let micros = took.as_micros() as u64;
                let _ = times.record(micros);
                let _ = all.record(micros);
                let ms = micros as f64 / 1_000.0;
                if slowest.as_ref().is_none_or(|(worst, ..)| ms > *worst) {
                    slowest = Some((ms, case, round));
                }
                total = format!("{}{}", if page.total_exact { "" } else { ">" }, page.total);
            }
            println!(
                "{:<44} {:>9.1} {:>9.1} {:>9.1} {:>9}",
                case.name,
                ms_at(&times, 0.5),
                ms_at(&times, 0.99),
                ms_max(&times),
                total
            );
        }
        let p99 = ms_at(&all, 0.99);
        println!(
            "all {} searches: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (target p99 < {TARGET_P99_MS} ms: {})",
            all.len(),
            ms_at(&all, 0.5),
            ms_max(&all),
            if p99 < TARGET_P99_MS { "met" } else { "MISSED" }
        );
        if let Some((ms, case, round)) = slowest {
            println!("\nslowest: {} ({ms:.1} ms), as PostgreSQL runs it now:", case.name);
            let mut search = (case.make)(round);
            if case.second_page {
                search.after = search::search(&pool, &search).await?.next;
            }
            for line in search::explain(&pool, &search).await? {
                println!("  {line}");
            }
        }
        pool.close().await;
        if self.keep {
            eprintln!("bench: kept database {SEARCH_DATABASE}");
        } else {
            sqlx::Postgres::force_drop_database(&database_url)
                .await
                .context("drop bench database")?;
        }
        Ok(())
    }
}

/// Runs one case for `round`; times the search (and only the second page's, for a case
/// that pages).
async fn run_case(
    pool: &PgPool,
    case: &Case,
    round: u32,
) -> anyhow::Result<(Duration, search::Page)> {
    let mut search = (case.make)(round);
    if case.second_page {
        search.after = search::search(pool, &search).await?.next;
        anyhow::ensure!(search.after.is_some(), "{}: no second page", case.name);
    }
    let started = Instant::now();
    let page = search::search(pool, &search).await?;
    Ok((started.elapsed(), page))
}

fn cases(ids: Vec<String>, limit: u32) -> Vec<Case> {
    let base = Search { limit, ..Search::default() };
    let week_ago = OffsetDateTime::now_utc() - time::Duration::days(7);
    let pick = |list: &'static [&'static str], n: u32| list[n as usize % list.len()].to_owned();
    let mut cases: Vec<Case> = Vec::new();
    let mut case = |name: &'static str, make: Box<dyn Fn(u32) -> Search + Send + Sync>| {
        cases.push(Case { name, make, second_page: false });
    };
    let b = base.clone();
    case(
        "q=<verb> (5% of names)",
        Box::new(move |n| Search { text: Some(pick(&VERBS, n)), ..b.clone() }),
    );
    let b = base.clone();
    case(
        "q=<verb noun> (0.25%)",
        Box::new(move |n| Search {
            text: Some(format!("{} {}", pick(&VERBS, n), pick(&NOUNS, n / 20 + n))),
            ..b.clone()
        }),
    );
    let b = base.clone();
    case(
        "q=<noun number> (mostly no match)",
        Box::new(move |n| Search {
            text: Some(format!("{} {}", pick(&NOUNS, n), 1_000 + n * 37 % 9_000)),
            ..b.clone()
        }),
    );
    let b = base.clone();
    case(
        "q=of team <n> (2-22% of descriptions)",
        Box::new(move |n| Search { text: Some(format!("of team {}", n % 50)), ..b.clone() }),
    );
    let b = base.clone();
    case(
        "q=<first 8 of an id>",
        Box::new(move |n| Search {
            text: Some(ids[n as usize % ids.len()][..8].to_owned()),
            ..b.clone()
        }),
    );
    let b = base.clone();
    case("q=<no match>", Box::new(move |_| Search { text: Some("zqxjv".into()), ..b.clone() }));
    let b = base.clone();
    case(
        "error=<word>",
        Box::new(move |n| {
            let words = ["refused", "timeout after", "status 137", "429", "budget_exceeded"];
            Search { error: Some(words[n as usize % words.len()].into()), ..b.clone() }
        }),
    );
    let b = base.clone();
    case(
        "status=failed,cancelled&since=<7 days>",
        Box::new(move |_| Search {
            statuses: vec!["failed".into(), "cancelled".into()],
            since: Some(week_ago),
            ..b.clone()
        }),
    );
    let b = base.clone();
    case(
        "status=failed&min_attempts=3&kind=coder",
        Box::new(move |_| Search {
            statuses: vec!["failed".into()],
            min_attempts: Some(3),
            kind: Some("coder".into()),
            ..b.clone()
        }),
    );
    let b = base.clone();
    case(
        "status=queued,running,pending",
        Box::new(move |_| Search {
            statuses: vec!["queued".into(), "running".into(), "pending".into()],
            ..b.clone()
        }),
    );
    let b = base.clone();
    case("sort=updated", Box::new(move |_| Search { sort: Sort::Updated, ..b.clone() }));
    let b = base.clone();
    case("sort=duration", Box::new(move |_| Search { sort: Sort::Duration, ..b.clone() }));
    let b = base.clone();
    case(
        "sort=duration&order=asc&status=completed",
        Box::new(move |_| Search {
            sort: Sort::Duration,
            order: Order::Asc,
            statuses: vec!["completed".into()],
            ..b.clone()
        }),
    );
    let b = base.clone();
    case(
        "sort=enqueued&order=asc&kind=ops",
        Box::new(move |_| Search { order: Order::Asc, kind: Some("ops".into()), ..b.clone() }),
    );
    let b = base.clone();
    case(
        "since..until (one hour, 3 days ago)",
        Box::new(move |n| {
            let since = week_ago + time::Duration::days(4) + time::Duration::minutes(i64::from(n));
            Search {
                since: Some(since),
                until: Some(since + time::Duration::hours(1)),
                ..b.clone()
            }
        }),
    );
    let b = base;
    cases.push(Case {
        name: "q=<verb>&sort=updated, second page",
        make: Box::new(move |n| Search {
            text: Some(pick(&VERBS, n)),
            sort: Sort::Updated,
            ..b.clone()
        }),
        second_page: true,
    });
    cases
}

/// Writes missions `from + 1 ..= to` into `mission_list`, a chunk per statement, then
/// refreshes the planner's statistics.
async fn fill(connection: &mut sqlx::PgConnection, from: u64, to: u64) -> anyhow::Result<()> {
    let verbs = VERBS.map(str::to_owned).to_vec();
    let nouns = NOUNS.map(str::to_owned).to_vec();
    let mut next = from + 1;
    while next <= to {
        let last = (next + FILL_CHUNK - 1).min(to);
        sqlx::query(FILL_SQL)
            .bind(next as i64)
            .bind(last as i64)
            .bind(to as i64)
            .bind(&verbs)
            .bind(&nouns)
            .execute(&mut *connection)
            .await
            .context("fill mission_list")?;
        eprintln!("bench: {last} of {to} missions");
        next = last + 1;
    }
    sqlx::query("VACUUM ANALYZE mission_list").execute(connection).await?;
    Ok(())
}

/// Missions `$1..=$2` of `$3`, enqueued evenly over the last 30 days. Each row's numbers come
/// from hashes of its index, so a refill writes the same list. Statuses: 90% completed, 3%
/// failed, 2% cancelled, 2% queued, 1% each running, pending and suspended. Queue waits up
/// to 5 s, run times from 0.2 s to 10 min (most short).
const FILL_SQL: &str = "
WITH n AS (
    SELECT i,
           ('x' || substr(md5(i::text), 1, 8))::bit(32)::bigint / 4294967296.0 AS r1,
           ('x' || substr(md5(i::text), 9, 8))::bit(32)::bigint / 4294967296.0 AS r2,
           ('x' || substr(md5(i::text), 17, 8))::bit(32)::bigint / 4294967296.0 AS r3,
           md5(i::text || 'id') AS h,
           now() - interval '30 days' + (interval '30 days' * i / $3) AS enqueued_at
    FROM generate_series($1::int8, $2::int8) AS i
), s AS (
    SELECT n.*,
           CASE WHEN r1 < 0.90 THEN 'completed' WHEN r1 < 0.93 THEN 'failed'
                WHEN r1 < 0.95 THEN 'cancelled' WHEN r1 < 0.97 THEN 'queued'
                WHEN r1 < 0.98 THEN 'running' WHEN r1 < 0.99 THEN 'pending'
                ELSE 'suspended' END AS status,
           interval '1 ms' * floor(r2 * 5000) AS wait,
           interval '1 ms' * floor(200 + r3 * r3 * r3 * 600000) AS run,
           CASE (i % 6)
               WHEN 0 THEN 'connection refused: 10.0.' || (i % 256) || '.' || (i % 200) || ':5432'
               WHEN 1 THEN 'timeout after ' || (60 + i % 600) || ' s waiting for the model'
               WHEN 2 THEN 'tool `shell` exited with status ' || (1 + i % 140)
               WHEN 3 THEN 'budget_exceeded: the call could pass the mission''s budget'
               WHEN 4 THEN 'lease expired: the worker stopped renewing it'
               ELSE 'the model answered 429: rate limited by the provider' END AS error
    FROM n
), t AS (
    SELECT s.*,
           status NOT IN ('queued', 'pending') AND NOT (status = 'cancelled' AND r2 < 0.5)
               AS started,
           status IN ('completed', 'failed', 'cancelled') AS finished,
           CASE WHEN status = 'failed' THEN 3 WHEN status = 'completed' AND r3 > 0.95 THEN 2
                WHEN status IN ('queued', 'pending') THEN 0 ELSE 1 END AS attempt
    FROM s
)
INSERT INTO mission_list (mission_id, name, description, priority, agent, enqueued_by, status,
                          attempt, enqueued_position, enqueued_at, ready_at, started_at,
                          finished_at, run_ms, last_error, updated_at, last_position)
SELECT substr(lpad(to_hex((extract(epoch FROM enqueued_at) * 1000)::bigint), 12, '0'), 1, 8)
           || '-' || substr(lpad(to_hex((extract(epoch FROM enqueued_at) * 1000)::bigint), 12, '0'), 9, 4)
           || '-7' || substr(h, 1, 3) || '-8' || substr(h, 4, 3) || '-' || substr(h, 7, 12),
       ($4::text[])[1 + i % 20] || ' ' || ($5::text[])[1 + (i / 20) % 20] || ' ' || (i % 10000),
       'Nightly job for region ' || (i % 10) || ': ' || ($4::text[])[1 + (i / 7) % 20] || ' the '
           || ($5::text[])[1 + (i / 11) % 20] || ' of team ' || (i % 50),
       (ARRAY['low', 'normal', 'normal', 'normal', 'high', 'critical'])[1 + i % 6],
       (ARRAY['echo', 'coder', 'ops', 'architect', 'supervisor'])[1 + i % 5],
       'key:' || lpad(to_hex(i % 20), 16, '0'),
       status, attempt, i * 8, enqueued_at, enqueued_at,
       CASE WHEN started THEN enqueued_at + wait END,
       CASE WHEN finished THEN enqueued_at + wait + CASE WHEN started THEN run ELSE interval '0' END END,
       CASE WHEN finished AND started THEN mission_list_ms(enqueued_at + wait, enqueued_at + wait + run) END,
       CASE WHEN status = 'failed' OR attempt > 1 OR status = 'pending' THEN error END,
       enqueued_at + wait + CASE WHEN started THEN run ELSE interval '0' END,
       i * 8 + 7
FROM t";
