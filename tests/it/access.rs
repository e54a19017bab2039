//! Who may call what, tried as an attacker would: every route of the route list against
//! every kind of caller (none, a malformed token, an unknown key, a wrong secret, an expired
//! and a revoked key, each role), a key's secret looked for in everything a run produced, a
//! revocation followed by a second serve, sessions and their `Origin`, a rebinding `Host`, a
//! change sent as text, and `X-Actor` without `impersonate`.

use std::net::SocketAddr;
use std::time::Duration;

use brain::api::Access;
use domain::api_key::Role;
use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{ADMIN_TOKEN, TestEnv, client, client_with, make_key, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// A request as raw as a caller may send it: `token` (or none) as the bearer key, `{}` as
/// the JSON body of anything but a GET. Answers the status and the body (none for a stream).
async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    crate::serve::crypto_provider();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if method != reqwest::Method::GET {
        request = request.header("content-type", "application/json").body("{}");
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|kind| kind.to_str().unwrap_or_default().starts_with("text/event-stream"));
    if streaming {
        return (status, Value::Null);
    }
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn key_id(token: &str) -> &str {
    &token[4..20]
}

/// Fills a documented path: `{key_id}` with a key id no key has, any other id with a UUID
/// nothing has.
fn fill(path: &str) -> String {
    let mut filled = String::new();
    for (n, part) in path.split('{').enumerate() {
        match (n, part.split_once('}')) {
            (0, _) | (_, None) => filled.push_str(part),
            (_, Some((name, rest))) => {
                if name == "key_id" {
                    filled.push_str("00000000000000ff");
                } else {
                    filled.push_str(&uuid::Uuid::now_v7().to_string());
                }
                filled.push_str(rest);
            }
        }
    }
    filled
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_its_declared_access_says() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    let mut roles = Vec::new();
    for role in Role::ALL {
        let token = make_key(addr, json!({ "name": role.as_str(), "role": role.as_str() })).await;
        roles.push((role, token));
    }
    let revoked = make_key(addr, json!({ "name": "revoked", "role": "admin" })).await;
    let revoke = client()
        .post(format!("http://{addr}/api/keys/{}/revoke", key_id(&revoked)))
        .json(&json!({ "reason": "test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let soon = brain::clock::now_ms() + 1_500;
    let expiring =
        make_key(addr, json!({ "name": "expiring", "role": "admin", "expires_at_ms": soon })).await;
    wait_until("the key to expire", WAIT, || async {
        call(addr, "GET", "/api/keys", Some(&expiring)).await.0 == 401
    })
    .await;
    let (admin_id, viewer) = (key_id(ADMIN_TOKEN), &roles[3].1);
    let wrong_secret = format!("brn_{admin_id}_{}", "0".repeat(64));
    let unknown = format!("brn_00000000000000ee_{}", "1".repeat(64));
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no key", None),
        ("malformed", Some("not-a-key".to_owned())),
        ("unknown key", Some(unknown)),
        ("wrong secret", Some(wrong_secret)),
        ("viewer's secret on admin's id", Some(format!("brn_{admin_id}_{}", &viewer[21..]))),
        ("expired", Some(expiring.clone())),
        ("revoked", Some(revoked.clone())),
    ];

    let routes = brain::api::routes().served();
    assert!(routes.len() >= 40, "{routes:?}");
    let mut checked = 0;
    for route in &routes {
        let (method, path) = (route.method.as_str(), fill(&route.path));
        for (who, token) in &refused {
            let (status, body) = call(addr, method, &path, token.as_deref()).await;
            if route.access == Access::Public {
                assert!(status != 401 && status != 403, "{who} {method} {path}: {status} {body}");
            } else {
                assert_eq!(status, 401, "{who} {method} {path}: {body}");
                assert_eq!(body["error"]["code"], "unauthenticated", "{who} {method} {path}");
            }
            checked += 1;
        }
        for (role, token) in &roles {
            let (status, body) = call(addr, method, &path, Some(token)).await;
            let granted = role.permissions();
            let admitted = match route.access {
                Access::Public | Access::Signed => true,
                Access::Any(needed) => needed.iter().any(|p| granted.contains(p)),
            };
            if admitted {
                assert!(
                    status != 401 && status != 403,
                    "{role:?} {method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(status, 403, "{role:?} {method} {path}: {body}");
                assert_eq!(body["error"]["code"], "forbidden", "{role:?} {method} {path}");
                let named = route.access.permissions()[0].as_str();
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(named), "{message} names {named}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * (refused.len() + roles.len()));

    // The document says the same: a security requirement and the permissions on each route.
    let (_, document) = call(addr, "GET", "/openapi.json", None).await;
    for route in &routes {
        let operation = &document["paths"][&route.path][route.method.as_str().to_lowercase()];
        let named: Vec<&str> = operation["x-permissions"]
            .as_array()
            .map(|names| names.iter().map(|n| n.as_str().unwrap()).collect())
            .unwrap_or_default();
        let declared: Vec<&str> = route.access.permissions().iter().map(|p| p.as_str()).collect();
        assert_eq!(named, declared, "{} {}", route.method, route.path);
        let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(secured, route.access != Access::Public, "{} {}", route.method, route.path);
    }
    assert!(document["components"]["securitySchemes"]["key"].is_object(), "{document}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_revocation_is_refused_by_another_serve_within_a_second() {
    let env = TestEnv::new().await;
    let (a, stop_a, task_a) = serve_in_process(services(&env, &redis_url())).await;
    let (b, stop_b, task_b) = serve_in_process(services(&env, &redis_url())).await;

    let token = make_key(a, json!({ "name": "moving", "role": "viewer" })).await;
    wait_until("the other serve to know the new key", WAIT, || async {
        call(b, "GET", "/api/missions", Some(&token)).await.0 == 200
    })
    .await;
    let revoked = client()
        .post(format!("http://{a}/api/keys/{}/revoke", key_id(&token)))
        .json(&json!({ "reason": "left the team" }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    wait_until("the other serve to refuse it", Duration::from_secs(1), || async {
        call(b, "GET", "/api/missions", Some(&token)).await.0 == 401
    })
    .await;
    let (_, body) = call(b, "GET", "/api/missions", Some(&token)).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");

    // Who revoked it and why is in the log.
    let (_, events) = call(a, "GET", "/api/events?limit=1000", Some(ADMIN_TOKEN)).await;
    let revocation = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "ApiKeyRevoked")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(revocation["metadata"]["actor"], crate::support::ADMIN_ACTOR);
    assert_eq!(revocation["payload"]["reason"], "left the team");

    stop_a.cancel();
    stop_b.cancel();
    task_a.await.unwrap().unwrap();
    task_b.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_key_cannot_grant_more_than_it_holds_nor_name_another_actor_without_impersonate() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let head = env.head().await;

    // A key manager that is nothing else cannot mint an admin.
    let manager =
        make_key(addr, json!({ "name": "keys only", "permissions": ["keys.manage"] })).await;
    let minted = client_with(&manager)
        .post(format!("http://{addr}/api/keys"))
        .json(&json!({ "name": "escalated", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 403);
    let body: Value = minted.json().await.unwrap();
    assert_eq!(body["error"]["field"], "permissions", "{body}");
    assert_eq!(env.head().await, head + 1, "only the manager's key was made");

    // A developer may enqueue, but not say it is someone else.
    let developer = make_key(addr, json!({ "name": "dev", "role": "developer" })).await;
    let before = env.head().await;
    let posed = client_with(&developer)
        .post(format!("http://{addr}/api/missions/enqueue"))
        .header("x-actor", "user:ceo")
        .json(&json!({ "name": "as someone else" }))
        .send()
        .await
        .unwrap();
    assert_eq!(posed.status(), 403);
    let body: Value = posed.json().await.unwrap();
    assert_eq!(
        (&body["error"]["code"], &body["error"]["field"]),
        (&json!("forbidden"), &json!("x-actor"))
    );
    assert_eq!(env.head().await, before, "nothing was recorded");
    let honest = client_with(&developer)
        .post(format!("http://{addr}/api/missions/enqueue"))
        .json(&json!({ "name": "as itself" }))
        .send()
        .await
        .unwrap();
    assert_eq!(honest.status(), 201);
    let mission: Value = honest.json().await.unwrap();
    let (_, events) = call(
        addr,
        "GET",
        &format!("/api/missions/{}/events", mission["mission_id"].as_str().unwrap()),
        Some(&developer),
    )
    .await;
    let metadata = &events[0]["metadata"];
    assert_eq!(metadata["actor"], format!("key:{}", key_id(&developer)), "{events}");
    assert_eq!(metadata["actor_name"], "dev", "{metadata}");
    assert!(metadata.get("on_behalf_of").is_none(), "{metadata}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

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

#[tokio::test]
async fn a_first_start_makes_one_admin_key_and_a_sign_in_link_good_once() {
    let env = TestEnv::new().await;
    let options = brain::serve::ServeOptions::new(
        services(&env, &redis_url()),
        "127.0.0.1:0".parse().unwrap(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = brain::serve::start(options.clone(), shutdown.clone()).await.unwrap();
    let first = server.first_key.as_ref().expect("a first start makes a key");
    assert!(!format!("{first:?}").contains(&first.token[21..]), "never shown in Debug");
    let addr = server.local_addr;
    let (status, keys) = call(addr, "GET", "/api/keys", Some(&first.token)).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"][0]["role"], "admin");

    let code = first.sign_in_url.rsplit("#sign-in=").next().unwrap().to_owned();
    let redeem = || async {
        reqwest::Client::new()
            .post(format!("http://{addr}/api/session"))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(redeem().await, 200);
    assert_eq!(redeem().await, 401, "a sign-in link is good once");
    shutdown.cancel();
    server.task.await.unwrap().unwrap();

    // A second start finds the key and makes no other.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let again = brain::serve::start(options, shutdown.clone()).await.unwrap();
    assert!(again.first_key.is_none());
    shutdown.cancel();
    again.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_agent_key_acts_only_for_the_agents_it_registered_and_its_kinds() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let agent_key = |name: &str| json!({ "name": name, "role": "agent", "kinds": ["echo"] });
    let mine = make_key(addr, agent_key("team a")).await;
    let theirs = make_key(addr, agent_key("team b")).await;
    let (a, b) = (client_with(&mine), client_with(&theirs));
    let url = |path: &str| format!("http://{addr}{path}");
    let send = |client: &reqwest::Client, path: &str, body: Value| {
        let request = client.post(url(path)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Registering: only for a kind the key may serve.
    let registration = json!({ "name": "a-1", "kind": "echo", "owner": "team-a" });
    let (status, agent) = send(&a, "/api/agents/register", registration).await;
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    let other_kind = json!({ "name": "a-2", "kind": "coder", "owner": "team-a" });
    let (status, body) = send(&a, "/api/agents/register", other_kind).await;
    assert_eq!((status, &body["error"]["field"]), (403, &json!("kind")), "{body}");

    // Another key cannot speak for it: heartbeat, claim, deregister.
    let beat = json!({ "agent_id": agent_id, "status": "idle" });
    let (status, body) = send(&b, "/api/agents/heartbeat", beat.clone()).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    assert_eq!(send(&a, "/api/agents/heartbeat", beat).await.0, 200);
    let claim = format!("/api/agents/{agent_id}/claim");
    assert_eq!(send(&b, &claim, json!({})).await.0, 403);
    let (status, body) = send(&a, &format!("{claim}?kinds=coder"), json!({})).await;
    assert_eq!((status, &body["error"]["field"]), (403, &json!("kinds")), "{body}");
    let deregister = format!("/api/agents/{agent_id}/deregister");
    assert_eq!(send(&b, &deregister, json!({})).await.0, 403);

    // Its own key claims, and only it reports on the lease.
    let (status, mission) =
        crate::missions_api::post(addr, "/api/missions/enqueue", r#"{"name":"m","agent":"echo"}"#)
            .await;
    assert_eq!(status, 201, "{mission}");
    // The queue is a read model a moment behind the log: the claim waits for it.
    let (status, claimed) = send(&a, &format!("{claim}?wait_s=10"), json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    let mission_id = claimed["mission_id"].as_str().unwrap();
    let report = json!({ "lease_token": claimed["lease_token"], "result": { "forged": true } });
    let complete = format!("/api/missions/{mission_id}/complete");
    let (status, body) = send(&b, &complete, report.clone()).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    let (status, done) = send(&a, &complete, report).await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")), "{done}");
    // An agent key is an agent: it enqueues nothing.
    let (status, _) = send(&a, "/api/missions/enqueue", json!({ "name": "x" })).await;
    assert_eq!(status, 403);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_kind_an_allowed_agent_key_registers_is_known_to_every_serve_within_a_second() {
    let env = TestEnv::new().await;
    let (a, stop_a, task_a) = serve_in_process(services(&env, &redis_url())).await;
    let (b, stop_b, task_b) = serve_in_process(services(&env, &redis_url())).await;
    let enqueue = |addr: SocketAddr| async move {
        let body = json!({ "name": "translate this", "agent": "translator" });
        let response =
            client().post(format!("http://{addr}/api/missions/enqueue")).json(&body).send().await;
        let response = response.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = enqueue(b).await;
    assert_eq!((status, &body["error"]["code"]), (422, &json!("unknown_agent")), "{body}");

    // A key for another kind may not bring this one in; one scoped to it may.
    let echo = make_key(a, json!({ "name": "echoes", "role": "agent", "kinds": ["echo"] })).await;
    let register = |token: String, kind: &str| {
        let body = json!({ "kind": kind });
        async move {
            let response = client_with(&token)
                .post(format!("http://{a}/api/agent-kinds"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = register(echo, "translator").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    let translators =
        make_key(a, json!({ "name": "translators", "role": "agent", "kinds": ["translator"] }))
            .await;
    let (status, body) = register(translators.clone(), "translator").await;
    assert_eq!(status, 201, "{body}");
    assert!(body["registered"].as_array().unwrap().contains(&json!("translator")), "{body}");
    assert_eq!(register(translators, "translator").await.0, 200, "known already");

    wait_until("the other serve to know the kind", Duration::from_secs(1), || async {
        enqueue(b).await.0 == 201
    })
    .await;
    let (_, kinds) = call(b, "GET", "/api/agent-kinds", Some(ADMIN_TOKEN)).await;
    assert!(kinds["kinds"].as_array().unwrap().contains(&json!("translator")), "{kinds}");

    // Removed by an admin, with why: new missions are refused again, everywhere.
    let removed = client()
        .post(format!("http://{a}/api/agent-kinds/translator/remove"))
        .json(&json!({ "reason": "the team moved on" }))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    wait_until("the other serve to forget the kind", Duration::from_secs(1), || async {
        enqueue(b).await.0 == 422
    })
    .await;

    stop_a.cancel();
    stop_b.cancel();
    task_a.await.unwrap().unwrap();
    task_b.await.unwrap().unwrap();
}
