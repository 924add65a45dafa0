//! Sessions: a random 256-bit token in an `HttpOnly`, `SameSite=Strict`
//! cookie with an expiry (`Max-Age`), plus `Secure` when the server is told
//! it is served over TLS ([`crate::ServerConfig::secure_cookies`]; the
//! demo serves plain HTTP on loopback, so it is off by default).
//!
//! The server keeps only the SHA-256 of each token (tree `sessions`), so a
//! copy of the database does not hold usable sessions. Each session has a
//! CSRF token (synchronizer pattern): every state-changing request that
//! carries a valid session cookie must send it back in `X-CSRF-Token`, or
//! it is refused with `403` before its handler runs ([`crate::routes`]).
//! The cookie's `SameSite=Strict` already keeps other sites' requests from
//! carrying it; the token is the second lock.

use super::{random_id, AccountError};
use hyper::HeaderMap;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sid";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session as stored (under the token's digest).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    v: u32,
    account_id: String,
    csrf: String,
    expires_at_ms: u64,
}

/// A valid session of a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The account logged in.
    pub account_id: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// When it expires, ms since the epoch.
    pub expires_at_ms: u64,
    digest: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// True when `headers` carry this session's CSRF token.
    pub fn csrf_ok(&self, headers: &HeaderMap) -> bool {
        let Some(sent) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (a, b) = (
            crate::service_token::digest(sent.trim().as_bytes()),
            crate::service_token::digest(self.csrf.as_bytes()),
        );
        bool::from(a[..].ct_eq(&b[..]))
    }
}

/// Sessions on the tree `sessions`.
pub struct SessionStore {
    tree: sled::Tree,
    ttl: Duration,
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

fn digest_hex(token: &str) -> String {
    crate::service_token::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
}

impl SessionStore {
    pub(super) fn open(db: &sled::Db, ttl: Duration) -> Result<Self, AccountError> {
        Ok(SessionStore {
            tree: db.open_tree("sessions")?,
            ttl,
        })
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `account_id`: its token (for the cookie, never
    /// stored) and the session. The caller flushes.
    pub fn create(&self, account_id: &str) -> Result<(String, Session), AccountError> {
        let token = random_token();
        let stored = Stored {
            v: 1,
            account_id: account_id.to_string(),
            csrf: random_id("").to_ascii_lowercase() + &random_id("").to_ascii_lowercase(),
            expires_at_ms: now_ms() + self.ttl.as_millis() as u64,
        };
        let digest = digest_hex(&token);
        let bytes = serde_json::to_vec(&stored).map_err(|e| AccountError::Store(e.to_string()))?;
        self.tree.insert(digest.as_bytes(), bytes)?;
        Ok((
            token,
            Session {
                account_id: stored.account_id,
                csrf: stored.csrf,
                expires_at_ms: stored.expires_at_ms,
                digest,
            },
        ))
    }

    /// The valid session named by the request's cookie, if any. An expired
    /// one is removed and reads as none.
    pub fn from_headers(&self, headers: &HeaderMap) -> Result<Option<Session>, AccountError> {
        let Some(token) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let digest = digest_hex(&token);
        let Some(bytes) = self.tree.get(digest.as_bytes())? else {
            return Ok(None);
        };
        let Ok(s) = serde_json::from_slice::<Stored>(&bytes) else {
            return Ok(None);
        };
        if s.expires_at_ms <= now_ms() {
            self.tree.remove(digest.as_bytes())?;
            return Ok(None);
        }
        Ok(Some(Session {
            account_id: s.account_id,
            csrf: s.csrf,
            expires_at_ms: s.expires_at_ms,
            digest,
        }))
    }

    /// Ends `session`. The caller flushes.
    pub fn end(&self, session: &Session) -> Result<(), AccountError> {
        self.tree.remove(session.digest.as_bytes())?;
        Ok(())
    }
}

/// The `Set-Cookie` value that stores `token` for `ttl`.
pub fn set_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderValue, COOKIE};

    #[test]
    fn a_session_is_found_by_its_cookie_and_checks_its_csrf_token() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = SessionStore::open(&db, Duration::from_secs(60)).unwrap();
        let (token, s) = store.create("AC1").unwrap();
        assert!(
            store.tree.get(token.as_bytes()).unwrap().is_none(),
            "token not stored"
        );
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; sid={token}")).unwrap(),
        );
        let found = store.from_headers(&h).unwrap().unwrap();
        assert_eq!(found.account_id, "AC1");
        assert!(!found.csrf_ok(&h));
        h.insert(CSRF_HEADER, HeaderValue::from_str(&s.csrf).unwrap());
        assert!(found.csrf_ok(&h));
        h.insert(CSRF_HEADER, HeaderValue::from_static("nope"));
        assert!(!found.csrf_ok(&h));
        store.end(&found).unwrap();
        assert!(store.from_headers(&h).unwrap().is_none());
        let c = set_cookie(&token, Duration::from_secs(60), true);
        assert!(
            c.contains("HttpOnly")
                && c.contains("SameSite=Strict")
                && c.contains("Max-Age=60")
                && c.ends_with("; Secure")
        );
    }
}
