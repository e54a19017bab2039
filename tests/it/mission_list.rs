//! The `mission_list` read model: fed live it matches every mission's folded state, a
//! rebuild gives the same rows, and `GET /api/missions` lists, filters and pages it.

use std::time::Duration;

use brain::eventlog::command::{execute, load};
use brain::eventlog::projector::{Runner, RunnerConfig};
use brain::eventlog::projectors::{PgProjection, rebuild};
use brain::eventlog::relay::{Relay, RelayConfig};
use brain::eventlog::store::EventStore;
use brain::missions::list::MissionListWriter;
use domain::mission::{Mission, MissionCommand, MissionSpec, Priority};
use domain::{EventMetadata, StreamId};
use projections::mission_list::{MissionList, NAME};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::{TestEnv, wait_until};

const WAIT: Duration = Duration::from_secs(30);

type Row = (String, String, Option<i32>, Option<String>);

async fn rows(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as("SELECT mission_id, status, attempt, priority FROM mission_list ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// Every column of every row, as JSON text.
async fn whole_rows(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT to_jsonb(m)::text FROM mission_list m ORDER BY mission_id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

fn metadata() -> EventMetadata {
    EventMetadata::new("test", time::OffsetDateTime::now_utc())
}

/// Missions in every state: queued, running, cancelled, pending (failed once), failed.
/// Leases and backoffs run for ten minutes from now, so that a server's supervisor, when one
/// runs, leaves them as they are.
async fn missions_in_every_state(store: &EventStore) -> Vec<StreamId> {
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let mut ids = Vec::new();
    for n in 0..25u32 {
        let id = StreamId::from(Uuid::now_v7());
        let priority =
            [Priority::Low, Priority::Normal, Priority::High, Priority::Critical][n as usize % 4];
        let spec = MissionSpec {
            name: format!("mission {n}"),
            description: String::new(),
            priority,
            payload: json!({}),
            agent: if n % 2 == 0 { "coder".into() } else { "ops".into() },
            attempt_max: 1 + n % 2,
            timeout_ms: 1_000,
            not_before_ms: None,
            budget: None,
            parent: None,
            forked_from: None,
            copied_from: None,
        };
        let run = |command: MissionCommand| {
            execute::<Mission>(store, &id, metadata(), move || command.clone())
        };
        run(MissionCommand::Enqueue { spec, now_ms: now }).await.unwrap();
        if n % 5 >= 1 {
            run(MissionCommand::Start { worker_id: "w".into(), lease_ms: 600_000, now_ms: now })
                .await
                .unwrap();
        }
        if n % 5 == 2 {
            run(MissionCommand::Cancel { reason: "r".into(), by: "u".into(), now_ms: now })
                .await
                .unwrap();
        }
        if n % 5 >= 3 {
            let fail = MissionCommand::Fail {
                worker_id: "w".into(),
                attempt: 1,
                error: "e".into(),
                retryable: true,
                backoff_ms: 600_000,
                now_ms: now,
            };
            run(fail).await.unwrap();
        }
        ids.push(id);
    }
    ids
}

async fn expected(store: &EventStore, ids: &[StreamId]) -> Vec<Row> {
    let mut expected = Vec::new();
    for id in ids {
        let (mission, _) = load::<Mission>(store, id).await.unwrap();
        let priority = serde_json::to_value(mission.spec.unwrap().priority).unwrap();
        expected.push((
            id.to_string(),
            mission.status.to_string(),
            Some(mission.attempt as i32),
            priority.as_str().map(str::to_owned),
        ));
    }
    expected.sort();
    expected
}

#[tokio::test]
async fn the_mission_list_matches_every_missions_state_live_and_after_a_rebuild() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let relay_stop = CancellationToken::new();
    let relay = Relay::new(
        env.pool.clone(),
        env.nats.clone(),
        env.namespace.clone(),
        RelayConfig::default(),
    );
    tokio::spawn(relay.run(relay_stop.clone()));
    let config = RunnerConfig { idle_check: Duration::from_millis(100), ..RunnerConfig::default() };
    let live = PgProjection::live(env.pool.clone(), MissionListWriter, NAME);
    let (feed, _feed_stop) = env.running_feed().await;
    let runner =
        Runner::new(MissionList, live, env.pool.clone(), feed, env.namespace.clone(), config)
            .await
            .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(runner.run(stop.clone()));

    let ids = missions_in_every_state(&store).await;
    let head = env.head().await;
    wait_until("the mission list to catch up", WAIT, || async {
        brain::eventlog::projectors::checkpoint(&env.pool, NAME).await.unwrap() >= head
    })
    .await;
    let want = expected(&store, &ids).await;
    assert_eq!(rows(&env).await, want);
    let statuses: std::collections::BTreeSet<String> =
        want.iter().map(|row| row.1.clone()).collect();
    assert_eq!(statuses.len(), 5, "every state is exercised: {statuses:?}");

    // Every column, the run's times and last error too, is the same rebuilt as live.
    let live = whole_rows(&env).await;
    let failed = live.iter().filter(|row| row.contains(r#""last_error": "e""#)).count();
    assert_eq!(failed, 10, "the failed and the pending keep their error: {live:?}");
    rebuild(&env.pool, MissionList, MissionListWriter).await.unwrap();
    assert_eq!(rows(&env).await, want);
    assert_eq!(whole_rows(&env).await, live);
    // And the rebuilt table keeps the finer statistics its searched text is planned from.
    let targets: Vec<i32> = sqlx::query_scalar(
        "SELECT attstattarget::int4 FROM pg_attribute WHERE attrelid = 'mission_list'::regclass
         AND attname IN ('search_text', 'last_error')",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(targets, [1000, 1000]);
    stop.cancel();
    relay_stop.cancel();
}

#[tokio::test]
async fn missions_are_listed_newest_first_filtered_and_paged() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let (store, _committer) = env.store();
    let ids = missions_in_every_state(&store).await;
    let head = env.head().await;
    wait_until("the list to catch up", WAIT, || async {
        get(addr, "/api/missions?limit=1").await.1["position"] == head
    })
    .await;

    // Newest first, across pages, with nothing repeated or left out.
    let mut seen = Vec::new();
    let mut path = "/api/missions?limit=7".to_owned();
    loop {
        let (status, page) = get(addr, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["missions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mission_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/missions?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(seen, newest_first);

    let (_, cancelled) = get(addr, "/api/missions?status=cancelled&agent=coder").await;
    let cancelled = cancelled["missions"].as_array().unwrap();
    assert!(!cancelled.is_empty());
    assert!(cancelled.iter().all(|m| m["status"] == "cancelled" && m["agent"] == "coder"));
    let (_, critical) = get(addr, "/api/missions?priority=critical").await;
    assert!(critical["missions"].as_array().unwrap().iter().all(|m| m["priority"] == "critical"));

    for bad in ["status=lost", "limit=0", "limit=201", "cursor=-1", "since=yesterday"] {
        let (status, body) = get(addr, &format!("/api/missions?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn migration_0012_empties_an_older_list_and_its_projector_rebuilds_it_whole() {
    // Given a list an older build kept (its columns only), caught up with the log.
    let env = TestEnv::new_at_migration(11).await;
    let (store, _committer) = env.store();
    let ids = missions_in_every_state(&store).await;
    let head = env.head().await;
    sqlx::query(
        "INSERT INTO mission_list (mission_id, status, updated_at, last_position)
         SELECT DISTINCT stream_id, 'queued', now(), 1 FROM events WHERE stream_type = 'mission'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO projector_checkpoints (projector, position) VALUES ($1, $2)")
        .bind(NAME)
        .bind(head as i64)
        .execute(&env.pool)
        .await
        .unwrap();

    // When it is migrated, the list is emptied and its checkpoint set back, with the reset
    // recorded.
    brain::eventlog::db::migrate(&env.pool).await.expect("migrate");
    assert!(rows(&env).await.is_empty());
    assert_eq!(brain::eventlog::projectors::checkpoint(&env.pool, NAME).await.unwrap(), 0);
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM projector_resets WHERE projector = $1")
            .bind(NAME)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["migration"]);

    // Then its projector, starting from there, rebuilds every row with the new columns.
    let live = PgProjection::live(env.pool.clone(), MissionListWriter, NAME);
    let mut feeder =
        brain::eventlog::projector::Feeder::new(MissionList, live, env.pool.clone(), 1_000)
            .await
            .unwrap();
    assert_eq!(feeder.catch_up().await.unwrap(), head);
    assert_eq!(rows(&env).await, expected(&store, &ids).await);
    let described: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mission_list WHERE description IS NOT NULL AND ready_at IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(described, ids.len() as i64);
}
