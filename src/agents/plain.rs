//! `plain`: sends the mission's task to the LLM gateway and completes with the answer and its
//! usage. The task is `payload.prompt`, else the mission's description, else its name; the
//! route is `payload.route`, else the default one. It serves the `coder` kind until the coder
//! agent gets its tools; with no LLM configured, the gateway's route is `offline`, so a first
//! mission completes out of the box.
//!
//! The call goes through [`Calls`], so the mission's budget and the daily ones apply, and the
//! call is recorded in the mission's history before the attempt reports.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;

use crate::llm::calls::{Ask, CallError, Caller, Calls, ForMission};
use crate::llm::gateway::Answered;
use crate::llm::tokens::Publisher;
use crate::llm::{Message, Reason, Role};
use crate::missions::agent::{Agent, Failure, Outcome, Task};

pub struct Plain {
    pub calls: Calls,
    /// Where the answer streams as it is generated.
    pub tokens: Option<(async_nats::Client, crate::config::Namespace)>,
}

/// What the agent asks the model.
pub fn task_text(task: &Task) -> String {
    match task.payload.get("prompt").and_then(|prompt| prompt.as_str()) {
        Some(prompt) if !prompt.trim().is_empty() => prompt.to_owned(),
        _ if !task.description.trim().is_empty() => task.description.clone(),
        _ => task.name.clone(),
    }
}

/// Whom a task's LLM calls are for: its mission, attempt and holder (which fence the record),
/// its budget and the mission whose budget it is.
pub fn for_mission(task: &Task) -> ForMission {
    ForMission {
        mission_id: task.mission_id.clone(),
        kind: task.agent.clone(),
        attempt: task.attempt,
        worker_id: task.worker_id.clone(),
        budget: task.budget,
        budget_scope: task.budget_scope.clone(),
    }
}

/// The route a task's calls take: `payload.route`, else the default one.
pub fn route_of(task: &Task) -> Option<String> {
    task.payload.get("route").and_then(|route| route.as_str()).map(str::to_owned)
}

/// Where a task's answers stream as they are generated, when the process streams them.
pub fn publisher(
    tokens: Option<(async_nats::Client, crate::config::Namespace)>,
    task: &Task,
) -> Option<Publisher> {
    tokens.map(|(nats, namespace)| {
        let subject = crate::llm::tokens::subject(&namespace, &task.mission_id);
        Publisher::start(nats, subject, &task.mission_id, task.attempt)
    })
}

/// One call through the gateway, its text streamed to `publisher` when there is one.
pub async fn chat(
    calls: &Calls,
    caller: &Caller,
    ask: &Ask,
    publisher: Option<&mut Publisher>,
) -> Result<Answered, CallError> {
    match publisher {
        None => calls.chat(caller, ask, None).await,
        Some(publisher) => {
            let mut sink = |piece: &str| publisher.piece(piece);
            calls.chat(caller, ask, Some(&mut sink)).await
        }
    }
}

impl Agent for Plain {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let (calls, tokens) = (self.calls.clone(), self.tokens.clone());
        async move {
            let caller = Caller::Mission(for_mission(&task));
            let ask = Ask {
                route: route_of(&task),
                messages: vec![Message::new(Role::User, task_text(&task))],
                ..Ask::default()
            };
            let mut publisher = publisher(tokens, &task);
            let outcome = chat(&calls, &caller, &ask, publisher.as_mut()).await;
            if let Some(publisher) = publisher {
                publisher.finish().await;
            }
            let answered = outcome.map_err(failure)?;
            Ok(json!({
                "answer": answered.answer.content,
                "provider": answered.provider.as_str(),
                "model": answered.answer.model,
                "usage": answered.answer.usage,
                "cost_usd": answered.cost_usd,
            }))
        }
        .map(|ran| ran.map(Outcome::from))
        .boxed()
    }
}

/// An attempt's failure for a call that gave no answer.
pub fn failure(error: CallError) -> Failure {
    match error {
        CallError::Llm(failed) => {
            let message = format!("LLM call failed: {}", failed.error);
            // A budget spent stays spent: another attempt would be refused the same.
            let spent = failed.error.reason == Reason::BudgetExceeded && !failed.error.server_error;
            if failed.error.retryable() && !spent {
                Failure::retryable(message)
            } else {
                Failure::permanent(message)
            }
        }
        CallError::Route(reason) | CallError::NotAllowed(reason) => {
            Failure::permanent(format!("LLM call failed: {reason}"))
        }
        error @ (CallError::Record(_) | CallError::Config(_)) => {
            Failure::retryable(error.to_string())
        }
    }
}
