//! Running a call: a route is an ordered list of targets (provider, base URL, model); each is
//! tried with the retry policy, and the next one is tried when a target fails for a reason
//! another target might not share (it is down, overloaded, rate-limited, or gave a broken
//! answer). A call that streamed part of its answer is not retried, since its client already
//! saw those tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use domain::llm_config::{Limits, Price};

use crate::config::llm::LlmSettings;
use crate::llm::anthropic::Anthropic;
use crate::llm::budget::{Budgets, Reservation, Scope};
use crate::llm::limits::{Limiter, Outcome, Permit};
use crate::llm::offline::Offline;
use crate::llm::ollama::Ollama;
use crate::llm::openai::OpenAi;
use crate::llm::retry::RetryPolicy;
use crate::llm::{
    ChatAnswer, ChatRequest, Credentials, LlmError, Message, Provider, Reason, Timeouts, TokenSink,
    ToolSpec,
};
use crate::secrets::Redactor;

/// Most targets one route may list.
pub const ROUTE_TARGETS_MAX: usize = 8;

pub use crate::config::llm::ProviderKind;

/// One provider and model a route may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Target {
    pub provider: ProviderKind,
    /// The provider's base URL; its default when empty.
    #[serde(default)]
    pub host: String,
    pub model: String,
    /// The shared limits of this provider+model (none set: only what its 429s teach).
    #[serde(default)]
    pub limits: Limits,
    /// Its price, from the configuration's table; free without one.
    #[serde(default)]
    pub price: Option<Price>,
    /// The configuration bound this target's host to its provider's key (`key_hosts`, set
    /// with the key in hand): the key may go there besides where the process was started to
    /// send it. Only the configuration in the log sets it.
    #[serde(skip)]
    pub key_bound: bool,
}

impl Target {
    pub fn new(
        provider: ProviderKind,
        host: impl Into<String>,
        model: impl Into<String>,
    ) -> Target {
        Target {
            provider,
            host: host.into(),
            model: model.into(),
            limits: Limits::default(),
            price: None,
            key_bound: false,
        }
    }

    /// What `input` and `output` tokens cost on this target, in US dollars.
    pub fn cost_usd(&self, input: u64, output: u64) -> f64 {
        self.price.map_or(0.0, |price| {
            (input as f64 * price.input_usd_per_mtok + output as f64 * price.output_usd_per_mtok)
                / 1_000_000.0
        })
    }
}

/// Output tokens a call's worst case counts when its route sets no `max_tokens`.
pub const RESERVED_OUTPUT_DEFAULT: u32 = 4_096;

/// An upper estimate of the input tokens of `messages` and `tools`, which a budget reserves
/// and a call whose provider reports no usage is counted at: a token is rarely under three
/// bytes of text, and each message costs a few tokens of framing.
pub use crate::llm::estimate::input_tokens as input_tokens_estimate;

/// A named, ordered list of targets and the call settings they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub targets: Vec<Target>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

impl Route {
    /// The route of a fresh install, until one is configured in the log: the start-up
    /// settings' provider (offline unless `BRAIN_LLM_PROVIDER` names another), host and model.
    pub fn fallback(settings: &LlmSettings) -> Route {
        let host = settings.host.clone().unwrap_or_default();
        Route {
            targets: vec![Target::new(settings.provider, host, settings.model())],
            temperature: None,
            max_tokens: None,
        }
    }
}

/// How one try of one target went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Try {
    pub provider: ProviderKind,
    pub model: String,
    /// 1 for the first try of this target.
    pub attempt: u32,
    pub latency_ms: u64,
    /// `None` when it answered.
    pub failure: Option<Reason>,
}

/// A call's answer and every try it took.
#[derive(Debug, Clone)]
pub struct Answered {
    pub answer: ChatAnswer,
    pub provider: ProviderKind,
    pub tries: Vec<Try>,
    /// At the answering target's price.
    pub cost_usd: f64,
}

/// One chat call: what to ask, over which route, under which budgets.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub route: &'a Route,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    /// Every budget the call counts against (none: unbudgeted).
    pub budgets: &'a [Scope],
    /// Told when the call is let through.
    pub let_through: Option<LetThrough<'a>>,
}

/// Told when a call is let through: its budgets are held and a try has its place under the
/// shared limits, so BRAiN's own refusals (`budget_exceeded`, `rate_limited` by the limiter)
/// are behind it and the provider's answer is what follows. Told before each try; telling
/// it once is the teller's business. A streamed answer to a client sends its status line
/// then, so that a refused call answers with its own status.
#[derive(Clone, Copy)]
pub struct LetThrough<'a>(pub &'a (dyn Fn() + Send + Sync));

impl std::fmt::Debug for LetThrough<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LetThrough")
    }
}

/// A failed call: the last failure, and every try.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    pub error: LlmError,
    pub tries: Vec<Try>,
}

/// Builds providers for targets and runs calls over routes. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    client: reqwest::Client,
    credentials: Credentials,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// The shared limits; without them (no Redis), each try goes at once.
    pub limiter: Option<Limiter>,
    /// Where budgets are held; without it, a call with budgets fails (they cannot be kept).
    pub budgets: Option<Budgets>,
    /// Takes the process's secrets out of failures (and, through [`crate::llm::calls`], out of
    /// what is recorded).
    pub redactor: Redactor,
}

impl Gateway {
    pub fn new(credentials: Credentials, timeouts: Timeouts, retry: RetryPolicy) -> Gateway {
        // The one TLS stack (ring), if the embedding program has not installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("an HTTP client builds (its TLS provider is installed at start-up)");
        let redactor = Redactor::new(credentials.openai.iter().chain(&credentials.anthropic));
        Gateway { client, credentials, timeouts, retry, limiter: None, budgets: None, redactor }
    }

    /// This gateway, sharing the limits and budgets of `namespace` with every other process.
    pub fn shared(
        mut self,
        redis: redis::aio::ConnectionManager,
        namespace: &crate::config::Namespace,
        pool: sqlx::PgPool,
    ) -> Gateway {
        let mut limiter = Limiter::new(redis.clone(), namespace);
        // A place held by a process that died lapses once its try could not still be running.
        limiter.slot_ttl = self.timeouts.total + Duration::from_secs(60);
        self.limiter = Some(limiter);
        self.budgets = Some(Budgets::new(redis, namespace, pool));
        self
    }

    /// The longest a call may take, and so hold its budgets: every try of every target, each
    /// with its wait for the shared limits, its deadline and the wait before the next.
    fn hold(&self, route: &Route) -> Duration {
        let tries =
            route.targets.len().clamp(1, ROUTE_TARGETS_MAX) as u32 * self.retry.attempts_max;
        let wait = self.timeouts.total.min(crate::llm::limits::WAIT_MAX);
        (wait + self.timeouts.total + self.retry.retry_after_max) * tries
    }

    /// Keys from the environment, default deadlines and retries; every secret the process
    /// was started with redacted.
    pub fn configured(settings: &LlmSettings) -> Gateway {
        let gateway =
            Gateway::new(Credentials::of(settings), Timeouts::default(), RetryPolicy::default());
        Gateway { redactor: Redactor::of(settings), ..gateway }
    }

    fn provider(&self, target: &Target) -> Box<dyn Provider> {
        let host =
            if target.host.is_empty() { target.provider.default_host() } else { &target.host };
        let (client, timeouts, base_url) = (self.client.clone(), self.timeouts, host.to_owned());
        match target.provider {
            ProviderKind::Offline => Box::new(Offline),
            ProviderKind::Ollama => Box::new(Ollama { client, base_url, timeouts }),
            ProviderKind::Openai => {
                let key =
                    self.credentials.key_for(ProviderKind::Openai, &base_url, target.key_bound);
                Box::new(OpenAi { client, base_url, timeouts, key })
            }
            ProviderKind::Anthropic => {
                let key =
                    self.credentials.key_for(ProviderKind::Anthropic, &base_url, target.key_bound);
                Box::new(Anthropic { client, base_url, timeouts, key })
            }
        }
    }

    /// One chat call over `route`, under no budget.
    pub async fn chat(
        &self,
        route: &Route,
        messages: &[Message],
        tools: &[ToolSpec],
        sink: Option<TokenSink<'_>>,
    ) -> Result<Answered, Failed> {
        self.call(Call { route, messages, tools, budgets: &[], let_through: None }, sink).await
    }

    /// One chat call: its worst case reserved against its budgets, then each target of its
    /// route in turn, each with its retries under the shared limits, then its usage (the
    /// provider's, or the estimate of what it did not report) settled against the budgets.
    pub async fn call(
        &self,
        call: Call<'_>,
        sink: Option<TokenSink<'_>>,
    ) -> Result<Answered, Failed> {
        let budgeted;
        let call = if !call.budgets.is_empty() && call.route.max_tokens.is_none() {
            // A worst case holds only if the provider is told it: a budgeted call without a
            // `max_tokens` is sent with the one it is reserved at.
            budgeted = Route { max_tokens: Some(RESERVED_OUTPUT_DEFAULT), ..call.route.clone() };
            Call { route: &budgeted, ..call }
        } else {
            call
        };
        let input = input_tokens_estimate(call.messages, call.tools);
        let output = u64::from(call.route.max_tokens.unwrap_or(RESERVED_OUTPUT_DEFAULT));
        let hold = self.hold(call.route);
        let reservation = self
            .reserve(call, input, output, hold)
            .await
            .map_err(|error| Failed { error, tries: vec![] })?;
        // The whole call ends within its hold, so its budgets are never released while it runs.
        let outcome = match tokio::time::timeout(hold, self.run(call, input + output, sink)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failed {
                error: LlmError::new(
                    Reason::Timeout,
                    format!("the call with all its tries took over {} s", hold.as_secs()),
                ),
                tries: vec![],
            }),
        };
        if let (Some(reservation), Some(budgets)) = (reservation, &self.budgets) {
            let (tokens, cost) = match &outcome {
                Ok(answered) => (answered.answer.usage.total(), answered.cost_usd),
                Err(_) => (0, 0.0),
            };
            budgets.settle(reservation, tokens, cost).await;
        }
        outcome
    }

    /// Holds the call's worst case (`input` and `output` tokens, at its dearest target's
    /// price) against its budgets for `hold`; nothing to hold for an unbudgeted call.
    async fn reserve(
        &self,
        call: Call<'_>,
        input: u64,
        output: u64,
        hold: Duration,
    ) -> Result<Option<Reservation>, LlmError> {
        if call.budgets.is_empty() {
            return Ok(None);
        }
        let Some(budgets) = &self.budgets else {
            return Err(LlmError {
                // Retryable: a process that reaches Redis can keep the budgets.
                server_error: true,
                ..LlmError::new(
                    Reason::BudgetExceeded,
                    "the budgets cannot be checked: the shared store (Redis) is not connected",
                )
            });
        };
        let worst_cost = call
            .route
            .targets
            .iter()
            .map(|target| target.cost_usd(input, output))
            .fold(0.0, f64::max);
        budgets.reserve(call.budgets, input + output, worst_cost, hold).await
    }

    /// Each target of the route in turn until one answers, or a failure that every target
    /// would share ends the call.
    async fn run(
        &self,
        call: Call<'_>,
        estimate: u64,
        mut sink: Option<TokenSink<'_>>,
    ) -> Result<Answered, Failed> {
        let mut tries = Vec::new();
        let mut last = LlmError::new(Reason::BadResponse, "the route has no target");
        for target in call.route.targets.iter().take(ROUTE_TARGETS_MAX) {
            let request = ChatRequest {
                model: target.model.clone(),
                messages: call.messages.to_vec(),
                tools: call.tools.to_vec(),
                temperature: call.route.temperature,
                max_tokens: call.route.max_tokens,
            };
            let outcome = self.run_target(
                target,
                &request,
                estimate,
                call.let_through,
                &mut sink,
                &mut tries,
            );
            match outcome.await {
                TargetOutcome::Answered(answer) => {
                    let usage = answer.usage;
                    let cost_usd = target.cost_usd(usage.input_tokens, usage.output_tokens);
                    return Ok(Answered { answer, provider: target.provider, tries, cost_usd });
                }
                TargetOutcome::CallFailed(error) => return Err(Failed { error, tries }),
                TargetOutcome::TargetFailed(error) => last = error,
            }
        }
        Err(Failed { error: last, tries })
    }

    /// The tries of one target, each recorded in `tries`, until it answers or the retry
    /// policy gives up on it.
    async fn run_target(
        &self,
        target: &Target,
        request: &ChatRequest,
        estimate: u64,
        let_through: Option<LetThrough<'_>>,
        sink: &mut Option<TokenSink<'_>>,
        tries: &mut Vec<Try>,
    ) -> TargetOutcome {
        let provider = self.provider(target);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match self.permit(target, estimate).await {
                Ok(permit) => permit,
                // The fleet's own limits say no more now: the next target may.
                Err(error) => return TargetOutcome::TargetFailed(error),
            };
            if let Some(LetThrough(tell)) = let_through {
                tell();
            }
            let started = Instant::now();
            let (outcome, streamed) = self.try_once(provider.as_ref(), request, sink).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            // What the provider did not count is estimated before anything counts it: the
            // metrics, the limits, the cost, the budgets and the record.
            let outcome = outcome.map(|mut answer| {
                crate::llm::estimate::fill(&mut answer, request);
                if answer.usage.estimate.is_some() {
                    metrics::counter!("brain_llm_usage_estimates_total", "provider" => target.provider.as_str(), "model" => target.model.clone())
                        .increment(1);
                }
                answer
            });
            let failure = outcome.as_ref().err().map(|error| error.reason);
            observe(target, started.elapsed(), &outcome);
            self.teach_limits(permit, &outcome).await;
            let (provider_kind, model) = (target.provider, target.model.clone());
            tries.push(Try { provider: provider_kind, model, attempt, latency_ms, failure });
            let error = match outcome {
                Ok(answer) => return TargetOutcome::Answered(answer),
                Err(error) => error.redacted(&self.redactor),
            };
            tracing::warn!(provider = target.provider.as_str(), model = target.model, attempt, %error, "LLM call failed");
            if streamed {
                // The client saw part of this answer: another try would repeat it.
                return TargetOutcome::CallFailed(error);
            }
            let Some(wait) = self.retry.wait(attempt, &error) else {
                // A failure of the request itself fails on every target alike.
                return if matches!(error.reason, Reason::ContextTooLong | Reason::BudgetExceeded) {
                    TargetOutcome::CallFailed(error)
                } else {
                    TargetOutcome::TargetFailed(error)
                };
            };
            metrics::counter!("brain_llm_retries_total", "provider" => target.provider.as_str())
                .increment(1);
            metrics::histogram!("brain_llm_retry_wait_seconds").record(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }

    /// A place for one try under the target's shared limits, waited for up to the total
    /// deadline; none to take without shared limits.
    async fn permit(&self, target: &Target, estimate: u64) -> Result<Option<Permit>, LlmError> {
        match &self.limiter {
            None => Ok(None),
            Some(limiter) => limiter.acquire(target, estimate, self.timeouts.total).await.map(Some),
        }
    }

    /// One try under the total deadline, its text relayed to `sink`; also says whether any
    /// text reached the client.
    async fn try_once(
        &self,
        provider: &dyn Provider,
        request: &ChatRequest,
        sink: &mut Option<TokenSink<'_>>,
    ) -> (Result<ChatAnswer, LlmError>, bool) {
        let streamed = AtomicBool::new(false);
        let outcome = match sink.as_mut() {
            Some(sink) => {
                let mut relay = |piece: &str| {
                    streamed.store(true, Ordering::Relaxed);
                    sink(piece);
                };
                call(provider, request, Some(&mut relay), self.timeouts.total).await
            }
            None => call(provider, request, None, self.timeouts.total).await,
        };
        (outcome, streamed.into_inner())
    }

    /// Gives back a try's place under the shared limits, with what the try taught them: the
    /// tokens it used, or a 429 and its `Retry-After`.
    async fn teach_limits(&self, permit: Option<Permit>, outcome: &Result<ChatAnswer, LlmError>) {
        let (Some(limiter), Some(permit)) = (&self.limiter, permit) else { return };
        let learned = match outcome {
            Ok(answer) => Outcome::Answered { tokens_used: answer.usage.total() },
            Err(error) if error.reason == Reason::RateLimited => {
                Outcome::RateLimited { retry_after: error.retry_after }
            }
            Err(_) => Outcome::Failed,
        };
        limiter.done(permit, learned).await;
    }
}

/// How the tries of one target ended.
enum TargetOutcome {
    Answered(ChatAnswer),
    /// The call ends here: no other target would do better, or the client saw part of this
    /// target's answer.
    CallFailed(LlmError),
    /// This target is done; the next one may answer.
    TargetFailed(LlmError),
}

impl Gateway {
    /// Embeddings of `inputs` from one target, under the total deadline, retried as a chat is.
    pub async fn embed(
        &self,
        target: &Target,
        inputs: &[String],
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let provider = self.provider(target);
        for attempt in 1.. {
            let outcome =
                tokio::time::timeout(self.timeouts.total, provider.embed(&target.model, inputs))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LlmError::new(Reason::Timeout, "no embeddings in time"))
                    });
            match outcome {
                Ok(vectors) => return Ok(vectors),
                Err(error) => match self.retry.wait(attempt, &error) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(error.redacted(&self.redactor)),
                },
            }
        }
        unreachable!("the loop returns")
    }
}

/// A try in `/metrics`: latency by provider, model and outcome; tokens; errors by reason.
fn observe(target: &Target, latency: Duration, outcome: &Result<ChatAnswer, LlmError>) {
    let (provider, model) = (target.provider.as_str(), target.model.clone());
    let outcome_name = match outcome {
        Ok(_) => "ok",
        Err(error) => error.reason.as_str(),
    };
    metrics::histogram!("brain_llm_call_seconds", "provider" => provider, "model" => model.clone(), "outcome" => outcome_name)
        .record(latency.as_secs_f64());
    match outcome {
        Ok(answer) => {
            metrics::counter!("brain_llm_tokens_total", "provider" => provider, "model" => model.clone(), "direction" => "input")
                .increment(answer.usage.input_tokens);
            metrics::counter!("brain_llm_tokens_total", "provider" => provider, "model" => model, "direction" => "output")
                .increment(answer.usage.output_tokens);
        }
        Err(error) => {
            metrics::counter!("brain_llm_errors_total", "provider" => provider, "model" => model, "reason" => error.reason.as_str())
                .increment(1);
        }
    }
}

/// One try under the total deadline.
async fn call<'a>(
    provider: &'a dyn Provider,
    request: &'a ChatRequest,
    sink: Option<TokenSink<'a>>,
    total: Duration,
) -> Result<ChatAnswer, LlmError> {
    match tokio::time::timeout(total, provider.chat(request, sink)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(LlmError::new(
            Reason::Timeout,
            format!("no complete answer within {} s", total.as_secs()),
        )),
    }
}
