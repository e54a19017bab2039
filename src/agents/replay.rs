//! Replay and fork of a recorded run (`brain missions replay`, `brain missions fork`, and
//! their routes).
//!
//! A replay plays a finished mission's attempt back through today's agent loop (its prompt
//! from `BRAIN_AGENT_PROMPTS` or the build, its tools from the process's settings) in
//! [`Mode::Check`](crate::agents::agent_loop::Mode::Check): the recorded answers stand in for
//! the model and the recorded results for the tools, nothing is called and nothing is
//! written, and it reports either that the code decides as it did then or the first step
//! where it does not. A fork enqueues a new mission that plays the first steps of a run back
//! and goes on live from there; the fork and the origin name each other in their histories
//! (`forked_from` in the fork's spec, `MissionForked` in the origin's).

use domain::mission::{ForkLink, Mission, MissionCommand, MissionSpec};
use domain::{EventMetadata, StreamId};
use serde::Serialize;
use serde_json::Value;

use crate::agents::agent_loop::{Divergence, Ended};
use crate::agents::record::{self, Record};
use crate::agents::{BuiltinSettings, Context, Implementation};
use crate::eventlog::command::{self, CommandError, Create};
use crate::eventlog::store::EventStore;
use crate::missions::agent::Task;

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub mission_id: String,
    pub attempt: u32,
    /// The agent kind, and the built-in agent whose code was played back.
    pub agent: String,
    pub implementation: String,
    /// Model calls in the record.
    pub steps: u32,
    pub tool_calls: u32,
    /// `identical` or `diverged`.
    pub verdict: String,
    #[schema(value_type = Option<Object>)]
    pub divergence: Option<Divergence>,
}

/// Why a replay or a fork cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("mission {0} does not exist")]
    NotFound(String),
    /// The mission, the attempt or the step asked for cannot be replayed; says why.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(String),
    /// The fork's append was refused or failed.
    #[error(transparent)]
    Command(#[from] CommandError<domain::mission::MissionError>),
}

/// The built-in agent that runs kind `kind` here (per the worker agents of `settings`, else
/// the one named like the kind), if it is one that thinks in steps.
pub fn implementation_of(settings: &BuiltinSettings, kind: &str) -> Option<Implementation> {
    let implementation =
        settings.worker_agents.get(kind).or_else(|| Implementation::parse(kind))?;
    implementation.thinks().then_some(implementation)
}

async fn load(
    store: &EventStore,
    mission_id: &str,
) -> Result<(Mission, Vec<domain::RecordedEvent>), ReplayError> {
    let (mission, events) = record::history(store, mission_id).await.map_err(ReplayError::Store)?;
    if mission.spec.is_none() {
        return Err(ReplayError::NotFound(mission_id.to_owned()));
    }
    Ok((mission, events))
}

/// The attempt asked for, or the mission's last one; and its record.
fn attempt_record(
    events: &[domain::RecordedEvent],
    attempt: Option<u32>,
) -> Result<(u32, Record), ReplayError> {
    let attempt = attempt.or(record::last_attempt(events)).unwrap_or(1);
    let record = Record::of_attempt(events, attempt).map_err(ReplayError::Store)?;
    if record.answers.is_empty() {
        return Err(ReplayError::Refused(format!(
            "attempt {attempt} made no model call that answered: there is nothing to replay"
        )));
    }
    Ok((attempt, record))
}

/// Replays attempt `attempt` (default: the last) of the finished mission `mission_id` with
/// the agents `context` makes.
pub async fn replay(
    store: &EventStore,
    context: &Context,
    mission_id: &str,
    attempt: Option<u32>,
) -> Result<ReplayReport, ReplayError> {
    let (mission, events) = load(store, mission_id).await?;
    if !mission.status.is_finished() {
        return Err(ReplayError::Refused(format!(
            "mission {mission_id} is {}: only a finished run can be replayed",
            mission.status
        )));
    }
    let spec = mission.spec.clone().expect("checked by load");
    let Some(implementation) = implementation_of(&context.builtin, &spec.agent) else {
        return Err(ReplayError::Refused(format!(
            "agent kind {} is not served by a built-in agent that thinks in steps here",
            spec.agent
        )));
    };
    let (attempt, record) = attempt_record(&events, attempt)?;
    let agent =
        crate::agents::thinking_agent(context, implementation).expect("a thinking implementation");
    let task = Task {
        mission_id: mission_id.to_owned(),
        name: spec.name.clone(),
        description: spec.description.clone(),
        agent: spec.agent.clone(),
        payload: spec.payload.clone(),
        attempt,
        worker_id: "replay".into(),
        budget: spec.budget,
        budget_scope: mission_id.to_owned(),
        playback: true,
        children_spawned: record.children_spawned,
        depth: record.depth,
    };
    let ended = agent.check(&task, &record).await;
    let divergence = match ended {
        Ok(Ended::Answered(_)) => None,
        Ok(Ended::Diverged(divergence)) => Some(divergence),
        Ok(Ended::Wait { step, children, .. }) => Some(Divergence {
            step,
            what: "sub-missions the recorded run did not ask for".into(),
            recorded: Value::Null,
            now: serde_json::json!(children.len()),
        }),
        // The code now stops the run the way it stopped then (a limit): the same decision.
        Err(failure)
            if mission
                .errors
                .iter()
                .any(|error| error.attempt == attempt && error.error == failure.message) =>
        {
            None
        }
        Err(failure) => Some(Divergence {
            step: record.answers.len() as u32,
            what: "the run now fails".into(),
            recorded: serde_json::json!(mission.status.to_string()),
            now: serde_json::json!(failure.message),
        }),
    };
    Ok(ReplayReport {
        mission_id: mission_id.to_owned(),
        attempt,
        agent: spec.agent,
        implementation: implementation.to_string(),
        steps: record.answers.len() as u32,
        tool_calls: record.tools.len() as u32,
        verdict: if divergence.is_some() { "diverged" } else { "identical" }.into(),
        divergence,
    })
}

/// Enqueues a fork of attempt `attempt` (default: the last) of `mission_id` that plays its
/// first `at_step` steps back and runs live from there. Returns the fork's id.
pub async fn fork(
    store: &EventStore,
    mission_id: &str,
    at_step: u32,
    attempt: Option<u32>,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<String, ReplayError> {
    let (mission, events) = load(store, mission_id).await?;
    if !mission.status.is_finished() {
        return Err(ReplayError::Refused(format!(
            "mission {mission_id} is {}: only a finished run can be forked",
            mission.status
        )));
    }
    let (attempt, record) = attempt_record(&events, attempt)?;
    let steps = record.answers.len() as u32;
    if at_step == 0 || at_step > steps {
        return Err(ReplayError::Refused(format!(
            "at_step: must be between 1 and {steps}, the steps attempt {attempt} took"
        )));
    }
    if let Some((step, why)) = record
        .answers
        .iter()
        .take(at_step as usize)
        .enumerate()
        .find_map(|(n, answer)| answer.answer.as_ref().err().map(|why| (n + 1, why)))
    {
        return Err(ReplayError::Refused(format!("step {step} cannot be played back: {why}")));
    }
    let origin = mission.spec.clone().expect("checked by load");
    let spec = MissionSpec {
        parent: None,
        not_before_ms: None,
        forked_from: Some(ForkLink { mission_id: mission_id.to_owned(), attempt, steps: at_step }),
        ..origin
    };
    let fork_id = StreamId::from(uuid::Uuid::now_v7());
    let mut fork_metadata = metadata.clone();
    fork_metadata.command_id = Some(uuid::Uuid::now_v7());
    let creation = Create {
        stream_id: fork_id.clone(),
        metadata: fork_metadata,
        command: MissionCommand::Enqueue { spec, now_ms },
    };
    let decided = command::decide_creations::<Mission>(vec![creation])
        .map_err(|mut refusals| ReplayError::Refused(refusals.swap_remove(0).1.to_string()))?;
    let by = metadata.actor.clone();
    let record_fork = || MissionCommand::RecordFork {
        fork_id: fork_id.to_string(),
        attempt,
        steps: at_step,
        by: by.clone(),
        now_ms,
    };
    let origin_id =
        StreamId::parse(mission_id).map_err(|error| ReplayError::Refused(error.to_string()))?;
    command::execute_with_creations(store, &origin_id, &metadata, None, record_fork, &decided)
        .await?;
    Ok(fork_id.to_string())
}

/// `brain missions ...`: the debugging an event log makes possible, run against the store
/// directly (no server needed), with this build's agent code.
#[derive(Debug, clap::Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up, never moved around")]
pub enum MissionsCli {
    /// Replay a finished mission's run against its record: no model call, no tool run, no
    /// write. Prints `identical`, or the first step where today's code decides otherwise;
    /// exits 2 when it diverged.
    Replay {
        #[command(flatten)]
        services: crate::config::Services,
        #[command(flatten)]
        builtin: BuiltinSettings,
        #[command(flatten)]
        llm: crate::config::llm::LlmSettings,
        /// The mission's id.
        mission_id: String,
        /// The attempt to replay (default: the last).
        #[arg(long)]
        attempt: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a new mission that plays back the first N steps of a run and runs live from
    /// there; prints its id. The fork and the original name each other in their histories.
    Fork {
        #[command(flatten)]
        services: crate::config::Services,
        mission_id: String,
        /// Steps played back from the record.
        #[arg(long)]
        at_step: u32,
        #[arg(long)]
        attempt: Option<u32>,
    },
}

/// Exit status of a replay that found a divergence.
pub const DIVERGED_EXIT: i32 = 2;

impl MissionsCli {
    pub async fn run(self) -> anyhow::Result<()> {
        let services = match &self {
            MissionsCli::Replay { services, .. } | MissionsCli::Fork { services, .. } => {
                services.clone()
            }
        };
        let pool = crate::eventlog::db::connect(&services.database_url, 2).await?;
        let (store, committer) =
            EventStore::start(pool, services.namespace.as_str(), Default::default());
        let outcome = match self {
            MissionsCli::Replay { mission_id, attempt, json, builtin, llm, .. } => {
                let context = Context::unconnected(builtin, llm);
                let report = replay(&store, &context, &mission_id, attempt).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", describe(&report));
                }
                Ok(report.divergence.is_some())
            }
            MissionsCli::Fork { mission_id, at_step, attempt, .. } => {
                let metadata = EventMetadata::new("cli", time::OffsetDateTime::now_utc());
                let now_ms = crate::clock::now_ms();
                let fork_id = fork(&store, &mission_id, at_step, attempt, metadata, now_ms).await?;
                println!("{fork_id}");
                Ok(false)
            }
        };
        drop(store);
        committer.await?;
        match outcome {
            Ok(true) => std::process::exit(DIVERGED_EXIT),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A report as a person reads it.
pub fn describe(report: &ReplayReport) -> String {
    let mut text = format!(
        "mission {} attempt {} ({} agent, played back by {}): {} model calls, {} tool calls recorded\n",
        report.mission_id,
        report.attempt,
        report.agent,
        report.implementation,
        report.steps,
        report.tool_calls
    );
    match &report.divergence {
        None => text.push_str("identical: today's code decides every step as recorded\n"),
        Some(divergence) => {
            text.push_str(&format!("diverged at step {}: {}\n", divergence.step, divergence.what));
            text.push_str(&format!("  recorded: {}\n", divergence.recorded));
            text.push_str(&format!("  now:      {}\n", divergence.now));
        }
    }
    text
}
