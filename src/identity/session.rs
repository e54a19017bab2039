//! Console sessions: what a browser holds instead of a key. A session is a cookie value
//! `<key id>.<expires at, ms>.<MAC>`, the MAC an HMAC-SHA256 under the deployment's session
//! secret over the key id, the expiry and the key's current secret hash. So:
//!
//! - the browser never holds the key itself, and page scripts cannot read the cookie
//!   (`api` sets it `HttpOnly`);
//! - every process checks a session against its key cache alone, like a token: a revoked or
//!   expired key ends its sessions at once, and rotating a key ends every session made with
//!   the old secret (the way to sign everyone out);
//! - nothing is stored per session, so any serve of the deployment accepts it.
//!
//! The session secret is 32 random bytes kept in PostgreSQL (`session_secret`), made by the
//! first process that needs it. It is not part of the log: it signs nothing that lasts, and
//! replacing it only signs everyone out.
//!
//! A first start also prints a one-time sign-in link: a [`SignInCodes`] code, held in that
//! process's memory, good for one session within [`SIGN_IN_CODE_TTL_MS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use super::Principal;
use super::cache::{AuthError, KeyCache};
use super::token;

/// The cookie's name.
pub const COOKIE: &str = "brain_session";
/// How long a one-time sign-in code printed at first start stays good.
pub const SIGN_IN_CODE_TTL_MS: i64 = 15 * 60 * 1_000;
/// Most unredeemed sign-in codes one process holds.
pub const SIGN_IN_CODES_MAX: usize = 16;

const SECRET_BYTES: usize = 32;

/// The deployment's session secret, loaded (or made) once per process.
#[derive(Clone)]
pub struct Sessions {
    secret: Arc<[u8; SECRET_BYTES]>,
    pub ttl_ms: i64,
}

/// A session cookie value, made for a signed-in key.
#[derive(Debug, Clone)]
pub struct Session {
    pub value: String,
    pub expires_at_ms: i64,
}

impl Sessions {
    /// The deployment's secret, made by whichever process asks first.
    pub async fn load(pool: &PgPool, ttl_s: u64) -> Result<Sessions, sqlx::Error> {
        let mut fresh = [0u8; SECRET_BYTES];
        getrandom::fill(&mut fresh)
            .map_err(|error| sqlx::Error::Protocol(format!("no random bytes: {error}")))?;
        sqlx::query(
            "INSERT INTO session_secret (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
        )
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM session_secret WHERE id = 1")
            .fetch_one(pool)
            .await?;
        let secret: [u8; SECRET_BYTES] = stored
            .try_into()
            .map_err(|_| sqlx::Error::Protocol("session_secret is not 32 bytes".to_owned()))?;
        let ttl_ms = i64::try_from(ttl_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
        Ok(Sessions { secret: Arc::new(secret), ttl_ms })
    }

    /// Sessions under a secret no one knows: nothing signed elsewhere opens them. For a state
    /// built before the secret is loaded.
    pub fn unloaded() -> Sessions {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).expect("the operating system gives random bytes");
        Sessions { secret: Arc::new(secret), ttl_ms: 0 }
    }

    fn mac(&self, key_id: &str, expires_at_ms: i64, secret_hash: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(b"brain-session\0");
        mac.update(key_id.as_bytes());
        mac.update(b"\0");
        mac.update(expires_at_ms.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(secret_hash.as_bytes());
        mac
    }

    /// A session for the key `principal` authenticated with, starting at `now_ms`.
    pub fn start(&self, keys: &KeyCache, principal: &Principal, now_ms: i64) -> Option<Session> {
        let key = keys.get(&principal.key_id)?;
        let mut expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        // A session never outlives its key.
        if let Some(at) = key.grant.as_ref().and_then(|grant| grant.expires_at_ms) {
            expires_at_ms = expires_at_ms.min(at);
        }
        let mac = self.mac(&principal.key_id, expires_at_ms, &key.secret_hash);
        let tag = token::hex(&mac.finalize().into_bytes());
        let value = format!("{}.{expires_at_ms}.{tag}", principal.key_id);
        Some(Session { value, expires_at_ms })
    }

    /// The principal a session cookie stands for at `now_ms`.
    pub fn authenticate(
        &self,
        keys: &KeyCache,
        value: &str,
        now_ms: i64,
    ) -> Result<Principal, AuthError> {
        let mut parts = value.splitn(3, '.');
        let (Some(key_id), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::BadSession);
        };
        let expires_at_ms: i64 = expires.parse().map_err(|_| AuthError::BadSession)?;
        let tag = token::unhex(tag).ok_or(AuthError::BadSession)?;
        let key = keys.get(key_id).ok_or(AuthError::BadSession)?;
        if self.mac(key_id, expires_at_ms, &key.secret_hash).verify_slice(&tag).is_err() {
            // A forged session, or one made before the key's last rotation.
            return Err(AuthError::BadSession);
        }
        if now_ms >= expires_at_ms {
            return Err(AuthError::SessionExpired);
        }
        keys.principal(key_id, now_ms)
    }
}

/// One-time sign-in codes, held by the process that printed them.
#[derive(Clone, Default)]
pub struct SignInCodes {
    /// Hash of a code → (key id, good until).
    codes: Arc<Mutex<HashMap<String, (String, i64)>>>,
}

impl SignInCodes {
    /// A new code that signs in as `key_id` once, until `now_ms` + [`SIGN_IN_CODE_TTL_MS`].
    pub fn issue(&self, key_id: &str, now_ms: i64) -> Result<String, token::TokenError> {
        let code = token::new_secret()?.expose().to_owned();
        let mut codes = self.codes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        codes.retain(|_, (_, until)| *until > now_ms);
        if codes.len() >= SIGN_IN_CODES_MAX {
            let oldest = codes.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                codes.remove(&oldest);
            }
        }
        codes.insert(token::hash(&code), (key_id.to_owned(), now_ms + SIGN_IN_CODE_TTL_MS));
        Ok(code)
    }

    /// The key a code signs in as, if it is good; the code is used up either way.
    pub fn redeem(&self, code: &str, now_ms: i64) -> Option<String> {
        let mut codes = self.codes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (key_id, until) = codes.remove(&token::hash(code))?;
        (now_ms < until).then_some(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_signs_in_once_and_not_after_its_time() {
        let codes = SignInCodes::default();
        let code = codes.issue("0123456789abcdef", 1_000).unwrap();
        assert_eq!(codes.redeem("not-it", 1_001), None);
        assert_eq!(codes.redeem(&code, 1_001).as_deref(), Some("0123456789abcdef"));
        assert_eq!(codes.redeem(&code, 1_002), None, "a code is good once");
        let late = codes.issue("0123456789abcdef", 1_000).unwrap();
        assert_eq!(codes.redeem(&late, 1_000 + SIGN_IN_CODE_TTL_MS), None);
    }

    #[test]
    fn codes_held_are_bounded() {
        let codes = SignInCodes::default();
        for n in 0..SIGN_IN_CODES_MAX * 2 {
            codes.issue("0123456789abcdef", n as i64).unwrap();
        }
        assert_eq!(codes.codes.lock().unwrap().len(), SIGN_IN_CODES_MAX);
    }
}
