//! `run_command` in a real worker, steered by a fake provider the way a prompt injection
//! would steer a model: the git escapes are refused and recorded, and a script that tries to
//! read the worker's environment (where the provider key lives) finds nothing of it, so no
//! secret reaches the mission's history. A worker that cannot switch to the command user (run
//! as `nobody`) refuses the command rather than run it as itself.

use serde_json::{Value, json};

use crate::coder_agent::configure;
use crate::fake_llm::{FakeLlm, Scripted};
use crate::support::TestEnv;
use crate::workers::{WorkerProcess, enqueue, finished, serve_without_workers, tool_calls};

fn call(args: &[&str]) -> (String, Value) {
    let program = args[0];
    ("run_command".to_owned(), json!({ "program": program, "args": &args[1..] }))
}

#[tokio::test]
async fn the_escapes_through_run_command_are_refused_or_find_nothing_and_no_secret_is_recorded() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let dir = std::env::temp_dir().join(format!("brain-run-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("steal.sh"),
        "for f in /proc/[0-9]*/environ; do cat \"$f\"; echo; done 2>&1\necho \"read $$\"\n",
    )
    .unwrap();
    let script = vec![
        Scripted::Answer {
            text: String::new(),
            tool_calls: vec![
                call(&["git", "-c", "alias.x=!sh steal.sh", "x"]),
                call(&["git", "grep", "-Osh steal.sh", "needle"]),
                call(&["git", "grep", "--open-files-in-pager=sh", "needle"]),
                call(&["sh", "steal.sh"]),
            ],
            usage: (30, 10),
        },
        Scripted::Answer { text: "nothing found".into(), tool_calls: vec![], usage: (40, 3) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    configure(addr, &fake).await;
    let key = format!("sk-test-{}", uuid::Uuid::new_v4().simple());
    let mut command = crate::support::brain_command();
    command
        .env("BRAIN_AGENT_ROOT", &dir)
        .env("BRAIN_AGENT_COMMANDS", "git,sh")
        .env("OPENAI_API_KEY", &key);
    let _worker = WorkerProcess::start_in(command, &env, "sandboxed", &["--agents", "coder"]);

    let body = json!({ "name": "look", "agent": "coder", "payload": { "prompt": "look around" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");

    let calls = tool_calls(addr, &id).await;
    assert_eq!(calls.len(), 4, "{calls:?}");
    for refused in &calls[..3] {
        assert_eq!(refused["refused"], true, "{refused}");
        assert!(refused["error"].as_str().unwrap().contains("is not allowed"), "{refused}");
    }
    let stolen = &calls[3];
    assert_eq!(
        (&stolen["refused"], &stolen["result"]["status"]),
        (&json!(false), &json!(0)),
        "{stolen}"
    );
    let out = stolen["result"]["stdout"].as_str().unwrap();
    assert!(out.contains("read "), "the script ran: {out}");
    assert!(!out.contains("DATABASE_URL"), "the worker's environment was read: {out}");
    let everything = format!(
        "{calls:?}{:?}",
        fake.seen().iter().map(|s| s.body.to_string()).collect::<Vec<_>>()
    );
    assert!(!everything.contains(&key), "the provider key reached the record or the model");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_worker_that_cannot_switch_users_refuses_every_command_rather_than_run_it_as_itself() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let dir = std::env::temp_dir().join(format!("brain-run-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello\n").unwrap();
    let script = vec![
        Scripted::Answer {
            text: String::new(),
            tool_calls: vec![call(&["cat", "notes.txt"])],
            usage: (30, 10),
        },
        Scripted::Answer { text: "refused".into(), tool_calls: vec![], usage: (40, 3) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    configure(addr, &fake).await;
    // The worker as `nobody`, without a capability: it cannot become the command user.
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_brain"))
        .env("BRAIN_ADMIN_KEY", crate::support::ADMIN_TOKEN)
        .env("BRAIN_AGENT_ROOT", &dir)
        .env("BRAIN_AGENT_COMMANDS", "cat");
    let _worker = WorkerProcess::start_in(command, &env, "unprivileged", &["--agents", "coder"]);

    let body =
        json!({ "name": "read", "agent": "coder", "payload": { "prompt": "read the notes" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let call = tool_calls(addr, &id).await.into_iter().next().expect("the call is recorded");
    assert_eq!(call["refused"], true, "{call}");
    let why = call["error"].as_str().unwrap();
    assert!(why.contains("cannot switch to the command user"), "{why}");
    assert!(!call.to_string().contains("hello"), "the file was read: {call}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
