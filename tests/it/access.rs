//! Who may call what, tried as an attacker would: every route of the route list against
//! every kind of caller (none, a malformed token, an unknown key, a wrong secret, an expired
//! and a revoked key, each role), a revocation followed by a second serve, a key granting
//! more than it holds, `X-Actor` without `impersonate`, and a first start's admin key.
//! Sessions, `Origin` and `Host` are in `access_sessions`; agent keys in `access_agents`.

use std::time::Duration;

use brain::api::Access;
use domain::api_key::{Permission, Role};
use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{
    ADMIN_TOKEN, TestEnv, call, client, client_with, key_id, make_key, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

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
                Access::Admin => Permission::ALL.iter().all(|p| granted.contains(p)),
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
