//! The console's API calls, read from its JavaScript sources without running them.
//!
//! A small lexer turns each module into tokens (`lex`), and its functions are found with their
//! parameters (`source`); every call of `api(`, `fetch(` and `new WebSocket(` is evaluated to the
//! method and path it can send. A path is made of literal text, runtime values (an id:
//! `${missionId}`, `encodeURIComponent(agentId)`) and query strings (`query({...})`, cut off).
//! An argument that is a parameter of the enclosing function is followed to every call of that
//! function, the method and path of one caller together (`change('PUT', '/api/llm/config')`),
//! and a name bound by `const` to the initialiser it was given.
//!
//! Nothing is skipped: a call whose method or path cannot be worked out, a function whose
//! parameter is needed but that is passed around as a value (its calls cannot be followed),
//! another way of reaching the network (`XMLHttpRequest`, `EventSource`, `sendBeacon`), and a
//! literal naming an API path that no call sends are all reported as problems.

mod calls;
mod lex;
mod source;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeSet;

use lex::Tok;
use source::Module;

/// The text of a runtime value inside a path while it is being joined: never in a source.
const PARAM: char = '\u{1}';

/// What a name stands for where it is used.
enum Binding {
    /// The `k`th parameter of function `f` of module `m`.
    Param { m: usize, f: usize, k: usize },
    /// `const name = ...`: the initialiser, in module `m`.
    Init { m: usize, range: (usize, usize) },
    /// Known only at run time.
    Runtime,
}

/// A piece of a path being worked out.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Param,
    Query,
}

/// A function's parameters taken from one call of it: `(module, args)` of that call.
#[derive(Clone)]
struct Bound {
    m: usize,
    f: usize,
    call_module: usize,
    args: Vec<(usize, usize)>,
    /// Where the call is, for messages.
    at: String,
}

enum Failure {
    /// The value depends on a parameter of this function, not bound yet.
    Unbound {
        m: usize,
        f: usize,
    },
    Unresolved(String),
}

/// One segment of a path the console sends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    Lit(String),
    /// A value known at run time (an id).
    Param,
}

/// One API call the console can make.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub method: String,
    pub path: Vec<Segment>,
    /// `file:line` of the call, then of each caller its arguments came from.
    pub at: Vec<String>,
}

impl Call {
    pub fn path_text(&self) -> String {
        let segments: Vec<String> = self
            .path
            .iter()
            .map(|s| match s {
                Segment::Lit(text) => text.replace(PARAM, "{…}"),
                Segment::Param => "{…}".to_owned(),
            })
            .collect();
        format!("/{}", segments.join("/"))
    }
}

/// Every call the sources can make, and everything that kept one from being worked out.
#[derive(Debug, Default)]
pub struct Scan {
    pub calls: Vec<Call>,
    pub problems: Vec<String>,
}

/// Function calls that reach the network, besides the ones followed.
const OTHER_NETWORK: &[&str] = &["XMLHttpRequest", "EventSource", "sendBeacon", "importScripts"];

/// Reads `(file name, source)` pairs.
pub fn scan(sources: &[(String, String)]) -> Scan {
    let mut result = Scan::default();
    let mut modules = Vec::new();
    for (name, source) in sources {
        match Module::parse(name, source) {
            Ok(module) => modules.push(module),
            Err(problem) => result.problems.push(problem),
        }
    }
    let mut scanner = Scanner { modules: &modules, used: BTreeSet::new() };
    for (m, module) in modules.iter().enumerate() {
        for i in 0..module.tokens.len() {
            let Some(word) = module.ident(i) else { continue };
            let at = format!("{}:{}", module.name, module.line(i));
            let member = module.is(i.wrapping_sub(1), ".");
            let global_member = member
                && matches!(
                    module.ident(i.wrapping_sub(2)),
                    Some("window" | "globalThis" | "self")
                );
            let called = module.is(i + 1, "(");
            let site = match word {
                "api" | "fetch"
                    if (!member || global_member) && called && !module.is_definition(i) =>
                {
                    Some(word)
                }
                "WebSocket" if module.ident(i.wrapping_sub(1)) == Some("new") && called => {
                    Some(word)
                }
                "api" | "fetch" | "WebSocket"
                    if !member && !module.is_definition(i) && !module.specifiers.contains(&i) =>
                {
                    result
                        .problems
                        .push(format!("{at}: `{word}` is used other than by calling it"));
                    None
                }
                _ if OTHER_NETWORK.contains(&word) => {
                    result.problems.push(format!("{at}: `{word}` reaches the network unchecked"));
                    None
                }
                _ => None,
            };
            if let Some(kind) = site {
                scanner.site(m, i, kind, &at, &mut result);
            }
        }
    }
    // A literal naming an API path that no call sent: a use the checks above cannot see.
    for (m, module) in modules.iter().enumerate() {
        for (i, token) in module.tokens.iter().enumerate() {
            let text = match &token.tok {
                Tok::Str(text) | Tok::TplText(text) => text,
                _ => continue,
            };
            let api_like = ["/api/", "/v1/", "/ws/"].iter().any(|p| text.contains(p))
                || ["/api", "/v1", "/ws"].contains(&text.as_str());
            if api_like && !scanner.used.contains(&(m, i)) {
                result.problems.push(format!(
                    "{}:{}: the literal {text:?} names an API path but is sent by no call found",
                    module.name, token.line
                ));
            }
        }
    }
    result.calls.sort();
    result.calls.dedup();
    result
}

struct Scanner<'a> {
    modules: &'a [Module],
    /// Literal tokens that went into a call's path.
    used: BTreeSet<(usize, usize)>,
}

/// How many callers deep an argument is followed.
const DEPTH_MAX: usize = 6;

impl Scanner<'_> {
    fn site(&mut self, m: usize, i: usize, kind: &str, at: &str, result: &mut Scan) {
        let module = &self.modules[m];
        let args = module.args(i + 1);
        // Each entry binds the parameters of the functions the call sits in, innermost
        // first, to one chain of callers.
        let mut pending: Vec<Vec<Bound>> = vec![Vec::new()];
        while let Some(env) = pending.pop() {
            let outcome = match kind {
                "api" => self.api_call(m, &args, &env),
                "fetch" => self.fetch_call(m, &args, &env),
                _ => self.websocket_call(m, &args, &env),
            };
            match outcome {
                Ok(found) => {
                    for (method, path) in found {
                        let mut trail = vec![at.to_owned()];
                        trail.extend(env.iter().map(|b| b.at.clone()));
                        match segments(&path) {
                            Ok(path) => result.calls.push(Call { method, path, at: trail }),
                            Err(problem) => {
                                result.problems.push(format!("{}: {problem}", trail.join(" <- ")))
                            }
                        }
                    }
                }
                Err(Failure::Unresolved(why)) => result.problems.push(format!("{at}: {why}")),
                Err(Failure::Unbound { m: fm, f }) => {
                    if env.len() >= DEPTH_MAX {
                        result.problems.push(format!("{at}: callers nested too deep to follow"));
                        continue;
                    }
                    match self.callers(fm, f) {
                        Ok(callers) if callers.is_empty() => result.problems.push(format!(
                            "{at}: needs the arguments of `{}`, which nothing calls",
                            self.modules[fm].functions[f]
                                .name
                                .as_deref()
                                .unwrap_or("an anonymous function")
                        )),
                        Ok(callers) => {
                            for caller in callers {
                                let mut next = env.clone();
                                next.push(caller);
                                pending.push(next);
                            }
                        }
                        Err(problem) => result.problems.push(format!("{at}: {problem}")),
                    }
                }
            }
        }
    }
}

/// The path of a URL as segments: scheme and host dropped, query cut off.
fn segments(parts: &[Part]) -> Result<Vec<Segment>, String> {
    let mut text = String::new();
    for part in parts {
        match part {
            Part::Lit(lit) => text.push_str(lit),
            Part::Param => text.push(PARAM),
            Part::Query => break,
        }
    }
    if let Some(cut) = text.find(['?', '#']) {
        text.truncate(cut);
    }
    if let Some(scheme) = text.find("//")
        && text[..scheme].chars().all(|c| c.is_ascii_alphabetic() || c == ':')
    {
        let host = &text[scheme + 2..];
        text = host.find('/').map_or(String::new(), |slash| host[slash..].to_owned());
    }
    let Some(path) = text.strip_prefix('/') else {
        return Err(format!("{:?} is not a path from the root", text.replace(PARAM, "{…}")));
    };
    Ok(path
        .split('/')
        .map(|segment| {
            if segment == PARAM.to_string() {
                Segment::Param
            } else {
                Segment::Lit(segment.to_owned())
            }
        })
        .collect())
}
