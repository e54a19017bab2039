//! What a memory index is, whichever engine holds it: points (a memory's id, its vector, and
//! what a search answers with) put and taken away by the follower ([`super::follower`]), and
//! searches within a scope, for one embedding model, with metadata filters, past nothing
//! expired. The filters are built here once, in Qdrant's JSON filter form, which both the
//! embedded engine and a Qdrant server read.

use std::collections::BTreeMap;

use domain::memory::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// Most results one search returns.
pub const K_MAX: usize = 100;

/// What the index keeps of a memory beside its vector: enough to answer a search without
/// reading the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub scope: String,
    /// The scope and every scope above it: a search in any of them finds the memory.
    pub scope_path: Vec<String>,
    /// The embedding model: vectors of two models are not comparable.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    pub text: String,
    /// The metadata, under its own key so that no metadata name can shadow a field above.
    #[serde(default)]
    pub m: BTreeMap<String, Value>,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<Uuid>,
    pub recorded_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// One metadata condition of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The value (or one of a list's values) equals this string, integer or boolean.
    Equals(String, Value),
    /// The value is one of these strings, or one of these integers.
    AnyOf(String, Vec<Value>),
    /// A number within bounds.
    Range { key: String, gt: Option<f64>, gte: Option<f64>, lt: Option<f64>, lte: Option<f64> },
}

#[derive(Debug, Clone)]
pub struct Query {
    pub vector: Vec<f32>,
    pub model: String,
    pub scope: Scope,
    pub conditions: Vec<Condition>,
    /// Memories that expired by then are not found.
    pub now_ms: i64,
    pub k: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub payload: Payload,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the memory index failed: {0}")]
    Engine(String),
    #[error("the memory index is unavailable: {0}")]
    Io(#[from] std::io::Error),
}

/// A vector index of memories. Every method is blocking: callers in async code run it on the
/// blocking pool.
pub trait MemoryIndex: Send + Sync {
    /// Puts points (replacing those with the same id).
    fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError>;
    /// Takes points away; ids it does not hold are no error.
    fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError>;
    /// Takes away every point that expired by `now_ms` (searches skip them before).
    fn sweep_expired(&self, now_ms: i64) -> Result<(), IndexError>;
    /// The best `k` points for the query, best first.
    fn search(&self, query: &Query) -> Result<Vec<Hit>, IndexError>;
    /// Every id held, for comparing the index with the log.
    fn ids(&self) -> Result<Vec<Uuid>, IndexError>;
    /// Makes what was put durable (before the checkpoint says so).
    fn flush(&self) -> Result<(), IndexError>;
}

fn scalar_match(value: &Value) -> Value {
    json!({ "value": value })
}

/// The query's filter in Qdrant's JSON form: within the scope, of the model, not expired,
/// and every metadata condition.
pub fn filter_json(query: &Query) -> Value {
    let mut must = vec![
        json!({ "key": "scope_path", "match": { "value": query.scope.as_str() } }),
        json!({ "key": "model", "match": { "value": query.model } }),
    ];
    for condition in &query.conditions {
        must.push(match condition {
            Condition::Equals(key, value) => {
                json!({ "key": format!("m.{key}"), "match": scalar_match(value) })
            }
            Condition::AnyOf(key, values) => {
                json!({ "key": format!("m.{key}"), "match": { "any": values } })
            }
            Condition::Range { key, gt, gte, lt, lte } => {
                let mut range = serde_json::Map::new();
                for (name, bound) in [("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)] {
                    if let Some(bound) = bound {
                        range.insert(name.into(), json!(bound));
                    }
                }
                json!({ "key": format!("m.{key}"), "range": range })
            }
        });
    }
    must.push(not_expired(query.now_ms));
    json!({ "must": must })
}

/// No expiry, or one still ahead.
fn not_expired(now_ms: i64) -> Value {
    json!({ "should": [
        { "is_empty": { "key": "expires_at_ms" } },
        { "key": "expires_at_ms", "range": { "gt": now_ms } },
    ] })
}

/// Every point that expired by `now_ms`.
pub fn expired_json(now_ms: i64) -> Value {
    json!({ "must": [{ "key": "expires_at_ms", "range": { "lte": now_ms } }] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_filters_by_scope_model_expiry_and_each_condition() {
        let query = Query {
            vector: vec![1.0],
            model: "m".into(),
            scope: Scope::parse("user/alice").unwrap(),
            conditions: vec![
                Condition::Equals("lang".into(), json!("rust")),
                Condition::AnyOf("tags".into(), vec![json!("a"), json!("b")]),
                Condition::Range {
                    key: "n".into(),
                    gt: None,
                    gte: Some(1.0),
                    lt: Some(5.0),
                    lte: None,
                },
            ],
            now_ms: 7,
            k: 3,
        };
        let filter = filter_json(&query);
        let must = filter["must"].as_array().unwrap();
        assert_eq!(must[0]["match"]["value"], "user/alice");
        assert_eq!(must[1]["match"]["value"], "m");
        assert_eq!(must[2], json!({ "key": "m.lang", "match": { "value": "rust" } }));
        assert_eq!(must[3]["match"]["any"], json!(["a", "b"]));
        assert_eq!(must[4]["range"], json!({ "gte": 1.0, "lt": 5.0 }));
        assert_eq!(must[5]["should"][1]["range"]["gt"], 7);
    }
}
