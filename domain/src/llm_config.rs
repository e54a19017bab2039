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
pub use crate::base_url::{clear_text_remote, is_base_url, key_base};
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
/// Providers whose calls carry an API key.
pub const KEYED_PROVIDERS: [&str; 2] = ["openai", "anthropic"];
/// Most hosts one provider's key may be bound to through the configuration.
pub const KEY_HOSTS_MAX: usize = 16;

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
    /// Base URLs, per keyed provider (`openai`, `anthropic`), that provider's key may be sent
    /// to besides those its processes were started with (its own, `BRAIN_LLM_HOST`,
    /// `BRAIN_LLM_KEY_HOSTS`). Binding a host needs the key in the same change (`keys`); a
    /// keyed target pointed at an unbound host with the key is bound here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_hosts: BTreeMap<String, Vec<String>>,
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
            key_hosts: BTreeMap::new(),
        }
    }
}

/// What the process deciding a change knows of the provider keys and the settings do not
/// say: for each provider whose key it holds, where that key goes by the process's own
/// configuration, and whether the change supplied the key again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldKeys(pub BTreeMap<String, HeldKey>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldKey {
    /// Where a target with no host calls.
    pub default_host: String,
    /// The base URLs (as [`key_base`] gives them) the key goes to by the process's start-up
    /// configuration.
    pub started: Vec<String>,
    /// The change came with this key, checked by the caller against the one it holds: whoever
    /// sent it knows the key already, so it may bind the key to another host.
    pub supplied: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmConfigCommand {
    Set { settings: Box<LlmSettings>, by: String, now_ms: i64, keys: HeldKeys },
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
            "must be an http:// or https:// base URL: host, port and at most a fixed path of \
             plain segments such as /openai/v1 (no user, query, fragment, escapes or dot segments)",
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
    check_key_hosts(settings)?;
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

fn check_key_hosts(settings: &LlmSettings) -> Result<(), InvalidSettings> {
    for (provider, hosts) in &settings.key_hosts {
        let path = format!("key_hosts.{provider}");
        if !KEYED_PROVIDERS.contains(&provider.as_str()) {
            return Err(invalid(
                path,
                format!("a key is bound for {}", KEYED_PROVIDERS.join(", ")),
            ));
        }
        if hosts.len() > KEY_HOSTS_MAX {
            return Err(invalid(path, format!("at most {KEY_HOSTS_MAX} hosts")));
        }
        for (n, host) in hosts.iter().enumerate() {
            if host.chars().count() > HOST_LEN_MAX || !is_base_url(host) {
                return Err(invalid(
                    format!("{path}[{n}]"),
                    format!("a base URL of at most {HOST_LEN_MAX} characters (see host)"),
                ));
            }
        }
    }
    Ok(())
}

/// Every target of `settings`: the field path of its host, its provider, its host.
fn targets(settings: &LlmSettings) -> Vec<(String, &str, &str)> {
    let mut targets = vec![("host".to_owned(), settings.provider.as_str(), settings.host.as_str())];
    for (name, route) in &settings.routes {
        for (n, target) in route.iter().enumerate() {
            targets.push((
                format!("routes.{name}[{n}].host"),
                target.provider.as_str(),
                target.host.as_str(),
            ));
        }
    }
    targets
}

/// Binds the keys of `after` as `keys` allow, from `before`: a host added to `key_hosts`, or a
/// keyed target pointed at a host its key is not bound to, needs the key in the change (and
/// the target's host is then bound); a keyed target never calls a remote host in clear text.
/// A target `before` already had is left as it was (its key still goes only where bound).
fn bind_keys(
    before: &LlmSettings,
    after: &mut LlmSettings,
    keys: &HeldKeys,
) -> Result<(), InvalidSettings> {
    let mut bound: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (provider, hosts) in &after.key_hosts {
        let had: Vec<String> = before
            .key_hosts
            .get(provider)
            .into_iter()
            .flatten()
            .filter_map(|h| key_base(h))
            .collect();
        for (n, host) in hosts.iter().enumerate() {
            let path = format!("key_hosts.{provider}[{n}]");
            let base = key_base(host).ok_or_else(|| invalid(&path, "not a base URL"))?;
            if !had.contains(&base) {
                let Some(key) = keys.0.get(provider) else {
                    return Err(invalid(
                        path,
                        format!("this server holds no {provider} key to bind"),
                    ));
                };
                if clear_text_remote(&base) {
                    return Err(clear_text(path, provider));
                }
                if !key.supplied {
                    return Err(invalid(
                        path,
                        format!(
                            "binding the {provider} key to another host needs the key in the same \
                             change (keys.{provider})"
                        ),
                    ));
                }
            }
            bound.entry(provider.clone()).or_default().push(base);
        }
    }
    let base_of = |provider: &str, host: &str| {
        let key = keys.0.get(provider)?;
        key_base(if host.is_empty() { &key.default_host } else { host })
    };
    let had: Vec<(&str, String)> = targets(before)
        .into_iter()
        .filter_map(|(_, provider, host)| Some((provider, base_of(provider, host)?)))
        .collect();
    for (path, provider, host) in targets(after) {
        let (Some(key), Some(base)) = (keys.0.get(provider), base_of(provider, host)) else {
            continue;
        };
        if had.contains(&(provider, base.clone())) {
            continue;
        }
        if clear_text_remote(&base) {
            return Err(clear_text(path, provider));
        }
        let hosts = bound.entry(provider.to_owned()).or_default();
        if key.started.contains(&base) || hosts.contains(&base) {
            continue;
        }
        if !key.supplied {
            let mut allowed = key.started.clone();
            allowed.extend(hosts.iter().cloned());
            return Err(invalid(
                path,
                format!(
                    "the {provider} key goes only to {}: pointing a target at {base} needs the key \
                     again in the same change (keys.{provider}), or the host in \
                     BRAIN_LLM_KEY_HOSTS",
                    allowed.join(", ")
                ),
            ));
        }
        hosts.push(base);
    }
    bound.retain(|_, hosts| {
        hosts.sort();
        hosts.dedup();
        !hosts.is_empty()
    });
    after.key_hosts = bound;
    Ok(())
}

fn clear_text(path: String, provider: &str) -> InvalidSettings {
    invalid(
        path,
        format!(
            "the {provider} key would cross the network in clear text: use https (plain http \
             only to this machine)"
        ),
    )
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
    field("key_hosts", before.key_hosts != after.key_hosts);
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
            LlmConfigCommand::Set { mut settings, by, now_ms, keys } => {
                validate(&settings)?;
                bind_keys(&self.settings, &mut settings, &keys)?;
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
            keys: HeldKeys::default(),
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
            "http://host/v1//x",
            "http://host/%2e%2e/x",
            "http://host/a/./b",
            "http://host:0",
            "http://host:65536",
            "http://host:8:9",
            "ftp://host",
            "http://ho st",
            "http://[zz]:1",
        ] {
            assert_eq!(field(LlmSettings { host: aimed.into(), ..ollama() }), "host", "{aimed}");
        }
        for base in [
            "http://host:11434",
            "https://api.example.com/v1",
            "http://[::1]:8/v1/",
            "http://host/v2",
            "https://gw.example/openai/v1",
            "https://gw.example/acct-1/gw_2/openai~x",
        ] {
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
        let key_hosts = BTreeMap::from([("ollama".to_owned(), vec!["http://h".to_owned()])]);
        assert_eq!(field(LlmSettings { key_hosts, ..ollama() }), "key_hosts.ollama");
        let key_hosts = BTreeMap::from([("openai".to_owned(), vec!["http://h?x=".to_owned()])]);
        assert_eq!(field(LlmSettings { key_hosts, ..ollama() }), "key_hosts.openai[0]");
    }

    fn openai(host: &str) -> LlmSettings {
        LlmSettings {
            provider: "openai".into(),
            host: host.into(),
            model: "m".into(),
            ..Default::default()
        }
    }

    fn held(supplied: bool) -> HeldKeys {
        HeldKeys(BTreeMap::from([(
            "openai".to_owned(),
            HeldKey {
                default_host: "https://api.openai.com".into(),
                started: vec!["https://api.openai.com".into(), "http://127.0.0.1:7".into()],
                supplied,
            },
        )]))
    }

    fn set(
        config: &LlmConfig,
        settings: LlmSettings,
        keys: HeldKeys,
    ) -> Result<LlmConfig, InvalidSettings> {
        let command =
            LlmConfigCommand::Set { settings: Box::new(settings), by: "u".into(), now_ms: 1, keys };
        let mut config = config.clone();
        for event in config.decide(command)? {
            config.apply(&event);
        }
        Ok(config)
    }

    #[test]
    fn a_keyed_target_moves_to_another_host_only_with_its_key() {
        let config =
            set(&LlmConfig::default(), openai("http://127.0.0.1:7/v1"), held(false)).unwrap();
        assert!(config.settings.key_hosts.is_empty(), "a started host needs no binding");

        // Pointed elsewhere without the key: refused, naming the field and the way out.
        let refused = set(&config, openai("https://attacker.example"), held(false)).unwrap_err();
        assert_eq!(refused.field, "host");
        assert!(refused.reason.contains("keys.openai"), "{}", refused.reason);
        let route = |host: &str| {
            let target =
                TargetSettings { provider: "openai".into(), host: host.into(), model: "m".into() };
            LlmSettings { routes: BTreeMap::from([("r".to_owned(), vec![target])]), ..openai("") }
        };
        assert_eq!(
            set(&config, route("https://x.example"), held(false)).unwrap_err().field,
            "routes.r[0].host"
        );
        let listed = LlmSettings {
            key_hosts: BTreeMap::from([(
                "openai".to_owned(),
                vec!["https://x.example".to_owned()],
            )]),
            ..openai("")
        };
        assert_eq!(
            set(&config, listed.clone(), held(false)).unwrap_err().field,
            "key_hosts.openai[0]"
        );
        // No key held for the provider: nothing to leak, nothing to bind.
        assert!(set(&config, openai("https://x.example"), HeldKeys::default()).is_ok());
        assert_eq!(
            set(&config, listed.clone(), HeldKeys::default()).unwrap_err().field,
            "key_hosts.openai[0]"
        );

        // With the key: bound, canonically, and kept while the host stays.
        let moved = set(&config, openai("https://GW.example/openai/v1"), held(true)).unwrap();
        assert_eq!(moved.settings.key_hosts["openai"], ["https://gw.example/openai"]);
        let again = set(
            &moved,
            LlmSettings { temperature: Some(0.5), ..moved.settings.clone() },
            held(false),
        );
        assert_eq!(again.unwrap().settings.key_hosts["openai"], ["https://gw.example/openai"]);
        assert!(set(&config, listed, held(true)).is_ok());

        // Clear text to a remote host is refused even with the key; loopback is fine.
        let plain = set(&config, openai("http://gw.example"), held(true)).unwrap_err();
        assert!(plain.reason.contains("clear text"), "{}", plain.reason);
        assert!(set(&config, openai("http://localhost:9"), held(true)).is_ok());

        // A target the settings had before stays as it was, bound or not.
        let before = LlmConfig {
            settings: openai("https://old.example"),
            configured: true,
            updated_at_ms: None,
        };
        let kept = set(
            &before,
            LlmSettings { temperature: Some(1.0), ..openai("https://old.example") },
            held(false),
        );
        assert!(kept.unwrap().settings.key_hosts.is_empty());
    }
}
