//! One LLM call (`MissionLlmCalled`) and one tool call (`MissionToolCalled`) as a mission's
//! history records them: read in order, they are the agent's reasoning.

use serde::{Deserialize, Serialize};

/// One LLM call as the mission's history keeps it: what was asked and answered (within a size
/// bound, or only the usage when the deployment records no more), what it cost and how it
/// ended. Recording the answer is what lets a run be replayed without the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The route taken (`default` or a named one).
    pub route: String,
    /// The agent kind of the calling mission. A call with no mission: `chat:<kind>` for a
    /// chat with that kind, `api` for `POST /v1/chat/completions` (empty in records made
    /// before those labels).
    #[serde(default)]
    pub kind: String,
    /// The provider and model that answered, or the last one tried.
    pub provider: String,
    pub model: String,
    /// Tries over all targets, the first included.
    pub tries: u32,
    /// The messages sent (`null` when only usage is recorded).
    #[serde(default)]
    pub request: serde_json::Value,
    /// The answer's text and tool calls (`null` when only usage is recorded, or it failed).
    #[serde(default)]
    pub response: serde_json::Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// At the model's price in the configuration; 0 without one.
    pub cost_usd: f64,
    pub latency_ms: u64,
    /// `ok`, or the failure's reason (`rate_limited`, `timeout`...).
    pub outcome: String,
    /// Copied from the run a fork replays, not made again: its tokens and cost were spent
    /// (and counted) there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// Present when a token count above is BRAiN's estimate, because the provider reported
    /// none (a stream without its usage chunk, a zero for a side that had text): which
    /// counts, and how. Absent, both are the provider's (and in events older than estimates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_estimate: Option<UsageEstimate>,
}

/// Which of a call's token counts BRAiN estimated, and how (decision 0037). The tokens still
/// count in budgets, limits and cost: a call that answered is never recorded as 0 tokens.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEstimate {
    /// `input_tokens` is the estimate (else the provider's count).
    pub input: bool,
    /// `output_tokens` is the estimate (else the provider's count).
    pub output: bool,
    pub method: EstimateMethod,
}

/// How an estimate was counted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateMethod {
    /// A token per three bytes of text, rounded up, plus the framing of each message and
    /// tool: more than the tokenizers of today's models count for the same text, so a budget
    /// errs on the side of stopping early.
    ThreeBytesPerToken,
    /// A method this version does not know (written by a newer one).
    #[serde(other)]
    Other,
}

/// One tool call the model asked for, as the agent ran it, or refused to (a path outside the
/// root, a command off the list, arguments that do not match the schema: refused before
/// anything ran, the refusal fed back to the model as the tool's error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The step of the agent loop (1 for the first answer of the model).
    pub step: u32,
    /// The provider's id for the call.
    pub call_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// What the tool answered (`null` when it failed or was refused); cut to a bound.
    #[serde(default)]
    pub result: serde_json::Value,
    /// Why it failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Refused before it ran.
    #[serde(default)]
    pub refused: bool,
    pub duration_ms: u64,
    /// Copied from the run a fork replays, not run again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}
