//! JavaScript as tokens: enough of the language (strings, template literals with their
//! `${}` parts, comments, regular expressions, operators) to find calls and follow their
//! arguments, never to run anything. A template's parts are tokens of their own, so that a
//! call inside `${}` is found like any other.

#[derive(Debug)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num,
    Regex,
    Punct(&'static str),
    TplStart,
    TplText(String),
    TplExprOpen,
    TplExprClose,
    TplEnd,
}

#[derive(Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
}

/// Longest operators first, so that `===` is not read as `==` and `=`.
const PUNCT: &[&str] = &[
    ">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??=", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "??", "?.", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
    "**", "<<", ">>", "{", "}", "(", ")", "[", "]", ";", ",", "<", ">", "+", "-", "*", "/", "%",
    "&", "|", "^", "!", "~", "?", ":", "=", ".", "@", "#",
];

/// Words after which a `/` starts a regular expression rather than a division.
const BEFORE_REGEX: &str =
    "return typeof case do else in of new delete void throw instanceof yield await";

pub(super) fn is_word_in(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

enum Mode {
    /// Code; `braces` open since this code began (inside `${`: its `}` closes it at zero).
    Code {
        braces: usize,
    },
    Template,
}

pub(super) fn lex(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut modes = vec![Mode::Code { braces: 0 }];
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        if let Some(Mode::Template) = modes.last() {
            let mut text = String::new();
            loop {
                match at(i) {
                    '\0' if i >= chars.len() => return Err(format!("line {line}: unclosed `")),
                    '\\' => {
                        text.push(at(i + 1));
                        i += 2;
                    }
                    '`' => {
                        i += 1;
                        modes.pop();
                        if !text.is_empty() {
                            tokens.push(Token { tok: Tok::TplText(text), line });
                        }
                        tokens.push(Token { tok: Tok::TplEnd, line });
                        break;
                    }
                    '$' if at(i + 1) == '{' => {
                        i += 2;
                        if !text.is_empty() {
                            tokens.push(Token { tok: Tok::TplText(text), line });
                        }
                        tokens.push(Token { tok: Tok::TplExprOpen, line });
                        modes.push(Mode::Code { braces: 0 });
                        break;
                    }
                    c => {
                        if c == '\n' {
                            line += 1;
                        }
                        text.push(c);
                        i += 1;
                    }
                }
            }
            continue;
        }
        let c = at(i);
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && at(i) != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i += 2;
            while i < chars.len() && !(at(i) == '*' && at(i + 1) == '/') {
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            while at(i) != c {
                match at(i) {
                    '\n' | '\0' => return Err(format!("line {line}: unclosed string")),
                    '\\' => {
                        text.push(match at(i + 1) {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    other => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token { tok: Tok::Str(text), line });
        } else if c == '`' {
            i += 1;
            tokens.push(Token { tok: Tok::TplStart, line });
            modes.push(Mode::Template);
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while at(i).is_ascii_alphanumeric() || at(i) == '_' || at(i) == '$' {
                i += 1;
            }
            tokens.push(Token { tok: Tok::Ident(chars[start..i].iter().collect()), line });
        } else if c.is_ascii_digit() || (c == '.' && at(i + 1).is_ascii_digit()) {
            while at(i).is_ascii_alphanumeric() || at(i) == '.' || at(i) == '_' {
                let exponent = matches!(at(i), 'e' | 'E') && matches!(at(i + 1), '+' | '-');
                i += if exponent { 2 } else { 1 };
            }
            tokens.push(Token { tok: Tok::Num, line });
        } else if c == '/' && regex_may_start(tokens.last()) {
            let mut class = false;
            i += 1;
            loop {
                match at(i) {
                    '\n' | '\0' => return Err(format!("line {line}: unclosed regular expression")),
                    '\\' => i += 1,
                    '[' => class = true,
                    ']' => class = false,
                    '/' if !class => break,
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            while at(i).is_ascii_alphabetic() {
                i += 1;
            }
            tokens.push(Token { tok: Tok::Regex, line });
        } else {
            let rest: String = chars[i..(i + 4).min(chars.len())].iter().collect();
            let Some(punct) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
                return Err(format!("line {line}: unexpected {c:?}"));
            };
            i += punct.len();
            let nested = modes.len() > 1;
            match (*punct, modes.last_mut()) {
                ("{", Some(Mode::Code { braces })) => *braces += 1,
                ("}", Some(Mode::Code { braces: 0 })) if nested => {
                    modes.pop();
                    tokens.push(Token { tok: Tok::TplExprClose, line });
                    continue;
                }
                ("}", Some(Mode::Code { braces })) => *braces = braces.saturating_sub(1),
                _ => {}
            }
            tokens.push(Token { tok: Tok::Punct(punct), line });
        }
    }
    if modes.len() != 1 {
        return Err("the source ends inside a template literal".to_owned());
    }
    Ok(tokens)
}

fn regex_may_start(previous: Option<&Token>) -> bool {
    match previous.map(|t| &t.tok) {
        None => true,
        Some(Tok::Punct(p)) => !matches!(*p, ")" | "]" | "}"),
        Some(Tok::Ident(word)) => is_word_in(BEFORE_REGEX, word),
        Some(Tok::TplExprOpen | Tok::TplStart) => true,
        Some(_) => false,
    }
}
