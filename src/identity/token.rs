//! Key tokens: `brn_<key id>_<secret>`. The key id (16 hexadecimal characters) is public and
//! names the key in lists, logs and events; the secret (64 hexadecimal characters, 256 bits
//! from the operating system) is shown once, when the key is made or rotated, and kept only as
//! its SHA-256. A fast hash is enough because the secret is random, not a password: nothing
//! short of 2^256 guesses finds it from its hash.

use std::fmt;

use subtle::ConstantTimeEq;

use domain::api_key::{KEY_ID_LEN, is_key_id};

/// What every token starts with, so that a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "brn_";
/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
/// Characters of a secret in a token.
pub const SECRET_LEN: usize = SECRET_BYTES * 2;
/// Characters of a whole token.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN;

/// A key's secret. Never printed: `Debug` and `Display` show only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one answer that shows it and for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the log keeps.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A token split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub key_id: String,
    pub secret: Secret,
}

impl Token {
    /// The whole token, as the client sends it.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.key_id, self.secret.expose())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "not a BRAiN key: a key reads brn_<16 hexadecimal characters>_<64 hexadecimal characters>"
    )]
    Malformed,
    #[error("the operating system gave no random bytes: {0}")]
    NoRandomness(String),
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| TokenError::NoRandomness(error.to_string()))?;
    Ok(hex(&buffer))
}

/// Bytes as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

/// Lowercase hexadecimal back into bytes; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new key id and secret.
pub fn generate() -> Result<Token, TokenError> {
    let key_id = random_hex(KEY_ID_LEN / 2)?;
    Ok(Token { key_id, secret: new_secret()? })
}

/// A new secret for an existing key (rotation).
pub fn new_secret() -> Result<Secret, TokenError> {
    Ok(Secret(random_hex(SECRET_BYTES)?))
}

/// Splits a token. Only the shape is checked here; whether it opens a key is the cache's.
pub fn parse(token: &str) -> Result<Token, TokenError> {
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let (key_id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if !is_key_id(key_id) || !is_hex(secret, SECRET_LEN) {
        return Err(TokenError::Malformed);
    }
    Ok(Token { key_id: key_id.to_owned(), secret: Secret(secret.to_owned()) })
}

/// The SHA-256 of a secret in lowercase hexadecimal: what `ApiKeyCreated` and
/// `ApiKeyRotated` store.
pub fn hash(secret: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// Whether two hashes are equal, in time that does not depend on where they differ.
pub fn hashes_equal(left: &str, right: &str) -> bool {
    left.len() == right.len() && bool::from(left.as_bytes().ct_eq(right.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_into_the_same_id_and_secret() {
        let token = generate().unwrap();
        let text = token.expose();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with("brn_"));
        assert_eq!(parse(&text).unwrap(), token);
        assert_ne!(generate().unwrap().key_id, token.key_id, "ids are drawn, not counted");
    }

    #[test]
    fn anything_but_the_exact_shape_is_malformed() {
        let good = generate().unwrap().expose();
        let cases = [
            String::new(),
            "Bearer x".to_owned(),
            good.replacen("brn_", "brx_", 1),
            good.to_uppercase(),
            format!("{good}0"),
            good[..good.len() - 1].to_owned(),
            good.replacen('_', "-", 2),
            format!("brn_{}_{}", "g".repeat(16), "0".repeat(64)),
        ];
        for case in cases {
            assert_eq!(parse(&case), Err(TokenError::Malformed), "{case:?}");
        }
    }

    #[test]
    fn the_hash_is_sha_256_and_compares_only_equal_hashes() {
        // SHA-256("abc"), a published test vector.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hash("abc"), abc);
        assert!(hashes_equal(abc, abc));
        assert!(!hashes_equal(abc, &hash("abd")));
        assert!(!hashes_equal(abc, &abc[..63]));
    }

    #[test]
    fn hex_goes_there_and_back_and_refuses_anything_else() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff];
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        for bad in ["0", "0g", "AB", "0 "] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let token = generate().unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.secret.expose()), "{shown}");
        assert!(shown.contains(&token.key_id));
    }
}
