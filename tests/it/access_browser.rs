//! The browser cannot be turned against the operator, tried in headless Chromium with the
//! operator signed in to the console in the same browser:
//! - a page on another origin (another port of 127.0.0.1: the same *site*, so the
//!   `SameSite=Strict` session cookie rides along and only the `Origin` check stands in the
//!   way) opens the live feed, reads the missions and the log with a credentialed CORS fetch
//!   and a `<script>`, and cancels a queued mission with a no-cors text POST, a JSON POST
//!   and an auto-submitted form: it reads nothing and changes nothing;
//! - a page reached under a rebinding name (`--host-resolver-rules` maps it to 127.0.0.1)
//!   is refused 421 `host_refused`, its document, its requests and its WebSocket alike,
//!   while a name the serve was told it has (`BRAIN_PUBLIC_HOSTS`) opens the console.
//!
//! What each page saw is reported by the page itself (through `execute_async`); the same
//! probe run from the console's own origin reads the feed and the log, so a probe that saw
//! nothing saw nothing because it was refused. What happened is judged from the server's side
//! (the mission, the log) and from the browser's network events (each hostile request
//! carried the session cookie, and each was refused or withheld).

use std::collections::HashMap;
use std::net::SocketAddr;

use brain::bench::webdriver::{BrowserOptions, LogEntry, PerfEvent};
use serde_json::{Value, json};

use crate::deck::Deck;
use crate::support::{ADMIN_ACTOR, TestEnv};
use crate::workers::{enqueue, mission};

/// What a page tries, run in the page as its own script would: open the live feed from the
/// start, read the missions and the log with a credentialed fetch and, when `change` is
/// set, read the log through a `<script>` (no `Origin` is sent for it) and cancel the
/// mission with a no-cors text POST and with a JSON POST. Answers what the page saw.
const PROBE: &str = r#"
const [brain, missionId, change, done] = arguments;
(async () => {
const report = { ws: null, reads: {}, changes: {} };
const text = async (response) => {
  try { return await response.text(); } catch (error) { return 'unreadable: ' + error; }
};
report.ws = await new Promise((resolve) => {
  const seen = { opened: false, messages: [], error: false, closed: null };
  let socket;
  try {
    socket = new WebSocket(brain.replace(/^http/, 'ws') + '/ws/events?from=0');
  } catch (error) {
    resolve({ ...seen, thrown: String(error) });
    return;
  }
  socket.onopen = () => { seen.opened = true; };
  // One event is enough to know the feed was read; then the socket is closed.
  socket.onmessage = (message) => { seen.messages.push(String(message.data)); socket.close(); };
  socket.onerror = () => { seen.error = true; };
  socket.onclose = (event) => {
    seen.closed = { code: event.code, reason: event.reason };
    resolve(seen);
  };
});
for (const path of ['/api/missions', '/api/events?limit=1000']) {
  try {
    const response = await fetch(brain + path, { credentials: 'include' });
    report.reads[path] = { status: response.status, body: await text(response) };
  } catch (error) {
    report.reads[path] = { error: String(error) };
  }
}
if (change) {
  report.reads.script = await new Promise((resolve) => {
    const errors = [];
    window.onerror = (message) => { errors.push(String(message)); };
    const script = document.createElement('script');
    script.src = brain + '/api/events?limit=999';
    script.onload = () => resolve({ loaded: true, errors });
    script.onerror = () => resolve({ loaded: false, errors });
    document.head.appendChild(script);
  });
  const cancel = brain + '/api/missions/' + missionId + '/cancel';
  try {
    const response = await fetch(cancel, { method: 'POST', mode: 'no-cors',
      credentials: 'include', headers: { 'content-type': 'text/plain' }, body: '{}' });
    report.changes.no_cors = { type: response.type, status: response.status,
      body: await text(response) };
  } catch (error) {
    report.changes.no_cors = { error: String(error) };
  }
  try {
    const response = await fetch(cancel, { method: 'POST', credentials: 'include',
      headers: { 'content-type': 'application/json' }, body: '{}' });
    report.changes.json = { status: response.status, body: await text(response) };
  } catch (error) {
    report.changes.json = { error: String(error) };
  }
}
return report;
})().then(done, (error) => done({ thrown: String(error) }));
"#;

/// Submits the page's form into its frame and answers what the page can see of the answer
/// once the frame has loaded it.
const SUBMIT_FORM: &str = r#"
const done = arguments[arguments.length - 1];
const sink = document.getElementById('sink');
sink.onload = () => {
  let seen;
  try { seen = sink.contentDocument ? sink.contentDocument.body.innerText : null; }
  catch (error) { seen = 'unreadable: ' + error; }
  done({ loaded: true, seen });
};
document.getElementById('cancel').submit();
"#;

/// The hostile page: a form that cancels the mission in a frame, sent as `text/plain` so
/// that its body reads as JSON (`{"reason":"=forged"}`).
fn hostile_page(brain: SocketAddr, mission_id: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>a page elsewhere</title><link rel="icon" href="data:,"></head>
<body>
<p>Nothing to see here.</p>
<iframe name="sink" id="sink"></iframe>
<form id="cancel" method="POST" target="sink" enctype="text/plain"
      action="http://{brain}/api/missions/{mission_id}/cancel">
  <input type="hidden" name='{{"reason":"' value='forged"}}'>
</form>
</body></html>"#
    )
}

/// Serves `page` at `/` on another port of 127.0.0.1: another origin, the same site.
async fn serve_page(page: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { axum::response::Html(page) }));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// Runs [`PROBE`] in the page the browser shows.
async fn probe(deck: &Deck, brain: &str, mission_id: &str, change: bool) -> Value {
    let args = [json!(brain), json!(mission_id), json!(change)];
    let report = deck.browser.execute_async(PROBE, &args).await.unwrap();
    assert!(report.get("thrown").is_none(), "the probe failed: {report}");
    report
}

/// One HTTP request of the browser's, as its network events tell it.
#[derive(Debug, Default, Clone)]
struct Sent {
    url: String,
    method: String,
    /// `Document`, `Fetch`, `Script`, `Preflight`, …
    kind: String,
    /// The headers as they went on the wire (cookies included); none for a request that
    /// was never sent.
    headers: HashMap<String, String>,
    status: Option<u16>,
    /// The error of a request that got no usable answer (`net::ERR_FAILED` for a CORS
    /// refusal, `net::ERR_BLOCKED_BY_ORB`, …).
    error: Option<String>,
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn carries_session(&self) -> bool {
        self.header("cookie").is_some_and(|cookie| cookie.contains("brain_session="))
    }
}

/// The HTTP requests among `events` whose URL starts with `prefix`, in the order sent.
fn requests_to(events: &[PerfEvent], prefix: &str) -> Vec<Sent> {
    let mut order: Vec<String> = Vec::new();
    let mut sent: HashMap<String, Sent> = HashMap::new();
    for event in events {
        let params = &event.params;
        let known = [
            "Network.requestWillBeSent",
            "Network.requestWillBeSentExtraInfo",
            "Network.responseReceived",
            "Network.responseReceivedExtraInfo",
            "Network.loadingFailed",
        ];
        if !known.contains(&event.method.as_str()) {
            continue;
        }
        let id = params["requestId"].as_str().unwrap_or_default().to_owned();
        if !sent.contains_key(&id) {
            order.push(id.clone());
        }
        let request = sent.entry(id).or_default();
        match event.method.as_str() {
            "Network.requestWillBeSent" => {
                request.url = params["request"]["url"].as_str().unwrap_or_default().to_owned();
                request.method =
                    params["request"]["method"].as_str().unwrap_or_default().to_owned();
                request.kind = params["type"].as_str().unwrap_or_default().to_owned();
            }
            "Network.requestWillBeSentExtraInfo" => {
                for (name, value) in params["headers"].as_object().into_iter().flatten() {
                    let value = value.as_str().unwrap_or_default().to_owned();
                    request.headers.insert(name.clone(), value);
                }
            }
            "Network.responseReceived" => {
                request.status = params["response"]["status"].as_u64().map(|s| s as u16);
                if request.kind.is_empty() {
                    request.kind = params["type"].as_str().unwrap_or_default().to_owned();
                }
            }
            // The status as it came off the wire, also for an answer the page is not
            // given (a CORS refusal, ORB), which gets no `responseReceived`.
            "Network.responseReceivedExtraInfo" => {
                if request.status.is_none() {
                    request.status = params["statusCode"].as_u64().map(|s| s as u16);
                }
            }
            _ => request.error = params["errorText"].as_str().map(str::to_owned),
        }
    }
    order
        .into_iter()
        .filter_map(|id| sent.remove(&id))
        .filter(|request| request.url.starts_with(prefix))
        .collect()
}

/// A WebSocket the browser opened, as its network events tell it.
#[derive(Debug, Default, Clone)]
struct Socket {
    url: String,
    /// The handshake's answer, when one completed.
    status: Option<u16>,
    /// Why it failed (`Error during WebSocket handshake: Unexpected response code: 403`).
    error: Option<String>,
    frames_received: usize,
}

fn sockets_to(events: &[PerfEvent], prefix: &str) -> Vec<Socket> {
    let mut order: Vec<String> = Vec::new();
    let mut sockets: HashMap<String, Socket> = HashMap::new();
    for event in events {
        let params = &event.params;
        let id = params["requestId"].as_str().unwrap_or_default().to_owned();
        match event.method.as_str() {
            "Network.webSocketCreated" => {
                order.push(id.clone());
                let url = params["url"].as_str().unwrap_or_default().to_owned();
                sockets.insert(id, Socket { url, ..Socket::default() });
            }
            "Network.webSocketHandshakeResponseReceived" => {
                if let Some(socket) = sockets.get_mut(&id) {
                    socket.status = params["response"]["status"].as_u64().map(|s| s as u16);
                }
            }
            "Network.webSocketFrameError" => {
                if let Some(socket) = sockets.get_mut(&id) {
                    socket.error = params["errorMessage"].as_str().map(str::to_owned);
                }
            }
            "Network.webSocketFrameReceived" => {
                if let Some(socket) = sockets.get_mut(&id) {
                    socket.frames_received += 1;
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| sockets.remove(&id))
        .filter(|socket| socket.url.starts_with(prefix))
        .collect()
}

/// Whatever of the log a page could have read: the marks of an event.
fn assert_no_event_data(what: &str, seen: &Value, mission_id: &str) {
    let text = seen.to_string();
    for mark in [mission_id, "event_type", "global_position", "MissionEnqueued", "ApiKeyCreated"] {
        assert!(!text.contains(mark), "{what} read {mark:?}: {seen:#}");
    }
}

/// Events recorded after `after` in the name of the signed-in operator's key.
async fn recorded_as_operator(env: &TestEnv, after: u64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM events WHERE global_position > $1 AND metadata->>'actor' = $2 \
         ORDER BY global_position",
    )
    .bind(i64::try_from(after).unwrap())
    .bind(ADMIN_ACTOR)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

fn severe(console: &[LogEntry]) -> Vec<&str> {
    console.iter().filter(|entry| entry.is_severe()).map(|entry| entry.message.as_str()).collect()
}

#[tokio::test]
async fn a_page_on_another_origin_can_neither_read_the_feed_nor_change_anything() {
    let deck = Deck::start().await;
    let brain = format!("http://{}", deck.addr);
    let waiting = enqueue(deck.addr, json!({ "name": "waits", "agent": "idle" })).await;

    // The probe can see: from the console's own origin, with the same session, the feed
    // opens and replays the log, and both reads answer.
    deck.open("/").await;
    let own = probe(&deck, &brain, &waiting, false).await;
    assert_eq!(own["ws"]["opened"], true, "{own:#}");
    let first = own["ws"]["messages"][0].as_str().unwrap_or_else(|| panic!("{own:#}"));
    assert!(first.contains("\"global_position\":1"), "{first}");
    for path in ["/api/missions", "/api/events?limit=1000"] {
        assert_eq!(own["reads"][path]["status"], 200, "{path}: {own:#}");
        let body = own["reads"][path]["body"].as_str().unwrap();
        assert!(body.contains(&waiting), "{path}: {body}");
    }

    // From here on, the mission's log and the browser's are the hostile page's.
    let (elsewhere, page) = serve_page(hostile_page(deck.addr, &waiting)).await;
    let hostile = format!("http://{elsewhere}");
    deck.browser.goto(&format!("{hostile}/")).await.unwrap();
    deck.browser.performance_log().await.unwrap();
    deck.browser.browser_log().await.unwrap();
    let head = deck.env.head().await;

    let seen = probe(&deck, &brain, &waiting, true).await;
    let form = deck.browser.execute_async(SUBMIT_FORM, &[]).await.unwrap();
    let events = deck.browser.performance_log().await.unwrap();
    let console = deck.browser.browser_log().await.unwrap();

    // (a) The feed never opened: the handshake was refused, no event came.
    assert_eq!(seen["ws"]["opened"], false, "{seen:#}");
    assert_eq!(seen["ws"]["messages"], json!([]), "{seen:#}");
    assert_eq!(seen["ws"]["closed"]["code"], 1006, "closed without a handshake: {seen:#}");
    let sockets = sockets_to(&events, &brain.replacen("http", "ws", 1));
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let socket = &sockets[0];
    assert_eq!((socket.status, socket.frames_received), (None, 0), "{socket:?}");
    let refusal = socket.error.as_deref().unwrap_or_default();
    assert!(refusal.ends_with("Unexpected response code: 403"), "{socket:?}");

    // (b)-(d) Nothing the page could read: the credentialed reads failed, the script got
    // nothing, the no-cors POST is opaque, the JSON POST was stopped at its preflight and
    // the form's answer is in a frame the page cannot look into.
    for path in ["/api/missions", "/api/events?limit=1000"] {
        let read = &seen["reads"][path];
        assert!(read["error"].as_str().is_some_and(|e| e.contains("TypeError")), "{seen:#}");
        assert!(read.get("body").is_none(), "{path}: {seen:#}");
    }
    assert_eq!(seen["reads"]["script"], json!({ "loaded": false, "errors": [] }), "{seen:#}");
    assert_eq!(
        seen["changes"]["no_cors"],
        json!({ "type": "opaque", "status": 0, "body": "" }),
        "{seen:#}"
    );
    assert!(seen["changes"]["json"]["error"].as_str().is_some(), "{seen:#}");
    assert_eq!(form, json!({ "loaded": true, "seen": null }), "{form:#}");
    assert_no_event_data("the hostile page", &json!([&seen, &form]), &waiting);

    // Each request but one reached the serve with the operator's session cookie (same site),
    // and each was refused: a foreign Origin is 403, the preflight grants nothing, so the
    // JSON POST behind it is never sent. The one request a browser sends without an Origin
    // (the script's) the browser itself withholds from the page, whatever the serve answered.
    let requests = requests_to(&events, &format!("{brain}/"));
    let summary: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {} {:?} {:?} {:?}", r.method, r.url, r.kind, r.status, r.error))
        .collect();
    let cancel = format!("{brain}/api/missions/{waiting}/cancel");
    let expected = [
        ("GET", format!("{brain}/api/missions"), "Fetch"),
        ("GET", format!("{brain}/api/events?limit=1000"), "Fetch"),
        ("GET", format!("{brain}/api/events?limit=999"), "Script"),
        ("POST", cancel.clone(), "Fetch"),
        ("OPTIONS", cancel.clone(), "Other"),
        ("POST", cancel.clone(), "Fetch"),
        ("POST", cancel.clone(), "Document"),
    ];
    let mut listed: Vec<(&str, &str, &str)> =
        requests.iter().map(|r| (r.method.as_str(), r.url.as_str(), r.kind.as_str())).collect();
    let mut wanted: Vec<(&str, &str, &str)> =
        expected.iter().map(|(m, u, k)| (*m, u.as_str(), *k)).collect();
    listed.sort();
    wanted.sort();
    assert_eq!(listed, wanted, "{summary:#?}");
    for request in &requests {
        let line = format!("{} {} ({})", request.method, request.url, request.kind);
        if request.headers.is_empty() {
            assert_eq!(
                (request.method.as_str(), request.kind.as_str()),
                ("POST", "Fetch"),
                "{line}"
            );
            assert_eq!(request.status, None, "{line}: never sent, never answered");
            continue;
        }
        if request.method == "OPTIONS" {
            // A preflight never carries credentials, and this one was not granted.
            assert!(!request.carries_session(), "{line}");
            assert!(request.status.is_some_and(|s| s >= 400), "{line}: {:?}", request.status);
            continue;
        }
        assert!(request.carries_session(), "{line} went without the session: the premise fails");
        match request.header("origin") {
            Some(origin) => {
                assert_eq!(origin, hostile, "{line}");
                assert_eq!(request.status, Some(403), "{line}: the foreign Origin is refused");
            }
            None => {
                assert_eq!(request.kind, "Script", "{line}: only a script goes without Origin");
                let withheld = request.error.as_deref() == Some("net::ERR_BLOCKED_BY_ORB");
                let refused = request.status.is_some_and(|s| s >= 400);
                assert!(withheld || refused, "{line}: {:?} {:?}", request.status, request.error);
            }
        }
    }
    let unsent = requests.iter().filter(|r| r.headers.is_empty()).count();
    assert_eq!(unsent, 1, "only the JSON POST stayed in the browser: {summary:#?}");

    // The serve's side: the mission waits as it did, and nothing was recorded in the
    // operator's name.
    let state = mission(deck.addr, &waiting).await;
    assert_eq!(state["status"], "queued", "{state}");
    assert_eq!(state["version"], 1, "{state}");
    assert_eq!(recorded_as_operator(&deck.env, head).await, Vec::<String>::new());
    let cancelled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MissionCancelled'")
            .fetch_one(&deck.env.pool)
            .await
            .unwrap();
    assert_eq!(cancelled, 0);

    // What the browser logged is the refusals, all of them the serve's: the hostile page's
    // own loads and script went well.
    for message in severe(&console) {
        assert!(message.contains(&*deck.addr.to_string()), "unexplained: {message}");
    }
    page.abort();
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn a_rebinding_host_is_refused_before_the_console_or_the_api_answers() {
    let extra = "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP brain.test 127.0.0.1";
    let browser = BrowserOptions { extra_args: vec![extra.to_owned()], ..Default::default() };
    let deck = Deck::start_with("127.0.0.1:0".parse().unwrap(), browser, |options| {
        options.access.public_hosts = vec!["brain.test".to_owned()];
    })
    .await;
    let port = deck.addr.port();
    let waiting = enqueue(deck.addr, json!({ "name": "waits", "agent": "idle" })).await;

    // The name the serve was told it has opens the console (a sign-in form: the session is
    // 127.0.0.1's): the browser's mapping works, and a refusal below is the Host check.
    let named = format!("http://brain.test:{port}");
    deck.browser.goto(&format!("{named}/")).await.unwrap();
    deck.browser.wait_for("#sign-in input[name=key]", crate::deck::WAIT).await.unwrap();
    deck.browser.performance_log().await.unwrap();
    deck.browser.browser_log().await.unwrap();
    let head = deck.env.head().await;

    // A rebinding name: the document itself is the refusal, and so is every request of it.
    let rebound = format!("http://rebind.test:{port}");
    deck.browser.goto(&format!("{rebound}/")).await.unwrap();
    let document = deck.browser.execute("return document.body.innerText;", &[]).await.unwrap();
    let document: Value = serde_json::from_str(document.as_str().unwrap())
        .unwrap_or_else(|_| panic!("the document is the error: {document}"));
    assert_eq!(document["error"]["code"], "host_refused", "{document}");
    assert_eq!(document["error"]["field"], "host", "{document}");
    let seen = probe(&deck, &rebound, &waiting, false).await;
    for path in ["/api/missions", "/api/events?limit=1000"] {
        let read = &seen["reads"][path];
        assert_eq!(read["status"], 421, "{path}: {seen:#}");
        let body: Value = serde_json::from_str(read["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "host_refused", "{path}: {body}");
    }
    assert_eq!(seen["ws"]["opened"], false, "{seen:#}");
    assert_eq!(seen["ws"]["messages"], json!([]), "{seen:#}");
    assert_no_event_data("the rebound page", &json!([&document, &seen]), &waiting);

    let events = deck.browser.performance_log().await.unwrap();
    let console = deck.browser.browser_log().await.unwrap();
    let requests = requests_to(&events, &format!("{rebound}/"));
    let summary: Vec<String> =
        requests.iter().map(|r| format!("{} {} {:?}", r.method, r.url, r.status)).collect();
    for path in ["/", "/api/missions", "/api/events?limit=1000"] {
        let url = format!("{rebound}{path}");
        assert!(requests.iter().any(|r| r.url == url), "{url} among {summary:#?}");
    }
    for request in &requests {
        assert_eq!(request.status, Some(421), "{} {}: {summary:#?}", request.method, request.url);
    }
    let sockets = sockets_to(&events, &rebound.replacen("http", "ws", 1));
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let socket = &sockets[0];
    assert_eq!((socket.status, socket.frames_received), (None, 0), "{socket:?}");
    let refusal = socket.error.as_deref().unwrap_or_default();
    assert!(refusal.ends_with("Unexpected response code: 421"), "{socket:?}");
    for message in severe(&console) {
        assert!(message.contains("rebind.test"), "unexplained: {message}");
    }

    // Nothing changed; the operator's session at 127.0.0.1 still works.
    assert_eq!(recorded_as_operator(&deck.env, head).await, Vec::<String>::new());
    assert_eq!(mission(deck.addr, &waiting).await["status"], "queued");
    deck.open("/").await;
    deck.text("#who", "admin").await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn the_docs_ui_draws_every_route_under_its_content_security_policy() {
    let deck = Deck::start().await;
    deck.open("/docs/").await;
    // Swagger UI draws the document's operations; a policy that blocked its script or its
    // styles would leave the page empty and log the violation.
    deck.text(".swagger-ui", "/api/missions/enqueue").await;
    deck.text(".swagger-ui", "/api/keys").await;
    deck.check_clean(&[]).await;
}
