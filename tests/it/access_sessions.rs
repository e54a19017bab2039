//! A browser's ways in, tried as a page elsewhere would: a change sent as text or with no
//! type (what a no-cors form sends), a rebinding `Host`, and a session cookie used from
//! another origin, with no `Origin`, or by a cross-site `<script>`.

use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{ADMIN_TOKEN, TestEnv, client, key_id, make_key};

#[tokio::test]
async fn a_change_sent_as_text_or_to_another_host_is_refused_and_changes_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let head = env.head().await;
    let id = uuid::Uuid::now_v7();

    // What a no-cors form or fetch can send: text/plain, or no type at all.
    for kind in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        crate::serve::crypto_provider();
        let mut request = reqwest::Client::new()
            .post(format!("http://{addr}/api/missions/enqueue"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(r#"{"name":"sneaked in"}"#);
        if let Some(kind) = kind {
            request = request.header("content-type", kind);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{kind:?}");
        let cancel = reqwest::Client::new()
            .post(format!("http://{addr}/api/missions/{id}/cancel"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 415, "a change without a body needs the JSON type too");
    }

    // A name the serve was not told it has: what a DNS-rebinding page sends.
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/api/missions"))
            .header("host", host)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{host}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "host_refused", "{body}");
    }
    let local = format!("localhost:{}", addr.port());
    let response = client()
        .get(format!("http://{addr}/api/missions"))
        .header("host", local)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(env.head().await, head);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_session_cookie_acts_only_for_pages_of_the_serves_own_origin() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let operator = make_key(addr, json!({ "name": "op", "role": "operator" })).await;
    crate::serve::crypto_provider();
    let bare = reqwest::Client::new();

    // A wrong key signs nothing in.
    let wrong = bare
        .post(format!("http://{addr}/api/session"))
        .json(&json!({ "key": format!("brn_{}_{}", key_id(&operator), "2".repeat(64)) }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // Signing in from another origin is refused: no one else's page logs the browser in.
    let elsewhere = bare
        .post(format!("http://{addr}/api/session"))
        .header("origin", "http://evil.example")
        .json(&json!({ "key": operator }))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);

    let signed = bare
        .post(format!("http://{addr}/api/session"))
        .header("origin", format!("http://{addr}"))
        .json(&json!({ "key": operator }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let set = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    assert!(!set.contains(&operator[21..]), "the cookie is not the key: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let body: Value = signed.json().await.unwrap();
    assert_eq!(body["key"]["name"], "op", "{body}");

    let with_cookie = |method: reqwest::Method, path: &str| {
        bare.request(method, format!("http://{addr}{path}")).header("cookie", cookie.clone())
    };
    let read = with_cookie(reqwest::Method::GET, "/api/missions").send().await.unwrap();
    assert_eq!(read.status(), 200, "a session reads");
    // What a `<script src>` on another site's page makes the browser send: no Origin, but
    // the browser's word on where it came from.
    for site in ["cross-site", "same-site"] {
        let lured = with_cookie(reqwest::Method::GET, "/api/events")
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(lured.status(), 403, "{site}");
    }
    let own_page = with_cookie(reqwest::Method::GET, "/api/events")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own_page.status(), 200);
    let who = with_cookie(reqwest::Method::GET, "/api/session").send().await.unwrap();
    let who: Value = who.json().await.unwrap();
    assert_eq!(who["key"]["key_id"], key_id(&operator));
    assert!(who["expires_at_ms"].as_i64().is_some(), "{who}");

    let id = uuid::Uuid::now_v7();
    let cancel = format!("/api/missions/{id}/cancel");
    // A change with the cookie and no Origin, and one from a foreign page: refused before
    // anything is looked at.
    let no_origin = with_cookie(reqwest::Method::POST, &cancel)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);
    let foreign = with_cookie(reqwest::Method::POST, &cancel)
        .header("content-type", "application/json")
        .header("origin", "http://127.0.0.1:1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_refused");
    let own = with_cookie(reqwest::Method::POST, &cancel)
        .header("content-type", "application/json")
        .header("origin", format!("http://{addr}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 404, "the page's own origin gets through to the handler");

    // A forged or tampered cookie opens nothing; a revoked key ends its sessions.
    let last = cookie.chars().last().unwrap();
    let tampered =
        format!("{}{}", &cookie[..cookie.len() - 1], if last == '0' { '1' } else { '0' });
    let forged = bare
        .get(format!("http://{addr}/api/missions"))
        .header("cookie", tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let revoke = client()
        .post(format!("http://{addr}/api/keys/{}/revoke", key_id(&operator)))
        .json(&json!({ "reason": "session test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let after = with_cookie(reqwest::Method::GET, "/api/missions").send().await.unwrap();
    assert_eq!(after.status(), 401);

    // Signing out clears the cookie.
    let out = bare.delete(format!("http://{addr}/api/session")).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
