//! The route a call takes, from the runtime configuration in the log: read at every call, so
//! a change through `PUT /api/llm/config` applies to the next call in every process. Until it
//! is configured (or after a reset), the process's start-up settings decide
//! ([`crate::config::llm::LlmSettings`]: `BRAIN_LLM_PROVIDER`, `BRAIN_LLM_HOST`,
//! `BRAIN_LLM_MODEL`), offline when they name no provider.

use std::collections::BTreeMap;

use domain::StreamId;
use domain::llm_config::{DailyBudgets, Limits, LlmConfig, LlmSettings, Price, TargetSettings};

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::llm::gateway::{ProviderKind, Route, Target};

/// The one configuration stream of a deployment.
pub fn stream_id() -> StreamId {
    StreamId::parse("default").expect("a valid stream id")
}

/// A configured target, with its limits and its price.
fn target(settings: &LlmSettings, target: &TargetSettings) -> Option<Target> {
    let provider = ProviderKind::parse(&target.provider)?;
    let limits_key = format!("{}/{}", target.provider, target.model);
    let host = if target.host.is_empty() { provider.default_host() } else { &target.host };
    let base = crate::config::llm::key_base(host);
    let bound = settings.key_hosts.get(&target.provider).into_iter().flatten();
    let key_bound =
        base.is_some() && bound.map(|h| crate::config::llm::key_base(h)).any(|b| b == base);
    Some(Target {
        limits: settings.limits.get(&limits_key).copied().unwrap_or_default(),
        price: settings.prices.get(&target.model).copied(),
        key_bound,
        ..Target::new(provider, target.host.clone(), target.model.clone())
    })
}

/// The default route of `settings`, or the named one.
pub fn route_of(settings: &LlmSettings, name: Option<&str>) -> Option<Route> {
    let targets = match name {
        None | Some("default") => vec![target(
            settings,
            &TargetSettings {
                provider: settings.provider.clone(),
                host: settings.host.clone(),
                model: settings.model.clone(),
            },
        )?],
        Some(name) => {
            settings.routes.get(name)?.iter().filter_map(|t| target(settings, t)).collect()
        }
    };
    Some(Route {
        targets,
        temperature: settings.temperature.map(|t| t as f32),
        max_tokens: settings.max_tokens,
    })
}

/// What a call uses now.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The default route; `None` when the gateway is switched off (`enabled: false`).
    pub route: Option<Route>,
    /// The named routes.
    pub routes: BTreeMap<String, Route>,
    pub daily_budgets: DailyBudgets,
    /// For a target given another model than configured.
    pub prices: BTreeMap<String, Price>,
    pub limits: BTreeMap<String, Limits>,
}

impl Resolved {
    /// The start-up settings' route: no named routes, no prices, no budgets.
    pub fn fallback(settings: &crate::config::llm::LlmSettings) -> Resolved {
        Resolved {
            route: Some(Route::fallback(settings)),
            routes: BTreeMap::new(),
            daily_budgets: DailyBudgets::default(),
            prices: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    }

    /// `target` running `model` instead: that model's price and limits, not the configured
    /// one's.
    pub fn with_model(&self, target: &mut Target, model: &str) {
        target.model = model.to_owned();
        target.price = self.prices.get(model).copied();
        let key = format!("{}/{model}", target.provider.as_str());
        target.limits = self.limits.get(&key).copied().unwrap_or_default();
    }

    /// The route called `name` (`None` or `default`: the default route). Fails with a reason
    /// to show when there is no such route or the gateway is off.
    pub fn route(&self, name: Option<&str>) -> Result<&Route, String> {
        let Some(default) = &self.route else {
            return Err("the LLM gateway is switched off (enabled: false)".into());
        };
        match name {
            None | Some("default") => Ok(default),
            Some(name) => self.routes.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.routes.keys().map(String::as_str).collect();
                format!(
                    "no LLM route named {name:?} (configured: default{}{})",
                    if known.is_empty() { "" } else { ", " },
                    known.join(", ")
                )
            }),
        }
    }
}

/// The routes and budgets as configured now; the start-up settings' route while nothing is.
pub async fn current(
    store: &EventStore,
    fallback: &crate::config::llm::LlmSettings,
) -> Result<Resolved, CommandError<domain::llm_config::InvalidSettings>> {
    let (config, _) = command::load::<LlmConfig>(store, &stream_id()).await?;
    if !config.configured {
        return Ok(Resolved::fallback(fallback));
    }
    let settings = &config.settings;
    let route = settings.enabled.then(|| route_of(settings, None)).flatten();
    let routes = settings
        .routes
        .keys()
        .filter_map(|name| Some((name.clone(), route_of(settings, Some(name))?)))
        .collect();
    Ok(Resolved {
        route,
        routes,
        daily_budgets: settings.daily_budgets.clone(),
        prices: settings.prices.clone(),
        limits: settings.limits.clone(),
    })
}
