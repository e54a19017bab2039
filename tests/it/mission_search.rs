//! Finding missions: `GET /api/missions` by text, id prefix, error, kind, status set, time
//! and attempts, each sort paged by cursor with nothing repeated or left out, the total, a 400
//! naming each bad parameter, and who may search.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use brain::eventlog::command::execute;
use brain::eventlog::store::EventStore;
use domain::mission::{Mission, MissionCommand, MissionSpec, Priority};
use domain::{EventMetadata, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::{TestEnv, call, make_key, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// What each mission of [`missions`] went through.
#[derive(Clone, Copy)]
enum Fate {
    Queued,
    Completed,
    /// Failed for good on its only attempt.
    Failed,
    /// Failed once, another attempt scheduled.
    Retrying,
    Cancelled,
    /// Failed, then run again by an operator.
    Retried,
}

const FATES: [Fate; 6] =
    [Fate::Queued, Fate::Completed, Fate::Failed, Fate::Retrying, Fate::Cancelled, Fate::Retried];

/// 24 missions: names `load orders <n>` or `sync invoices <n>` (one `load 100% of rows`),
/// descriptions naming team red or blue, kinds `nightly` and `etl` (no worker serves them),
/// each fate four times. Leases and backoffs run for ten minutes, so nothing moves on.
async fn missions(store: &EventStore) -> Vec<StreamId> {
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let mut ids = Vec::new();
    for n in 0..24usize {
        let id = StreamId::from(Uuid::now_v7());
        let name = match n {
            7 => "load 100% of rows".to_owned(),
            n if n % 2 == 0 => format!("load orders {n}"),
            n => format!("sync invoices {n}"),
        };
        let spec = MissionSpec {
            name,
            description: format!("for team {}", if n % 3 == 0 { "red" } else { "blue" }),
            priority: Priority::Normal,
            payload: json!({}),
            agent: if n % 4 < 2 { "nightly".into() } else { "etl".into() },
            attempt_max: 2,
            timeout_ms: 1_000,
            not_before_ms: None,
            budget: None,
            parent: None,
            forked_from: None,
            copied_from: None,
        };
        let run = |command: MissionCommand| {
            let metadata = EventMetadata::new("test", time::OffsetDateTime::now_utc());
            execute::<Mission>(store, &id, metadata, move || command.clone())
        };
        let start = |attempt| MissionCommand::Start {
            worker_id: "w".into(),
            lease_ms: 600_000,
            now_ms: now + attempt,
        };
        let fail = |attempt: u32, error: &str, retryable| MissionCommand::Fail {
            worker_id: "w".into(),
            attempt,
            error: error.into(),
            retryable,
            backoff_ms: 600_000,
            now_ms: now,
        };
        run(MissionCommand::Enqueue { spec, now_ms: now }).await.unwrap();
        match FATES[n % FATES.len()] {
            Fate::Queued => {}
            Fate::Completed => {
                run(start(1)).await.unwrap();
                let complete = MissionCommand::Complete {
                    worker_id: "w".into(),
                    attempt: 1,
                    result: json!({}),
                    now_ms: now,
                };
                run(complete).await.unwrap();
            }
            Fate::Failed => {
                run(start(1)).await.unwrap();
                run(fail(1, &format!("connection refused by db-{n}"), false)).await.unwrap();
            }
            Fate::Retrying => {
                run(start(1)).await.unwrap();
                run(fail(1, "timeout after 30 s", true)).await.unwrap();
            }
            Fate::Cancelled => {
                let cancel =
                    MissionCommand::Cancel { reason: "r".into(), by: "u".into(), now_ms: now };
                run(cancel).await.unwrap();
            }
            Fate::Retried => {
                run(start(1)).await.unwrap();
                run(fail(1, "connection refused by the cache", false)).await.unwrap();
                run(MissionCommand::Retry { by: "u".into(), reason: String::new(), now_ms: now })
                    .await
                    .unwrap();
            }
        }
        ids.push(id);
    }
    ids
}

/// A serve whose list holds [`missions`]; answers its address and every row.
async fn listed(env: &TestEnv) -> (SocketAddr, tokio_util::sync::CancellationToken, Vec<Value>) {
    let (addr, shutdown, _task) = serve_in_process(services(env, &redis_url())).await;
    let (store, _committer) = env.store();
    missions(&store).await;
    let head = env.head().await;
    wait_until("the list to catch up", WAIT, || async {
        get(addr, "/api/missions?limit=1").await.1["position"] == head
    })
    .await;
    let (status, page) = get(addr, "/api/missions?limit=200").await;
    assert_eq!(status, 200, "{page}");
    let rows = page["missions"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 24);
    assert_eq!((page["total"].as_u64(), page["total_exact"].as_bool()), (Some(24), Some(true)));
    (addr, shutdown, rows)
}

fn ids_of(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|row| row["mission_id"].as_str().unwrap().to_owned()).collect()
}

/// Every mission matching `query`, over as many pages as it takes; checks the total.
async fn found(addr: SocketAddr, query: &str) -> BTreeSet<String> {
    let (status, page) = get(addr, &format!("/api/missions?limit=200&{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    let rows = page["missions"].as_array().unwrap();
    assert_eq!(page["total"].as_u64(), Some(rows.len() as u64), "{query}: the total");
    assert!(page["next_cursor"].is_null());
    ids_of(rows)
}

fn text(row: &Value, field: &str) -> String {
    row[field].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn missions_are_found_by_text_id_error_kind_status_time_and_attempts() {
    let env = TestEnv::new().await;
    let (addr, shutdown, rows) = listed(&env).await;
    let expect = |keep: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        ids_of(&rows.iter().filter(|row| keep(row)).cloned().collect::<Vec<_>>())
    };

    // Text: a phrase of the name or of the description, any case; `%` is only itself.
    let load = expect(&|row| text(row, "name").starts_with("load"));
    assert_eq!(load.len(), 13);
    assert_eq!(found(addr, "q=LOAD").await, load);
    assert_eq!(found(addr, "q=load%20orders").await.len(), 12);
    assert_eq!(found(addr, "q=team%20red").await.len(), 8);
    assert_eq!(found(addr, "q=%20100%25%20").await.len(), 1);
    assert!(found(addr, "q=1%25o").await.is_empty(), "% matches only a percent sign");
    assert!(found(addr, "q=s_nc").await.is_empty(), "_ matches only an underscore");

    // The id, whole or its start (UUIDv7: missions of the same moment share a prefix).
    let id = text(&rows[5], "mission_id");
    assert_eq!(found(addr, &format!("q={id}")).await, BTreeSet::from([id.clone()]));
    let by_prefix = found(addr, &format!("q={}", &id[..8].to_uppercase())).await;
    assert!(by_prefix.contains(&id));
    assert!(by_prefix.iter().all(|other| other.starts_with(&id[..8])));

    // The last error, and each row says it, with its attempts, queue wait and run time.
    let refused = found(addr, "error=CONNECTION%20refused").await;
    assert_eq!(refused, expect(&|row| text(row, "error").contains("connection refused")));
    assert_eq!(refused.len(), 8, "the failed and the retried keep their last error");
    let completed: Vec<&Value> = rows.iter().filter(|row| row["status"] == "completed").collect();
    assert_eq!(completed.len(), 4);
    for row in completed {
        assert!(row["queue_wait_ms"].as_i64().is_some_and(|ms| ms >= 0), "{row}");
        assert!(row["run_ms"].as_i64().is_some_and(|ms| ms >= 0), "{row}");
        assert!(row["started_at"].is_string() && row["finished_at"].is_string(), "{row}");
        assert_eq!((row["attempt"].as_i64(), row["error"].is_null()), (Some(1), true));
    }
    for row in rows.iter().filter(|row| row["status"] == "queued") {
        assert!(row["run_ms"].is_null() && row["finished_at"].is_null(), "{row}");
    }
    let retried: Vec<&Value> =
        rows.iter().filter(|row| text(row, "error").contains("the cache")).collect();
    assert_eq!(retried.len(), 4);
    for row in retried {
        // Run again: a new run, not started yet, its attempts from zero.
        assert_eq!((row["status"].as_str(), row["attempt"].as_i64()), (Some("queued"), Some(0)));
        assert!(row["started_at"].is_null() && row["queue_wait_ms"].is_null(), "{row}");
    }

    // Kind, under its name and its older one; status sets; attempts.
    let nightly = expect(&|row| row["agent"] == "nightly");
    assert_eq!(found(addr, "kind=nightly").await, nightly);
    assert_eq!(found(addr, "agent=nightly").await, nightly);
    let ended = expect(&|row| row["status"] == "failed" || row["status"] == "cancelled");
    assert_eq!(ended.len(), 8);
    assert_eq!(found(addr, "status=failed,cancelled").await, ended);
    assert_eq!(found(addr, "status=failed").await.len(), 4);
    assert_eq!(
        found(addr, "min_attempts=1").await,
        expect(&|row| row["attempt"].as_i64() >= Some(1))
    );
    assert_eq!(
        found(addr, "status=failed,cancelled&kind=etl&q=invoices").await,
        expect(&|row| ended.contains(&text(row, "mission_id"))
            && row["agent"] == "etl"
            && text(row, "name").contains("invoices"))
    );

    // Time: enqueued at or after `since`, before `until`.
    let mut times: Vec<String> = rows.iter().map(|row| text(row, "enqueued_at")).collect();
    times.sort();
    let (since, until) = (&times[6], &times[18]);
    let parse = |at: &str| {
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let window = expect(&|row| {
        let at = parse(&text(row, "enqueued_at"));
        at >= parse(since) && at < parse(until)
    });
    let encoded = |at: &str| at.replace('+', "%2B");
    let query = format!("since={}&until={}", encoded(since), encoded(until));
    assert_eq!(found(addr, &query).await, window);
    assert!(!window.is_empty());
    shutdown.cancel();
}

/// The key a row sorts on, as a number, for checking the order pages come in.
fn sort_key(row: &Value, sort: &str, order: &str) -> i128 {
    match sort {
        "updated" => {
            let at = time::OffsetDateTime::parse(
                row["updated_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            at.unix_timestamp_nanos()
        }
        // No run time comes last, whichever way.
        "duration" => match (row["run_ms"].as_i64(), order) {
            (Some(ms), _) => i128::from(ms),
            (None, "desc") => -1,
            (None, _) => i128::MAX,
        },
        _ => parse_enqueued(row),
    }
}

fn parse_enqueued(row: &Value) -> i128 {
    time::OffsetDateTime::parse(
        row["enqueued_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp_nanos()
}

#[tokio::test]
async fn every_sort_pages_without_repeating_or_missing_a_mission() {
    let env = TestEnv::new().await;
    let (addr, shutdown, rows) = listed(&env).await;
    let all = ids_of(&rows);
    for sort in ["enqueued", "updated", "duration"] {
        for order in ["desc", "asc"] {
            for filter in ["", "&q=load", "&status=failed,cancelled,queued"] {
                let base = format!("/api/missions?limit=4&sort={sort}&order={order}{filter}");
                let (mut seen, mut keys) = (Vec::new(), Vec::new());
                let mut path = base.clone();
                for _ in 0..10 {
                    let (status, page) = get(addr, &path).await;
                    assert_eq!(status, 200, "{path}: {page}");
                    for row in page["missions"].as_array().unwrap() {
                        seen.push(text(row, "mission_id"));
                        keys.push((sort_key(row, sort, order), text(row, "mission_id")));
                    }
                    match page["next_cursor"].as_str() {
                        Some(cursor) => path = format!("{base}&cursor={cursor}"),
                        None => break,
                    }
                }
                let unique: BTreeSet<String> = seen.iter().cloned().collect();
                assert_eq!(unique.len(), seen.len(), "{base}: a mission came twice");
                let want =
                    if filter.is_empty() { all.clone() } else { found(addr, &filter[1..]).await };
                assert_eq!(unique, want, "{base}: every mission, once");
                let mut sorted = keys.clone();
                sorted.sort();
                if order == "desc" {
                    sorted.reverse();
                }
                // Enqueued sorts by log position: its times may tie, never run backwards.
                if sort == "enqueued" {
                    let times: Vec<i128> = keys.iter().map(|key| key.0).collect();
                    let mut in_order = times.clone();
                    in_order.sort();
                    if order == "desc" {
                        in_order.reverse();
                    }
                    assert_eq!(times, in_order, "{base}");
                } else {
                    assert_eq!(keys, sorted, "{base}: in (key, id) order");
                }
            }
        }
    }
    // A cursor is read only under the sort and order that gave it.
    let (_, page) = get(addr, "/api/missions?limit=4&sort=updated").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    for other in ["sort=duration", "sort=updated&order=asc", ""] {
        let (status, body) = get(addr, &format!("/api/missions?{other}&cursor={cursor}")).await;
        assert_eq!((status, body["error"]["field"].as_str()), (400, Some("cursor")), "{body}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_bad_search_parameter_is_a_400_naming_it() {
    let env = TestEnv::new().await;
    let (addr, shutdown, _task) = serve_in_process(services(&env, &redis_url())).await;
    let long = "x".repeat(201);
    for (query, field) in [
        ("status=failed,lost", "status"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("until=tomorrow", "until"),
        (&format!("q={long}") as &str, "q"),
        ("q=ab", "q"),
        (&format!("error={long}"), "error"),
        ("sort=name", "sort"),
        ("order=sideways", "order"),
        ("min_attempts=lots", "min_attempts"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=enqueued.desc.1.%2F..%2Fetc", "cursor"),
        ("kind=nightly&agent=etl", "kind"),
        ("q=%00load", "q"),
    ] {
        let (status, body) = get(addr, &format!("/api/missions?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"].as_str(), Some(field), "{query}: {body}");
    }
    let (status, body) = get(addr, "/api/missions?name=load").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    shutdown.cancel();
}

#[tokio::test]
async fn searching_needs_a_key_that_reads_missions_from_no_other_origin() {
    let env = TestEnv::new().await;
    let (addr, shutdown, _rows) = listed(&env).await;
    let path = "/api/missions?q=load&status=failed,queued";
    let (status, body) = call(addr, "GET", path, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));

    // Another principal: without missions.read, refused; with it, the same missions as
    // anyone who reads missions (a mission is visible to every such key, whoever enqueued it).
    let agents_only =
        make_key(addr, json!({ "name": "agents only", "permissions": ["agents.read"] })).await;
    let viewer = make_key(addr, json!({ "name": "viewer", "role": "viewer" })).await;
    wait_until("the new keys to be known", WAIT, || async {
        call(addr, "GET", "/api/missions", Some(&viewer)).await.0 == 200
            && call(addr, "GET", "/api/missions", Some(&agents_only)).await.0 != 401
    })
    .await;
    let (status, body) = call(addr, "GET", path, Some(&agents_only)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, seen) = call(addr, "GET", path, Some(&viewer)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["missions"], get(addr, path).await.1["missions"]);
    assert!(seen["total"].as_u64() > Some(0));

    // A page of another site cannot read the list with the key it does not have, nor with
    // one the browser would send along.
    let response = crate::support::client()
        .get(format!("http://{addr}{path}"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_refused", "{body}");
    shutdown.cancel();
}

#[tokio::test]
async fn the_total_is_exact_up_to_its_bound_then_says_more_than_it() {
    let env = TestEnv::new().await;
    let (addr, shutdown, _task) = serve_in_process(services(&env, &redis_url())).await;
    // 1,005 missions due tomorrow, so that no worker moves them meanwhile.
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let not_before = tomorrow.format(&time::format_description::well_known::Rfc3339).unwrap();
    for chunk in [0..1_000, 1_000..1_005] {
        let missions: Vec<Value> = chunk
            .map(|n| json!({ "name": format!("bulk {n:04}"), "not_before": not_before }))
            .collect();
        let body = json!({ "missions": missions }).to_string();
        let (status, answer) =
            crate::missions_api::post(addr, "/api/missions/enqueue/batch", &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let head = env.head().await;
    wait_until("the list to catch up", WAIT, || async {
        get(addr, "/api/missions?limit=1").await.1["position"] == head
    })
    .await;

    let (status, page) = get(addr, "/api/missions?q=bulk&limit=10").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["total"].as_u64(), page["total_exact"].as_bool()), (Some(1_000), Some(false)));
    assert!(page["next_cursor"].is_string());
    // Below the bound, exact on every page.
    let (_, page) = get(addr, "/api/missions?q=bulk%2000&limit=10").await;
    assert_eq!((page["total"].as_u64(), page["total_exact"].as_bool()), (Some(100), Some(true)));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = get(addr, &format!("/api/missions?q=bulk%2000&limit=10&cursor={cursor}")).await;
    assert_eq!((next["total"].as_u64(), next["total_exact"].as_bool()), (Some(100), Some(true)));
    let (_, page) = get(addr, "/api/missions?q=bulk%20100&status=pending").await;
    assert_eq!((page["total"].as_u64(), page["total_exact"].as_bool()), (Some(5), Some(true)));
    assert_eq!(page["missions"].as_array().unwrap().len(), 5);
    shutdown.cancel();
}
