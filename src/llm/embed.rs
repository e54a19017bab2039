//! Embeddings as BRAiN makes them for someone, held to what a chat call is held to: the
//! caller's key's model allow-list, the daily budgets (the inputs' tokens, reserved then
//! settled), the shared limits of each target, retries and fallback over the route's
//! targets, and a record in the log (`LlmCalled` in `llm_call/<id>`, or `MissionLlmCalled`
//! for a mission), whose request keeps the number and size of the inputs, not their text.
//!
//! Embeddings take the route named [`EMBED_ROUTE`] of the LLM configuration; until one is
//! configured, the `offline` provider's lexical embeddings
//! ([`crate::llm::offline::lexical_embedding`]), so that memory works out of the box. Those
//! match shared words, not meaning, and say so: their model is
//! [`crate::llm::offline::LEXICAL_MODEL`].

use std::time::{Duration, Instant};

use domain::mission::LlmCall;
use serde_json::json;
use time::OffsetDateTime;

use crate::llm::budget;
use crate::llm::calls::{CallError, Caller, Calls};
use crate::llm::config::Resolved;
use crate::llm::gateway::{Failed, ProviderKind, Route, Target, Try};
use crate::llm::limits::Outcome;
use crate::llm::offline::LEXICAL_MODEL;
use crate::llm::{LlmError, Reason};

/// The route embeddings take, configured like any other (`PUT /api/llm/config`).
pub const EMBED_ROUTE: &str = "embed";
/// Most inputs one embeddings call may carry.
pub const INPUTS_MAX: usize = 256;
/// Longest input, in characters.
pub const INPUT_CHARS_MAX: usize = 32_000;
/// Most dimensions of a vector taken from a provider.
pub const DIMENSIONS_MAX: usize = domain::memory::VECTOR_DIMS_MAX;

/// What an embeddings call gave.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub provider: ProviderKind,
    pub model: String,
    /// The offline provider's hashed n-grams: a lexical match only.
    pub lexical: bool,
    pub input_tokens: u64,
}

/// The route an embeddings call for `model` takes: a configured route of that name, the
/// [`EMBED_ROUTE`] (for `default`, an empty name, or any other model, which its targets then
/// run), or the offline one.
fn embed_route(resolved: &Resolved, model: Option<&str>) -> (String, Route) {
    let offline = || Route {
        targets: vec![Target::new(ProviderKind::Offline, "", LEXICAL_MODEL)],
        temperature: None,
        max_tokens: None,
    };
    let named = model.filter(|m| !m.is_empty() && *m != "default" && *m != LEXICAL_MODEL);
    if let Some(name) = named
        && name != EMBED_ROUTE
        && let Some(route) = resolved.routes.get(name)
    {
        return (name.to_owned(), route.clone());
    }
    let Some(mut route) = resolved.routes.get(EMBED_ROUTE).cloned() else {
        return (EMBED_ROUTE.to_owned(), offline());
    };
    if let Some(model) = named.filter(|m| *m != EMBED_ROUTE) {
        for target in &mut route.targets {
            resolved.with_model(target, model);
        }
    }
    (EMBED_ROUTE.to_owned(), route)
}

/// Whether `inputs` may be sent: a reason naming what is wrong when not.
pub fn check_inputs(inputs: &[String]) -> Result<(), String> {
    if inputs.is_empty() || inputs.len() > INPUTS_MAX {
        return Err(format!("1 to {INPUTS_MAX} inputs"));
    }
    match inputs.iter().position(|i| i.chars().count() > INPUT_CHARS_MAX || i.contains('\0')) {
        Some(n) => Err(format!("input {n}: at most {INPUT_CHARS_MAX} characters, no NUL")),
        None => Ok(()),
    }
}

impl Calls {
    /// Embeddings of `inputs` for `caller`, recorded once the call ends.
    pub async fn embed(
        &self,
        caller: &Caller,
        model: Option<&str>,
        inputs: &[String],
    ) -> Result<Embedded, CallError> {
        check_inputs(inputs).map_err(CallError::Route)?;
        let resolved = match &self.store {
            None => Resolved::fallback(&self.settings),
            Some(store) => {
                crate::llm::config::current(store, &self.settings).await.map_err(|error| {
                    CallError::Config(format!("cannot read the LLM configuration: {error}"))
                })?
            }
        };
        if let Caller::Api { key: Some(key), .. } = caller {
            let allowed = &key.limits.models;
            let asked = model.filter(|m| !m.is_empty()).unwrap_or("default");
            if !allowed.is_empty() && !allowed.iter().any(|name| name == asked) {
                return Err(CallError::NotAllowed(format!(
                    "the key {} may call {} only, not {asked:?}",
                    key.key_id,
                    allowed.join(", ")
                )));
            }
        }
        let (route_name, route) = embed_route(&resolved, model);
        let scopes = match (&self.store, caller) {
            (None, _) => vec![],
            (Some(_), Caller::Mission(mission)) => budget::scopes(
                Some((&mission.budget_scope, mission.budget, &mission.kind)),
                None,
                &resolved.daily_budgets,
                OffsetDateTime::now_utc(),
            ),
            (Some(_), Caller::Api { key, .. }) => budget::scopes(
                None,
                key.as_ref(),
                &resolved.daily_budgets,
                OffsetDateTime::now_utc(),
            ),
        };
        let tokens: u64 =
            inputs.iter().map(|input| crate::llm::estimate::tokens_of(input.len())).sum();
        let started = Instant::now();
        let outcome = self.embed_budgeted(&route, &scopes, inputs, tokens).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        self.finish_embed(caller, &route_name, &route, inputs, tokens, outcome, latency_ms).await
    }

    /// The call under its budgets: the inputs' tokens held, then settled at what was used.
    async fn embed_budgeted(
        &self,
        route: &Route,
        scopes: &[budget::Scope],
        inputs: &[String],
        tokens: u64,
    ) -> Result<(Embedded, Vec<Try>, f64), Failed> {
        let gateway = &self.gateway;
        let tries_max = route.targets.len().clamp(1, crate::llm::gateway::ROUTE_TARGETS_MAX) as u32
            * gateway.retry.attempts_max;
        let hold = (gateway.timeouts.total * 2 + gateway.retry.retry_after_max) * tries_max;
        let reservation = match (&gateway.budgets, scopes.is_empty()) {
            (_, true) => None,
            (None, false) => {
                let error = LlmError {
                    server_error: true,
                    ..LlmError::new(
                        Reason::BudgetExceeded,
                        "the budgets cannot be checked: the shared store (Redis) is not connected",
                    )
                };
                return Err(Failed { error, tries: vec![] });
            }
            (Some(budgets), false) => {
                let worst = route.targets.iter().map(|t| t.cost_usd(tokens, 0)).fold(0.0, f64::max);
                budgets
                    .reserve(scopes, tokens, worst, hold)
                    .await
                    .map_err(|error| Failed { error, tries: vec![] })?
            }
        };
        let outcome =
            match tokio::time::timeout(hold, self.embed_route(route, inputs, tokens)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failed {
                    error: LlmError::new(Reason::Timeout, "the embeddings took too long"),
                    tries: vec![],
                }),
            };
        if let (Some(reservation), Some(budgets)) = (reservation, &gateway.budgets) {
            let (used, cost) = match &outcome {
                Ok((_, _, cost)) => (tokens, *cost),
                Err(_) => (0, 0.0),
            };
            budgets.settle(reservation, used, cost).await;
        }
        outcome
    }

    /// Each target in turn, each with its retries under its shared limits, until one answers
    /// with one vector of at most [`DIMENSIONS_MAX`] finite numbers per input.
    async fn embed_route(
        &self,
        route: &Route,
        inputs: &[String],
        tokens: u64,
    ) -> Result<(Embedded, Vec<Try>, f64), Failed> {
        let gateway = &self.gateway;
        let mut tries = Vec::new();
        let mut last = LlmError::new(Reason::BadResponse, "the route has no target");
        for target in route.targets.iter().take(crate::llm::gateway::ROUTE_TARGETS_MAX) {
            let provider = gateway.provider(target);
            for attempt in 1.. {
                let permit = match &gateway.limiter {
                    None => None,
                    Some(limiter) => {
                        match limiter.acquire(target, tokens, gateway.timeouts.total).await {
                            Ok(permit) => Some(permit),
                            Err(error) => {
                                last = error;
                                break;
                            }
                        }
                    }
                };
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    gateway.timeouts.total,
                    provider.embed(&target.model, inputs),
                )
                .await
                .unwrap_or_else(|_| Err(LlmError::new(Reason::Timeout, "no embeddings in time")))
                .and_then(|vectors| checked(vectors, inputs.len()));
                let latency_ms = started.elapsed().as_millis() as u64;
                if let (Some(limiter), Some(permit)) = (&gateway.limiter, permit) {
                    let learned = match &outcome {
                        Ok(_) => Outcome::Answered { tokens_used: tokens },
                        Err(error) if error.reason == Reason::RateLimited => {
                            Outcome::RateLimited { retry_after: error.retry_after }
                        }
                        Err(_) => Outcome::Failed,
                    };
                    limiter.done(permit, learned).await;
                }
                let failure = outcome.as_ref().err().map(|error| error.reason);
                tries.push(Try {
                    provider: target.provider,
                    model: target.model.clone(),
                    attempt,
                    latency_ms,
                    failure,
                });
                match outcome {
                    Ok(vectors) => {
                        let embedded = Embedded {
                            vectors,
                            provider: target.provider,
                            model: target.model.clone(),
                            lexical: target.provider == ProviderKind::Offline,
                            input_tokens: tokens,
                        };
                        return Ok((embedded, tries, target.cost_usd(tokens, 0)));
                    }
                    Err(error) => {
                        let error = error.redacted(&gateway.redactor);
                        match gateway.retry.wait(attempt, &error) {
                            Some(wait) => {
                                tokio::time::sleep(wait.min(Duration::from_secs(60))).await
                            }
                            None => {
                                last = error;
                                break;
                            }
                        }
                    }
                }
            }
        }
        Err(Failed { error: last, tries })
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_embed(
        &self,
        caller: &Caller,
        route_name: &str,
        route: &Route,
        inputs: &[String],
        tokens: u64,
        outcome: Result<(Embedded, Vec<Try>, f64), Failed>,
        latency_ms: u64,
    ) -> Result<Embedded, CallError> {
        let Some(store) = &self.store else {
            return outcome.map(|(embedded, _, _)| embedded).map_err(CallError::Llm);
        };
        let tries = match &outcome {
            Ok((_, tries, _)) => tries,
            Err(failed) => &failed.tries,
        };
        let (provider, model) = match (tries.last(), route.targets.first()) {
            (Some(last), _) => (last.provider.as_str().to_owned(), last.model.clone()),
            (None, Some(first)) => (first.provider.as_str().to_owned(), first.model.clone()),
            (None, None) => (String::new(), String::new()),
        };
        let (cost_usd, outcome_name, response) = match &outcome {
            Ok((embedded, _, cost)) => (
                *cost,
                "ok".to_owned(),
                json!({ "embeddings": embedded.vectors.len(),
                        "dimensions": embedded.vectors.first().map_or(0, Vec::len),
                        "lexical": embedded.lexical }),
            ),
            Err(failed) => {
                let error = &failed.error;
                let response = json!({ "error": { "reason": error.reason, "message": error.message,
                                                  "detail": error.detail } });
                (0.0, error.reason.as_str().to_owned(), response)
            }
        };
        let call = LlmCall {
            route: route_name.to_owned(),
            kind: match caller {
                Caller::Mission(mission) => mission.kind.clone(),
                Caller::Api { usage_kind, .. } => usage_kind.clone(),
            },
            provider,
            model,
            tries: tries.len() as u32,
            // What was embedded is the caller's (a memory's text is in its own event): the
            // record keeps its shape only.
            request: json!({ "embed": { "inputs": inputs.len(),
                                        "chars": inputs.iter().map(|i| i.chars().count()).sum::<usize>() } }),
            response: crate::llm::calls::bounded(response),
            input_tokens: if outcome.is_ok() { tokens } else { 0 },
            output_tokens: 0,
            cost_usd,
            latency_ms,
            outcome: outcome_name,
            replayed: false,
            usage_estimate: None,
        };
        match (crate::llm::calls::record_call(store, caller, call).await, caller) {
            (Ok(()), _) => {}
            (Err(error), Caller::Api { .. }) if outcome.is_ok() => {
                metrics::counter!("brain_llm_unrecorded_calls_total").increment(1);
                tracing::error!(%error, "an answered embeddings call could not be recorded");
            }
            (Err(error), _) => return Err(error),
        }
        outcome.map(|(embedded, _, _)| embedded).map_err(CallError::Llm)
    }
}

/// The provider's vectors, if they are what was asked: one per input, each of the same
/// bounded number of finite values.
fn checked(vectors: Vec<Vec<f32>>, inputs: usize) -> Result<Vec<Vec<f32>>, LlmError> {
    let bad = |why: String| LlmError::new(Reason::BadResponse, why);
    if vectors.len() != inputs {
        return Err(bad(format!("{} embeddings for {inputs} inputs", vectors.len())));
    }
    let dims = vectors.first().map_or(0, Vec::len);
    if dims == 0 || dims > DIMENSIONS_MAX {
        return Err(bad(format!("embeddings of {dims} dimensions (1 to {DIMENSIONS_MAX})")));
    }
    if vectors.iter().any(|v| v.len() != dims || v.iter().any(|x| !x.is_finite())) {
        return Err(bad("embeddings of unequal lengths or with non-finite values".into()));
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_answer_of_the_wrong_shape_is_a_bad_response() {
        assert!(checked(vec![vec![1.0]], 2).is_err());
        assert!(checked(vec![vec![1.0], vec![1.0, 2.0]], 2).is_err());
        assert!(checked(vec![vec![f32::NAN]], 1).is_err());
        assert!(checked(vec![vec![]], 1).is_err());
        assert_eq!(checked(vec![vec![0.5]], 1).unwrap(), vec![vec![0.5]]);
    }

    #[test]
    fn inputs_are_bounded_in_number_and_size() {
        assert!(check_inputs(&[]).is_err());
        assert!(check_inputs(&vec!["a".to_owned(); INPUTS_MAX + 1]).is_err());
        assert!(check_inputs(&["x".repeat(INPUT_CHARS_MAX + 1)]).is_err());
        assert!(check_inputs(&["ok".into()]).is_ok());
    }

    #[test]
    fn without_an_embed_route_embeddings_are_offline_and_lexical() {
        let resolved = Resolved::fallback(&crate::config::llm::LlmSettings::default());
        let (name, route) = embed_route(&resolved, Some("anything"));
        assert_eq!(name, EMBED_ROUTE);
        assert_eq!(route.targets[0].provider, ProviderKind::Offline);
        assert_eq!(route.targets[0].model, LEXICAL_MODEL);
    }
}
