//! The check of an MCP tool call's arguments against the input schema its server published,
//! made before anything is sent: the subset of JSON Schema that MCP servers use for tool
//! inputs (`type`, `properties`, `required`, `additionalProperties: false`, `enum`, `const`,
//! `items`, nested objects and arrays, `anyOf`/`oneOf` of those, string and number bounds).
//! A keyword outside the subset is not checked (the server still checks its own inputs):
//! this is a guard against what the model gets plainly wrong, not a validator of the whole
//! standard. It is bounded in depth and in work, since the schema comes from the server.

use serde_json::Value;

/// Deepest nesting of schema and value walked; deeper parts are not checked.
pub const DEPTH_MAX: usize = 32;
/// Most schema nodes one check visits; past it the rest is not checked.
pub const NODES_MAX: usize = 10_000;

/// Checks `arguments` (the call's object) against `schema`; says where they break it.
pub fn check(schema: &Value, arguments: &Value) -> Result<(), String> {
    if !arguments.is_object() {
        return Err("the arguments must be a JSON object".into());
    }
    let mut budget = NODES_MAX;
    walk(schema, arguments, "arguments", 0, &mut budget)
}

fn type_fits(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn walk(
    schema: &Value,
    value: &Value,
    at: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<(), String> {
    if depth > DEPTH_MAX || *budget == 0 {
        return Ok(());
    }
    *budget -= 1;
    let Some(schema) = schema.as_object() else { return Ok(()) };
    match &schema.get("type") {
        Some(Value::String(name)) if !type_fits(name, value) => {
            return Err(format!("{at} must be of type {name}"));
        }
        Some(Value::Array(names))
            if !names.iter().filter_map(Value::as_str).any(|name| type_fits(name, value)) =>
        {
            return Err(format!("{at} must be of type {}", Value::Array(names.clone())));
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Err(format!("{at} must be one of {}", Value::Array(allowed.clone())));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{at} must be {constant}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = schema.get(key) {
            let fits =
                choices.iter().any(|choice| walk(choice, value, at, depth + 1, budget).is_ok());
            if !choices.is_empty() && !fits {
                return Err(format!("{at} matches none of the schemas of {key}"));
            }
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for part in all {
            walk(part, value, at, depth + 1, budget)?;
        }
    }
    match value {
        Value::Object(given) => object(schema, given, at, depth, budget),
        Value::Array(items) => array(schema, items, at, depth, budget),
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| length < min) {
                return Err(format!("{at} is shorter than its minLength"));
            }
            if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| length > max) {
                return Err(format!("{at} is longer than its maxLength"));
            }
            Ok(())
        }
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or_default();
            if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| number < min) {
                return Err(format!("{at} is below its minimum"));
            }
            if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| number > max) {
                return Err(format!("{at} is above its maximum"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn object(
    schema: &serde_json::Map<String, Value>,
    given: &serde_json::Map<String, Value>,
    at: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<(), String> {
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let name = required.as_str().unwrap_or_default();
        if !given.contains_key(name) {
            return Err(format!("{at}: missing {name:?}"));
        }
    }
    let empty = serde_json::Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in given {
        match properties.get(name) {
            Some(property) => walk(property, value, &format!("{at}.{name}"), depth + 1, budget)?,
            None if closed => return Err(format!("{at}: unknown property {name:?}")),
            None => {
                if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
                    walk(extra, value, &format!("{at}.{name}"), depth + 1, budget)?;
                }
            }
        }
    }
    Ok(())
}

fn array(
    schema: &serde_json::Map<String, Value>,
    items: &[Value],
    at: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<(), String> {
    let count = items.len() as u64;
    if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| count < min) {
        return Err(format!("{at} has fewer items than its minItems"));
    }
    if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|max| count > max) {
        return Err(format!("{at} has more items than its maxItems"));
    }
    if let Some(item_schema @ Value::Object(_)) = schema.get("items") {
        for (n, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{at}[{n}]"), depth + 1, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_breaking_the_schema_are_refused_naming_where() {
        let schema = json!({ "type": "object", "required": ["timezone"], "properties": {
            "timezone": { "type": "string", "minLength": 1 },
            "unit": { "enum": ["c", "f"] },
            "count": { "type": "integer", "minimum": 1, "maximum": 10 },
            "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 },
            "point": { "type": "object", "additionalProperties": false,
                "properties": { "x": { "type": "number" } }, "required": ["x"] } } });
        assert_eq!(check(&schema, &json!({ "timezone": "UTC", "extra": 1 })), Ok(()));
        for (arguments, says) in [
            (json!({}), "missing \"timezone\""),
            (json!({ "timezone": 3 }), "arguments.timezone must be of type string"),
            (json!({ "timezone": "" }), "minLength"),
            (json!({ "timezone": "a", "unit": "k" }), "arguments.unit must be one of"),
            (json!({ "timezone": "a", "count": 1.5 }), "type integer"),
            (json!({ "timezone": "a", "count": 11 }), "maximum"),
            (json!({ "timezone": "a", "tags": ["a", 2] }), "arguments.tags[1]"),
            (json!({ "timezone": "a", "tags": ["a", "b", "c"] }), "maxItems"),
            (json!({ "timezone": "a", "point": { "x": 1, "y": 2 } }), "unknown property \"y\""),
            (json!({ "timezone": "a", "point": {} }), "arguments.point: missing \"x\""),
        ] {
            let refused = check(&schema, &arguments).unwrap_err();
            assert!(refused.contains(says), "{arguments}: {refused}");
        }
        assert!(check(&schema, &json!("UTC")).is_err());
    }

    #[test]
    fn a_hostile_schema_is_walked_within_bounds() {
        // Four times the walk's bound, as deep as serde_json parses a server's answer (128):
        // deeper values overflow the test thread's stack when they are dropped.
        let mut schema = json!({ "type": "object" });
        let mut value = json!({});
        for _ in 0..DEPTH_MAX * 4 {
            schema = json!({ "type": "object", "properties": { "a": schema } });
            value = json!({ "a": value });
        }
        assert_eq!(check(&schema, &value), Ok(()));
        let wide: Vec<Value> = (0..100_000).map(|_| json!({ "type": "string" })).collect();
        let schema = json!({ "anyOf": wide, "type": "object" });
        assert!(check(&schema, &json!({})).is_ok());
    }
}
