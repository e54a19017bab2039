//! Token counts the gateway makes itself, where a provider reported none: a stream without its
//! usage chunk (many OpenAI-compatible servers send none, even when asked with
//! `stream_options.include_usage`), an Ollama answer without its counts (a cached prompt), or a
//! zero for a side that clearly had text. A call that answered is never recorded as 0 tokens:
//! budgets, limits and the cost count the estimate, and the record says which count is one
//! and how it was made ([`UsageEstimate`]; decision 0037).
//!
//! The estimate is a stated one, not a tokenizer: a token per [`BYTES_PER_TOKEN`] bytes of
//! UTF-8 text, rounded up, plus [`MESSAGE_FRAMING`] tokens for each message, tool and tool call
//! and [`REQUEST_FRAMING`] for the request. Today's tokenizers count about four bytes a token
//! of English and three of code, so it errs high, the side a budget should err on. The input
//! estimate is the one a budget reserves before the call ([`input_tokens`]), so an estimated
//! call settles its input at exactly what it held.

use crate::llm::{ChatAnswer, ChatRequest, EstimateMethod, Message, ToolCall, ToolSpec};
use crate::llm::{Usage, UsageEstimate};

/// Bytes of text one estimated token stands for.
pub const BYTES_PER_TOKEN: usize = 3;
/// Tokens of framing counted for each message, tool and tool call (its role or name, its
/// separators: OpenAI's chat format spends three or four).
pub const MESSAGE_FRAMING: u64 = 8;
/// Tokens of framing counted for a whole request (the priming of the reply, a system
/// preamble a server may add).
pub const REQUEST_FRAMING: u64 = 16;

/// `bytes` of text as tokens, rounded up.
pub fn tokens_of(bytes: usize) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN) as u64
}

fn call_bytes(call: &ToolCall) -> usize {
    call.name.len() + call.arguments.to_string().len()
}

/// The input tokens of `messages` and `tools`: their text (tool calls' names and arguments,
/// tools' names, descriptions and schemas included) and their framing. Never 0.
pub fn input_tokens(messages: &[Message], tools: &[ToolSpec]) -> u64 {
    let messages_bytes: usize = messages
        .iter()
        .map(|message| {
            message.content.len() + message.tool_calls.iter().map(call_bytes).sum::<usize>()
        })
        .sum();
    let tools_bytes: usize = tools
        .iter()
        .map(|tool| tool.name.len() + tool.description.len() + tool.parameters.to_string().len())
        .sum();
    let framed = messages.len() + tools.len();
    tokens_of(messages_bytes + tools_bytes) + MESSAGE_FRAMING * framed as u64 + REQUEST_FRAMING
}

/// The output tokens of an answer of `content` and `tool_calls`: 0 only for an answer with
/// neither.
pub fn output_tokens(content: &str, tool_calls: &[ToolCall]) -> u64 {
    let bytes = content.len() + tool_calls.iter().map(call_bytes).sum::<usize>();
    tokens_of(bytes) + MESSAGE_FRAMING * tool_calls.len() as u64
}

/// Fills in the counts `answer`'s provider did not report, and says so in its usage: the
/// input when it is 0 (a request always has messages), the output when it is 0 although the
/// answer has text or tool calls. Counts the provider reported are kept as they are.
pub fn fill(answer: &mut ChatAnswer, request: &ChatRequest) {
    let had_output = !answer.content.is_empty() || !answer.tool_calls.is_empty();
    let input = answer.usage.input_tokens == 0;
    let output = answer.usage.output_tokens == 0 && had_output;
    if !input && !output {
        return;
    }
    let method = EstimateMethod::ThreeBytesPerToken;
    answer.usage = Usage {
        input_tokens: if input {
            input_tokens(&request.messages, &request.tools)
        } else {
            answer.usage.input_tokens
        },
        output_tokens: if output {
            output_tokens(&answer.content, &answer.tool_calls)
        } else {
            answer.usage.output_tokens
        },
        estimate: Some(UsageEstimate { input, output, method }),
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::llm::Role;

    fn request(messages: Vec<Message>, tools: Vec<ToolSpec>) -> ChatRequest {
        ChatRequest { model: "m".into(), messages, tools, temperature: None, max_tokens: None }
    }

    fn answer(content: &str, usage: Usage) -> ChatAnswer {
        ChatAnswer { content: content.into(), usage, ..ChatAnswer::default() }
    }

    #[test]
    fn text_counts_a_token_per_three_bytes_rounded_up() {
        assert_eq!([0, 1, 2, 3, 4, 6, 7].map(tokens_of), [0, 1, 1, 1, 2, 2, 3]);
        // Bytes, not characters: a CJK character is three bytes, about one token.
        assert_eq!(tokens_of("日本語".len()), 3);
    }

    #[test]
    fn the_input_counts_every_message_tool_call_and_tool_with_its_framing() {
        let mut assistant = Message::new(Role::Assistant, "");
        assistant.tool_calls =
            vec![ToolCall { id: "c1".into(), name: "ls".into(), arguments: json!({ "p": "." }) }];
        let messages = vec![Message::new(Role::User, "hello world"), assistant];
        let tool = ToolSpec {
            name: "ls".into(),
            description: "list".into(),
            parameters: json!({ "type": "object" }),
        };
        // "hello world" 11 + "ls" 2 + {"p":"."} 9 + "ls" 2 + "list" 4 + {"type":"object"} 17.
        let bytes: u64 = 11 + 2 + 9 + 2 + 4 + 17;
        assert_eq!(
            input_tokens(&messages, &[tool]),
            bytes.div_ceil(3) + 3 * MESSAGE_FRAMING + REQUEST_FRAMING
        );
        assert_eq!(input_tokens(&[], &[]), REQUEST_FRAMING, "never 0");
    }

    #[test]
    fn a_provider_that_reported_nothing_gets_both_counts_estimated_and_marked() {
        let request = request(vec![Message::new(Role::User, "what is two plus two")], vec![]);
        let mut answered = answer("it is four", Usage::default());
        fill(&mut answered, &request);
        assert_eq!(
            answered.usage,
            Usage {
                input_tokens: 7 + MESSAGE_FRAMING + REQUEST_FRAMING,
                output_tokens: 4,
                estimate: Some(UsageEstimate {
                    input: true,
                    output: true,
                    method: EstimateMethod::ThreeBytesPerToken
                }),
            }
        );
    }

    #[test]
    fn a_count_the_provider_reported_is_kept_and_only_the_missing_one_estimated() {
        let request = request(vec![Message::new(Role::User, "hi")], vec![]);
        let mut answered = answer("hello there", Usage::reported(5, 0));
        fill(&mut answered, &request);
        let estimate = answered.usage.estimate.expect("marked");
        assert_eq!((answered.usage.input_tokens, answered.usage.output_tokens), (5, 4));
        assert_eq!((estimate.input, estimate.output), (false, true));

        let mut answered = answer("hello there", Usage::reported(0, 3));
        fill(&mut answered, &request);
        assert_eq!(answered.usage.output_tokens, 3);
        assert_eq!(answered.usage.estimate.map(|e| (e.input, e.output)), Some((true, false)));
    }

    #[test]
    fn tool_calls_are_output_and_an_empty_answer_keeps_its_zero() {
        let request = request(vec![Message::new(Role::User, "hi")], vec![]);
        let call = ToolCall { id: "c1".into(), name: "read".into(), arguments: json!({}) };
        let mut answered = ChatAnswer { tool_calls: vec![call], ..ChatAnswer::default() };
        answered.usage = Usage::reported(9, 0);
        fill(&mut answered, &request);
        // "read" 4 + {} 2 bytes, and the call's framing.
        assert_eq!(answered.usage.output_tokens, 2 + MESSAGE_FRAMING);

        // Nothing said: no output to count, and nothing to mark when the input was reported.
        let mut empty = answer("", Usage::reported(9, 0));
        fill(&mut empty, &request);
        assert_eq!(empty.usage, Usage::reported(9, 0));
        // A provider that reported both is left alone.
        let mut reported = answer("four", Usage::reported(9, 1));
        fill(&mut reported, &request);
        assert_eq!(reported.usage, Usage::reported(9, 1));
    }
}
