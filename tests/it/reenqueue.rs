//! Re-enqueue: a finished mission run again as a linked copy, one at a time or in bulk; a
//! key makes a repeat name the same copy; an unfinished mission is refused and nothing
//! changes; a retry records its reason; and who may ask.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::bulk_api::bulk;
use crate::serve::get;
use crate::serve::serve_with_echo;
use crate::support::{TestEnv, client, make_key};
use crate::workers::{enqueue, event_types, finished, mission, mission_status};

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let response = client().post(format!("http://{addr}{path}")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn later(name: &str) -> Value {
    json!({ "name": name, "agent": "echo", "not_before": "2999-01-01T00:00:00Z" })
}

#[tokio::test]
async fn a_finished_mission_runs_again_as_a_copy_linked_both_ways_and_a_keyed_repeat_names_the_same_copy()
 {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let origin = enqueue(
        addr,
        json!({ "name": "nightly", "agent": "echo", "priority": "high", "payload": { "n": 7 } }),
    )
    .await;
    let first = finished(addr, &origin).await;
    assert_eq!(first["status"], "completed");

    let path = format!("/api/missions/{origin}/reenqueue");
    let body = json!({ "reason": "inputs refreshed", "idempotency_key": "again-1" });
    let (status, copy) = post(addr, &path, body.clone()).await;
    assert_eq!(status, 201, "{copy}");
    let copy_id = copy["mission_id"].as_str().unwrap().to_owned();
    assert_ne!(copy_id, origin);
    assert_eq!(copy["copied_from"], origin.as_str());
    for field in ["name", "agent", "priority", "payload", "max_attempts", "timeout_s"] {
        assert_eq!(copy[field], first[field], "{field} is copied");
    }
    // The copy runs from the start; the original keeps its outcome and lists its copy.
    assert_eq!(finished(addr, &copy_id).await["status"], "completed");
    let original = mission(addr, &origin).await;
    assert_eq!(original["status"], "completed");
    assert_eq!(original["result"], first["result"]);
    let copies = original["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{original}");
    assert_eq!(copies[0]["mission_id"], copy_id.as_str());
    assert_eq!(copies[0]["reason"], "inputs refreshed");
    assert!(copies[0]["by"].as_str().unwrap().starts_with("key:"), "{copies:?}");

    // The same key again: the same copy, 200, nothing new in either history.
    let (before_origin, before_copy) =
        (event_types(addr, &origin).await.len(), event_types(addr, &copy_id).await.len());
    let (status, again) = post(addr, &path, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["mission_id"], copy_id.as_str());
    assert_eq!(event_types(addr, &origin).await.len(), before_origin);
    assert_eq!(event_types(addr, &copy_id).await.len(), before_copy);

    // Without a key, each request is a new copy; the copy of a copy links to the copy.
    let (status, second) =
        post(addr, &format!("/api/missions/{copy_id}/reenqueue"), json!({})).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["copied_from"], copy_id.as_str());
    assert_eq!(mission(addr, &copy_id).await["copies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unfinished_or_unknown_mission_is_not_copied_and_a_wrong_request_names_its_field() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let waiting = enqueue(addr, later("waits")).await;
    let path = format!("/api/missions/{waiting}/reenqueue");

    let (status, refused) = post(addr, &path, json!({ "reason": "too soon" })).await;
    assert_eq!((status, refused["error"]["code"].clone()), (409, json!("mission_not_finished")));
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = post(addr, &format!("/api/missions/{unknown}/reenqueue"), json!({})).await;
    assert_eq!(status, 404);
    for (body, field) in [
        (json!({ "reason": "x".repeat(2_001) }), json!("reason")),
        (json!({ "idempotency_key": "" }), json!("idempotency_key")),
        (json!({ "idempotency_key": "k".repeat(201) }), json!("idempotency_key")),
        (json!({ "copy": true }), Value::Null),
    ] {
        let (status, answer) = post(addr, &path, body.clone()).await;
        assert!((400..500).contains(&status) && status != 409, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // A hostile id is one path segment, refused as an id.
    let (status, _) = post(addr, "/api/missions/..%2Fkeys/reenqueue", json!({})).await;
    assert!((400..500).contains(&status));
    assert_eq!(event_types(addr, &waiting).await, ["MissionEnqueued"], "nothing recorded");

    // Who may ask: no key, a reader's key, a page of another origin.
    let done = enqueue(addr, json!({ "name": "done", "agent": "echo" })).await;
    finished(addr, &done).await;
    let url = format!("http://{addr}/api/missions/{done}/reenqueue");
    let anonymous = reqwest::Client::new().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let reader =
        make_key(addr, json!({ "name": "reader", "permissions": ["missions.read"] })).await;
    let forbidden =
        reqwest::Client::new().post(&url).bearer_auth(&reader).json(&json!({})).send().await;
    assert_eq!(forbidden.unwrap().status(), 403);
    let foreign = client().post(&url).header("origin", "http://evil.example").json(&json!({}));
    assert_eq!(foreign.send().await.unwrap().status(), 403);
    assert!(mission(addr, &done).await["copies"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bulk_reenqueue_copies_each_finished_mission_and_refuses_the_rest_and_a_retry_keeps_its_reason()
 {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let doomed = enqueue(
        addr,
        json!({ "name": "doomed", "agent": "echo", "payload": { "fail_permanently": true } }),
    )
    .await;
    finished(addr, &doomed).await;
    let waiting = enqueue(addr, later("waits")).await;

    let body = json!({
        "action": "reenqueue", "mission_ids": [doomed, waiting],
        "reason": "after the fix", "idempotency_key": "bulk-1",
    });
    let (status, answer) = bulk(addr, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["done"].clone(), answer["refused"].clone()), (json!(1), json!(1)));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["outcome"], "reenqueued", "{answer}");
    let copy_id = results[0]["copy_id"].as_str().unwrap().to_owned();
    assert_eq!(results[1]["error"]["code"], "mission_not_finished", "{answer}");
    assert_eq!(mission(addr, &copy_id).await["copied_from"], doomed.as_str());
    assert_eq!(mission_status(addr, &doomed).await, "failed", "the original keeps its outcome");

    // The same request again: the same copy, marked repeated, no second copy.
    let (_, again) = bulk(addr, body).await;
    assert_eq!(again["results"][0]["copy_id"], copy_id.as_str(), "{again}");
    assert_eq!(again["results"][0]["repeated"], true, "{again}");
    assert_eq!(mission(addr, &doomed).await["copies"].as_array().unwrap().len(), 1);

    // A retry, by the single route, records why.
    let (status, retried) =
        post(addr, &format!("/api/missions/{doomed}/retry"), json!({ "reason": "flaky disk" }))
            .await;
    assert_eq!(status, 200, "{retried}");
    let (_, events) = get(addr, &format!("/api/missions/{doomed}/events")).await;
    let retry = events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_type"] == "MissionRetried")
        .expect("a MissionRetried event")
        .clone();
    assert_eq!(retry["payload"]["reason"], "flaky disk", "{retry}");
}
