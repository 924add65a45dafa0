//! Per-client limits of the main server, past the connection caps of
//! [`crate::connections`]: how many event streams may be open (in all, per
//! client address, per saga), and how fast one client address may create
//! bookings, look bookings and loyalty accounts up and enroll.
//!
//! Rates are token buckets per client address and kind of request:
//! `rate_burst` requests at once, then `rate_per_minute` a minute. A request
//! over its limit, like a stream over a cap, is answered `429` with a
//! `Retry-After` header; other clients are not affected. Buckets of clients
//! gone quiet are dropped once the table grows, so a flood of addresses
//! cannot grow it without bound.

use crate::api::ApiError;
use crate::state::ServerConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Rate-limited kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// `POST /api/bookings`.
    CreateBooking,
    /// `GET /api/bookings/lookup` (reference and last name).
    BookingLookup,
    /// `GET /api/loyalty/{id}` (account number and last name).
    LoyaltyLookup,
    /// `POST /api/loyalty`.
    Enroll,
}

/// Bucket tables above this size are swept of full buckets.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per (client address, kind).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<(IpAddr, RateKind), Bucket>>,
}

impl RateLimiter {
    /// `burst` at once, then `per_minute` a minute, per address and kind.
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_minute: f64::from(per_minute.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `kind` from `client`, or says how long to wait.
    pub fn check(&self, client: IpAddr, kind: RateKind) -> Result<(), ApiError> {
        let now = Instant::now();
        let per_sec = self.per_minute / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            let burst = self.burst;
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = map.entry((client, kind)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
        Err(ApiError::TooManyRequests {
            message: "too many requests of this kind from this address".into(),
            retry_after_secs: wait,
        })
    }
}

/// Event streams open now: in all, per client address, per saga.
#[derive(Debug)]
pub struct StreamTracker {
    max_total: usize,
    max_per_client: usize,
    max_per_saga: usize,
    counts: Mutex<StreamCounts>,
}

#[derive(Debug, Default)]
struct StreamCounts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    per_saga: HashMap<String, usize>,
}

impl StreamTracker {
    /// The caps of `config`.
    pub fn new(config: &ServerConfig) -> StreamTracker {
        StreamTracker {
            max_total: config.max_streams,
            max_per_client: config.max_streams_per_client,
            max_per_saga: config.max_streams_per_saga,
            counts: Mutex::new(StreamCounts::default()),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// A slot for a stream of `client` on `saga` (`None`: every saga's
    /// stream), or `429` over a cap. The slot is given back on drop.
    pub fn acquire(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        saga: Option<&str>,
    ) -> Result<StreamSlot, ApiError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let refuse = |what: &str| {
            Err(ApiError::TooManyRequests {
                message: format!("too many event streams open {what}"),
                retry_after_secs: 5,
            })
        };
        if c.total >= self.max_total {
            return refuse("on this server");
        }
        if let Some(ip) = client {
            if c.per_client.get(&ip).copied().unwrap_or(0) >= self.max_per_client {
                return refuse("from this address");
            }
        }
        if let Some(id) = saga {
            if c.per_saga.get(id).copied().unwrap_or(0) >= self.max_per_saga {
                return refuse("on this saga");
            }
        }
        c.total += 1;
        if let Some(ip) = client {
            *c.per_client.entry(ip).or_default() += 1;
        }
        if let Some(id) = saga {
            *c.per_saga.entry(id.to_string()).or_default() += 1;
        }
        Ok(StreamSlot {
            tracker: self.clone(),
            client,
            saga: saga.map(str::to_string),
        })
    }
}

/// One open stream's place under the caps.
#[derive(Debug)]
pub struct StreamSlot {
    tracker: Arc<StreamTracker>,
    client: Option<IpAddr>,
    saga: Option<String>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = self
            .tracker
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(ip) = self.client {
            if let Some(n) = c.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_client.remove(&ip);
                }
            }
        }
        if let Some(id) = &self.saga {
            if let Some(n) = c.per_saga.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    c.per_saga.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_429_with_a_wait_per_address_and_kind() {
        let r = RateLimiter::new(60, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            r.check(a, RateKind::BookingLookup).unwrap();
        }
        match r.check(a, RateKind::BookingLookup) {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!(retry_after_secs >= 1),
            other => panic!("{other:?}"),
        }
        r.check(a, RateKind::Enroll).unwrap();
        r.check(b, RateKind::BookingLookup).unwrap();
    }

    #[test]
    fn stream_caps_per_saga_client_and_total() {
        let config = ServerConfig {
            max_streams: 3,
            max_streams_per_client: 2,
            max_streams_per_saga: 1,
            ..ServerConfig::default()
        };
        let t = Arc::new(StreamTracker::new(&config));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = t.acquire(Some(a), Some("x")).unwrap();
        assert!(t.acquire(Some(b), Some("x")).is_err(), "per saga");
        let _s2 = t.acquire(Some(a), Some("y")).unwrap();
        assert!(t.acquire(Some(a), Some("z")).is_err(), "per client");
        let _s3 = t.acquire(Some(b), None).unwrap();
        assert!(t.acquire(Some(b), Some("w")).is_err(), "in all");
        drop(s1);
        assert_eq!(t.open(), 2);
        t.acquire(Some(b), Some("x")).unwrap();
    }
}
