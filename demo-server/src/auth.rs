//! The admin token: where it comes from and how a request proves it.
//!
//! There is no default password. The token is taken from the environment
//! variable [`ADMIN_TOKEN_ENV`] when set; otherwise from the file
//! `<data-dir>/admin_token`, created at the first start with 32 random hex
//! digits and mode `0600`. The binary prints a newly generated token once.
//! Requests present it as `Authorization: Bearer <token>`; the comparison
//! takes the same time whatever the first wrong character.

use crate::api::ApiError;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// The environment variable that sets the admin token.
pub const ADMIN_TOKEN_ENV: &str = "DEMO_ADMIN_TOKEN";
/// The token file's name inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin_token";
/// Shortest token accepted from the environment or the file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where the admin token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Given by the caller (tests, embedding).
    Given,
    /// The environment variable [`ADMIN_TOKEN_ENV`].
    Environment,
    /// The token file, written by an earlier start.
    File,
    /// Generated now and written to the token file: show it once.
    Generated,
}

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read or written.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short or has characters not allowed in a header.
    #[error("admin token from {from} is unusable: {reason}")]
    Invalid {
        /// Where it came from.
        from: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The admin bearer token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// A token from a string (checked).
    pub fn new(token: impl Into<String>) -> Result<AdminToken, TokenError> {
        let token = token.into();
        check(&token, "the caller")?;
        Ok(AdminToken(token))
    }

    /// A new random token: 32 hex digits.
    pub fn generate() -> AdminToken {
        AdminToken(format!("{:032x}", rand::random::<u128>()))
    }

    /// The environment's token, else the file's, else a new one written to
    /// the file (mode 0600).
    pub fn load_or_create(data_dir: &Path) -> Result<(AdminToken, TokenSource), TokenError> {
        Self::load_or_create_with(std::env::var(ADMIN_TOKEN_ENV).ok(), data_dir)
    }

    /// [`AdminToken::load_or_create`] with the environment's value given.
    fn load_or_create_with(
        env: Option<String>,
        data_dir: &Path,
    ) -> Result<(AdminToken, TokenSource), TokenError> {
        if let Some(t) = env {
            let t = t.trim().to_string();
            check(&t, ADMIN_TOKEN_ENV)?;
            return Ok((AdminToken(t), TokenSource::Environment));
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let t = t.trim().to_string();
                check(&t, "the token file")?;
                return Ok((AdminToken(t), TokenSource::File));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let token = AdminToken::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        file.write_all(format!("{}\n", token.0).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        Ok((token, TokenSource::Generated))
    }

    /// The token's text (to show it once, or to send it in tests).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// `Ok` when `headers` carry `Authorization: Bearer <this token>`.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or(ApiError::Unauthorized)?;
        if constant_time_eq(presented.as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn check(token: &str, from: &'static str) -> Result<(), TokenError> {
    let invalid = |reason: &str| TokenError::Invalid {
        from,
        reason: reason.to_string(),
    };
    if token.len() < MIN_TOKEN_LEN {
        return Err(invalid(&format!(
            "it must have at least {MIN_TOKEN_LEN} characters"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("only visible ASCII characters are allowed"));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn accepts_only_the_right_bearer_token() {
        let t = AdminToken::new("0123456789abcdef0123").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(t.authorize(&h), Err(ApiError::Unauthorized));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert_eq!(t.authorize(&h), Err(ApiError::Unauthorized));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic 0123456789abcdef0123"),
        );
        assert_eq!(t.authorize(&h), Err(ApiError::Unauthorized));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer 0123456789abcdef0123"),
        );
        assert_eq!(t.authorize(&h), Ok(()));
        assert!(AdminToken::new("short").is_err());
        assert_eq!(format!("{t:?}"), "AdminToken(***)");
    }

    #[test]
    fn generates_a_private_file_once_then_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, s1) = AdminToken::load_or_create_with(None, dir.path()).unwrap();
        assert_eq!(s1, TokenSource::Generated);
        assert_eq!(t1.reveal().len(), 32);
        let (t2, s2) = AdminToken::load_or_create_with(None, dir.path()).unwrap();
        assert_eq!((t2, s2), (t1.clone(), TokenSource::File));
        let env = Some("from-the-environment-123".to_string());
        let (t3, s3) = AdminToken::load_or_create_with(env, dir.path()).unwrap();
        assert_eq!(
            (t3.reveal(), s3),
            ("from-the-environment-123", TokenSource::Environment)
        );
        assert!(AdminToken::load_or_create_with(Some("short".into()), dir.path()).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
