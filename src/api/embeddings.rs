//! `POST /v1/embeddings`: BRAiN speaking OpenAI's embeddings protocol, so any OpenAI client
//! embeds through the gateway's `embed` route (offline lexical embeddings until one is
//! configured), held to the calling key's budgets and model allow-list, each call recorded
//! in the log (`llm_call/<id>`, `LlmCalled`) like a chat completion.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use domain::api_key::Permission;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::{ErrorCode, Refusal, errors};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::api::auth::{Access, Authed};
use crate::llm::calls::{CallError, Caller};
use crate::llm::embed::{INPUTS_MAX, check_inputs};

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::needs(Permission::LlmCall), routes!(embeddings))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// `default` (the `embed` route), another route's name, or a model the `embed` route's
    /// targets run.
    #[serde(default)]
    pub model: String,
    /// One text, or a list of at most 256 texts, each at most 32,000 characters. Token
    /// arrays are not accepted.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Only `float` is spoken; other fields of the protocol are accepted and ignored.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Refused(Refusal {
        code: ErrorCode::InvalidField,
        field: Some(field.to_owned().into()),
        message: message.into(),
    })
}

fn inputs(request: &EmbeddingsRequest) -> Result<Vec<String>, ApiError> {
    let inputs = match &request.input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.len() <= INPUTS_MAX => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("input", "texts only (token arrays are not accepted)"))?,
        _ => return Err(invalid("input", format!("a text or a list of 1 to {INPUTS_MAX} texts"))),
    };
    check_inputs(&inputs).map_err(|reason| invalid("input", reason))?;
    if request.encoding_format.as_deref().is_some_and(|format| format != "float") {
        return Err(invalid("encoding_format", "only float"));
    }
    Ok(inputs)
}

errors! { EmbeddingsErrors = INTERNAL + JSON_BODY + CALLER + LLM_CALL + [InvalidField] }

/// `POST /v1/embeddings`: OpenAI's protocol, answered through the gateway.
#[utoipa::path(post, path = "/v1/embeddings", tag = "llm",
    params(Metadata),
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "A `list` of `embedding` objects, in input order, with usage"),
        EmbeddingsErrors,
    ))]
async fn embeddings(
    State(app): State<AppState>,
    Authed(principal): Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let inputs = inputs(&request)?;
    let caller = Caller::Api {
        by: metadata.actor,
        key: Some(super::completions::key_budget(&principal)),
        usage_kind: crate::llm::calls::API_USAGE_KIND.to_owned(),
    };
    let calls = app.llm_calls().await;
    let model = request.model.clone();
    // In a task of its own: a client that hangs up does not cut the call from its record.
    let embedded = tokio::spawn(async move { calls.embed(&caller, Some(&model), &inputs).await })
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    let embedded = match embedded {
        Ok(embedded) => embedded,
        Err(CallError::Route(reason)) => return Err(invalid("input", reason)),
        Err(error) => return Err(super::completions::call_failure(error)),
    };
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(
            |(index, vector)| json!({ "object": "embedding", "index": index, "embedding": vector }),
        )
        .collect();
    Ok(ApiJson(json!({
        "object": "list",
        "data": data,
        "model": embedded.model,
        "provider": embedded.provider.as_str(),
        "lexical": embedded.lexical,
        "usage": { "prompt_tokens": embedded.input_tokens, "total_tokens": embedded.input_tokens },
    }))
    .into_response())
}
