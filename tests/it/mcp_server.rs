//! BRAiN as an MCP server, driven by MCP clients no one here wrote: the official Python
//! `mcp` package (`tests/it/mcp/drive.py`) over streamable HTTP at `/mcp` and through
//! `brain mcp` over stdio, and `rmcp`'s own client for the refusals. Each refusal of the gate
//! (no key, a key without the permission, another key's session, a foreign `Origin`, hostile
//! arguments, too many sessions) is a test of its own, and each checks nothing changed.

use std::net::SocketAddr;
use std::time::Duration;

use brain::api::mcp::{BODY_BYTES_MAX, SESSIONS_MAX};
use brain::serve::ServeOptions;
use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::serve::serve_with_echo;
use crate::serve::{redis_url, serve_with_options, services};
use crate::support::{ADMIN_TOKEN, TestEnv, call, client, key_id, make_key};

/// Longest a driven run of the Python client may take.
const DRIVE_TIMEOUT: Duration = Duration::from_secs(240);
/// Echo missions the HTTP run times.
const TIMED_RUNS: &str = "20";

/// The Python driver, `drive.py ARGS`: its report (the last line of its stdout).
async fn drive(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/mcp/drive.py");
    let run =
        tokio::process::Command::new("python3").arg(script).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(DRIVE_TIMEOUT, run).await.expect("drive.py ends").unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "drive.py failed\nstdout: {stdout}\nstderr: {stderr}");
    // The timing line, for whoever runs the test with --nocapture.
    eprintln!("{}", stderr.trim());
    serde_json::from_str(stdout.lines().last().expect("a report")).expect("a JSON report")
}

/// The events of a mission, as the HTTP API gives them.
async fn events_of(addr: SocketAddr, mission_id: &str) -> Vec<Value> {
    let url = format!("http://{addr}/api/missions/{mission_id}/events");
    let body: Value = client().get(url).send().await.unwrap().json().await.unwrap();
    body.as_array().expect("events").clone()
}

/// How many missions the serve has (as the list read model has caught up to the log).
async fn missions_total(addr: SocketAddr) -> u64 {
    let body: Value = client()
        .get(format!("http://{addr}/api/missions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["total"].as_u64().expect("a total")
}

/// How many `MissionEnqueued` events the log holds: what nothing-changed checks count.
async fn enqueued_events(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MissionEnqueued'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// `rmcp`'s client, connected to the serve's `/mcp` with `token`.
async fn rmcp_client(addr: SocketAddr, token: &str) -> RunningService<RoleClient, ()> {
    crate::serve::crypto_provider();
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
        .auth_header(token.to_owned());
    ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("an MCP session")
}

async fn tool(
    client: &RunningService<RoleClient, ()>,
    name: &'static str,
    arguments: Value,
) -> CallToolResult {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    let params = CallToolRequestParams::new(name).with_arguments(arguments);
    client.peer().call_tool(params).await.expect("a tool result")
}

/// The error body of a refused tool call.
fn refusal(result: &CallToolResult) -> &Value {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    &result.structured_content.as_ref().expect("an error body")["error"]
}

/// A raw MCP `initialize` POST, as a browser page or a script could send it.
fn initialize(addr: SocketAddr) -> reqwest::RequestBuilder {
    crate::serve::crypto_provider();
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}
        }
    });
    reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// A sessionless (2026-07-28) `tools/call` as a raw POST: its answer begins only with the
/// call's first message, and carries no progress token.
async fn raw_call(addr: SocketAddr, token: &str, name: &str, arguments: Value) -> Value {
    crate::serve::crypto_provider();
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}
    });
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": meta}
    });
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let last = text.lines().filter_map(|line| line.strip_prefix("data:")).next_back();
    let message: Value = serde_json::from_str(last.expect("a message").trim()).unwrap();
    message["result"].clone()
}

/// A mission that will not run for a long while: something to wait on.
async fn pending_mission(addr: SocketAddr) -> String {
    let body = json!({"name": "later", "agent": "echo", "not_before": "2999-01-01T00:00:00Z"});
    let url = format!("http://{addr}/api/missions/enqueue");
    let enqueued: Value =
        client().post(url).json(&body).send().await.unwrap().json().await.unwrap();
    enqueued["mission_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_python_mcp_client_enqueues_waits_with_progress_and_reads_result_and_history() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let developer = make_key(addr, json!({ "name": "assistant", "role": "developer" })).await;

    let url = format!("http://{addr}/mcp");
    let report = drive(&["http", &url, &developer, TIMED_RUNS]).await;

    // The mission the client followed ran to its end with the client's key as its actor,
    // exactly as an enqueue over HTTP records it.
    let mission_id = report["mission_id"].as_str().unwrap();
    let events = events_of(addr, mission_id).await;
    let actor = format!("key:{}", key_id(&developer));
    assert_eq!(events[0]["metadata"]["actor"], actor.as_str());
    assert_eq!(events[0]["metadata"]["actor_name"], "assistant");
    assert_eq!(report["enqueued_by"], actor.as_str());
    assert_eq!(events.last().unwrap()["event_type"], "MissionCompleted");
    assert!(report["progress_notifications"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["latency_ms"]["runs"], 20);
}

#[tokio::test]
async fn the_python_mcp_client_drives_brain_mcp_over_stdio() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let developer = make_key(addr, json!({ "name": "local editor", "role": "developer" })).await;

    let brain = env!("CARGO_BIN_EXE_brain");
    let report = drive(&["stdio", brain, &format!("http://{addr}"), &developer, "3"]).await;

    // Relayed, the mission is still the key's own: one implementation of the tools.
    let events = events_of(addr, report["mission_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["metadata"]["actor"], format!("key:{}", key_id(&developer)).as_str());
    assert_eq!(report["history"].as_array().unwrap().last().unwrap(), "MissionCompleted");
    assert!(report["progress_notifications"].as_u64().unwrap() >= 1, "{report}");
}

#[tokio::test]
async fn a_request_without_a_key_or_with_a_wrong_one_is_refused() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;

    for (status, body) in [call(addr, "POST", "/mcp", None).await, {
        let wrong = format!("brn_{}_{}", key_id(ADMIN_TOKEN), "2".repeat(64));
        call(addr, "POST", "/mcp", Some(&wrong)).await
    }] {
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    }
    let answer = initialize(addr).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(enqueued_events(&env).await, 0);
}

#[tokio::test]
async fn a_key_without_the_permission_has_the_tool_call_refused_and_nothing_is_enqueued() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let viewer = make_key(addr, json!({ "name": "reader", "role": "viewer" })).await;
    let client = rmcp_client(addr, &viewer).await;

    let refused =
        tool(&client, "enqueue_mission", json!({"name": "sneaky", "agent": "echo"})).await;
    let error = refusal(&refused);
    assert_eq!(error["code"], "forbidden", "{error}");
    assert!(error["message"].as_str().unwrap().contains("missions.write"), "{error}");
    let refused = tool(&client, "chat", json!({"agent": "coder", "message": "hi"})).await;
    assert_eq!(refusal(&refused)["code"], "forbidden");
    assert_eq!(enqueued_events(&env).await, 0, "nothing enqueued");

    // What the viewer may do, it may: the same key reads the (empty) list.
    let listed = tool(&client, "list_missions", json!({})).await;
    assert_eq!(listed.is_error, Some(false), "{listed:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_mission_is_unreadable_to_a_key_without_missions_read_and_a_session_to_another_key() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let owner = rmcp_client(addr, ADMIN_TOKEN).await;
    let enqueued =
        tool(&owner, "enqueue_mission", json!({"name": "private", "agent": "echo"})).await;
    let mission_id =
        enqueued.structured_content.unwrap()["mission_id"].as_str().unwrap().to_owned();

    // A key that may chat but not read missions: neither the tool nor the resource answers.
    let chatter = make_key(addr, json!({ "name": "chatter", "permissions": ["llm.call"] })).await;
    let other = rmcp_client(addr, &chatter).await;
    let refused = tool(&other, "get_mission", json!({"mission_id": mission_id})).await;
    assert_eq!(refusal(&refused)["code"], "forbidden");
    let refused = tool(&other, "wait_for_mission", json!({"mission_id": mission_id})).await;
    assert_eq!(refusal(&refused)["code"], "forbidden");
    let uri = format!("brain://missions/{mission_id}/history");
    let read = other.peer().read_resource(ReadResourceRequestParams::new(uri.clone())).await;
    let error = format!("{:?}", read.expect_err("refused"));
    assert!(error.contains("forbidden"), "{error}");
    let listed = other.peer().list_resources(None).await;
    assert!(format!("{:?}", listed.expect_err("refused")).contains("forbidden"));

    // A session is its key's: another key presenting its id is refused.
    let opened = initialize(addr).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = opened.text().await;
    let read =
        json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}});
    let hijack = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(&chatter)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(read.to_string())
        .send()
        .await
        .unwrap();
    let answer = hijack.text().await.unwrap();
    assert!(answer.contains("another key opens its own"), "{answer}");
    assert!(!answer.contains("MissionEnqueued"), "{answer}");
    other.cancel().await.unwrap();
    owner.cancel().await.unwrap();
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;

    let refused = initialize(addr)
        .bearer_auth(ADMIN_TOKEN)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_refused", "{body}");
    // The serve's own origin passes, as for every route.
    let own = initialize(addr)
        .bearer_auth(ADMIN_TOKEN)
        .header("origin", format!("http://{addr}"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn hostile_arguments_get_clear_errors_naming_the_field_and_change_nothing() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let client = rmcp_client(addr, ADMIN_TOKEN).await;
    let unknown = "00000000-0000-7000-8000-000000000000";

    let huge = "x".repeat(300_000);
    let cases = [
        ("enqueue_mission", json!({"name": "a", "force": true}), "force"),
        ("enqueue_mission", json!({"name": huge}), "name"),
        ("enqueue_mission", json!({"name": "a", "agent": "no-such-kind"}), "agent"),
        ("enqueue_mission", json!({"name": "a", "timeout_s": 0}), "timeout_s"),
        ("enqueue_mission", json!({"name": "a\u{0}b"}), "name"),
        ("enqueue_mission", json!({}), "name"),
        ("get_mission", json!({"mission_id": "../../etc/passwd"}), "mission_id"),
        ("cancel_mission", json!({"mission_id": "1; DROP TABLE events"}), "mission_id"),
        ("cancel_mission", json!({"mission_id": unknown, "reason": "r".repeat(5_000)}), "reason"),
        ("wait_for_mission", json!({"mission_id": unknown, "timeout_s": 36_000}), "timeout_s"),
        ("list_missions", json!({"limit": 100_000}), "limit"),
        ("list_missions", json!({"status": "lost"}), "status"),
        ("list_agents", json!({"state": "asleep"}), "state"),
        ("chat", json!({"agent": "coder", "message": "hi", "stream": true}), "stream"),
    ];
    for (name, arguments, field) in cases {
        let refused = tool(&client, name, arguments).await;
        let error = refusal(&refused);
        let named = error["field"].as_str().is_some_and(|f| f.contains(field))
            || error["message"].as_str().is_some_and(|m| m.contains(field));
        assert!(named, "{name} {field}: {error}");
    }
    let missing = tool(&client, "get_mission", json!({"mission_id": unknown})).await;
    assert_eq!(refusal(&missing)["code"], "mission_not_found");

    // A body past the bound is refused before the protocol reads it.
    let oversized = json!({
        "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "enqueue_mission", "arguments": {"name": "x".repeat(BODY_BYTES_MAX)}}
    });
    let answer = initialize(addr).bearer_auth(ADMIN_TOKEN).body(oversized.to_string()).send();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 413);

    assert_eq!(enqueued_events(&env).await, 0, "nothing enqueued");
    assert_eq!(missions_total(addr).await, 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn sessions_are_bounded_and_a_closed_one_makes_room() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;

    let mut sessions = Vec::new();
    for _ in 0..SESSIONS_MAX {
        let opened = initialize(addr).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(opened.status(), 200);
        sessions.push(opened.headers()["mcp-session-id"].to_str().unwrap().to_owned());
        let _ = opened.text().await;
    }
    let refused = initialize(addr).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_clients", "{body}");

    // Closing one (DELETE, as clients end a session) makes room for the next.
    let closed = reqwest::Client::new()
        .delete(format!("http://{addr}/mcp"))
        .bearer_auth(ADMIN_TOKEN)
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    crate::support::wait_until(
        "a closed session's place is free",
        Duration::from_secs(10),
        || async {
            initialize(addr).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status() == 200
        },
    )
    .await;
}

#[tokio::test]
async fn a_wait_longer_than_the_request_deadline_is_answered_not_cut() {
    let env = TestEnv::new().await;
    let mut options =
        ServeOptions::new(services(&env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    options.http.request_timeout_ms = 1_000;
    let (addr, _shutdown, _task) = serve_with_options(options).await;
    let mission_id = pending_mission(addr).await;

    // No progress token, so nothing is sent before the answer, three deadlines later.
    let arguments = json!({"mission_id": mission_id, "timeout_s": 3});
    let result = raw_call(addr, ADMIN_TOKEN, "wait_for_mission", arguments).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"]["finished"], false, "{result}");
    assert_eq!(result["structuredContent"]["mission"]["status"], "pending", "{result}");
}

// The serve runs in the test's runtime: its calls in flight, their polls of the store and the
// probes are served on two threads, as a serve's runtime has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_bounded_and_a_finished_one_makes_room() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let mission_id = pending_mission(addr).await;

    let wait = || {
        let arguments = json!({"mission_id": mission_id, "timeout_s": 60});
        tokio::spawn(raw_call(addr, ADMIN_TOKEN, "wait_for_mission", arguments))
    };
    let mut waits: Vec<_> = (0..brain::api::mcp::CALLS_MAX).map(|_| wait()).collect();
    // Once every place is held, the next call is refused at once. A wait that arrived while
    // a probe held a place was refused (it ended): it is sent again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for held in waits.iter_mut().filter(|held| held.is_finished()) {
            *held = wait();
        }
        let result = raw_call(addr, ADMIN_TOKEN, "list_agents", json!({})).await;
        if result["structuredContent"]["error"]["code"] == "too_many_clients" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "every MCP call place held: {result}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The mission cancelled, the waits answer and give their places back.
    let url = format!("http://{addr}/api/missions/{mission_id}/cancel");
    assert_eq!(client().post(url).send().await.unwrap().status(), 200);
    for wait in waits {
        let result = wait.await.unwrap();
        assert_eq!(result["structuredContent"]["mission"]["status"], "cancelled", "{result}");
    }
    let result = raw_call(addr, ADMIN_TOKEN, "list_agents", json!({})).await;
    assert_eq!(result["isError"], false, "{result}");
}
