//! The three ways a console module reaches the network, each worked out to the methods and
//! paths it can send: `api(method, path)`, `fetch(path, init)` and `new WebSocket(url)`.

use super::{Binding, Bound, Failure, Part, Scanner};

impl Scanner<'_> {
    /// `api(method, path, body, options)`.
    pub(super) fn api_call(
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
        Ok(every_pair(&methods, &paths))
    }

    /// `fetch(path, init)`: the method is `init.method`, GET without one.
    pub(super) fn fetch_call(
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
        Ok(every_pair(&methods, &paths))
    }

    pub(super) fn websocket_call(
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
}

/// Each method with each path: the calls a site can make.
fn every_pair(methods: &[String], paths: &[Vec<Part>]) -> Vec<(String, Vec<Part>)> {
    methods
        .iter()
        .flat_map(|method| paths.iter().map(move |p| (method.clone(), p.clone())))
        .collect()
}

enum Property {
    Value((usize, usize)),
    Shorthand(usize),
}
