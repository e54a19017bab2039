//! The loop over a hand-made record, with no service: a played-back run needs neither the
//! model nor the event store, so what the loop decides from a record can be checked alone.

use domain::mission::{LlmCall, ToolCallRecord};
use serde_json::{Value, json};

use super::{Ended, Loop, Mode, STEPS_MAX_DEFAULT};
use crate::agents::record::{Record, RecordedAnswer};
use crate::agents::tools::Registry;
use crate::llm::calls::{Calls, bounded};
use crate::llm::gateway::Gateway;
use crate::llm::{ChatAnswer, Message, Role, ToolCall, Usage};
use crate::missions::agent::Task;

/// An answer of the model with these tool calls.
pub(super) fn answer(content: &str, tool_calls: &[ToolCall]) -> ChatAnswer {
    ChatAnswer {
        content: content.into(),
        tool_calls: tool_calls.to_vec(),
        usage: Usage::reported(7, 3),
        finish_reason: "stop".into(),
        model: "recorded-model".into(),
    }
}

/// A model call the record keeps, sent `messages`.
pub(super) fn llm_call(messages: &[Message]) -> LlmCall {
    LlmCall {
        route: "default".into(),
        kind: "coder".into(),
        provider: "recorded-provider".into(),
        model: "recorded-model".into(),
        tries: 1,
        request: bounded(json!(messages)),
        response: Value::Null,
        input_tokens: 7,
        output_tokens: 3,
        cost_usd: 0.25,
        latency_ms: 10,
        outcome: "ok".into(),
        replayed: false,
        usage_estimate: None,
    }
}

/// A recorded step: `messages` sent, `answer` given.
pub(super) fn recorded(messages: &[Message], answer: ChatAnswer) -> RecordedAnswer {
    RecordedAnswer { call: llm_call(messages), answer: Ok(answer) }
}

/// A thinking agent with no tool, which nothing but a record can answer here.
fn agent(system_prompt: &str) -> Loop {
    Loop {
        calls: {
            let settings = crate::config::llm::LlmSettings::default();
            Calls::new(&settings, Gateway::configured(&settings), None)
        },
        system_prompt: system_prompt.into(),
        tools: Registry::default(),
        spawn: None,
        steps_max: STEPS_MAX_DEFAULT,
        tokens: None,
        mcp: None,
    }
}

fn task() -> Task {
    Task {
        mission_id: "m1".into(),
        name: "look".into(),
        description: String::new(),
        agent: "coder".into(),
        payload: json!({ "prompt": "list the files" }),
        attempt: 1,
        worker_id: "w1".into(),
        budget: None,
        budget_scope: "m1".into(),
        playback: true,
        children_spawned: 0,
        depth: 0,
    }
}

/// The record of a completed two-step run under `system_prompt`: the model asked for
/// `list_dir`, which was refused (the agent had no such tool), then answered.
fn two_steps(system_prompt: &str) -> Record {
    let call = ToolCall { id: "c1".into(), name: "list_dir".into(), arguments: json!({}) };
    let error = "no tool named \"list_dir\" (tools: )";
    let mut messages =
        vec![Message::new(Role::System, system_prompt), Message::new(Role::User, "list the files")];
    let first = recorded(&messages, answer("", std::slice::from_ref(&call)));
    messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![call.clone()],
        tool_call_id: None,
    });
    messages.push(Message {
        role: Role::Tool,
        content: json!({ "error": error }).to_string(),
        tool_calls: Vec::new(),
        tool_call_id: Some("c1".into()),
    });
    let refused = ToolCallRecord {
        step: 1,
        call_id: "c1".into(),
        tool: "list_dir".into(),
        arguments: json!({}),
        result: Value::Null,
        error: Some(error.into()),
        refused: true,
        duration_ms: 0,
        replayed: false,
    };
    Record {
        answers: vec![first, recorded(&messages, answer("there are none", &[]))],
        tools: [((1, "c1".to_owned()), refused)].into(),
        result: Some(json!({ "answer": "there are none" })),
        ..Record::default()
    }
}

#[tokio::test]
async fn checking_a_run_against_the_code_that_made_it_finds_it_identical() {
    // Given the record of a run, and the agent with the prompt it ran under.
    let record = two_steps("You are the coder.");

    // When the run is checked against it.
    let ended = agent("You are the coder.").check(&task(), &record).await.unwrap();

    // Then it ends as recorded, its steps and tool call counted from the record.
    let Ended::Answered(result) = ended else { panic!("expected an answer, got {ended:?}") };
    assert_eq!(result["answer"], "there are none");
    assert_eq!((result["steps"].clone(), result["tool_calls"].clone()), (json!(2), json!(1)));
    assert_eq!(result["provider"], "recorded-provider");
}

#[tokio::test]
async fn checking_a_run_after_a_prompt_change_diverges_at_its_first_request() {
    // Given the record of a run, and the agent with another prompt.
    let record = two_steps("You are the coder.");

    // When the run is checked against it.
    let ended = agent("You are terse.").check(&task(), &record).await.unwrap();

    // Then it diverges at step 1, at the system message.
    let Ended::Diverged(divergence) = ended else { panic!("expected a divergence: {ended:?}") };
    assert_eq!(divergence.step, 1);
    assert_eq!(divergence.what, "the request to the model, at message 0 (system)");
}

#[tokio::test]
async fn a_live_run_plays_its_recorded_steps_back_without_asking_the_model() {
    // Given the record of a run's steps so far (a resumed attempt).
    let record = two_steps("You are the coder.");

    // When the agent runs live from it.
    let ended = agent("You are the coder.").drive(&task(), &record, Mode::Live).await.unwrap();

    // Then every answer came from the record (the model would have named another provider),
    // and the spending of the mission's own steps is counted.
    let Ended::Answered(result) = ended else { panic!("expected an answer, got {ended:?}") };
    assert_eq!(result["provider"], "recorded-provider");
    assert_eq!(result["model"], "recorded-model");
    assert_eq!(result["cost_usd"], 0.5);
    assert_eq!(result["usage"], json!({ "input_tokens": 14, "output_tokens": 6 }));
}

#[tokio::test]
async fn a_live_run_cannot_go_on_from_a_step_whose_answer_was_not_recorded_whole() {
    // Given a record whose first answer was cut to the record's bound.
    let mut record = two_steps("You are the coder.");
    record.answers[0].answer = Err("the answer was cut to the record's bound".into());

    // When the agent runs live from it, then the attempt fails for good, saying why.
    let failure =
        agent("You are the coder.").drive(&task(), &record, Mode::Live).await.unwrap_err();
    assert!(!failure.retryable);
    assert_eq!(
        failure.message,
        "cannot go on from the record at step 1: the answer was cut to the record's bound"
    );
}
