//! Hosting built-in agents in a worker process: each supervised agent the worker serves is
//! registered in the agent registry (`<worker id>/<kind>`, owned by `worker:<worker id>`, a
//! new agent id each time the worker starts),
//! heartbeats every second with its status and running missions, records its restarts and its
//! failure as commands (so they are in its history, with the reason), and carries out the
//! controls the heartbeat answers bring (stop, start, restart). At shutdown it deregisters.
//!
//! The owner `worker:<worker id>` is what tells the agent supervisor whose leases to revoke
//! when the agent is marked dead: a built-in agent's missions are held by its worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::agent::{Agent, AgentCommand, AgentError, AgentState, Registration};
use domain::heartbeat::Beat;
use domain::{EventMetadata, StreamId};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agents::heartbeat::{HeartbeatError, Heartbeats};
use crate::agents::restart::{Intensity, LifeEvent, Restarting};
use crate::agents::tools::mcp::McpHub;
use crate::agents::view::AgentViewStore;
use crate::clock::LeaseClock;
use crate::config::Namespace;
use crate::config::agents::BuiltinSettings;
use crate::config::llm::LlmSettings;
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::missions::queue::Queue;
use crate::missions::worker::{self, WorkerConfig, WorkerError};

/// How often a hosted agent heartbeats and looks at its controls.
pub const HOST_INTERVAL: Duration = Duration::from_secs(1);

/// The owner a built-in agent registers under.
pub fn owner(worker_id: &str) -> String {
    format!("{OWNER_PREFIX}{worker_id}")
}

/// Owners starting with this are built-in workers'; external agents may not use it.
pub const OWNER_PREFIX: &str = "worker:";

/// How a worker's built-in agents are made and hosted.
#[derive(Clone)]
pub struct Hosting {
    /// Which built-in agent serves which kind, and what the thinking ones may use.
    pub builtin: Arc<BuiltinSettings>,
    /// The LLM gateway's start-up settings.
    pub llm: Arc<LlmSettings>,
    pub intensity: Intensity,
    /// How often an unchanged heartbeat is recorded again (zero: never).
    pub record_every: Duration,
    /// Where answers stream as they are generated.
    pub tokens: Option<async_nats::Client>,
    /// The process's MCP servers; a worker without them starts its own.
    pub mcp: Option<crate::agents::tools::mcp::McpHub>,
}

/// Runs a worker with the built-in agents of `hosting.builtin.worker_agents`, made here with
/// what this process connected: registered, heartbeating, restarted within `intensity`,
/// streaming their answers on `tokens` when given. The agents in `config` are replaced by
/// those. The agents deregister once the worker has drained.
pub async fn run_worker(
    store: EventStore,
    queue: Queue,
    namespace: Namespace,
    mut config: WorkerConfig,
    hosting: Hosting,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let Hosting { builtin, llm, intensity, record_every, tokens, mcp } = hosting;
    let clock = LeaseClock::connect(store.pool().clone()).await?;
    let mcp_stop = CancellationToken::new();
    let mcp = match mcp {
        Some(hub) => hub,
        None => McpHub::start(store.pool().clone(), None, mcp_stop.clone())
            .await
            .map_err(|error| WorkerError::Mcp(error.to_string()))?,
    };
    let context = crate::agents::Context {
        builtin: builtin.clone(),
        llm,
        store: Some(store.clone()),
        tokens: tokens.map(|nats| (nats, namespace.clone())),
        shared: Some((queue.connection(), namespace.clone())),
        mcp: Some(mcp),
    };
    let (agents, supervised) = crate::agents::build(&builtin.worker_agents, &context, intensity);
    config.agents = agents;
    let host = Host {
        heartbeats: Heartbeats {
            store: store.clone(),
            view: AgentViewStore::new(queue.connection(), &namespace),
            clock,
            record_every,
        },
        worker_id: config.worker_id.clone(),
        agents: supervised,
    };
    let host_stop = CancellationToken::new();
    let hosting = tokio::spawn(host.run(host_stop.clone()));
    let worked = worker::run(store, queue, namespace, config, shutdown).await;
    host_stop.cancel();
    // The servers this worker started end with it (the children's process groups killed).
    mcp_stop.cancel();
    if let Err(error) = hosting.await {
        tracing::error!(%error, "agent host ended abnormally");
    }
    worked
}

struct Hosted {
    agent_id: StreamId,
    shared: Arc<Restarting>,
    registration: Registration,
    registered: bool,
    /// A restart was carried out and its report not yet seen in the view.
    restarting: bool,
}

pub struct Host {
    pub heartbeats: Heartbeats,
    pub worker_id: String,
    /// The supervised agents this host tends, as [`crate::agents::build`] made them.
    pub agents: Vec<Arc<Restarting>>,
}

impl Host {
    /// Hosts every agent of `agents` until `shutdown`, then deregisters them.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut hosted: Vec<Hosted> = self
            .agents
            .iter()
            .map(|shared| {
                let (kind, shared) = (&shared.kind, shared.clone());
                let name = format!("{}/{kind}", self.worker_id);
                let owner = owner(&self.worker_id);
                // A fresh agent per start of the worker: a deregistered id is never reused,
                // and a worker restarted under the same `BRAIN_WORKER_ID` must register anew.
                let agent_id = StreamId::from(Uuid::now_v7());
                let registration = Registration {
                    name,
                    kind: kind.clone(),
                    capabilities: vec![shared.implementation.clone()],
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    owner,
                    labels: BTreeMap::from([("builtin".to_owned(), "true".to_owned())]),
                    key_id: None,
                };
                Hosted { agent_id, shared, registration, registered: false, restarting: false }
            })
            .collect();
        loop {
            for agent in &mut hosted {
                self.tend(agent).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(HOST_INTERVAL) => {}
            }
        }
        for agent in &hosted {
            let deregister = AgentCommand::Deregister {
                by: self.actor(),
                reason: format!("worker {} stopped", self.worker_id),
                now_ms: self.heartbeats.clock.now_ms(),
            };
            self.command(agent, deregister).await;
        }
    }

    fn actor(&self) -> String {
        format!("worker:{}", self.worker_id)
    }

    fn metadata(&self) -> EventMetadata {
        let mut metadata = EventMetadata::new(self.actor(), OffsetDateTime::now_utc());
        metadata.command_id = Some(Uuid::now_v7());
        metadata
    }

    async fn command(&self, agent: &Hosted, command: AgentCommand) -> bool {
        let executed = command::execute::<Agent>(
            &self.heartbeats.store,
            &agent.agent_id,
            self.metadata(),
            || command.clone(),
        )
        .await;
        match executed {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(agent = agent.registration.name, %error, "hosted agent command failed");
                false
            }
        }
    }

    /// One round for one agent: register it if needed, record what happened to it, heartbeat,
    /// and follow the answer.
    async fn tend(&self, agent: &mut Hosted) {
        let now = self.heartbeats.clock.now_ms();
        if !agent.registered {
            let register =
                AgentCommand::Register { registration: agent.registration.clone(), now_ms: now };
            agent.registered = self.command(agent, register).await;
            if !agent.registered {
                return;
            }
        }
        for event in agent.shared.take_events() {
            let command = match event {
                LifeEvent::Restarted { reason } => {
                    AgentCommand::ReportRestarted { reason, now_ms: now }
                }
                LifeEvent::Failed { reason } => AgentCommand::MarkFailed { reason, now_ms: now },
            };
            self.command(agent, command).await;
        }
        let mut running = agent.shared.running();
        let load = (running.len() as f64).min(domain::heartbeat::LOAD_MAX);
        // A heartbeat names at most RUNNING_MAX missions; the load still counts them all.
        running.truncate(domain::heartbeat::RUNNING_MAX);
        let beat = Beat { status: agent.shared.status().to_owned(), load, running };
        match self.heartbeats.beat(&agent.agent_id, beat, self.metadata(), None).await {
            Ok(answer) => {
                match answer.state {
                    AgentState::Stopped => agent.shared.stop(),
                    AgentState::Failed => agent.shared.fail("marked failed in the log"),
                    // Down here, up in the view: the view may be a moment behind the failure
                    // this host just recorded, so the log decides.
                    AgentState::Active if matches!(agent.shared.status(), "failed" | "stopped") => {
                        match command::load::<Agent>(&self.heartbeats.store, &agent.agent_id).await
                        {
                            Ok((log, _)) if log.state == AgentState::Active => agent.shared.start(),
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "cannot read the agent's stream"),
                        }
                    }
                    _ => {}
                }
                match (answer.restart_requested, agent.restarting) {
                    (true, false) => {
                        agent.shared.restart("restart requested");
                        agent.restarting = true;
                    }
                    (false, _) => agent.restarting = false,
                    (true, true) => {}
                }
            }
            // Registered elsewhere (a database recreated under a running worker): again.
            Err(HeartbeatError::Agent(CommandError::Rejected(AgentError::NotFound))) => {
                agent.registered = false;
            }
            Err(error) => {
                tracing::warn!(agent = agent.registration.name, %error, "hosted agent heartbeat failed")
            }
        }
    }
}
