//! What one run of the loop keeps from step to step: the conversation so far (the next
//! request to the model), what the run has spent, where its steps are recorded and where the
//! model's text streams. In check mode nothing is recorded and nothing streams.

use std::time::Instant;

use domain::mission::{LlmCall, MissionCommand, ToolCallRecord};

use super::{Loop, Mode};
use crate::agents::plain::{failure, for_mission, publisher, route_of, task_text};
use crate::agents::record::{Record, RecordedAnswer};
use crate::eventlog::store::EventStore;
use crate::llm::calls::{Ask, Caller, ForMission, record_for_mission};
use crate::llm::gateway::Answered;
use crate::llm::tokens::Publisher;
use crate::llm::{Message, Role, Usage};
use crate::missions::agent::{Failure, Task};

/// One run of a [`Loop`] over one task.
pub(super) struct Run<'a> {
    pub agent: &'a Loop,
    pub record: &'a Record,
    pub mode: Mode,
    pub began: Instant,
    pub caller: Caller,
    /// The next request to the model: the conversation so far.
    pub ask: Ask,
    pub tally: Tally,
    /// Where the model's text streams; taken when the run ends.
    pub publisher: Option<Publisher>,
    /// Where the steps are recorded: nowhere in check mode.
    store: Option<&'a EventStore>,
    mission: ForMission,
}

/// What a run has spent and done so far, as its result reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    pub usage: Usage,
    pub cost_usd: f64,
    pub tool_calls: u32,
    /// Who gave the last answer.
    pub provider: String,
    pub model: String,
}

impl Tally {
    /// Counts an answer played back from `record`. A copied step was spent in its origin, and
    /// counted there.
    pub fn played_back(&mut self, record: &Record, recorded: &RecordedAnswer, usage: &Usage) {
        if !record.copied {
            self.spend(recorded.call.cost_usd, usage);
        }
        self.provider.clone_from(&recorded.call.provider);
    }

    /// Counts an answer the model gave now.
    pub fn asked(&mut self, answered: &Answered) {
        self.spend(answered.cost_usd, &answered.answer.usage);
        self.provider = answered.provider.as_str().to_owned();
    }

    fn spend(&mut self, cost_usd: f64, usage: &Usage) {
        self.cost_usd += cost_usd;
        self.usage.input_tokens += usage.input_tokens;
        self.usage.output_tokens += usage.output_tokens;
    }
}

/// A step the loop records in the mission's history.
pub(super) enum Step {
    Llm(LlmCall),
    Tool(ToolCallRecord),
}

impl<'a> Run<'a> {
    pub fn start(agent: &'a Loop, task: &Task, record: &'a Record, mode: Mode) -> Run<'a> {
        let live = mode == Mode::Live;
        let mission = for_mission(task);
        let system = Message::new(Role::System, agent.system_prompt.clone());
        let ask = Ask {
            route: route_of(task),
            messages: vec![system, Message::new(Role::User, task_text(task))],
            tools: agent.offered(),
            ..Ask::default()
        };
        let publisher = publisher(agent.tokens.clone().filter(|_| live), task);
        Run {
            agent,
            record,
            mode,
            began: Instant::now(),
            caller: Caller::Mission(mission.clone()),
            ask,
            tally: Tally::default(),
            publisher,
            store: agent.calls.store.as_ref().filter(|_| live),
            mission,
        }
    }

    /// Records `step` in the mission's history. (A model call asked now is recorded by the
    /// gateway; a played-back step was recorded already, unless it was copied from another
    /// run.)
    pub async fn record_step(&self, step: Step) -> Result<(), Failure> {
        let Some(store) = self.store else { return Ok(()) };
        let mission = &self.mission;
        let (worker_id, attempt) = (mission.worker_id.clone(), mission.attempt);
        record_for_mission(store, mission, |now_ms| match &step {
            Step::Llm(call) => MissionCommand::RecordLlmCall {
                worker_id: worker_id.clone(),
                attempt,
                call: call.clone(),
                now_ms,
            },
            Step::Tool(call) => MissionCommand::RecordToolCall {
                worker_id: worker_id.clone(),
                attempt,
                call: call.clone(),
                now_ms,
            },
        })
        .await
        .map_err(failure)
    }

    /// Tells whoever follows the model's text that this attempt has nothing more to say.
    pub async fn finish_tokens(&mut self) {
        if let Some(publisher) = self.publisher.take() {
            publisher.finish().await;
        }
    }
}
