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
    let mut lexer =
        Lexer { chars, i: 0, line: 1, tokens: Vec::new(), modes: vec![Mode::Code { braces: 0 }] };
    while lexer.i < lexer.chars.len() {
        if let Some(Mode::Template) = lexer.modes.last() {
            lexer.template_text()?;
            continue;
        }
        lexer.code()?;
    }
    if lexer.modes.len() != 1 {
        return Err("the source ends inside a template literal".to_owned());
    }
    Ok(lexer.tokens)
}

/// Where the lexer is in a source, and what it has read so far.
struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    tokens: Vec<Token>,
    /// Code inside templates inside code...: the innermost last.
    modes: Vec<Mode>,
}

impl Lexer {
    /// The character at `i`, or `'\0'` past the end.
    fn at(&self, i: usize) -> char {
        self.chars.get(i).copied().unwrap_or('\0')
    }

    fn push(&mut self, tok: Tok) {
        self.tokens.push(Token { tok, line: self.line });
    }

    /// A template's text up to its end or its next `${`.
    fn template_text(&mut self) -> Result<(), String> {
        let mut text = String::new();
        loop {
            match self.at(self.i) {
                '\0' if self.i >= self.chars.len() => {
                    return Err(format!("line {}: unclosed `", self.line));
                }
                '\\' => {
                    text.push(self.at(self.i + 1));
                    self.i += 2;
                }
                '`' => {
                    self.i += 1;
                    self.modes.pop();
                    if !text.is_empty() {
                        self.push(Tok::TplText(text));
                    }
                    self.push(Tok::TplEnd);
                    return Ok(());
                }
                '$' if self.at(self.i + 1) == '{' => {
                    self.i += 2;
                    if !text.is_empty() {
                        self.push(Tok::TplText(text));
                    }
                    self.push(Tok::TplExprOpen);
                    self.modes.push(Mode::Code { braces: 0 });
                    return Ok(());
                }
                c => {
                    if c == '\n' {
                        self.line += 1;
                    }
                    text.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// One token of code, or the space or comment before it.
    fn code(&mut self) -> Result<(), String> {
        let (c, next) = (self.at(self.i), self.at(self.i + 1));
        if c == '\n' {
            self.line += 1;
            self.i += 1;
        } else if c.is_whitespace() {
            self.i += 1;
        } else if c == '/' && next == '/' {
            while self.i < self.chars.len() && self.at(self.i) != '\n' {
                self.i += 1;
            }
        } else if c == '/' && next == '*' {
            self.block_comment();
        } else if c == '\'' || c == '"' {
            self.string(c)?;
        } else if c == '`' {
            self.i += 1;
            self.push(Tok::TplStart);
            self.modes.push(Mode::Template);
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = self.i;
            while self.at(self.i).is_ascii_alphanumeric() || matches!(self.at(self.i), '_' | '$') {
                self.i += 1;
            }
            self.push(Tok::Ident(self.chars[start..self.i].iter().collect()));
        } else if c.is_ascii_digit() || (c == '.' && next.is_ascii_digit()) {
            while self.at(self.i).is_ascii_alphanumeric() || matches!(self.at(self.i), '.' | '_') {
                let exponent = matches!(self.at(self.i), 'e' | 'E')
                    && matches!(self.at(self.i + 1), '+' | '-');
                self.i += if exponent { 2 } else { 1 };
            }
            self.push(Tok::Num);
        } else if c == '/' && regex_may_start(self.tokens.last()) {
            self.regex()?;
        } else {
            self.punct(c)?;
        }
        Ok(())
    }

    fn block_comment(&mut self) {
        self.i += 2;
        while self.i < self.chars.len() && !(self.at(self.i) == '*' && self.at(self.i + 1) == '/') {
            if self.at(self.i) == '\n' {
                self.line += 1;
            }
            self.i += 1;
        }
        self.i += 2;
    }

    /// A string literal in `quote`s, its escapes read.
    fn string(&mut self, quote: char) -> Result<(), String> {
        let mut text = String::new();
        self.i += 1;
        while self.at(self.i) != quote {
            match self.at(self.i) {
                '\n' | '\0' => return Err(format!("line {}: unclosed string", self.line)),
                '\\' => {
                    text.push(match self.at(self.i + 1) {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    self.i += 2;
                }
                other => {
                    text.push(other);
                    self.i += 1;
                }
            }
        }
        self.i += 1;
        self.push(Tok::Str(text));
        Ok(())
    }

    /// A regular expression literal with its flags.
    fn regex(&mut self) -> Result<(), String> {
        let mut class = false;
        self.i += 1;
        loop {
            match self.at(self.i) {
                '\n' | '\0' => {
                    return Err(format!("line {}: unclosed regular expression", self.line));
                }
                '\\' => self.i += 1,
                '[' => class = true,
                ']' => class = false,
                '/' if !class => break,
                _ => {}
            }
            self.i += 1;
        }
        self.i += 1;
        while self.at(self.i).is_ascii_alphabetic() {
            self.i += 1;
        }
        self.push(Tok::Regex);
        Ok(())
    }

    /// An operator or a bracket; the `}` that closes a template's `${` ends that code.
    fn punct(&mut self, c: char) -> Result<(), String> {
        let rest: String = self.chars[self.i..(self.i + 4).min(self.chars.len())].iter().collect();
        let Some(punct) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
            return Err(format!("line {}: unexpected {c:?}", self.line));
        };
        self.i += punct.len();
        let nested = self.modes.len() > 1;
        match (*punct, self.modes.last_mut()) {
            ("{", Some(Mode::Code { braces })) => *braces += 1,
            ("}", Some(Mode::Code { braces: 0 })) if nested => {
                self.modes.pop();
                self.push(Tok::TplExprClose);
                return Ok(());
            }
            ("}", Some(Mode::Code { braces })) => *braces = braces.saturating_sub(1),
            _ => {}
        }
        self.push(Tok::Punct(punct));
        Ok(())
    }
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
