//! The Control Deck in headless Chromium (Debian's `chromium`, driven through
//! `chromium-driver`) against a real serve:
//! - a mission enqueued from the form completes on the page without a reload, a refusal
//!   shows the API's own message, a mission is cancelled with a reason, its history opens;
//! - the event feed holds only the rows in view and keeps a reader's place;
//! - a mission is found and cancelled with the keyboard alone;
//! - an agent is stopped and started;
//! - a bad LLM setting is refused with the API's message, and an edit is kept when someone
//!   else saves; a chat answer streams in, the conversation is listed and opened again, and
//!   a turn added elsewhere appears;
//! - a page resumes across a server restart, and the pages fit a phone.
//!
//! Every test ends by checking that the browser logged no error and no request failed
//! beyond the refusals it provoked. The harness is `crate::deck`.
//!
//! Screenshots of the pages go to `BRAIN_SCREENSHOT_DIR` when it is set (the README's come
//! from `BRAIN_SCREENSHOT_DIR=docs/screenshots cargo test --test it console_browser`), else
//! into the test's scratch directory, where they are still taken and checked.

use std::net::SocketAddr;
use std::time::Duration;

use brain::bench::webdriver::keys;
use serde_json::{Value, json};

use crate::deck::{Deck, WAIT, api_refusal, options};
use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::{get, serve_with_options};
use crate::support::wait_until;
use crate::workers::enqueue;

#[tokio::test]
async fn missions_enqueued_from_the_form_complete_live_and_one_is_cancelled() {
    let deck = Deck::start().await;
    deck.open("/").await;
    deck.text("#services", "ok").await;
    deck.browser.wait_for("#main .card table", WAIT).await.unwrap();
    deck.shot("overview").await;

    deck.open("/missions").await;
    deck.text(".feed-state", "live").await;
    // The form opens from its button; a refusal is the API's own message, beside the field
    // at fault.
    deck.click("#enqueue-open").await;
    deck.fill("#enqueue input[name=name]", "from the form").await;
    deck.fill("#enqueue input[name=timeout_s]", "0").await;
    deck.click("#enqueue button[type=submit]").await;
    let refusal = api_refusal(
        deck.addr,
        reqwest::Method::POST,
        "/api/missions/enqueue",
        &json!({ "name": "x", "timeout_s": 0 }),
    )
    .await;
    let message = refusal["message"].as_str().unwrap().to_owned();
    deck.text("#enqueue-result .error", &message).await;
    deck.text("#enqueue-result .error", "timeout_s").await;
    let invalid = deck.browser.find("#enqueue input[name=timeout_s]").await.unwrap();
    assert!(invalid.attr("class").await.unwrap().unwrap_or_default().contains("invalid"));

    // Enqueued for a second's work: the list shows it running, then completed, unreloaded.
    deck.fill("#enqueue input[name=timeout_s]", "60").await;
    deck.browser
        .find("#enqueue select[name=agent]")
        .await
        .unwrap()
        .select_by_value("echo")
        .await
        .unwrap();
    deck.fill("#enqueue textarea[name=payload]", r#"{"delay_ms": 1500}"#).await;
    deck.browser.execute("window.__notReloaded = true; return null;", &[]).await.unwrap();
    deck.click("#enqueue button[type=submit]").await;
    deck.text("#enqueue-result", "Enqueued").await;
    deck.text("#mission-list tbody tr", "running").await;
    deck.browser
        .wait_for_text(
            "#mission-list tbody tr",
            |t: &str| t.contains("from the form") && t.contains("completed"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        deck.browser.execute("return window.__notReloaded === true;", &[]).await.unwrap(),
        json!(true)
    );
    deck.shot("missions").await;

    // Its page: the history as a timeline, each event opening to its payload.
    deck.click("#mission-list tbody tr a").await;
    deck.text("#status", "completed").await;
    deck.text("#timeline", "Enqueued").await;
    deck.text("#timeline", "Started").await;
    deck.text("#timeline", "Completed").await;
    deck.click("#timeline li[data-type=MissionEnqueued] summary").await;
    deck.text("#timeline li[data-type=MissionEnqueued] pre", "delay_ms").await;
    deck.text("#answer", "delay_ms").await;
    deck.shot("mission").await;

    // A mission no worker serves waits; cancelled from its page with a reason.
    let waiting = enqueue(deck.addr, json!({ "name": "waits", "agent": "idle" })).await;
    deck.open(&format!("/missions/{waiting}")).await;
    deck.text("#status", "queued").await;
    deck.text("#unserved", "no active agent serves `idle`").await;
    deck.click("#cancel").await;
    deck.give_reason("not needed any more").await;
    deck.text("#status", "cancelled").await;
    deck.text("#timeline li[data-type=MissionCancelled]", "not needed any more").await;
    // Retry is offered only where the API allows it: a cancelled mission does not run again.
    let retry = deck.browser.find("#retry").await.unwrap();
    assert!(
        retry.attr("disabled").await.unwrap().is_some(),
        "retry offered on a cancelled mission"
    );
    let (_, view) = get(deck.addr, &format!("/api/missions/{waiting}")).await;
    assert_eq!(view["status"], json!("cancelled"), "{view}");

    // The overview's last day: each kind that finished something, and the hour's bar with its
    // completed part.
    deck.open("/").await;
    deck.text("#by-kind", "echo").await;
    deck.text("#by-kind", "idle").await;
    let hourly = "const bars = [...document.querySelectorAll('#hourly .stack')];\
                  const part = (b, c) => parseFloat(b.querySelector('i.' + c).style.height);\
                  return [bars.length, Math.max(...bars.map((b) => part(b, 'completed'))),\
                          Math.max(...bars.map((b) => part(b, 'cancelled')))];";
    let hourly = deck.browser.execute(hourly, &[]).await.unwrap();
    assert_eq!(hourly[0], json!(24), "{hourly}");
    assert!(hourly[1].as_f64().unwrap() > 0.0 && hourly[2].as_f64().unwrap() > 0.0, "{hourly}");
    // The last hour's minutes are stacked the same way.
    let minutes = "const bars = [...document.querySelectorAll('#minute-bars .stack')];\
                   return [bars.length, Math.max(...bars.map((b) =>\
                           parseFloat(b.querySelector('i.completed').style.height)))];";
    let minutes = deck.browser.execute(minutes, &[]).await.unwrap();
    assert_eq!(minutes[0], json!(60), "{minutes}");
    assert!(minutes[1].as_f64().unwrap() > 0.0, "{minutes}");

    deck.open("/events").await;
    deck.text(".feed-state", "live").await;
    enqueue(deck.addr, json!({ "name": "seen live", "agent": "idle" })).await;
    deck.text("#feed-rows", "MissionEnqueued").await;
    deck.text("#feed-stats", "1 received").await;
    deck.shot("events").await;
    // Paused, the feed holds its place; resumed, it goes on from there.
    deck.click("#pause").await;
    deck.text("#pause", "Resume from").await;
    enqueue(deck.addr, json!({ "name": "while paused", "agent": "idle" })).await;
    deck.click("#pause").await;
    deck.text("#feed-rows", "while paused").await;
    deck.open("/queue?agent=idle").await;
    deck.text("#queue", "seen live").await;
    deck.shot("queue").await;
    // The overview says that nothing runs what waits for `idle`, and not for `echo`.
    deck.open("/").await;
    deck.text("#unserved", "no active agent serves `idle`").await;
    let unserved = deck.browser.find("#unserved").await.unwrap().text().await.unwrap();
    assert!(!unserved.contains("echo"), "{unserved}");
    deck.check_clean(&[("/api/missions/enqueue", 422)]).await;
}

/// The position in the event-feed row at the middle of its box, once the page has drawn.
const ROW_IN_VIEW: &str = "const done = arguments[arguments.length - 1];\
    requestAnimationFrame(() => requestAnimationFrame(() => {\
      const box = document.querySelector('.feed-box').getBoundingClientRect();\
      const cell = document.elementFromPoint(box.left + 40, box.top + box.height / 2);\
      done(Number(cell.closest('.feed-row').children[0].textContent));\
    }));";

/// Enqueues `count` missions named `{prefix} {n}` in one batch; each is one event.
async fn enqueue_batch(addr: SocketAddr, prefix: &str, count: usize) {
    let missions: Vec<Value> =
        (0..count).map(|n| json!({ "name": format!("{prefix} {n}"), "agent": "idle" })).collect();
    let body = json!({ "missions": missions }).to_string();
    let (status, answer) =
        crate::missions_api::post(addr, "/api/missions/enqueue/batch", &body).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn the_event_feed_draws_the_rows_in_view_only_and_holds_a_reader_in_place() {
    let deck = Deck::start().await;
    deck.open("/events").await;
    deck.text(".feed-state", "live").await;
    enqueue_batch(deck.addr, "first", 300).await;
    deck.text("#feed-stats", "300 received").await;
    // Newest first, and the page holds the rows in view (and a few spare), not all 300.
    deck.text("#feed-rows .feed-row", "first 299").await;
    let rows = deck
        .browser
        .execute("return document.querySelectorAll('#feed-rows .feed-row').length;", &[])
        .await
        .unwrap();
    let rows = rows.as_u64().unwrap();
    assert!((20..100).contains(&rows), "{rows} rows in the page for 300 events");
    let top = deck.browser.execute_async(ROW_IN_VIEW, &[]).await.unwrap().as_u64().unwrap();

    // Scrolled down to read, the same row stays in view while newer ones arrive above it.
    deck.browser
        .execute("document.querySelector('.feed-box').scrollTop = 150 * 21; return null;", &[])
        .await
        .unwrap();
    let reading = deck.browser.execute_async(ROW_IN_VIEW, &[]).await.unwrap().as_u64().unwrap();
    assert!(reading < top - 100, "scrolled from {top} to {reading}");
    enqueue_batch(deck.addr, "second", 50).await;
    deck.text("#feed-stats", "350 received").await;
    let still = deck.browser.execute_async(ROW_IN_VIEW, &[]).await.unwrap().as_u64().unwrap();
    assert_eq!(still, reading, "the row being read moved");
    // Back at the top, the newest is there.
    deck.browser
        .execute("document.querySelector('.feed-box').scrollTop = 0; return null;", &[])
        .await
        .unwrap();
    deck.text("#feed-rows .feed-row", "second 49").await;
    // Another filter, for a mission with no events: the old rows go at once.
    deck.fill("input[name=mission_id]", &uuid::Uuid::now_v7().to_string()).await;
    deck.click("form.row button[type=submit]").await;
    wait_until("the old rows to go", WAIT, || async {
        let count = "return document.querySelectorAll('#feed-rows .feed-row').length;";
        deck.browser.execute(count, &[]).await.unwrap() == json!(0)
    })
    .await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn a_mission_is_found_and_cancelled_with_the_keyboard_alone() {
    let deck = Deck::start().await;
    let id = enqueue(deck.addr, json!({ "name": "by keyboard", "agent": "idle" })).await;
    deck.open("/").await;
    deck.browser.wait_for("#main .card", WAIT).await.unwrap();
    // The first stop is the skip link, which takes the focus to the page's content.
    deck.press(keys::TAB).await;
    assert_eq!(deck.focused().await["class"], json!("skip"));
    deck.press(keys::ENTER).await;
    assert_eq!(deck.focused().await["id"], json!("main"));

    // To the missions by the navigation, to the mission by its link in the list.
    deck.open("/").await;
    deck.browser.wait_for("#main .card", WAIT).await.unwrap();
    deck.tab_to("the Missions link", |f| f["tag"] == "a" && f["text"] == "Missions").await;
    deck.press(keys::ENTER).await;
    deck.text("#main h1", "Missions").await;
    deck.text("#main", "by keyboard").await;
    deck.tab_to("the mission's link", |f| f["tag"] == "a" && f["text"] == "by keyboard").await;
    deck.press(keys::ENTER).await;
    deck.text("#status", "queued").await;
    assert!(deck.browser.current_url().await.unwrap().ends_with(&format!("/missions/{id}")));

    // Cancel asks for a reason in a dialog that takes the focus; Escape backs out of it and
    // nothing happens.
    deck.tab_to("the cancel button", |f| f["id"] == "cancel").await;
    deck.press(keys::ENTER).await;
    deck.browser.wait_for("dialog.reason[open]", WAIT).await.unwrap();
    assert_eq!(deck.focused().await["name"], json!("reason"));
    deck.press("changed my mind").await;
    deck.press(keys::ESCAPE).await;
    wait_until("the dialog to close", WAIT, || async {
        deck.browser.find_all("dialog.reason").await.unwrap().is_empty()
    })
    .await;
    let (_, view) = get(deck.addr, &format!("/api/missions/{id}")).await;
    assert_eq!(view["status"], json!("queued"), "{view}");

    // Again, this time confirmed from the keyboard: typed, Tab to the button, Enter.
    assert_eq!(deck.focused().await["id"], json!("cancel"), "the focus came back");
    deck.press(keys::ENTER).await;
    deck.browser.wait_for("dialog.reason[open]", WAIT).await.unwrap();
    deck.press("cancelled by keyboard").await;
    deck.tab_to("the confirm button", |f| f["tag"] == "button" && f["class"] == "primary").await;
    deck.press(keys::ENTER).await;
    deck.text("#status", "cancelled").await;
    deck.text("#timeline li[data-type=MissionCancelled]", "cancelled by keyboard").await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn agents_are_stopped_and_started_through_the_supervisor_with_a_reason() {
    let deck = Deck::start().await;
    deck.open("/agents").await;
    deck.text("#agents", "echo").await;
    deck.text("#workers", "echo").await;
    deck.shot("agents").await;
    let stop = deck.browser.wait_for("#agents button[data-action=stop]", WAIT).await.unwrap();
    let agent_id = stop.attr("data-agent").await.unwrap().unwrap();
    deck.click(&format!("#agents button[data-agent='{agent_id}'][data-action=stop]")).await;
    deck.give_reason("maintenance window").await;
    wait_until("the agent to be stopped", WAIT, || async {
        get(deck.addr, &format!("/api/agents/{agent_id}")).await.1["state"] == json!("stopped")
    })
    .await;
    let row = format!("#agents button[data-agent='{agent_id}'][data-action=start]");
    deck.click(&row).await;
    deck.give_reason("maintenance over").await;
    deck.browser
        .wait_for(&format!("#agents button[data-agent='{agent_id}'][data-action=stop]"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        get(deck.addr, &format!("/api/agents/{agent_id}")).await.1["state"],
        json!("active")
    );

    // The agent's page: its history holds both controls with their reasons.
    deck.open(&format!("/agents/{agent_id}")).await;
    deck.text("#agent-state", "active").await;
    deck.text("#agent-history", "maintenance window").await;
    deck.text("#agent-history", "maintenance over").await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn a_bad_llm_setting_is_refused_with_the_apis_message_and_a_chat_answer_streams() {
    let deck = Deck::start().await;
    let fake = FakeLlm::start(vec![], Scripted::text("one two three four five six"), None).await;
    deck.open("/llm").await;
    deck.browser.wait_for("#llm-form", WAIT).await.unwrap();
    deck.shot("llm").await;
    deck.fill("#llm-form input[name=temperature]", "9").await;
    deck.click("#llm-form button[type=submit]").await;
    let refusal = api_refusal(
        deck.addr,
        reqwest::Method::PUT,
        "/api/llm/config",
        &json!({ "provider": "offline", "model": "offline", "temperature": 9 }),
    )
    .await;
    deck.text("#llm-result .error", refusal["message"].as_str().unwrap()).await;
    deck.text("#llm-result .error", "temperature").await;
    let (_, config) = get(deck.addr, "/api/llm/config").await;
    assert_eq!(config["version"], json!(0), "nothing was recorded: {config}");

    // A good one is saved and shown back.
    deck.browser
        .find("#llm-form select[name=provider]")
        .await
        .unwrap()
        .select_by_value("openai")
        .await
        .unwrap();
    deck.fill("#llm-form input[name=host]", &fake.url()).await;
    deck.fill("#llm-form input[name=model]", "fake-1").await;
    deck.fill("#llm-form input[name=temperature]", "0.5").await;
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-result", "Saved").await;
    wait_until("the configuration to be in force", WAIT, || async {
        get(deck.addr, "/api/llm/config").await.1["settings"]["model"] == json!("fake-1")
    })
    .await;

    // Someone else saves while this form holds an edit: the edit is kept, the page says who
    // changed what under it, saving it is refused by the API, and loading the new version
    // shows theirs.
    deck.text("#llm-form", "Version 1;").await;
    deck.fill("#llm-form input[name=max_tokens]", "777").await;
    let (_, config) = get(deck.addr, "/api/llm/config").await;
    let mut theirs = config["settings"].clone();
    theirs["temperature"] = json!(0.2);
    let (status, view) = crate::llm_config::put(deck.addr, &theirs).await;
    assert_eq!((status, &view["version"]), (200, &json!(2)), "{view}");
    let by = format!("Changed elsewhere by {}", crate::support::ADMIN_ACTOR);
    deck.text("#llm-stale", &by).await;
    let kept = deck.browser.find("#llm-form input[name=max_tokens]").await.unwrap();
    assert_eq!(kept.value().await.unwrap(), "777", "the edit is kept");
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-result .error", "at version 2, not 1").await;
    deck.click("#llm-load").await;
    deck.text("#llm-form", "Version 2;").await;
    let temperature = deck.browser.find("#llm-form input[name=temperature]").await.unwrap();
    assert_eq!(temperature.value().await.unwrap(), "0.2");
    let (_, config) = get(deck.addr, "/api/llm/config").await;
    assert_eq!(
        (&config["version"], &config["settings"]["max_tokens"]),
        (&json!(2), &theirs["max_tokens"]),
        "the stale save changed nothing: {config}"
    );

    // A mission's answer streams on its page while the model writes it.
    fake.set_piece_delay(Duration::from_millis(150));
    let thinking = enqueue(deck.addr, json!({ "name": "count", "agent": "coder" })).await;
    deck.open(&format!("/missions/{thinking}")).await;
    deck.text("#streaming", "streaming").await;
    deck.browser
        .wait_for_text("#answer", |t: &str| t.contains("one") && !t.contains("six"), WAIT)
        .await
        .unwrap();
    deck.text("#status", "completed").await;
    deck.text("#answer", "one two three four five six").await;

    // Chat: the answer arrives piece by piece; the page shows a part of it before the end.
    deck.open("/chat").await;
    deck.browser.wait_for("#chat-form textarea", WAIT).await.unwrap();
    deck.fill("#chat-form textarea[name=message]", "count for me").await;
    deck.click("#chat-form button[type=submit]").await;
    deck.browser
        .wait_for_text(
            ".msg.assistant.streaming",
            |t: &str| t.contains("one") && !t.contains("six"),
            WAIT,
        )
        .await
        .unwrap();
    deck.text(".msg.assistant[data-done=true]", "one two three four five six").await;
    deck.browser.wait_for_text("#conversations", "count for me", WAIT).await.unwrap();
    let url = deck.browser.current_url().await.unwrap();
    assert!(url.contains("/chat/"), "the address names the conversation: {url}");
    deck.shot("chat").await;

    // Opened again from its link: the conversation is there to go on with.
    deck.open(&url[url.find("/chat/").unwrap()..]).await;
    deck.text("#messages", "count for me").await;
    deck.text("#messages .msg.assistant", "one two three four five six").await;
    let conversation: Vec<&str> = url.rsplit('/').take(1).collect();
    let (status, _) = get(deck.addr, &format!("/api/conversations/{}", conversation[0])).await;
    assert_eq!(status, 200);

    // A turn added elsewhere (another tab, a script) appears here, after the ones shown.
    let body = json!({ "agent": "coder", "message": "and again from elsewhere", "conversation_id": conversation[0] });
    let (status, answer) =
        crate::missions_api::post(deck.addr, "/api/agents/chat", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    deck.text("#messages .msg.user:nth-of-type(3)", "and again from elsewhere").await;
    deck.text("#messages .msg.assistant:nth-of-type(4)", "one two three four five six").await;
    let bubbles = deck.browser.find_all("#messages .msg").await.unwrap();
    assert_eq!(bubbles.len(), 4, "each turn once");
    deck.check_clean(&[("/api/llm/config", 422), ("/api/llm/config", 412)]).await;
}

/// The same page, before and after its server restarts, shows every event once; and the
/// pages fit a phone's width.
#[tokio::test]
async fn a_page_resumes_after_its_server_restarts_and_the_pages_fit_a_phone() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut deck = Deck::start_on(listen).await;
    let id = enqueue(deck.addr, json!({ "name": "across a restart", "agent": "idle" })).await;
    deck.open(&format!("/missions/{id}")).await;
    deck.text("#status", "queued").await;
    deck.text(".feed-state", "live").await;

    // The server goes away (as it does for a laptop asleep): the page waits, then resumes.
    deck.shutdown.cancel();
    (&mut deck.task).await.unwrap().unwrap();
    deck.browser
        .wait_for_text(".feed-state", |t: &str| t == "waiting" || t == "connecting", WAIT)
        .await
        .unwrap();
    let (_, shutdown, task) = serve_with_options(options(&deck.env, listen)).await;
    (deck.shutdown, deck.task) = (shutdown, task);
    let (status, _) = crate::missions_api::post(
        deck.addr,
        &format!("/api/missions/{id}/cancel"),
        r#"{"reason": "while the page slept"}"#,
    )
    .await;
    assert_eq!(status, 200);
    deck.text(".feed-state", "live").await;
    deck.text("#timeline li[data-type=MissionCancelled]", "while the page slept").await;
    let (_, history) = get(deck.addr, &format!("/api/missions/{id}/events")).await;
    let logged: Vec<&str> =
        history.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    let shown = deck
        .browser
        .execute("return Array.from(document.querySelectorAll('#timeline li'), (li) => li.dataset.type);", &[])
        .await
        .unwrap();
    assert_eq!(shown, json!(logged), "each event once, in order");

    // A phone's width: nothing wider than the screen, on the busiest pages.
    deck.browser.set_window_size(390, 844).await.unwrap();
    for path in
        ["/", "/missions", "/agents", "/events", "/llm", "/chat", &format!("/missions/{id}")]
    {
        deck.open(path).await;
        deck.browser.wait_for("#main .card", WAIT).await.unwrap();
        let overflow = deck
            .browser
            .execute("return document.documentElement.scrollWidth - window.innerWidth;", &[])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{path} is wider than the phone by {overflow} px");
    }
    // The mission's page comes last in the loop so that this screenshot shows it.
    deck.shot("phone-mission").await;
    // Refused connections while the server was down, and nothing else.
    deck.check_clean_but(&[], &["/ws/events", "ERR_CONNECTION_REFUSED"]).await;
}
