//! `POST /api/missions/bulk`: many missions cancelled or retried at once, by id or by the
//! list's filter, each answered for itself; an idempotency key makes a repeat change nothing;
//! a wrong request changes nothing and names its field; and who may ask.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{get, serve_with_echo};
use crate::support::{TestEnv, client, make_key, wait_until};
use crate::workers::{enqueue, event_types, finished, mission_status};

pub async fn bulk(addr: SocketAddr, body: Value) -> (u16, Value) {
    crate::serve::crypto_provider();
    let response =
        client().post(format!("http://{addr}/api/missions/bulk")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn outcomes(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["mission_id"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn missions_named_by_id_or_filter_are_cancelled_or_retried_each_on_its_own() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let later =
        |name: &str| json!({ "name": name, "agent": "echo", "not_before": "2999-01-01T00:00:00Z" });
    let waiting: Vec<String> =
        futures::future::join_all((0..3).map(|n| enqueue(addr, later(&format!("nightly {n}")))))
            .await;
    let done = enqueue(addr, json!({ "name": "done", "agent": "echo" })).await;
    finished(addr, &done).await;

    // By id: the waiting ones are cancelled with the reason in their history; the finished
    // one is refused as the single route refuses it, and the rest go on.
    let ids: Vec<&str> =
        waiting.iter().take(2).map(String::as_str).chain([done.as_str()]).collect();
    let body = json!({ "action": "cancel", "mission_ids": ids, "reason": "superseded by v2", "idempotency_key": "k1" });
    let (status, answer) = bulk(addr, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["matched"].clone(), answer["done"].clone(), answer["refused"].clone()),
        (json!(3), json!(2), json!(1))
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[2]["error"]["code"], "mission_already_finished", "{answer}");
    for id in &waiting[..2] {
        assert_eq!(mission_status(addr, id).await, "cancelled");
        let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
        let cancelled = events.as_array().unwrap().last().unwrap();
        assert_eq!(cancelled["payload"]["reason"], "superseded by v2", "{cancelled}");
    }

    // The same request again, with its key: the first answers, nothing more recorded.
    let before = event_types(addr, &waiting[0]).await.len();
    let (_, again) = bulk(addr, body).await;
    assert_eq!(outcomes(&again), outcomes(&answer));
    assert_eq!(again["results"][0]["repeated"], true, "{again}");
    assert_eq!(event_types(addr, &waiting[0]).await.len(), before);

    // By filter: the list's own parameters name the third.
    wait_until("the list to show the cancellations", Duration::from_secs(10), || async {
        get(addr, "/api/missions?status=cancelled").await.1["total"] == 2
    })
    .await;
    let filter = json!({ "q": "nightly", "status": "pending" });
    let (status, answer) =
        bulk(addr, json!({ "action": "cancel", "filter": filter, "reason": "all of them" })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcomes(&answer), [(waiting[2].clone(), "cancelled".to_owned())]);

    // Retry: a failed mission runs again; a cancelled one is refused.
    let doomed = enqueue(
        addr,
        json!({ "name": "doomed", "agent": "echo", "payload": { "fail_permanently": true } }),
    )
    .await;
    finished(addr, &doomed).await;
    let body = json!({ "action": "retry", "mission_ids": [doomed, waiting[0]], "reason": "fixed upstream" });
    let (_, answer) = bulk(addr, body).await;
    assert_eq!(answer["results"][0]["outcome"], "retried", "{answer}");
    assert_eq!(answer["results"][1]["error"]["code"], "mission_not_failed", "{answer}");
    assert!(event_types(addr, &doomed).await.contains(&"MissionRetried".to_owned()));
    // It fails again: its second error is attempt 1 of run 2, not a second "attempt 1".
    wait_until("the retried mission to fail again", Duration::from_secs(15), || async {
        crate::workers::mission(addr, &doomed).await["errors"]
            .as_array()
            .is_some_and(|e| e.len() == 2)
    })
    .await;
    let errors = crate::workers::mission(addr, &doomed).await["errors"].clone();
    assert_eq!(
        (errors[0]["run"].clone(), errors[1]["run"].clone()),
        (json!(1), json!(2)),
        "{errors}"
    );
    assert_eq!(errors[1]["attempt"], 1, "{errors}");
}

#[tokio::test]
async fn a_wrong_bulk_request_names_its_field_and_changes_nothing_and_only_a_writer_may_send_one() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let waiting = enqueue(
        addr,
        json!({ "name": "kept", "agent": "echo", "not_before": "2999-01-01T00:00:00Z" }),
    )
    .await;
    let too_many: Vec<String> = (0..10_001).map(|n| format!("m{n}")).collect();
    for (body, field) in [
        (json!({ "action": "delete", "mission_ids": [waiting], "reason": "r" }), "action"),
        (json!({ "action": "cancel", "mission_ids": [waiting], "reason": " " }), "reason"),
        (json!({ "action": "cancel", "reason": "r" }), "mission_ids"),
        (
            json!({ "action": "cancel", "mission_ids": [waiting], "filter": {}, "reason": "r" }),
            "mission_ids",
        ),
        (json!({ "action": "cancel", "mission_ids": too_many, "reason": "r" }), "mission_ids"),
        (json!({ "action": "cancel", "mission_ids": ["../keys"], "reason": "r" }), "mission_ids"),
        (json!({ "action": "cancel", "filter": { "status": "lost" }, "reason": "r" }), "status"),
        (json!({ "action": "cancel", "filter": { "cursor": "x" }, "reason": "r" }), "filter"),
        (json!({ "action": "cancel", "filter": { "nope": "x" }, "reason": "r" }), "filter"),
    ] {
        let (status, answer) = bulk(addr, body.clone()).await;
        assert!((400..500).contains(&status), "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(mission_status(addr, &waiting).await, "pending", "nothing was cancelled");

    let url = format!("http://{addr}/api/missions/bulk");
    let body = json!({ "action": "cancel", "mission_ids": [waiting], "reason": "r" });
    let anonymous = reqwest::Client::new().post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let reader =
        make_key(addr, json!({ "name": "reader", "permissions": ["missions.read"] })).await;
    let forbidden =
        reqwest::Client::new().post(&url).bearer_auth(&reader).json(&body).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let foreign = client()
        .post(&url)
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(mission_status(addr, &waiting).await, "pending", "nothing was cancelled");
}
