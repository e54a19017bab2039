//! What a name or an expression in a console module stands for: a parameter followed to the
//! callers of its function, a `const` followed to its initialiser, or a value known only at
//! run time.

use super::lex::Tok;
use super::source::Module;
use super::{Binding, Bound, Failure, Part, Scanner};

impl Scanner<'_> {
    /// What a name used at token `i` of module `m` stands for.
    pub(super) fn lookup(&self, m: usize, i: usize, name: &str) -> Binding {
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
    pub(super) fn callers(&self, fm: usize, f: usize) -> Result<Vec<Bound>, String> {
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
    pub(super) fn eval(
        &mut self,
        m: usize,
        range: (usize, usize),
        env: &[Bound],
        strict: bool,
    ) -> Result<Vec<Vec<Part>>, Failure> {
        let module = &self.modules[m];
        let (from, to) = range;
        let unknown = |what: &str| unknown(module, from, strict, what);
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
        self.operand(m, range, env, strict)
    }

    /// The values of an expression without operators: a string, a template, `query(...)`
    /// or a name.
    fn operand(
        &mut self,
        m: usize,
        range: (usize, usize),
        env: &[Bound],
        strict: bool,
    ) -> Result<Vec<Vec<Part>>, Failure> {
        let module = &self.modules[m];
        let (from, to) = range;
        let unknown = |what: &str| unknown(module, from, strict, what);
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

/// `what` is not understood: a failure when `strict`, otherwise a runtime value.
fn unknown(
    module: &Module,
    from: usize,
    strict: bool,
    what: &str,
) -> Result<Vec<Vec<Part>>, Failure> {
    if strict {
        let (name, line) = (&module.name, module.line(from));
        Err(Failure::Unresolved(format!("{name}:{line}: cannot work out {what}")))
    } else {
        Ok(vec![vec![Part::Param]])
    }
}
