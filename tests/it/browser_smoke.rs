//! The WebDriver client (`brain::bench::webdriver`) against a real headless Chromium: a
//! small page served here, clicked and read, with its console, network failures,
//! screenshot and DevTools metrics. Needs `chromium` and `chromium-driver`
//! (scripts/services.sh installs them).

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use brain::bench::webdriver::{Browser, FailedRequest, Failure};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html><head><title>smoke</title>
<link rel="icon" href="data:,">
</head>
<body>
<button id="go">Press</button>
<p id="out">idle</p>
<input id="name" value="start">
<select id="pick"><option value="a">A</option><option value="b">B</option></select>
<p id="picked"></p>
<script>
console.error("smoke: deliberate console error");
document.getElementById("pick").addEventListener("change", (e) => {
  document.getElementById("picked").textContent = "picked " + e.target.value;
});
document.getElementById("go").addEventListener("click", async () => {
  const missing = await fetch("/missing");
  const refused = await fetch("/unprocessable", { method: "POST" });
  // Later than the click's answer, so that the test has to wait for it.
  setTimeout(() => {
    document.getElementById("out").textContent = `pressed ${missing.status} ${refused.status}`;
  }, 200);
});
</script>
</body></html>"#;

/// Serves `PAGE` at `/`, 422 at `POST /unprocessable` and 404 elsewhere.
async fn serve_page() -> String {
    let app = Router::new().route("/", get(|| async { Html(PAGE) })).route(
        "/unprocessable",
        axum::routing::post(|| async { StatusCode::UNPROCESSABLE_ENTITY }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn drives_a_page_and_reads_its_console_network_and_metrics() {
    let site = serve_page().await;
    let browser = Browser::start().await.expect("start chromium");
    browser.goto(&format!("{site}/")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap(), format!("{site}/"));
    assert_eq!(browser.title().await.unwrap(), "smoke");

    browser.find("#go").await.unwrap().click().await.unwrap();
    let out = browser.wait_for_text("#out", "pressed", WAIT).await.unwrap();
    assert_eq!(out.text().await.unwrap(), "pressed 404 422");

    let log = browser.browser_log().await.unwrap();
    let script_errors: Vec<_> = log.iter().filter(|e| e.is_script_error()).collect();
    assert_eq!(script_errors.len(), 1, "{log:#?}");
    assert!(script_errors[0].message.contains("smoke: deliberate console error"), "{log:#?}");
    // Chromium logs every response of 400 or more as a SEVERE "Failed to load resource",
    // a fetch's too: tests that look for errors in the console must tell them apart.
    for (path, status) in [("/missing", 404), ("/unprocessable", 422)] {
        assert!(
            log.iter().any(|e| e.is_severe()
                && e.source.as_deref() == Some("network")
                && e.message.starts_with(&format!("{site}{path} - Failed to load resource"))
                && e.message.contains(&format!("status of {status}"))),
            "no network error for {path} in {log:#?}"
        );
    }
    assert_eq!(log.iter().filter(|e| e.is_severe()).count(), 3, "{log:#?}");

    let failed = browser.failed_requests().await.unwrap();
    assert!(
        failed.contains(&FailedRequest {
            url: format!("{site}/missing"),
            failure: Failure::Status(404)
        }),
        "the 404 is not among the failed requests: {failed:?}"
    );
    assert!(
        failed.contains(&FailedRequest {
            url: format!("{site}/unprocessable"),
            failure: Failure::Status(422)
        }),
        "the 422 is not among the failed requests: {failed:?}"
    );
    // Those two and nothing else (the page, its icon).
    assert_eq!(failed.len(), 2, "{failed:?}");

    // Inputs and selects.
    let name = browser.find("#name").await.unwrap();
    assert_eq!(name.attr("value").await.unwrap().as_deref(), Some("start"));
    name.clear().await.unwrap();
    name.send_keys("typed").await.unwrap();
    assert_eq!(name.value().await.unwrap(), "typed");
    assert_eq!(name.attr("value").await.unwrap().as_deref(), Some("start"), "the attribute stays");
    assert_eq!(name.attr("placeholder").await.unwrap(), None);
    let pick = browser.find("#pick").await.unwrap();
    pick.select_by_value("b").await.unwrap();
    assert_eq!(pick.value().await.unwrap(), "b");
    browser.wait_for_text("#picked", |t: &str| t == "picked b", WAIT).await.unwrap();
    assert!(pick.select_by_value("zzz").await.is_err(), "no such option");
    assert_eq!(browser.find_all("option").await.unwrap().len(), 2);
    assert!(browser.find("#nothing").await.is_err());

    let sum = browser
        .execute("return arguments[0] + arguments[1];", &[json!(2), json!(3)])
        .await
        .unwrap();
    assert_eq!(sum, json!(5));
    let tag = browser.execute("return arguments[0].tagName;", &[pick.to_arg()]).await.unwrap();
    assert_eq!(tag, json!("SELECT"));
    let later = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; setTimeout(() => done('later'), 10);",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(later, json!("later"));

    // A phone-sized window.
    browser.set_window_size(390, 844).await.unwrap();
    let width = browser.execute("return window.innerWidth;", &[]).await.unwrap();
    assert_eq!(width, json!(390));

    let dir =
        std::env::temp_dir().join(format!("brain-browser-smoke-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("page.png");
    browser.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {:?}", &png[..png.len().min(16)]);

    browser.cdp("Performance.enable", json!({})).await.unwrap();
    let metrics = browser.cdp("Performance.getMetrics", json!({})).await.unwrap();
    let heap = metrics["metrics"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == "JSHeapUsedSize"))
        .and_then(|m| m["value"].as_f64());
    assert!(heap.is_some_and(|used| used > 0.0), "no JSHeapUsedSize in {metrics}");
    let metrics = browser.metrics().await.unwrap();
    assert!(metrics["Nodes"] > 0.0, "{metrics:?}");
    assert!(
        metrics.contains_key("TaskDuration") && metrics.contains_key("ScriptDuration"),
        "{metrics:?}"
    );

    let wait =
        browser.wait_for_text("#out", "never", Duration::from_millis(300)).await.unwrap_err();
    let wait = format!("{wait:#}");
    assert!(
        wait.contains("\"#out\"") && wait.contains("never") && wait.contains("pressed 404 422"),
        "{wait}"
    );
    let wait = browser.wait_for(".absent", Duration::from_millis(200)).await.unwrap_err();
    assert!(format!("{wait:#}").contains(".absent"), "{wait:#}");

    let dir = browser.dir().to_owned();
    browser.quit().await.unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn browsers_run_side_by_side_and_leave_nothing_behind() {
    let site = serve_page().await;
    let (one, two) = tokio::join!(Browser::start(), Browser::start());
    let (one, two) = (one.expect("start the first"), two.expect("start the second"));
    assert_ne!(one.driver_port(), two.driver_port());
    assert_ne!(one.dir(), two.dir());
    let (dir_one, dir_two) = (one.dir().to_owned(), two.dir().to_owned());
    let (port_one, port_two) = (one.driver_port(), two.driver_port());
    assert!(!chromium_processes(&dir_one).is_empty(), "no Chromium found by its profile");

    // Each drives its own page at the same time.
    let url = format!("{site}/");
    tokio::join!(press(&one, &url), press(&two, &url));
    one.execute("document.getElementById('out').textContent = 'one';", &[]).await.unwrap();
    assert_eq!(two.find("#out").await.unwrap().text().await.unwrap(), "pressed 404 422");

    // One quits, the other is dropped: both take their folder and chromedriver with them.
    one.quit().await.unwrap();
    drop(two);
    for (dir, port) in [(dir_one, port_one), (dir_two, port_two)] {
        let deadline = std::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            || !chromium_processes(&dir).is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "still running: chromedriver on {port} or Chromium {:?}",
                chromium_processes(&dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Only now: a Chromium process still ending could write into it again.
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// The live processes started with the profile under `dir`.
fn chromium_processes(dir: &std::path::Path) -> Vec<u32> {
    let flag = format!("--user-data-dir={}", dir.join("profile").display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        // A zombie's cmdline is empty: it has ended, only not been reaped.
        if cmdline.split(|&b| b == 0).any(|arg| arg == flag.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

async fn press(browser: &Browser, url: &str) {
    browser.goto(url).await.unwrap();
    browser.find("#go").await.unwrap().click().await.unwrap();
    browser.wait_for_text("#out", "pressed 404 422", WAIT).await.unwrap();
}
