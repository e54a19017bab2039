//! The Control Deck's contract with the API: everything the console calls and reads is in the
//! OpenAPI document the server serves at `GET /openapi.json`.
//!
//! - Paths, from the sources: every `api(`, `fetch(` and `new WebSocket(` in
//!   `src/api/console/*.js` is worked out to its method and path template (`scan`), following
//!   an argument to every caller of the function it came in by, and each is a documented
//!   operation. A call that cannot be worked out, a function passed around so that its calls
//!   cannot be followed, another way to the network, or an API path literal that no call sends
//!   fails the test: nothing is skipped.
//! - Fields, at run time: headless Chromium runs the console with a recorder injected before
//!   its scripts (`recorder.js`), which notes every request and makes every JSON answer (HTTP
//!   bodies, event-stream events, WebSocket messages) a Proxy noting each property the page
//!   reads. Every page is driven through what it shows and does. Each request is a documented
//!   operation with documented query parameters, and each read is checked against the schema
//!   the document gives that operation and status (`schema`): the field is there, and the
//!   JSON type the answer held there is the documented one. The drive must have made every
//!   call found in the sources, so the check cannot pass by not looking.
//! - The checkers themselves report a made-up path, call, field and query parameter (the
//!   tests at the end, and `scan`'s own).
//!
//! Messages the document describes in words only (the `/ws/events` token messages, the chat
//! stream's events) have no schema to check against; their reads are printed, not failed.

mod scan;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::deck::{Deck, WAIT};
use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::{get, redis_url, serve_in_process, services};
use crate::support::TestEnv;
use crate::workers::{enqueue, finished};
use scan::{Call, Segment};
use schema::{Contract, Read, Verdict, concrete};

/// Injected into every page before its own scripts.
const RECORDER: &str = include_str!("console_contract/recorder.js");

/// Every JavaScript file the console is made of, as `(file name, source)`.
fn console_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/console");
    let mut sources: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "js"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    sources.sort();
    assert!(sources.len() >= 5, "the console's modules: {:?}", sources.iter().map(|s| &s.0));
    sources
}

/// The calls the sources make, every one worked out, each once per method and path.
fn console_calls() -> Vec<Call> {
    let found = scan::scan(&console_sources());
    assert!(
        found.problems.is_empty(),
        "calls that cannot be checked:\n{}",
        found.problems.join("\n")
    );
    let mut seen = BTreeSet::new();
    found
        .calls
        .into_iter()
        .filter(|call| seen.insert((call.method.clone(), call.path.clone())))
        .collect()
}

async fn served_document() -> Value {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_in_process(services(&env, &redis_url())).await;
    let (status, document) = get(addr, "/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    document
}

#[tokio::test]
async fn every_call_in_the_console_sources_is_a_documented_operation() {
    let document = served_document().await;
    let contract = Contract::new(&document);
    let calls = console_calls();
    // Some of what the console is known to call, so that a scan gone blind fails here.
    let texts: BTreeSet<String> =
        calls.iter().map(|c| format!("{} {}", c.method, c.path_text())).collect();
    for expected in [
        "GET /ready",
        "GET /api/missions/{…}",
        "POST /api/missions/{…}/cancel",
        "PUT /api/llm/config",
        "POST /api/llm/config/reset",
        "POST /api/agents/chat",
        "GET /ws/events",
    ] {
        assert!(texts.contains(expected), "{expected} not found among {texts:?}");
    }
    let undocumented: Vec<String> = calls
        .iter()
        .filter(|call| contract.operation(&call.method, &call.path).is_none())
        .map(|call| format!("{} {} at {}", call.method, call.path_text(), call.at.join(" <- ")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "the console calls what the document lacks:\n{}",
        undocumented.join("\n")
    );
}

/// What the recorder handed over.
#[derive(Debug, Default, Deserialize)]
struct Taken {
    calls: Vec<Sent>,
    reads: Vec<Read>,
    dropped: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Sent {
    kind: String,
    method: String,
    path: String,
    status: u16,
    /// The names of the query parameters it carried.
    query: Vec<String>,
}

/// Everything recorded over the whole drive.
#[derive(Default)]
struct Recording {
    sent: BTreeSet<Sent>,
    reads: BTreeSet<Read>,
}

impl Recording {
    /// Takes what the page recorded; done before every navigation, which loses the page.
    async fn collect(&mut self, deck: &Deck) {
        let taken = deck
            .browser
            .execute("return window.__contract ? window.__contract.take() : null;", &[])
            .await
            .unwrap();
        if taken.is_null() {
            return;
        }
        let taken: Taken = serde_json::from_value(taken).unwrap();
        assert_eq!(taken.dropped, 0, "the recorder's bound was reached: raise RECORDS_MAX");
        self.sent.extend(taken.calls);
        self.reads.extend(taken.reads);
    }

    async fn open(&mut self, deck: &Deck, path: &str) {
        self.collect(deck).await;
        deck.open(path).await;
        let installed =
            deck.browser.execute("return typeof window.__contract;", &[]).await.unwrap();
        assert_eq!(installed, json!("object"), "the recorder runs in {path}");
    }
}

/// Every page, with data that fills its parts, and every action the console offers.
async fn drive(deck: &Deck, fake: &FakeLlm, recording: &mut Recording) {
    let missions = prepare(deck.addr, fake).await;
    drive_missions(deck, recording, &missions).await;
    drive_agents(deck, recording).await;
    drive_live(deck, fake, recording).await;
    drive_llm(deck, recording).await;
    drive_session(deck, recording).await;
    recording.collect(deck).await;
}

/// Signs out and in again through the page.
async fn drive_session(deck: &Deck, recording: &mut Recording) {
    recording.open(deck, "/").await;
    deck.click("#who button").await;
    deck.browser.wait_for("#sign-in input[name=key]", crate::deck::WAIT).await.unwrap();
    deck.fill("#sign-in input[name=key]", crate::support::ADMIN_TOKEN).await;
    deck.click("#sign-in button[type=submit]").await;
    deck.text("#who", "admin").await;
}

/// The missions the pages show, each in the state its page needs.
struct Missions {
    echoed: String,
    failed: String,
    thought: String,
    fork: String,
    /// Queued for an agent no worker runs.
    waiting: String,
}

/// The gateway pointed at the fake, and missions in every state the pages draw.
async fn prepare(addr: std::net::SocketAddr, fake: &FakeLlm) -> Missions {
    // The gateway talks to the fake, so coder missions and chat make real LLM calls.
    let (_, config) = get(addr, "/api/llm/config").await;
    let mut settings = config["settings"].clone();
    settings["provider"] = json!("openai");
    settings["host"] = json!(fake.url());
    settings["model"] = json!("fake-1");
    let (status, answer) = crate::llm_config::put(addr, &settings).await;
    assert_eq!(status, 200, "{answer}");

    let echoed = enqueue(addr, json!({ "name": "echoed", "agent": "echo" })).await;
    let failed = enqueue(
        addr,
        json!({ "name": "gives up", "agent": "echo", "payload": { "fail_permanently": true } }),
    )
    .await;
    let thought = enqueue(addr, json!({ "name": "thinks", "agent": "coder" })).await;
    for id in [&echoed, &failed, &thought] {
        finished(addr, id).await;
    }
    let (status, fork) = crate::missions_api::post(
        addr,
        &format!("/api/missions/{thought}/fork"),
        &json!({ "at_step": 1 }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{fork}");
    let fork = fork["mission_id"].as_str().unwrap().to_owned();
    finished(addr, &fork).await;
    let waiting = enqueue(addr, json!({ "name": "waits", "agent": "idle" })).await;
    Missions { echoed, failed, thought, fork, waiting }
}

/// The overview, the mission list and its form, the missions' pages and their actions,
/// the queue.
async fn drive_missions(deck: &Deck, recording: &mut Recording, missions: &Missions) {
    let Missions { echoed, failed, thought, fork, waiting } = missions;
    recording.open(deck, "/").await;
    deck.text("#services", "ok").await;
    deck.text("#main", "relay (to JetStream)").await;
    deck.text("#main", "heard from in the last hour").await;

    // The list, a refusal of the form (the error body is read too), then an enqueue.
    // The list filtered every way the form can (the filters go in the query).
    let filtered =
        "/missions?status=completed&priority=normal&agent=coder&since=2020-01-01T00:00:00Z";
    recording.open(deck, filtered).await;
    deck.text("#mission-list", "thinks").await;
    recording.open(deck, "/missions").await;
    deck.text("#mission-list", "gives up").await;
    deck.click("#enqueue-open").await;
    deck.fill("#enqueue input[name=name]", "from the form").await;
    deck.fill("#enqueue input[name=timeout_s]", "0").await;
    deck.click("#enqueue button[type=submit]").await;
    deck.text("#enqueue-result .error", "timeout_s").await;
    deck.fill("#enqueue input[name=timeout_s]", "60").await;
    deck.click("#enqueue button[type=submit]").await;
    deck.text("#enqueue-result", "Enqueued").await;

    recording.open(deck, &format!("/missions/{thought}")).await;
    deck.text("#status", "completed").await;
    deck.text("#timeline", "LlmCalled").await;
    deck.text("#main", "Forked into").await;
    recording.open(deck, &format!("/missions/{fork}")).await;
    deck.text("#main", "Fork of").await;
    // Retried from its page (it fails again: its payload asks for that).
    recording.open(deck, &format!("/missions/{failed}")).await;
    deck.text("#main", "asked to fail permanently").await;
    deck.click("#retry").await;
    deck.give_reason("the cause is fixed").await;
    deck.text("#timeline", "Retried").await;
    // A copy of the finished one, from its page.
    recording.open(deck, &format!("/missions/{thought}")).await;
    deck.text("#status", "completed").await;
    deck.click("#reenqueue").await;
    deck.give_reason("once more").await;
    deck.text("#action-result", "Copy enqueued").await;
    // Replayed and forked from its trace.
    recording.open(deck, &format!("/missions/{thought}")).await;
    deck.text("#status", "completed").await;
    deck.click("#replay").await;
    deck.text("#action-result", "identical").await;
    deck.click("#trace li[data-kind=llm] summary").await;
    deck.click("#trace button.fork").await;
    deck.text("#action-result", "Fork from step 1").await;
    recording.open(deck, &format!("/missions/{echoed}")).await;
    deck.text("#status", "completed").await;
    // Its history stepped through: the view as of an event.
    deck.click("#stepper summary").await;
    deck.text("#as-of", "completed").await;
    // A bulk re-enqueue of the rows ticked in the list.
    recording.open(deck, "/missions?q=echoed&status=completed").await;
    deck.text("#mission-list", "echoed").await;
    deck.click("#select-page").await;
    deck.click("#bulk-bar button[data-action=reenqueue]").await;
    deck.give_reason("a bulk copy").await;
    deck.text("#bulk-summary", "done").await;

    recording.open(deck, "/queue?agent=idle").await;
    deck.text("#queue", "waits").await;
    recording.open(deck, &format!("/missions/{waiting}")).await;
    deck.text("#status", "queued").await;
    deck.click("#cancel").await;
    deck.give_reason("not needed").await;
    deck.text("#status", "cancelled").await;
}

/// An agent stopped and started through the supervisor, then its own page.
async fn drive_agents(deck: &Deck, recording: &mut Recording) {
    recording.open(deck, "/agents").await;
    deck.text("#workers", "echo").await;
    let stop = deck.browser.wait_for("#agents button[data-action=stop]", WAIT).await.unwrap();
    let agent_id = stop.attr("data-agent").await.unwrap().unwrap();
    deck.click(&format!("#agents button[data-agent='{agent_id}'][data-action=stop]")).await;
    deck.give_reason("a pause").await;
    deck.click(&format!("#agents button[data-agent='{agent_id}'][data-action=start]")).await;
    deck.give_reason("the pause is over").await;
    deck.browser
        .wait_for(&format!("#agents button[data-agent='{agent_id}'][data-action=stop]"), WAIT)
        .await
        .unwrap();
    deck.text("#main", "answers with the mission's payload").await;
    recording.open(deck, &format!("/agents/{agent_id}")).await;
    deck.text("#agent-history", "the pause is over").await;
}

/// What arrives live: the event feed, a mission's answer streaming in, a chat.
async fn drive_live(deck: &Deck, fake: &FakeLlm, recording: &mut Recording) {
    let addr = deck.addr;
    recording.open(deck, "/events?stream_type=mission&from=0").await;
    deck.text(".feed-state", "live").await;
    enqueue(addr, json!({ "name": "seen live", "agent": "idle" })).await;
    deck.text("#feed-rows", "seen live").await;

    // A mission's answer streaming in: the feed's token messages.
    fake.set_piece_delay(std::time::Duration::from_millis(150));
    let counting = enqueue(addr, json!({ "name": "count", "agent": "coder" })).await;
    recording.open(deck, &format!("/missions/{counting}")).await;
    deck.text("#streaming", "streaming").await;
    deck.text("#status", "completed").await;
    fake.set_piece_delay(std::time::Duration::ZERO);

    // A chat answer streamed as server-sent events, then the conversation opened again.
    recording.open(deck, "/chat").await;
    deck.browser.wait_for("#chat-form textarea", WAIT).await.unwrap();
    deck.fill("#chat-form textarea[name=message]", "count for me").await;
    deck.click("#chat-form button[type=submit]").await;
    deck.text(".msg.assistant[data-done=true]", "one two three").await;
    deck.text("#conversations", "count for me").await;
    let url = deck.browser.current_url().await.unwrap();
    let conversation = &url[url.find("/chat/").expect("the address names the conversation")..];
    recording.open(deck, conversation).await;
    deck.text("#messages .msg.assistant", "one two three").await;
}

/// The LLM page: usage of the calls above, a refused save, a save, a reset.
async fn drive_llm(deck: &Deck, recording: &mut Recording) {
    recording.open(deck, "/llm").await;
    deck.browser.wait_for("#llm-form", WAIT).await.unwrap();
    deck.text("#llm-usage", "fake-1").await;
    deck.fill("#llm-form input[name=temperature]", "9").await;
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-result .error", "temperature").await;
    deck.fill("#llm-form input[name=temperature]", "0.5").await;
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-result", "Saved").await;
    deck.click("#llm-reset").await;
    deck.text("#llm-result", "Reset to the defaults").await;
}

#[tokio::test]
async fn every_field_the_console_reads_from_an_answer_is_in_its_documented_schema() {
    let started = std::time::Instant::now();
    let fake = FakeLlm::start(vec![], Scripted::text("one two three four five six"), None).await;
    let deck = Deck::start().await;
    deck.browser
        .cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": RECORDER }))
        .await
        .unwrap();
    let (_, document) = get(deck.addr, "/openapi.json").await;
    let contract = Contract::new(&document);
    let mut recording = Recording::default();
    drive(&deck, &fake, &mut recording).await;

    // Every request the pages sent is a documented operation, with documented query
    // parameters.
    let mut exercised = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for sent in &recording.sent {
        let Some(template) = contract.operation(&sent.method, &concrete(&sent.path)) else {
            unknown.insert(format!("{} {} ({})", sent.method, sent.path, sent.status));
            continue;
        };
        for name in &sent.query {
            if let Err(why) = contract.query_parameter(&sent.method, &template, name) {
                unknown.insert(format!("{} {template}?{name}: {why}", sent.method));
            }
        }
        exercised.insert((sent.method.clone(), template));
    }
    assert!(unknown.is_empty(), "the pages sent what the document lacks: {unknown:?}");
    // The drive went through every call the sources can make: a call it never made would
    // have its reads unchecked.
    let calls = console_calls();
    let unexercised: Vec<String> = calls
        .iter()
        .filter_map(|call| {
            let template = contract.operation(&call.method, &call.path)?;
            let done = exercised.contains(&(call.method.clone(), template.clone()));
            (!done).then(|| format!("{} {template} at {}", call.method, call.at.join(" <- ")))
        })
        .collect();
    assert!(unexercised.is_empty(), "drive() never made these calls: {unexercised:?}");

    let mut mismatches = BTreeMap::new();
    let mut undescribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut read_from = BTreeSet::new();
    for read in &recording.reads {
        read_from.insert((read.kind.clone(), read.method.clone(), concrete(&read.path)));
        match contract.check(read) {
            Verdict::Documented => {}
            Verdict::Undescribed(what) => {
                undescribed.entry(what).or_default().insert(read.field.join("."));
            }
            Verdict::Mismatch(why) => {
                mismatches.entry(why).or_insert_with(|| read.describe());
            }
        }
    }
    // The recorder saw answers of every kind, and of every GET the pages sent.
    for kind in ["http", "sse", "ws"] {
        assert!(read_from.iter().any(|(k, _, _)| k == kind), "no {kind} read was recorded");
    }
    for sent in recording.sent.iter().filter(|s| s.method == "GET" && s.kind == "http") {
        let path = concrete(&sent.path);
        assert!(
            read_from.iter().any(|(k, m, p)| k == "http" && m == "GET" && *p == path),
            "nothing was read from GET {}",
            sent.path
        );
    }
    for (what, fields) in &undescribed {
        eprintln!("described in words only, not checked: {what}: {fields:?}");
    }
    let report: Vec<String> =
        mismatches.iter().map(|(why, read)| format!("{why}\n    read: {read}")).collect();
    assert!(report.is_empty(), "the console reads what the document lacks:\n{}", report.join("\n"));

    deck.check_clean(&[("/api/missions/enqueue", 422), ("/api/llm/config", 422)]).await;
    eprintln!(
        "{} requests, {} reads checked in {:.1} s",
        recording.sent.len(),
        recording.reads.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A document of two operations: enough to see each way a schema nests.
fn small_document() -> Value {
    json!({
        "paths": {
            "/api/things/{thing_id}": { "get": {
                "parameters": [
                    { "name": "thing_id", "in": "path", "required": true },
                    { "name": "fields", "in": "query" },
                ],
                "responses": {
                "200": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } },
                "404": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            } } },
            "/api/things/count": { "get": { "responses": {
                "200": { "content": { "application/json": { "schema": { "type": "integer" } } } },
            } } },
        },
        "components": { "schemas": {
            "Thing": { "allOf": [
                { "$ref": "#/components/schemas/Named" },
                { "type": "object", "required": ["parts"], "properties": {
                    "parts": { "type": "array", "items": { "$ref": "#/components/schemas/Part" } },
                    "owner": { "oneOf": [{ "$ref": "#/components/schemas/Named" }, { "type": "null" }] },
                    "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
                    "payload": { "type": "object" },
                } },
            ] },
            "Named": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } },
            "Part": { "type": "object", "properties": { "size": { "type": ["integer", "null"] } } },
            "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                "code": { "type": "string" } } } } },
        } },
    })
}

fn read(path: &str, status: u16, field: &str, seen: &str) -> Read {
    Read {
        kind: "http".to_owned(),
        method: "GET".to_owned(),
        path: path.to_owned(),
        status,
        event: None,
        root: None,
        field: field.split('.').map(str::to_owned).collect(),
        seen: seen.to_owned(),
    }
}

#[test]
fn the_schema_check_accepts_documented_fields_and_reports_made_up_ones() {
    let document = small_document();
    let contract = Contract::new(&document);
    let thing = "/api/things/7";
    for (field, seen) in [
        ("name", "string"),
        ("parts.[].size", "number"),
        ("parts.[].size", "null"),
        ("parts.[].size", "absent"),
        ("owner.name", "string"),
        ("counts.anything", "number"),
        ("payload.deep.inside", "object"),
    ] {
        let verdict = contract.check(&read(thing, 200, field, seen));
        assert!(matches!(verdict, Verdict::Documented), "{field} ({seen}) is documented");
    }
    for (path, status, field, seen, expected) in [
        (thing, 200, "nmae", "absent", "`nmae` is not in the schema (Named | object)"),
        (thing, 200, "parts.[].colour", "string", "`parts.[].colour` is not in the schema (Part)"),
        (thing, 200, "owner.age", "number", "`owner.age` is not in the schema (Named | null)"),
        (thing, 200, "name.first", "string", "`name.first` is not in the schema (string)"),
        (thing, 200, "parts", "absent", "`parts` is required by the schema but was absent"),
        (thing, 200, "name", "number", "`name` is documented as string, but held a JSON number"),
        (thing, 404, "error.field", "string", "`error.field` is not in the schema (object)"),
        (thing, 500, "error", "object", "answered 500, which it does not document"),
        ("/api/thing/7", 200, "name", "string", "GET /api/thing/7 is no documented operation"),
    ] {
        match contract.check(&read(path, status, field, seen)) {
            Verdict::Mismatch(why) => assert!(why.contains(expected), "{why} says {expected}"),
            _ => panic!("{path} {status} {field} ({seen}) passed; expected: {expected}"),
        }
    }
    // A literal segment wins over a parameter, as in the router.
    let count = contract.operation("GET", &concrete("/api/things/count"));
    assert_eq!(count.as_deref(), Some("/api/things/count"));
    let made_up =
        [Segment::Lit("api".into()), Segment::Lit("things".into()), Segment::Param, Segment::Param];
    assert_eq!(contract.operation("GET", &made_up), None);
    assert_eq!(contract.operation("DELETE", &concrete("/api/things/7")), None);
    let thing = "/api/things/{thing_id}";
    assert_eq!(contract.query_parameter("GET", thing, "fields"), Ok(()));
    let why = contract.query_parameter("GET", thing, "thing_id").unwrap_err();
    assert_eq!(why, "documents `thing_id` as a path parameter, not a query one");
    let why = contract.query_parameter("GET", thing, "colour").unwrap_err();
    assert_eq!(why, "documents no parameter `colour`");
}
