//! `brain bench console`: the Control Deck in headless Chromium (`chromium` and
//! `chromedriver` on the machine) against a serve of its own.
//!
//! 1. **First load of the overview**, `--loads` times in fresh tabs with an empty cache:
//!    bytes transferred (encoded, as on the wire: assets and API answers), requests, the
//!    time until every card is drawn, and the time until the first redraw caused by the live
//!    feed (the bench enqueues missions while the page loads, so there is something to see).
//! 2. **The event-feed page under load**: `--rate` events a second for `--seconds` (enqueues
//!    of missions for a kind no worker serves, so each is exactly one event), the page
//!    following the whole log. It reports what the page received and drew, the frames the
//!    page rendered and those it missed (gaps between animation frames past 1.5 frames), long
//!    tasks (over 50 ms), main-thread time per second (all tasks, and script, style and
//!    layout), and the tab's JavaScript heap at the end. Beside it, the baseline: the same
//!    page paused while the machine carries the same load, since on a small machine the
//!    browser shares its cores with the serve and the event store.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::own_serve::OwnServe;
use super::webdriver::{Browser, BrowserOptions};

#[derive(Debug, clap::Args)]
pub struct ConsoleBench {
    #[command(flatten)]
    services: super::BenchServices,
    /// First loads of the overview to time.
    #[arg(long, default_value_t = 5)]
    loads: u32,
    /// Events per second sent at the event-feed page.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long the event-feed page is under load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// Installed in the page before the load: counts animation frames, the gaps between them
/// and long tasks, so the page's smoothness is measured where it happens.
const PROBE: &str = "window.__probe = { frames: 0, missed: 0, worstGapMs: 0, longTasks: 0, longTaskMs: 0 };\
    let last = performance.now();\
    const tick = (now) => { const gap = now - last; last = now; const p = window.__probe; p.frames++;\
      if (gap > 25) p.missed += Math.round(gap / 16.7) - 1; if (gap > p.worstGapMs) p.worstGapMs = gap;\
      requestAnimationFrame(tick); };\
    requestAnimationFrame(tick);\
    new PerformanceObserver((list) => { for (const e of list.getEntries()) { window.__probe.longTasks++; window.__probe.longTaskMs += e.duration; } })\
      .observe({ entryTypes: ['longtask'] });\
    return null;";

impl ConsoleBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let vars = [("BRAIN_WORKERS", "1".to_owned()), ("BRAIN_AGENT_KINDS", "idle".to_owned())];
        let serve =
            OwnServe::start(&self.services, "brain_bench_console", "bench_console", &vars).await?;
        let outcome = self.measure(&serve).await;
        serve.drop_all().await?;
        outcome
    }

    async fn measure(&self, serve: &OwnServe) -> anyhow::Result<()> {
        let client = super::http_client(Some(&serve.key)).build()?;
        let browser = Browser::start_with(BrowserOptions::default())
            .await
            .context("start chromium (install chromium and chromium-driver)")?;
        sign_in(&browser, &serve.url, &serve.key).await?;
        println!("first load of the overview ({} loads, empty cache):", self.loads);
        let mut loads = Vec::new();
        for _ in 0..self.loads {
            loads.push(first_load(&browser, &client, &serve.url).await?);
        }
        let median = |pick: fn(&Load) -> f64| {
            let mut values: Vec<f64> = loads.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!(
            "  transferred {:.1} KiB in {} requests (assets {:.1} KiB); drawn at {:.0} ms, \
             first live update at {:.0} ms (medians)",
            median(|l| l.bytes as f64) / 1024.0,
            loads[0].requests,
            median(|l| l.asset_bytes as f64) / 1024.0,
            median(|l| l.drawn_ms),
            median(|l| l.live_ms),
        );
        self.feed_under_load(&browser, &client, &serve.url).await?;
        browser.quit().await?;
        Ok(())
    }

    async fn feed_under_load(
        &self,
        browser: &Browser,
        client: &reqwest::Client,
        url: &str,
    ) -> anyhow::Result<()> {
        // The baseline: the same page, paused, while the machine carries the same load (the
        // serve, the event store and the sender share its cores with the browser). What the
        // live page costs beyond it is what drawing the feed costs.
        let baseline_seconds = self.seconds.clamp(1, 15);
        browser.goto(&format!("{url}/events")).await?;
        browser.wait_for_text(".feed-state", "live", Duration::from_secs(20)).await?;
        browser.find("#pause").await?.click().await?;
        browser.wait_for_text(".feed-state", "paused", Duration::from_secs(5)).await?;
        let paused = self.window(browser, client, url, baseline_seconds).await?;

        browser.goto(&format!("{url}/events")).await?;
        browser.wait_for_text(".feed-state", "live", Duration::from_secs(20)).await?;
        let live = self.window(browser, client, url, self.seconds).await?;
        let stats = browser.execute("return window.__feedStats;", &[]).await?;
        println!(
            "event feed at {} events/s for {} s: sent {} ({:.0}/s), received {}, drawn {}, \
             not drawn (kept to scroll to) {}",
            self.rate,
            self.seconds,
            live.sent,
            live.sent as f64 / live.sending,
            stats["received"],
            stats["drawn"],
            stats["skipped"],
        );
        live.print("live page");
        paused.print(&format!("paused page, same load, {baseline_seconds} s (baseline)"));
        println!(
            "  JS heap at the end {:.1} MiB, DOM nodes {}",
            live.metrics.get("JSHeapUsedSize").unwrap_or(&0.0) / (1024.0 * 1024.0),
            live.metrics.get("Nodes").unwrap_or(&0.0),
        );
        Ok(())
    }

    /// Sends `rate` events a second for `seconds` at the page now open and measures its
    /// frames and main-thread time meanwhile. Waits (up to 10 s) for a live feed page to
    /// have received everything sent, so the drawing of the last of it is counted.
    async fn window(
        &self,
        browser: &Browser,
        client: &reqwest::Client,
        url: &str,
        seconds: u64,
    ) -> anyhow::Result<Window> {
        browser.execute(PROBE, &[]).await?;
        browser.cdp("Performance.enable", json!({})).await?;
        let before = browser.metrics().await?;
        let started = Instant::now();
        let sent = send_events(client.clone(), url.to_owned(), self.rate, seconds).await?;
        let sending = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = browser.execute("return window.__feedStats;", &[]).await?;
            let paused = browser
                .execute("return !!document.querySelector('.feed-state.paused');", &[])
                .await?;
            if paused == Value::Bool(true)
                || stats["received"].as_u64().unwrap_or(0) >= sent
                || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = browser.metrics().await?;
        let probe = browser.execute("return window.__probe;", &[]).await?;
        let seconds = started.elapsed().as_secs_f64();
        let per_second = |name: &str| {
            1000.0 * (after.get(name).unwrap_or(&0.0) - before.get(name).unwrap_or(&0.0)) / seconds
        };
        let number = |name: &str| probe[name].as_f64().unwrap_or(0.0);
        Ok(Window {
            sent,
            sending,
            seconds,
            frames: number("frames"),
            missed: number("missed"),
            worst_gap_ms: number("worstGapMs"),
            long_tasks: number("longTasks"),
            long_task_ms: number("longTaskMs"),
            task_ms: per_second("TaskDuration"),
            script_ms: per_second("ScriptDuration"),
            style_ms: per_second("RecalcStyleDuration"),
            layout_ms: per_second("LayoutDuration"),
            metrics: after,
        })
    }
}

/// What one measured window saw: frames from the page's own probe, main-thread time (ms a
/// second) from the DevTools Performance domain.
struct Window {
    sent: u64,
    /// How long sending took; `seconds` also covers the wait for the page to receive it all,
    /// which the main-thread figures are divided by.
    sending: f64,
    seconds: f64,
    frames: f64,
    missed: f64,
    worst_gap_ms: f64,
    long_tasks: f64,
    long_task_ms: f64,
    task_ms: f64,
    script_ms: f64,
    style_ms: f64,
    layout_ms: f64,
    metrics: std::collections::BTreeMap<String, f64>,
}

impl Window {
    fn print(&self, label: &str) {
        println!(
            "  {label}: frames {:.1}/s, missed {:.1} %, worst gap {:.0} ms, long tasks {:.0} \
             ({:.0} ms); main thread {:.0} ms/s (script {:.0}, style {:.0}, layout {:.0})",
            self.frames / self.seconds,
            100.0 * self.missed / (self.frames + self.missed).max(1.0),
            self.worst_gap_ms,
            self.long_tasks,
            self.long_task_ms,
            self.task_ms,
            self.script_ms,
            self.style_ms,
            self.layout_ms,
        );
    }
}

struct Load {
    bytes: u64,
    asset_bytes: u64,
    requests: usize,
    drawn_ms: f64,
    live_ms: f64,
}

/// One load of `/` in a fresh tab with the cache off; missions are enqueued while it loads so
/// that the live feed has something to report.
/// Signs the browser in through the console's form; the session cookie then rides along
/// with every load.
async fn sign_in(browser: &Browser, url: &str, key: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{url}/")).await?;
    let input = browser.wait_for("#sign-in input[name=key]", Duration::from_secs(20)).await?;
    input.send_keys(key).await?;
    browser.find("#sign-in button[type=submit]").await?.click().await?;
    browser.wait_for_text("#who", "admin", Duration::from_secs(20)).await?;
    Ok(())
}

async fn first_load(
    browser: &Browser,
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<Load> {
    browser.goto("about:blank").await?;
    browser.cdp("Network.enable", json!({})).await?;
    browser.cdp("Network.setCacheDisabled", json!({ "cacheDisabled": true })).await?;
    let _ = browser.performance_log().await?; // start from an empty log
    let ticker = {
        let (client, url) = (client.clone(), url.to_owned());
        tokio::spawn(async move {
            loop {
                let body = json!({ "name": "load", "agent": "idle" });
                let _ = client.post(format!("{url}/api/missions/enqueue")).json(&body).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    browser.goto(&format!("{url}/")).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let live_ms = loop {
        let at = browser.execute("return document.body.dataset.firstLiveMs || null;", &[]).await?;
        if let Some(at) = at.as_str() {
            break at.parse::<f64>()?;
        }
        if Instant::now() > deadline {
            ticker.abort();
            bail!("the overview drew no live update in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ticker.abort();
    let drawn = browser.execute("return document.body.dataset.drawnMs || null;", &[]).await?;
    let drawn_ms = drawn.as_str().context("the overview was never drawn")?.parse::<f64>()?;
    let events = browser.performance_log().await?;
    let mut urls = std::collections::HashMap::new();
    let (mut bytes, mut asset_bytes, mut requests) = (0u64, 0u64, 0usize);
    for event in &events {
        let id = event.params["requestId"].as_str().unwrap_or_default().to_owned();
        match event.method.as_str() {
            "Network.requestWillBeSent" => {
                urls.insert(
                    id,
                    event.params["request"]["url"].as_str().unwrap_or_default().to_owned(),
                );
            }
            "Network.loadingFinished" => {
                let size = event.params["encodedDataLength"].as_f64().unwrap_or(0.0) as u64;
                bytes += size;
                requests += 1;
                let url = urls.get(&id).map(String::as_str).unwrap_or_default();
                if url.ends_with('/') || url.contains("/assets/") {
                    asset_bytes += size;
                }
            }
            _ => {}
        }
    }
    Ok(Load { bytes, asset_bytes, requests, drawn_ms, live_ms })
}

/// Enqueues `rate` missions a second for `seconds` in batches of a tenth of a second: one
/// `MissionEnqueued` event each, since no worker serves their kind. Returns how many.
async fn send_events(
    client: reqwest::Client,
    url: String,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<u64> {
    let per_tick = (rate / 10).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let ticks = seconds * 10;
    for _ in 0..ticks {
        tick.tick().await;
        let missions: Vec<Value> = (0..per_tick)
            .map(|n| json!({ "name": format!("feed {n}"), "agent": "idle" }))
            .collect();
        let response = client
            .post(format!("{url}/api/missions/enqueue/batch"))
            .json(&json!({ "missions": missions }))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("batch enqueue answered {}", response.status());
        }
        sent += per_tick as u64;
    }
    Ok(sent)
}
