//! The LLM gateway's runtime configuration as an aggregate: one stream per deployment
//! (`llm_config/default`), whose history is the audit trail of who changed what. The seed's
//! fields (provider, host, model, temperature, max_tokens, enabled) make the default route;
//! named routes list ordered fallback targets, and a price table gives each model's cost per
//! million input and output tokens.
//!
//! | from | event | to |
//! |---|---|---|
//! | any | `LlmConfigChanged` (the whole new settings, who, which fields changed) | those settings |
//! | any | `LlmConfigReset` (who) | the defaults |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::{Aggregate, DomainEvent};
use crate::budget::Budget;

/// Providers the gateway speaks.
pub const PROVIDERS: [&str; 4] = ["offline", "ollama", "openai", "anthropic"];
pub const HOST_LEN_MAX: usize = 500;
pub const MODEL_LEN_MAX: usize = 200;
pub const TEMPERATURE_MAX: f64 = 2.0;
pub const MAX_TOKENS_MAX: u32 = 1_000_000;
pub const ROUTES_MAX: usize = 32;
pub const ROUTE_NAME_LEN_MAX: usize = 64;
pub const TARGETS_MAX: usize = 8;
pub const PRICES_MAX: usize = 256;
/// Highest price per million tokens taken, in US dollars.
pub const PRICE_USD_MAX: f64 = 10_000.0;
pub const LIMITS_MAX: usize = 256;
pub const CONCURRENCY_MAX: u32 = 100_000;
pub const RPM_MAX: u32 = 10_000_000;
pub const TPM_MAX: u64 = 10_000_000_000;
pub const KIND_BUDGETS_MAX: usize = 256;

/// One provider and model.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    pub provider: String,
    /// Empty: the provider's default base URL.
    #[serde(default)]
    pub host: String,
    pub model: String,
}

/// Cost per million tokens, in US dollars.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

/// What one provider+model may be sent, by every process together. Each is optional: the
/// gateway still learns a lower rate from the provider's 429s.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (input and output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// Daily budgets (UTC days): of every call of the deployment, and of the calls of each agent
/// kind's missions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyBudgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Budget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, Budget>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// The default route's provider: `offline`, `ollama`, `openai`, `anthropic`.
    pub provider: String,
    #[serde(default)]
    pub host: String,
    pub model: String,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Off: every call fails at once (`provider_unreachable`), as if no LLM existed.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Named routes, each an ordered list of targets tried in turn.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<TargetSettings>>,
    /// Price per model name.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Shared limits per `<provider>/<model>` (`openai/gpt-4o-mini`).
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
    #[serde(default)]
    pub daily_budgets: DailyBudgets,
}

fn enabled() -> bool {
    true
}

impl Default for LlmSettings {
    /// A fresh install: offline, so the first mission completes with no LLM anywhere.
    fn default() -> LlmSettings {
        LlmSettings {
            provider: "offline".into(),
            host: String::new(),
            model: "offline".into(),
            temperature: None,
            max_tokens: None,
            enabled: true,
            routes: BTreeMap::new(),
            prices: BTreeMap::new(),
            limits: BTreeMap::new(),
            daily_budgets: DailyBudgets::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmConfigCommand {
    Set { settings: Box<LlmSettings>, by: String, now_ms: i64 },
    Reset { by: String, now_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LlmConfigEvent {
    LlmConfigChanged { settings: Box<LlmSettings>, changed: Vec<String>, by: String, at_ms: i64 },
    LlmConfigReset { by: String, at_ms: i64 },
}

impl DomainEvent for LlmConfigEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LlmConfigEvent::LlmConfigChanged { .. } => "LlmConfigChanged",
            LlmConfigEvent::LlmConfigReset { .. } => "LlmConfigReset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSettings {
    /// The field's path: `model`, `routes.fast[1].provider`, `prices.gpt-4o.input_usd_per_mtok`.
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmConfig {
    pub settings: LlmSettings,
    /// Set through the API and not reset since: the settings are in force. Otherwise the
    /// process's environment (`BRAIN_LLM_PROVIDER`...) decides, offline when it says nothing.
    pub configured: bool,
    pub updated_at_ms: Option<i64>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidSettings {
    InvalidSettings { field: field.into(), reason: reason.into() }
}

/// Whether `host` is a provider's base URL and nothing more: `http(s)://host[:port]`, or the
/// same with a `/v1` base. A path, query or user would let a configuration change aim the
/// gateway's POST (and whatever it reflects of the answer) at any URL of a server.
fn is_base_url(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("http://").or_else(|| host.strip_prefix("https://")) else {
        return false;
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority_ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    authority_ok && matches!(path, "" | "v1" | "v1/")
}

fn check_target(
    path: &str,
    provider: &str,
    host: &str,
    model: &str,
) -> Result<(), InvalidSettings> {
    if !PROVIDERS.contains(&provider) {
        return Err(invalid(
            format!("{path}provider"),
            format!("{provider:?} is not one of {}", PROVIDERS.join(", ")),
        ));
    }
    if host.chars().count() > HOST_LEN_MAX {
        return Err(invalid(format!("{path}host"), format!("at most {HOST_LEN_MAX} characters")));
    }
    if !host.is_empty() && !is_base_url(host) {
        return Err(invalid(
            format!("{path}host"),
            "must be http:// or https:// with a host and port only, or a base ending in /v1 \
             (no user, path, query or fragment)",
        ));
    }
    if model.trim().is_empty() || model.chars().count() > MODEL_LEN_MAX {
        return Err(invalid(format!("{path}model"), format!("1 to {MODEL_LEN_MAX} characters")));
    }
    Ok(())
}

/// The rules settings must meet; the error names the first field that breaks one.
pub fn validate(settings: &LlmSettings) -> Result<(), InvalidSettings> {
    check_target("", &settings.provider, &settings.host, &settings.model)?;
    if let Some(temperature) = settings.temperature
        && !(temperature.is_finite() && (0.0..=TEMPERATURE_MAX).contains(&temperature))
    {
        return Err(invalid("temperature", format!("a number from 0 to {TEMPERATURE_MAX}")));
    }
    if let Some(max_tokens) = settings.max_tokens
        && !(1..=MAX_TOKENS_MAX).contains(&max_tokens)
    {
        return Err(invalid("max_tokens", format!("1 to {MAX_TOKENS_MAX}")));
    }
    if settings.routes.len() > ROUTES_MAX {
        return Err(invalid("routes", format!("at most {ROUTES_MAX}")));
    }
    for (name, targets) in &settings.routes {
        let good = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if name.is_empty() || name.len() > ROUTE_NAME_LEN_MAX || !name.chars().all(good) {
            return Err(invalid(
                format!("routes.{name}"),
                format!("a route name is 1 to {ROUTE_NAME_LEN_MAX} of a-z, 0-9, _ and -"),
            ));
        }
        if targets.is_empty() || targets.len() > TARGETS_MAX {
            return Err(invalid(format!("routes.{name}"), format!("1 to {TARGETS_MAX} targets")));
        }
        for (n, target) in targets.iter().enumerate() {
            check_target(
                &format!("routes.{name}[{n}]."),
                &target.provider,
                &target.host,
                &target.model,
            )?;
        }
    }
    if settings.prices.len() > PRICES_MAX {
        return Err(invalid("prices", format!("at most {PRICES_MAX} models")));
    }
    for (model, price) in &settings.prices {
        if model.trim().is_empty() || model.chars().count() > MODEL_LEN_MAX {
            return Err(invalid(
                format!("prices.{model}"),
                format!("a model name is 1 to {MODEL_LEN_MAX} characters"),
            ));
        }
        for (field, value) in [
            ("input_usd_per_mtok", price.input_usd_per_mtok),
            ("output_usd_per_mtok", price.output_usd_per_mtok),
        ] {
            if !(value.is_finite() && (0.0..=PRICE_USD_MAX).contains(&value)) {
                return Err(invalid(
                    format!("prices.{model}.{field}"),
                    format!("a number from 0 to {PRICE_USD_MAX}"),
                ));
            }
        }
    }
    check_limits(settings)?;
    let check_budget = |path: String, budget: &Budget| {
        budget.check().map_err(|bad| invalid(format!("{path}.{}", bad.field), bad.reason))
    };
    if let Some(all) = &settings.daily_budgets.all {
        check_budget("daily_budgets.all".into(), all)?;
    }
    if settings.daily_budgets.kinds.len() > KIND_BUDGETS_MAX {
        return Err(invalid("daily_budgets.kinds", format!("at most {KIND_BUDGETS_MAX}")));
    }
    for (kind, budget) in &settings.daily_budgets.kinds {
        crate::mission::check_agent(kind)
            .map_err(|error| invalid(format!("daily_budgets.kinds.{kind}"), error.to_string()))?;
        check_budget(format!("daily_budgets.kinds.{kind}"), budget)?;
    }
    Ok(())
}

fn check_limits(settings: &LlmSettings) -> Result<(), InvalidSettings> {
    if settings.limits.len() > LIMITS_MAX {
        return Err(invalid("limits", format!("at most {LIMITS_MAX} targets")));
    }
    for (key, limits) in &settings.limits {
        let path = format!("limits.{key}");
        let well_formed = key.split_once('/').is_some_and(|(provider, model)| {
            PROVIDERS.contains(&provider)
                && !model.trim().is_empty()
                && model.chars().count() <= MODEL_LEN_MAX
        });
        if !well_formed {
            return Err(invalid(path, "a key is <provider>/<model>, such as openai/gpt-4o-mini"));
        }
        if limits.concurrency.is_some_and(|n| !(1..=CONCURRENCY_MAX).contains(&n)) {
            return Err(invalid(format!("{path}.concurrency"), format!("1 to {CONCURRENCY_MAX}")));
        }
        if limits.rpm.is_some_and(|n| !(1..=RPM_MAX).contains(&n)) {
            return Err(invalid(format!("{path}.rpm"), format!("1 to {RPM_MAX}")));
        }
        if limits.tpm.is_some_and(|n| !(1..=TPM_MAX).contains(&n)) {
            return Err(invalid(format!("{path}.tpm"), format!("1 to {TPM_MAX}")));
        }
    }
    Ok(())
}

/// The top-level fields that differ.
fn changed(before: &LlmSettings, after: &LlmSettings) -> Vec<String> {
    let mut changed = Vec::new();
    let mut field = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_owned());
        }
    };
    field("provider", before.provider != after.provider);
    field("host", before.host != after.host);
    field("model", before.model != after.model);
    field("temperature", before.temperature != after.temperature);
    field("max_tokens", before.max_tokens != after.max_tokens);
    field("enabled", before.enabled != after.enabled);
    field("routes", before.routes != after.routes);
    field("prices", before.prices != after.prices);
    field("limits", before.limits != after.limits);
    field("daily_budgets", before.daily_budgets != after.daily_budgets);
    changed
}

impl Aggregate for LlmConfig {
    type Command = LlmConfigCommand;
    type Event = LlmConfigEvent;
    type Error = InvalidSettings;

    fn stream_type() -> StreamType {
        StreamType::parse("llm_config").expect("a valid stream type")
    }

    fn decide(&self, command: LlmConfigCommand) -> Result<Vec<LlmConfigEvent>, InvalidSettings> {
        match command {
            LlmConfigCommand::Set { settings, by, now_ms } => {
                validate(&settings)?;
                let changed = changed(&self.settings, &settings);
                // The same settings again change nothing and record nothing.
                if changed.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![LlmConfigEvent::LlmConfigChanged { settings, changed, by, at_ms: now_ms }])
            }
            LlmConfigCommand::Reset { by, now_ms } => {
                if !self.configured {
                    return Ok(vec![]);
                }
                Ok(vec![LlmConfigEvent::LlmConfigReset { by, at_ms: now_ms }])
            }
        }
    }

    fn apply(&mut self, event: &LlmConfigEvent) {
        match event {
            LlmConfigEvent::LlmConfigChanged { settings, at_ms, .. } => {
                self.settings = (**settings).clone();
                self.configured = true;
                self.updated_at_ms = Some(*at_ms);
            }
            LlmConfigEvent::LlmConfigReset { at_ms, .. } => {
                self.settings = LlmSettings::default();
                self.configured = false;
                self.updated_at_ms = Some(*at_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ollama() -> LlmSettings {
        LlmSettings {
            provider: "ollama".into(),
            host: "http://localhost:11434".into(),
            model: "llama3.2".into(),
            temperature: Some(0.7),
            max_tokens: Some(2_048),
            ..LlmSettings::default()
        }
    }

    #[test]
    fn a_change_records_who_and_which_fields_and_the_same_settings_again_record_nothing() {
        let set = |settings, now_ms| LlmConfigCommand::Set {
            settings: Box::new(settings),
            by: "user:ann".into(),
            now_ms,
        };
        let events = LlmConfig::default().decide(set(ollama(), 5)).unwrap();
        let LlmConfigEvent::LlmConfigChanged { changed, by, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (changed.as_slice(), by.as_str()),
            (
                &["provider", "host", "model", "temperature", "max_tokens"].map(String::from)[..],
                "user:ann"
            )
        );
        let config = LlmConfig::fold(&events);
        assert_eq!(config.decide(set(ollama(), 6)), Ok(vec![]));
        let reset =
            config.decide(LlmConfigCommand::Reset { by: "user:bo".into(), now_ms: 7 }).unwrap();
        let mut history = events.clone();
        history.extend(reset);
        assert_eq!(LlmConfig::fold(&history).settings, LlmSettings::default());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let field = |settings: LlmSettings| validate(&settings).unwrap_err().field;
        assert_eq!(field(LlmSettings { provider: "gpt".into(), ..ollama() }), "provider");
        assert_eq!(field(LlmSettings { host: "localhost:11434".into(), ..ollama() }), "host");
        for aimed in [
            "http://10.0.0.1:8080/admin?x=",
            "http://internal/v1/../admin",
            "http://user:pw@host:1",
            "https://host/#frag",
            "http:///v1",
            "http://host/v2",
        ] {
            assert_eq!(field(LlmSettings { host: aimed.into(), ..ollama() }), "host", "{aimed}");
        }
        for base in ["http://host:11434", "https://api.example.com/v1", "http://[::1]:8/v1/"] {
            let settings = LlmSettings { host: base.into(), ..ollama() };
            assert!(validate(&settings).is_ok(), "{base}");
        }
        assert_eq!(field(LlmSettings { model: " ".into(), ..ollama() }), "model");
        assert_eq!(field(LlmSettings { temperature: Some(2.5), ..ollama() }), "temperature");
        assert_eq!(field(LlmSettings { temperature: Some(f64::NAN), ..ollama() }), "temperature");
        assert_eq!(field(LlmSettings { max_tokens: Some(0), ..ollama() }), "max_tokens");
        let bad_target =
            TargetSettings { provider: "openai".into(), host: String::new(), model: String::new() };
        let good_target =
            TargetSettings { provider: "ollama".into(), host: String::new(), model: "m".into() };
        let routes = BTreeMap::from([("fast".to_owned(), vec![good_target, bad_target])]);
        assert_eq!(field(LlmSettings { routes, ..ollama() }), "routes.fast[1].model");
        let routes = BTreeMap::from([("Fast!".to_owned(), vec![])]);
        assert_eq!(field(LlmSettings { routes, ..ollama() }), "routes.Fast!");
        let prices = BTreeMap::from([(
            "m".to_owned(),
            Price { input_usd_per_mtok: -1.0, output_usd_per_mtok: 1.0 },
        )]);
        assert_eq!(field(LlmSettings { prices, ..ollama() }), "prices.m.input_usd_per_mtok");
        let limits = BTreeMap::from([("gpt-4o".to_owned(), Limits::default())]);
        assert_eq!(field(LlmSettings { limits, ..ollama() }), "limits.gpt-4o");
        let limits = BTreeMap::from([(
            "openai/gpt-4o".to_owned(),
            Limits { rpm: Some(0), ..Limits::default() },
        )]);
        assert_eq!(field(LlmSettings { limits, ..ollama() }), "limits.openai/gpt-4o.rpm");
        let kinds = BTreeMap::from([(
            "coder".to_owned(),
            Budget { tokens_max: None, cost_usd_max: Some(0.0) },
        )]);
        let daily_budgets = DailyBudgets { all: None, kinds };
        assert_eq!(
            field(LlmSettings { daily_budgets, ..ollama() }),
            "daily_budgets.kinds.coder.cost_usd_max"
        );
        assert!(validate(&LlmSettings::default()).is_ok());
    }
}
