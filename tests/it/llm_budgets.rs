//! Budgets enforced before a call is sent: 50 concurrent calls through `/v1` against a daily
//! budget worth 10 send exactly 10 and refuse the rest `budget_exceeded`, the usage report
//! matches what the fake counted, and a budget whose Redis keys are lost is seeded again
//! from the log; a mission's own budget and its kind's daily budget stop its calls, and such
//! a failure is not retried.

use std::time::Duration;

use brain::llm::gateway::input_tokens_estimate;
use brain::llm::{Message, Role};
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::get;
use crate::support::{TestEnv, redis_url, wait_until};
use crate::workers::{WorkerProcess, enqueue, finished, serve_without_workers};

/// Output tokens every answer uses: the configured `max_tokens`, so that a call's worst case
/// is exactly what it uses and a budget worth N calls lets exactly N through.
const OUTPUT: u64 = 20;

fn input_of(prompt: &str) -> u64 {
    input_tokens_estimate(&[Message::new(Role::User, prompt)], &[])
}

async fn put_config(addr: std::net::SocketAddr, body: &Value) {
    let (status, answer) = crate::llm_config::put(addr, body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn complete(addr: std::net::SocketAddr, prompt: &str) -> (u16, Value) {
    let response = crate::support::client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({ "model": "default", "messages": [{ "role": "user", "content": prompt }] }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn concurrent_calls_cannot_overspend_a_daily_budget_and_usage_matches_the_provider() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let prompt = "hi";
    let usage = (input_of(prompt), OUTPUT);
    let answer = Scripted::Answer { text: "ok".into(), tool_calls: vec![], usage };
    let fake = FakeLlm::start(vec![], answer, None).await;
    // Calls overlap: all 50 are in flight together.
    fake.set_delay(Duration::from_millis(300));
    // $1 per million tokens each way: a call costs (input + 20) millionths of a dollar.
    let call_usd = (usage.0 + usage.1) as f64 / 1e6;
    put_config(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": OUTPUT,
            "prices": { "fake-1": { "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0 } },
            "daily_budgets": { "all": { "cost_usd_max": call_usd * 10.0 } } }),
    )
    .await;

    let calls: Vec<_> = (0..50).map(|_| tokio::spawn(complete(addr, prompt))).collect();
    let mut answered = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        match status {
            200 => answered += 1,
            402 => {
                assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(": the daily budget ("), "{message}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    let sent = fake.seen().len() as u64;
    assert_eq!((answered, sent), (10, 10), "exactly the ten the budget is worth were sent");

    // The usage report, from the recorded calls, matches what the provider counted.
    wait_until("all 50 calls to be in the usage report", Duration::from_secs(20), || async {
        get(addr, "/api/llm/usage?by=model").await.1["groups"][0]["calls"] == 50
    })
    .await;
    let (status, report) = get(addr, "/api/llm/usage?by=model").await;
    assert_eq!(status, 200);
    let group = &report["groups"][0];
    assert_eq!(
        (&group["key"], &group["errors"], &group["input_tokens"], &group["output_tokens"]),
        (&json!("fake-1"), &json!(40), &json!(sent * usage.0), &json!(sent * usage.1)),
        "{report}"
    );
    assert!((group["cost_usd"].as_f64().unwrap() - call_usd * 10.0).abs() < 1e-12, "{report}");
    let (status, refused) = get(addr, "/api/llm/usage?by=colour").await;
    assert_eq!((status, &refused["error"]["field"]), (400, &json!("by")), "{refused}");

    // Redis loses the budget's counters: the next call is seeded from the log, and refused.
    let mut redis =
        redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap();
    let pattern = format!("{{{}}}:llm:budget:*", env.namespace);
    let keys = brain::kv::scan(&mut redis, &pattern).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::AsyncCommands::del(&mut redis, &keys).await.unwrap();
    let (status, body) = complete(addr, prompt).await;
    assert_eq!((status, &body["error"]["code"]), (402, &json!("budget_exceeded")), "{body}");
    assert_eq!(fake.seen().len(), 10, "nothing more was sent");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_missions_budget_and_its_kinds_daily_budget_stop_its_calls_without_retry() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let prompt = "write a haiku";
    let usage = (input_of(prompt), OUTPUT);
    let answer = Scripted::Answer { text: "an old silent pond".into(), tool_calls: vec![], usage };
    let fake = FakeLlm::start(vec![], answer, None).await;
    let call_tokens = usage.0 + usage.1;
    put_config(
        addr,
        &json!({ "provider": "openai", "host": fake.url(), "model": "fake-1", "max_tokens": OUTPUT,
            "daily_budgets": { "kinds": { "coder": { "tokens_max": call_tokens * 2 } } } }),
    )
    .await;
    let _worker = WorkerProcess::start(&env, "budget-worker", &["--agents", "coder=plain"]);

    // Its own budget is smaller than one call's worst case: nothing is sent, no retry.
    let body = json!({ "name": "tight", "agent": "coder", "max_attempts": 3,
        "budget": { "tokens_max": call_tokens - 1 }, "payload": { "prompt": prompt } });
    let id = enqueue(addr, body).await;
    let tight = finished(addr, &id).await;
    assert_eq!((&tight["status"], &tight["attempt"]), (&json!("failed"), &json!(1)), "{tight}");
    assert_eq!(tight["budget"], json!({ "tokens_max": call_tokens - 1 }));
    let error = tight["errors"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("budget_exceeded") && error.contains(&format!("mission {id}")),
        "{error}"
    );
    assert!(fake.seen().is_empty());

    // The kind's daily budget is worth two calls: two missions run, the third is refused.
    let mut statuses = Vec::new();
    for n in 0..3 {
        let body = json!({ "name": format!("haiku {n}"), "agent": "coder",
            "budget": { "tokens_max": call_tokens * 10 }, "payload": { "prompt": prompt } });
        let done = finished(addr, &enqueue(addr, body).await).await;
        statuses.push(done["status"].as_str().unwrap().to_owned());
        if n == 2 {
            let error = done["errors"][0]["error"].as_str().unwrap_or_default();
            assert!(error.contains("the daily budget of kind coder"), "{error}");
        }
    }
    assert_eq!(statuses, ["completed", "completed", "failed"]);
    assert_eq!(fake.seen().len(), 2);

    // An invalid budget is refused at enqueue, naming the field.
    let (status, refused) = crate::missions_api::post(
        addr,
        "/api/missions/enqueue",
        &json!({ "name": "x", "budget": { "cost_usd_max": -1 } }).to_string(),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["field"]),
        (422, &json!("budget.cost_usd_max")),
        "{refused}"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
