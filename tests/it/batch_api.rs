//! `POST /api/missions/enqueue/batch` over HTTP against real services: a large batch lands
//! whole with consecutive positions, one bad item refuses the batch and changes nothing,
//! re-sending with idempotency keys returns the same missions and appends nothing.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::missions_api::post;
use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::KEY_EVENTS;
use crate::support::{TestEnv, wait_until};

const BATCH: &str = "/api/missions/enqueue/batch";

fn batch(missions: Vec<Value>) -> String {
    json!({ "missions": missions }).to_string()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["missions"]
        .as_array()
        .expect("missions")
        .iter()
        .map(|m| m["mission_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_of_500_lands_whole_with_consecutive_positions_and_every_mission_is_visible() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let missions: Vec<Value> = (0..500)
        .map(|n| json!({ "name": format!("m{n}"), "priority": "high", "payload": { "n": n } }))
        .collect();

    let (status, answer) = post(addr, BATCH, &batch(missions)).await;
    assert_eq!(status, 201, "{answer}");
    let items = answer["missions"].as_array().unwrap();
    assert_eq!(items.len(), 500);
    let first = items[0]["position"].as_u64().unwrap();
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["position"].as_u64(), Some(first + n as u64), "consecutive: {item}");
        assert_eq!(
            (item["status"].as_str(), item["created"].as_bool()),
            (Some("queued"), Some(true))
        );
    }
    let k = crate::support::KEY_EVENTS;
    assert_eq!((first, env.head().await), (k + 1, k + 500));

    // The log holds the 500 enqueues in the answer's order, carrying who asked.
    let (_, page) = get(addr, "/api/events?after=0&limit=1000").await;
    let events = page["events"].as_array().unwrap();
    let events = &events[KEY_EVENTS as usize..];
    let logged: Vec<&str> = events.iter().map(|e| e["stream_id"].as_str().unwrap()).collect();
    assert_eq!(logged, ids(&answer));
    assert!(events.iter().all(|e| e["event_type"] == "MissionEnqueued"));
    assert!(events.iter().all(|e| e["metadata"]["actor"] == crate::support::ADMIN_ACTOR));
    assert!(events.iter().all(|e| e["metadata"]["on_behalf_of"] == "user:alice"));
    let commands: HashSet<&str> =
        events.iter().map(|e| e["metadata"]["command_id"].as_str().unwrap()).collect();
    assert_eq!(commands.len(), 500, "one command id per mission");

    // Each mission answers on its own route, with the defaults of a single enqueue.
    for (n, id) in ids(&answer).iter().enumerate().step_by(50) {
        let (status, mission) = get(addr, &format!("/api/missions/{id}")).await;
        assert_eq!(status, 200, "{mission}");
        assert_eq!(mission["name"], format!("m{n}"));
        assert_eq!(mission["payload"], json!({ "n": n }));
        assert_eq!(
            (mission["agent"].as_str(), mission["max_attempts"].as_u64()),
            (Some("coder"), Some(3))
        );
        assert_eq!(mission["timeout_s"], 600);
    }

    // And the mission list read model shows all of them.
    wait_until("the mission list to show all 500", Duration::from_secs(30), || async {
        let (_, page) = get(addr, "/api/missions?limit=200").await;
        page["position"] == KEY_EVENTS + 500
    })
    .await;
    let mut listed = HashSet::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(addr, &format!("/api/missions?limit=200{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        for row in page["missions"].as_array().unwrap() {
            listed.insert(row["mission_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(listed, ids(&answer).into_iter().collect::<HashSet<_>>());

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_with_bad_items_is_refused_whole_naming_each_and_changes_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let mut missions: Vec<Value> = (0..20).map(|n| json!({ "name": format!("m{n}") })).collect();
    missions[3] = json!({ "name": "  " });
    missions[5] = json!({ "name": "a", "idempotency_key": "k" });
    missions[7] = json!({ "name": "a", "colour": "blue" });
    missions[9] = json!({ "name": "b", "idempotency_key": "k" });
    missions[11] = json!({ "name": "a", "timeout_s": 0 });
    missions[12] = json!({ "name": "a", "payload": { "blob": "x".repeat(300 * 1024) } });
    missions[19] = json!({ "name": "a", "agent": "Bad Agent" });

    let (status, answer) = post(addr, BATCH, &batch(missions)).await;
    assert_eq!(status, 422, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["code"], "batch_refused");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("6 of 20")), "{error}");
    let items: Vec<(u64, &str, Option<&str>)> = error["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["index"].as_u64().unwrap(), i["code"].as_str().unwrap(), i["field"].as_str()))
        .collect();
    assert_eq!(
        items,
        [
            (3, "invalid_field", Some("name")),
            (7, "invalid_body", None),
            (9, "duplicate_idempotency_key", Some("idempotency_key")),
            (11, "invalid_field", Some("timeout_s")),
            (12, "payload_too_large", Some("payload")),
            (19, "invalid_field", Some("agent")),
        ]
    );
    let messages = error["items"].as_array().unwrap();
    assert!(messages.iter().all(|i| i["message"].as_str().is_some_and(|m| !m.is_empty())));
    assert!(messages[1]["message"].as_str().unwrap().contains("colour"), "{}", messages[1]);
    assert_eq!(env.head().await, crate::support::KEY_EVENTS, "nothing appended");
    let commands: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commands").fetch_one(&env.pool).await.unwrap();
    assert_eq!(commands, 0, "no command id claimed");

    for (body, status, code) in [
        (batch(vec![]), 422, "invalid_field"),
        (batch(vec![json!({ "name": "a" }); 1001]), 422, "invalid_field"),
        (json!({ "missions": "many" }).to_string(), 422, "invalid_body"),
        (json!({ "missions": [], "extra": 1 }).to_string(), 422, "invalid_body"),
        ("{".to_owned(), 400, "invalid_body"),
    ] {
        let (got, answer) = post(addr, BATCH, &body).await;
        let shown = &body[..body.len().min(60)];
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{shown}: {answer}"
        );
    }
    assert_eq!(env.head().await, KEY_EVENTS);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_sent_again_returns_the_same_missions_and_appends_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    // A key used first by a single enqueue names the same mission in a batch.
    let (status, single) = post(
        addr,
        "/api/missions/enqueue",
        &json!({ "name": "s", "idempotency_key": "k0" }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{single}");
    let missions: Vec<Value> = (0..20)
        .map(|n| json!({ "name": format!("m{n}"), "idempotency_key": format!("k{n}") }))
        .collect();

    let (status, first) = post(addr, BATCH, &batch(missions.clone())).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(ids(&first)[0], single["mission_id"].as_str().unwrap());
    let created: Vec<bool> = first["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [vec![false], vec![true; 19]].concat());
    assert_eq!(env.head().await, crate::support::KEY_EVENTS + 20);

    let (status, again) = post(addr, BATCH, &batch(missions.clone())).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(ids(&again), ids(&first));
    assert!(again["missions"].as_array().unwrap().iter().all(|m| m["created"] == false));
    let positions = |a: &Value| -> Vec<u64> {
        a["missions"].as_array().unwrap().iter().map(|m| m["position"].as_u64().unwrap()).collect()
    };
    assert_eq!(positions(&again), positions(&first));
    assert_eq!(env.head().await, KEY_EVENTS + 20, "nothing appended");

    // A repeat shows the mission as it is now.
    let id = &ids(&first)[4];
    let (status, _) = post(addr, &format!("/api/missions/{id}/cancel"), "").await;
    assert_eq!(status, 200);
    let mut more = missions[..5].to_vec();
    more.push(json!({ "name": "new", "idempotency_key": "k-new" }));
    let (status, mixed) = post(addr, BATCH, &batch(more)).await;
    assert_eq!(status, 201, "{mixed}");
    let items = mixed["missions"].as_array().unwrap();
    assert_eq!(&ids(&mixed)[..5], &ids(&first)[..5]);
    assert_eq!(
        (items[4]["status"].as_str(), items[4]["created"].as_bool()),
        (Some("cancelled"), Some(false))
    );
    assert_eq!(
        (items[5]["created"].as_bool(), items[5]["position"].as_u64()),
        (Some(true), Some(KEY_EVENTS + 22))
    );
    assert_eq!(env.head().await, KEY_EVENTS + 22);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
