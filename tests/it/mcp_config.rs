//! The MCP servers' configuration over HTTP (`/api/tools/mcp`): an admin's change is
//! recorded with who and which servers; every other caller (no key, a key without every
//! permission, a foreign page) and every hostile value (a relative command, a secret given as
//! a header's literal value, the process's own secrets, a huge configuration) is refused and
//! changes nothing.

use serde_json::{Value, json};

use crate::serve::{redis_url, serve_in_process, services};
use crate::support::{ADMIN_ACTOR, ADMIN_TOKEN, TestEnv, make_key};

/// `PUT /api/tools/mcp` with `body`, as `token` (none: no key), from `origin` if given.
pub async fn put_as(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> (u16, Value) {
    crate::serve::crypto_provider();
    let mut request = reqwest::Client::new()
        .put(format!("http://{addr}/api/tools/mcp"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `PUT /api/tools/mcp` as the admin.
pub async fn put(addr: std::net::SocketAddr, settings: &Value) -> (u16, Value) {
    put_as(addr, Some(ADMIN_TOKEN), None, &settings.to_string()).await
}

async fn config_events(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_type = 'mcp_config'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

fn good() -> Value {
    json!({ "servers": {
        "time": { "transport": "stdio", "command": "/usr/bin/true", "args": ["--local-timezone", "UTC"],
            "env": ["PATH"], "agent_kinds": ["coder"], "tools": ["get_current_time"] },
        "web": { "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp",
            "headers": { "Authorization": { "from_env": "TEST_MCP_TOKEN", "scheme": "Bearer" } },
            "agent_kinds": ["coder", "ops"], "call_timeout_ms": 5000, "concurrency": 2 } } })
}

#[tokio::test]
async fn only_an_admin_changes_the_mcp_servers_and_each_change_is_recorded_with_who() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    // Given a fresh deployment: no server.
    let (status, view) = crate::serve::get(addr, "/api/tools/mcp").await;
    assert_eq!(
        (status, &view["settings"]["servers"], &view["version"]),
        (200, &json!({}), &json!(0))
    );

    // When callers other than an admin try, then they are refused and nothing is recorded.
    let operator = make_key(addr, json!({ "name": "ops", "role": "operator" })).await;
    let developer = make_key(addr, json!({ "name": "dev", "role": "developer" })).await;
    let body = good().to_string();
    for (who, token, origin, expected) in [
        ("no key", None, None, 401),
        ("an operator", Some(operator.as_str()), None, 403),
        ("a developer", Some(developer.as_str()), None, 403),
        ("a foreign page", Some(ADMIN_TOKEN), Some("http://evil.example"), 403),
    ] {
        let (status, answer) = put_as(addr, token, origin, &body).await;
        assert_eq!(status, expected, "{who}: {answer}");
    }
    // The read is open to any key that reads agents, not to no key.
    let (status, _) = crate::support::call(addr, "GET", "/api/tools/mcp", None).await;
    assert_eq!(status, 401);
    let (status, _) = crate::support::call(addr, "GET", "/api/tools", Some(&developer)).await;
    assert_eq!(status, 200);
    assert_eq!(config_events(&env).await, 0, "nothing was recorded");

    // When the admin sets two servers, then the change names them and who made it.
    let (status, view) = put(addr, &good()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["version"], 1);
    assert_eq!(view["settings"], good());
    let change = &view["history"][0];
    assert_eq!(
        (&change["by"], &change["changed"], &change["event_type"]),
        (&json!(ADMIN_ACTOR), &json!(["time", "web"]), &json!("McpConfigChanged"))
    );
    // The same settings again record nothing; a change to one server names only it.
    assert_eq!(put(addr, &good()).await.1["version"], 1);
    let mut second = good();
    second["servers"]["web"]["agent_kinds"] = json!(["coder"]);
    let (status, view) = put(addr, &second).await;
    assert_eq!((status, &view["history"][1]["changed"]), (200, &json!(["web"])), "{view}");
    let (status, read) = crate::support::call(addr, "GET", "/api/tools/mcp", Some(&operator)).await;
    assert_eq!((status, &read["version"]), (200, &json!(2)), "{read}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn hostile_mcp_settings_are_refused_naming_the_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;

    let with = |server: &str, patch: Value| {
        let mut body = good();
        let entry = body["servers"][server].as_object_mut().unwrap();
        for (key, value) in patch.as_object().unwrap() {
            entry.insert(key.clone(), value.clone());
        }
        body
    };
    for (body, field) in [
        (with("time", json!({ "command": "mcp-server-time" })), "servers.time.command"),
        (with("time", json!({ "command": "/bin/sh -c 'curl evil'" })), "servers.time.command"),
        (with("time", json!({ "cwd": "../.." })), "servers.time.cwd"),
        (with("time", json!({ "env": ["PATH", "DATABASE_URL"] })), "servers.time.env[1]"),
        (with("time", json!({ "env": ["BRAIN_ADMIN_KEY"] })), "servers.time.env[0]"),
        (with("time", json!({ "agent_kinds": [] })), "servers.time.agent_kinds"),
        (with("web", json!({ "url": "file:///etc/passwd" })), "servers.web.url"),
        (
            with(
                "web",
                json!({ "headers": { "Authorization": { "from_env": "OPENAI_API_KEY" } } }),
            ),
            "servers.web.headers.Authorization.from_env",
        ),
        (
            with(
                "web",
                json!({ "headers": { "X-Key": { "from_env": "T", "scheme": "sk-live-123" } } }),
            ),
            "servers.web.headers.X-Key.scheme",
        ),
        (with("web", json!({ "call_timeout_ms": 86_400_000 })), "servers.web.call_timeout_ms"),
        (json!({ "servers": { "Bad_Name": good()["servers"]["time"] } }), "servers.Bad_Name"),
    ] {
        let (status, answer) = put(addr, &body).await;
        assert_eq!((status, &answer["error"]["field"]), (422, &json!(field)), "{body}: {answer}");
    }
    // A NUL no store can hold is refused at the edge, naming the field.
    let (status, answer) = put(addr, &with("time", json!({ "args": ["a\u{0}b"] }))).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("servers.time.args[0]")),
        "{answer}"
    );
    // A secret given as a header's literal value, or a field the transport does not know,
    // does not even parse.
    for body in [
        with("web", json!({ "headers": { "Authorization": "Bearer ghp_0123456789" } })),
        with("time", json!({ "shell": true })),
    ] {
        let (status, answer) = put(addr, &body).await;
        assert_eq!((status, &answer["error"]["code"]), (422, &json!("invalid_body")), "{answer}");
        assert!(!answer.to_string().contains("ghp_0123456789"), "{answer}");
    }
    // Too many servers, and a body past the server's size limit.
    let many: serde_json::Map<String, Value> =
        (0..=32).map(|n| (format!("s{n}"), good()["servers"]["time"].clone())).collect();
    let (status, answer) = put(addr, &json!({ "servers": many })).await;
    assert_eq!((status, &answer["error"]["field"]), (422, &json!("servers")), "{answer}");
    let huge = json!({ "servers": { "time": { "transport": "stdio", "command": "/bin/x",
        "args": ["x".repeat(8 * 1024 * 1024)], "agent_kinds": ["coder"] } } });
    let (status, _) = put(addr, &huge).await;
    assert!(status == 413 || status == 422, "{status}");

    assert_eq!(config_events(&env).await, 0, "nothing was recorded");
    let (_, view) = crate::serve::get(addr, "/api/tools/mcp").await;
    assert_eq!(view["settings"]["servers"], json!({}));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
