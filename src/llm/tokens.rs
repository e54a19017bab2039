//! Token streams: the pieces of an answer as they are generated, published on the NATS core
//! subject `<ns>.tokens.<mission id>`. Ephemeral by design: never in the log (the complete
//! answer and its usage are one event there), never buffered for late subscribers. A
//! publisher that cannot keep up drops pieces rather than slowing the model's stream down; a
//! subscriber that needs the whole answer reads it from the mission.

use serde::{Deserialize, Serialize};

use crate::config::Namespace;

/// Pieces waiting to be published, per call: past this, pieces are dropped.
pub const PUBLISH_BUFFER_PIECES: usize = 4_096;

pub fn subject(namespace: &Namespace, mission_id: &str) -> String {
    format!("{namespace}.tokens.{mission_id}")
}

/// One message on a token subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMessage {
    pub mission_id: String,
    pub attempt: u32,
    /// 0, 1, 2... within the attempt's call; a gap means pieces were dropped.
    pub seq: u64,
    /// A piece of the answer; empty on the last message.
    #[serde(default)]
    pub text: String,
    /// The call ended (answered or failed).
    #[serde(default)]
    pub done: bool,
}

/// Publishes one call's pieces in order from a bounded queue, so that the provider's stream
/// (which hands pieces to a plain closure) never waits for NATS.
pub struct Publisher {
    queue: tokio::sync::mpsc::Sender<TokenMessage>,
    task: tokio::task::JoinHandle<()>,
    mission_id: String,
    attempt: u32,
    seq: u64,
}

impl Publisher {
    pub fn start(
        nats: async_nats::Client,
        subject: String,
        mission_id: &str,
        attempt: u32,
    ) -> Publisher {
        let (queue, mut pieces) = tokio::sync::mpsc::channel::<TokenMessage>(PUBLISH_BUFFER_PIECES);
        let task = tokio::spawn(async move {
            while let Some(message) = pieces.recv().await {
                let Ok(body) = serde_json::to_vec(&message) else { continue };
                if let Err(error) = nats.publish(subject.clone(), body.into()).await {
                    tracing::debug!(%error, "cannot publish a token");
                }
            }
            let _ = nats.flush().await;
        });
        Publisher { queue, task, mission_id: mission_id.to_owned(), attempt, seq: 0 }
    }

    /// Queues a piece; drops it when the queue is full.
    pub fn piece(&mut self, text: &str) {
        let message = TokenMessage {
            mission_id: self.mission_id.clone(),
            attempt: self.attempt,
            seq: self.seq,
            text: text.to_owned(),
            done: false,
        };
        self.seq += 1;
        if self.queue.try_send(message).is_err() {
            metrics::counter!("brain_llm_tokens_dropped_total").increment(1);
        }
    }

    /// Sends the last message and waits (briefly) for the queue to drain.
    pub async fn finish(self) {
        let last = TokenMessage {
            mission_id: self.mission_id,
            attempt: self.attempt,
            seq: self.seq,
            text: String::new(),
            done: true,
        };
        let _ = self.queue.send(last).await;
        drop(self.queue);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
