//! The harness of the Control Deck's browser tests (`console_browser`): a real serve with
//! workers, a headless Chromium on it, and what a test does with them: open a page, fill,
//! click, wait for text, answer a reason dialog, type and Tab by keyboard, take a
//! screenshot, and check at the end that the browser logged no error and no request failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use brain::bench::webdriver::{Browser, BrowserOptions, Failure, WebDriverError, keys};
use brain::serve::ServeOptions;
use serde_json::Value;

use crate::serve::{serve_with_options, services};
use crate::support::{TestEnv, redis_url};

pub const WAIT: Duration = Duration::from_secs(20);

/// A serve with `echo` and `coder` workers, an agent kind nobody serves (`idle`, so a
/// mission can wait to be cancelled), and a browser on it.
pub struct Deck {
    pub addr: SocketAddr,
    pub browser: Browser,
    shots: PathBuf,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub env: TestEnv,
}

/// The serve of a [`Deck`]: `echo` and `coder` workers and a kind nobody serves.
pub fn options(env: &TestEnv, addr: SocketAddr) -> ServeOptions {
    let mut options = ServeOptions::new(services(env, &redis_url()), addr);
    options.run_workers(brain::config::agents::AgentSpec::parse("echo,coder").unwrap(), 2);
    options.agent_kinds.push("idle".to_owned());
    options
}

impl Deck {
    pub async fn start() -> Deck {
        Deck::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(listen: SocketAddr) -> Deck {
        Deck::start_with(listen, BrowserOptions::default(), |_| {}).await
    }

    /// A deck whose serve `configure` adjusts and whose browser starts with `browser`.
    pub async fn start_with(
        listen: SocketAddr,
        browser: BrowserOptions,
        configure: impl FnOnce(&mut ServeOptions),
    ) -> Deck {
        let env = TestEnv::new().await;
        let mut options = options(&env, listen);
        configure(&mut options);
        let (addr, shutdown, task) = serve_with_options(options).await;
        let browser = Browser::start_with(browser).await.expect("chromium starts");
        let shots = match std::env::var_os("BRAIN_SCREENSHOT_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => browser.dir().join("screenshots"),
        };
        std::fs::create_dir_all(&shots).unwrap();
        let deck = Deck { addr, browser, shots, shutdown, task, env };
        deck.sign_in().await;
        deck
    }

    /// Signs the browser in with the tests' admin key, through the console's form.
    pub async fn sign_in(&self) {
        self.open("/").await;
        self.browser.wait_for("#sign-in input[name=key]", WAIT).await.unwrap();
        self.fill("#sign-in input[name=key]", crate::support::ADMIN_TOKEN).await;
        self.click("#sign-in button[type=submit]").await;
        self.text("#who", "admin").await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn open(&self, path: &str) {
        self.browser.goto(&self.url(path)).await.unwrap();
    }

    /// Types `text` into the input `css` matches, cleared first. A live page may redraw the
    /// input between finding and typing: then it is found again, until `WAIT` is over.
    pub async fn fill(&self, css: &str, text: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let input = self.browser.wait_for(css, WAIT).await.unwrap();
            let typed = async {
                input.clear().await?;
                input.send_keys(text).await
            };
            match typed.await {
                Ok(()) => return,
                Err(error)
                    if std::time::Instant::now() < deadline
                        && error
                            .downcast_ref::<WebDriverError>()
                            .is_some_and(|e| e.error == "stale element reference") => {}
                Err(error) => panic!("fill {css}: {error:#}"),
            }
        }
    }

    /// Clicks the element `css` matches once it is there. Live pages redraw from the API
    /// (the agents page also every few seconds), so the element found may be replaced before
    /// the click lands: then it is found again, until `WAIT` is over. It is scrolled to the
    /// middle of the window first: WebDriver clicks an element that is partly in view where it
    /// is, which may be under the page's sticky header.
    pub async fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let element = self.browser.wait_for(css, WAIT).await.unwrap();
            let center = "arguments[0].scrollIntoView({ block: 'center' }); return null;";
            let clicked = async {
                self.browser.execute(center, &[element.to_arg()]).await?;
                element.click().await
            };
            match clicked.await {
                Ok(()) => return,
                Err(error)
                    if std::time::Instant::now() < deadline
                        && error
                            .downcast_ref::<WebDriverError>()
                            .is_some_and(|e| e.error == "stale element reference") => {}
                Err(error) => panic!("click {css}: {error:#}"),
            }
        }
    }

    pub async fn text(&self, css: &str, expected: &str) {
        self.browser.wait_for_text(css, expected, WAIT).await.unwrap();
    }

    /// Answers the reason dialog the page opened.
    pub async fn give_reason(&self, reason: &str) {
        self.browser.wait_for("dialog.reason[open] textarea", WAIT).await.unwrap();
        self.fill("dialog.reason textarea", reason).await;
        self.click("dialog.reason button[value=ok]").await;
    }

    pub async fn shot(&self, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        self.browser.screenshot(&path).await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
    }

    /// No console error and no failed request, but for the `expected` refusals (paths and
    /// statuses) the test provoked on purpose.
    pub async fn check_clean(self, expected: &[(&str, u16)]) {
        self.check_clean_but(expected, &[]).await
    }

    /// As [`Deck::check_clean`], also letting console errors and failed requests that
    /// contain one of `allowed` pass (what a test provoked by stopping the server).
    pub async fn check_clean_but(self, expected: &[(&str, u16)], allowed: &[&str]) {
        // Before signing in, the page asks who it is and is told 401: that is how it knows.
        let expected = &[expected, &[("/api/session", 401)]].concat();
        let failed = self.browser.failed_requests().await.unwrap();
        let unexpected: Vec<String> = failed
            .iter()
            .filter(|request| {
                !expected.iter().any(|(path, status)| {
                    request.url.ends_with(path) && request.failure == Failure::Status(*status)
                }) && !allowed.iter().any(|allowed| request.to_string().contains(allowed))
            })
            .map(ToString::to_string)
            .collect();
        assert!(unexpected.is_empty(), "failed requests: {unexpected:?}");
        let errors: Vec<String> = self
            .browser
            .browser_log()
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| entry.is_severe())
            .map(|entry| entry.message)
            .collect();
        // Chromium logs every error status a fetch gets: those are the provoked refusals.
        let unexplained: Vec<&String> = errors
            .iter()
            .filter(|message| {
                !expected.iter().any(|(path, status)| {
                    message.contains(path) && message.contains(&format!("status of {status}"))
                }) && !allowed.iter().any(|allowed| message.contains(allowed))
            })
            .collect();
        assert!(unexplained.is_empty(), "console errors: {unexplained:?}");
        self.browser.quit().await.unwrap();
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn api_refusal(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Value {
    crate::serve::crypto_provider();
    let response = crate::support::client()
        .request(method, format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{path} refuses {body}");
    response.json::<Value>().await.unwrap()["error"].clone()
}

/// What has the focus: tag, id, name, class and the start of its text.
const FOCUSED: &str = "const e = document.activeElement;\
    return { tag: e.tagName.toLowerCase(), id: e.id, name: e.getAttribute('name') || '',\
      class: e.className, text: e.textContent.trim().slice(0, 60) };";

impl Deck {
    pub async fn focused(&self) -> Value {
        self.browser.execute(FOCUSED, &[]).await.unwrap()
    }

    /// Types `keys` where the focus is, as a user would.
    pub async fn press(&self, keys: &str) {
        self.browser.active().await.unwrap().send_keys(keys).await.unwrap();
    }

    /// Presses Tab until the focus is on an element `wanted` accepts (at most 80 times: a
    /// control out of the tab order fails here).
    pub async fn tab_to(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        for _ in 0..80 {
            self.press(keys::TAB).await;
            let focused = self.focused().await;
            if wanted(&focused) {
                return focused;
            }
            seen.push(focused);
        }
        panic!("Tab never reached {what}; it went through {seen:?}");
    }
}
