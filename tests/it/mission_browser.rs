//! A mission's page in headless Chromium: a two-step coder run with a tool call reads as a
//! trace on one time axis (queue wait, the attempt, each model call and the tool call, each
//! opening to what was sent and answered), is replayed from a button with its verdict shown,
//! forked at a step and re-enqueued as a copy; the actions stay reachable at 390 px. Failed
//! missions found by a search are retried and re-enqueued at once from the list. A view read
//! before the mission changed, answered late, does not leave a stale status on its page. Its
//! history is stepped through, the state shown after each event as the log held it.

use serde_json::{Value, json};

use crate::deck::{Deck, WAIT};
use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::get;
use crate::workers::{enqueue, finished};

#[tokio::test]
async fn a_coder_run_reads_as_a_trace_and_is_replayed_forked_and_copied_from_its_page() {
    let deck = Deck::start().await;
    let script = vec![
        Scripted::Answer {
            text: String::new(),
            tool_calls: vec![("list_dir".to_owned(), json!({ "path": "." }))],
            usage: (30, 10),
        },
        Scripted::Answer { text: "two steps taken".into(), tool_calls: vec![], usage: (60, 9) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("the fork's own step"), None).await;
    crate::coder_agent::configure(deck.addr, &fake).await;
    let id = enqueue(deck.addr, json!({ "name": "look around", "agent": "coder" })).await;
    assert_eq!(finished(deck.addr, &id).await["status"], "completed");

    deck.open(&format!("/missions/{id}")).await;
    deck.text("#status", "completed").await;
    deck.text("#run-trace h2", "2 model calls").await;
    let kinds = deck
        .browser
        .execute(
            "return [...document.querySelectorAll('#trace .trace-rows > li')].map((li) => li.dataset.kind);",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        kinds,
        json!(["wait", "attempt", "llm", "tool", "llm"]),
        "one row per span, in order"
    );
    deck.text("#trace li[data-kind=attempt]", "completed").await;
    deck.text("#trace li[data-kind=llm]", "30+10 tok").await;
    // Each bar sits on the run's axis: inside the track, none wider than the whole.
    let bars = deck
        .browser
        .execute(
            "return [...document.querySelectorAll('#trace .trace-bar')]\
             .map((b) => [parseFloat(b.style.left), parseFloat(b.style.width) || 0]);",
            &[],
        )
        .await
        .unwrap();
    for bar in bars.as_array().unwrap() {
        let (left, width) = (bar[0].as_f64().unwrap(), bar[1].as_f64().unwrap());
        assert!((0.0..=100.0).contains(&left) && left + width <= 100.5, "{bars}");
    }
    // The tool call opens to its arguments and result; the model call to its request.
    deck.click("#trace li[data-kind=tool] summary").await;
    deck.text("#trace li[data-kind=tool] .json", "path").await;
    deck.text("#trace li[data-kind=tool] .trace-detail", "Result").await;
    deck.click("#trace li[data-kind=llm] summary").await;
    deck.text("#trace li[data-kind=llm] .trace-detail", "Request").await;
    deck.shot("mission-trace").await;

    // Replay: the verdict on the page is the route's.
    deck.click("#replay").await;
    deck.text("#action-result", "identical").await;
    deck.text("#action-result", "2 steps and 1 tool calls").await;

    // A fork at step 1 plays the first step back and runs the second live.
    deck.click("#trace li[data-kind=llm] button.fork").await;
    deck.text("#action-result", "Fork from step 1 enqueued").await;
    let fork_id = link_target(&deck).await;
    let fork = finished(deck.addr, &fork_id).await;
    assert_eq!(fork["forked_from"]["mission_id"], id.as_str(), "{fork}");
    assert_eq!(fork["result"]["answer"], "the fork's own step", "{fork}");

    // Re-enqueue: a copy with the reason in the original's history, linked both ways.
    deck.click("#reenqueue").await;
    deck.give_reason("after the upgrade").await;
    deck.text("#action-result", "Copy enqueued").await;
    let copy_id = link_target(&deck).await;
    let (_, copy) = get(deck.addr, &format!("/api/missions/{copy_id}")).await;
    assert_eq!(copy["copied_from"], id.as_str(), "{copy}");
    deck.text("#main", "Copied into").await;
    deck.text("#timeline li[data-type=MissionCopied]", "after the upgrade").await;

    // At a phone's width the actions are on screen and the page is no wider than it.
    deck.browser.set_window_size(390, 844).await.unwrap();
    deck.open(&format!("/missions/{id}")).await;
    deck.text("#status", "completed").await;
    for button in ["#cancel", "#retry", "#reenqueue", "#replay"] {
        let shown = deck.browser.find(button).await.unwrap().displayed().await.unwrap();
        assert!(shown, "{button} is hidden at 390 px");
    }
    deck.browser.wait_for("#trace li[data-kind=llm]", WAIT).await.unwrap();
    let overflow = deck
        .browser
        .execute("return document.documentElement.scrollWidth - window.innerWidth;", &[])
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than the phone by {overflow} px");
    deck.check_clean(&[]).await;
}

/// The mission the action result links to.
async fn link_target(deck: &Deck) -> String {
    let href: Value = deck
        .browser
        .execute("return document.querySelector('#action-result a').getAttribute('href');", &[])
        .await
        .unwrap();
    href.as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn failed_missions_found_by_search_are_retried_at_once_and_every_match_is_re_enqueued() {
    let deck = Deck::start().await;
    let doomed = json!({ "agent": "echo", "payload": { "fail_permanently": true } });
    let mut failed = Vec::new();
    for n in 0..3 {
        let mut body = doomed.clone();
        body["name"] = json!(format!("nightly import {n}"));
        failed.push(enqueue(deck.addr, body).await);
    }
    let other = enqueue(deck.addr, json!({ "name": "unrelated", "agent": "echo" })).await;
    for id in failed.iter().chain([&other]) {
        finished(deck.addr, id).await;
    }

    // Found by their name and status; the page's tick selects all three.
    deck.open("/missions?q=nightly&status=failed").await;
    deck.browser
        .wait_for_text("#mission-total", |t: &str| t.starts_with("3 missions"), WAIT)
        .await
        .unwrap();
    deck.browser
        .wait_for_text(
            "#mission-list tbody",
            |t: &str| t.matches("nightly import").count() == 3,
            WAIT,
        )
        .await
        .unwrap();
    deck.click("#select-page").await;
    deck.text("#bulk-count", "3 selected").await;
    deck.click("#bulk-bar button[data-action=retry]").await;
    deck.text("dialog.reason h2", "Retry 3 missions?").await;
    deck.give_reason("the feed is back").await;
    deck.text("#bulk-summary", "3 done, 0 refused of 3").await;
    for id in &failed {
        let (_, events) = get(deck.addr, &format!("/api/missions/{id}/events")).await;
        let retried =
            events.as_array().unwrap().iter().find(|e| e["event_type"] == "MissionRetried");
        assert_eq!(retried.expect("retried")["payload"]["reason"], "the feed is back");
    }

    // Every mission the search matches, whatever the page shows: one ticked, then all.
    for id in &failed {
        finished(deck.addr, id).await;
    }
    deck.open("/missions?q=nightly").await;
    deck.browser
        .wait_for_text("#mission-total", |t: &str| t.starts_with("3 missions"), WAIT)
        .await
        .unwrap();
    deck.click("#mission-list tbody tr:first-child input[type=checkbox]").await;
    deck.text("#bulk-count", "1 selected").await;
    deck.click("#select-all-matching").await;
    deck.text("#bulk-count", "3 selected").await;
    deck.click("#bulk-bar button[data-action=reenqueue]").await;
    deck.give_reason("a clean run").await;
    deck.text("#bulk-summary", "3 done, 0 refused of 3").await;
    for id in &failed {
        let (_, view) = get(deck.addr, &format!("/api/missions/{id}")).await;
        assert_eq!(view["copies"].as_array().unwrap().len(), 1, "{view}");
    }
    let (_, view) = get(deck.addr, &format!("/api/missions/{other}")).await;
    assert!(view["copies"].as_array().unwrap().is_empty(), "a mission the search did not match");
    deck.check_clean(&[]).await;
}

/// Holds the answer to the page's first read of a mission's view until the test lets it go,
/// so the mission can change between that read and the history's.
const HOLD_FIRST_VIEW: &str = "
  const original = window.fetch;
  let held = false;
  window.fetch = async (input, init) => {
    const answer = await original(input, init);
    if (!held && /\\/api\\/missions\\/[^/?]+$/.test(String(input))) {
      held = true;
      await new Promise((release) => { window.__releaseView = release; });
    }
    return answer;
  };";

#[tokio::test]
async fn a_view_read_before_the_mission_failed_does_not_leave_a_stale_badge() {
    let deck = Deck::start().await;
    let script = json!({ "source": HOLD_FIRST_VIEW });
    deck.browser.cdp("Page.addScriptToEvaluateOnNewDocument", script).await.unwrap();
    let body = json!({ "name": "slow then fails", "agent": "echo",
                       "payload": { "delay_ms": 1500, "fail_permanently": true } });
    let id = enqueue(deck.addr, body).await;
    crate::support::wait_until("the mission to run", WAIT, || async {
        get(deck.addr, &format!("/api/missions/{id}")).await.1["status"] == "running"
    })
    .await;

    // The page reads the view while the mission runs; the answer reaches it only after the
    // mission failed, so the history read next already holds the failure.
    deck.open(&format!("/missions/{id}")).await;
    deck.browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const wait = () => window.__releaseView ? done(true) : setTimeout(wait, 20);\
             wait();",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(finished(deck.addr, &id).await["status"], "failed");
    deck.browser.execute("window.__releaseView(); return null;", &[]).await.unwrap();
    deck.text("#timeline li[data-type=MissionAttemptFailed]", "asked to fail").await;
    deck.text("#status", "failed").await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn a_missions_history_is_stepped_through_showing_its_state_after_each_event() {
    let deck = Deck::start().await;
    let id = enqueue(deck.addr, json!({ "name": "stepped", "agent": "echo" })).await;
    assert_eq!(finished(deck.addr, &id).await["status"], "completed");
    let (_, history) = get(deck.addr, &format!("/api/missions/{id}/events")).await;
    let count = history.as_array().unwrap().len();

    deck.open(&format!("/missions/{id}")).await;
    deck.text("#status", "completed").await;
    deck.click("#stepper summary").await;
    // Opened at the last event: the state as it is now.
    deck.text("#step-label", &format!("event {count} of {count}")).await;
    deck.text("#as-of", "completed").await;
    // Back to the first: queued, as the log held it then, and that event marked.
    for _ in 1..count {
        deck.click("#step-back").await;
    }
    deck.text("#step-label", &format!("event 1 of {count}: MissionEnqueued")).await;
    deck.text("#as-of", "queued").await;
    let marked = deck
        .browser
        .execute("return [...document.querySelectorAll('#timeline > li')].findIndex((li) => li.classList.contains('current'));", &[])
        .await
        .unwrap();
    assert_eq!(marked, json!(0));
    let back = deck.browser.find("#step-back").await.unwrap();
    assert!(back.attr("disabled").await.unwrap().is_some(), "no step before the first");
    deck.click("#step-next").await;
    deck.text("#as-of", "running").await;
    deck.check_clean(&[]).await;
}
