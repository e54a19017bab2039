//! The `supervisor` agent against a fake provider scripted to ask for sub-missions: it fans
//! out to three children on other agents, waits suspended (with one worker slot, which only
//! works if the waiting parent holds none), and completes with their combined result; a
//! cancelled parent cancels its children; a call past the child limit is refused to the
//! model with the reason.

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Scripted};
use crate::missions_api::post;
use crate::serve::get;
use crate::support::{TestEnv, wait_until};
use crate::workers::{
    WorkerProcess, enqueue, finished, mission, mission_status, serve_without_workers,
};

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn spawn(children: &[(&str, &str)]) -> Scripted {
    let missions: Vec<Value> = children
        .iter()
        .map(|(agent, task)| json!({ "agent": agent, "name": format!("{agent} part"), "task": task }))
        .collect();
    let call = ("spawn_missions".to_owned(), json!({ "missions": missions }));
    Scripted::Answer { text: String::new(), tool_calls: vec![call], usage: (40, 12) }
}

/// One `brain worker` with a single slot serving the supervisor, its children's kinds by the
/// echo agent.
fn one_slot_worker(env: &TestEnv, agents: &str, kinds: &str) -> WorkerProcess {
    let mut command = crate::support::brain_command();
    command.env("BRAIN_SUPERVISOR_KINDS", kinds);
    WorkerProcess::start_in(command, env, "one-slot", &["--agents", agents, "--concurrency", "1"])
}

async fn history(addr: std::net::SocketAddr, id: &str) -> Vec<Value> {
    get(addr, &format!("/api/missions/{id}/events")).await.1.as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["event_type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_supervisor_fans_out_waits_without_a_slot_and_completes_with_its_childrens_results() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let script = vec![
        spawn(&[("coder", "write it"), ("ops", "deploy it"), ("architect", "review it")]),
        Scripted::Answer { text: "all three done".into(), tool_calls: vec![], usage: (90, 5) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let _worker = one_slot_worker(
        &env,
        "supervisor,coder=echo,ops=echo,architect=echo",
        "coder,ops,architect",
    );

    // Each thinking agent is listed with its own prompt and tools.
    let (_, info) = get(addr, "/api/agents/info").await;
    let builtin = info["builtin"].as_array().unwrap();
    let listed = |name: &str| builtin.iter().find(|agent| agent["name"] == name).cloned().unwrap();
    assert_eq!(listed("supervisor")["tools"], json!(["spawn_missions"]), "{info}");
    assert!(listed("supervisor")["system_prompt"].as_str().unwrap().contains("supervisor agent"));
    assert!(listed("architect")["system_prompt"].as_str().unwrap().contains("architect agent"));
    assert!(listed("echo")["system_prompt"].is_null());

    let body = json!({ "name": "ship", "agent": "supervisor", "payload": { "prompt": "ship the feature" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let result = &done["result"];
    assert_eq!(result["answer"], "all three done", "{result}");
    let children = result["children"].as_array().unwrap();
    assert_eq!(children.len(), 3, "{result}");
    let tasks: Vec<&Value> =
        children.iter().map(|child| &child["result"]["echo"]["prompt"]).collect();
    assert_eq!(tasks, [&json!("write it"), &json!("deploy it"), &json!("review it")]);
    assert!(children.iter().all(|child| child["status"] == "completed"), "{result}");

    // The parent's story: asked, suspended, told of each child, resumed, told the model.
    let events = history(addr, &id).await;
    assert_eq!(
        types(&events),
        [
            "MissionEnqueued",
            "MissionStarted",
            "MissionLlmCalled",
            "MissionSuspended",
            "MissionChildFinished",
            "MissionChildFinished",
            "MissionChildFinished",
            "MissionResumed",
            "MissionStarted",
            "MissionToolCalled",
            "MissionLlmCalled",
            "MissionCompleted"
        ]
    );
    // Both starts are attempt 1: waiting did not use up an attempt.
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|event| event["event_type"] == "MissionStarted")
        .map(|event| &event["payload"]["attempt"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(1)]);
    let told = events.iter().find(|event| event["event_type"] == "MissionToolCalled").unwrap();
    assert_eq!(told["payload"]["call"]["tool"], "spawn_missions");
    assert_eq!(told["payload"]["call"]["result"]["children"].as_array().unwrap().len(), 3);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the first step is played back, not asked again");
    let last = seen[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "tool");
    assert!(last["content"].as_str().unwrap().contains("deploy it"), "{last}");

    // The tree, both ways.
    let ids: Vec<String> =
        children.iter().map(|c| c["mission_id"].as_str().unwrap().to_owned()).collect();
    wait_until("the tree to show every child completed", WAIT, || async {
        let view = mission(addr, &id).await;
        let nodes = view["children"].as_array().cloned().unwrap_or_default();
        nodes.len() == 3 && nodes.iter().all(|node| node["status"] == "completed")
    })
    .await;
    for child in &ids {
        let view = mission(addr, child).await;
        assert_eq!(view["parent_id"], json!(id), "{view}");
    }
    // The tree's links equal a build from the log.
    let (code, report) = crate::events_verify::verify(&env, &["--only", "mission_tree"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["checks"][0]["checked"], 3, "{report:#}");
    // Rebuilt beside the live tree at its position, from its links alone: the same links,
    // and the parent's view still shows its children.
    let rebuilt = crate::events_verify::brain(&env, &["projections", "rebuild", "mission_tree"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{rebuilt:?}");
    let (code, report) = crate::events_verify::verify(&env, &["--only", "mission_tree"]).await;
    assert_eq!((code, &report["checks"][0]["checked"]), (0, &json!(3)), "{report:#}");
    assert_eq!(mission(addr, &id).await["children"].as_array().unwrap().len(), 3);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn cancelling_a_waiting_parent_cancels_its_children() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    // Nobody serves `ops`: the children wait in the queue.
    let script = vec![spawn(&[("ops", "first"), ("ops", "second")])];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let _worker = one_slot_worker(&env, "supervisor", "ops");

    let body =
        json!({ "name": "split", "agent": "supervisor", "payload": { "prompt": "split it" } });
    let id = enqueue(addr, body).await;
    wait_until("the parent to wait for its children", WAIT, || async {
        mission_status(addr, &id).await == "suspended"
    })
    .await;
    let view = mission(addr, &id).await;
    let waiting: Vec<String> = view["waiting_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(waiting.len(), 2, "{view}");
    assert!(view["worker_id"].is_null(), "a suspended mission holds no worker: {view}");

    let (status, cancelled) =
        post(addr, &format!("/api/missions/{id}/cancel"), r#"{"reason":"changed my mind"}"#).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    for child in &waiting {
        wait_until("the child to be cancelled with its parent", WAIT, || async {
            mission_status(addr, child).await == "cancelled"
        })
        .await;
        let events = history(addr, child).await;
        let last = events.last().unwrap();
        assert_eq!(last["payload"]["by"], "mission_tree");
        assert!(last["payload"]["reason"].as_str().unwrap().contains(&id), "{last}");
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sub_missions_past_the_child_limit_are_refused_to_the_model_with_the_reason() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let many: Vec<(&str, &str)> =
        (0..=domain::mission::CHILDREN_MAX).map(|_| ("coder", "x")).collect();
    let script = vec![
        spawn(&many),
        Scripted::Answer { text: "too many, I give up".into(), tool_calls: vec![], usage: (5, 5) },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let _worker = one_slot_worker(&env, "supervisor,coder=echo", "coder");

    let body = json!({ "name": "flood", "agent": "supervisor", "payload": { "prompt": "go" } });
    let id = enqueue(addr, body).await;
    let done = finished(addr, &id).await;
    assert_eq!(done["result"]["answer"], "too many, I give up", "{done}");
    let events = history(addr, &id).await;
    assert!(!types(&events).contains(&"MissionSuspended"));
    let refused = events.iter().find(|event| event["event_type"] == "MissionToolCalled").unwrap();
    let call = &refused["payload"]["call"];
    assert_eq!(call["refused"], true);
    assert!(call["error"].as_str().unwrap().contains("child limit"), "{call}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn children_that_end_without_a_result_are_reported_and_the_parent_decides() {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    // Nobody serves `ops`: the children wait until they are cancelled one by one.
    let script = vec![
        spawn(&[("ops", "first"), ("ops", "second")]),
        Scripted::Answer {
            text: "both were cancelled: giving up".into(),
            tool_calls: vec![],
            usage: (9, 9),
        },
    ];
    let fake = FakeLlm::start(script, Scripted::text("unexpected"), None).await;
    crate::coder_agent::configure(addr, &fake).await;
    let _worker = one_slot_worker(&env, "supervisor", "ops");

    let body = json!({ "name": "try", "agent": "supervisor", "payload": { "prompt": "try it" } });
    let id = enqueue(addr, body).await;
    wait_until("the parent to wait for its children", WAIT, || async {
        mission_status(addr, &id).await == "suspended"
    })
    .await;
    let children: Vec<String> = mission(addr, &id).await["waiting_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child.as_str().unwrap().to_owned())
        .collect();
    let cancel = |child: String| async move {
        let path = format!("/api/missions/{child}/cancel");
        let (status, body) = post(addr, &path, r#"{"reason":"not needed"}"#).await;
        assert_eq!(status, 200, "{body}");
    };
    cancel(children[0].clone()).await;
    wait_until("the first end to be reported", WAIT, || async {
        mission(addr, &id).await["waiting_for"].as_array().is_some_and(|left| left.len() == 1)
    })
    .await;
    assert_eq!(mission_status(addr, &id).await, "suspended", "one child still runs");
    cancel(children[1].clone()).await;

    let done = finished(addr, &id).await;
    assert_eq!(done["result"]["answer"], "both were cancelled: giving up", "{done}");
    let reported = done["result"]["children"].as_array().unwrap();
    assert!(
        reported
            .iter()
            .all(|child| child["status"] == "cancelled" && child["error"] == "not needed"),
        "{done}"
    );
    // The model was told, and decided.
    let told = fake.seen()[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(told["content"].as_str().unwrap().contains("cancelled"), "{told}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
