//! The `coder` agent's loop against a fake provider scripted to answer with tool calls: it
//! reads a file under its root and answers; an escape from the root is refused, recorded and
//! fed back, and nothing outside is read; a binary file, a hard link out and a fifo are
//! refusals the model sees, not a failed mission; every model and tool call is in the
//! mission's history in order; the step limit fails the mission with its reason.

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::serve::get;
use crate::support::TestEnv;
use crate::workers::{WorkerProcess, enqueue, finished, serve_without_workers, tool_calls};

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brain-coder-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(dir.join("root/notes.md"), "ship it on friday\n").unwrap();
    std::fs::write(dir.join("outside.txt"), "top secret\n").unwrap();
    dir
}

fn coder_worker(env: &TestEnv, root: &std::path::Path, steps_max: &str) -> WorkerProcess {
    let mut command = crate::support::brain_command();
    command.env("BRAIN_AGENT_ROOT", root).env("BRAIN_AGENT_STEPS_MAX", steps_max);
    WorkerProcess::start_in(command, env, "coder-worker", &["--agents", "coder"])
}

pub async fn configure(addr: std::net::SocketAddr, fake: &FakeLlm) {
    let config = json!({ "provider": "openai", "host": fake.url(), "model": "fake-1" });
    let (status, answer) = crate::llm_config::put(addr, &config).await;
    assert_eq!(status, 200, "{answer}");
}

fn tool_answer(calls: Vec<(&str, Value)>) -> Scripted {
    let tool_calls = calls.into_iter().map(|(name, args)| (name.to_owned(), args)).collect();
    Scripted::Answer { text: String::new(), tool_calls, usage: (30, 10) }
}

#[tokio::test]
async fn a_coder_reads_a_file_under_its_root_refuses_an_escape_and_answers() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let dir = scratch();
    let script = vec![
        tool_answer(vec![
            ("read_file", json!({ "path": "../outside.txt" })),
            ("read_file", json!({ "path": "notes.md" })),
        ]),
        Scripted::Answer {
            text: "The notes say: ship it on friday".into(),
            tool_calls: vec![],
            usage: (60, 9),
        },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    configure(addr, &fake).await;
    let _worker = coder_worker(&env, &dir.join("root"), "12");

    let body = json!({ "name": "read notes", "agent": "coder", "payload": { "prompt": "what do the notes say?" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let result = &done["result"];
    assert_eq!(
        (&result["answer"], &result["steps"], &result["tool_calls"]),
        (&json!("The notes say: ship it on friday"), &json!(2), &json!(2)),
        "{result}"
    );
    assert_eq!(result["usage"], json!({ "input_tokens": 90, "output_tokens": 19 }));

    // The history reads as the reasoning: model, both tool calls, model, completion.
    let (_, events) = get(addr, &format!("/api/missions/{id}/events")).await;
    let events = events.as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "MissionEnqueued",
            "MissionStarted",
            "MissionLlmCalled",
            "MissionToolCalled",
            "MissionToolCalled",
            "MissionLlmCalled",
            "MissionCompleted"
        ]
    );
    let tools: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "MissionToolCalled")
        .map(|e| &e["payload"]["call"])
        .collect();
    assert_eq!(
        (&tools[0]["tool"], &tools[0]["refused"], &tools[0]["step"]),
        (&json!("read_file"), &json!(true), &json!(1))
    );
    assert!(
        tools[0]["error"].as_str().unwrap().contains("may not leave the agent's root"),
        "{}",
        tools[0]
    );
    assert_eq!(
        (&tools[1]["refused"], &tools[1]["result"]["content"]),
        (&json!(false), &json!("ship it on friday\n"))
    );

    // The model got both results back, and nothing from outside the root went anywhere.
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let sent = seen[1].body["messages"].as_array().unwrap();
    let tool_messages: Vec<&Value> = sent.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 2, "{sent:?}");
    assert_eq!(tool_messages[0]["tool_call_id"], "call_0");
    assert!(tool_messages[0]["content"].as_str().unwrap().contains("refused"));
    assert!(tool_messages[1]["content"].as_str().unwrap().contains("ship it on friday"));
    assert_eq!(
        seen[0].body["tools"].as_array().unwrap().len(),
        3,
        "read_file, list_dir, search_text"
    );
    let everything = format!(
        "{:?}{}",
        seen.iter().map(|s| s.body.to_string()).collect::<Vec<_>>(),
        json!(events)
    );
    assert!(!everything.contains("top secret"));

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_binary_file_a_hard_link_out_and_a_fifo_are_refused_to_the_model_and_the_mission_completes()
 {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    // Given a root holding a binary file, a hard link to the secret outside it and a fifo
    // that no one writes to.
    let dir = scratch();
    let root = dir.join("root");
    std::fs::write(root.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::hard_link(dir.join("outside.txt"), root.join("notes-copy.md")).unwrap();
    let fifo =
        std::ffi::CString::new(root.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let script = vec![
        tool_answer(vec![
            ("read_file", json!({ "path": "logo.png" })),
            ("read_file", json!({ "path": "notes-copy.md" })),
            ("read_file", json!({ "path": "pipe" })),
            ("search_text", json!({ "text": "secret" })),
        ]),
        Scripted::Answer { text: "nothing to read".into(), tool_calls: vec![], usage: (60, 9) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    configure(addr, &fake).await;
    let _worker = coder_worker(&env, &root, "12");

    // When the model asks for each.
    let body =
        json!({ "name": "read odd files", "agent": "coder", "payload": { "prompt": "read them" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;

    // Then each read is refused with its reason, the search passes over the link, the
    // model is told, and the mission completes with its answer.
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["answer"], "nothing to read");
    let calls = tool_calls(addr, &id).await;
    let reasons: Vec<(&Value, &str)> = calls
        .iter()
        .map(|call| (&call["refused"], call["error"].as_str().unwrap_or_default()))
        .collect();
    assert!(reasons[0].1.contains("binary file, 16 bytes (it holds a NUL)"), "{reasons:?}");
    assert!(reasons[1].1.contains("2 hard links"), "{reasons:?}");
    assert!(reasons[2].1.contains("not a regular file (a fifo)"), "{reasons:?}");
    assert!(reasons[..3].iter().all(|(refused, _)| **refused == json!(true)), "{reasons:?}");
    assert_eq!(calls[3]["result"]["matches"], json!([]), "{}", calls[3]);
    assert_eq!(calls[3]["result"]["skipped"]["hard_linked"], 1, "{}", calls[3]);
    let seen = fake.seen();
    let everything =
        format!("{:?}{calls:?}", seen.iter().map(|s| s.body.to_string()).collect::<Vec<_>>());
    assert!(!everything.contains("top secret"));
    let sent = seen[1].body["messages"].as_array().unwrap();
    let told = sent.iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(told, 4, "{sent:?}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_coder_that_never_answers_stops_at_its_step_limit() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let dir = scratch();
    let again = tool_answer(vec![("list_dir", json!({ "path": "." }))]);
    let fake = FakeLlm::start(vec![], again, None).await;
    configure(addr, &fake).await;
    let _worker = coder_worker(&env, &dir.join("root"), "3");

    let body = json!({ "name": "loop", "agent": "coder", "max_attempts": 3, "payload": { "prompt": "look around" } });
    let done = finished(addr, &enqueue(addr, body).await).await;
    assert_eq!((&done["status"], &done["attempt"]), (&json!("failed"), &json!(1)), "{done}");
    let error = done["errors"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("step limit: 3 model calls without a final answer"), "{error}");
    assert_eq!(fake.seen().len(), 3);

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ops_may_run_commands_and_the_architect_only_reads() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let dir = scratch();
    let fake = FakeLlm::start(vec![], Scripted::text("all good"), None).await;
    configure(addr, &fake).await;
    let mut command = crate::support::brain_command();
    command.env("BRAIN_AGENT_ROOT", dir.join("root")).env("BRAIN_AGENT_COMMANDS", "ls,wc");
    let _worker =
        WorkerProcess::start_in(command, &env, "ops-worker", &["--agents", "ops,architect"]);

    for (kind, tools, prompt) in [
        ("ops", vec!["list_dir", "read_file", "run_command", "search_text"], "ops agent"),
        ("architect", vec!["list_dir", "read_file", "search_text"], "architect agent"),
    ] {
        let before = fake.seen().len();
        let body = json!({ "name": kind, "agent": kind, "payload": { "prompt": "how is it?" } });
        let done = finished(addr, &enqueue(addr, body).await).await;
        assert_eq!(done["result"]["answer"], "all good", "{done}");
        let asked = &fake.seen()[before].body;
        let mut offered: Vec<&str> = asked["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        offered.sort();
        assert_eq!(offered, tools, "{kind}");
        assert!(asked["messages"][0]["content"].as_str().unwrap().contains(prompt), "{asked}");
    }
    let (_, info) = get(addr, "/api/agents/info").await;
    let builtins = info.to_string();
    assert!(builtins.contains("architect") && builtins.contains("never a command"), "{info}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
