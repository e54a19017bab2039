//! The OpenAPI document as the API's side of the console's contract: which documented
//! operation a request is, and whether a field read from its answer is in the schema the
//! document gives that answer.
//!
//! A schema is followed through `$ref`, `allOf`, `oneOf` and `anyOf` (a field is there when
//! one of the alternatives has it), `items` for an array element and `properties`, then
//! `additionalProperties`, for a key. An object schema that names no property at all is
//! free-form JSON (a mission's payload): anything read inside it is accepted. An object that
//! names its properties accepts no other key, whatever JSON Schema's default: a field the
//! document does not name is one a client cannot know of.

use serde::Deserialize;
use serde_json::Value;

use super::scan::Segment;

/// One property the console read from an answer, as the recorder in the browser saw it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    /// `http` (a JSON body), `sse` (an event of an event stream) or `ws` (a WebSocket message).
    pub kind: String,
    pub method: String,
    /// The path requested, ids and all.
    pub path: String,
    pub status: u16,
    /// The event's name, for `sse`.
    pub event: Option<String>,
    /// The keys of a WebSocket message, which say what kind of message it is.
    pub root: Option<Vec<String>>,
    /// Keys from the answer's root; `[]` is an element of an array.
    pub field: Vec<String>,
    /// The JavaScript type of what the answer held there, or `absent`.
    #[serde(rename = "type")]
    pub seen: String,
}

impl Read {
    pub fn describe(&self) -> String {
        let event = self.event.as_deref().map(|e| format!(" event `{e}`")).unwrap_or_default();
        format!(
            "{} {} {} ({}{event}): `{}` ({})",
            self.method,
            self.path,
            self.status,
            self.kind,
            self.field.join("."),
            self.seen
        )
    }
}

pub enum Verdict {
    Documented,
    /// The document describes these messages in words only, with no schema to check.
    Undescribed(String),
    Mismatch(String),
}

pub struct Contract<'a> {
    document: &'a Value,
}

impl<'a> Contract<'a> {
    pub fn new(document: &'a Value) -> Contract<'a> {
        Contract { document }
    }

    /// The documented path that `method path` is, preferring literal segments to parameters
    /// (as the router does: `/api/agents/info` before `/api/agents/{agent_id}`).
    pub fn operation(&self, method: &str, path: &[Segment]) -> Option<String> {
        let method = method.to_lowercase();
        let paths = self.document["paths"].as_object()?;
        let mut best: Option<(usize, &String)> = None;
        for (template, item) in paths {
            if item.get(&method).is_none() {
                continue;
            }
            let documented: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if documented.len() != path.len() {
                continue;
            }
            let mut literal = 0;
            let matches = documented.iter().zip(path).all(|(doc, sent)| {
                if doc.starts_with('{') && doc.ends_with('}') {
                    true
                } else {
                    literal += 1;
                    *sent == Segment::Lit((*doc).to_owned())
                }
            });
            if matches && best.is_none_or(|(most, _)| literal > most) {
                best = Some((literal, template));
            }
        }
        best.map(|(_, template)| template.clone())
    }

    /// Whether the operation documents `name` as a query parameter.
    pub fn query_parameter(&self, method: &str, template: &str, name: &str) -> Result<(), String> {
        let item = &self.document["paths"][template];
        let operation = &item[method.to_lowercase()];
        let parameters = [&operation["parameters"], &item["parameters"]];
        let found = parameters
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .find(|p| p["name"] == name);
        match found.map(|p| p["in"].as_str().unwrap_or_default()) {
            Some("query") => Ok(()),
            Some(place) => {
                Err(format!("documents `{name}` as a {place} parameter, not a query one"))
            }
            None => Err(format!("documents no parameter `{name}`")),
        }
    }

    pub fn check(&self, read: &Read) -> Verdict {
        let segments = concrete(&read.path);
        let Some(template) = self.operation(&read.method, &segments) else {
            return Verdict::Mismatch(format!(
                "{} {} is no documented operation",
                read.method, read.path
            ));
        };
        let operation = &self.document["paths"][&template][read.method.to_lowercase()];
        let schema = match read.kind.as_str() {
            "http" => match self.body_schema(operation, read.status) {
                Ok(schema) => schema,
                Err(why) => return Verdict::Mismatch(format!("{} {template}: {why}", read.method)),
            },
            "ws" => match self.message_schema(operation, read) {
                Ok(schema) => schema,
                Err(verdict) => return verdict,
            },
            "sse" => {
                // An event stream's events have no schema in OpenAPI 3.1: at most words.
                let event = read.event.as_deref().unwrap_or("message");
                let said =
                    operation["responses"]["200"]["description"].as_str().unwrap_or_default();
                return if said.contains(&format!("`{event}`")) {
                    Verdict::Undescribed(format!("{} {template}: event `{event}`", read.method))
                } else {
                    Verdict::Mismatch(format!(
                        "{} {template}: event `{event}` is not documented",
                        read.method
                    ))
                };
            }
            other => return Verdict::Mismatch(format!("a read of an unknown kind {other:?}")),
        };
        match self.walk(schema, &read.field, &read.seen) {
            Ok(()) => Verdict::Documented,
            Err(why) => {
                Verdict::Mismatch(format!("{} {template} {}: {why}", read.method, read.status))
            }
        }
    }

    /// The JSON body schema of the answer with `status`.
    fn body_schema(&self, operation: &'a Value, status: u16) -> Result<&'a Value, String> {
        let responses = &operation["responses"];
        let response = match responses.get(status.to_string()).or_else(|| responses.get("default"))
        {
            Some(response) => response,
            None => return Err(format!("answered {status}, which it does not document")),
        };
        response["content"]["application/json"]
            .get("schema")
            .ok_or_else(|| format!("documents no JSON body for {status}"))
    }

    /// `/ws/events` documents its messages in words: each event "the shape of `GET
    /// /api/events`" (an element of its `events`), and with `tokens`, `{"token": {...}}`
    /// messages, without a schema. A message with a `token` key is one of the latter, and
    /// an event read for its `token` is being told apart from them.
    fn message_schema(&self, operation: &'a Value, read: &Read) -> Result<&'a Value, Verdict> {
        let token_message =
            read.root.as_ref().is_some_and(|keys| keys.iter().any(|k| k == "token"));
        let telling_apart = read.field == ["token"] && read.seen == "absent";
        if token_message || telling_apart {
            let said = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["description"].as_str().is_some_and(|d| d.contains("{\"token\":")));
            let what = if token_message {
                "`{\"token\": ...}` messages"
            } else {
                "`token`, which tells those messages from events"
            };
            return Err(if said {
                Verdict::Undescribed(format!("{} {}: {what}", read.method, read.path))
            } else {
                Verdict::Mismatch(format!("{}: `token` messages are not documented", read.path))
            });
        }
        let said = operation["responses"]["101"]["description"].as_str().unwrap_or_default();
        if !said.contains("the shape of `GET /api/events`") {
            return Err(Verdict::Mismatch(format!(
                "{}: the 101 answer no longer says what shape a message has: {said:?}",
                read.path
            )));
        }
        let page = &self.document["paths"]["/api/events"]["get"];
        let page = self.body_schema(page, 200).map_err(Verdict::Mismatch)?;
        let items = self
            .alternatives(page)
            .into_iter()
            .find_map(|leaf| leaf["properties"]["events"].get("items"));
        items.ok_or_else(|| Verdict::Mismatch("GET /api/events documents no `events` array".into()))
    }

    /// Whether `field` is in `schema`, and what was seen there is what it documents.
    pub fn walk(&self, schema: &'a Value, field: &[String], seen: &str) -> Result<(), String> {
        let mut current = self.alternatives(schema);
        for (depth, key) in field.iter().enumerate() {
            let so_far = field[..=depth].join(".");
            if current.iter().any(|leaf| free_form(leaf)) {
                return Ok(());
            }
            let mut next = Vec::new();
            let mut required = Vec::new();
            for leaf in &current {
                if key == "[]" {
                    if let Some(items) = leaf.get("items") {
                        next.extend(self.alternatives(items));
                    }
                    continue;
                }
                if let Some(property) = leaf["properties"].get(key) {
                    next.extend(self.alternatives(property));
                    let listed = leaf["required"].as_array().into_iter().flatten();
                    required.push(listed.into_iter().any(|r| r == key));
                } else if leaf.get("additionalProperties") == Some(&Value::Bool(true)) {
                    return Ok(());
                } else if let Some(more) =
                    leaf.get("additionalProperties").filter(|m| m.is_object())
                {
                    next.extend(self.alternatives(more));
                }
            }
            if next.is_empty() {
                let names: Vec<String> = current.iter().map(|leaf| self.name(leaf)).collect();
                return Err(format!("`{so_far}` is not in the schema ({})", names.join(" | ")));
            }
            let last = depth + 1 == field.len();
            if last && seen == "absent" && !required.is_empty() && required.iter().all(|r| *r) {
                return Err(format!("`{so_far}` is required by the schema but was absent"));
            }
            current = next;
        }
        if seen == "absent" || current.iter().any(|leaf| allows(leaf, seen)) {
            return Ok(());
        }
        let types: Vec<String> = current.iter().map(|leaf| self.name(leaf)).collect();
        Err(format!(
            "`{}` is documented as {}, but held a JSON {seen}",
            field.join("."),
            types.join(" | ")
        ))
    }

    /// The schemas a value may match: `$ref`s followed, `allOf`/`oneOf`/`anyOf` taken apart.
    fn alternatives(&self, schema: &'a Value) -> Vec<&'a Value> {
        let mut found = Vec::new();
        self.collect(schema, &mut found, 0);
        found
    }

    fn collect(&self, schema: &'a Value, found: &mut Vec<&'a Value>, depth: usize) {
        assert!(depth < 64, "a schema that refers to itself without end: {schema}");
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            self.collect(self.resolve(target), found, depth + 1);
            return;
        }
        let mut composed = false;
        for keyword in ["allOf", "oneOf", "anyOf"] {
            for member in schema.get(keyword).and_then(Value::as_array).into_iter().flatten() {
                composed = true;
                self.collect(member, found, depth + 1);
            }
        }
        let own = ["type", "properties", "items", "additionalProperties", "enum"]
            .iter()
            .any(|k| schema.get(k).is_some());
        if own || !composed {
            found.push(schema);
        }
    }

    fn resolve(&self, target: &str) -> &'a Value {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target}: not a schema"));
        let schema = &self.document["components"]["schemas"][name];
        assert!(schema.is_object(), "{target} is dangling");
        schema
    }

    /// A schema's component name, for messages, or its type.
    fn name(&self, leaf: &Value) -> String {
        let components = self.document["components"]["schemas"].as_object();
        if let Some((name, _)) =
            components.into_iter().flatten().find(|(_, s)| std::ptr::eq(*s, leaf))
        {
            return name.clone();
        }
        match &leaf["type"] {
            Value::Null => "any".to_owned(),
            Value::String(t) => t.clone(),
            other => other.to_string(),
        }
    }
}

/// An object schema that names nothing: any JSON object (or, without a type, any value).
fn free_form(leaf: &Value) -> bool {
    let typed_object = match &leaf["type"] {
        Value::Null => true,
        Value::String(t) => t == "object",
        Value::Array(types) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    typed_object
        && ["properties", "items", "additionalProperties", "enum"]
            .iter()
            .all(|k| leaf.get(k).is_none())
}

/// Whether a value of JavaScript type `seen` fits `leaf`'s `type`.
fn allows(leaf: &Value, seen: &str) -> bool {
    let fits = |t: &str| match seen {
        "number" => t == "number" || t == "integer",
        "undefined" => false,
        other => t == other,
    };
    match &leaf["type"] {
        Value::Null => true,
        Value::String(t) => fits(t),
        Value::Array(types) => types.iter().filter_map(Value::as_str).any(fits),
        _ => false,
    }
}

/// A requested path as segments, every one literal.
pub fn concrete(path: &str) -> Vec<Segment> {
    path.trim_start_matches('/').split('/').map(|s| Segment::Lit(s.to_owned())).collect()
}
