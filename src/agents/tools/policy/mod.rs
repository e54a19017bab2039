//! Argument policies: what each program `run_command` runs may be told. A model that can pick
//! a program's arguments can often make it run another program (`git -c alias.x=!sh`,
//! `git grep -O<cmd>`, `rg --pre <cmd>`), so arguments are *parsed* the way the program parses
//! them, never matched against patterns: each policy declares the options the program may be
//! given (and which of them take a value, glued or as the next argument), and anything else
//! is refused. Short options clustered (`-inO`) are read letter by letter, a value glued to
//! its option (`-Ocat`, `--max-count=3`) is read as a value, and `--` ends the options.
//!
//! A long option must be spelled out: programs that accept an unambiguous prefix (git, GNU
//! tools) would otherwise read `--open` as `--open-files-in-pager`. A value given as the next
//! argument may not start with `-` (glue it instead), so that a program reading an option
//! where the policy saw a value cannot happen. A program without a policy takes positional
//! arguments only: no option at all, not even `--`.
//!
//! What the parse hands back (positional arguments and option values) is what the path rules
//! of `run_command` then look at; see [`programs`] for the policies and why each is so.

mod programs;

use std::collections::BTreeMap;
use std::sync::LazyLock;

pub use programs::environment;

/// What an option does with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// A flag: `-l`, `--all`.
    Nothing,
    /// A value, glued (`-n3`, `--max-count=3`) or as the next argument (`-n 3`).
    Value,
    /// An optional value, glued only (`-U5`, `--color=always`): the next argument is never it.
    Glued,
    /// A value after which the options end: what follows belongs to it (`python3 -m pytest -k x`).
    ValueThenEnd,
}

/// A declared option: its spellings, what it takes, and why it is refused, if it is.
#[derive(Debug, Clone)]
struct Opt {
    short: Vec<char>,
    long: Vec<&'static str>,
    takes: Takes,
    refused: Option<&'static str>,
}

/// The options of a program, or of one of its subcommands.
///
/// `allowed` and `refused` are written as a program's manual writes them, one option a word:
/// `-l`, `--all`, `-a|--all` (spellings of one option), each followed by `=` if it takes a
/// value, `?` if it takes an optional value that must be glued, `+` if it takes a value
/// after which the options end. A refused option is declared too, so that the refusal says
/// why, and so that a cluster holding it is refused whatever else it holds.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub allowed: &'static [&'static str],
    pub refused: &'static [(&'static str, &'static str)],
    /// `-<digits>` is an option (`git log -3`, `grep -2`).
    pub numeric: bool,
    /// Positional arguments may be given.
    pub positionals: bool,
    /// The options end at the first positional argument: the rest belong to it (a script).
    pub stop_at_positional: bool,
    /// Options whose value must be one of a list, by any of their spellings.
    pub values: &'static [(&'static str, &'static [&'static str])],
}

impl Options {
    /// Positional arguments only.
    pub const NONE: Options = Options {
        allowed: &[],
        refused: &[],
        numeric: false,
        positionals: true,
        stop_at_positional: false,
        values: &[],
    };
}

/// The arguments one program may be given.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub program: &'static str,
    /// Its own options: before its subcommand, when it has subcommands.
    pub top: Options,
    /// The subcommands allowed, each with its options; none: it has no subcommands.
    pub subcommands: &'static [(&'static str, Options)],
}

/// [`Options`] read into a table.
#[derive(Debug)]
struct Table {
    options: Vec<Opt>,
    numeric: bool,
    positionals: bool,
    stop_at_positional: bool,
    values: &'static [(&'static str, &'static [&'static str])],
}

struct Compiled {
    top: Table,
    subcommands: BTreeMap<&'static str, Table>,
}

/// The policies, read once. A malformed declaration is a bug in [`programs`], which the tests
/// of this module read through.
static POLICIES: LazyLock<BTreeMap<&'static str, Compiled>> = LazyLock::new(|| {
    programs::POLICIES
        .iter()
        .map(|policy| {
            let subcommands =
                policy.subcommands.iter().map(|(name, options)| (*name, table(options))).collect();
            (policy.program, Compiled { top: table(&policy.top), subcommands })
        })
        .collect()
});

static POSITIONAL_ONLY: LazyLock<Table> = LazyLock::new(|| table(&Options::NONE));

/// The programs that have a policy of their own.
pub fn programs() -> Vec<&'static str> {
    POLICIES.keys().copied().collect()
}

/// What of `args` the path rules must look at (positional arguments and option values), or
/// why `program` may not be given `args`.
pub fn check<'a>(program: &str, args: &'a [String]) -> Result<Vec<&'a str>, String> {
    let Some(policy) = POLICIES.get(program) else {
        return parse(program, &POSITIONAL_ONLY, None, args, true);
    };
    if policy.subcommands.is_empty() {
        return parse(program, &policy.top, None, args, false);
    }
    parse(program, &policy.top, Some(&policy.subcommands), args, false)
}

/// Reads `args` against `table` (and, once a subcommand is named, against its own).
fn parse<'a>(
    program: &str,
    top: &Table,
    subcommands: Option<&BTreeMap<&'static str, Table>>,
    args: &'a [String],
    positional_only: bool,
) -> Result<Vec<&'a str>, String> {
    let mut words = Vec::new();
    let mut table = top;
    let mut needs_subcommand = subcommands.is_some();
    let mut options_ended = false;
    let mut at = 0;
    while at < args.len() {
        let arg = args[at].as_str();
        at += 1;
        if options_ended || !arg.starts_with('-') || arg == "-" {
            if needs_subcommand {
                let Some(sub) = subcommands.and_then(|subs| subs.get(arg)) else {
                    let known = subcommands.map(|subs| subs.keys().copied().collect::<Vec<_>>());
                    let known = known.unwrap_or_default().join(", ");
                    return Err(format!("{program} {arg:?} is not allowed; only {known}"));
                };
                (table, needs_subcommand) = (sub, false);
                continue;
            }
            if !table.positionals {
                return Err(format!("{program}: argument {arg:?} is not allowed here"));
            }
            options_ended |= table.stop_at_positional;
            words.push(arg);
            continue;
        }
        if positional_only {
            return Err(format!(
                "{program} takes no option ({arg:?}): it has no argument policy, so only plain arguments"
            ));
        }
        if arg == "--" {
            if needs_subcommand {
                return Err(format!("{program}: a subcommand comes before {arg:?}"));
            }
            options_ended = true;
            continue;
        }
        let next = args.get(at).map(String::as_str);
        let (value, used_next) = if let Some(long) = arg.strip_prefix("--") {
            long_option(program, table, long, next)?
        } else {
            short_options(program, table, &arg[1..], next)?
        };
        if let Some((option, value)) = value {
            allowed_value(program, table, option, value)?;
            words.push(value);
        }
        if used_next {
            at += 1;
        }
        options_ended |= ends_options(table, arg);
    }
    if needs_subcommand {
        let known = subcommands.map(|subs| subs.keys().copied().collect::<Vec<_>>());
        return Err(format!("{program} needs one of {}", known.unwrap_or_default().join(", ")));
    }
    Ok(words)
}

impl Table {
    /// The option `shown` names (as the caller spelt it), if it is declared and not refused.
    fn allowed(
        &self,
        program: &str,
        shown: &str,
        names: impl Fn(&Opt) -> bool,
    ) -> Result<&Opt, String> {
        match self.options.iter().find(|opt| names(opt)) {
            None => Err(format!("{program}: option {shown} is not allowed")),
            Some(Opt { refused: Some(why), .. }) => {
                Err(format!("{program}: option {shown} is not allowed: {why}"))
            }
            Some(opt) => Ok(opt),
        }
    }
}

/// An option's value: the option as it was named, and the value.
type Valued<'a> = Option<(&'a str, &'a str)>;

/// `--name` or `--name=value`: the value it took (and whether it was the next argument).
fn long_option<'a>(
    program: &str,
    table: &Table,
    long: &'a str,
    next: Option<&'a str>,
) -> Result<(Valued<'a>, bool), String> {
    let (name, glued) = match long.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (long, None),
    };
    let opt = table.allowed(program, &format!("--{name}"), |opt| opt.long.contains(&name))?;
    match (opt.takes, glued) {
        (Takes::Nothing, Some(_)) => Err(format!("{program}: option --{name} takes no value")),
        (Takes::Nothing, None) | (Takes::Glued, None) => Ok((None, false)),
        (_, Some(value)) => Ok((Some((name, value)), false)),
        (Takes::Value | Takes::ValueThenEnd, None) => {
            Ok((Some((name, separate_value(program, &format!("--{name}"), next)?)), true))
        }
    }
}

/// A cluster of short options (`-inO`, `-n3`, `-e pattern`): each letter an option until one
/// takes a value, which is the rest of the cluster or else the next argument.
fn short_options<'a>(
    program: &str,
    table: &Table,
    cluster: &'a str,
    next: Option<&'a str>,
) -> Result<(Valued<'a>, bool), String> {
    if table.numeric && cluster.chars().all(|c| c.is_ascii_digit()) {
        return Ok((None, false));
    }
    for (at, letter) in cluster.char_indices() {
        let opt =
            table.allowed(program, &format!("-{letter}"), |opt| opt.short.contains(&letter))?;
        let rest = &cluster[at + letter.len_utf8()..];
        let name = &cluster[at..at + letter.len_utf8()];
        match opt.takes {
            Takes::Nothing => continue,
            Takes::Glued if rest.is_empty() => return Ok((None, false)),
            _ if !rest.is_empty() => return Ok((Some((name, rest)), false)),
            _ => {
                let value = separate_value(program, &format!("-{letter}"), next)?;
                return Ok((Some((name, value)), true));
            }
        }
    }
    Ok((None, false))
}

/// The next argument as an option's value: there must be one, and it may not look like an
/// option (a program could read it as one where the policy saw a value).
fn separate_value<'a>(
    program: &str,
    option: &str,
    next: Option<&'a str>,
) -> Result<&'a str, String> {
    match next {
        None => Err(format!("{program}: option {option} needs a value")),
        Some(value) if value.starts_with('-') => Err(format!(
            "{program}: the value of {option} may not start with '-' ({value:?}); glue it to the option"
        )),
        Some(value) => Ok(value),
    }
}

/// Whether `arg` (an option the table allowed, with its value) ends the options:
/// `python3 -m module ...`.
fn ends_options(table: &Table, arg: &str) -> bool {
    let ends = |opt: &Opt| opt.takes == Takes::ValueThenEnd;
    if let Some(long) = arg.strip_prefix("--") {
        let name = long.split_once('=').map_or(long, |(name, _)| name);
        return table.options.iter().find(|opt| opt.long.contains(&name)).is_some_and(ends);
    }
    // In a cluster, the first letter that takes a value ends the cluster: it decides.
    let cluster = arg.strip_prefix('-').unwrap_or(arg);
    cluster
        .chars()
        .find_map(|letter| {
            let opt = table.options.iter().find(|opt| opt.short.contains(&letter))?;
            (opt.takes != Takes::Nothing).then(|| ends(opt))
        })
        .unwrap_or(false)
}

/// Refuses a value off the list some options are held to (`python3 -m` names a module).
fn allowed_value(program: &str, table: &Table, option: &str, value: &str) -> Result<(), String> {
    let option_spellings =
        |spec: &str| spec.split('|').any(|name| name.trim_start_matches('-') == option);
    for (spec, allowed) in table.values {
        if option_spellings(spec) && !allowed.contains(&value) {
            return Err(format!(
                "{program}: {value:?} is not allowed after {spec}; only {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

fn table(options: &Options) -> Table {
    let mut table = Vec::new();
    for spec in options.allowed.iter().flat_map(|group| group.split_whitespace()) {
        table.push(option(spec, None));
    }
    for (specs, why) in options.refused {
        for spec in specs.split_whitespace() {
            table.push(option(spec, Some(*why)));
        }
    }
    Table {
        options: table,
        numeric: options.numeric,
        positionals: options.positionals,
        stop_at_positional: options.stop_at_positional,
        values: options.values,
    }
}

/// One declared option, `-a|--all` with its `=`, `?` or `+`.
fn option(spec: &'static str, refused: Option<&'static str>) -> Opt {
    let (names, takes) = match spec.as_bytes().last() {
        Some(b'=') => (&spec[..spec.len() - 1], Takes::Value),
        Some(b'?') => (&spec[..spec.len() - 1], Takes::Glued),
        Some(b'+') => (&spec[..spec.len() - 1], Takes::ValueThenEnd),
        _ => (spec, Takes::Nothing),
    };
    let mut opt = Opt { short: Vec::new(), long: Vec::new(), takes, refused };
    for name in names.split('|') {
        if let Some(long) = name.strip_prefix("--").filter(|long| long.len() > 1) {
            opt.long.push(long);
        } else if let Some(short) =
            name.strip_prefix('-').filter(|short| short.chars().count() == 1)
        {
            opt.short.extend(short.chars());
        } else {
            panic!("malformed option {name:?} in the policy {spec:?}");
        }
    }
    opt
}

#[cfg(test)]
mod tests;
