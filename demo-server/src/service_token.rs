//! The credential between the orchestrator and a participant service: a
//! shared secret per service, sent as `Authorization: Bearer <token>` on
//! every call and checked in constant time.
//!
//! Where it comes from, first found wins: the per-service environment
//! variable (`DEMO_INVENTORY_SERVICE_TOKEN`, `DEMO_PAYMENTS_SERVICE_TOKEN`,
//! `DEMO_LOYALTY_SERVICE_TOKEN`), the shared [`SERVICE_TOKEN_ENV`]
//! (`DEMO_SERVICE_TOKEN`), then the file given with `--service-token-file`.
//! The orchestrator and the participant look in the same places, so one
//! setting configures both sides. A participant without a token serves only
//! on a loopback address ([`crate::roles::serve_role_with`] refuses any
//! other). The token never reaches a log, an error or a response: `Debug`
//! hides it and the check compares SHA-256 digests with [`subtle`], so
//! neither a wrong character's position nor the length leaks through time.

use crate::auth::{TokenError, MIN_TOKEN_LEN};
use crate::roles::Role;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The environment variable holding the token shared by every service.
pub const SERVICE_TOKEN_ENV: &str = "DEMO_SERVICE_TOKEN";

/// The environment variable holding one service's own token.
pub fn role_token_env(role: Role) -> String {
    format!("DEMO_{}_SERVICE_TOKEN", role.as_str().to_ascii_uppercase())
}

/// A service's shared secret. `Debug` does not show it.
#[derive(Clone)]
pub struct ServiceToken {
    text: String,
    digest: [u8; 32],
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(***)")
    }
}

impl PartialEq for ServiceToken {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.digest.ct_eq(&other.digest))
    }
}

impl Eq for ServiceToken {}

impl ServiceToken {
    /// A token from a string: at least [`MIN_TOKEN_LEN`] visible ASCII
    /// characters (surrounding whitespace is trimmed).
    pub fn new(token: impl AsRef<str>) -> Result<ServiceToken, TokenError> {
        Self::checked(token.as_ref(), "the caller")
    }

    fn checked(token: &str, from: &'static str) -> Result<ServiceToken, TokenError> {
        let text = token.trim();
        let invalid = |reason: String| TokenError::Invalid { from, reason };
        if text.len() < MIN_TOKEN_LEN {
            return Err(invalid(format!(
                "it must have at least {MIN_TOKEN_LEN} characters"
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("only visible ASCII characters are allowed".into()));
        }
        Ok(ServiceToken {
            text: text.to_string(),
            digest: digest(text.as_bytes()),
        })
    }

    /// The token of `role` from the environment, else from `file`; `None`
    /// when neither gives one.
    pub fn for_role(role: Role, file: Option<&Path>) -> Result<Option<ServiceToken>, TokenError> {
        Self::lookup(
            std::env::var(role_token_env(role)).ok(),
            std::env::var(SERVICE_TOKEN_ENV).ok(),
            file,
        )
    }

    /// [`ServiceToken::for_role`] with the environment's values given.
    fn lookup(
        own: Option<String>,
        shared: Option<String>,
        file: Option<&Path>,
    ) -> Result<Option<ServiceToken>, TokenError> {
        if let Some(t) = own.filter(|t| !t.trim().is_empty()) {
            return Self::checked(&t, "the service's token variable").map(Some);
        }
        if let Some(t) = shared.filter(|t| !t.trim().is_empty()) {
            return Self::checked(&t, SERVICE_TOKEN_ENV).map(Some);
        }
        let Some(path) = file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::checked(&text, "the service token file").map(Some)
    }

    /// The `Authorization` header value that presents this token, marked
    /// sensitive so that hyper never logs it.
    pub fn header_value(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.text))
            .expect("a checked token is visible ASCII");
        v.set_sensitive(true);
        v
    }

    /// True when `headers` carry `Authorization: Bearer <this token>`.
    pub fn verify(&self, headers: &HeaderMap) -> bool {
        match bearer(headers) {
            Some(presented) => bool::from(digest(presented.as_bytes()).ct_eq(&self.digest)),
            None => false,
        }
    }
}

/// The bearer token of an `Authorization` header, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(bytes).as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_bearer_token() {
        let t = ServiceToken::new("  service-secret-0123456789 \n").unwrap();
        let mut h = HeaderMap::new();
        assert!(!t.verify(&h));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert!(!t.verify(&h));
        h.insert(AUTHORIZATION, t.header_value());
        assert!(t.verify(&h));
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(ServiceToken::new("short").is_err());
        assert!(ServiceToken::new("has a space in the middle").is_err());
        assert_eq!(format!("{t:?}"), "ServiceToken(***)");
    }

    #[test]
    fn own_variable_then_shared_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        let own = Some("own-token-0123456789".to_string());
        let shared = Some("shared-token-0123456789".to_string());
        let t = |s: &str| Some(ServiceToken::new(s).unwrap());
        assert_eq!(
            ServiceToken::lookup(own, shared.clone(), Some(&file)).unwrap(),
            t("own-token-0123456789")
        );
        assert_eq!(
            ServiceToken::lookup(None, shared, Some(&file)).unwrap(),
            t("shared-token-0123456789")
        );
        assert_eq!(
            ServiceToken::lookup(None, None, Some(&file)).unwrap(),
            t("from-the-file-0123456789")
        );
        assert_eq!(ServiceToken::lookup(None, None, None).unwrap(), None);
        let missing = dir.path().join("missing");
        assert!(ServiceToken::lookup(None, None, Some(&missing)).is_err());
    }
}
