//! The OpenAPI document at `GET /openapi.json` against the router that serves it: every route
//! of the route list the router is built from is documented with its method, every documented
//! operation is routed, no other method is routed on a documented path, every error answer is
//! documented with the error shape, and the Swagger UI at `/docs` works offline.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::{Value, json};

use crate::missions_api::post;
use crate::serve::{crypto_provider, get, redis_url, serve_in_process, services};
use crate::support::{ADMIN_TOKEN, TestEnv, call};

/// The operations a document describes, as (method, path).
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
                .contains(&method.as_str())
            {
                operations.insert((method.clone(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves_and_nothing_else() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let (status, document) = get(addr, "/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );

    // (a) The route list the router is built from, against the document it serves.
    let served: BTreeSet<(String, String)> = brain::api::routes()
        .served()
        .into_iter()
        .map(|route| (route.method.as_str().to_lowercase(), route.path))
        .collect();
    let documented = documented(&document);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in the document: {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "in the document but not in the route list: {unserved:?}");
    for expected in [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/api/events"),
        ("get", "/api/stats/event-types"),
        ("get", "/api/missions"),
        ("post", "/api/missions/enqueue"),
        ("post", "/api/missions/enqueue/batch"),
        ("get", "/api/missions/{mission_id}"),
        ("get", "/api/missions/{mission_id}/events"),
        ("post", "/api/missions/{mission_id}/cancel"),
        ("post", "/api/missions/{mission_id}/retry"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(served.contains(&expected), "{expected:?} missing from the route list");
    }

    // (b) Every documented operation is routed: whatever it answers, it is not the router's
    // "no such route" or "no such method". Path parameters name a mission that exists.
    let (status, mission) =
        post(addr, "/api/missions/enqueue", &json!({ "name": "probe" }).to_string()).await;
    assert_eq!(status, 201, "{mission}");
    let mission_id = mission["mission_id"].as_str().unwrap();
    let fill = |path: &str| -> String {
        let mut filled = String::new();
        for (n, part) in path.split('{').enumerate() {
            match (n, part.split_once('}')) {
                (0, _) | (_, None) => filled.push_str(part),
                (_, Some((_, rest))) => {
                    filled.push_str(mission_id);
                    filled.push_str(rest);
                }
            }
        }
        filled
    };
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for (method, path) in &documented {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = call(addr, method.as_str(), &fill(path), Some(ADMIN_TOKEN)).await;
        let unrouted = status == 405 || (status == 404 && body["error"]["code"] == "no_route");
        assert!(!unrouted, "{method} {path} answered {status}: {body}");
    }
    // And no documented path answers a method the document does not list for it.
    for path in paths {
        for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            if documented.contains(&(method.as_str().to_lowercase(), path.clone())) {
                continue;
            }
            let (status, body) = call(addr, method.as_str(), &fill(path), Some(ADMIN_TOKEN)).await;
            assert_eq!(status, 405, "{method} {path} is routed but not documented: {body}");
            assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        }
    }

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn every_operation_documents_its_answers_and_errors_have_the_error_shape() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let (_, document) = get(addr, "/openapi.json").await;
    let error_ref = "#/components/schemas/ErrorBody";
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert!(error_body.is_object(), "ErrorBody is a component: {}", document["components"]);
    let detail = &document["components"]["schemas"]["ErrorDetail"];
    let required: Vec<&str> =
        detail["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["code", "message"], "{detail}");
    for field in ["code", "message", "field", "items"] {
        assert!(detail["properties"][field].is_object(), "ErrorDetail.{field}: {detail}");
    }

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().expect("responses");
            // A WebSocket route's success is its `101 Switching Protocols`.
            assert!(
                responses.keys().any(|status| status.starts_with('2') || status == "101"),
                "{method} {path} documents no success"
            );
            for (status, response) in responses {
                assert!(
                    response["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
                // `/ready`'s 503 is its own report, not an error of the request.
                let is_error = status.starts_with('4') || status == "500";
                if is_error {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, error_ref, "{method} {path} {status}: {response}");
                }
            }
            // Whatever reads or writes the store can fail on our side, and says so.
            if path.starts_with("/api/") {
                assert!(responses.contains_key("500"), "{method} {path} documents no 500");
            }
            if operation.get("requestBody").is_some_and(|body| body["required"] == true) {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path}: no {status}");
                }
            }
        }
    }
    // Every schema referred to is in the document.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in found {
        let name = target.strip_prefix("#/components/schemas/").expect("a schema reference");
        assert!(document["components"]["schemas"][name].is_object(), "{target} is dangling");
    }
    // Schemas the API answers with are there and describe their fields.
    let mission = &document["components"]["schemas"]["MissionView"]["properties"];
    assert_eq!(mission["status"]["$ref"], "#/components/schemas/MissionStatus", "{mission}");
    let status = &document["components"]["schemas"]["MissionStatus"]["enum"];
    assert!(status.as_array().unwrap().contains(&json!("queued")), "{status}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_docs_ui_answers_html_from_files_compiled_in_and_unknown_routes_get_the_error_shape() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    crypto_provider();

    // `/docs` redirects to `/docs/`, whose page loads its scripts relative to itself.
    let response =
        crate::support::client().get(format!("http://{addr}/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/docs/");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    // The console's protections: its own files only, never framed.
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("https://"), "the page loads nothing from elsewhere: {page}");
    for (file, needle) in [
        ("swagger-ui-bundle.js", "SwaggerUIBundle"),
        ("swagger-ui.css", ".swagger-ui"),
        ("swagger-initializer.js", "/openapi.json"),
    ] {
        let response = crate::support::client()
            .get(format!("http://{addr}/docs/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
        assert!(response.text().await.unwrap().contains(needle), "{file} lacks {needle}");
    }

    let (status, body) = get(addr, "/api/nothing-here").await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("no_route")), "{body}");
    let (status, body) = post(addr, "/health", "{}").await;
    assert_eq!((status, &body["error"]["code"]), (405, &json!("method_not_allowed")), "{body}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
