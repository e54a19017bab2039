//! What the process knows that no record may hold, and the [`Redactor`] that takes it out of
//! text before it is recorded: a tool's result, a model's request and answer, a provider's
//! error body, a mission's result, a conversation's turn (design invariant 13).
//!
//! A redactor is built once when a process starts, from every secret it was given (the
//! provider keys, the passwords in `DATABASE_URL`, `NATS_URL` and `REDIS_URL`, the admin key),
//! and replaces:
//!
//! - each of those secrets wherever it appears, if it is strong enough to be told from
//!   ordinary text ([`recognisable`]: at least [`BARE_LEN_MIN`] characters of two kinds or
//!   more — lower case, upper case, digits, others — or at least [`BARE_LEN_ANY`] of any kind).
//!   A weaker one (a database password `brain`) is not looked for on its own, since every
//!   `brain` in a file would go; it is still taken out where it stands as a URL's password;
//! - every BRAiN key token, known or not (`brn_<16 hex id>_<secret>`: only hashes of them are
//!   kept, so their shape is what is recognised), keeping the public key id;
//! - every password of a URL's user part (`scheme://user:password@host`).
//!
//! Text is redacted whole before it is cut to a record's bound, so a cut never leaves half a
//! secret behind. Text streamed live as it is generated is not (a secret split across pieces
//! cannot be recognised); what is recorded of it is.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Shortest secret looked for on its own, when it mixes kinds of characters.
pub const BARE_LEN_MIN: usize = 8;
/// Shortest secret looked for on its own whatever its characters.
pub const BARE_LEN_ANY: usize = 16;
/// Most secrets one redactor looks for: a process has a handful.
pub const SECRETS_MAX: usize = 64;

/// Characters of a key token's id, and the fewest of its secret that make a token.
const TOKEN_PREFIX: &str = "brn_";
const TOKEN_ID_LEN: usize = 16;
const TOKEN_SECRET_LEN_MIN: usize = 8;

/// Takes known secrets and secret-shaped text out of what is recorded. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The recognisable secrets, longest first among overlapping ones.
    literals: Option<AhoCorasick>,
    count: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("secrets", &self.inner.count).finish()
    }
}

/// Whether `secret` is told from ordinary text well enough to be looked for on its own.
pub fn recognisable(secret: &str) -> bool {
    let len = secret.chars().count();
    let kinds = [
        secret.chars().any(|c| c.is_lowercase()),
        secret.chars().any(|c| c.is_uppercase()),
        secret.chars().any(|c| c.is_ascii_digit()),
        secret.chars().any(|c| !c.is_alphanumeric()),
    ];
    let kinds = kinds.iter().filter(|&&kind| kind).count();
    len >= BARE_LEN_ANY || (len >= BARE_LEN_MIN && kinds >= 2)
}

impl Redactor {
    /// A redactor for `secrets` (empty ones ignored; those not [`recognisable`] left to the
    /// URL-password rule), besides the shapes every redactor knows.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut literals: Vec<String> = secrets
            .into_iter()
            .map(|secret| secret.as_ref().to_owned())
            .filter(|secret| recognisable(secret))
            .take(SECRETS_MAX)
            .collect();
        literals.sort();
        literals.dedup();
        let matcher = (!literals.is_empty())
            .then(|| {
                AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&literals).ok()
            })
            .flatten();
        Redactor { inner: Arc::new(Inner { literals: matcher, count: literals.len() }) }
    }

    /// How many secrets it looks for on their own.
    pub fn secrets(&self) -> usize {
        self.inner.count
    }

    /// `text` without the secrets it held.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        // The shapes first, so that a known key token keeps its public id like any other.
        let mut text = Cow::Borrowed(text);
        if let Some(replaced) = tokens(&text) {
            text = Cow::Owned(replaced);
        }
        if let Some(replaced) = url_passwords(&text) {
            text = Cow::Owned(replaced);
        }
        if let Some(matcher) = &self.inner.literals
            && matcher.is_match(text.as_ref())
        {
            let replaced = matcher.replace_all(&text, &vec![REDACTED; self.inner.count]);
            text = Cow::Owned(replaced);
        }
        text
    }

    /// Redacts `text` in place.
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.redact(text) {
            *text = redacted;
        }
    }

    /// Redacts every string of `value`, object keys included.
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::String(text) => self.redact_string(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_json(item)),
            Value::Object(map) => {
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|key| match self.redact(key) {
                        Cow::Owned(new) => Some((key.clone(), new)),
                        Cow::Borrowed(_) => None,
                    })
                    .collect();
                for (old, new) in renamed {
                    if let Some(item) = map.remove(&old) {
                        map.insert(new, item);
                    }
                }
                map.values_mut().for_each(|item| self.redact_json(item));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// `value` without the secrets it held.
    pub fn redacted_json(&self, mut value: Value) -> Value {
        self.redact_json(&mut value);
        value
    }
}

/// Key tokens in `text` with their secret replaced, or `None` when it holds none.
fn tokens(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (at, _) in text.match_indices(TOKEN_PREFIX) {
        if at < copied {
            continue;
        }
        let rest = &text[at + TOKEN_PREFIX.len()..];
        let id_ok = rest.len() > TOKEN_ID_LEN
            && rest.as_bytes()[..TOKEN_ID_LEN].iter().all(u8::is_ascii_hexdigit)
            && rest.as_bytes()[TOKEN_ID_LEN] == b'_';
        if !id_ok {
            continue;
        }
        let secret_at = at + TOKEN_PREFIX.len() + TOKEN_ID_LEN + 1;
        let secret_len =
            text.as_bytes()[secret_at..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if secret_len < TOKEN_SECRET_LEN_MIN {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..secret_at]);
        out.push_str(REDACTED);
        copied = secret_at + secret_len;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Where a URL's authority ends.
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | '\\' | ',' | ';' | ')' | ']')
        || c.is_whitespace()
        || c.is_control()
}

/// The user part of the URL whose authority starts at `text[from..]`: where it ends (the
/// `@`), and where its password starts (after the first `:`), if it has one.
fn user_part(text: &str, from: usize) -> Option<(usize, Option<usize>)> {
    let authority = &text[from..];
    let end = authority.find(ends_authority).unwrap_or(authority.len());
    let at = authority[..end].rfind('@')?;
    let colon = authority[..at].find(':').map(|colon| from + colon + 1);
    Some((from + at, colon))
}

/// URLs in `text` with the password of their user part replaced, or `None` when none has one.
fn url_passwords(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (at, separator) in text.match_indices("://") {
        let from = at + separator.len();
        if from < copied {
            continue;
        }
        let Some((end, Some(password))) = user_part(text, from) else { continue };
        if password == end || &text[password..end] == REDACTED {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..password]);
        out.push_str(REDACTED);
        copied = end;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

/// `text` with its `%XX` escapes decoded, when they decode to UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// The secret of a service URL's user part: its password (`postgres://user:pw@host`,
/// `redis://:pw@host`), or its user alone where that is a token (`nats://token@host`); as
/// written and percent-decoded.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else { return vec![] };
    let from = scheme_end + 3;
    let Some((end, password)) = user_part(url, from) else { return vec![] };
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let secret = match password {
        Some(password) => &url[password..end],
        None if scheme.starts_with("nats") || scheme == "tls" => &url[from..end],
        None => return vec![],
    };
    if secret.is_empty() {
        return vec![];
    }
    let mut secrets = vec![secret.to_owned()];
    secrets.extend(percent_decoded(secret));
    secrets
}

impl Redactor {
    /// The redactor of a process started with `settings`: its provider keys and the other
    /// secrets it was given ([`crate::config::llm::LlmSettings::secrets`]).
    pub fn of(settings: &crate::config::llm::LlmSettings) -> Redactor {
        let keys = [&settings.openai_api_key, &settings.anthropic_api_key].into_iter().flatten();
        let all = keys.chain(&settings.secrets).map(|secret| secret.expose().to_owned());
        Redactor::new(all.collect::<Vec<_>>())
    }
}

/// The secrets a process is started with besides its provider keys: its services'
/// passwords and the admin key. Says, once, which are too weak to be looked for on their own.
pub fn of_process(
    services: &crate::config::Services,
    admin_key: Option<&str>,
) -> Vec<crate::config::llm::Secret> {
    let named = [
        ("DATABASE_URL", url_secrets(&services.database_url)),
        ("NATS_URL", url_secrets(&services.nats_url)),
        ("REDIS_URL", url_secrets(&services.redis_url)),
        ("BRAIN_ADMIN_KEY", admin_key.map(str::to_owned).into_iter().collect()),
    ];
    let mut all = Vec::new();
    for (name, secrets) in named {
        if secrets.iter().any(|secret| !recognisable(secret)) {
            tracing::warn!(
                secret = name,
                "a secret is too short or too plain to be recognised in recorded text: it is \
                 redacted only where it stands as a URL's password (use at least {BARE_LEN_MIN} \
                 characters of two kinds, or {BARE_LEN_ANY} of any)"
            );
        }
        all.extend(secrets.into_iter().map(crate::config::llm::Secret::new));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-4f1c9a77e0";

    #[test]
    fn a_known_secret_goes_wherever_it_stands_and_text_without_one_is_not_copied() {
        let redactor = Redactor::new([KEY, "", "brain"]);
        assert_eq!(redactor.secrets(), 1, "the empty and the plain one are not looked for");
        assert_eq!(
            redactor.redact(&format!("key={KEY}; again:{KEY}x")),
            format!("key={REDACTED}; again:{REDACTED}x")
        );
        assert!(matches!(redactor.redact("the brain of it"), Cow::Borrowed("the brain of it")));
    }

    #[test]
    fn the_longest_of_overlapping_secrets_goes_whole() {
        let redactor = Redactor::new(["abcdef12", "abcdef12345678"]);
        assert_eq!(redactor.redact("<abcdef12345678>"), format!("<{REDACTED}>"));
        assert_eq!(redactor.redact("<abcdef12>"), format!("<{REDACTED}>"));
    }

    #[test]
    fn a_secret_must_be_recognisable_to_be_looked_for_on_its_own() {
        for weak in ["brain", "postgres", "password", "12345678", "Secret1"] {
            assert!(!recognisable(weak), "{weak}");
        }
        for strong in ["s3cretpw", "Postgres", "pa-ssword", "aaaaaaaaaaaaaaaa", KEY] {
            assert!(recognisable(strong), "{strong}");
        }
    }

    #[test]
    fn any_key_token_loses_its_secret_and_keeps_its_id() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        let text =
            format!("Authorization: Bearer brn_{id}_{secret}\nand brn_{id}_{}", &secret[..9]);
        let redactor = Redactor::default();
        assert_eq!(
            redactor.redact(&text),
            format!("Authorization: Bearer brn_{id}_{REDACTED}\nand brn_{id}_{REDACTED}")
        );
        for harmless in
            ["brn_", "brn_0123", &format!("brn_{id}_abc"), "brn_xyz0123456789abcd_ffffffffff"]
        {
            assert_eq!(redactor.redact(harmless), harmless);
        }
    }

    #[test]
    fn every_password_of_a_url_goes_whatever_it_is() {
        let redactor = Redactor::default();
        let text = "DATABASE_URL=postgres://brain:brain@db:5432/brain REDIS_URL=redis://:pw@r \
                    see https://user@host/ and \"nats://a:b@n:4222\"";
        assert_eq!(
            redactor.redact(text),
            format!(
                "DATABASE_URL=postgres://brain:{REDACTED}@db:5432/brain REDIS_URL=redis://:{REDACTED}@r \
                 see https://user@host/ and \"nats://a:{REDACTED}@n:4222\""
            )
        );
        let once = redactor.redact(text).into_owned();
        assert_eq!(redactor.redact(&once), once, "redacting twice changes nothing more");
        assert_eq!(redactor.redact("http://host:8080/path?a=b@c"), "http://host:8080/path?a=b@c");
    }

    #[test]
    fn json_is_redacted_in_every_string_and_key() {
        let redactor = Redactor::new([KEY]);
        let value = serde_json::json!({ "a": [KEY, 1, { KEY: format!("x{KEY}") }], "b": null });
        assert_eq!(
            redactor.redacted_json(value),
            serde_json::json!({ "a": [REDACTED, 1, { REDACTED: format!("x{REDACTED}") }], "b": null })
        );
    }

    #[test]
    fn service_urls_give_their_passwords_plain_and_decoded() {
        assert_eq!(url_secrets("postgres://u:p%40ss-w0rd@h/db"), ["p%40ss-w0rd", "p@ss-w0rd"]);
        assert_eq!(url_secrets("redis://:r3dis-pw@h:6379"), ["r3dis-pw"]);
        assert_eq!(url_secrets("nats://t0ken-abcdef@h:4222"), ["t0ken-abcdef"]);
        assert!(url_secrets("nats://127.0.0.1:4222").is_empty());
        assert!(url_secrets("redis://user@h").is_empty());
        assert!(url_secrets("not a url").is_empty());
    }
}
