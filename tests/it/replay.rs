//! Replay and fork of a recorded run. A `coder` mission reads a file and answers against a
//! fake provider; `brain missions replay` then plays it back with no model and no tool (the
//! fake sees no request): identical with today's prompt, divergent at step 1 once the prompt
//! changes, and divergent at the tool call where the server, which offers no file tools,
//! would refuse it. A fork at step 1 plays the first step back and asks the model only for
//! the second; the fork and the original name each other.

use std::process::Output;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::missions_api::post;
use crate::serve::get;
use crate::support::TestEnv;
use crate::workers::{WorkerProcess, enqueue, finished, mission};

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brain-replay-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    std::fs::write(dir.join("root/notes.md"), "ship it on friday\n").unwrap();
    std::fs::write(dir.join("prompts/coder.md"), "You are a different coder.").unwrap();
    dir
}

/// `brain missions <args>` against the test's store, with `vars` set.
fn brain_missions(env: &TestEnv, args: &[&str], vars: &[(&str, &std::path::Path)]) -> Output {
    brain_missions_with(env, args, vars, None)
}

/// The same, with the LLM gateway's environment pointing at `fake`: were anything sent to a
/// model, the fake would see it.
fn brain_missions_with(
    env: &TestEnv,
    args: &[&str],
    vars: &[(&str, &std::path::Path)],
    fake: Option<&FakeLlm>,
) -> Output {
    let mut command = crate::support::brain_command();
    command
        .arg("missions")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("BRAIN_NAMESPACE", env.namespace.as_str())
        .env("RUST_LOG", "warn");
    for (name, value) in vars {
        command.env(name, value);
    }
    if let Some(fake) = fake {
        command
            .env("BRAIN_LLM_PROVIDER", "openai")
            .env("BRAIN_LLM_HOST", fake.url())
            .env("BRAIN_LLM_MODEL", "fake-1");
    }
    command.output().expect("run brain missions")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn types(events: &Value) -> Vec<&str> {
    events.as_array().unwrap().iter().map(|event| event["event_type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_recorded_run_replays_identical_diverges_after_a_prompt_change_and_forks_at_step_one() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = crate::workers::serve_without_workers(&env).await;
    let dir = scratch();
    let root = dir.join("root");
    let script = vec![
        Scripted::Answer {
            text: String::new(),
            tool_calls: vec![("read_file".into(), json!({ "path": "notes.md" }))],
            usage: (30, 10),
        },
        Scripted::Answer { text: "Friday.".into(), tool_calls: vec![], usage: (50, 3) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("Friday, said the fork."), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let mut command = crate::support::brain_command();
    command.env("BRAIN_AGENT_ROOT", &root);
    let _worker = WorkerProcess::start_in(command, &env, "replay-worker", &["--agents", "coder"]);

    let body =
        json!({ "name": "when", "agent": "coder", "payload": { "prompt": "when do we ship?" } });
    let id = enqueue(addr, body).await;
    assert_eq!(finished(addr, &id).await["result"]["answer"], "Friday.");
    assert_eq!(fake.seen().len(), 2);

    // Played back as it ran: nothing sent to the model.
    let same =
        brain_missions_with(&env, &["replay", &id], &[("BRAIN_AGENT_ROOT", &root)], Some(&fake));
    assert!(same.status.success(), "{}", text(&same));
    assert!(text(&same).contains("identical"), "{}", text(&same));
    assert!(text(&same).contains("2 model calls, 1 tool calls"), "{}", text(&same));
    assert_eq!(fake.seen().len(), 2, "a replay calls no model");

    // A changed prompt: step 1's request differs at the system message.
    let changed = brain_missions(
        &env,
        &["replay", &id, "--json"],
        &[("BRAIN_AGENT_ROOT", &root), ("BRAIN_AGENT_PROMPTS", &dir.join("prompts"))],
    );
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed));
    let report: Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(report["verdict"], "diverged", "{report}");
    let divergence = &report["divergence"];
    assert_eq!(divergence["step"], 1, "{report}");
    assert!(divergence["what"].as_str().unwrap().contains("message 0 (system)"), "{report}");
    assert_eq!(divergence["now"]["content"], "You are a different coder.");
    assert!(divergence["recorded"]["content"].as_str().unwrap().contains("coder agent of BRAiN"));

    // Through the API, with the server's code: it offers no file tools, so it would refuse
    // the recorded read.
    let (status, report) = get(addr, &format!("/api/missions/{id}/replay")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["verdict"], &report["divergence"]["step"]),
        (&json!("diverged"), &json!(1))
    );
    assert!(
        report["divergence"]["what"].as_str().unwrap().contains("tool call read_file"),
        "{report}"
    );

    // A fork at step 1: the first answer and the read come from the record, the second
    // answer from the model.
    let forked = brain_missions(&env, &["fork", &id, "--at-step", "1"], &[]);
    assert!(forked.status.success(), "{}", text(&forked));
    let fork_id = String::from_utf8_lossy(&forked.stdout).trim().to_owned();
    let done = finished(addr, &fork_id).await;
    assert_eq!(done["result"]["answer"], "Friday, said the fork.", "{done}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "only the fork's second step asked the model");
    let sent = seen[2].body["messages"].as_array().unwrap();
    assert!(sent.iter().any(
        |m| m["role"] == "tool" && m["content"].as_str().unwrap().contains("ship it on friday")
    ));

    let (_, fork_events) = get(addr, &format!("/api/missions/{fork_id}/events")).await;
    assert_eq!(
        types(&fork_events),
        [
            "MissionEnqueued",
            "MissionStarted",
            "MissionLlmCalled",
            "MissionToolCalled",
            "MissionLlmCalled",
            "MissionCompleted"
        ]
    );
    let calls = fork_events.as_array().unwrap();
    assert_eq!(calls[2]["payload"]["call"]["replayed"], true);
    assert_eq!(calls[3]["payload"]["call"]["replayed"], true);
    assert!(calls[4]["payload"]["call"].get("replayed").is_none(), "the live step is not marked");
    let fork_view = mission(addr, &fork_id).await;
    assert_eq!(fork_view["forked_from"], json!({ "mission_id": id, "attempt": 1, "steps": 1 }));
    let origin = mission(addr, &id).await;
    assert_eq!(origin["forks"], json!([{ "mission_id": fork_id, "attempt": 1, "steps": 1 }]));

    // A step the run did not take is refused with the reason, and nothing is enqueued.
    let (status, refused) =
        post(addr, &format!("/api/missions/{id}/fork"), r#"{"at_step": 3}"#).await;
    let error = &refused["error"];
    assert_eq!((status, &error["code"]), (422, &json!("not_replayable")), "{refused}");
    assert!(error["message"].as_str().unwrap().contains("between 1 and 2"), "{refused}");
    assert_eq!(mission(addr, &id).await["forks"].as_array().unwrap().len(), 1);

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
