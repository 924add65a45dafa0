//! Retry policy of a step or a compensation: how many attempts, how long to
//! wait between them (exponential backoff with jitter, capped) and how long
//! one attempt may take.
//!
//! The delay computation is pure: the caller supplies the jitter fraction, so
//! the state machine stays deterministic and the runtime owns the randomness.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a step (or its compensation) is retried.
///
/// Defaults: 5 attempts, 100 ms initial backoff doubling up to 10 s, full
/// jitter of ±50 %, 30 s per attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. At least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Growth factor of the delay per attempt.
    pub multiplier: f64,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Fraction of the delay that is randomised: 0.0 = none, 0.5 = ±50 %.
    pub jitter: f64,
    /// Time one attempt may take before it is abandoned as in doubt.
    /// `None` waits forever.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
            jitter: 0.5,
            attempt_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once and never retries.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sets the number of attempts (values below 1 count as 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first backoff and the cap.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets the jitter fraction, clamped to `0.0..=1.0`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Sets the per-attempt timeout.
    pub fn attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Delay after failed attempt number `attempt` (1-based) before the next
    /// one. `unit` is a random number in `[0, 1)` supplied by the caller; the
    /// result is within `base * (1 ± jitter)` and never above `max_backoff`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(63) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let cap = self.max_backoff.as_secs_f64();
        let base = if base.is_finite() { base.min(cap) } else { cap };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        Duration::from_secs_f64((base * factor).clamp(0.0, cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_exponentially_and_is_capped() {
        let p = RetryPolicy::default()
            .jitter(0.0)
            .backoff(Duration::from_millis(100), Duration::from_millis(700));
        assert_eq!(p.delay(1, 0.3), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.3), Duration::from_millis(200));
        assert_eq!(p.delay(3, 0.3), Duration::from_millis(400));
        assert_eq!(p.delay(4, 0.3), Duration::from_millis(700));
        assert_eq!(p.delay(200, 0.3), Duration::from_millis(700));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default().jitter(0.5);
        let lo = p.delay(1, 0.0);
        let hi = p.delay(1, 0.999_999);
        assert_eq!(lo, Duration::from_millis(50));
        assert!(hi > Duration::from_millis(149) && hi <= Duration::from_millis(150));
        assert!(p.delay(1, f64::NAN) <= Duration::from_millis(150));
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
