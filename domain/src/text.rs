//! Text that every store can carry. PostgreSQL refuses the NUL character (U+0000) in `text`
//! and in `jsonb` strings, so one NUL anywhere in an event would fail the whole transaction
//! it was batched into. These checks find it, with the place it sits, so that it is refused
//! at the edge with a reason naming the field, long before a transaction sees it.

use serde_json::Value;

/// Whether JSON text holds an escaped NUL (`\u0000`): the only way JSON can carry one, since
/// raw control characters are not allowed in its strings. A literal backslash followed by
/// `u0000` (`\\u0000`) is not a NUL, so the run of backslashes before `u0000` must be odd.
/// Fast on the common case: a scan for backslashes.
pub fn json_has_nul(text: &[u8]) -> bool {
    let mut index = 0;
    while index < text.len() {
        if text[index] != b'\\' {
            index += 1;
            continue;
        }
        let start = index;
        while index < text.len() && text[index] == b'\\' {
            index += 1;
        }
        let run = index - start;
        if run % 2 == 1 && text[index..].starts_with(b"u0000") {
            return true;
        }
    }
    false
}

/// The path of the first string (a value or an object key) in `value` holding a NUL, as
/// `a.b[2].c` below `root`; `None` when there is none.
pub fn nul_path(value: &Value, root: &str) -> Option<String> {
    match value {
        Value::String(text) if text.contains('\0') => Some(root.to_owned()),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_path(item, &format!("{root}[{i}]")))
        }
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = if root.is_empty() { key.clone() } else { format!("{root}.{key}") };
            if key.contains('\0') {
                // The key itself cannot be printed as it is: show where it starts.
                return Some(path.replace('\0', "\\u0000"));
            }
            nul_path(item, &path)
        }),
        _ => None,
    }
}

/// Text for a record (an error message, a note) with every NUL replaced by U+FFFD: what an
/// agent or a worker reports about a failure must be recorded, not refused.
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') { text.replace('\0', "\u{fffd}").into() } else { text.into() }
}

/// `value` with every NUL in its strings and keys replaced by U+FFFD: what a tool or a
/// provider answered is recorded as it was, short of the one character no store can hold.
pub fn value_without_nul(value: Value) -> Value {
    match value {
        Value::String(text) if text.contains('\0') => Value::String(text.replace('\0', "\u{fffd}")),
        Value::Array(items) => Value::Array(items.into_iter().map(value_without_nul).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, item)| (without_nul(&key).into_owned(), value_without_nul(item)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_escaped_nul_is_found_and_an_escaped_backslash_before_u0000_is_not() {
        assert!(json_has_nul(br#"{"a":"x\u0000y"}"#));
        assert!(json_has_nul(br#"{"a":"\\\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"\\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"\u0001"}"#));
        assert!(!json_has_nul(b"plain"));
        assert!(!json_has_nul(b"ends with \\"));
    }

    #[test]
    fn what_serde_json_writes_for_a_nul_is_what_the_scan_finds() {
        for value in [json!("a\0"), json!({"k\0": 1}), json!([["\0"]])] {
            let text = serde_json::to_string(&value).unwrap();
            assert!(json_has_nul(text.as_bytes()), "{text}");
        }
        let text = serde_json::to_string(&json!({"a": "\\u0000"})).unwrap();
        assert!(!json_has_nul(text.as_bytes()), "{text}");
    }

    #[test]
    fn the_path_names_the_string_or_key_that_holds_the_nul() {
        assert_eq!(nul_path(&json!({"a": {"b": [1, "x\0"]}}), ""), Some("a.b[1]".into()));
        assert_eq!(
            nul_path(&json!({"a": {"k\0": 1}}), "payload"),
            Some("payload.a.k\\u0000".into())
        );
        assert_eq!(nul_path(&json!("\0"), "name"), Some("name".into()));
        assert_eq!(nul_path(&json!({"a": ["fine"]}), ""), None);
    }

    #[test]
    fn a_nul_in_a_record_becomes_a_replacement_character() {
        assert_eq!(without_nul("a\0b"), "a\u{fffd}b");
        assert!(matches!(without_nul("clean"), std::borrow::Cow::Borrowed("clean")));
    }

    #[test]
    fn a_value_without_nul_keeps_everything_but_the_nul() {
        let value = json!({ "a\0": ["x\0y", 1, { "k": "fine" }], "b": null });
        let clean = value_without_nul(value);
        assert_eq!(clean, json!({ "a\u{fffd}": ["x\u{fffd}y", 1, { "k": "fine" }], "b": null }));
        assert_eq!(nul_path(&clean, ""), None);
    }
}
