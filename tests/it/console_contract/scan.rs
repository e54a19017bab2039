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

mod lex;
mod source;

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

    /// `api(method, path, body, options)`.
    fn api_call(
        &mut self,
        m: usize,
        args: &[(usize, usize)],
        env: &[Bound],
    ) -> Result<Vec<(String, Vec<Part>)>, Failure> {
        let (Some(method), Some(path)) = (args.first(), args.get(1)) else {
            return Err(Failure::Unresolved("api() without a method and a path".into()));
        };
        let methods = self.methods(m, *method, env)?;
        let paths = self.eval(m, *path, env, true)?;
        Ok(methods
            .iter()
            .flat_map(|method| paths.iter().map(move |p| (method.clone(), p.clone())))
            .collect())
    }

    /// `fetch(path, init)`: the method is `init.method`, GET without one.
    fn fetch_call(
        &mut self,
        m: usize,
        args: &[(usize, usize)],
        env: &[Bound],
    ) -> Result<Vec<(String, Vec<Part>)>, Failure> {
        let Some(path) = args.first() else {
            return Err(Failure::Unresolved("fetch() without a path".into()));
        };
        let methods = match args.get(1) {
            None => vec!["GET".to_owned()],
            Some(init) => {
                let (im, object) = self.object(m, *init, env)?;
                match self.property(im, object, "method") {
                    Some(Property::Value(range)) => self.methods(im, range, env)?,
                    Some(Property::Shorthand(at)) => self.methods(im, (at, at + 1), env)?,
                    None if self.has_spread(im, object) => {
                        return Err(Failure::Unresolved(
                            "fetch()'s options spread another object; its method is unknown".into(),
                        ));
                    }
                    None => vec!["GET".to_owned()],
                }
            }
        };
        let paths = self.eval(m, *path, env, true)?;
        Ok(methods
            .iter()
            .flat_map(|method| paths.iter().map(move |p| (method.clone(), p.clone())))
            .collect())
    }

    fn websocket_call(
        &mut self,
        m: usize,
        args: &[(usize, usize)],
        env: &[Bound],
    ) -> Result<Vec<(String, Vec<Part>)>, Failure> {
        let Some(url) = args.first() else {
            return Err(Failure::Unresolved("new WebSocket() without a URL".into()));
        };
        Ok(self.eval(m, *url, env, true)?.into_iter().map(|p| ("GET".to_owned(), p)).collect())
    }

    fn methods(
        &mut self,
        m: usize,
        range: (usize, usize),
        env: &[Bound],
    ) -> Result<Vec<String>, Failure> {
        let values = self.eval(m, range, env, true)?;
        values
            .into_iter()
            .map(|parts| match parts.as_slice() {
                [Part::Lit(method)] => Ok(method.to_uppercase()),
                _ => Err(Failure::Unresolved(format!(
                    "{}:{}: the method is not a literal",
                    self.modules[m].name,
                    self.modules[m].line(range.0)
                ))),
            })
            .collect()
    }

    /// The object literal an expression is, following a name to its initialiser.
    fn object(
        &mut self,
        m: usize,
        range: (usize, usize),
        env: &[Bound],
    ) -> Result<(usize, usize), Failure> {
        let module = &self.modules[m];
        if module.is(range.0, "{") && module.close[range.0] + 1 == range.1 {
            return Ok((m, range.0));
        }
        if range.1 == range.0 + 1
            && let Some(name) = module.ident(range.0)
        {
            return match self.lookup(m, range.0, name) {
                Binding::Init { m, range } => self.object(m, range, env),
                Binding::Param { m: pm, f, k } => {
                    match env.iter().find(|b| b.m == pm && b.f == f) {
                        Some(bound) => match bound.args.get(k) {
                            Some(arg) => self.object(bound.call_module, *arg, env),
                            None => {
                                Err(Failure::Unresolved(format!("{}: no argument {k}", bound.at)))
                            }
                        },
                        None => Err(Failure::Unbound { m: pm, f }),
                    }
                }
                Binding::Runtime => {
                    Err(Failure::Unresolved(format!("`{name}` is not an object literal")))
                }
            };
        }
        Err(Failure::Unresolved(format!(
            "{}:{}: options that are not an object literal",
            module.name,
            module.line(range.0)
        )))
    }

    fn property(&self, m: usize, open: usize, key: &str) -> Option<Property> {
        let module = &self.modules[m];
        for (from, to) in module.split(open + 1, module.close[open], ",") {
            if module.ident(from) == Some(key) {
                if to == from + 1 {
                    return Some(Property::Shorthand(from));
                }
                if module.is(from + 1, ":") {
                    return Some(Property::Value((from + 2, to)));
                }
            }
        }
        None
    }

    fn has_spread(&self, m: usize, open: usize) -> bool {
        let module = &self.modules[m];
        module
            .split(open + 1, module.close[open], ",")
            .iter()
            .any(|(from, _)| module.is(*from, "..."))
    }

    /// What a name used at token `i` of module `m` stands for.
    fn lookup(&self, m: usize, i: usize, name: &str) -> Binding {
        let module = &self.modules[m];
        let scopes: Vec<usize> = (0..module.functions.len())
            .filter(|&f| (module.functions[f].body.0..module.functions[f].body.1).contains(&i))
            .collect();
        // Innermost first: functions are sorted by body length.
        for &f in &scopes {
            let function = &module.functions[f];
            if let Some(k) = function.params.iter().position(|p| p.as_deref() == Some(name)) {
                return Binding::Param { m, f, k };
            }
            if function.bound.iter().any(|b| b == name) {
                return Binding::Runtime;
            }
            if let Some(binding) = self.declaration(m, Some(f), name, i) {
                return binding;
            }
        }
        if let Some(binding) = self.declaration(m, None, name, i) {
            return binding;
        }
        // Imported: the exporting module's own declaration.
        if module.specifiers.iter().any(|&s| module.ident(s) == Some(name)) {
            for other in (0..self.modules.len()).filter(|&other| other != m) {
                if let Some(binding) = self.declaration(other, None, name, usize::MAX) {
                    return binding;
                }
            }
        }
        Binding::Runtime
    }

    /// `const|let|var name = init` directly in function `scope` (or at the top level), the
    /// last one before `before` or else the first. Only a `const` keeps its initialiser: a
    /// `let` or `var` may be given another value at run time.
    fn declaration(
        &self,
        m: usize,
        scope: Option<usize>,
        name: &str,
        before: usize,
    ) -> Option<Binding> {
        let module = &self.modules[m];
        let innermost =
            |i: usize| module.functions.iter().position(|f| (f.body.0..f.body.1).contains(&i));
        let found: Vec<usize> = (1..module.tokens.len().saturating_sub(1))
            .filter(|&d| {
                matches!(module.ident(d - 1), Some("const" | "let" | "var"))
                    && module.ident(d) == Some(name)
                    && module.is(d + 1, "=")
                    && innermost(d) == scope
            })
            .collect();
        let d = *found.iter().rev().find(|&&d| d < before).or(found.first())?;
        if module.ident(d - 1) != Some("const") {
            return Some(Binding::Runtime);
        }
        Some(Binding::Init { m, range: (d + 2, module.expression_end(d + 2)) })
    }

    /// Every call of function `f` of module `fm`, with its arguments; an error when the
    /// function is also passed around as a value, whose calls cannot be seen.
    fn callers(&self, fm: usize, f: usize) -> Result<Vec<Bound>, String> {
        let function = &self.modules[fm].functions[f];
        let Some(name) = &function.name else {
            return Err("needs the arguments of an anonymous function".to_owned());
        };
        let mut found = Vec::new();
        for (m, module) in self.modules.iter().enumerate() {
            if m != fm
                && !(function.exported
                    && module.specifiers.iter().any(|&s| module.ident(s) == Some(name)))
            {
                continue;
            }
            for i in 0..module.tokens.len() {
                if module.ident(i) != Some(name)
                    || module.is(i.wrapping_sub(1), ".")
                    || module.is_definition(i)
                    || module.specifiers.contains(&i)
                    || (module.is(i + 1, ":")
                        && matches!(
                            module.tokens.get(i.wrapping_sub(1)).map(|t| &t.tok),
                            Some(Tok::Punct("{" | ","))
                        ))
                {
                    continue;
                }
                let at = format!("{}:{}", module.name, module.line(i));
                if !module.is(i + 1, "(") {
                    return Err(format!(
                        "`{name}` is passed as a value at {at}: its calls cannot be followed"
                    ));
                }
                found.push(Bound { m: fm, f, call_module: m, args: module.args(i + 1), at });
            }
        }
        Ok(found)
    }

    /// The values an expression can take. `strict`: a form not understood is a failure;
    /// otherwise (inside a path) it is a runtime value.
    fn eval(
        &mut self,
        m: usize,
        range: (usize, usize),
        env: &[Bound],
        strict: bool,
    ) -> Result<Vec<Vec<Part>>, Failure> {
        let module = &self.modules[m];
        let (from, to) = range;
        let unknown = |what: &str| {
            if strict {
                Err(Failure::Unresolved(format!(
                    "{}:{}: cannot work out {what}",
                    module.name,
                    module.line(from)
                )))
            } else {
                Ok(vec![vec![Part::Param]])
            }
        };
        if from >= to {
            return unknown("an empty expression");
        }
        // `(expr)`
        if module.is(from, "(") && module.close[from] + 1 == to {
            return self.eval(m, (from + 1, to - 1), env, strict);
        }
        // `cond ? a : b`: either.
        let questions = module.split(from, to, "?");
        if questions.len() > 1 {
            let rest = (questions[1].0, to);
            let branches = module.split(rest.0, rest.1, ":");
            if branches.len() == 2 && questions.len() == 2 {
                let mut values = self.eval(m, branches[0], env, strict)?;
                values.extend(self.eval(m, branches[1], env, strict)?);
                return Ok(values);
            }
            return unknown("a nested conditional");
        }
        // `a || b`, `a ?? b`: either.
        for op in ["||", "??"] {
            let sides = module.split(from, to, op);
            if sides.len() > 1 {
                let mut values = Vec::new();
                for side in sides {
                    values.extend(self.eval(m, side, env, strict)?);
                }
                return Ok(values);
            }
        }
        if ["&&", "===", "!==", "==", "!=", "<", ">", "<=", ">="]
            .iter()
            .any(|op| module.split(from, to, op).len() > 1)
        {
            return unknown("a comparison");
        }
        // `a + b`: joined.
        let terms = module.split(from, to, "+");
        if terms.len() > 1 {
            let mut values = vec![Vec::new()];
            for term in terms {
                let term_values = self.eval(m, term, env, false)?;
                values = join(&values, &term_values);
            }
            return Ok(values);
        }
        match &module.tokens[from].tok {
            Tok::Str(text) if to == from + 1 => {
                self.used.insert((m, from));
                Ok(vec![vec![Part::Lit(text.clone())]])
            }
            Tok::TplStart if module.close[from] + 1 == to => {
                let mut values = vec![Vec::new()];
                let mut i = from + 1;
                while i < to - 1 {
                    match &module.tokens[i].tok {
                        Tok::TplText(text) => {
                            self.used.insert((m, i));
                            values = join(&values, &[vec![Part::Lit(text.clone())]]);
                            i += 1;
                        }
                        Tok::TplExprOpen => {
                            let inner = self.eval(m, (i + 1, module.close[i]), env, false)?;
                            values = join(&values, &inner);
                            i = module.close[i] + 1;
                        }
                        _ => return unknown("a template"),
                    }
                }
                Ok(values)
            }
            Tok::Ident(word)
                if word == "query"
                    && module.is(from + 1, "(")
                    && module.close[from + 1] + 1 == to =>
            {
                Ok(vec![vec![Part::Query]])
            }
            Tok::Ident(word) if to == from + 1 => match self.lookup(m, from, word) {
                Binding::Param { m: pm, f, k } => {
                    match env.iter().find(|b| b.m == pm && b.f == f) {
                        Some(bound) => match bound.args.get(k).copied() {
                            Some(arg) => self.eval(bound.call_module, arg, env, strict),
                            None => unknown(&format!(
                                "`{word}`: {} passes no argument for it",
                                bound.at
                            )),
                        },
                        None => Err(Failure::Unbound { m: pm, f }),
                    }
                }
                Binding::Init { m: dm, range } => self.eval(dm, range, env, strict),
                Binding::Runtime => unknown(&format!("`{word}`, a value known only at run time")),
            },
            _ => unknown("this expression"),
        }
    }
}

enum Property {
    Value((usize, usize)),
    Shorthand(usize),
}

fn join(left: &[Vec<Part>], right: &[Vec<Part>]) -> Vec<Vec<Part>> {
    let mut joined = Vec::new();
    for l in left {
        for r in right {
            let mut value = l.clone();
            value.extend(r.iter().cloned());
            joined.push(value);
        }
    }
    joined
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_one(source: &str) -> Scan {
        scan(&[("page.js".to_owned(), source.to_owned())])
    }

    fn texts(scan: &Scan) -> BTreeSet<String> {
        scan.calls.iter().map(|c| format!("{} {}", c.method, c.path_text())).collect()
    }

    fn set(texts: &[&str]) -> BTreeSet<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn literal_template_and_query_paths_are_worked_out() {
        let found = scan_one(
            "const a = await api('GET', '/api/missions' + query({ limit: 5 }));\n\
             await api('POST', `/api/missions/${encodeURIComponent(id)}/cancel`, {});\n\
             const r = /x\\/y/.test(s) ? 1 / 2 : 3; // '/api/not/a/call'\n\
             const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';\n\
             new WebSocket(`${scheme}//${location.host}/ws/events${query({ from: 1 })}`);\n",
        );
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        let expected = ["GET /api/missions", "GET /ws/events", "POST /api/missions/{…}/cancel"];
        assert_eq!(texts(&found), set(&expected));
    }

    #[test]
    fn a_parameter_is_followed_to_every_caller_with_method_and_path_together() {
        let found = scan_one(
            "function change(method, path) { return api(method, path, {}); }\n\
             change('PUT', '/api/llm/config');\n\
             change('POST', '/api/llm/config/reset');\n",
        );
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(texts(&found), set(&["POST /api/llm/config/reset", "PUT /api/llm/config"]));
    }

    #[test]
    fn the_fetch_inside_the_helper_is_followed_to_the_helpers_callers_in_other_modules() {
        let lib = "export async function api(method, path) {\n\
                   const init = { method, headers: {} };\n\
                   return fetch(path, init);\n\
                   }\n";
        let page = "import { api } from './lib.js';\n\
                    function act(path) { return api('POST', `/api/missions/${id}/${path}`); }\n\
                    act('cancel');\n\
                    act('retry');\n";
        let found =
            scan(&[("lib.js".to_owned(), lib.to_owned()), ("page.js".to_owned(), page.to_owned())]);
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        let expected = ["POST /api/missions/{…}/cancel", "POST /api/missions/{…}/retry"];
        assert_eq!(texts(&found), set(&expected));
        let through_fetch: Vec<&Vec<String>> =
            found.calls.iter().map(|c| &c.at).filter(|at| at[0] == "lib.js:3").collect();
        assert_eq!(
            through_fetch,
            [&["lib.js:3", "page.js:2", "page.js:3"], &["lib.js:3", "page.js:2", "page.js:4"]]
        );
    }

    #[test]
    fn what_cannot_be_worked_out_is_a_problem_not_a_skip() {
        let found = scan_one(
            "function go(path) { return api('GET', path); }\n\
             const f = go; f('/api/x');\n\
             api(verb(), '/api/y');\n\
             const link = '/api/nowhere';\n\
             new XMLHttpRequest();\n\
             let target = '/api/z'; api('GET', target);\n",
        );
        let problems = found.problems.join("\n");
        assert!(problems.contains("`go` is passed as a value"), "{problems}");
        assert!(problems.contains("page.js:3: cannot work out"), "{problems}");
        assert!(problems.contains("\"/api/nowhere\""), "{problems}");
        assert!(problems.contains("XMLHttpRequest"), "{problems}");
        assert!(problems.contains("`target`, a value known only at run time"), "{problems}");
    }
}
