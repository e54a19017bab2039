//! A key is in no log line, event, response or metric: a real `brain serve` (debug logs as
//! JSON lines) is used with every kind of key the way clients use them, and everything the
//! run produced is searched for the secrets that went into it.
//!
//! The run makes a developer and an agent key (their creation answers are the one place
//! their tokens may appear), uses them (enqueue, read, an LLM call, an agent's register,
//! heartbeat, claim and report), presents a wrong secret for a real key id and malformed
//! tokens, signs in for a session and uses its cookie, rotates a key (its answer is the
//! other place a token may appear, and the sign-in's `Set-Cookie` the one place for the
//! cookie), revokes one, and reads the whole log, the live feed, the keys, `/metrics` and
//! the OpenAPI document. Then the serve is stopped and its stdout and stderr, every
//! response kept and every event row of the database are searched for: the 64-hex secret of
//! every token used (the admin's, the made ones', the rotated one, the wrong one, the
//! malformed ones' tails) and the session cookie's MAC.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{ADMIN_TOKEN, TestEnv, key_id, nats_url, redis_url, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A `brain serve` process writing its stdout and stderr to files; killed when dropped.
struct Serve {
    /// `None` once stopped.
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Serve {
    async fn start(env: &TestEnv) -> Serve {
        let dir = std::env::temp_dir().join(format!("brain-leaks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let child = crate::support::brain_command()
            .args(["--log-format", "json", "serve", "--workers", "0"])
            .env("DATABASE_URL", &env.database_url)
            .env("NATS_URL", nats_url())
            .env("REDIS_URL", redis_url())
            .env("BRAIN_NAMESPACE", env.namespace.as_str())
            .env("BRAIN_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(file("stdout")))
            .stderr(Stdio::from(file("stderr")))
            .spawn()
            .expect("start brain serve");
        let stdout = dir.join("stdout");
        let first_line = || {
            let file = std::fs::File::open(&stdout).ok()?;
            let line = std::io::BufReader::new(file).lines().next()?.ok()?;
            line.ends_with(char::is_numeric).then_some(line)
        };
        wait_until("the serve to say where it listens", WAIT, || async { first_line().is_some() })
            .await;
        let line = first_line().unwrap();
        let addr = line.rsplit("http://").next().and_then(|a| a.parse().ok());
        let addr = addr.unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Serve { child: Some(child), addr, dir }
    }

    /// Stops it as an operator would (SIGTERM) and answers its stdout and stderr.
    async fn stop(mut self) -> (String, String) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.wait());
        let exit = tokio::time::timeout(WAIT, exit).await.expect("the serve stops").unwrap();
        assert!(exit.unwrap().success(), "brain serve exits 0 on SIGTERM");
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap();
        (read("stdout"), read("stderr"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How much of an answer goes into what is searched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    All,
    /// A creation or rotation answer: its body is where the token is shown.
    HeadersOnly,
    /// The sign-in's answer: its `Set-Cookie` is where the session is handed over.
    AllButSetCookie,
}

/// What the run produced, labelled by where it came from.
#[derive(Default)]
struct Corpus {
    items: Vec<(String, String)>,
}

impl Corpus {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.items.push((what.into(), text.into()));
    }
}

/// A client of the serve that keeps every answer it gets.
struct Run {
    addr: SocketAddr,
    http: reqwest::Client,
    corpus: Corpus,
}

/// How a request presents itself.
enum As<'a> {
    Nobody,
    /// `Authorization` exactly as given.
    Header(&'a str),
    Key(&'a str),
    /// A session cookie, with the serve's own `Origin` as the console's page sends it.
    Session(&'a str),
}

impl Run {
    async fn call(
        &mut self,
        who: As<'_>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        keep: Keep,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let addr = self.addr;
        let mut request = self.http.request(method.clone(), format!("http://{addr}{path}"));
        request = match who {
            As::Nobody => request,
            As::Header(value) => request.header("authorization", value),
            As::Key(token) => request.header("authorization", format!("Bearer {token}")),
            As::Session(cookie) => {
                request.header("cookie", cookie).header("origin", format!("http://{addr}"))
            }
        };
        if let Some(body) = body {
            request = request.json(&body);
        } else if method != reqwest::Method::GET {
            request = request.header("content-type", "application/json");
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let what = format!("{method} {path} → {status}");
        let kept: Vec<String> = headers
            .iter()
            .filter(|(name, _)| {
                keep != Keep::AllButSetCookie || *name != reqwest::header::SET_COOKIE
            })
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        self.corpus.add(format!("{what} (headers)"), kept.join("\n"));
        if keep != Keep::HeadersOnly {
            self.corpus.add(format!("{what} (body)"), text.clone());
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    async fn get(&mut self, who: As<'_>, path: &str) -> (u16, Value) {
        let (status, body, _) = self.call(who, reqwest::Method::GET, path, None, Keep::All).await;
        (status, body)
    }

    async fn post(&mut self, who: As<'_>, path: &str, body: Value) -> (u16, Value) {
        let (status, body, _) =
            self.call(who, reqwest::Method::POST, path, Some(body), Keep::All).await;
        (status, body)
    }

    /// Makes a key with the admin key; answers its token (its answer is not kept).
    async fn make_key(&mut self, grant: Value) -> String {
        let (status, body, _) = self
            .call(
                As::Key(ADMIN_TOKEN),
                reqwest::Method::POST,
                "/api/keys",
                Some(grant),
                Keep::HeadersOnly,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Reads the live feed from the start up to `head`, keeping every message.
    async fn read_feed(&mut self, token: &str, head: u64) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/ws/events?from=0", self.addr);
        let mut request = url.into_client_request().unwrap();
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut client, answer) =
            tokio_tungstenite::client_async(request, stream).await.expect("handshake");
        let headers: Vec<String> =
            answer.headers().iter().map(|(n, v)| format!("{n}: {v:?}")).collect();
        self.corpus.add("GET /ws/events (handshake headers)", headers.join("\n"));
        let mut position = 0;
        while position < head {
            let next = tokio::time::timeout(WAIT, client.next()).await.expect("an event in time");
            match next.expect("open").expect("no WebSocket error") {
                Message::Text(text) => {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap();
                    position = event["global_position"].as_u64().unwrap();
                    self.corpus.add(format!("/ws/events message {position}"), text.as_str());
                }
                Message::Close(frame) => panic!("the feed closed: {frame:?}"),
                _ => {}
            }
        }
    }
}

/// The secret part of a token: what follows `brn_<key id>_`.
fn secret_of(token: &str) -> &str {
    &token[21..]
}

/// 64 hexadecimal characters no one has seen.
fn random_hex() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Every event row's payload and metadata, as the database holds them.
async fn event_rows(env: &TestEnv) -> Vec<(i64, String, String, String)> {
    sqlx::query_as(
        "SELECT global_position, event_type, payload::text, metadata::text FROM events \
         ORDER BY global_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn no_secret_is_in_any_log_line_event_response_or_metric() {
    let env = TestEnv::new().await;
    let serve = Serve::start(&env).await;
    crate::serve::crypto_provider();
    let mut run = Run { addr: serve.addr, http: reqwest::Client::new(), corpus: Corpus::default() };
    let admin = ADMIN_TOKEN;

    // Keys made: their answers are the one place their tokens are shown.
    let developer = run.make_key(json!({ "name": "dev", "role": "developer" })).await;
    let agent_key =
        run.make_key(json!({ "name": "agent", "role": "agent", "kinds": ["echo"] })).await;

    // Used as clients use them.
    let (status, enqueued) = run
        .post(As::Key(&developer), "/api/missions/enqueue", json!({ "name": "x", "agent": "echo" }))
        .await;
    assert_eq!(status, 201, "{enqueued}");
    let mission_id = enqueued["mission_id"].as_str().unwrap().to_owned();
    assert_eq!(run.get(As::Key(&developer), "/api/missions").await.0, 200);
    let path = format!("/api/missions/{mission_id}/events");
    assert_eq!(run.get(As::Key(&developer), &path).await.0, 200);
    let chat = json!({ "model": "default", "messages": [{ "role": "user", "content": "hi" }] });
    let (status, answer) = run.post(As::Key(&developer), "/v1/chat/completions", chat).await;
    assert_eq!(status, 200, "{answer}");

    let registration = json!({ "name": "leaky", "kind": "echo", "version": "1" });
    let (status, agent) = run.post(As::Key(&agent_key), "/api/agents/register", registration).await;
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    let beat = json!({ "agent_id": agent_id, "status": "idle" });
    let (status, answer) = run.post(As::Key(&agent_key), "/api/agents/heartbeat", beat).await;
    assert_eq!(status, 200, "{answer}");
    let claim = format!("/api/agents/{agent_id}/claim?wait_s=10");
    let (status, claimed) = run.post(As::Key(&agent_key), &claim, json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    let report = json!({ "lease_token": claimed["lease_token"], "result": { "ok": true } });
    let complete = format!("/api/missions/{mission_id}/complete");
    let (status, answer) = run.post(As::Key(&agent_key), &complete, report).await;
    assert_eq!(status, 200, "{answer}");

    // A wrong secret for real key ids, and malformed tokens: each secret-looking part of
    // them is looked for too.
    let wrong = random_hex();
    let wrong_token = format!("brn_{}_{wrong}", key_id(&developer));
    let (status, _) = run.get(As::Key(&wrong_token), "/api/missions").await;
    assert_eq!(status, 401);
    let wrong_admin = format!("brn_{}_{wrong}", key_id(admin));
    assert_eq!(run.get(As::Key(&wrong_admin), "/api/keys").await.0, 401);
    let (status, _) = run.post(As::Nobody, "/api/session", json!({ "key": wrong_token })).await;
    assert_eq!(status, 401);
    let short = random_hex()[..63].to_owned();
    let long = format!("{}a", random_hex());
    let bare = random_hex();
    let malformed = [
        format!("Bearer brn_{}_{short}", key_id(&developer)),
        format!("Bearer brn_{}_{long}", key_id(&developer)),
        format!("Bearer {bare}"),
        format!("Basic {}", random_hex()),
    ];
    for header in &malformed {
        assert_eq!(run.get(As::Header(header), "/api/missions").await.0, 401, "{header}");
    }

    // A session, used, then a tampered one.
    let (status, signed, headers) = run
        .call(
            As::Nobody,
            reqwest::Method::POST,
            "/api/session",
            Some(json!({ "key": developer })),
            Keep::AllButSetCookie,
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let mac = cookie.rsplit('.').next().unwrap().to_owned();
    assert_eq!(mac.len(), 64, "{cookie}");
    assert_eq!(run.get(As::Session(&cookie), "/api/session").await.0, 200);
    assert_eq!(run.get(As::Session(&cookie), "/api/missions").await.0, 200);
    let (status, answer) = run
        .post(As::Session(&cookie), "/api/missions/enqueue", json!({ "name": "from a session" }))
        .await;
    assert_eq!(status, 201, "{answer}");
    let forged_mac = random_hex();
    let forged = format!("{}.{forged_mac}", &cookie[..cookie.len() - 64 - 1]);
    assert_eq!(run.get(As::Session(&forged), "/api/missions").await.0, 401);

    // A rotation: its answer is the other place a token is shown. The old secret works for
    // the grace, the new one at once, and the session made with the old one is over.
    let path = format!("/api/keys/{}/rotate", key_id(&developer));
    let (status, rotated, _) = run
        .call(As::Key(admin), reqwest::Method::POST, &path, Some(json!({})), Keep::HeadersOnly)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let rotated = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(run.get(As::Key(&developer), "/api/missions").await.0, 200);
    assert_eq!(run.get(As::Key(&rotated), "/api/missions").await.0, 200);
    assert_eq!(run.get(As::Session(&cookie), "/api/missions").await.0, 401);

    // A revocation: the agent's key is refused from then on.
    let path = format!("/api/keys/{}/revoke", key_id(&agent_key));
    let (status, answer) = run.post(As::Key(admin), &path, json!({ "reason": "done" })).await;
    assert_eq!(status, 200, "{answer}");
    let beat = json!({ "agent_id": agent_id, "status": "idle" });
    assert_eq!(run.post(As::Key(&agent_key), "/api/agents/heartbeat", beat).await.0, 401);

    // Everything there is to read.
    let mut after = 0;
    let head = loop {
        let (status, page) =
            run.get(As::Key(admin), &format!("/api/events?after={after}&limit=50")).await;
        assert_eq!(status, 200, "{page}");
        let next = page["next_after"].as_u64().unwrap();
        if next == after {
            break page["head"].as_u64().unwrap();
        }
        after = next;
    };
    assert!(head > 10, "the run recorded its keys, missions and agent: {head}");
    run.read_feed(admin, head).await;
    for path in [
        "/api/keys",
        "/metrics",
        "/openapi.json",
        "/health",
        "/ready",
        "/api/agents",
        "/api/llm/config",
        "/api/llm/usage",
        "/api/stats/event-types",
        "/api/supervisor/status",
    ] {
        assert_eq!(run.get(As::Key(admin), path).await.0, 200, "{path}");
    }
    let (_, keys) = run.get(As::Key(admin), "/api/keys").await;
    for token in [admin, &developer, &agent_key] {
        assert!(keys.to_string().contains(key_id(token)), "the list names each key: {keys}");
    }

    // What the serve wrote, and what the database holds.
    let (stdout, stderr) = serve.stop().await;
    let mut corpus = run.corpus;
    corpus.add("stdout", stdout.clone());
    let mut log_lines = 0;
    for (n, line) in stderr.lines().enumerate() {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("stderr line {n} is not a JSON log line: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        corpus.add(format!("stderr line {n}"), line);
        log_lines += 1;
    }
    let debug_lines = stderr.lines().filter(|line| line.contains(r#""level":"DEBUG""#)).count();
    assert!(debug_lines > 0, "the serve logged at debug: {log_lines} lines");
    let rows = event_rows(&env).await;
    assert_eq!(rows.len() as u64, head, "the feed and the table hold the same log");
    for (position, event_type, payload, metadata) in &rows {
        corpus.add(format!("event {position} {event_type} payload"), payload.clone());
        corpus.add(format!("event {position} {event_type} metadata"), metadata.clone());
    }
    let created: Vec<&str> = rows
        .iter()
        .filter(|(_, event_type, _, _)| event_type == "ApiKeyCreated")
        .map(|(_, _, payload, _)| payload.as_str())
        .collect();
    assert_eq!(created.len(), 3, "the admin's, the developer's and the agent's keys");

    let secrets = [
        ("the admin key's secret", secret_of(admin).to_owned()),
        ("the developer key's secret", secret_of(&developer).to_owned()),
        ("the agent key's secret", secret_of(&agent_key).to_owned()),
        ("the rotated secret", secret_of(&rotated).to_owned()),
        ("the wrong secret", wrong.clone()),
        ("a malformed token's short secret", short.clone()),
        ("a malformed token's long secret", long.clone()),
        ("a bare secret", bare.clone()),
        ("a Basic credential", malformed[3]["Basic ".len()..].to_owned()),
        ("the session's MAC", mac.clone()),
        ("a forged session's MAC", forged_mac.clone()),
    ];
    let mut leaks = Vec::new();
    for (what, text) in &corpus.items {
        for (name, secret) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{name} is in {what}: {}", excerpt(text, secret)));
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
    assert!(corpus.items.len() > 100, "searched {} pieces", corpus.items.len());
}

/// Some text around `needle` in `text`, to say where a leak is.
fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
    let end = (at + needle.len() + 80).min(text.len());
    let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..end].to_owned()
}
