//! One LLM call as a mission's history records it (`MissionLlmCalled`).

use serde::{Deserialize, Serialize};

/// One LLM call as the mission's history keeps it: what was asked and answered (within a size
/// bound, or only the usage when the deployment records no more), what it cost and how it
/// ended. Recording the answer is what lets a run be replayed without the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The route taken (`default` or a named one).
    pub route: String,
    /// The agent kind of the calling mission (empty for a call with no mission).
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
}
