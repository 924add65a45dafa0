//! Login throttling: attempts per client address (every attempt counts) and
//! failures per account (by email, whatever the address), each a token
//! bucket. Past either, a login is refused with `429` and `Retry-After`
//! before the password is even checked, so guessing is bounded per address
//! and, across many addresses, per account.

use crate::api::ApiError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Tables above this size are swept of full buckets.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by `K`: `burst` at once, refilled at `per_minute`.
#[derive(Debug)]
struct Buckets<K> {
    per_minute: f64,
    burst: f64,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(per_minute: u32, burst: u32) -> Self {
        Buckets {
            per_minute: f64::from(per_minute.max(1)),
            burst: f64::from(burst.max(1)),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait before `key` has a token, or `None` if it has one now.
    /// With `take`, a present token is consumed.
    fn wait(&self, key: &K, take: bool) -> Option<u64> {
        let now = Instant::now();
        let per_sec = self.per_minute / 60.0;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            let burst = self.burst;
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            if take {
                b.tokens -= 1.0;
            }
            return None;
        }
        Some(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
    }
}

/// The limits on login attempts.
#[derive(Debug)]
pub struct LoginThrottle {
    per_address: Buckets<IpAddr>,
    per_account: Buckets<String>,
}

impl LoginThrottle {
    /// `per_address` attempts a minute per client address (with that burst),
    /// and `failures_per_account` failed attempts per account in a burst,
    /// refilled at one per `60 / failures_per_account` seconds.
    pub fn new(per_address: u32, failures_per_account: u32) -> Self {
        LoginThrottle {
            per_address: Buckets::new(per_address, per_address),
            per_account: Buckets::new(failures_per_account, failures_per_account),
        }
    }

    /// Takes an attempt from `client` for `email`, or `429`: the address is
    /// over its rate, or the account has failed too often lately.
    pub fn check(&self, client: Option<IpAddr>, email: &str) -> Result<(), ApiError> {
        if let Some(ip) = client {
            if let Some(wait) = self.per_address.wait(&ip, true) {
                return Err(ApiError::TooManyRequests {
                    message: "too many login attempts from this address".into(),
                    retry_after_secs: wait,
                });
            }
        }
        if let Some(wait) = self.per_account.wait(&email.to_string(), false) {
            return Err(ApiError::TooManyRequests {
                message: "too many failed logins for this account; try again later".into(),
                retry_after_secs: wait,
            });
        }
        Ok(())
    }

    /// Counts a failed attempt against the account `email`.
    pub fn failed(&self, email: &str) {
        let _ = self.per_account.wait(&email.to_string(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_account_from_any_address() {
        let t = LoginThrottle::new(100, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            t.check(Some(a), "ada@example.com").unwrap();
            t.failed("ada@example.com");
        }
        assert!(t.check(Some(b), "ada@example.com").is_err());
        assert!(t.check(Some(b), "bob@example.com").is_ok());
    }

    #[test]
    fn an_address_is_limited_whatever_the_account() {
        let t = LoginThrottle::new(2, 100);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(t.check(Some(a), "x@example.com").is_ok());
        assert!(t.check(Some(a), "y@example.com").is_ok());
        let e = t.check(Some(a), "z@example.com").unwrap_err();
        assert!(matches!(e, ApiError::TooManyRequests { .. }));
    }
}
