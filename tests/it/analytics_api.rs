//! `GET /api/analytics/missions` against a serve running echo missions: what finished and how,
//! per kind and bucket, with queue wait and run time; its refusals; and who may read it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{get, serve_with_echo};
use crate::support::{TestEnv, client, make_key, wait_until};
use crate::workers::{enqueue, finished};

fn since(minutes: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes);
    at.format(&time::format_description::well_known::Rfc3339).unwrap().replace('+', "%2B")
}

/// The series' counts summed over its buckets (a run may straddle a minute).
fn totals(series: &Value) -> (i64, i64, i64) {
    series["buckets"].as_array().unwrap().iter().fold((0, 0, 0), |(c, f, x), bucket| {
        let n = |field: &str| bucket[field].as_i64().unwrap();
        (c + n("completed"), f + n("failed"), x + n("cancelled"))
    })
}

#[tokio::test]
async fn finished_missions_are_counted_per_kind_and_bucket_with_their_waits_and_run_times() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(enqueue(addr, json!({ "name": format!("ok {n}"), "agent": "echo" })).await);
    }
    let doomed =
        json!({ "name": "doomed", "agent": "echo", "payload": { "fail_permanently": true } });
    ids.push(enqueue(addr, doomed).await);
    for id in &ids {
        finished(addr, id).await;
    }
    let later = json!({ "name": "later", "agent": "echo", "not_before": "2999-01-01T00:00:00Z" });
    let later = enqueue(addr, later).await;
    let (status, _) =
        crate::missions_api::post(addr, &format!("/api/missions/{later}/cancel"), "{}").await;
    assert_eq!(status, 200);

    let path = format!("/api/analytics/missions?bucket=minute&since={}", since(10));
    wait_until("the list to hold the five ends", Duration::from_secs(15), || async {
        let (_, body) = get(addr, &path).await;
        body["series"].as_array().is_some_and(|series| {
            series.iter().any(|s| s["kind"] == "echo" && totals(s) == (3, 1, 1))
        })
    })
    .await;
    let (status, body) = get(addr, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bucket"], "minute");
    let echo = body["series"].as_array().unwrap().iter().find(|s| s["kind"] == "echo").unwrap();
    let bucket = &echo["buckets"][0];
    assert!(bucket["queue_wait"]["p50_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{bucket}");
    assert!(bucket["run_time"]["p95_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{bucket}");
    assert_eq!(bucket["llm_calls"], 0);
    if echo["buckets"].as_array().unwrap().len() == 1 {
        assert_eq!(bucket["success_rate"], 0.75, "{bucket}");
    }

    // One series for every kind, and a window before any of it holds nothing.
    let (_, all) = get(addr, &format!("{path}&by=all")).await;
    let series = all["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{all}");
    assert_eq!(series[0]["kind"], "all");
    assert_eq!(totals(&series[0]), (3, 1, 1));
    let until = since(9);
    let (_, before) =
        get(addr, &format!("/api/analytics/missions?since={}&until={until}", since(20))).await;
    assert_eq!(before["series"], json!([]), "{before}");
}

#[tokio::test]
async fn a_bad_window_or_bucket_is_refused_by_name_and_only_a_mission_reader_may_ask() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    for (query, field) in [
        ("bucket=week", "bucket"),
        ("by=agent", "by"),
        (&format!("since={}&until={}", since(1), since(5)) as &str, "since"),
        (&format!("bucket=minute&since={}", since(60 * 24)), "since"),
    ] {
        let (status, body) = get(addr, &format!("/api/analytics/missions?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = get(addr, "/api/analytics/missions?window=1").await;
    assert!((400..500).contains(&status), "{body}");

    crate::serve::crypto_provider();
    let url = format!("http://{addr}/api/analytics/missions");
    let anonymous = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let keys_only = make_key(addr, json!({ "name": "keys", "permissions": ["keys.manage"] })).await;
    let forbidden = reqwest::Client::new().get(&url).bearer_auth(&keys_only).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let reader =
        make_key(addr, json!({ "name": "reader", "permissions": ["missions.read"] })).await;
    let read = reqwest::Client::new().get(&url).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let foreign = client().get(&url).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(foreign.status(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_refused");
}
