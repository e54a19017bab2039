//! The route a call takes, from the runtime configuration in the log: read at every call, so
//! a change through `PUT /api/llm/config` applies to the next call in every process. Until it
//! is configured (or after a reset), the process's environment decides (`BRAIN_LLM_PROVIDER`,
//! `BRAIN_LLM_HOST`, `BRAIN_LLM_MODEL`), and offline when that says nothing.

use std::collections::BTreeMap;

use domain::StreamId;
use domain::llm_config::{LlmConfig, LlmSettings, Price, TargetSettings};

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::llm::gateway::{ProviderKind, Route, Target};

/// The one configuration stream of a deployment.
pub fn stream_id() -> StreamId {
    StreamId::parse("default").expect("a valid stream id")
}

fn target(settings: &TargetSettings) -> Option<Target> {
    Some(Target {
        provider: ProviderKind::parse(&settings.provider)?,
        host: settings.host.clone(),
        model: settings.model.clone(),
    })
}

/// The default route of `settings`, or the named one.
pub fn route_of(settings: &LlmSettings, name: Option<&str>) -> Option<Route> {
    let targets = match name {
        None | Some("default") => vec![target(&TargetSettings {
            provider: settings.provider.clone(),
            host: settings.host.clone(),
            model: settings.model.clone(),
        })?],
        Some(name) => settings.routes.get(name)?.iter().filter_map(target).collect(),
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
    /// `None` when the gateway is switched off (`enabled: false`).
    pub route: Option<Route>,
    pub prices: BTreeMap<String, Price>,
}

impl Resolved {
    /// The environment's route, no prices.
    pub fn from_env() -> Resolved {
        let route = Route::from_env().unwrap_or_else(|_| Route::from_env_offline());
        Resolved { route: Some(route), prices: BTreeMap::new() }
    }

    /// What `usage` of `model` cost, at its price (0 without one).
    pub fn cost_usd(&self, model: &str, input_tokens: u64, output_tokens: u64) -> f64 {
        self.prices.get(model).map_or(0.0, |price| {
            (input_tokens as f64 * price.input_usd_per_mtok
                + output_tokens as f64 * price.output_usd_per_mtok)
                / 1_000_000.0
        })
    }
}

/// The route configured under `name`, if there is one.
pub async fn named_route(
    store: &EventStore,
    name: &str,
) -> Result<Option<Route>, CommandError<domain::llm_config::InvalidSettings>> {
    let (config, _) = command::load::<LlmConfig>(store, &stream_id()).await?;
    if !config.configured || !config.settings.routes.contains_key(name) {
        return Ok(None);
    }
    Ok(route_of(&config.settings, Some(name)))
}

/// The default route and the prices, as configured now.
pub async fn current(
    store: &EventStore,
) -> Result<Resolved, CommandError<domain::llm_config::InvalidSettings>> {
    let (config, _) = command::load::<LlmConfig>(store, &stream_id()).await?;
    if !config.configured {
        return Ok(Resolved::from_env());
    }
    let route = config.settings.enabled.then(|| route_of(&config.settings, None)).flatten();
    Ok(Resolved { route, prices: config.settings.prices })
}
