//! Reading a streamed HTTP answer: server-sent events (OpenAI, Anthropic) and NDJSON lines
//! (Ollama), chunk by chunk, with the first piece due within the first-token deadline and
//! each line bounded in size; and [`Streamed`], the answer the pieces add up to.
//!
//! Our own rather than a crate: what the providers send is the `event:` / `data:` subset of
//! the SSE format, which takes a line splitter and twenty lines to read; the SSE crates we
//! looked at pull a parser-combinator library in for it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::llm::{
    ChatAnswer, LlmError, Reason, TokenSink, ToolCall, bad_response, tool_arguments,
    transport_error,
};

/// Longest line a provider may send in a stream: far above any real token chunk, and a bound
/// on what a misbehaving server can make us buffer.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// One server-sent event: its `event:` name (empty when none) and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// The lines of a streamed body, as they arrive.
pub struct Lines {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    first_token: Option<Duration>,
    done: bool,
}

impl Lines {
    pub fn new(response: reqwest::Response, first_token: Duration) -> Lines {
        Lines {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            first_token: Some(first_token),
            done: false,
        }
    }

    /// The next line, without its line ending; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<String>, LlmError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|_| bad_response("a streamed line is not UTF-8"));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buffer);
                return String::from_utf8(rest)
                    .map(Some)
                    .map_err(|_| bad_response("a streamed line is not UTF-8"));
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                return Err(bad_response(format!(
                    "a streamed line is longer than {LINE_BYTES_MAX} bytes"
                )));
            }
            let chunk = match self.first_token.take() {
                Some(deadline) => match tokio::time::timeout(deadline, self.body.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        return Err(LlmError::new(
                            Reason::Timeout,
                            format!("no first token within {} s", deadline.as_secs()),
                        ));
                    }
                },
                None => self.body.next().await,
            };
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(transport_error(error)),
                None => self.done = true,
            }
        }
    }

    /// The next server-sent event; `None` at the end of the body.
    pub async fn next_event(&mut self) -> Result<Option<Event>, LlmError> {
        let mut event = Event { name: String::new(), data: String::new() };
        let mut any = false;
        while let Some(line) = self.next().await? {
            if line.is_empty() {
                if any {
                    return Ok(Some(event));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.name = value.to_owned(),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => continue,
            }
            any = true;
        }
        Ok(any.then_some(event))
    }
}

/// A piece of a stream as JSON; `what` names the piece in the failure (`a stream chunk`).
pub fn parse_json(text: &str, what: &str) -> Result<Value, LlmError> {
    serde_json::from_str(text).map_err(|error| bad_response(format!("{what} is not JSON: {error}")))
}

/// A tool call whose pieces are still arriving.
#[derive(Debug, Default)]
pub struct PartialCall {
    pub id: String,
    pub name: String,
    /// JSON text, parsed once the answer is complete.
    pub arguments: String,
}

/// An answer as its stream adds up: the text relayed so far, and the tool calls by their
/// index in the stream, whose arguments come as pieces of JSON text.
#[derive(Debug, Default)]
pub struct Streamed {
    pub answer: ChatAnswer,
    calls: BTreeMap<u64, PartialCall>,
}

/// Hands a piece of an answer's text to the client, and keeps it in the answer.
pub fn relay_text(answer: &mut ChatAnswer, sink: TokenSink<'_>, text: &str) {
    if !text.is_empty() {
        sink(text);
        answer.content.push_str(text);
    }
}

impl Streamed {
    /// The tool call at `index`, begun by this piece if it is the first.
    pub fn open_call(&mut self, index: u64) -> &mut PartialCall {
        self.calls.entry(index).or_default()
    }

    /// The tool call at `index`, if one was begun there.
    pub fn call(&mut self, index: u64) -> Option<&mut PartialCall> {
        self.calls.get_mut(&index)
    }

    /// The complete answer, its tool calls in stream order.
    pub fn finish(self) -> ChatAnswer {
        let tool_calls = self
            .calls
            .into_values()
            .map(|call| ToolCall {
                id: call.id,
                name: call.name,
                arguments: tool_arguments(&call.arguments),
            })
            .collect();
        ChatAnswer { tool_calls, ..self.answer }
    }
}
