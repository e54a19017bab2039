//! `plain`: sends the mission's task to the LLM gateway's default route and completes with the
//! answer and its usage. The task is `payload.prompt`, else the mission's description, else its
//! name. It serves the `coder` kind until the coder agent gets its tools; with no LLM
//! configured, the gateway's route is `offline`, so a first mission completes out of the box.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;

use crate::eventlog::store::EventStore;
use crate::llm::gateway::{Gateway, Route};
use crate::llm::{Message, Role};
use crate::missions::agent::{Agent, Failure, Task};

pub struct Plain {
    pub gateway: Gateway,
    /// Where the runtime configuration is read, at every call; without it (an agent not
    /// hosted by a worker), the environment's route.
    pub store: Option<EventStore>,
}

impl Plain {
    /// Keys from the environment; the route from `store`'s configuration at each call.
    pub fn new(store: Option<EventStore>) -> Plain {
        Plain { gateway: Gateway::from_env(), store }
    }
}

/// The route a call takes now.
async fn route(store: Option<&EventStore>) -> Result<Route, Failure> {
    let Some(store) = store else {
        return Ok(Route::from_env().unwrap_or_else(|_| Route::from_env_offline()));
    };
    match crate::llm::config::current_route(store).await {
        Ok(Some(route)) => Ok(route),
        Ok(None) => Err(Failure::permanent(
            "LLM call failed: provider_unreachable: the LLM gateway is switched off (enabled: false)",
        )),
        Err(error) => {
            Err(Failure::retryable(format!("cannot read the LLM configuration: {error}")))
        }
    }
}

/// What the agent asks the model.
pub fn task_text(task: &Task) -> String {
    match task.payload.get("prompt").and_then(|prompt| prompt.as_str()) {
        Some(prompt) if !prompt.trim().is_empty() => prompt.to_owned(),
        _ if !task.description.trim().is_empty() => task.description.clone(),
        _ => task.name.clone(),
    }
}

impl Agent for Plain {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<serde_json::Value, Failure>> {
        let (gateway, store) = (self.gateway.clone(), self.store.clone());
        async move {
            let route = route(store.as_ref()).await?;
            let messages = vec![Message::new(Role::User, task_text(&task))];
            match gateway.chat(&route, &messages, &[], None).await {
                Ok(answered) => Ok(json!({
                    "answer": answered.answer.content,
                    "provider": answered.provider.as_str(),
                    "model": answered.answer.model,
                    "usage": answered.answer.usage,
                })),
                Err(failed) => {
                    let message = format!("LLM call failed: {}", failed.error);
                    Err(if failed.error.retryable() {
                        Failure::retryable(message)
                    } else {
                        Failure::permanent(message)
                    })
                }
            }
        }
        .boxed()
    }
}
