//! MCP servers as agents' tools, against the reference servers no one here wrote:
//! `mcp-server-time` (PyPI, stdio) and `@modelcontextprotocol/server-everything` (npm, stdio
//! and streamable HTTP). A coder mission whose (fake) model asks for a tool of each completes
//! with the tools' real results in its history; an argument breaking a schema and a tool off
//! the allow-list are refused before anything is sent; a server of another agent kind is not
//! offered; the stdio server killed in the middle of a call is restarted and the next call
//! works; the run replays `identical` with every server stopped, and a fork calls a server
//! only after its fork point; an HTTP server that forgot its session gets a new one at once
//! when it answers 404 as the protocol asks (server-everything answers 400: one call fails,
//! retryable, then a new session); a tool a server adds is offered once the server says its
//! list changed.
//! Hostile stand-ins (tiny
//! Python scripts under `tests/it/mcp/`) that never answer `initialize`, answer garbage or
//! answer megabytes are bounded and reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brain::serve::ServeOptions;
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::{get, redis_url, serve_with_options, services};
use crate::support::{TestEnv, wait_until};
use crate::workers::{enqueue, mission, mission_status, tool_calls};

/// Long enough for a cold Python start on a busy machine (the servers' initialize timeout).
const WAIT: Duration = Duration::from_secs(60);

/// Where `scripts/services.sh` installed the npm reference server.
fn everything_js() -> String {
    let dir = std::env::var("BRAIN_TEST_MCP_DIR").unwrap_or_else(|_| "/opt/brain-test/mcp".into());
    format!("{dir}/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// The absolute path of `program` on `PATH`.
fn on_path(program: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').map(|dir| PathBuf::from(dir).join(program)).find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{program} is not on PATH")).display().to_string()
}

/// `mcp-server-time` itself: through pyenv's shim (a shell script needing pyenv's
/// environment) to the program it runs, whose interpreter is named by an absolute path.
fn time_server() -> String {
    let which = Command::new("pyenv").args(["which", "mcp-server-time"]).output();
    match which {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        _ => on_path("mcp-server-time"),
    }
}

fn stand_in(name: &str) -> String {
    format!("{}/tests/it/mcp/{name}.py", env!("CARGO_MANIFEST_DIR"))
}

/// server-everything over streamable HTTP on a free port, killed when dropped.
struct HttpEverything {
    child: Child,
    port: u16,
}

impl HttpEverything {
    async fn start() -> HttpEverything {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        HttpEverything::start_on(port).await
    }

    /// A fresh server on `port`: it knows no session of the one before.
    async fn start_on(port: u16) -> HttpEverything {
        let child = Command::new(on_path("node"))
            .args([everything_js().as_str(), "streamableHttp"])
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server-everything starts");
        wait_until("server-everything to listen", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        HttpEverything { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for HttpEverything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serve whose workers run the built-in `coder` and `ops` agents.
async fn serve_thinking_agents(
    env: &TestEnv,
) -> (SocketAddr, tokio_util::sync::CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>)
{
    let mut options =
        ServeOptions::new(services(env, &redis_url()), "127.0.0.1:0".parse().unwrap());
    let kinds = brain::config::agents::AgentSpec::parse("coder, ops").unwrap();
    options.run_workers(kinds, 2).worker_id = format!("w-{}", uuid::Uuid::now_v7().simple());
    serve_with_options(options).await
}

fn stdio(command: &str, args: &[&str], kinds: &[&str], tools: Option<&[&str]>) -> Value {
    let mut server = json!({ "transport": "stdio", "command": command, "args": args,
        "agent_kinds": kinds });
    if let Some(tools) = tools {
        server["tools"] = json!(tools);
    }
    server
}

/// The MCP server `name` as `GET /api/tools` shows it.
async fn server(addr: SocketAddr, name: &str) -> Value {
    let (status, tools) = get(addr, "/api/tools").await;
    assert_eq!(status, 200, "{tools}");
    let servers = tools["servers"].as_array().unwrap();
    servers.iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
}

async fn wait_state(addr: SocketAddr, name: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = server(addr, name).await;
        if seen["state"] == state {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "MCP server {name} is not {state} after {WAIT:?}: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mission once it has finished, waiting up to [`WAIT`]: its servers may be starting
/// cold on a busy machine.
async fn finished(addr: SocketAddr, id: &str) -> Value {
    wait_until("the mission to finish", WAIT, || async {
        matches!(mission_status(addr, id).await.as_str(), "completed" | "failed")
    })
    .await;
    mission(addr, id).await
}

fn tool_answer(calls: Vec<(&str, Value)>) -> Scripted {
    let tool_calls = calls.into_iter().map(|(name, args)| (name.to_owned(), args)).collect();
    Scripted::Answer { text: String::new(), tool_calls, usage: (30, 10) }
}

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test]
async fn a_coder_uses_real_mcp_servers_survives_a_killed_one_and_replays_identical_without_them() {
    let env = TestEnv::new().await;
    let http = HttpEverything::start().await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let (node, everything) = (on_path("node"), everything_js());
    let settings = json!({ "servers": {
        "time": stdio(&time_server(), &["--local-timezone", "UTC"], &["coder"], Some(&["get_current_time"])),
        "every": stdio(&node, &[&everything, "stdio"], &["coder"],
            Some(&["echo", "trigger-long-running-operation"])),
        "web": { "transport": "streamable_http", "url": http.url(), "agent_kinds": ["coder"],
            "tools": ["echo"] },
        "opsonly": stdio(&time_server(), &[], &["ops"], None),
    } });
    let (status, answer) = crate::mcp_config::put(addr, &settings).await;
    assert_eq!(status, 200, "{answer}");
    for name in ["time", "every", "web", "opsonly"] {
        wait_state(addr, name, "ready").await;
    }
    let killed = server(addr, "every").await["pid"].as_i64().expect("a stdio server's pid");

    let script = vec![
        tool_answer(vec![
            ("time__get_current_time", json!({ "timezone": "UTC" })),
            ("every__echo", json!({ "message": "from stdio" })),
            ("web__echo", json!({ "message": "from http" })),
            ("time__get_current_time", json!({ "timezone": 5 })),
            (
                "time__convert_time",
                json!({ "source_timezone": "UTC", "time": "12:00",
                "target_timezone": "Europe/Paris" }),
            ),
        ]),
        tool_answer(vec![(
            "every__trigger-long-running-operation",
            json!({ "duration": 120, "steps": 120 }),
        )]),
        tool_answer(vec![("every__echo", json!({ "message": "after the restart" }))]),
        Scripted::Answer { text: "done".into(), tool_calls: vec![], usage: (60, 9) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body =
        json!({ "name": "use mcp", "agent": "coder", "payload": { "prompt": "what time is it?" } });
    let id = enqueue(addr, body).await;

    // When the long call is in flight, the stdio server is killed.
    wait_until("the long call to be in flight", WAIT, || async {
        server(addr, "every").await["calls_in_flight"] == 1
    })
    .await;
    // SAFETY: kill(2) on the server's process, which this test's serve started.
    unsafe { libc::kill(killed as i32, libc::SIGKILL) };

    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let calls = tool_calls(addr, &id).await;
    let summary: Vec<(&str, bool)> =
        calls.iter().map(|c| (c["tool"].as_str().unwrap(), c["refused"] == true)).collect();
    assert_eq!(
        summary,
        [
            ("time.get_current_time", false),
            ("every.echo", false),
            ("web.echo", false),
            ("time.get_current_time", true),
            ("time__convert_time", true),
            ("every.trigger-long-running-operation", false),
            ("every.echo", false),
        ],
        "{calls:#?}"
    );
    // The servers' real answers are in the history.
    assert!(
        calls[0]["result"]["content"].as_str().unwrap().contains("\"timezone\": \"UTC\""),
        "{}",
        calls[0]
    );
    assert_eq!(calls[1]["result"]["content"], "Echo: from stdio");
    assert_eq!(calls[2]["result"]["content"], "Echo: from http");
    // Refused before sending: a schema broken, a tool off the allow-list.
    assert!(
        calls[3]["error"].as_str().unwrap().contains("timezone must be of type string"),
        "{}",
        calls[3]
    );
    assert!(calls[4]["error"].as_str().unwrap().contains("no tool named"), "{}", calls[4]);
    // The call the kill interrupted failed, saying it can be retried; the next one worked.
    assert!(calls[5]["error"].as_str().unwrap().contains("can be retried"), "{}", calls[5]);
    assert_eq!(calls[6]["result"]["content"], "Echo: after the restart");

    // What the model was offered: the allowed tools of the coder's servers, not ops' server.
    let seen = fake.seen();
    let mut offered: Vec<&str> = seen[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    offered.sort();
    assert_eq!(
        offered,
        [
            "every__echo",
            "every__trigger-long-running-operation",
            "time__get_current_time",
            "web__echo"
        ]
    );
    let every = server(addr, "every").await;
    assert_eq!(every["state"], "ready", "{every}");
    assert!(every["restarts"].as_u64().unwrap() >= 1, "{every}");
    assert_ne!(every["pid"].as_i64(), Some(killed));
    assert_eq!((&every["calls"], &every["calls_failed"]), (&json!(3), &json!(1)), "{every}");
    let pids: Vec<i64> = {
        let (_, tools) = get(addr, "/api/tools").await;
        tools["servers"].as_array().unwrap().iter().filter_map(|s| s["pid"].as_i64()).collect()
    };
    assert_eq!(pids.len(), 3, "every stdio server runs");

    // With the serve stopped (its children killed) and the HTTP server gone, the run
    // replays identical: nothing is asked of any server or model.
    shutdown.cancel();
    task.await.unwrap().unwrap();
    drop(http);
    for pid in pids {
        wait_until("the stdio servers to be killed", WAIT, || async { !alive(pid) }).await;
    }
    let replayed = crate::support::brain_command()
        .args(["missions", "replay", &id])
        .env("DATABASE_URL", &env.database_url)
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replayed.stdout).to_string()
        + &String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{text}");
    assert!(text.contains("identical"), "{text}");
    assert!(text.contains("7 tool calls"), "{text}");
    assert_eq!(fake.seen().len(), 4, "a replay calls no model");
}

#[tokio::test]
async fn hostile_mcp_servers_are_bounded_and_reported() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let python = "/usr/bin/python3";
    let mut silent = stdio(python, &[&stand_in("silent")], &["coder"], None);
    silent["initialize_timeout_ms"] = json!(2_000);
    let settings = json!({ "servers": {
        "silent": silent,
        "garbage": stdio(python, &[&stand_in("garbage")], &["coder"], None),
        "huge": stdio(python, &[&stand_in("huge")], &["coder"], None),
    } });
    let (status, answer) = crate::mcp_config::put(addr, &settings).await;
    assert_eq!(status, 200, "{answer}");

    // A server that never answers initialize is reported failed, not waited on; so is one
    // that answers garbage. Both are tried again with backoff.
    let silent = wait_state(addr, "silent", "failed").await;
    assert!(silent["reason"].as_str().unwrap().contains("initialize"), "{silent}");
    let garbage = wait_state(addr, "garbage", "failed").await;
    assert!(!garbage["reason"].as_str().unwrap().is_empty(), "{garbage}");
    wait_state(addr, "huge", "ready").await;

    // A result of megabytes reaches the model and the record cut to the bound.
    let script = vec![
        tool_answer(vec![("huge__big", json!({}))]),
        Scripted::Answer { text: "done".into(), tool_calls: vec![], usage: (60, 9) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body = json!({ "name": "big", "agent": "coder", "payload": { "prompt": "go" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let calls = tool_calls(addr, &id).await;
    let content = calls[0]["result"]["content"].as_str().unwrap();
    assert_eq!(content.len(), brain::agents::tools::RESULT_BYTES_MAX);
    assert_eq!(calls[0]["result"]["truncated"], true);
    let sent = &fake.seen()[1].body["messages"];
    let tool_message = sent.as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap();
    assert!(
        tool_message["content"].as_str().unwrap().len()
            < 2 * brain::agents::tools::RESULT_BYTES_MAX
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_http_server_that_forgot_its_session_gets_a_new_one_after_one_failed_call() {
    let env = TestEnv::new().await;
    let http = HttpEverything::start().await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let settings = json!({ "servers": {
        "web": { "transport": "streamable_http", "url": http.url(), "agent_kinds": ["coder"],
            "tools": ["echo"], "call_timeout_ms": 5000 } } });
    assert_eq!(crate::mcp_config::put(addr, &settings).await.0, 200);
    wait_state(addr, "web", "ready").await;
    let script = vec![
        tool_answer(vec![("web__echo", json!({ "message": "first" }))]),
        Scripted::Answer { text: "one".into(), tool_calls: vec![], usage: (60, 9) },
        tool_answer(vec![("web__echo", json!({ "message": "second" }))]),
        tool_answer(vec![("web__echo", json!({ "message": "third" }))]),
        Scripted::Answer { text: "two".into(), tool_calls: vec![], usage: (60, 9) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body = json!({ "name": "first", "agent": "coder", "payload": { "prompt": "echo" } });
    let began = std::time::Instant::now();
    let first = enqueue(addr, body).await;
    let done = finished(addr, &first).await;
    assert_eq!(done["status"], "completed", "{done}");
    // A two-step mission using one MCP tool, the model answering at once (shown with
    // `--nocapture`): enqueue to completion as a client sees it, and the run itself.
    eprintln!(
        "two-step mission with one MCP call: {} ms from enqueue, run {} ms",
        began.elapsed().as_millis(),
        done["result"]["duration_ms"]
    );

    // When the server is replaced by a fresh one on the same port (every session forgotten;
    // server-everything then answers 400, not the 404 that `rmcp` re-initialises on), then
    // the call on the old session fails within its timeout, saying it can be retried, and
    // the next one, on a new session, gets its answer.
    let port = http.port;
    drop(http);
    let _http = HttpEverything::start_on(port).await;
    let body = json!({ "name": "second", "agent": "coder", "payload": { "prompt": "echo" } });
    let second = enqueue(addr, body).await;
    assert_eq!(finished(addr, &second).await["status"], "completed");
    let calls = tool_calls(addr, &second).await;
    assert!(calls[0]["error"].as_str().unwrap().contains("can be retried"), "{calls:#?}");
    assert_eq!(calls[1]["result"]["content"], "Echo: third", "{calls:#?}");
    let web = server(addr, "web").await;
    assert_eq!((&web["calls"], &web["calls_failed"]), (&json!(3), &json!(1)), "{web}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// The official Python SDK's server over streamable HTTP (`tests/it/mcp/http_echo.py`) on
/// `port`, killed when dropped.
struct HttpEcho(Child);

impl HttpEcho {
    async fn start_on(port: u16) -> HttpEcho {
        let child = Command::new(python_with_mcp())
            .args([stand_in("http_echo"), port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Python server starts");
        wait_until("the Python server to listen", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        HttpEcho(child)
    }
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that forgot the session and says so with the 404 the protocol asks for gets a
/// new session at once: the call on the old one is answered, none fails.
#[tokio::test]
async fn an_http_server_that_answers_404_for_a_forgotten_session_is_reinitialised_transparently() {
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server_process = HttpEcho::start_on(port).await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let settings = json!({ "servers": {
        "py": { "transport": "streamable_http", "url": url, "agent_kinds": ["coder"],
            "call_timeout_ms": 20000 } } });
    assert_eq!(crate::mcp_config::put(addr, &settings).await.0, 200);
    wait_state(addr, "py", "ready").await;
    let script = vec![
        tool_answer(vec![("py__echo", json!({ "message": "first" }))]),
        Scripted::text("one"),
        tool_answer(vec![("py__echo", json!({ "message": "second" }))]),
        Scripted::text("two"),
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body = json!({ "name": "first", "agent": "coder", "payload": { "prompt": "echo" } });
    let first = enqueue(addr, body).await;
    assert_eq!(finished(addr, &first).await["status"], "completed");

    drop(server_process);
    let _fresh = HttpEcho::start_on(port).await;
    let body = json!({ "name": "second", "agent": "coder", "payload": { "prompt": "echo" } });
    let second = enqueue(addr, body).await;
    assert_eq!(finished(addr, &second).await["status"], "completed");
    let calls = tool_calls(addr, &second).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0]["result"]["content"].to_string().contains("Echo: second"), "{calls:#?}");
    let py = server(addr, "py").await;
    assert_eq!((&py["calls"], &py["calls_failed"]), (&json!(2), &json!(0)), "{py}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_fork_plays_mcp_calls_back_before_its_fork_point_and_calls_the_server_only_after() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let settings = json!({ "servers": {
        "time": stdio(&time_server(), &["--local-timezone", "UTC"], &["coder"], None) } });
    assert_eq!(crate::mcp_config::put(addr, &settings).await.0, 200);
    wait_state(addr, "time", "ready").await;
    let script = vec![
        tool_answer(vec![("time__get_current_time", json!({ "timezone": "UTC" }))]),
        Scripted::Answer { text: "it is late".into(), tool_calls: vec![], usage: (60, 9) },
        // The fork's second step, asked live.
        tool_answer(vec![("time__get_current_time", json!({ "timezone": "Europe/Paris" }))]),
        Scripted::Answer {
            text: "it is later in Paris".into(),
            tool_calls: vec![],
            usage: (60, 9),
        },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body = json!({ "name": "time", "agent": "coder", "payload": { "prompt": "what time?" } });
    let id = enqueue(addr, body).await;
    assert_eq!(finished(addr, &id).await["status"], "completed");
    assert_eq!(server(addr, "time").await["calls"], 1);

    // When the run is forked at step 1, then step 1's call comes from the record (the server
    // is not called for it) and step 2's goes to the server.
    let forked = crate::support::brain_command()
        .args(["missions", "fork", &id, "--at-step", "1"])
        .env("DATABASE_URL", &env.database_url)
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(forked.status.success(), "{}", String::from_utf8_lossy(&forked.stderr));
    let fork_id = String::from_utf8_lossy(&forked.stdout).trim().to_owned();
    let done = finished(addr, &fork_id).await;
    assert_eq!(done["result"]["answer"], "it is later in Paris", "{done}");
    let calls = tool_calls(addr, &fork_id).await;
    let summary: Vec<(&str, bool)> =
        calls.iter().map(|c| (c["tool"].as_str().unwrap(), c["replayed"] == true)).collect();
    assert_eq!(
        summary,
        [("time.get_current_time", true), ("time.get_current_time", false)],
        "{calls:#?}"
    );
    assert!(
        calls[1]["result"]["content"].as_str().unwrap().contains("Europe/Paris"),
        "{}",
        calls[1]
    );
    assert_eq!(server(addr, "time").await["calls"], 2, "one live call for the fork");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// The Python interpreter that has the official `mcp` package (`scripts/services.sh`
/// installs it), by its real path: the servers run with a cleared environment.
fn python_with_mcp() -> String {
    let output = Command::new("python3")
        .args(["-c", "import mcp, sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "python3 lacks the mcp package: run scripts/services.sh");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn offered(addr: SocketAddr, name: &str) -> bool {
    let (status, tools) = get(addr, "/api/tools").await;
    assert_eq!(status, 200, "{tools}");
    tools["tools"].as_array().unwrap().iter().any(|tool| tool["name"] == name)
}

/// A server (the official Python SDK's, `tests/it/mcp/growing.py`) whose tool adds another
/// and says its list changed has the new tool offered, without a restart, to the next
/// mission, which calls it.
#[tokio::test]
async fn a_tool_a_server_adds_is_offered_once_the_server_says_its_list_changed() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_thinking_agents(&env).await;
    let settings = json!({ "servers": {
        "grow": stdio(&python_with_mcp(), &[&stand_in("growing")], &["coder"], None) } });
    let (status, answer) = crate::mcp_config::put(addr, &settings).await;
    assert_eq!(status, 200, "{answer}");
    let pid = wait_state(addr, "grow", "ready").await["pid"].clone();
    assert!(offered(addr, "grow.grow").await);
    assert!(!offered(addr, "grow.grown").await);

    let script = vec![
        tool_answer(vec![("grow__grow", json!({}))]),
        Scripted::text("grown"),
        tool_answer(vec![("grow__grown", json!({}))]),
        Scripted::text("called it"),
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let body = json!({ "name": "grow", "agent": "coder", "payload": { "prompt": "grow" } });
    let first = enqueue(addr, body).await;
    assert_eq!(finished(addr, &first).await["status"], "completed");
    wait_until("the added tool to be offered", WAIT, || offered(addr, "grow.grown")).await;
    assert_eq!(server(addr, "grow").await["pid"], pid, "listed again, not restarted");

    let body = json!({ "name": "use it", "agent": "coder", "payload": { "prompt": "use it" } });
    let second = enqueue(addr, body).await;
    assert_eq!(finished(addr, &second).await["status"], "completed");
    let calls = tool_calls(addr, &second).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["tool"], "grow.grown", "{calls:#?}");
    assert!(calls[0]["result"]["content"].to_string().contains("grown here"), "{calls:#?}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
