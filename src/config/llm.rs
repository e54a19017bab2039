//! The LLM gateway's settings from the process's start: the route used until one is
//! configured in the log (`PUT /api/llm/config`), what a call record keeps, and the
//! providers' API keys. A key is held as a [`Secret`], which `Debug` never shows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The route's provider when none is named: deterministic answers, no network.
pub const LLM_PROVIDER_DEFAULT: &str = "offline";
pub const LLM_RECORD_DEFAULT: &str = "full";

/// The wire protocol a target speaks.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Offline,
    Ollama,
    Openai,
    Anthropic,
}

impl ProviderKind {
    pub fn parse(name: &str) -> Option<ProviderKind> {
        match name {
            "offline" => Some(ProviderKind::Offline),
            "ollama" => Some(ProviderKind::Ollama),
            "openai" => Some(ProviderKind::Openai),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Offline => "offline",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// Where the provider answers when no host is given.
    pub fn default_host(self) -> &'static str {
        match self {
            ProviderKind::Offline => "",
            ProviderKind::Ollama => "http://localhost:11434",
            ProviderKind::Openai => "https://api.openai.com",
            ProviderKind::Anthropic => "https://api.anthropic.com",
        }
    }

    pub fn default_model(self) -> &'static str {
        match self {
            ProviderKind::Offline => "offline",
            ProviderKind::Ollama => "llama3.2",
            ProviderKind::Openai => "gpt-4o-mini",
            ProviderKind::Anthropic => "claude-3-5-haiku-latest",
        }
    }
}

/// What a call record holds: everything within the bound, or the usage alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordMode {
    Full,
    Usage,
}

/// A value that must never be shown: `Debug` and `Display` print only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place it is sent to.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<set>")
    }
}

/// The LLM gateway's start-up settings.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LlmSettings {
    /// The default route's provider until one is configured.
    #[arg(long = "llm-provider", env = "BRAIN_LLM_PROVIDER", value_enum, default_value = LLM_PROVIDER_DEFAULT)]
    pub provider: ProviderKind,
    /// The provider's base URL (default: the provider's own).
    #[arg(long = "llm-host", env = "BRAIN_LLM_HOST", value_parser = base_url)]
    pub host: Option<String>,
    /// The model (default: the provider's usual one).
    #[arg(long = "llm-model", env = "BRAIN_LLM_MODEL")]
    pub model: Option<String>,
    /// What a recorded LLM call keeps: `full` (request and answer, each bounded) or `usage`.
    #[arg(long = "llm-record", env = "BRAIN_LLM_RECORD", value_enum, default_value = LLM_RECORD_DEFAULT)]
    pub record: RecordMode,
    /// OpenAI's (or an OpenAI-compatible server's) API key; better set in the environment
    /// than on a command line others can list.
    #[arg(long = "openai-api-key", env = "OPENAI_API_KEY", hide_env_values = true, value_parser = secret)]
    pub openai_api_key: Option<Secret>,
    /// Anthropic's API key; better set in the environment.
    #[arg(long = "anthropic-api-key", env = "ANTHROPIC_API_KEY", hide_env_values = true, value_parser = secret)]
    pub anthropic_api_key: Option<Secret>,
    /// Base URLs, comma-separated, that the provider keys may also be sent to, besides each
    /// provider's own and `BRAIN_LLM_HOST` (a fallback target on another OpenAI-compatible
    /// server). A target elsewhere is called without the key, unless a configuration change
    /// that came with the key bound it (`key_hosts`); never over plain http to another machine.
    #[arg(long = "llm-key-hosts", env = "BRAIN_LLM_KEY_HOSTS", value_delimiter = ',', value_parser = base_url)]
    pub key_hosts: Vec<String>,
    /// The process's other secrets (its services' passwords, the admin key), set when it
    /// starts: what it records never holds them ([`crate::secrets`]). Never an argument.
    #[arg(skip)]
    pub secrets: Vec<Secret>,
}

impl Default for LlmSettings {
    fn default() -> LlmSettings {
        LlmSettings {
            provider: ProviderKind::Offline,
            host: None,
            model: None,
            record: RecordMode::Full,
            openai_api_key: None,
            anthropic_api_key: None,
            key_hosts: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

impl LlmSettings {
    /// The model the fallback route runs: the one set, else the provider's usual one.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(self.provider.default_model())
    }
}

/// What a key is bound to: a base URL in its canonical form (the rule the `llm_config`
/// aggregate applies to a configured host).
pub fn key_base(base_url: &str) -> Option<String> {
    domain::llm_config::key_base(base_url)
}

/// A provider's base URL and nothing more: scheme, host, port, at most a fixed path prefix.
fn base_url(value: &str) -> Result<String, String> {
    if domain::llm_config::is_base_url(value) {
        return Ok(value.to_owned());
    }
    Err(format!(
        "{value:?}: an http:// or https:// base URL is expected: host, port and at most a fixed \
         path such as /openai/v1 (no user, query or fragment)"
    ))
}

fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_key() {
        let settings = LlmSettings {
            openai_api_key: Some(Secret::new("sk-very-secret")),
            ..LlmSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }
}
