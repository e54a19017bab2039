//! One module of the console, parsed as far as the scan needs: its tokens, which bracket
//! closes which, its `import`/`export` lists, and its functions (declared, methods, arrows)
//! with their parameters and bodies, so that a name can be traced to what binds it.

use std::collections::BTreeSet;

use super::lex::{Tok, Token, is_word_in, lex};

/// Words that a `(` can follow without making a call or a method.
const KEYWORDS: &str = "if for while switch catch function with return typeof new delete void \
                        throw await yield else do in of instanceof case";

/// A function of a module: declared, a method, or an arrow.
#[derive(Debug)]
pub(super) struct Function {
    /// The name it is called by (`function f`, a method `f() {`, `const f = () =>`).
    pub(super) name: Option<String>,
    /// Where its name is written, which is no call of it.
    pub(super) name_at: Option<usize>,
    /// Its parameters by position; a destructuring pattern has no name.
    pub(super) params: Vec<Option<String>>,
    /// Names bound by its destructuring patterns: values known only at run time.
    pub(super) bound: Vec<String>,
    /// Its body, as token indices `[start, end)`.
    pub(super) body: (usize, usize),
    pub(super) exported: bool,
}

pub(super) struct Module {
    pub(super) name: String,
    pub(super) tokens: Vec<Token>,
    /// For each opening bracket, the index of the one closing it.
    pub(super) close: Vec<usize>,
    pub(super) functions: Vec<Function>,
    /// Tokens inside `import { ... }` and `export { ... }` lists.
    pub(super) specifiers: BTreeSet<usize>,
}

impl Module {
    pub(super) fn parse(name: &str, source: &str) -> Result<Module, String> {
        let tokens = lex(source).map_err(|error| format!("{name}: {error}"))?;
        let mut close = vec![usize::MAX; tokens.len()];
        let mut open: Vec<usize> = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let pairs = |o: &Tok| {
                matches!(
                    (o, &token.tok),
                    (Tok::Punct("("), Tok::Punct(")"))
                        | (Tok::Punct("["), Tok::Punct("]"))
                        | (Tok::Punct("{"), Tok::Punct("}"))
                        | (Tok::TplStart, Tok::TplEnd)
                        | (Tok::TplExprOpen, Tok::TplExprClose)
                )
            };
            match &token.tok {
                Tok::Punct("(" | "[" | "{") | Tok::TplStart | Tok::TplExprOpen => open.push(i),
                Tok::Punct(")" | "]" | "}") | Tok::TplEnd | Tok::TplExprClose => {
                    let Some(o) = open.pop().filter(|o| pairs(&tokens[*o].tok)) else {
                        return Err(format!("{name}: line {}: unbalanced brackets", token.line));
                    };
                    close[o] = i;
                }
                _ => {}
            }
        }
        if let Some(o) = open.pop() {
            return Err(format!("{name}: line {}: unclosed bracket", tokens[o].line));
        }
        let mut module = Module {
            name: name.to_owned(),
            tokens,
            close,
            functions: Vec::new(),
            specifiers: BTreeSet::new(),
        };
        module.find_functions();
        Ok(module)
    }

    pub(super) fn ident(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(word)) => Some(word),
            _ => None,
        }
    }

    pub(super) fn is(&self, i: usize, punct: &str) -> bool {
        matches!(self.tokens.get(i).map(|t| &t.tok), Some(Tok::Punct(p)) if *p == punct)
    }

    pub(super) fn line(&self, i: usize) -> usize {
        self.tokens.get(i).map_or(0, |t| t.line)
    }

    fn find_functions(&mut self) {
        let n = self.tokens.len();
        for i in 0..n {
            if matches!(self.ident(i), Some("import" | "export")) && self.is(i + 1, "{") {
                self.specifiers.extend(i + 2..self.close[i + 1]);
            }
            // `[export] [async] function [name] (params) { body }`
            if self.ident(i) == Some("function") {
                let mut p = i + 1;
                if self.is(p, "*") {
                    p += 1;
                }
                let start = if self.ident(i.wrapping_sub(1)) == Some("async") { i - 1 } else { i };
                let (name, name_at) = match self.ident(p) {
                    Some(word) => {
                        let named = (Some(word.to_owned()), Some(p));
                        p += 1;
                        named
                    }
                    None => self.assigned_name(start),
                };
                if !self.is(p, "(") || !self.is(self.close[p] + 1, "{") {
                    continue;
                }
                let exported = self.ident(start.wrapping_sub(1)) == Some("export");
                let body = (self.close[p] + 1, self.close[self.close[p] + 1] + 1);
                self.push_function(name, name_at, (p, self.close[p]), body, exported);
            }
            // A method: `name(params) {` (no call is followed by a block).
            if let Some(word) = self.ident(i)
                && !is_word_in(KEYWORDS, word)
                && self.is(i + 1, "(")
                && self.is(self.close[i + 1] + 1, "{")
                && !self.is(i.wrapping_sub(1), ".")
                && self.ident(i.wrapping_sub(1)) != Some("function")
            {
                let open = self.close[i + 1] + 1;
                let body = (open, self.close[open] + 1);
                self.push_function(
                    Some(word.to_owned()),
                    Some(i),
                    (i + 1, self.close[i + 1]),
                    body,
                    false,
                );
            }
            // `(params) => body`, `param => body`, either maybe `async`.
            if self.is(i, "=>") {
                let (params, start) = if self.is(i - 1, ")") {
                    let open = (0..i - 1).rev().find(|&o| self.close[o] == i - 1).unwrap_or(i - 1);
                    ((open, i - 1), open)
                } else {
                    ((i - 1, i - 1), i - 1)
                };
                let start = if self.ident(start.wrapping_sub(1)) == Some("async") {
                    start - 1
                } else {
                    start
                };
                let (name, name_at) = self.assigned_name(start);
                let body = if self.is(i + 1, "{") {
                    (i + 1, self.close[i + 1] + 1)
                } else {
                    (i + 1, self.expression_end(i + 1))
                };
                self.push_function(name, name_at, params, body, false);
            }
        }
        // Innermost first when looking a name up.
        self.functions.sort_by_key(|f| f.body.1 - f.body.0);
    }

    /// `const name = <start>`: the name a function expression is given, and where.
    fn assigned_name(&self, start: usize) -> (Option<String>, Option<usize>) {
        if self.is(start.wrapping_sub(1), "=")
            && matches!(self.ident(start.wrapping_sub(3)), Some("const" | "let" | "var"))
        {
            (self.ident(start - 2).map(str::to_owned), Some(start - 2))
        } else {
            (None, None)
        }
    }

    /// `params` is `(open, close)` of a parenthesised list, or `(i, i)` of a lone name.
    fn push_function(
        &mut self,
        name: Option<String>,
        name_at: Option<usize>,
        params: (usize, usize),
        body: (usize, usize),
        exported: bool,
    ) {
        let (mut positional, mut bound) = (Vec::new(), Vec::new());
        if params.0 == params.1 {
            positional.push(self.ident(params.0).map(str::to_owned));
        } else {
            for (from, to) in self.split(params.0 + 1, params.1, ",") {
                match self.ident(from) {
                    Some(word) if to == from + 1 || self.is(from + 1, "=") => {
                        positional.push(Some(word.to_owned()));
                    }
                    _ => {
                        positional.push(None);
                        bound.extend((from..to).filter_map(|k| self.ident(k)).map(str::to_owned));
                    }
                }
            }
        }
        self.functions.push(Function { name, name_at, params: positional, bound, body, exported });
    }

    /// Where an expression starting at `start` ends: at a `,`, `;` or closing bracket
    /// outside any bracket of its own.
    pub(super) fn expression_end(&self, start: usize) -> usize {
        let mut i = start;
        while i < self.tokens.len() {
            match &self.tokens[i].tok {
                Tok::Punct("(" | "[" | "{") | Tok::TplStart | Tok::TplExprOpen => i = self.close[i],
                Tok::Punct(")" | "]" | "}" | "," | ";") | Tok::TplEnd | Tok::TplExprClose => {
                    return i;
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    /// The parts of `[from, to)` between top-level `sep` tokens, each as `[start, end)`.
    pub(super) fn split(&self, from: usize, to: usize, sep: &str) -> Vec<(usize, usize)> {
        let mut parts = Vec::new();
        let (mut start, mut i) = (from, from);
        while i < to {
            if matches!(
                self.tokens[i].tok,
                Tok::Punct("(" | "[" | "{") | Tok::TplStart | Tok::TplExprOpen
            ) {
                i = self.close[i] + 1;
                continue;
            }
            if self.is(i, sep) {
                parts.push((start, i));
                start = i + 1;
            }
            i += 1;
        }
        if start < to {
            parts.push((start, to));
        }
        parts
    }

    /// The arguments of the call whose `(` is at `open`.
    pub(super) fn args(&self, open: usize) -> Vec<(usize, usize)> {
        self.split(open + 1, self.close[open], ",")
    }

    pub(super) fn is_definition(&self, i: usize) -> bool {
        self.functions.iter().any(|f| f.name_at == Some(i))
    }
}
