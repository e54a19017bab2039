//! The Python example agent (`examples/python_agent.py`) against a real serve: it registers,
//! heartbeats, claims and reports progress; killed mid-mission, it is marked unresponsive by
//! the supervisor, and the mission completes on a second Python agent.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::agent_supervision::{agent_history, serve_supervising};
use crate::support::{TestEnv, wait_until};
use crate::workers::{enqueue, event_types, mission};

/// A running example agent; killed when dropped.
struct PythonAgent {
    child: Child,
    agent_id: String,
}

impl PythonAgent {
    async fn start(addr: SocketAddr, name: &str) -> PythonAgent {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_agent.py");
        let url = format!("http://{addr}");
        // An agent key: it may register itself and serve `echo`, nothing else.
        let grant = serde_json::json!({ "name": name, "role": "agent", "kinds": ["echo"] });
        let key = crate::support::make_key(addr, grant).await;
        let mut child = Command::new("python3")
            .args([script, "--url", &url, "--name", name, "--kind", "echo"])
            .args(["--heartbeat-every-s", "0.5"])
            .env("BRAIN_API_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        // Its first line says who it is; the rest goes on to the test's output. Read on a
        // thread of its own: the runtime is busy serving the agent's requests.
        let stdout = child.stdout.take().unwrap();
        let (first, line) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for line in lines.map_while(Result::ok) {
                eprintln!("python agent: {line}");
            }
        });
        let line = line.await.unwrap();
        let agent_id = line.trim().strip_prefix("registered ").unwrap_or_else(|| panic!("{line}"));
        PythonAgent { agent_id: agent_id.to_owned(), child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn the_python_agent_works_and_its_mission_survives_a_kill_on_another_agent() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_supervising(&env, 1, 3).await;
    let payload = json!({ "prompt": "hello", "work_s": 4 });
    let mission_id =
        enqueue(addr, json!({ "name": "reverse", "agent": "echo", "payload": payload })).await;

    let mut first = PythonAgent::start(addr, "py-first").await;
    wait_until("the first agent to report progress", Duration::from_secs(20), || async {
        event_types(addr, &mission_id).await.iter().any(|t| t == "MissionProgressed")
    })
    .await;
    let holder =
        mission(addr, &mission_id).await["worker_id"].as_str().unwrap_or_default().to_owned();
    assert!(holder.starts_with(&format!("agent:{}:", first.agent_id)), "{holder}");
    first.kill();

    let second = PythonAgent::start(addr, "py-second").await;
    wait_until("the mission to complete", Duration::from_secs(30), || async {
        mission(addr, &mission_id).await["status"] == "completed"
    })
    .await;
    let done = mission(addr, &mission_id).await;
    assert_eq!(done["result"], json!({ "answer": "olleh", "by": "py-second" }), "{done}");
    let types = event_types(addr, &mission_id).await;
    assert!(types.contains(&"MissionLeaseExpired".to_owned()), "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "MissionCompleted").count(), 1, "{types:?}");
    let first_history: Vec<String> =
        agent_history(addr, &first.agent_id).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(first_history, ["AgentRegistered", "AgentUnresponsive"]);
    let second_history: Vec<String> =
        agent_history(addr, &second.agent_id).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(second_history, ["AgentRegistered"]);
    drop(second);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
