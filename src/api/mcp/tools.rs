//! The tools BRAiN offers over MCP, each the MCP face of an HTTP route: the same function
//! runs, under the same permission, with the same rules for its input, and a refusal is
//! the route's error body. Arguments are read like a route's JSON body (an unknown field,
//! a wrong type or a NUL character is refused naming where it is), so the schemas here only
//! describe; the checks are the API's own.

use std::sync::Arc;

use domain::api_key::Permission;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::server::Call;
use crate::api::auth::{self, Access};
use crate::api::error::{ApiError, ErrorCode, refused};
use crate::api::extract::{check_no_nul, parse_id};
use crate::api::missions::{self, EnqueueRequest, MissionListQuery, Reasoned};
use crate::api::{AppState, agents, chat};

pub(super) use super::resources::{history_template, list_histories, read_history};

/// One of the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tool {
    EnqueueMission,
    GetMission,
    ListMissions,
    CancelMission,
    WaitForMission,
    ListAgents,
    Chat,
}

impl Tool {
    pub(super) const ALL: [Tool; 7] = [
        Tool::EnqueueMission,
        Tool::GetMission,
        Tool::ListMissions,
        Tool::CancelMission,
        Tool::WaitForMission,
        Tool::ListAgents,
        Tool::Chat,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::EnqueueMission => "enqueue_mission",
            Tool::GetMission => "get_mission",
            Tool::ListMissions => "list_missions",
            Tool::CancelMission => "cancel_mission",
            Tool::WaitForMission => "wait_for_mission",
            Tool::ListAgents => "list_agents",
            Tool::Chat => "chat",
        }
    }

    pub(super) fn named(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// The permission of the route it is the face of.
    fn access(self) -> Access {
        match self {
            Tool::EnqueueMission | Tool::CancelMission => Access::needs(Permission::MissionsWrite),
            Tool::GetMission | Tool::ListMissions | Tool::WaitForMission => {
                Access::needs(Permission::MissionsRead)
            }
            Tool::ListAgents => Access::needs(Permission::AgentsRead),
            Tool::Chat => Access::needs(Permission::LlmCall),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Tool::EnqueueMission => {
                "Enqueue a mission for an agent (POST /api/missions/enqueue; needs \
                 missions.write). Returns the mission, with its mission_id."
            }
            Tool::GetMission => {
                "A mission's status, result and every attempt's error (GET \
                 /api/missions/{mission_id}; needs missions.read)."
            }
            Tool::ListMissions => {
                "Find missions by text, error, kind, status, priority and time, newest first, \
                 a page at a time (GET /api/missions; needs missions.read)."
            }
            Tool::CancelMission => {
                "Cancel a mission that has not finished, recording why (POST \
                 /api/missions/{mission_id}/cancel; needs missions.write)."
            }
            Tool::WaitForMission => {
                "Wait until a mission finishes (completed, failed or cancelled) or the wait \
                 ends, whichever is first; sends progress notifications when given a progress \
                 token. Returns finished: true with the mission, or finished: false with the \
                 mission as it still runs (needs missions.read)."
            }
            Tool::ListAgents => {
                "Registered agents by kind and state, a page at a time (GET /api/agents; needs \
                 agents.read)."
            }
            Tool::Chat => {
                "One turn of a conversation with an agent (coder, ops, architect, supervisor): \
                 its answer, and the conversation_id to continue it (POST /api/agents/chat; \
                 needs llm.call)."
            }
        }
    }

    fn schema(self) -> Value {
        let uuid = |what: &str| json!({"type": "string", "format": "uuid", "description": what});
        let (properties, required) = match self {
            Tool::EnqueueMission => (
                json!({
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": {"type": "string", "maxLength": 4000},
                    "priority": {"type": "string", "enum": ["low", "normal", "high", "critical"]},
                    "payload": {"type": "object", "description": "Handed to the agent (at most 256 KiB as JSON); an echo agent returns it"},
                    "agent": {"type": "string", "description": "Agent kind; the server's default when absent"},
                    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                    "timeout_s": {"type": "integer", "minimum": 1, "maximum": missions::TIMEOUT_S_MAX},
                    "not_before": {"type": "string", "format": "date-time"},
                    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": missions::IDEMPOTENCY_KEY_LEN_MAX, "description": "The same key always names the same mission"},
                    "budget": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "tokens_max": {"type": "integer", "minimum": 1},
                            "cost_usd_max": {"type": "number", "exclusiveMinimum": 0}
                        }
                    }
                }),
                vec!["name"],
            ),
            Tool::GetMission => {
                (json!({"mission_id": uuid("The mission's id")}), vec!["mission_id"])
            }
            Tool::ListMissions => (
                json!({
                    "q": {"type": "string", "description": "A phrase in the name or description (3 to 200 characters), or the start of the mission id"},
                    "error": {"type": "string", "description": "A phrase in the last error (3 to 200 characters)"},
                    "kind": {"type": "string", "description": "Agent kind"},
                    "status": {"type": "string", "description": "A status, or several separated by commas: pending, queued, running, suspended, completed, failed, cancelled"},
                    "priority": {"type": "string", "enum": ["low", "normal", "high", "critical"]},
                    "since": {"type": "string", "format": "date-time"},
                    "until": {"type": "string", "format": "date-time"},
                    "min_attempts": {"type": "integer", "minimum": 0, "maximum": 100},
                    "sort": {"type": "string", "enum": ["enqueued", "updated", "duration"]},
                    "order": {"type": "string", "enum": ["desc", "asc"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": missions::LIST_LIMIT_MAX, "description": "50 when absent"},
                    "cursor": {"type": "string", "description": "next_cursor of the previous page"}
                }),
                vec![],
            ),
            Tool::CancelMission => (
                json!({
                    "mission_id": uuid("The mission's id"),
                    "reason": {"type": "string", "maxLength": missions::REASON_LEN_MAX}
                }),
                vec!["mission_id"],
            ),
            Tool::WaitForMission => (
                json!({
                    "mission_id": uuid("The mission's id"),
                    "timeout_s": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": super::wait::WAIT_TIMEOUT_S_MAX,
                        "description": format!("Longest wait in seconds; {} when absent", super::wait::WAIT_TIMEOUT_S_DEFAULT)
                    }
                }),
                vec!["mission_id"],
            ),
            Tool::ListAgents => (
                json!({
                    "kind": {"type": "string"},
                    "state": {"type": "string", "enum": ["active", "unresponsive", "stopped", "failed", "deregistered"]},
                    "after": {"type": "string", "description": "next_after of the previous page"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 500, "description": "100 when absent"}
                }),
                vec![],
            ),
            Tool::Chat => (
                json!({
                    "agent": {"type": "string", "enum": ["coder", "ops", "architect", "supervisor"]},
                    "message": {"type": "string", "minLength": 1, "maxLength": 32000},
                    "conversation_id": uuid("Continue this conversation; a new one when absent")
                }),
                vec!["agent", "message"],
            ),
        };
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false
        })
    }

    /// Runs the tool for `call` with `arguments`: its answer, or the refusal of its route.
    pub(super) async fn run(
        self,
        app: &AppState,
        call: Call,
        arguments: Option<JsonObject>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ApiError> {
        auth::check_access(self.access(), &call.principal)?;
        let arguments = Value::Object(arguments.unwrap_or_default());
        let answer = match self {
            Tool::EnqueueMission => {
                let request: EnqueueRequest = parse(&arguments)?;
                let (_, view) = missions::enqueue_one(app, call.metadata, request).await?;
                json!(view)
            }
            Tool::GetMission => {
                let MissionArgs { mission_id } = parse(&arguments)?;
                let mission_id = parse_id("mission_id", &mission_id)?;
                json!(missions::load_view(app, &mission_id).await?)
            }
            Tool::ListMissions => {
                let query: MissionListQuery = parse(&with_text_number(arguments, "min_attempts"))?;
                json!(missions::mission_page(app, query).await?)
            }
            Tool::CancelMission => {
                let CancelArgs { mission_id, reason } = parse(&arguments)?;
                let mission_id = parse_id("mission_id", &mission_id)?;
                let (metadata, kind) = (call.metadata, Reasoned::Cancel);
                json!(missions::reasoned_command(app, &mission_id, metadata, &reason, kind).await?)
            }
            Tool::WaitForMission => {
                let args: super::wait::WaitArgs = parse(&arguments)?;
                super::wait::wait(app, args, context).await?
            }
            Tool::ListAgents => {
                let query: agents::ListQuery = parse(&arguments)?;
                json!(agents::agent_page(app, query).await?)
            }
            Tool::Chat => {
                let request: chat::ChatRequest = parse(&arguments)?;
                if request.stream {
                    let message = "over MCP the answer comes whole; leave stream out".to_owned();
                    return Err(refused(ErrorCode::InvalidField, Some("stream"), message));
                }
                json!(chat::chat_answer(app, &call.principal, call.metadata, request).await?)
            }
        };
        Ok(CallToolResult::structured(answer))
    }
}

/// Every tool, as `tools/list` shows it.
pub(super) fn list() -> Vec<rmcp::model::Tool> {
    Tool::ALL
        .into_iter()
        .map(|tool| {
            let Value::Object(schema) = tool.schema() else {
                unreachable!("a schema is an object")
            };
            rmcp::model::Tool::new(tool.name(), tool.description(), Arc::new(schema))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionArgs {
    mission_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelArgs {
    mission_id: String,
    #[serde(default)]
    reason: String,
}

/// A tool's arguments read as its route reads a JSON body: the same rejection (which names
/// the field at fault), and no NUL character anywhere.
pub(super) fn parse<T: DeserializeOwned>(arguments: &Value) -> Result<T, ApiError> {
    let bytes = serde_json::to_vec(arguments).map_err(|error| ApiError::Internal(error.into()))?;
    check_no_nul(&bytes)?;
    let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
    Ok(value)
}

/// The list route reads `min_attempts` from a query string, as text; a tool's caller sends
/// a number.
fn with_text_number(mut arguments: Value, field: &str) -> Value {
    if let Some(number @ Value::Number(_)) = arguments.get_mut(field) {
        *number = Value::String(number.to_string());
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property a schema describes is one its arguments' type reads (a schema naming
    /// a field the type refuses would send clients astray).
    #[test]
    fn every_described_property_is_read() {
        let sample = |schema: &Value| match schema["type"].as_str() {
            Some("string") => json!("x"),
            Some("integer") => json!(1),
            Some("number") => json!(1.0),
            Some("object") => json!({}),
            _ => Value::Null,
        };
        for tool in Tool::ALL {
            let schema = tool.schema();
            for (name, property) in schema["properties"].as_object().unwrap() {
                let arguments = json!({ name: sample(property) });
                let refusal = match tool {
                    Tool::EnqueueMission => parse::<EnqueueRequest>(&arguments).err(),
                    Tool::GetMission => parse::<MissionArgs>(&arguments).err(),
                    Tool::ListMissions => {
                        parse::<MissionListQuery>(&with_text_number(arguments, "min_attempts"))
                            .err()
                    }
                    Tool::CancelMission => parse::<CancelArgs>(&arguments).err(),
                    Tool::WaitForMission => parse::<super::super::wait::WaitArgs>(&arguments).err(),
                    Tool::ListAgents => parse::<agents::ListQuery>(&arguments).err(),
                    Tool::Chat => parse::<chat::ChatRequest>(&arguments).err(),
                };
                if let Some(refusal) = refusal {
                    let message = refusal.to_string();
                    assert!(
                        !message.contains("unknown field"),
                        "{}.{name}: {message}",
                        tool.name()
                    );
                    assert!(!message.contains("invalid type"), "{}.{name}: {message}", tool.name());
                }
            }
        }
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        let refusal = parse::<MissionArgs>(&json!({"mission_id": "x", "force": true})).unwrap_err();
        assert!(refusal.to_string().contains("force"), "{refusal}");
        let refusal = parse::<MissionArgs>(&json!({"mission_id": "a\u{0}b"})).unwrap_err();
        assert!(matches!(refusal, ApiError::Unstorable { ref field } if field == "mission_id"));
    }
}
