//! A small WebDriver client that drives headless Chromium through `chromedriver`, for the
//! integration tests of the web console and for benches that measure it in a real browser.
//!
//! Each [`Browser`] runs its own `chromedriver` on a free local port with its own Chromium
//! profile in a temporary folder, so any number of them can run side by side (tests run in
//! parallel). [`Browser::quit`] ends the session and removes the folder; dropping a
//! `Browser` without quitting kills chromedriver and Chromium and removes it too.
//!
//! Besides the usual navigation, element and script commands it reads what a test needs to
//! judge a page: the browser's console ([`Browser::browser_log`]), its network events
//! ([`Browser::performance_log`], [`Browser::failed_requests`]) and DevTools commands
//! ([`Browser::cdp`], [`Browser::metrics`]).
//!
//! Written against the W3C WebDriver protocol (JSON over HTTP) with the project's `reqwest`
//! rather than taken from a crate: fantoccini, the maintained one, brings a second `http`,
//! `cookie`, `thiserror` and ICU stack into the tree.
//!
//! Debian: `apt-get install chromium chromium-driver` (scripts/services.sh does).
//!
//! - [`element`]: elements of the page and the text a wait matches;
//! - [`logs`]: the console and network logs, and the failed requests read from them;
//! - [`process`]: starting chromedriver, and making sure nothing of a browser outlives it.

mod element;
mod logs;
mod process;

pub use element::{Element, TextMatch};
pub use logs::{FailedRequest, Failure, LogEntry, PerfEvent, failed_requests};
use process::{driver_log_tail, free_port, kill_all, remove_dir, spawn_driver, wait_ready};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// The key under which WebDriver passes an element reference (W3C).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often the `wait_for*` calls look again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Chromium's limits for page loads and scripts, set on the session so that a command
/// answers (with an error) before the HTTP timeout below gives up on it.
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Every request to chromedriver gives up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(45);

/// Special keys for [`Element::send_keys`] (WebDriver's code points).
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const TAB: &str = "\u{E004}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const BACKSPACE: &str = "\u{E003}";
}

/// How to start a [`Browser`]; `BrowserOptions::default()` is a 1280x800 window with the
/// `chromedriver` found on `PATH` and the Chromium it finds itself (`/usr/bin/chromium` on
/// Debian).
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The window's outer size, in CSS pixels.
    pub window: (u32, u32),
    pub chromedriver: PathBuf,
    /// The Chromium binary; `None` lets chromedriver look for it.
    pub chromium: Option<PathBuf>,
    /// More Chromium flags, after the ones `start` always passes.
    pub extra_args: Vec<String>,
    /// How long chromedriver may take to answer and the session to open.
    pub start_timeout: Duration,
}

impl Default for BrowserOptions {
    fn default() -> BrowserOptions {
        BrowserOptions {
            window: (1280, 800),
            chromedriver: PathBuf::from("chromedriver"),
            chromium: None,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// An error chromedriver answered with (`{"value": {"error", "message"}}`).
#[derive(Debug, Clone)]
pub struct WebDriverError {
    pub status: u16,
    /// The W3C error code, e.g. `no such element`, `stale element reference`.
    pub error: String,
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // chromedriver's messages carry a multi-line "Session info" tail; the first line says it.
        let message = self.message.lines().next().unwrap_or_default();
        write!(f, "webdriver {} ({}): {message}", self.error, self.status)
    }
}

impl std::error::Error for WebDriverError {}

/// One endpoint of chromedriver (its root or a session under it); cheap to clone, so that
/// elements carry their own.
#[derive(Clone)]
struct Endpoint {
    http: reqwest::Client,
    base: String,
}

impl Endpoint {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            // WebDriver wants a JSON body on every POST, even one with no parameters.
            request = request.json(&json!({}));
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("{method} {url}: body"))?;
        let value = match body {
            Value::Object(mut map) => map.remove("value").unwrap_or(Value::Null),
            other => other,
        };
        if !status.is_success() {
            let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
            let error = WebDriverError {
                status: status.as_u16(),
                error: field("error"),
                message: field("message"),
            };
            return Err(anyhow::Error::new(error).context(format!("{method} {path}")));
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    session: Endpoint,
    driver: tokio::process::Child,
    driver_port: u16,
    /// The Chromium profile and chromedriver's log, removed when the browser goes.
    dir: PathBuf,
    /// False once `quit` has cleaned up, so that `Drop` has nothing left to do.
    live: bool,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1280x800 window.
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_with(BrowserOptions::default()).await
    }

    pub async fn start_with(options: BrowserOptions) -> anyhow::Result<Browser> {
        // reqwest is built without a default TLS provider; plain HTTP still needs one set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Always local: a proxy from the environment must not see these requests.
        let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).no_proxy().build()?;
        let dir =
            std::env::temp_dir().join(format!("brain-chromium-{}", uuid::Uuid::new_v4().simple()));
        ["profile", "tmp"]
            .iter()
            .try_for_each(|sub| std::fs::create_dir_all(dir.join(sub)))
            .with_context(|| format!("create {}", dir.display()))?;
        let deadline = Instant::now() + options.start_timeout;

        // A port found free can be taken again before chromedriver binds it; a driver that
        // exits at once is started again on another.
        let mut attempt = 0;
        let (driver, driver_port) = loop {
            attempt += 1;
            let port = free_port()?;
            let mut driver = match spawn_driver(&options.chromedriver, port, &dir) {
                Ok(driver) => driver,
                Err(err) => {
                    remove_dir(&dir);
                    return Err(err);
                }
            };
            match wait_ready(&http, &mut driver, port, deadline).await {
                Ok(()) => break (driver, port),
                Err(err) => {
                    let exited = driver.try_wait().ok().flatten().is_some();
                    let _ = driver.kill().await;
                    if exited && attempt < 3 && Instant::now() < deadline {
                        continue;
                    }
                    let log = driver_log_tail(&dir);
                    remove_dir(&dir);
                    return Err(
                        err.context(format!("chromedriver on port {port}; its log ends:\n{log}"))
                    );
                }
            }
        };

        let mut browser = Browser {
            session: Endpoint { http: http.clone(), base: String::new() },
            driver,
            driver_port,
            dir,
            live: true,
        };
        let root = Endpoint { http, base: format!("http://127.0.0.1:{driver_port}") };
        let capabilities = browser.capabilities(&options);
        let created =
            tokio::time::timeout_at(deadline.into(), root.post("/session", capabilities)).await;
        let created = match created {
            Ok(created) => created,
            Err(_) => Err(anyhow::anyhow!("no session after {:?}", options.start_timeout)),
        };
        let session_id = match created {
            Ok(value) => value["sessionId"].as_str().map(str::to_owned),
            Err(err) => {
                let log = driver_log_tail(&browser.dir);
                return Err(err
                    .context(format!("open a Chromium session; chromedriver's log ends:\n{log}")));
            }
        };
        let Some(session_id) = session_id else {
            bail!("chromedriver answered a new session without an id")
        };
        browser.session.base = format!("{}/session/{session_id}", root.base);
        // Chromium opens on a new-tab page whose loads (one fails: it looks a name up) would
        // show in the logs: leave it, and start the logs empty.
        browser.goto("about:blank").await?;
        browser.log("browser").await?;
        browser.log("performance").await?;
        Ok(browser)
    }

    fn capabilities(&self, options: &BrowserOptions) -> Value {
        let (width, height) = options.window;
        let mut args = vec![
            "--headless=new".to_owned(),
            // Root in a container: Chromium's sandbox refuses to start.
            "--no-sandbox".to_owned(),
            // No GPU in a container or CI: software rendering from the start.
            "--disable-gpu".to_owned(),
            // /dev/shm is small in containers; Chromium crashes when it fills.
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            // One profile per browser, so parallel browsers share no locks or state.
            format!("--user-data-dir={}", self.dir.join("profile").display()),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            // Nothing but the pages under test on the network log.
            "--disable-background-networking".to_owned(),
            "--disable-extensions".to_owned(),
        ];
        args.extend(options.extra_args.iter().cloned());
        let mut chrome = json!({ "args": args });
        if let Some(binary) = &options.chromium {
            chrome["binary"] = json!(binary.display().to_string());
        }
        json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": chrome,
                    // The console and the DevTools network events, read by browser_log and
                    // performance_log.
                    "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
                    "timeouts": {
                        "pageLoad": PAGE_LOAD_TIMEOUT.as_millis() as u64,
                        "script": SCRIPT_TIMEOUT.as_millis() as u64,
                        "implicit": 0,
                    },
                }
            }
        })
    }

    /// The port this browser's chromedriver listens on.
    pub fn driver_port(&self) -> u16 {
        self.driver_port
    }

    /// The temporary folder holding the Chromium profile (`profile/`) and chromedriver's
    /// log (`chromedriver.log`); removed by `quit` and by `Drop`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Navigates and waits for the page to load (WebDriver's normal page-load strategy).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session.post("/url", json!({ "url": url })).await?;
        Ok(())
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        string(self.session.get("/url").await?)
    }

    pub async fn title(&self) -> anyhow::Result<String> {
        string(self.session.get("/title").await?)
    }

    /// Resizes the window (outer size, in CSS pixels), e.g. to a phone's 390x844.
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.session.post("/window/rect", json!({ "width": width, "height": height })).await?;
        Ok(())
    }

    /// The first element matching `css`, or a `no such element` [`WebDriverError`].
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let value =
            self.session.post("/element", json!({ "using": "css selector", "value": css })).await;
        let value = value.with_context(|| format!("find {css:?}"))?;
        Element::from_json(&self.session, &value)
    }

    /// The element that has the focus (the body when none has), for keyboard tests: keys
    /// sent to it are what a user's typing would reach.
    pub async fn active(&self) -> anyhow::Result<Element> {
        let value = self.session.get("/element/active").await.context("the active element")?;
        Element::from_json(&self.session, &value)
    }

    /// Every element matching `css`, in document order; empty when none does.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let value =
            self.session.post("/elements", json!({ "using": "css selector", "value": css })).await;
        let value = value.with_context(|| format!("find all {css:?}"))?;
        let Value::Array(items) = value else { bail!("find all {css:?}: not a list: {value}") };
        items.iter().map(|item| Element::from_json(&self.session, item)).collect()
    }

    /// Runs `script` as the body of a function called with `args` (elements go as
    /// [`Element::to_arg`]) and answers what it returns.
    pub async fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.session.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// Like `execute`, but the script finishes by calling its last argument with the
    /// answer: `const done = arguments[arguments.length - 1]; ... done(x)`.
    pub async fn execute_async(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.session.post("/execute/async", json!({ "script": script, "args": args })).await
    }

    /// Waits until an element matches `css` and answers the first one. Looks every 50 ms;
    /// after `timeout` the error says what it waited for.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(first) = self.find_all(css).await?.into_iter().next() {
                return Ok(first);
            }
            if Instant::now() >= deadline {
                bail!("waited {timeout:?} for an element matching {css:?}; none appeared");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until an element matching `css` has a text that `expected` accepts (a `&str`
    /// is looked for as a substring; a closure `|text: &str| -> bool` decides itself), and
    /// answers that element. The text is the rendered one (`innerText`). After `timeout`
    /// the error names the selector, what was expected and the texts last seen.
    pub async fn wait_for_text(
        &self,
        css: &str,
        expected: impl TextMatch,
        timeout: Duration,
    ) -> anyhow::Result<Element> {
        // One round trip a look: the elements and their texts together, so that nothing can
        // be replaced between finding an element and reading it.
        const SCRIPT: &str = "return Array.from(document.querySelectorAll(arguments[0]), \
                              (e) => [e, e.innerText]);";
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.execute(SCRIPT, &[json!(css)]).await?;
            let mut seen = Vec::new();
            for pair in found.as_array().into_iter().flatten() {
                let text = pair[1].as_str().unwrap_or_default();
                if expected.matches(text) {
                    return Element::from_json(&self.session, &pair[0]);
                }
                seen.push(text.to_owned());
            }
            if Instant::now() >= deadline {
                let seen = if seen.is_empty() {
                    "no element matched".to_owned()
                } else {
                    format!("last seen {}", truncate(&format!("{seen:?}"), 500))
                };
                bail!("waited {timeout:?} for {css:?} to have {}; {seen}", expected.describe());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The visible part of the page as PNG.
    pub async fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let encoded = string(self.session.get("/screenshot").await?)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim_end())
            .context("screenshot: not base64")
    }

    /// Writes [`Browser::screenshot_png`] to `path`.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let png = self.screenshot_png().await?;
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// The console messages (and the errors Chromium reports there, such as failed loads)
    /// since the previous call: chromedriver hands each entry out once.
    pub async fn browser_log(&self) -> anyhow::Result<Vec<LogEntry>> {
        self.log("browser").await
    }

    /// The DevTools events (network and page) since the previous call; like `browser_log`,
    /// each is handed out once.
    pub async fn performance_log(&self) -> anyhow::Result<Vec<PerfEvent>> {
        let entries = self.log("performance").await?;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            #[derive(Deserialize)]
            struct Wrapped {
                message: Event,
            }
            #[derive(Deserialize)]
            struct Event {
                method: String,
                #[serde(default)]
                params: Value,
            }
            let wrapped: Wrapped = serde_json::from_str(&entry.message).with_context(|| {
                format!("performance log entry: {}", truncate(&entry.message, 200))
            })?;
            let Event { method, params } = wrapped.message;
            events.push(PerfEvent { method, params, timestamp: entry.timestamp });
        }
        Ok(events)
    }

    /// The requests that failed since the performance log was last read: see
    /// [`failed_requests`].
    pub async fn failed_requests(&self) -> anyhow::Result<Vec<FailedRequest>> {
        Ok(failed_requests(&self.performance_log().await?))
    }

    async fn log(&self, kind: &str) -> anyhow::Result<Vec<LogEntry>> {
        // chromedriver's own (pre-W3C) endpoint: the W3C protocol has no logs.
        let value = self.session.post("/se/log", json!({ "type": kind })).await?;
        serde_json::from_value(value).with_context(|| format!("{kind} log"))
    }

    /// Sends a DevTools command to the page (e.g. `Performance.getMetrics`) and answers
    /// its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        let value =
            self.session.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params })).await;
        value.with_context(|| format!("DevTools {cmd}"))
    }

    /// DevTools' performance metrics (`JSHeapUsedSize`, `Nodes`, `TaskDuration`,
    /// `ScriptDuration`, …; durations in seconds) by name. Turns the domain on first,
    /// which is harmless when it already is; the counters run from then on.
    pub async fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        self.cdp("Performance.enable", json!({})).await?;
        let value = self.cdp("Performance.getMetrics", json!({})).await?;
        let mut metrics = BTreeMap::new();
        for metric in value["metrics"].as_array().into_iter().flatten() {
            if let (Some(name), Some(v)) = (metric["name"].as_str(), metric["value"].as_f64()) {
                metrics.insert(name.to_owned(), v);
            }
        }
        Ok(metrics)
    }

    /// Ends the session (Chromium quits), stops chromedriver and removes the folder.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        let deleted = self.session.call(reqwest::Method::DELETE, "", None).await;
        // Chromium is quitting when the session ended well (chromedriver answers before its
        // last processes are gone); what is left goes now.
        let dir = self.dir.clone();
        let driver = self.driver.id();
        let _ = tokio::task::spawn_blocking(move || kill_all(driver, &dir)).await;
        let _ = self.driver.kill().await;
        self.live = false;
        remove_dir(&self.dir);
        deleted.map(drop).context("end the Chromium session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.live {
            // No async here to end the session: kill Chromium and chromedriver instead,
            // then the profile can go.
            kill_all(self.driver.id(), &self.dir);
            let _ = self.driver.start_kill();
            remove_dir(&self.dir);
        }
    }
}

fn string(value: Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => {
            bail!("expected a string from chromedriver, got {}", truncate(&other.to_string(), 200))
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}
