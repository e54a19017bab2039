//! `conversation_list`: one row per chat conversation, for listing them newest first: its
//! agent, who started it, a title (the start of its first message), how many messages it
//! holds and when it last changed. The messages themselves stay in the log.

use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::conversation::ConversationEvent;
use time::OffsetDateTime;

use crate::{Projector, Reads, StreamEvents, Unreadable};

pub const NAME: &str = "conversation_list";

/// Characters of the first message kept as a conversation's title.
pub const TITLE_CHARS_MAX: usize = 80;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Started {
        conversation_id: String,
        agent: String,
        by: String,
        at: OffsetDateTime,
        position: u64,
    },
    /// One more message; `title` is offered by every message and kept from the first.
    Added { conversation_id: String, title: String, at: OffsetDateTime, position: u64 },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ConversationList;

impl Projector for ConversationList {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[StreamEvents::all("conversation")]);
        READS
    }

    fn apply(&self, event: &RecordedEvent, changes: &mut Vec<Change>) -> Result<(), Unreadable> {
        let decoded = ConversationEvent::upcast(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        )
        .map_err(|error| Unreadable::of(event, error))?;
        let conversation_id = event.stream_id.as_str().to_owned();
        let (at, position) = (event.recorded_at, event.global_position);
        changes.push(match decoded {
            ConversationEvent::ConversationStarted { agent, by, .. } => {
                Change::Started { conversation_id, agent, by, at, position }
            }
            ConversationEvent::ConversationMessageAdded { turn } => {
                Change::Added { conversation_id, title: title(&turn.text), at, position }
            }
        });
        Ok(())
    }
}

/// What a batch does to one conversation's row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub conversation_id: String,
    pub agent: Option<String>,
    pub started_by: Option<String>,
    pub title: Option<String>,
    /// Messages the batch added.
    pub messages: i64,
    pub started_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
    pub last_position: u64,
}

/// Folds a batch's changes into one row per conversation, so a store writes each once.
pub fn merge(changes: Vec<Change>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for change in changes {
        let id = match &change {
            Change::Started { conversation_id, .. } | Change::Added { conversation_id, .. } => {
                conversation_id.clone()
            }
        };
        let at = *index.entry(id.clone()).or_insert_with(|| {
            rows.push(Row { conversation_id: id, ..Row::default() });
            rows.len() - 1
        });
        let row = &mut rows[at];
        match change {
            Change::Started { agent, by, at, position, .. } => {
                row.agent = Some(agent);
                row.started_by = Some(by);
                row.started_at = Some(at);
                row.updated_at = Some(at);
                row.last_position = position;
            }
            Change::Added { title, at, position, .. } => {
                row.title.get_or_insert(title);
                row.messages += 1;
                row.updated_at = Some(at);
                row.last_position = position;
            }
        }
    }
    rows
}

/// The first line of a message, cut to [`TITLE_CHARS_MAX`] characters.
pub fn title(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    match line.char_indices().nth(TITLE_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_folds_into_one_row_per_conversation() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let later = at + time::Duration::seconds(5);
        let changes = vec![
            Change::Started {
                conversation_id: "a".into(),
                agent: "coder".into(),
                by: "api".into(),
                at,
                position: 1,
            },
            Change::Added { conversation_id: "a".into(), title: "first".into(), at, position: 2 },
            Change::Added { conversation_id: "b".into(), title: "x".into(), at, position: 3 },
            Change::Added {
                conversation_id: "a".into(),
                title: "second".into(),
                at: later,
                position: 4,
            },
        ];
        let rows = merge(changes);
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(
            (a.agent.as_deref(), a.title.as_deref(), a.messages),
            (Some("coder"), Some("first"), 2)
        );
        assert_eq!((a.started_at, a.updated_at, a.last_position), (Some(at), Some(later), 4));
        assert_eq!((rows[1].agent.as_deref(), rows[1].messages), (None, 1));
    }

    #[test]
    fn a_title_is_the_first_line_cut_short() {
        assert_eq!(title("  hello\nworld"), "hello");
        let long = "é".repeat(100);
        let cut = title(&long);
        assert_eq!(cut.chars().count(), TITLE_CHARS_MAX + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(title(""), "");
    }
}
