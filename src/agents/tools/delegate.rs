//! `spawn_missions`: the supervisor's tool to split its mission into sub-missions for other
//! agents and wait for them. It is not run like the other tools: the agent loop ends the
//! attempt with the children it asks for ([`crate::missions::agent::Outcome::Wait`]), the
//! worker enqueues them and suspends the mission, and once the last child has ended the loop
//! goes on with this call's result: what each child did.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::agents::tools::ToolError;
use crate::llm::ToolSpec;
use crate::missions::agent::ChildRequest;
use domain::mission::{CHILDREN_MAX, DEPTH_MAX, NAME_LEN_MAX};

pub const NAME: &str = "spawn_missions";
/// Sub-missions one call may ask for.
pub const PER_CALL_MAX: usize = 100;
/// Longest task a sub-mission may be given, in characters.
pub const TASK_LEN_MAX: usize = 4_000;

/// The tool, offered with the agent kinds it may hand work to.
#[derive(Debug, Clone)]
pub struct SpawnMissions {
    pub kinds: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arguments {
    missions: Vec<Requested>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Requested {
    agent: String,
    name: String,
    task: String,
}

impl SpawnMissions {
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: NAME.into(),
            description: format!(
                "Split the task into sub-missions, each run by another agent, and wait for \
                 all of them; the result lists what each did (its status, and its result or \
                 error). Agents: {}. At most {PER_CALL_MAX} per call.",
                self.kinds.join(", ")
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "missions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "agent": { "type": "string", "enum": self.kinds },
                                "name": { "type": "string", "description": "a short title" },
                                "task": { "type": "string", "description": "what the agent is to do, self-contained" }
                            },
                            "required": ["agent", "name", "task"]
                        }
                    }
                },
                "required": ["missions"]
            }),
        }
    }

    /// The children asked for, or why they are refused: a malformed call, an agent kind not
    /// offered, a task too long, or a limit (per call, per mission, depth) passed.
    pub fn requests(
        &self,
        arguments: &Value,
        spawned: usize,
        depth: u32,
    ) -> Result<Vec<ChildRequest>, ToolError> {
        let refuse = |reason: String| ToolError::Refused(reason);
        let arguments: Arguments = serde_json::from_value(arguments.clone())
            .map_err(|error| refuse(format!("arguments do not match the schema: {error}")))?;
        let asked = arguments.missions.len();
        if asked == 0 {
            return Err(refuse("missions must name at least one sub-mission".into()));
        }
        if asked > PER_CALL_MAX {
            return Err(refuse(format!(
                "child limit: at most {PER_CALL_MAX} sub-missions per call"
            )));
        }
        if spawned + asked > CHILDREN_MAX {
            return Err(refuse(format!(
                "child limit: at most {CHILDREN_MAX} sub-missions per mission ({spawned} spawned already)"
            )));
        }
        if depth + 1 > DEPTH_MAX {
            return Err(refuse(format!("depth limit: missions nest at most {DEPTH_MAX} deep")));
        }
        arguments
            .missions
            .into_iter()
            .enumerate()
            .map(|(n, requested)| {
                if !self.kinds.contains(&requested.agent) {
                    return Err(refuse(format!(
                        "missions[{n}].agent: {:?} is not one of {}",
                        requested.agent,
                        self.kinds.join(", ")
                    )));
                }
                if requested.name.contains('\0') || requested.task.contains('\0') {
                    return Err(refuse(format!("missions[{n}]: a NUL character cannot be stored")));
                }
                let name = requested.name.trim();
                if name.is_empty() || name.chars().count() > NAME_LEN_MAX {
                    return Err(refuse(format!(
                        "missions[{n}].name: must be 1 to {NAME_LEN_MAX} characters"
                    )));
                }
                if requested.task.trim().is_empty() || requested.task.chars().count() > TASK_LEN_MAX
                {
                    return Err(refuse(format!(
                        "missions[{n}].task: must be 1 to {TASK_LEN_MAX} characters"
                    )));
                }
                Ok(ChildRequest {
                    agent: requested.agent,
                    name: name.to_owned(),
                    task: requested.task,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> SpawnMissions {
        SpawnMissions { kinds: vec!["coder".into(), "ops".into()] }
    }

    fn one(agent: &str) -> Value {
        json!({ "missions": [{ "agent": agent, "name": "look", "task": "look at it" }] })
    }

    #[test]
    fn children_are_read_from_the_call_and_every_limit_is_refused_with_its_reason() {
        let asked = tool().requests(&one("coder"), 0, 0).unwrap();
        assert_eq!(asked[0].agent, "coder");
        let refused = |arguments: &Value, spawned, depth| {
            tool().requests(arguments, spawned, depth).unwrap_err().to_string()
        };
        assert!(refused(&one("reviewer"), 0, 0).contains("is not one of coder, ops"));
        assert!(refused(&one("coder"), CHILDREN_MAX, 0).contains("child limit"));
        assert!(refused(&one("coder"), 0, DEPTH_MAX).contains("depth limit"));
        assert!(refused(&json!({ "missions": [] }), 0, 0).contains("at least one"));
        assert!(refused(&json!({ "missions": [{ "agent": "coder" }] }), 0, 0).contains("schema"));
        let many: Vec<Value> = (0..=PER_CALL_MAX)
            .map(|n| json!({ "agent": "ops", "name": format!("n{n}"), "task": "t" }))
            .collect();
        assert!(refused(&json!({ "missions": many }), 0, 0).contains("per call"));
    }
}
