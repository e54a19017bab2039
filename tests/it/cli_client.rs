//! `brain missions …` and `brain agents …` as a user runs them against a serve: the binary,
//! its exit statuses and what it prints, and what it does with no key, a key that may not, a
//! hostile id and a serve that is not there.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::serve_with_echo;
use crate::support::{ADMIN_TOKEN, TestEnv, brain_command, make_key};

/// Runs `brain ARGS` against the serve at `addr` with `key` (none: no key at all).
async fn brain(addr: SocketAddr, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = brain_command();
    command.env("BRAIN_URL", format!("http://{addr}")).env_remove("BRAIN_API_KEY").args(args);
    if let Some(key) = key {
        command.env("BRAIN_API_KEY", key);
    }
    let run = tokio::process::Command::from(command).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("brain ends").expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

#[tokio::test]
async fn missions_are_enqueued_followed_to_their_end_listed_shown_retried_and_refused_from_the_cli()
{
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let admin = Some(ADMIN_TOKEN);

    // A mission enqueued with --wait is followed to its end: exit 0, its events, its result.
    let args = ["missions", "enqueue", "hello", "--agent", "echo", "--payload", r#"{"x":1}"#];
    let done = brain(addr, admin, &[&args[..], &["--wait"]].concat()).await;
    assert_eq!(status(&done), 0, "{}{}", stdout(&done), stderr(&done));
    let text = stdout(&done);
    assert!(text.contains("MissionEnqueued") && text.contains("MissionCompleted"), "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.contains("completed") && last.contains(r#""x":1"#), "{last}");
    let completed_id = last.split_whitespace().next().unwrap().to_owned();
    let enqueued_line = text.lines().find(|line| line.contains("MissionEnqueued")).unwrap();
    let enqueued_at = enqueued_line.split_whitespace().nth(1).unwrap().trim_start_matches('#');

    // One that fails for good exits 1, naming its error.
    let payload = r#"{"fail_permanently":true}"#;
    let args = ["missions", "enqueue", "doomed", "--agent", "echo", "--payload", payload, "--wait"];
    let failed = brain(addr, admin, &args).await;
    assert_eq!(status(&failed), 1, "{}{}", stdout(&failed), stderr(&failed));
    let last = stdout(&failed).lines().last().unwrap().to_owned();
    assert!(last.contains("failed") && last.contains("asked to fail permanently"), "{last}");
    let failed_id = last.split_whitespace().next().unwrap().to_owned();

    // The list filters as the route does; the table and the JSON say the same.
    let listed = brain(addr, admin, &["missions", "list", "--status", "failed", "--json"]).await;
    assert_eq!(status(&listed), 0, "{}", stderr(&listed));
    let page: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let ids: Vec<&str> = page["missions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mission_id"].as_str())
        .collect();
    assert_eq!(ids, [failed_id.as_str()]);
    let table = stdout(&brain(addr, admin, &["missions", "list"]).await);
    assert!(table.starts_with("id"), "{table}");
    // Every page, a mission per page: both, each once.
    let all = brain(addr, admin, &["missions", "list", "--all", "--limit", "1", "--json"]).await;
    assert_eq!(status(&all), 0, "{}", stderr(&all));
    let all: Value = serde_json::from_str(&stdout(&all)).unwrap();
    let mut ids: Vec<&str> = all["missions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mission_id"].as_str())
        .collect();
    ids.sort();
    let mut expected = vec![completed_id.as_str(), failed_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "{all}");
    assert!(all["next_cursor"].is_null(), "{all}");
    assert!(table.contains(&completed_id) && table.contains(&failed_id), "{table}");

    // Show, now and as it stood at its first event.
    let shown = stdout(&brain(addr, admin, &["missions", "show", &completed_id]).await);
    assert!(shown.contains("status") && shown.contains("completed"), "{shown}");
    let args = ["missions", "show", &completed_id, "--at-position", enqueued_at, "--json"];
    let first = brain(addr, admin, &args).await;
    assert_eq!(status(&first), 0, "{}", stderr(&first));
    let first: Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert_eq!(first["status"], "queued");

    // Retry queues the failed one again; watch follows it to its (same) end.
    let retried = brain(addr, admin, &["missions", "retry", &failed_id]).await;
    assert_eq!(status(&retried), 0, "{}", stderr(&retried));
    let watched = brain(addr, admin, &["missions", "watch", &failed_id, "--no-tokens"]).await;
    assert_eq!(status(&watched), 1, "{}{}", stdout(&watched), stderr(&watched));
    assert!(stdout(&watched).contains("MissionRetried"), "{}", stdout(&watched));

    // A refusal exits 2 with the serve's code, and changes nothing.
    let refused =
        brain(addr, admin, &["missions", "cancel", &completed_id, "--reason", "late"]).await;
    assert_eq!(status(&refused), 2);
    assert!(stderr(&refused).contains("409"), "{}", stderr(&refused));
    let shown = brain(addr, admin, &["missions", "show", &completed_id, "--json"]).await;
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["status"], "completed");

    // Re-enqueue: a copy of the completed one, linked to it, printed as id and status.
    let args = ["missions", "reenqueue", &completed_id, "--reason", "once more"];
    let copied = brain(addr, admin, &args).await;
    assert_eq!(status(&copied), 0, "{}", stderr(&copied));
    let copy_id = stdout(&copied).split_whitespace().next().unwrap().to_owned();
    let shown = stdout(&brain(addr, admin, &["missions", "show", &copy_id]).await);
    assert!(
        shown.lines().any(|l| l.starts_with("copy of") && l.contains(&completed_id)),
        "{shown}"
    );

    // In bulk: each mission answered for itself; one refused makes the exit 1.
    let args = ["missions", "bulk", "retry", "--id", &failed_id, "--id", &completed_id];
    let many = brain(addr, admin, &[&args[..], &["--reason", "upstream fixed"]].concat()).await;
    assert_eq!(status(&many), 1, "{}{}", stdout(&many), stderr(&many));
    let table = stdout(&many);
    let line = |id: &str| table.lines().find(|line| line.starts_with(id)).unwrap().to_owned();
    assert!(line(&failed_id).contains("retried"), "{table}");
    assert!(line(&completed_id).contains("mission_not_failed"), "{table}");
    // By the list's filters: the one pending mission named by its name.
    let args =
        ["missions", "enqueue", "later", "--agent", "echo", "--not-before", "2999-01-01T00:00:00Z"];
    let later = stdout(&brain(addr, admin, &args).await).trim().to_owned();
    crate::support::wait_until("the list to hold it", Duration::from_secs(10), || async {
        crate::serve::get(addr, "/api/missions?q=later").await.1["total"] == 1
    })
    .await;
    let args = ["missions", "bulk", "cancel", "--status", "pending", "--where", "q=later"];
    let filtered =
        brain(addr, admin, &[&args[..], &["--reason", "not needed", "--json"]].concat()).await;
    assert_eq!(status(&filtered), 0, "{}{}", stdout(&filtered), stderr(&filtered));
    let answer: Value = serde_json::from_str(&stdout(&filtered)).unwrap();
    assert_eq!(answer["results"][0]["mission_id"], later.as_str(), "{answer}");
    assert_eq!(answer["results"][0]["outcome"], "cancelled", "{answer}");
}

#[tokio::test]
async fn the_cli_without_a_key_with_a_key_that_may_not_with_a_hostile_id_or_no_serve_changes_nothing()
 {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let reader =
        make_key(addr, json!({ "name": "reader", "permissions": ["missions.read"] })).await;
    let queued = brain(
        addr,
        Some(ADMIN_TOKEN),
        &["missions", "enqueue", "kept", "--agent", "echo", "--not-before", "2999-01-01T00:00:00Z"],
    )
    .await;
    assert_eq!(status(&queued), 0, "{}", stderr(&queued));
    let mission_id = stdout(&queued).trim().to_owned();

    // No key.
    let anonymous = brain(addr, None, &["missions", "list"]).await;
    assert_eq!(status(&anonymous), 2);
    assert!(stderr(&anonymous).contains("401 unauthenticated"), "{}", stderr(&anonymous));

    // A key that may read but not change missions or control agents.
    let read = brain(addr, Some(&reader), &["missions", "show", &mission_id, "--json"]).await;
    assert_eq!(status(&read), 0, "{}", stderr(&read));
    let cancel = brain(addr, Some(&reader), &["missions", "cancel", &mission_id]).await;
    assert_eq!(status(&cancel), 2);
    assert!(stderr(&cancel).contains("403 forbidden"), "{}", stderr(&cancel));
    let stop = brain(addr, Some(&reader), &["agents", "list"]).await;
    assert_eq!(status(&stop), 2);
    assert!(stderr(&stop).contains("403 forbidden"), "{}", stderr(&stop));

    // Hostile ids stay one path segment: no other route is reached.
    let hostile = brain(addr, Some(ADMIN_TOKEN), &["missions", "show", "../../api/keys"]).await;
    assert_eq!(status(&hostile), 2);
    assert!(stdout(&hostile).is_empty(), "{}", stdout(&hostile));
    assert!(
        stderr(&hostile).contains("404") || stderr(&hostile).contains("400"),
        "{}",
        stderr(&hostile)
    );
    let dots = brain(addr, Some(ADMIN_TOKEN), &["missions", "cancel", ".."]).await;
    assert_eq!(status(&dots), 2);
    assert!(stderr(&dots).contains("is not an id"), "{}", stderr(&dots));

    // Nothing changed: the mission still waits for its time.
    let shown = brain(addr, Some(ADMIN_TOKEN), &["missions", "show", &mission_id, "--json"]).await;
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["status"], "pending", "{shown}");

    // No serve there: exit 2, said so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = listener.local_addr().unwrap();
    drop(listener);
    let nowhere = brain(gone, Some(ADMIN_TOKEN), &["missions", "list"]).await;
    assert_eq!(status(&nowhere), 2);
    assert!(stderr(&nowhere).contains("brain missions:"), "{}", stderr(&nowhere));
}

#[tokio::test]
async fn agents_are_listed_shown_stopped_and_started_from_the_cli() {
    let env = TestEnv::new().await;
    let addr = serve_with_echo(&env).await;
    let admin = Some(ADMIN_TOKEN);
    let echo_agent = || async {
        let listed = brain(addr, admin, &["agents", "list", "--kind", "echo", "--json"]).await;
        let page: Value = serde_json::from_str(&stdout(&listed)).unwrap_or(Value::Null);
        page["agents"][0]["agent_id"].as_str().unwrap_or_default().to_owned()
    };
    crate::support::wait_until("the echo agent to register", Duration::from_secs(15), || async {
        !echo_agent().await.is_empty()
    })
    .await;
    let agent_id = echo_agent().await;
    let table = stdout(&brain(addr, admin, &["agents", "list"]).await);
    assert!(table.contains(&agent_id) && table.contains("active"), "{table}");
    let shown = stdout(&brain(addr, admin, &["agents", "show", &agent_id]).await);
    assert!(shown.contains("kind") && shown.contains("echo"), "{shown}");

    let stopped =
        brain(addr, admin, &["agents", "stop", &agent_id, "--reason", "maintenance"]).await;
    assert_eq!(status(&stopped), 0, "{}", stderr(&stopped));
    assert_eq!(stdout(&stopped).trim(), format!("{agent_id} stopped"));
    let started = brain(addr, admin, &["agents", "start", &agent_id]).await;
    assert_eq!(status(&started), 0, "{}", stderr(&started));
    assert_eq!(stdout(&started).trim(), format!("{agent_id} active"));
    let unknown = brain(addr, admin, &["agents", "restart", "not-a-uuid"]).await;
    assert_eq!(status(&unknown), 2);
    assert!(stderr(&unknown).contains("422 invalid_body"), "{}", stderr(&unknown));
}
