//! One tool of an MCP server, as an agent's registry holds it: offered to the model under
//! its provider-safe name with the server's own JSON schema, checked against that schema
//! before it is sent, and its answer (text, structured content, `isError`) turned into what
//! the model and the record are given, cut to [`RESULT_BYTES_MAX`].

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::server::Server;
use crate::agents::tools::{RESULT_BYTES_MAX, Tool, ToolError, capped};
use crate::llm::ToolSpec;

/// Longest tool description offered to the model, in bytes (the server writes it).
pub const DESCRIPTION_BYTES_MAX: usize = 2_048;

#[derive(Clone)]
pub struct McpTool {
    pub server: Arc<Server>,
    /// The tool's name on its server.
    pub tool: String,
    /// `<server>__<tool>`: what providers accept (`^[a-zA-Z0-9_-]{1,64}$`).
    pub provider_name: String,
    pub description: String,
    pub schema: Value,
}

impl McpTool {
    /// `<server>.<tool>`: the name users see and the record keeps.
    pub fn shown(&self) -> String {
        format!("{}.{}", self.server.name, self.tool)
    }
}

impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.provider_name.clone(),
            description: self.description.clone(),
            parameters: self.schema.clone(),
        }
    }

    fn shown_name(&self) -> String {
        self.shown()
    }

    fn check(&self, arguments: &Value) -> Result<(), String> {
        let checked = super::schema::check(&self.schema, arguments);
        if checked.is_err() {
            self.server.counts.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        checked
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let (server, tool) = (self.server.clone(), self.tool.clone());
        async move { server.call(&tool, arguments).await }.boxed()
    }
}

/// What the model is told of a call's answer: its text (the text blocks joined; other
/// blocks named by type), its structured content when there is one, and `is_error` when the
/// tool says it failed, all within [`RESULT_BYTES_MAX`]. A tool's own error is an answer the
/// model reads, not a failed call: the server ran it.
pub fn result(answer: &CallToolResult) -> Result<Value, ToolError> {
    let blocks = serde_json::to_value(&answer.content).unwrap_or_default();
    let mut text = String::new();
    for block in blocks.as_array().into_iter().flatten() {
        if !text.is_empty() {
            text.push('\n');
        }
        match (block["type"].as_str(), block["text"].as_str()) {
            (_, Some(part)) => text.push_str(part),
            (Some(kind), None) => text.push_str(&format!("[{kind} content]")),
            (None, None) => text.push_str("[content]"),
        }
        if text.len() > RESULT_BYTES_MAX {
            break;
        }
    }
    let (text, cut) = capped(&text);
    let mut shaped = json!({ "content": text });
    if cut {
        shaped["truncated"] = json!(true);
    }
    if let Some(structured) = &answer.structured_content {
        let bytes = structured.to_string().len();
        if bytes + text.len() <= RESULT_BYTES_MAX {
            shaped["structured_content"] = structured.clone();
        } else {
            shaped["structured_content_omitted_bytes"] = json!(bytes);
        }
    }
    if answer.is_error == Some(true) {
        shaped["is_error"] = json!(true);
    }
    Ok(shaped)
}

/// The provider-safe name of `tool` of `server`: `<server>__<tool>` with each character
/// providers refuse replaced by `_`; `None` when it would be longer than 64 characters.
pub fn provider_name(server: &str, tool: &str) -> Option<String> {
    let safe: String = tool
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    let name = format!("{server}__{safe}");
    (!tool.is_empty() && name.len() <= 64).then_some(name)
}

/// A server's description of a tool, bounded, with where it comes from.
pub fn description(server: &str, tool: &str, given: Option<&str>) -> String {
    let given = given.unwrap_or_default();
    let mut cut = given.len().min(DESCRIPTION_BYTES_MAX);
    while !given.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} (tool {server}.{tool} of MCP server {server})", &given[..cut]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock as Content;

    #[test]
    fn provider_names_are_safe_and_bounded() {
        assert_eq!(
            provider_name("time", "get_current_time").as_deref(),
            Some("time__get_current_time")
        );
        assert_eq!(provider_name("gh", "repo.search").as_deref(), Some("gh__repo_search"));
        assert_eq!(provider_name("gh", &"x".repeat(61)), None);
        assert_eq!(provider_name("gh", ""), None);
    }

    #[test]
    fn an_answer_is_shaped_bounded_and_says_when_the_tool_failed() {
        let answer = CallToolResult::success(vec![Content::text("a"), Content::text("b")]);
        assert_eq!(result(&answer).unwrap(), json!({ "content": "a\nb" }));
        let failed = CallToolResult::error(vec![Content::text("no such zone")]);
        assert_eq!(
            result(&failed).unwrap(),
            json!({ "content": "no such zone", "is_error": true })
        );
        let huge = CallToolResult::success(vec![Content::text("x".repeat(RESULT_BYTES_MAX * 3))]);
        let shaped = result(&huge).unwrap();
        assert_eq!(shaped["content"].as_str().unwrap().len(), RESULT_BYTES_MAX);
        assert_eq!(shaped["truncated"], json!(true));
    }
}
