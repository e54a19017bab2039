//! Memories over HTTP: record one (its text embedded through the gateway's `embed` route),
//! search a scope by text with metadata filters, read one with its history's outcome,
//! supersede one with a new text, forget one. Reads need `memories.read`; changes
//! `memories.write`. Each change is in the log (`memory/<id>`) before it is answered, and
//! this process's index holds it by then, so a search right after sees it (other processes
//! follow within a second).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::api_key::Permission;
use domain::memory::{Memory, MemoryError, MemoryStatus, Scope, TEXT_LEN_MAX, TTL_S_MAX};
use domain::{EventMetadata, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Access, Authed};
use super::error::{ErrorCode, append_refusal, errors, refused};
use super::extract::{ApiQuery, Metadata};
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::eventlog::command::{self, CommandError};
use crate::llm::calls::{CallError, Caller};
use crate::memory::commands::{self, RecordError, Remember};
use crate::memory::index::{Condition, K_MAX, Query};

/// Longest `filter` of a search, in bytes of JSON.
pub const FILTER_BYTES_MAX: usize = 4_096;
/// Most conditions one `filter` may hold.
pub const FILTER_CONDITIONS_MAX: usize = 16;
/// Results of a search without `k`.
pub const K_DEFAULT: usize = 10;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::MemoriesWrite), routes!(record_memory))
        .routes(Access::needs(Permission::MemoriesRead), routes!(search_memories))
        .routes(Access::needs(Permission::MemoriesRead), routes!(get_memory))
        .routes(Access::needs(Permission::MemoriesWrite), routes!(supersede_memory))
        .routes(Access::needs(Permission::MemoriesWrite), routes!(forget_memory))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// `/`-separated names (`kind/coder`, `user/alice/project/x`): at most 8 segments of 1 to
    /// 64 of A-Z, a-z, 0-9, `_`, `-`, `.` and `@` (not `.` or `..` alone).
    pub scope: String,
    /// 1 to 8,000 characters.
    pub text: String,
    /// Flat: each value a string, number or boolean, or a list of them; at most 32 keys and
    /// 16 KiB.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: BTreeMap<String, Value>,
    /// Seconds until the memory is no longer found (at most ten years).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupersedeRequest {
    /// The new text.
    pub text: String,
    /// Why, for the history: 1 to 1,000 characters.
    pub reason: String,
    /// The new memory's metadata; the old one's when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Why, for the history: 1 to 1,000 characters.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recorded {
    pub id: Uuid,
    /// The log position of the last event the change appended.
    pub position: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The scope searched, with every scope below it.
    scope: String,
    /// The text to find memories like.
    q: String,
    /// 1 to 100 results, 10 by default.
    k: Option<u64>,
    /// JSON object of metadata conditions, each key one of: a value (equals), a list
    /// (any of), `{"any": [...]}`, or `{"gt"|"gte"|"lt"|"lte": number, ...}` (a range).
    filter: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub id: Uuid,
    pub score: f32,
    pub text: String,
    pub scope: String,
    #[schema(value_type = Object)]
    pub metadata: BTreeMap<String, Value>,
    /// Who recorded it (`key:<id>`, or a worker for an agent's mission).
    pub recorded_by: String,
    /// The mission whose agent recorded it, if any.
    pub mission: Option<Uuid>,
    pub recorded_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
    /// The embedding model the query was embedded with; only memories of that model are
    /// compared with it.
    pub model: String,
    /// The offline provider's lexical embeddings: shared words, not meaning.
    pub lexical: bool,
    /// The last `memory` event the index held.
    pub index_position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    pub id: Uuid,
    pub status: MemoryStatus,
    pub scope: String,
    pub text: String,
    #[schema(value_type = Object)]
    pub metadata: BTreeMap<String, Value>,
    pub expires_at_ms: Option<i64>,
    pub provider: String,
    pub model: String,
    pub lexical: bool,
    pub recorded_by: String,
    pub recorded_at_ms: i64,
    pub mission: Option<Uuid>,
    pub supersedes: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    /// Why it was superseded or forgotten, by whom and when.
    pub ended_reason: Option<String>,
    pub ended_by: Option<String>,
    pub ended_at_ms: Option<i64>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    refused(ErrorCode::InvalidField, Some(field), message.into())
}

fn memory_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidField {
        field: "id",
        message: "a memory id is a UUID".into(),
    })
}

fn command_refusal(error: CommandError<MemoryError>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(MemoryError::Invalid { field, .. }) => {
            refused(ErrorCode::InvalidField, Some(field), message)
        }
        CommandError::Rejected(MemoryError::NotFound) => {
            refused(ErrorCode::MemoryNotFound, Some("id"), message)
        }
        CommandError::Rejected(
            MemoryError::AlreadySuperseded(_)
            | MemoryError::Forgotten
            | MemoryError::AlreadyRecorded,
        ) => refused(ErrorCode::MemoryEnded, None, message),
        CommandError::Contended(_) => refused(ErrorCode::MemoryContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

fn record_refusal(error: RecordError) -> ApiError {
    match error {
        RecordError::Command(error) => command_refusal(error),
        RecordError::Embed(CallError::Route(reason)) => invalid("text", reason),
        RecordError::Embed(error) => super::completions::call_failure(error),
    }
}

fn caller(app_principal: &crate::identity::Principal, metadata: &EventMetadata) -> Caller {
    Caller::Api {
        by: metadata.actor.clone(),
        key: Some(super::completions::key_budget(app_principal)),
        usage_kind: MEMORY_USAGE_KIND.to_owned(),
    }
}

/// What the embeddings of memories count as in usage.
pub const MEMORY_USAGE_KIND: &str = "memory";

fn remember(
    scope: &str,
    text: String,
    metadata: BTreeMap<String, Value>,
    ttl_s: Option<u64>,
) -> Result<Remember, ApiError> {
    let scope = Scope::parse(scope).map_err(|reason| invalid("scope", reason))?;
    domain::memory::check_text(&text).map_err(|reason| invalid("text", reason))?;
    domain::memory::check_metadata(&metadata).map_err(|reason| invalid("metadata", reason))?;
    if ttl_s.is_some_and(|ttl| ttl == 0 || ttl > TTL_S_MAX) {
        return Err(invalid("ttl_s", format!("1 to {TTL_S_MAX} seconds")));
    }
    Ok(Remember { scope, text, metadata, ttl_s, mission: None })
}

/// This process's index made to hold what was just recorded.
async fn caught_up(app: &AppState) {
    if let Err(error) = app.memories.step(app.pool()).await {
        tracing::warn!(%error, "the memory index could not catch up after a change");
    }
}

errors! {
    RecordErrors = COMMAND + JSON_BODY + CALLER + LLM_CALL + [InvalidField, MemoryContended]
}

/// `POST /api/memories`: records a memory.
#[utoipa::path(post, path = "/api/memories", tag = "memories",
    params(Metadata),
    request_body = RecordRequest,
    responses((status = 201, description = "Recorded", body = Recorded), RecordErrors))]
async fn record_memory(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RecordRequest>,
) -> Result<(StatusCode, ApiJson<Recorded>), ApiError> {
    let remember = remember(&request.scope, request.text, request.metadata, request.ttl_s)?;
    let caller = caller(&principal, &metadata);
    let calls = app.llm_calls().await;
    let (id, position) = commands::record(&app.store, &calls, &caller, metadata, remember, None)
        .await
        .map_err(record_refusal)?;
    caught_up(&app).await;
    Ok((StatusCode::CREATED, ApiJson(Recorded { id, position })))
}

/// A `filter` of a search as conditions.
fn conditions(filter: Option<&str>) -> Result<Vec<Condition>, ApiError> {
    let Some(filter) = filter else { return Ok(vec![]) };
    if filter.len() > FILTER_BYTES_MAX {
        return Err(invalid("filter", format!("at most {FILTER_BYTES_MAX} bytes")));
    }
    let parsed: Value = serde_json::from_str(filter)
        .map_err(|error| invalid("filter", format!("not JSON: {error}")))?;
    let Value::Object(fields) = parsed else {
        return Err(invalid("filter", "a JSON object of metadata keys"));
    };
    if fields.len() > FILTER_CONDITIONS_MAX {
        return Err(invalid("filter", format!("at most {FILTER_CONDITIONS_MAX} conditions")));
    }
    fields.into_iter().map(|(key, value)| condition(key, value)).collect()
}

fn plain(value: &Value) -> bool {
    value.is_string() || value.is_boolean() || value.as_i64().is_some()
}

fn condition(key: String, value: Value) -> Result<Condition, ApiError> {
    let bad = |why: &str| invalid("filter", format!("{key}: {why}"));
    let any_of = |values: Vec<Value>| {
        let strings = values.iter().all(Value::is_string);
        let integers = values.iter().all(|v| v.as_i64().is_some());
        if values.is_empty()
            || values.len() > domain::memory::METADATA_LIST_MAX
            || !(strings || integers)
        {
            return Err(bad("any of 1 to 64 strings, or of 1 to 64 integers"));
        }
        Ok(Condition::AnyOf(key.clone(), values))
    };
    match value {
        value if plain(&value) => Ok(Condition::Equals(key, value)),
        Value::Array(values) => any_of(values),
        Value::Object(mut bounds) => {
            if let Some(values) = bounds.remove("any") {
                let Value::Array(values) = values else { return Err(bad("`any` takes a list")) };
                return if bounds.is_empty() { any_of(values) } else { Err(bad("`any` alone")) };
            }
            let mut bound = |name: &str| -> Result<Option<f64>, ApiError> {
                match bounds.remove(name) {
                    None => Ok(None),
                    Some(value) => value
                        .as_f64()
                        .filter(|x| x.is_finite())
                        .map(Some)
                        .ok_or_else(|| bad("a range's bounds are numbers")),
                }
            };
            let (gt, gte, lt, lte) = (bound("gt")?, bound("gte")?, bound("lt")?, bound("lte")?);
            if !bounds.is_empty() || (gt, gte, lt, lte) == (None, None, None, None) {
                return Err(bad("a range of gt, gte, lt and lte, or {\"any\": [...]}"));
            }
            Ok(Condition::Range { key, gt, gte, lt, lte })
        }
        _ => Err(bad("a string, integer or boolean, a list, or a range")),
    }
}

errors! {
    SearchErrors = READ + QUERY + CALLER + LLM_CALL + [InvalidField, MemoryIndexUnavailable]
}

/// `GET /api/memories/search?scope=&q=&k=&filter=`: the memories of a scope (and those
/// below it) most like `q`, best first, past none that expired, was superseded or forgotten.
#[utoipa::path(get, path = "/api/memories/search", tag = "memories",
    params(SearchQuery),
    responses((status = 200, description = "The best memories, best first", body = SearchResults),
        SearchErrors))]
async fn search_memories(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Metadata(metadata): Metadata,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<ApiJson<SearchResults>, ApiError> {
    let scope = Scope::parse(query.scope).map_err(|reason| invalid("scope", reason))?;
    if query.q.trim().is_empty() || query.q.chars().count() > TEXT_LEN_MAX {
        return Err(invalid("q", format!("1 to {TEXT_LEN_MAX} characters")));
    }
    let k = query.k.unwrap_or(K_DEFAULT as u64);
    if k == 0 || k > K_MAX as u64 {
        return Err(invalid("k", format!("1 to {K_MAX}")));
    }
    let conditions = conditions(query.filter.as_deref())?;
    let calls = app.llm_calls().await;
    let embedding = commands::embed(&calls, &caller(&principal, &metadata), &query.q)
        .await
        .map_err(|error| match error {
            CallError::Route(reason) => invalid("q", reason),
            error => super::completions::call_failure(error),
        })?;
    let index_position = app.memories.position();
    let hits = app
        .memories
        .search(Query {
            vector: embedding.vector,
            model: embedding.model.clone(),
            scope,
            conditions,
            now_ms: crate::clock::now_ms(),
            k: k as usize,
        })
        .await
        .map_err(|error| refused(ErrorCode::MemoryIndexUnavailable, None, error.to_string()))?;
    let results = hits
        .into_iter()
        .map(|hit| SearchHit {
            id: hit.id,
            score: hit.score,
            text: hit.payload.text,
            scope: hit.payload.scope,
            metadata: hit.payload.m,
            recorded_by: hit.payload.by,
            mission: hit.payload.mission,
            recorded_at_ms: hit.payload.recorded_at_ms,
            expires_at_ms: hit.payload.expires_at_ms,
        })
        .collect();
    Ok(ApiJson(SearchResults {
        results,
        model: embedding.model,
        lexical: embedding.lexical,
        index_position,
    }))
}

/// `{id}` of the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path parameter; handlers take it as a String")]
pub struct MemoryPath {
    /// The memory's id (a UUID).
    pub id: String,
}

async fn load(app: &AppState, id: Uuid) -> Result<Memory, ApiError> {
    let (memory, _) =
        command::load::<Memory>(&app.store, &StreamId::from(id)).await.map_err(command_refusal)?;
    if memory.status == MemoryStatus::Absent {
        return Err(refused(ErrorCode::MemoryNotFound, Some("id"), "no memory has this id".into()));
    }
    Ok(memory)
}

errors! { GetErrors = READ + [InvalidInput, MemoryNotFound] }

/// `GET /api/memories/{id}`: a memory as its history leaves it (superseded and forgotten
/// ones included, with why).
#[utoipa::path(get, path = "/api/memories/{id}", tag = "memories",
    params(MemoryPath),
    responses((status = 200, description = "The memory", body = MemoryView), GetErrors))]
async fn get_memory(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<MemoryView>, ApiError> {
    let id = memory_id(&id)?;
    let memory = load(&app, id).await?;
    Ok(ApiJson(MemoryView {
        id,
        status: memory.status,
        scope: memory.scope.map(|scope| scope.to_string()).unwrap_or_default(),
        text: memory.text,
        metadata: memory.metadata,
        expires_at_ms: memory.expires_at_ms,
        provider: memory.provider,
        model: memory.model,
        lexical: memory.lexical,
        recorded_by: memory.recorded_by,
        recorded_at_ms: memory.recorded_at_ms,
        mission: memory.mission,
        supersedes: memory.supersedes,
        superseded_by: memory.superseded_by,
        ended_reason: memory.ended_reason,
        ended_by: memory.ended_by,
        ended_at_ms: memory.ended_at_ms,
    }))
}

errors! {
    SupersedeErrors = COMMAND + JSON_BODY + CALLER + LLM_CALL
        + [InvalidInput, InvalidField, MemoryNotFound, MemoryEnded, MemoryContended]
}

/// `POST /api/memories/{id}/supersede`: a new memory replaces this one (same scope); the
/// old one stays in the log, out of search.
#[utoipa::path(post, path = "/api/memories/{id}/supersede", tag = "memories",
    params(MemoryPath, Metadata),
    request_body = SupersedeRequest,
    responses((status = 201, description = "The replacement", body = Recorded), SupersedeErrors))]
async fn supersede_memory(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Path(id): Path<String>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<SupersedeRequest>,
) -> Result<(StatusCode, ApiJson<Recorded>), ApiError> {
    let old = memory_id(&id)?;
    domain::memory::check_reason(&request.reason).map_err(|reason| invalid("reason", reason))?;
    let current = load(&app, old).await?;
    let scope = current.scope.map(|scope| scope.to_string()).unwrap_or_default();
    let metadata_new = request.metadata.unwrap_or(current.metadata);
    let remember = remember(&scope, request.text, metadata_new, request.ttl_s)?;
    let caller = caller(&principal, &metadata);
    let calls = app.llm_calls().await;
    let (id, position) =
        commands::supersede(&app.store, &calls, &caller, metadata, old, remember, request.reason)
            .await
            .map_err(record_refusal)?;
    caught_up(&app).await;
    Ok((StatusCode::CREATED, ApiJson(Recorded { id, position })))
}

errors! {
    ForgetErrors = COMMAND + JSON_BODY + CALLER
        + [InvalidInput, InvalidField, MemoryNotFound, MemoryEnded, MemoryContended]
}

/// `DELETE /api/memories/{id}` with `{"reason": ...}`: forgets a memory. It leaves search at
/// once; its events stay in the log.
#[utoipa::path(delete, path = "/api/memories/{id}", tag = "memories",
    params(MemoryPath, Metadata),
    request_body = ForgetRequest,
    responses((status = 200, description = "Forgotten", body = Recorded), ForgetErrors))]
async fn forget_memory(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<ForgetRequest>,
) -> Result<ApiJson<Recorded>, ApiError> {
    let id = memory_id(&id)?;
    let position = commands::forget(&app.store, metadata, id, request.reason)
        .await
        .map_err(command_refusal)?;
    caught_up(&app).await;
    Ok(ApiJson(Recorded { id, position }))
}
