//! The canonical JSON form the event chain hashes ([`super::chain`]): one byte string per
//! JSON value, the same whether the value is the one a command built before its append or
//! the one parsed back from the store's `jsonb` later.
//!
//! `jsonb` does not keep the text it was given: it reorders keys, drops whitespace, rewrites
//! escapes (`"\u00e9"` comes back as `"é"`) and numbers (`1e18` comes back as
//! `1000000000000000000`, `1.0` keeps its `.0`). So the form depends only on the value:
//! - objects: keys sorted by their UTF-8 bytes, no whitespace, `{"a":1,"b":[]}`;
//! - strings: UTF-8 as is, with only `"`, `\` and the control characters below U+0020
//!   escaped (`\b \f \n \r \t`, others `\u00XX` in lower-case hex);
//! - numbers by value, not by text: a double is taken as its shortest round-trip decimal
//!   (what serde_json sends and `jsonb` keeps); when that decimal is a whole number in the
//!   range of `i64`/`u64` it is written as a plain integer, as an integer is (`2.0` and `2`
//!   are both `2`, `1e18` is `1000000000000000000`); any other double as that decimal in
//!   scientific form, one digit before the point and the exponent without `+` or leading
//!   zeros (`1e-1`, `1.5e-7`, `1e20`), so that the form does not follow serde_json's layout;
//! - `true`, `false`, `null` as themselves.
//!
//! A payload can only hold what `serde_json` parses without `arbitrary_precision`: an integer
//! beyond `u64` was already a double before it was stored, so it is one when read back too.

use serde_json::{Number, Value};

/// Appends the canonical form of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's map is sorted already unless a crate in the build turns on its
            // `preserve_order`; sort only then, so the usual case allocates nothing.
            let sorted = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a <= b);
            let mut entries: Vec<(&String, &Value)> = Vec::new();
            if !sorted {
                entries = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            out.push(b'{');
            let mut write_entry = |index: usize, key: &str, item: &Value| {
                if index > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write(item, out);
            };
            if sorted {
                for (index, (key, item)) in map.iter().enumerate() {
                    write_entry(index, key, item);
                }
            } else {
                for (index, (key, item)) in entries.into_iter().enumerate() {
                    write_entry(index, key, item);
                }
            }
            out.push(b'}');
        }
    }
}

/// The canonical form of `value` as a new byte string.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// Smallest double that is not in `i64` (-2^63 is, as a double, exactly `i64::MIN`).
const I64_MIN_F: f64 = -9_223_372_036_854_775_808.0;
/// 2^64, the first double past `u64`.
const U64_END_F: f64 = 18_446_744_073_709_551_616.0;

fn write_number(number: &Number, out: &mut Vec<u8>) {
    use std::io::Write;
    if let Some(integer) = number.as_i64() {
        let _ = write!(out, "{integer}");
    } else if let Some(integer) = number.as_u64() {
        let _ = write!(out, "{integer}");
    } else {
        let double = number.as_f64().unwrap_or(0.0);
        // serde_json writes a finite double in its shortest round-trip form (ryu), and that
        // decimal is what `jsonb` keeps.
        let shortest = serde_json::to_string(&double).unwrap_or_default();
        if double == 0.0 {
            // `-0.0` too: `jsonb` has no negative zero.
            out.push(b'0');
        } else if double.fract() == 0.0 && (I64_MIN_F..U64_END_F).contains(&double) {
            // Read back, that decimal is an integer (within `i64`/`u64`) and prints as one.
            // It is the shortest decimal's value, not the double's exact one:
            // -4.796566914205686e18 comes back as -4796566914205686000, not as
            // -4796566914205685760.
            out.extend_from_slice(integer_digits(&shortest).as_bytes());
        } else {
            out.extend_from_slice(scientific(&shortest).as_bytes());
        }
    }
}

/// A decimal's sign, significant digits (no leading or trailing zero; empty for zero) and
/// exponent: the value is `digits × 10^exponent`. Read from serde_json's text of a double, in
/// whatever layout it uses (`1e20`, `1e+20`, `123.0`), so the form below does not change
/// with it.
fn decimal_parts(shortest: &str) -> (bool, String, i32) {
    let (negative, unsigned) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    let exponent = exponent - fraction.len() as i32 + (digits.len() - significant.len()) as i32;
    (negative, significant.to_owned(), exponent)
}

/// The integer a shortest-form decimal of a whole double stands for, in plain digits:
/// `4.796566914205686e18` → `4796566914205686000`, `123.0` → `123`.
fn integer_digits(shortest: &str) -> String {
    let (negative, digits, exponent) = decimal_parts(shortest);
    if digits.is_empty() {
        return "0".to_owned();
    }
    let zeros = "0".repeat(exponent.max(0) as usize);
    format!("{}{digits}{zeros}", if negative { "-" } else { "" })
}

/// A double that is not written as an integer: its shortest decimal in scientific form, one
/// digit before the point, the exponent without `+` or leading zeros: `5e-1`, `1.5e-7`,
/// `1e20`, `1.2345678e4`.
fn scientific(shortest: &str) -> String {
    let (negative, digits, exponent) = decimal_parts(shortest);
    if digits.is_empty() {
        return "0".to_owned();
    }
    let sign = if negative { "-" } else { "" };
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    format!("{sign}{first}{point}e{}", exponent + rest.len() as i32)
}

fn write_str(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most strings need no escape: one pass that the compiler vectorises, one copy.
    if !bytes.iter().any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canonical(value: &Value) -> String {
        String::from_utf8(to_vec(value)).expect("canonical JSON is UTF-8")
    }

    fn canonical_of_text(text: &str) -> String {
        canonical(&serde_json::from_str(text).expect("valid JSON"))
    }

    #[test]
    fn objects_are_sorted_and_without_whitespace() {
        let value = json!({"b": {"z": 1, "a": [true, null]}, "a": "x", "": {}});
        assert_eq!(canonical(&value), r#"{"":{},"a":"x","b":{"a":[true,null],"z":1}}"#);
        assert_eq!(canonical(&json!([])), "[]");
        assert_eq!(canonical(&json!({})), "{}");
    }

    #[test]
    fn numbers_are_written_by_value() {
        // What `jsonb` gives back for each, on the right.
        for (sent, stored) in [
            ("1e18", "1000000000000000000"),
            ("2.0", "2"),
            ("-0.0", "0"),
            ("1e-7", "0.0000001"),
            ("1e20", "100000000000000000000"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("0.1", "0.1"),
            ("1.7976931348623157e308", &format!("17976931348623157{}", "0".repeat(292))),
        ] {
            assert_eq!(canonical_of_text(sent), canonical_of_text(stored), "{sent} vs {stored}");
        }
        assert_eq!(canonical_of_text("2.0"), "2");
        assert_eq!(canonical_of_text("1e20"), "1e20");
        assert_eq!(canonical_of_text("0.5"), "5e-1");
        assert_eq!(canonical_of_text("1e-7"), "1e-7");
        assert_eq!(canonical_of_text("-12345.678"), "-1.2345678e4");
        assert_eq!(canonical_of_text("1.7976931348623157e308"), "1.7976931348623157e308");
        assert_eq!(canonical_of_text("9007199254740993"), "9007199254740993");
        // A whole double is the integer its shortest decimal says.
        let double = -4.796566914205686e18f64;
        assert_eq!(canonical(&json!(double)), "-4796566914205686000");
        assert_eq!(canonical_of_text("-4796566914205686000"), "-4796566914205686000");
        assert_eq!(integer_digits("123.0"), "123");
        assert_eq!(integer_digits("1e20"), "100000000000000000000");
        assert_eq!(integer_digits("-1.5e1"), "-15");
        assert_eq!(integer_digits("1e+20"), "100000000000000000000");
        assert_eq!(scientific("1e+20"), "1e20");
        assert_eq!(scientific("0.00012"), "1.2e-4");
    }

    #[test]
    fn strings_escape_only_what_json_requires() {
        let value = json!("é \"q\" \\ \n\t\u{1}\u{7f} 😀 /");
        assert_eq!(canonical(&value), "\"é \\\"q\\\" \\\\ \\n\\t\\u0001\u{7f} 😀 /\"");
        assert_eq!(canonical_of_text(r#""\u00e9\/""#), "\"é/\"");
    }

    #[test]
    fn unsorted_maps_are_sorted_too() {
        // Whatever order a map iterates in, the form is the same.
        let mut map = serde_json::Map::new();
        map.insert("b".into(), json!(1));
        map.insert("a".into(), json!(2));
        assert_eq!(canonical(&Value::Object(map)), r#"{"a":2,"b":1}"#);
    }
}
