//! The Control Deck's serving (the page at every console path, assets gzipped and
//! revalidated, a strict CSP) and the two routes it reads that nothing else did: the last
//! hour's throughput and the conversation list. What the pages do in a browser is in
//! `console_browser`.

use std::time::Duration;

use serde_json::{Value, json};

use brain::serve::ServeOptions;

use crate::serve::{crypto_provider, get, serve_with_options, services};
use crate::support::{TestEnv, redis_url, wait_until};
use crate::workers::{enqueue, finished, serve_without_workers};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_console_is_served_at_every_page_path_and_leaves_the_api_alone() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    crypto_provider();
    let client = crate::support::client();
    let page = |path: &str| client.get(format!("http://{addr}{path}")).send();

    let root = page("/").await.unwrap();
    assert_eq!(root.status(), 200);
    let csp = root.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(root.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = root.text().await.unwrap();
    assert!(html.contains("/assets/main.js"), "{html}");
    // No asset from elsewhere: every src and href is the server's own.
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    for path in [
        "/missions",
        "/missions/0192b3c4-0000-7000-8000-000000000000",
        "/agents/x",
        "/chat/y",
        "/events",
        "/llm",
        "/queue",
    ] {
        let response = page(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), html, "{path} answers the page");
    }

    let gzipped = client
        .get(format!("http://{addr}/assets/main.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let etag = gzipped.headers()["etag"].to_str().unwrap().to_owned();
    let compressed = gzipped.bytes().await.unwrap();
    assert_eq!(&compressed[..2], &[0x1f, 0x8b], "a gzip stream");
    let plain = page("/assets/main.js").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["etag"].to_str().unwrap(), etag, "one tag for both encodings");
    let plain = plain.bytes().await.unwrap();
    assert!(compressed.len() < plain.len(), "{} < {}", compressed.len(), plain.len());
    let revalidated = client
        .get(format!("http://{addr}/assets/main.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);

    let (status, missing) = get(addr, "/assets/nothing.js").await;
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("no_route")), "{missing}");
    let (status, api) = get(addr, "/api/nothing").await;
    assert_eq!((status, &api["error"]["code"]), (404, &json!("no_route")), "{api}");
    let (status, _) = get(addr, "/missions/a/b").await;
    assert_eq!(status, 404, "only the console's own paths answer the page");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn throughput_counts_the_last_hours_missions_by_how_they_ended() {
    let env = TestEnv::new().await;
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.run_workers(brain::config::agents::AgentSpec::parse("echo").unwrap(), 4);
    let (addr, shutdown, task) = serve_with_options(options).await;
    let (status, idle) = get(addr, "/api/missions/throughput").await;
    assert_eq!(status, 200, "{idle}");
    assert_eq!((idle["completed"].clone(), idle["failure_rate"].clone()), (json!(0), json!(0.0)));
    assert_eq!(idle["buckets"].as_array().unwrap().len(), 60);

    let mut ids = Vec::new();
    for payload in [json!({}), json!({}), json!({ "fail_permanently": true })] {
        ids.push(enqueue(addr, json!({ "name": "t", "agent": "echo", "payload": payload })).await);
    }
    for id in &ids {
        finished(addr, id).await;
    }
    wait_until("the list to count all three", WAIT, || async {
        get(addr, "/api/missions/throughput").await.1["failed"] == json!(1)
            && get(addr, "/api/missions/throughput").await.1["completed"] == json!(2)
    })
    .await;
    let (_, hour) = get(addr, "/api/missions/throughput").await;
    assert!((hour["failure_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{hour}");
    let last: &Value = hour["buckets"].as_array().unwrap().last().unwrap();
    let in_last_two: i64 = hour["buckets"].as_array().unwrap()[58..]
        .iter()
        .map(|b| b["completed"].as_i64().unwrap() + b["failed"].as_i64().unwrap())
        .sum();
    assert_eq!(in_last_two, 3, "finished just now: {last}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
