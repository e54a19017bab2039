//! The replay comparison ([`Mode::Check`](super::Mode::Check)): how a run played back from
//! its record is held against today's code (its prompt, its tools, its limits). Each function
//! answers one question the loop asks where check mode decides otherwise than live mode, with
//! the [`Divergence`] it finds or how the run ends; none calls or records anything.

use serde_json::{Value, json};

use super::act::past_answer_limit;
use super::{Divergence, Ended, Loop, TOOL_CALLS_PER_STEP_MAX};
use crate::agents::record::Record;
use crate::agents::tools::ToolError;
use crate::agents::tools::delegate;
use crate::llm::calls::recorded_request;
use crate::llm::{Message, ToolCall};
use crate::secrets::Redactor;
use domain::mission::ToolCallRecord;

/// Whether today's request for step `step` (`messages`, as a record keeps them: redacted by
/// `redactor`, then bounded) is the one the record shows was sent; where they first differ,
/// if not.
pub(super) fn request(
    step: u32,
    recorded: &Value,
    messages: &[Message],
    redactor: &Redactor,
) -> Option<Divergence> {
    let now = recorded_request(redactor, messages);
    (now != *recorded).then(|| request_divergence(step, recorded, &now))
}

/// Where two requests first differ, message by message.
fn request_divergence(step: u32, recorded: &Value, now: &Value) -> Divergence {
    let (old, new) = (recorded.as_array(), now.as_array());
    if let (Some(old), Some(new)) = (old, new) {
        let at = (0..old.len().max(new.len())).find(|&n| old.get(n) != new.get(n)).unwrap_or(0);
        let role = new.get(at).or(old.get(at)).and_then(|message| message["role"].as_str());
        return Divergence {
            step,
            what: format!("the request to the model, at message {at} ({})", role.unwrap_or("?")),
            recorded: old.get(at).cloned().unwrap_or(Value::Null),
            now: new.get(at).cloned().unwrap_or(Value::Null),
        };
    }
    let what = "the request to the model".to_owned();
    Divergence { step, what, recorded: recorded.clone(), now: now.clone() }
}

/// A recorded step whose answer cannot be read back: nothing can be compared from there.
pub(super) fn unreadable(step: u32, why: &str) -> Divergence {
    Divergence {
        step,
        what: "the record cannot be played back".into(),
        recorded: json!(why),
        now: Value::Null,
    }
}

/// How the run ends when today's code asks the model once more than the record holds.
pub(super) fn past_record(step: u32, record: &Record, messages: &[Message]) -> Ended {
    // The recorded attempt ended here without an answer (a timeout, a cancel, a lease lost):
    // the code decided the same up to where it ran.
    if record.result.is_none() {
        return Ended::Answered(Value::Null);
    }
    Ended::Diverged(Divergence {
        step,
        what: "a model call the recorded run did not make".into(),
        recorded: Value::Null,
        now: messages.last().map(|message| json!(message)).unwrap_or_default(),
    })
}

/// Whether today's code refuses a tool call the record shows was run (`refusal_now` says why
/// it would be refused now, if it would).
pub(super) fn tool(
    step: u32,
    call: &ToolCall,
    recorded: &ToolCallRecord,
    refusal_now: impl FnOnce() -> Option<ToolError>,
) -> Option<Divergence> {
    if recorded.refused {
        return None;
    }
    let refusal = refusal_now()?;
    Some(Divergence {
        step,
        what: format!("tool call {} ({})", call.name, call.id),
        recorded: json!({ "ran": true, "result": recorded.result, "error": recorded.error }),
        now: json!({ "refused": refusal.to_string() }),
    })
}

/// A tool call today's code makes that the recorded run did not.
pub(super) fn unrecorded_tool(step: u32, call: &ToolCall) -> Divergence {
    Divergence {
        step,
        what: format!("tool call {} ({}) the recorded run did not make", call.name, call.id),
        recorded: Value::Null,
        now: json!(call),
    }
}

/// The recorded run ended waiting for children that had not all ended (it was cancelled
/// while suspended): the code decided the same up to there.
pub(super) fn ended_waiting() -> Ended {
    Ended::Answered(Value::Null)
}

impl Loop {
    /// Why the code now refuses a call the record shows was run, if it does. (A refusal by
    /// the tool's own rules, a path outside the root, needs the tool to run, so only the
    /// checks made before are compared; for an MCP tool whose server this process does not
    /// hold, none.)
    pub(super) fn refusal_now(&self, n: usize, call: &ToolCall) -> Option<ToolError> {
        if n >= TOOL_CALLS_PER_STEP_MAX {
            return Some(past_answer_limit());
        }
        match &self.spawn {
            Some(spawn) if call.name == delegate::NAME => {
                spawn.requests(&call.arguments, 0, 0).err()
            }
            // An MCP tool is only known while its server is connected: a replay without
            // the server can compare no more than that the call was made.
            _ if !self.tools.contains(&call.name)
                && crate::agents::tools::mcp::server_of(&call.name).is_some() =>
            {
                None
            }
            _ => self.tools.check(&call.name, &call.arguments).err(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;
    use crate::llm::calls::bounded;

    fn conversation(system: &str) -> Vec<Message> {
        vec![Message::new(Role::System, system), Message::new(Role::User, "list the files")]
    }

    fn ran(result: Value) -> ToolCallRecord {
        ToolCallRecord {
            step: 1,
            call_id: "c1".into(),
            tool: "list_dir".into(),
            arguments: json!({}),
            result,
            error: None,
            refused: false,
            duration_ms: 3,
            replayed: false,
        }
    }

    fn list_dir() -> ToolCall {
        ToolCall { id: "c1".into(), name: "list_dir".into(), arguments: json!({}) }
    }

    #[test]
    fn the_same_request_passes_and_a_changed_prompt_diverges_at_the_system_message() {
        // Given the request a recorded step sent.
        let recorded = bounded(json!(conversation("You are the coder.")));

        // When today's code sends the same, then nothing differs.
        assert_eq!(
            request(1, &recorded, &conversation("You are the coder."), &Redactor::default()),
            None
        );

        // When today's prompt differs, then the first differing message is named, both sides.
        let divergence =
            request(1, &recorded, &conversation("You are terse."), &Redactor::default()).unwrap();
        assert_eq!(divergence.what, "the request to the model, at message 0 (system)");
        assert_eq!(divergence.recorded["content"], "You are the coder.");
        assert_eq!(divergence.now["content"], "You are terse.");
    }

    #[test]
    fn a_request_holding_a_secret_is_compared_as_its_record_keeps_it() {
        // Given a recorded request whose prompt held a secret, recorded redacted.
        let redactor = Redactor::new(["sk-live-0123456789"]);
        let today = conversation("You are the coder. The key is sk-live-0123456789.");
        let recorded = recorded_request(&redactor, &today);
        assert!(!recorded.to_string().contains("sk-live"), "{recorded}");

        // When today's identical request is checked, then it matches.
        assert_eq!(request(1, &recorded, &today, &redactor), None);
    }

    #[test]
    fn a_request_longer_than_the_record_diverges_where_the_record_stops() {
        // Given a recorded request of two messages, when today's has a third.
        let recorded = bounded(json!(conversation("p")));
        let mut now = conversation("p");
        now.push(Message::new(Role::Assistant, "extra"));

        // Then the divergence is at message 2, which the record lacks.
        let divergence = request(3, &recorded, &now, &Redactor::default()).unwrap();
        assert_eq!(divergence.step, 3);
        assert_eq!(divergence.what, "the request to the model, at message 2 (assistant)");
        assert_eq!(divergence.recorded, Value::Null);
    }

    #[test]
    fn one_more_model_call_matches_a_run_that_ended_unanswered_and_diverges_from_a_completed_one() {
        // Given a recorded attempt that ended without a result (a timeout), and one completed.
        let unanswered = Record::default();
        let completed = Record { result: Some(json!({ "answer": "done" })), ..Record::default() };

        // When today's code asks the model past the record's last step.
        let messages = conversation("p");

        // Then the first decided the same up to where it ran; the second diverged.
        assert_eq!(past_record(2, &unanswered, &messages), Ended::Answered(Value::Null));
        let Ended::Diverged(divergence) = past_record(2, &completed, &messages) else {
            panic!("a completed run with a model call more must diverge");
        };
        assert_eq!(divergence.what, "a model call the recorded run did not make");
        assert_eq!(divergence.now["content"], "list the files");
    }

    #[test]
    fn a_tool_call_refused_today_that_ran_then_diverges_and_one_refused_then_is_not_asked() {
        // Given a tool call the record shows ran, and one it shows was refused.
        let refusal = || Some(ToolError::Refused("no tool named \"list_dir\"".into()));
        let refused_then = ToolCallRecord { refused: true, ..ran(Value::Null) };

        // When today's code refuses both, then only the one that ran diverges.
        let divergence = tool(1, &list_dir(), &ran(json!(["a.rs"])), refusal).unwrap();
        assert_eq!(divergence.what, "tool call list_dir (c1)");
        assert_eq!(divergence.recorded["result"], json!(["a.rs"]));
        assert!(divergence.now["refused"].as_str().unwrap().contains("no tool named"));
        let not_asked = || -> Option<ToolError> { panic!("a refused call is not checked again") };
        assert_eq!(tool(1, &list_dir(), &refused_then, not_asked), None);

        // And a call today's code allows passes.
        assert_eq!(tool(1, &list_dir(), &ran(json!([])), || None), None);
    }
}
