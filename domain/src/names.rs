//! Stream names, parsed once at the edge so everything downstream can trust them.
//!
//! A stream is addressed by `(stream_type, stream_id)`. Both become tokens of a NATS subject
//! (`<ns>.events.<stream_type>.<stream_id>`), so they may not contain the characters NATS
//! gives meaning to (`.`, `*`, `>`, whitespace). The rules here are stricter than NATS needs so
//! that names are also safe in Redis keys, URLs and log lines without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest stream type accepted; longer names are a caller error, not silently truncated.
pub const STREAM_TYPE_LEN_MAX: usize = 64;
/// Longest stream id accepted (a UUID in text form is 36).
pub const STREAM_ID_LEN_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long, the limit is {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} contains {found:?}, only {allowed} are allowed")]
    BadCharacter { what: &'static str, found: char, allowed: &'static str },
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong { what, len: value.len(), max });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(found) => Err(NameError::BadCharacter { what, found, allowed }),
        None => Ok(()),
    }
}

/// The kind of aggregate a stream belongs to: `mission`, `agent`, `llm_config`, ...
/// Lowercase ASCII letters, digits and `_`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamType(String);

impl StreamType {
    pub fn parse(value: impl Into<String>) -> Result<StreamType, NameError> {
        let value = value.into();
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        check("stream type", &value, STREAM_TYPE_LEN_MAX, "a-z, 0-9 and _", ok)?;
        Ok(StreamType(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One aggregate instance within its type, usually a UUID. ASCII letters, digits, `_` and `-`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn parse(value: impl Into<String>) -> Result<StreamId, NameError> {
        let value = value.into();
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        check("stream id", &value, STREAM_ID_LEN_MAX, "A-Z, a-z, 0-9, _ and -", ok)?;
        Ok(StreamId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<uuid::Uuid> for StreamId {
    fn from(id: uuid::Uuid) -> StreamId {
        StreamId(id.to_string())
    }
}

macro_rules! name_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                $name::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}
name_impls!(StreamType);
name_impls!(StreamId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_types_accept_lowercase_words_and_refuse_subject_syntax() {
        assert_eq!(StreamType::parse("llm_config").unwrap().as_str(), "llm_config");
        for (bad, expected) in [
            ("", NameError::Empty { what: "stream type" }),
            (
                "mission.x",
                NameError::BadCharacter {
                    what: "stream type",
                    found: '.',
                    allowed: "a-z, 0-9 and _",
                },
            ),
            (
                "Mission",
                NameError::BadCharacter {
                    what: "stream type",
                    found: 'M',
                    allowed: "a-z, 0-9 and _",
                },
            ),
        ] {
            assert_eq!(StreamType::parse(bad), Err(expected), "input {bad:?}");
        }
    }

    #[test]
    fn stream_ids_refuse_wildcards_whitespace_and_overlong_values() {
        assert!(StreamId::parse("0199b1c2-aaaa-7bbb-8ccc-0123456789ab").is_ok());
        for bad in ["a*", "a>b", "a b", "a.b", "é"] {
            assert!(
                matches!(StreamId::parse(bad), Err(NameError::BadCharacter { .. })),
                "{bad:?} should be refused"
            );
        }
        let long = "x".repeat(STREAM_ID_LEN_MAX + 1);
        assert_eq!(
            StreamId::parse(long),
            Err(NameError::TooLong { what: "stream id", len: 129, max: 128 })
        );
    }

    #[test]
    fn deserialising_a_stream_id_applies_the_same_rules_as_parse() {
        let ok: StreamId = serde_json::from_str("\"abc-1\"").unwrap();
        assert_eq!(ok.as_str(), "abc-1");
        let err = serde_json::from_str::<StreamId>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("stream id contains '.'"), "{err}");
    }
}
