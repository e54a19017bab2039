//! `offline`: deterministic answers with no network, for demos, tests and a fresh install
//! with no LLM configured. Every answer says it is offline (its text starts `[offline]` and its
//! model is `offline`), so nobody mistakes it for a model's.

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::llm::{ChatAnswer, ChatRequest, LlmError, Provider, Role, TokenSink, Usage};

/// Dimensions of an offline embedding.
pub const EMBEDDING_DIMENSIONS: usize = 16;
/// Characters of the prompt an offline answer repeats.
const ECHO_CHARS_MAX: usize = 200;

pub struct Offline;

/// What the offline provider answers to `request`: the same every time.
pub fn answer_text(request: &ChatRequest) -> String {
    let prompt = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map(|message| message.content.as_str())
        .unwrap_or("");
    let mut echo: String = prompt.chars().take(ECHO_CHARS_MAX).collect();
    if prompt.chars().count() > ECHO_CHARS_MAX {
        echo.push('…');
    }
    format!(
        "[offline] No LLM is configured, so this answer is not a model's. You asked: \"{echo}\". \
         Configure a provider (PUT /api/llm/config, or BRAIN_LLM_PROVIDER) for real answers."
    )
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

impl Provider for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        sink: Option<TokenSink<'a>>,
    ) -> BoxFuture<'a, Result<ChatAnswer, LlmError>> {
        async move {
            let content = answer_text(request);
            if let Some(sink) = sink {
                // Word by word, as a model would stream it.
                for (n, word) in content.split(' ').enumerate() {
                    if n > 0 {
                        sink(" ");
                    }
                    sink(word);
                }
            }
            let input_tokens = request.messages.iter().map(|m| words(&m.content)).sum();
            Ok(ChatAnswer {
                usage: Usage::reported(input_tokens, words(&content)),
                content,
                tool_calls: Vec::new(),
                finish_reason: "stop".to_owned(),
                model: "offline".to_owned(),
            })
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        _model: &'a str,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, LlmError>> {
        async move {
            Ok(inputs
                .iter()
                .map(|input| {
                    // FNV-1a of the text, spread over the dimensions: equal texts, equal vectors.
                    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
                    (0..EMBEDDING_DIMENSIONS)
                        .map(|_| {
                            for byte in input.bytes() {
                                hash ^= u64::from(byte);
                                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
                            }
                            (hash % 2_000) as f32 / 1_000.0 - 1.0
                        })
                        .collect()
                })
                .collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[tokio::test]
    async fn offline_answers_are_labelled_deterministic_and_stream_the_same_text() {
        let request = ChatRequest {
            model: "any".into(),
            messages: vec![Message::new(Role::User, "reverse a list in rust")],
            tools: vec![],
            temperature: None,
            max_tokens: None,
        };
        let plain = Offline.chat(&request, None).await.unwrap();
        assert!(plain.content.starts_with("[offline]"), "{}", plain.content);
        assert!(plain.content.contains("reverse a list in rust"));
        assert_eq!(plain.model, "offline");
        let mut streamed = String::new();
        let mut sink = |piece: &str| streamed.push_str(piece);
        let again = Offline.chat(&request, Some(&mut sink)).await.unwrap();
        assert_eq!((streamed.as_str(), &again), (plain.content.as_str(), &plain));
        let vectors = Offline.embed("m", &["a".into(), "a".into(), "b".into()]).await.unwrap();
        assert_eq!(vectors[0], vectors[1]);
        assert_ne!(vectors[0], vectors[2]);
        assert_eq!(vectors[0].len(), EMBEDDING_DIMENSIONS);
    }
}
