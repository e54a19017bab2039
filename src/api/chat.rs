//! Chat with an agent: `POST /api/agents/chat` answers (or streams the answer as server-sent
//! events), and every turn is an event of the conversation's stream (`conversation/<id>`), so
//! a conversation continues across processes and restarts; `GET /api/conversations/{id}`
//! reads it back, and `GET /api/conversations` lists them from the `conversation_list` read
//! model. The agent is a thinking agent's kind (`coder`, `ops`, `architect`): its
//! system prompt leads the conversation, whose turns go to the LLM gateway as the messages.
//! The call is the gateway's like any other (daily budgets, limits, its `LlmCalled` record).

use crate::api::auth::{Access, Authed};
use domain::api_key::Permission;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use domain::StreamId;
use domain::conversation::{Conversation, ConversationCommand, ConversationError, Speaker, Turn};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::IntoParams;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::as_of::{AsOfQuery, AsOfView};
use super::error::{ErrorCode, Refusal, append_refusal, errors, refused};
use super::extract::{ApiQuery, ConversationId, Metadata, page_limit, parse_id};
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::agents::conversations::{self, ConversationRow};
use crate::eventlog::command::{self, CommandError};
use crate::llm::calls::{Ask, Caller};
use crate::llm::gateway::Answered;
use crate::llm::{Message, Role};

/// Pieces of a streamed answer held for a slow client; beyond, pieces are dropped (the whole
/// answer is in the `done` event and the conversation).
pub const STREAM_BUFFER_PIECES: usize = 4_096;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::LlmCall), routes!(chat))
        .routes(Access::needs(Permission::LlmRead), routes!(get_conversation))
        .routes(Access::needs(Permission::LlmRead), routes!(list_conversations))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// `coder`, `ops` or `architect`.
    pub agent: String,
    /// 1 to 32,000 characters.
    pub message: String,
    /// Continue this conversation; a new one when absent.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Answer as server-sent events: `token` pieces, then `done` (or `error`).
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatAnswer {
    pub conversation_id: String,
    pub answer: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    pub conversation_id: String,
    pub agent: String,
    pub started_by: String,
    pub messages: Vec<Turn>,
    pub version: u64,
    /// Present when the view is of an earlier moment (`at_position` or `at`): the last event
    /// of the conversation it folds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfView>,
}

fn refusal(error: CommandError<ConversationError>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(ConversationError::Invalid { field, .. }) => {
            ApiError::Refused(Refusal {
                code: ErrorCode::InvalidField,
                field: Some(field.into()),
                message,
            })
        }
        CommandError::Rejected(ConversationError::OtherAgent { .. }) => {
            refused(ErrorCode::OtherAgent, Some("agent"), message)
        }
        CommandError::Rejected(ConversationError::Full) => {
            refused(ErrorCode::ConversationFull, None, message)
        }
        CommandError::Contended(_) => refused(ErrorCode::ConversationContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

fn not_found(id: &StreamId) -> ApiError {
    refused(ErrorCode::ConversationNotFound, None, format!("no conversation {id}"))
}

fn turn(speaker: Speaker, text: String, answered: Option<&Answered>) -> Turn {
    Turn {
        speaker,
        text,
        provider: answered.map(|a| a.provider.as_str().to_owned()),
        model: answered.map(|a| a.answer.model.clone()),
        input_tokens: answered.map_or(0, |a| a.answer.usage.input_tokens),
        output_tokens: answered.map_or(0, |a| a.answer.usage.output_tokens),
        at_ms: crate::clock::now_ms(),
    }
}

async fn add(
    app: &AppState,
    id: &StreamId,
    agent: &str,
    by: &str,
    turn: Turn,
) -> Result<Conversation, ApiError> {
    let mut metadata = domain::EventMetadata::new(by, time::OffsetDateTime::now_utc());
    metadata.command_id = Some(uuid::Uuid::now_v7());
    let executed = command::execute::<Conversation>(&app.store, id, metadata, || {
        ConversationCommand::Add { agent: agent.to_owned(), by: by.to_owned(), turn: turn.clone() }
    })
    .await
    .map_err(refusal)?;
    Ok(executed.state)
}

errors! {
    ChatErrors = COMMAND + JSON_BODY + CALLER + LLM_CALL + [
        InvalidField, ConversationNotFound, OtherAgent, ConversationFull, ConversationContended
    ]
}

/// `POST /api/agents/chat`: one turn of a conversation with an agent, and its answer.
#[utoipa::path(post, path = "/api/agents/chat", tag = "agents",
    params(Metadata),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer, or with `stream: true` server-sent events: `token` `{text}` pieces, then `done` (the answer's fields) or `error` `{code, message}`", body = ChatAnswer),
        ChatErrors,
    ))]
async fn chat(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    if !request.stream {
        return Ok(ApiJson(chat_answer(&app, &principal, metadata, request).await?).into_response());
    }
    let turn = Turning::begin(&app, &principal, metadata, &request).await?;
    let (events, received) = tokio::sync::mpsc::channel::<Event>(STREAM_BUFFER_PIECES);
    tokio::spawn(async move {
        let pieces = events.clone();
        let mut sink = move |piece: &str| {
            let _ = pieces.try_send(
                Event::default().event("token").data(json!({ "text": piece }).to_string()),
            );
        };
        let outcome = turn.calls.chat(&turn.caller, &turn.ask, Some(&mut sink)).await;
        let last = match outcome {
            Ok(answered) => match turn.finish(&app, answered).await {
                Ok(answer) => Event::default().event("done").data(json!(answer).to_string()),
                Err(error) => error_event(error),
            },
            Err(error) => error_event(super::completions::call_failure(error)),
        };
        let _ = events.send(last).await;
    });
    let stream = super::stream::receiver_stream(received);
    let events = Sse::new(futures::StreamExt::map(stream, Ok::<_, Infallible>));
    Ok(events.keep_alive(KeepAlive::default()).into_response())
}

/// One turn of a conversation, whole: the user's turn recorded, the gateway asked, the
/// agent's turn recorded. What `POST /api/agents/chat` without `stream` and the MCP tool
/// `chat` both run.
pub(in crate::api) async fn chat_answer(
    app: &AppState,
    principal: &crate::identity::Principal,
    metadata: domain::EventMetadata,
    request: ChatRequest,
) -> Result<ChatAnswer, ApiError> {
    let turn = Turning::begin(app, principal, metadata, &request).await?;
    // In a task of its own: a client gone does not cut the answer from its record.
    let app = app.clone();
    tokio::spawn(async move {
        let answered = turn
            .calls
            .chat(&turn.caller, &turn.ask, None)
            .await
            .map_err(super::completions::call_failure)?;
        turn.finish(&app, answered).await
    })
    .await
    .map_err(|error| ApiError::Internal(error.into()))?
}

/// A turn under way: the user's turn is recorded and the gateway call is ready to make.
struct Turning {
    id: StreamId,
    agent: String,
    by: String,
    calls: crate::llm::calls::Calls,
    caller: Caller,
    ask: Ask,
}

impl Turning {
    /// Checks the request, records the user's turn and prepares the call.
    async fn begin(
        app: &AppState,
        principal: &crate::identity::Principal,
        metadata: domain::EventMetadata,
        request: &ChatRequest,
    ) -> Result<Turning, ApiError> {
        let by = metadata.actor;
        let Some(prompt) = crate::agents::prompt_of(&app.agents.builtin, &request.agent) else {
            let message =
                format!("{:?} is not one of coder, ops, architect, supervisor", request.agent);
            return Err(refused(ErrorCode::InvalidField, Some("agent"), message));
        };
        let id = match &request.conversation_id {
            Some(raw) => {
                let id = parse_id("conversation_id", raw)?;
                let (known, _) =
                    command::load::<Conversation>(&app.store, &id).await.map_err(refusal)?;
                if known.agent.is_none() {
                    return Err(not_found(&id));
                }
                id
            }
            None => StreamId::from(uuid::Uuid::now_v7()),
        };
        // A turn is recorded without the secrets of this process it may hold (the agent's
        // turn comes redacted from the gateway).
        let message = app.redactor.redact(&request.message).into_owned();
        let conversation =
            add(app, &id, &request.agent, &by, turn(Speaker::User, message, None)).await?;
        let mut messages = vec![Message::new(Role::System, prompt)];
        messages.extend(conversation.turns.iter().map(|turn| {
            let role = if turn.speaker == Speaker::User { Role::User } else { Role::Assistant };
            Message::new(role, turn.text.clone())
        }));
        let ask = Ask { messages, ..Ask::default() };
        let calls = app.llm_calls().await;
        let key = Some(super::completions::key_budget(principal));
        let usage_kind = crate::llm::calls::chat_usage_kind(&request.agent);
        let caller = Caller::Api { by: by.clone(), key, usage_kind };
        Ok(Turning { id, agent: request.agent.clone(), by, calls, caller, ask })
    }

    /// Records the agent's turn; the answer.
    async fn finish(self, app: &AppState, answered: Answered) -> Result<ChatAnswer, ApiError> {
        let text = answered.answer.content.clone();
        let agent_turn = turn(Speaker::Agent, text.clone(), Some(&answered));
        add(app, &self.id, &self.agent, &self.by, agent_turn).await?;
        Ok(ChatAnswer {
            conversation_id: self.id.to_string(),
            answer: text,
            provider: answered.provider.as_str().to_owned(),
            model: answered.answer.model.clone(),
            input_tokens: answered.answer.usage.input_tokens,
            output_tokens: answered.answer.usage.output_tokens,
        })
    }
}

fn error_event(error: ApiError) -> Event {
    let (code, message) = match &error {
        ApiError::Refused(refusal) => (refusal.code, refusal.message.clone()),
        other => (ErrorCode::Internal, other.to_string()),
    };
    Event::default().event("error").data(json!({ "code": code, "message": message }).to_string())
}

errors! { GetConversationErrors = READ + PATH_ID + QUERY + [ConversationNotFound] }

/// `GET /api/conversations/{conversation_id}?at_position=&at=`: every turn, oldest first (as
/// the log held them at that moment, with `as_of`, when one is given).
#[utoipa::path(get, path = "/api/conversations/{conversation_id}", tag = "agents",
    params(ConversationId, AsOfQuery),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        GetConversationErrors,
    ))]
async fn get_conversation(
    State(app): State<AppState>,
    ConversationId(id): ConversationId,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<ApiJson<ConversationView>, ApiError> {
    let moment = query.as_of()?;
    let (conversation, events) = match moment {
        None => command::load_with_events::<Conversation>(&app.store, &id).await,
        Some(as_of) => command::load_as_of::<Conversation>(&app.store, &id, as_of).await,
    }
    .map_err(refusal)?;
    let Some(agent) = conversation.agent else { return Err(not_found(&id)) };
    Ok(ApiJson(ConversationView {
        conversation_id: id.to_string(),
        agent,
        started_by: conversation.started_by,
        messages: conversation.turns,
        version: events.last().map_or(0, |event| event.version),
        as_of: moment.and_then(|_| AsOfView::of(&events)),
    }))
}

/// Most conversations one page lists.
const LIST_LIMIT_MAX: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only conversations with this agent kind.
    agent: Option<String>,
    /// The `next_before` of the previous page.
    before: Option<u64>,
    /// 1 to 200; 50 when absent.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ConversationPage {
    conversations: Vec<ConversationRow>,
    /// Pass as `before` for the next page; absent on the last one.
    next_before: Option<u64>,
    /// The log position the list reflects (the `conversation_list` projector's checkpoint).
    position: u64,
}

errors! { ListConversationsErrors = READ + QUERY + [] }

/// `GET /api/conversations?agent=&before=&limit=`: conversations, the most recently
/// changed first.
#[utoipa::path(get, path = "/api/conversations", tag = "agents", params(ListQuery),
    responses(
        (status = 200, description = "A page of conversations, most recently changed first", body = ConversationPage),
        ListConversationsErrors,
    ))]
async fn list_conversations(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<ConversationPage>, ApiError> {
    let limit = page_limit(query.limit, 50, LIST_LIMIT_MAX)?;
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(app.pool()).await?;
    let conversations =
        conversations::page(snapshot.conn(), query.agent.as_deref(), query.before, limit).await?;
    let position = snapshot.position(projections::conversation_list::NAME).await?;
    let next_before = (conversations.len() == limit as usize)
        .then(|| conversations.last().map(|row| row.last_position as u64))
        .flatten();
    Ok(ApiJson(ConversationPage { conversations, next_before, position }))
}
