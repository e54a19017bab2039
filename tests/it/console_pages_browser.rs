//! The Control Deck's pages in headless Chromium (the harness is `crate::deck`):
//! - times say their zone (local by default, UTC or relative by the header's choice, kept in
//!   the browser), durations read in units, and the theme is chosen and kept;
//! - the event feed shows the distinguishing end of ids, links its rows, shows a refused
//!   filter's own message and counts from zero with each filter;
//! - a kind whose missions wait with no active agent is flagged on the queue page;
//! - at a phone's 390 px, the agents' buttons and the events' type are in view;
//! - an agent's page shows its state, load, missions and control history;
//! - the LLM page edits routes, prices, limits and budgets as forms.

use serde_json::{Value, json};

use crate::deck::{Deck, WAIT, api_refusal};
use crate::serve::get;
use crate::support::wait_until;
use crate::workers::enqueue;

/// Whether the text of the first element `css` matches the JavaScript pattern `pattern`.
async fn matches(deck: &Deck, css: &str, pattern: &str) -> bool {
    let script = "const el = document.querySelector(arguments[0]);\
                  return !!el && new RegExp(arguments[1]).test(el.textContent);";
    deck.browser.execute(script, &[json!(css), json!(pattern)]).await.unwrap() == json!(true)
}

async fn wait_matching(deck: &Deck, css: &str, pattern: &str) {
    wait_until(&format!("{css} to match {pattern}"), WAIT, || matches(deck, css, pattern)).await;
}

async fn choose(deck: &Deck, css: &str, value: &str) {
    deck.browser.find(css).await.unwrap().select_by_value(value).await.unwrap();
}

/// The first active agent of `kind`, once the workers have registered it.
async fn agent_of(deck: &Deck, kind: &str) -> String {
    let url = format!("/api/agents?kind={kind}&state=active");
    wait_until(&format!("an active {kind} agent"), WAIT, || async {
        get(deck.addr, &url).await.1["agents"].get(0).is_some()
    })
    .await;
    get(deck.addr, &url).await.1["agents"][0]["agent_id"].as_str().unwrap().to_owned()
}

const BACKGROUND: &str = "return getComputedStyle(document.body).backgroundColor;";

#[tokio::test]
async fn times_read_with_their_zone_as_chosen_and_the_theme_is_kept() {
    let deck = Deck::start().await;
    let agent = agent_of(&deck, "echo").await;
    let page = format!("/agents/{agent}");
    deck.open(&page).await;
    // Local by default: an ISO date and time with the offset.
    wait_matching(&deck, "#agent-history", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d").await;
    choose(&deck, "#prefs select[name=times]", "utc").await;
    wait_matching(&deck, "#agent-history", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC").await;
    // Kept in the browser: a page opened afresh reads in UTC too.
    deck.open(&page).await;
    wait_matching(&deck, "#agent-history", r"\d\d:\d\d:\d\d UTC").await;
    let times = deck.browser.find("#prefs select[name=times]").await.unwrap();
    assert_eq!(times.value().await.unwrap(), "utc");
    choose(&deck, "#prefs select[name=times]", "relative").await;
    wait_matching(&deck, "#agent-history", r" ago").await;
    assert!(!matches(&deck, "#agent-history", r"\d\d:\d\d:\d\d").await, "no clock left");

    // Durations in units, through the one formatter every page uses.
    let durations = "const done = arguments[arguments.length - 1];\
        import('/assets/format.js').then((f) => done([850, 12400, 252000, 11100000, 187200000]\
          .map(f.fmtDuration)));";
    let durations = deck.browser.execute_async(durations, &[]).await.unwrap();
    assert_eq!(
        durations,
        json!(["850 ms", "12.4 s", "4 min 12 s", "3 h 05 min", "2 d 4 h"]),
        "{durations}"
    );

    // The theme: the system's (light here) until chosen, then kept.
    let light = deck.browser.execute(BACKGROUND, &[]).await.unwrap();
    choose(&deck, "#prefs select[name=theme]", "dark").await;
    assert_eq!(deck.browser.execute(BACKGROUND, &[]).await.unwrap(), json!("rgb(13, 17, 23)"));
    deck.open("/").await;
    deck.browser.wait_for("#prefs select[name=theme]", WAIT).await.unwrap();
    assert_eq!(deck.browser.execute(BACKGROUND, &[]).await.unwrap(), json!("rgb(13, 17, 23)"));
    choose(&deck, "#prefs select[name=theme]", "light").await;
    assert_eq!(deck.browser.execute(BACKGROUND, &[]).await.unwrap(), light);
    assert_eq!(light, json!("rgb(245, 247, 250)"));
    // Chosen in another tab (which the browser tells this one by a storage event): followed.
    let elsewhere = "localStorage.setItem('brain.theme', 'dark');\
        window.dispatchEvent(new StorageEvent('storage', { key: 'brain.theme' })); return null;";
    deck.browser.execute(elsewhere, &[]).await.unwrap();
    assert_eq!(deck.browser.execute(BACKGROUND, &[]).await.unwrap(), json!("rgb(13, 17, 23)"));
    let theme = deck.browser.find("#prefs select[name=theme]").await.unwrap();
    assert_eq!(theme.value().await.unwrap(), "dark");
    deck.check_clean(&[]).await;
}

/// The refusal `GET /ws/events` answers for `query` over plain HTTP.
async fn feed_refusal(deck: &Deck, query: &str) -> Value {
    let response = crate::support::client()
        .get(format!("http://{}/ws/events?{query}", deck.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    response.json::<Value>().await.unwrap()["error"].clone()
}

#[tokio::test]
async fn the_event_feed_links_whole_ids_shows_a_refused_filter_and_counts_from_zero() {
    let deck = Deck::start().await;
    deck.open("/events").await;
    deck.text(".feed-state", "live").await;
    let id = enqueue(deck.addr, json!({ "name": "linked", "agent": "idle" })).await;
    deck.text("#feed-rows", "MissionEnqueued").await;
    deck.text("#feed-stats", "1 received").await;
    // The end of the id, which tells it apart (not its start, which every id of the minute
    // shares), as a link to the mission.
    let row = "#feed-rows .feed-row .c-stream a";
    deck.text(row, &id[id.len() - 12..]).await;
    let link = deck.browser.find(row).await.unwrap();
    assert!(!link.text().await.unwrap().contains(&id[..8]), "the start of the id is shown");
    assert_eq!(link.attr("href").await.unwrap().unwrap(), format!("/missions/{id}"));
    deck.click(row).await;
    deck.text("#status", "queued").await;
    assert!(deck.browser.current_url().await.unwrap().ends_with(&format!("/missions/{id}")));

    // A filter the server refuses: its message, not a reconnect forever; the counters start
    // again from zero.
    deck.open("/events").await;
    deck.text(".feed-state", "live").await;
    enqueue(deck.addr, json!({ "name": "counted", "agent": "idle" })).await;
    deck.text("#feed-stats", "1 received").await;
    deck.fill("input[name=stream_type]", "Mission!").await;
    deck.click("form.row button[type=submit]").await;
    let refusal = feed_refusal(&deck, "stream_type=Mission!").await;
    deck.text("#main .error", refusal["message"].as_str().unwrap()).await;
    deck.text("#main .error", "stream_type").await;
    deck.text(".feed-state", "refused").await;
    deck.text("#feed-stats", "0 received").await;
    // A good filter again: live, counting from zero.
    deck.fill("input[name=stream_type]", "mission").await;
    deck.click("form.row button[type=submit]").await;
    deck.text(".feed-state", "live").await;
    assert!(deck.browser.find_all("#main .error").await.unwrap().is_empty());
    enqueue(deck.addr, json!({ "name": "after", "agent": "idle" })).await;
    deck.text("#feed-rows", "after").await;
    deck.text("#feed-stats", "1 received").await;
    // The refused upgrade and its reading over HTTP are the refusals provoked.
    deck.check_clean_but(&[], &["stream_type=Mission%21"]).await;
}

#[tokio::test]
async fn a_kind_waiting_with_no_active_agent_is_flagged_on_the_queue_page() {
    let deck = Deck::start().await;
    enqueue(deck.addr, json!({ "name": "unserved", "agent": "idle" })).await;
    deck.open("/queue").await;
    deck.text("#queue", "unserved").await;
    deck.text("#unserved", "no active agent serves `idle`").await;
    let text = deck.browser.find("#unserved").await.unwrap().text().await.unwrap();
    assert!(!text.contains("echo"), "{text}");
    // A kind that is served says nothing.
    deck.open("/queue?agent=echo").await;
    deck.browser.wait_for("#queue p", WAIT).await.unwrap();
    assert!(deck.browser.find_all("#unserved").await.unwrap().is_empty());
    deck.open("/queue?agent=idle").await;
    deck.text("#unserved", "no active agent serves `idle`").await;
    deck.check_clean(&[]).await;
}

/// Whether every element `css` matches, with the window scrolled (up and down only: a table
/// scrolled sideways is a table that hid it) to put it in the middle, is within the window's
/// width and on top at its centre (not under a neighbour, the header or its table's edge).
const IN_VIEW: &str = "const all = [...document.querySelectorAll(arguments[0])];\
    return all.length > 0 && all.every((el) => {\
      const at = el.getBoundingClientRect();\
      window.scrollTo(0, window.scrollY + at.top - window.innerHeight / 2);\
      const r = el.getBoundingClientRect();\
      const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);\
      return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth\
        && !!top && (top === el || el.contains(top));\
    });";

async fn in_view(deck: &Deck, css: &str) {
    wait_until(&format!("{css} in view"), WAIT, || async {
        deck.browser.execute(IN_VIEW, &[json!(css)]).await.unwrap() == json!(true)
    })
    .await;
}

#[tokio::test]
async fn at_a_phones_width_the_agents_buttons_and_the_events_type_are_in_view() {
    let deck = Deck::start().await;
    let agent = agent_of(&deck, "coder").await;
    deck.browser.set_window_size(390, 844).await.unwrap();
    deck.open("/agents").await;
    deck.browser.wait_for("#agents button[data-action=stop]", WAIT).await.unwrap();
    // Each button is in the window, not past its right edge; the columns that matter less
    // (status, load, heartbeat, restarts) make way.
    in_view(&deck, "#agents button[data-action]").await;
    let secondary = "const th = [...document.querySelectorAll('#agents th.hide-narrow')];\
        return [th.length, th.every((e) => getComputedStyle(e).display === 'none')];";
    let secondary = deck.browser.execute(secondary, &[]).await.unwrap();
    assert_eq!(secondary, json!([4, true]), "hidden columns at 390 px");

    deck.open("/events").await;
    deck.text(".feed-state", "live").await;
    enqueue(deck.addr, json!({ "name": "narrow", "agent": "idle" })).await;
    deck.text("#feed-rows .c-event", "MissionEnqueued").await;
    in_view(&deck, "#feed-rows .feed-row .c-event").await;
    in_view(&deck, "#feed-rows .feed-row .c-stream a").await;

    for path in ["/", "/queue", "/agents", "/events", "/llm", &format!("/agents/{agent}")] {
        deck.open(path).await;
        deck.browser.wait_for("#main .card", WAIT).await.unwrap();
        let overflow = deck
            .browser
            .execute("return document.documentElement.scrollWidth - window.innerWidth;", &[])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{path} is wider than the phone by {overflow}");
    }
    deck.shot("phone-llm").await;
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn an_agents_page_shows_its_load_what_it_runs_and_who_controlled_it_and_why() {
    let deck = Deck::start().await;
    let agent = agent_of(&deck, "echo").await;
    let busy = enqueue(
        deck.addr,
        json!({ "name": "long", "agent": "echo", "payload": { "delay_ms": 10000 } }),
    )
    .await;
    wait_until("the mission to run", WAIT, || async {
        get(deck.addr, &format!("/api/missions/{busy}")).await.1["status"] == json!("running")
    })
    .await;
    deck.open(&format!("/agents/{agent}")).await;
    deck.text("#agent-state", "active").await;
    deck.text("#agent-about", "echo").await;
    // Its worker's slots in use of their capacity, and the mission it runs, linked.
    deck.text("#agent-load", "1 / 2").await;
    deck.text("#agent-load", "slots in use").await;
    deck.browser
        .wait_for(&format!("#agent-running a[href='/missions/{busy}']"), WAIT)
        .await
        .unwrap();
    deck.text("#agent-controls", "Never controlled.").await;

    // Stopped and started from its page: each control with who and why.
    deck.click("#main h1 + .row button[data-action=stop]").await;
    deck.give_reason("draining the host").await;
    deck.text("#agent-state", "stopped").await;
    deck.text("#agent-controls", "stop requested").await;
    deck.text("#agent-controls", "draining the host").await;
    // By the admin key's name (the key id is the cell's title).
    deck.text("#agent-controls tbody tr", "admin").await;
    let by = deck.browser.find("#agent-controls td span[title]").await.unwrap();
    assert_eq!(by.attr("title").await.unwrap().unwrap(), crate::support::ADMIN_ACTOR);
    deck.click("#main h1 + .row button[data-action=start]").await;
    deck.give_reason("host drained").await;
    deck.text("#agent-state", "active").await;
    deck.text("#agent-controls", "host drained").await;
    deck.shot("agent").await;

    // Once it is done, the agent runs nothing.
    deck.browser.wait_for_text("#agent-running", "Nothing.", WAIT).await.unwrap();
    deck.check_clean(&[]).await;
}

#[tokio::test]
async fn the_llm_page_edits_routes_prices_limits_and_budgets_with_errors_beside_their_fields() {
    let deck = Deck::start().await;
    deck.open("/llm").await;
    deck.browser.wait_for("#llm-form", WAIT).await.unwrap();
    // A price added as a row; one out of bounds is refused beside its input, in the API's
    // words.
    deck.click("#llm-prices button.add").await;
    let price = "#llm-prices tbody tr:last-child";
    deck.fill(&format!("{price} input[name='prices.model']"), "gpt-x").await;
    deck.fill(&format!("{price} input[name='prices.input']"), "1.5").await;
    deck.fill(&format!("{price} input[name='prices.output']"), "99999").await;
    deck.click("#llm-form button[type=submit]").await;
    let prices = json!({ "gpt-x": { "input_usd_per_mtok": 1.5, "output_usd_per_mtok": 99999 } });
    let refusal = api_refusal(
        deck.addr,
        reqwest::Method::PUT,
        "/api/llm/config",
        &json!({ "provider": "offline", "model": "offline", "prices": prices }),
    )
    .await;
    assert_eq!(refusal["field"], json!("prices.gpt-x.output_usd_per_mtok"), "{refusal}");
    deck.text("#llm-prices .field-error", refusal["message"].as_str().unwrap()).await;
    let output = deck.browser.find(&format!("{price} input[name='prices.output']")).await.unwrap();
    assert!(output.attr("class").await.unwrap().unwrap_or_default().contains("invalid"));
    assert_eq!(
        deck.focused().await["name"],
        json!("prices.output"),
        "the field at fault has the focus"
    );

    // Put right, with a route, a limit and budgets: saved as the forms say.
    deck.fill(&format!("{price} input[name='prices.output']"), "3").await;
    deck.click("#llm-routes button.add").await;
    let route = "#llm-routes tbody tr:last-child";
    deck.fill(&format!("{route} input[name='routes.route']"), "fast").await;
    choose(&deck, &format!("{route} select[name='routes.provider']"), "ollama").await;
    deck.fill(&format!("{route} input[name='routes.model']"), "m1").await;
    deck.click("#llm-limits button.add").await;
    let limit = "#llm-limits tbody tr:last-child";
    deck.fill(&format!("{limit} input[name='limits.target']"), "ollama/m1").await;
    deck.fill(&format!("{limit} input[name='limits.rpm']"), "60").await;
    deck.fill("#llm-budget-all input[name='budget_all.tokens_max']", "100000").await;
    deck.click("#llm-budgets button.add").await;
    let budget = "#llm-budgets tbody tr:last-child";
    deck.fill(&format!("{budget} input[name='budgets.kind']"), "coder").await;
    deck.fill(&format!("{budget} input[name='budgets.cost_usd_max']"), "2.5").await;
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-result", "Saved").await;
    let (_, config) = get(deck.addr, "/api/llm/config").await;
    let settings = &config["settings"];
    assert_eq!(config["version"], json!(1), "{config}");
    assert_eq!(
        settings["routes"],
        json!({ "fast": [{ "provider": "ollama", "host": "", "model": "m1" }] })
    );
    assert_eq!(
        settings["prices"],
        json!({ "gpt-x": { "input_usd_per_mtok": 1.5, "output_usd_per_mtok": 3.0 } })
    );
    assert_eq!(settings["limits"], json!({ "ollama/m1": { "rpm": 60 } }));
    assert_eq!(
        settings["daily_budgets"],
        json!({ "all": { "tokens_max": 100000 }, "kinds": { "coder": { "cost_usd_max": 2.5 } } })
    );

    // Drawn again from what is in force; a limit refused is marked in its row.
    deck.text("#llm-form", "Version 1;").await;
    deck.fill("#llm-limits tbody tr:first-child input[name='limits.rpm']", "0").await;
    deck.click("#llm-form button[type=submit]").await;
    deck.text("#llm-limits .field-error", "1 to").await;
    deck.text("#llm-result .error", "limits.ollama/m1.rpm").await;

    // The raw JSON stays available, holding the same settings, and saves as written.
    deck.click("#llm-raw summary").await;
    let raw = deck.browser.find("#llm-raw textarea").await.unwrap();
    let text: Value = serde_json::from_str(&raw.value().await.unwrap()).unwrap();
    // (JavaScript writes 3.0 as 3: the same number.)
    for field in ["routes", "limits", "daily_budgets", "provider", "model"] {
        assert_eq!(text[field], settings[field], "the JSON holds the {field} in force");
    }
    let output = &text["prices"]["gpt-x"]["output_usd_per_mtok"];
    assert_eq!(output.as_f64(), Some(3.0), "{text}");
    let mut edited = settings.clone();
    edited["prices"]["gpt-x"]["input_usd_per_mtok"] = json!(2.0);
    deck.fill("#llm-raw textarea", &edited.to_string()).await;
    deck.click("#llm-raw-save").await;
    deck.text("#llm-result", "Saved").await;
    wait_until("the JSON's change to be in force", WAIT, || async {
        get(deck.addr, "/api/llm/config").await.1["settings"]["prices"]["gpt-x"]["input_usd_per_mtok"]
            == json!(2.0)
    })
    .await;
    deck.shot("llm-forms").await;
    deck.check_clean(&[("/api/llm/config", 422)]).await;
}
