//! What a memory may hold: a scope path of bounded depth and segment length, text and
//! metadata of bounded size. Checked here once so that the API, the agents' tools and the
//! aggregate refuse the same things with the same reasons.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most segments of a scope (`user/alice/project/x` has four).
pub const SCOPE_DEPTH_MAX: usize = 8;
/// Longest segment of a scope, in bytes.
pub const SCOPE_SEGMENT_LEN_MAX: usize = 64;
/// Longest scope, in bytes, separators included.
pub const SCOPE_LEN_MAX: usize = SCOPE_DEPTH_MAX * (SCOPE_SEGMENT_LEN_MAX + 1);
/// Longest memory text, in characters: a paragraph or a page, not a document.
pub const TEXT_LEN_MAX: usize = 8_000;
/// Most metadata keys of one memory.
pub const METADATA_KEYS_MAX: usize = 32;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_LEN_MAX: usize = 64;
/// Longest metadata string value, in characters.
pub const METADATA_STRING_LEN_MAX: usize = 1_000;
/// Most values of one metadata list.
pub const METADATA_LIST_MAX: usize = 64;
/// Most bytes of one memory's metadata as JSON.
pub const METADATA_BYTES_MAX: usize = 16_384;
/// Longest reason given to supersede or forget, in characters.
pub const REASON_LEN_MAX: usize = 1_000;
/// Longest time to live: ten years.
pub const TTL_S_MAX: u64 = 10 * 365 * 24 * 3600;
/// Most dimensions of a stored embedding.
pub const VECTOR_DIMS_MAX: usize = 4_096;

/// Where a memory belongs: `/`-separated segments (`kind/coder`, `user/alice/project/x`).
/// A search in a scope finds the memories of that scope and of every scope below it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

fn segment_ok(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("an empty segment (a leading, trailing or doubled `/`)".into());
    }
    if segment.len() > SCOPE_SEGMENT_LEN_MAX {
        return Err(format!("a segment is longer than {SCOPE_SEGMENT_LEN_MAX} bytes"));
    }
    if segment.chars().all(|c| c == '.') {
        return Err(format!("the segment {segment:?} is not a name"));
    }
    match segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        Some(found) => Err(format!("{found:?}: only A-Z, a-z, 0-9, _, -, . and @ in a segment")),
        None => Ok(()),
    }
}

impl Scope {
    pub fn parse(value: impl Into<String>) -> Result<Scope, String> {
        let value = value.into();
        if value.len() > SCOPE_LEN_MAX {
            return Err(format!("longer than {SCOPE_LEN_MAX} bytes"));
        }
        let segments: Vec<&str> = value.split('/').collect();
        if segments.len() > SCOPE_DEPTH_MAX {
            return Err(format!("deeper than {SCOPE_DEPTH_MAX} segments"));
        }
        for segment in &segments {
            segment_ok(segment)?;
        }
        Ok(Scope(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scope and every scope above it, shortest first: `user`, `user/alice`, ... A search
    /// in one of these finds this memory.
    pub fn ancestry(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (index, c) in self.0.char_indices() {
            if c == '/' {
                out.push(self.0[..index].to_owned());
            }
        }
        out.push(self.0.clone());
        out
    }

    /// Whether `self` is `other` or below it.
    pub fn is_within(&self, other: &Scope) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        Scope::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

pub fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    if text.chars().count() > TEXT_LEN_MAX {
        return Err(format!("longer than {TEXT_LEN_MAX} characters"));
    }
    if text.contains('\0') {
        return Err("holds a NUL character".into());
    }
    Ok(())
}

pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("say why".into());
    }
    if reason.chars().count() > REASON_LEN_MAX {
        return Err(format!("longer than {REASON_LEN_MAX} characters"));
    }
    if reason.contains('\0') {
        return Err("holds a NUL character".into());
    }
    Ok(())
}

fn scalar_ok(key: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) if text.chars().count() > METADATA_STRING_LEN_MAX => {
            Err(format!("{key}: a string longer than {METADATA_STRING_LEN_MAX} characters"))
        }
        Value::String(text) if text.contains('\0') => Err(format!("{key}: holds a NUL character")),
        Value::String(_) | Value::Bool(_) => Ok(()),
        Value::Number(number) if number.as_f64().is_some_and(f64::is_finite) => Ok(()),
        _ => Err(format!("{key}: a string, number or boolean, or a list of them")),
    }
}

/// Metadata is flat: each value a string, number or boolean, or a list of them, so that every
/// value can be filtered on (equals, any-of, range) by every index backend.
pub fn check_metadata(metadata: &BTreeMap<String, Value>) -> Result<(), String> {
    if metadata.len() > METADATA_KEYS_MAX {
        return Err(format!("more than {METADATA_KEYS_MAX} keys"));
    }
    for (key, value) in metadata {
        if key.is_empty()
            || key.len() > METADATA_KEY_LEN_MAX
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "key {:?}: 1 to {METADATA_KEY_LEN_MAX} of A-Z, a-z, 0-9, _ and -",
                key.chars().take(METADATA_KEY_LEN_MAX).collect::<String>()
            ));
        }
        match value {
            Value::Array(items) if items.len() > METADATA_LIST_MAX => {
                return Err(format!("{key}: more than {METADATA_LIST_MAX} values"));
            }
            Value::Array(items) => items.iter().try_for_each(|item| scalar_ok(key, item))?,
            scalar => scalar_ok(key, scalar)?,
        }
    }
    let bytes = serde_json::to_vec(metadata).map(|json| json.len()).unwrap_or(usize::MAX);
    if bytes > METADATA_BYTES_MAX {
        return Err(format!("more than {METADATA_BYTES_MAX} bytes as JSON"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scopes_are_bounded_paths_of_plain_names() {
        assert!(Scope::parse("kind/coder").is_ok());
        assert!(Scope::parse("user/alice@example.com/project/x").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "..", "a/./b", "a b", "a/é", "a\0b"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} accepted");
        }
        let deep = ["a"; SCOPE_DEPTH_MAX + 1].join("/");
        assert!(Scope::parse(deep).unwrap_err().contains("deeper"));
        let long = "a".repeat(SCOPE_SEGMENT_LEN_MAX + 1);
        assert!(Scope::parse(long).is_err());
    }

    #[test]
    fn a_scope_lies_within_itself_and_its_ancestors_only() {
        let scope = Scope::parse("user/alice/project").unwrap();
        assert_eq!(scope.ancestry(), ["user", "user/alice", "user/alice/project"]);
        assert!(scope.is_within(&Scope::parse("user/alice").unwrap()));
        assert!(!scope.is_within(&Scope::parse("user/ali").unwrap()));
    }

    #[test]
    fn metadata_is_flat_and_bounded() {
        let ok = |value: Value| {
            let map: BTreeMap<String, Value> = serde_json::from_value(value).unwrap();
            check_metadata(&map)
        };
        assert!(ok(json!({"lang": "rust", "n": 3, "tags": ["a", "b"], "ok": true})).is_ok());
        assert!(ok(json!({"nested": {"a": 1}})).is_err());
        assert!(ok(json!({"null": null})).is_err());
        assert!(ok(json!({"bad key": 1})).is_err());
        assert!(ok(json!({"list": [[1]]})).is_err());
    }
}
