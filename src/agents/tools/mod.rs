//! Tools the built-in agents offer the model: plain Rust functions, each with a JSON schema of
//! its arguments, in a [`Registry`] whose specs go to the provider's native tool calling.
//!
//! A call is checked before anything runs: an unknown tool, or arguments that do not match the
//! schema (a missing or unknown field, a wrong type), is *refused*, and so is a path outside the
//! agent's root or a command off its list (each tool checks its own). A refusal is fed back to
//! the model as the tool's error and recorded like any call, so the history shows what the
//! model tried.

pub mod command;
pub mod delegate;
pub mod fetch;
pub mod files;
pub mod mcp;
pub mod policy;
pub mod root;
pub mod sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::llm::ToolSpec;

/// Longest text a tool's answer keeps, in bytes; the rest is cut and said to be.
pub const RESULT_BYTES_MAX: usize = 64 * 1024;

/// Why a tool call gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// Not run: the call breaks a rule (schema, root, allow-list).
    #[error("refused: {0}")]
    Refused(String),
    /// Ran and failed.
    #[error("failed: {0}")]
    Failed(String),
}

pub trait Tool: Send + Sync + 'static {
    /// What the model is offered: the name a provider accepts, the description, the schema.
    fn spec(&self) -> ToolSpec;
    /// The name users see and the record keeps (an MCP tool's `<server>.<tool>`).
    fn shown_name(&self) -> String {
        self.spec().name
    }
    /// Whether `arguments` fit the schema, checked before the tool runs; by default the
    /// built-in tools' strict subset ([`check_arguments`]).
    fn check(&self, arguments: &Value) -> Result<(), String> {
        check_arguments(&self.spec().parameters, arguments)
    }
    /// Runs with arguments that match the schema (the registry checked them).
    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>>;
}

/// The tools one agent offers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Registry {
    pub fn with(mut self, tool: impl Tool) -> Registry {
        self.tools.insert(tool.spec().name, Arc::new(tool));
        self
    }

    /// This registry with `tools` added (a tool of the same name is replaced).
    pub fn with_all<T: Tool>(mut self, tools: impl IntoIterator<Item = T>) -> Registry {
        for tool in tools {
            self.tools.insert(tool.spec().name, Arc::new(tool));
        }
        self
    }

    /// The name users see of the tool the model calls `name`: `name` itself for a built-in
    /// tool, `<server>.<tool>` for an MCP tool offered as `<server>__<tool>`.
    pub fn shown(&self, name: &str) -> String {
        match self.tools.get(name) {
            Some(tool) => tool.shown_name(),
            None => name.to_owned(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|tool| tool.spec()).collect()
    }

    /// Runs `name` with `arguments`, or refuses. What a tool answers is data for the record
    /// and the model: a NUL in it (a binary file, a program's output) is replaced, since no
    /// store can hold one and the mission's history must.
    pub async fn call(&self, name: &str, arguments: &Value) -> Result<Value, ToolError> {
        let tool = self.checked(name, arguments)?;
        tool.run(arguments.clone()).await.map(domain::text::value_without_nul)
    }

    /// The checks made before a call runs (the tool exists, the arguments match its
    /// schema), without running it: what a replay compares with the record.
    pub fn check(&self, name: &str, arguments: &Value) -> Result<(), ToolError> {
        self.checked(name, arguments).map(|_| ())
    }

    fn checked(&self, name: &str, arguments: &Value) -> Result<&Arc<dyn Tool>, ToolError> {
        let Some(tool) = self.tools.get(name) else {
            let known = self.names().join(", ");
            return Err(ToolError::Refused(format!("no tool named {name:?} (tools: {known})")));
        };
        tool.check(arguments).map_err(ToolError::Refused)?;
        Ok(tool)
    }
}

/// Checks `arguments` against the subset of JSON schema the tools use: an object with
/// `properties` (each a `type` of string, integer, number, boolean, array or object),
/// `required`, and no other field.
pub fn check_arguments(schema: &Value, arguments: &Value) -> Result<(), String> {
    let Some(given) = arguments.as_object() else {
        return Err("the arguments must be a JSON object".into());
    };
    let properties = schema["properties"].as_object().cloned().unwrap_or_default();
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap_or_default();
        if !given.contains_key(name) {
            return Err(format!("missing argument {name:?}"));
        }
    }
    for (name, value) in given {
        let Some(property) = properties.get(name) else {
            return Err(format!("unknown argument {name:?}"));
        };
        let fits = match property["type"].as_str() {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("array") => {
                value.as_array().is_some_and(|items| match property["items"]["type"].as_str() {
                    Some("string") => items.iter().all(Value::is_string),
                    _ => true,
                })
            }
            Some("object") => value.is_object(),
            _ => true,
        };
        if !fits {
            return Err(format!("argument {name:?} must be of type {}", property["type"]));
        }
    }
    Ok(())
}

/// `text` with its NULs replaced (see [`Registry::call`]) and cut to [`RESULT_BYTES_MAX`] at
/// a character boundary, and whether it was cut. Replacing first keeps the bound: a NUL's
/// replacement takes three bytes.
pub fn capped(text: &str) -> (String, bool) {
    let text = domain::text::without_nul(text);
    let text = text.as_ref();
    if text.len() <= RESULT_BYTES_MAX {
        return (text.to_owned(), false);
    }
    let mut cut = RESULT_BYTES_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (text[..cut].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let schema = json!({ "type": "object", "properties": {
            "path": { "type": "string" }, "limit": { "type": "integer" },
            "args": { "type": "array", "items": { "type": "string" } } },
            "required": ["path"] });
        assert_eq!(check_arguments(&schema, &json!({ "path": "a", "limit": 3 })), Ok(()));
        assert!(check_arguments(&schema, &json!({})).unwrap_err().contains("missing"));
        assert!(check_arguments(&schema, &json!({ "path": 1 })).unwrap_err().contains("type"));
        assert!(
            check_arguments(&schema, &json!({ "path": "a", "mode": "x" }))
                .unwrap_err()
                .contains("unknown")
        );
        assert!(check_arguments(&schema, &json!({ "path": "a", "args": [1] })).is_err());
        assert!(check_arguments(&schema, &json!("a")).is_err());
    }
}
