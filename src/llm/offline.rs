//! `offline`: deterministic answers with no network, for demos, tests and a fresh install
//! with no LLM configured. Every answer says it is offline (its text starts `[offline]` and its
//! model is `offline`), so nobody mistakes it for a model's.

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::llm::{ChatAnswer, ChatRequest, LlmError, Provider, Role, TokenSink, Usage};

/// Dimensions of an offline embedding: the size of small sentence models, so an index built
/// offline has the shape of one built with such a model.
pub const EMBEDDING_DIMENSIONS: usize = 384;
/// The model name the offline embeddings are recorded under, saying what they are.
pub const LEXICAL_MODEL: &str = "offline-lexical-384";
/// Most words of one input an offline embedding reads (the rest add nothing).
pub const LEXICAL_WORDS_MAX: usize = 4_096;
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
        async move { Ok(inputs.iter().map(|input| lexical_embedding(input)).collect()) }.boxed()
    }
}

/// FNV-1a: stable across processes, versions and machines (the std hasher is not).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Adds `weight` to the dimension `hash` picks, with the sign its next bit picks, so that
/// collisions cancel out on average instead of piling up.
fn add(vector: &mut [f32], hash: u64, weight: f32) {
    let index = (hash % vector.len() as u64) as usize;
    let sign = if (hash >> 63) == 0 { 1.0 } else { -1.0 };
    vector[index] += sign * weight;
}

/// The offline embedding of `text`: hashed word unigrams and bigrams and character trigrams
/// of its lowercased words, over [`EMBEDDING_DIMENSIONS`] dimensions, L2-normalised. Texts
/// that share words (or parts of words) score high against each other: a lexical match,
/// not a semantic one, but the same on every machine and with no model at all.
pub fn lexical_embedding(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; EMBEDDING_DIMENSIONS];
    let lowered = text.to_lowercase();
    let mut words: Vec<&str> = lowered
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(LEXICAL_WORDS_MAX)
        .collect();
    if words.is_empty() && !lowered.trim().is_empty() {
        // Punctuation alone still deserves a direction of its own, not the zero vector.
        words.push(lowered.trim());
    }
    for (n, word) in words.iter().enumerate() {
        add(&mut vector, fnv1a(&[b"w", word.as_bytes()]), 1.0);
        if let Some(next) = words.get(n + 1) {
            add(&mut vector, fnv1a(&[b"b", word.as_bytes(), next.as_bytes()]), 0.5);
        }
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for trigram in padded.windows(3) {
            let trigram: String = trigram.iter().collect();
            add(&mut vector, fnv1a(&[b"c", trigram.as_bytes()]), 0.25);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
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

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn lexical_embeddings_are_unit_length_and_closer_for_shared_words() {
        let base = lexical_embedding("The staging database restores at two");
        let near = lexical_embedding("when does the staging database restore?");
        let far = lexical_embedding("Paint the fence green");
        let norm = cosine(&base, &base).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert!(cosine(&base, &near) > cosine(&base, &far) + 0.2);
        assert_eq!(lexical_embedding(""), vec![0.0; EMBEDDING_DIMENSIONS]);
        // Fixed across versions: a stored index stays valid.
        assert_eq!(base, lexical_embedding("the STAGING database, restores at two"));
    }
}
