//! Promo codes: the operator's table of codes (a percentage or a fixed
//! amount off the base fare, a validity window, an optional use limit) and
//! their uses, one per booking, keyed by the booking step's idempotency key.
//!
//! A use is an effect like a seat hold: [`PromoStore::take`] applies it
//! once per key, [`PromoStore::release`] undoes it and leaves a tombstone
//! so that a late retry cannot apply it again. The limit is never exceeded
//! under concurrency: takes of one store are serialised by a lock, and the
//! count is the number of applied use records of the code (a use record is
//! one sled insert, so after a crash the count is exactly the uses that
//! were written; there is no separate counter to drift). Counting scans the
//! code's uses, which a use limit keeps small; a code without a limit is
//! not counted at all.

use crate::pricing::{promo_discount, PriceBreakdown, PricingError, PromoRule};
use crate::types::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Most characters of a code.
pub const MAX_CODE_CHARS: usize = 32;

/// A code as the operator defined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoCode {
    /// Format version.
    pub v: u32,
    /// The code, upper case.
    pub code: String,
    /// What it takes off.
    pub rule: PromoRule,
    /// First moment it can be used.
    pub valid_from: DateTime<Utc>,
    /// Moment it stops being usable.
    pub valid_until: DateTime<Utc>,
    /// Most bookings that may use it; `None`: no limit.
    pub max_uses: Option<u32>,
}

/// A code applied to a booking, as the booking's data keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoApplied {
    /// The code.
    pub code: String,
    /// What it took off the base fare.
    pub discount: Money,
}

/// Why a code cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoError {
    /// No such code.
    #[error("no promo code {0:?}")]
    Unknown(String),
    /// Outside its validity window.
    #[error("promo code {code} is valid from {from} until {until}")]
    NotValidNow {
        /// The code.
        code: String,
        /// Window start.
        from: DateTime<Utc>,
        /// Window end.
        until: DateTime<Utc>,
    },
    /// Its use limit is reached.
    #[error("promo code {0} has been used up")]
    UsedUp(String),
    /// This booking's use was released (it compensated).
    #[error("this booking's use of promo code {0} was released")]
    Released(String),
    /// The code does not price against this fare.
    #[error("promo code {code}: {source}")]
    Pricing {
        /// The code.
        code: String,
        /// Why.
        source: PricingError,
    },
    /// A bad definition.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed (retryable).
    #[error("promo store: {0}")]
    Store(String),
}

impl From<sled::Error> for PromoError {
    fn from(e: sled::Error) -> Self {
        PromoError::Store(e.to_string())
    }
}

impl PromoError {
    /// True when trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PromoError::Store(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UseState {
    Applied,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Use {
    v: u32,
    code: String,
    state: UseState,
}

/// The normal form of a code: trimmed, upper case.
pub fn normal_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// Codes (tree `promo_codes`) and uses (`promo_uses`: `{code}/{key}`, and
/// `promo_use_keys`: key -> code).
pub struct PromoStore {
    db: sled::Db,
    codes: sled::Tree,
    uses: sled::Tree,
    keys: sled::Tree,
    lock: Mutex<()>,
}

impl std::fmt::Debug for PromoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromoStore").finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, PromoError> {
    serde_json::from_slice(b).map_err(|e| PromoError::Store(format!("corrupt promo record: {e}")))
}

fn encode<T: Serialize>(t: &T) -> Result<Vec<u8>, PromoError> {
    serde_json::to_vec(t).map_err(|e| PromoError::Store(e.to_string()))
}

impl PromoStore {
    /// Opens the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, PromoError> {
        Ok(PromoStore {
            db: db.clone(),
            codes: db.open_tree("promo_codes")?,
            uses: db.open_tree("promo_uses")?,
            keys: db.open_tree("promo_use_keys")?,
            lock: Mutex::new(()),
        })
    }

    async fn durable(&self) -> Result<(), PromoError> {
        saga_engine::store::flush_sled(&self.db).await?;
        Ok(())
    }

    /// Creates or replaces `code` (uses so far are kept). Durable on return.
    pub async fn put(&self, code: PromoCode) -> Result<PromoCode, PromoError> {
        let mut code = code;
        code.code = normal_code(&code.code);
        if code.code.is_empty()
            || code.code.len() > MAX_CODE_CHARS
            || !code
                .code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PromoError::Invalid(format!(
                "a code is 1 to {MAX_CODE_CHARS} letters, digits, '-' or '_'"
            )));
        }
        if code.valid_until <= code.valid_from {
            return Err(PromoError::Invalid(
                "valid_until must be after valid_from".into(),
            ));
        }
        match &code.rule {
            PromoRule::Percent { percent } if !(1..=100).contains(percent) => {
                return Err(PromoError::Invalid("percent must be from 1 to 100".into()))
            }
            PromoRule::Fixed { amount } if amount.minor <= 0 => {
                return Err(PromoError::Invalid("amount must be positive".into()))
            }
            _ => {}
        }
        self.codes.insert(code.code.as_bytes(), encode(&code)?)?;
        self.durable().await?;
        Ok(code)
    }

    /// The code named `code` (any case).
    pub fn get(&self, code: &str) -> Result<Option<PromoCode>, PromoError> {
        match self.codes.get(normal_code(code).as_bytes())? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Every code, by name.
    pub fn all(&self) -> Result<Vec<PromoCode>, PromoError> {
        self.codes.iter().map(|kv| decode(&kv?.1)).collect()
    }

    /// Bookings using `code` now (applied uses).
    pub fn uses(&self, code: &str) -> Result<u32, PromoError> {
        let prefix = format!("{}/", normal_code(code));
        let mut n = 0;
        for kv in self.uses.scan_prefix(prefix.as_bytes()) {
            if decode::<Use>(&kv?.1)?.state == UseState::Applied {
                n += 1;
            }
        }
        Ok(n)
    }

    /// What `code` takes off `price` at `now`, if it is usable then (a
    /// code used up is refused here too, though only [`PromoStore::take`]
    /// decides under the lock).
    pub fn quote(
        &self,
        code: &str,
        price: &PriceBreakdown,
        now: DateTime<Utc>,
    ) -> Result<PromoApplied, PromoError> {
        let c = self
            .get(code)?
            .ok_or_else(|| PromoError::Unknown(normal_code(code)))?;
        Self::usable(&c, now)?;
        if let Some(max) = c.max_uses {
            if self.uses(&c.code)? >= max {
                return Err(PromoError::UsedUp(c.code));
            }
        }
        let discount = promo_discount(price, &c.rule).map_err(|source| PromoError::Pricing {
            code: c.code.clone(),
            source,
        })?;
        Ok(PromoApplied {
            code: c.code,
            discount,
        })
    }

    fn usable(c: &PromoCode, now: DateTime<Utc>) -> Result<(), PromoError> {
        if now < c.valid_from || now >= c.valid_until {
            return Err(PromoError::NotValidNow {
                code: c.code.clone(),
                from: c.valid_from,
                until: c.valid_until,
            });
        }
        Ok(())
    }

    /// Takes one use of `code` under `key`, once: a repeat with the same
    /// key succeeds without a second use; a released key is refused.
    /// Refused when the code is unknown, outside its window at `now`, or
    /// used up. Durable on return.
    pub async fn take(&self, key: &str, code: &str, now: DateTime<Utc>) -> Result<(), PromoError> {
        {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let code = normal_code(code);
            if let Some(b) = self.keys.get(key.as_bytes())? {
                let held = String::from_utf8_lossy(&b).into_owned();
                let u: Option<Use> = match self.uses.get(format!("{held}/{key}").as_bytes())? {
                    Some(b) => Some(decode(&b)?),
                    None => None,
                };
                match u {
                    Some(u) if u.state == UseState::Applied => return Ok(()),
                    Some(_) => return Err(PromoError::Released(held)),
                    None => {} // the key was noted, its use never written: decide again
                }
            }
            let c = self
                .get(&code)?
                .ok_or_else(|| PromoError::Unknown(code.clone()))?;
            Self::usable(&c, now)?;
            if let Some(max) = c.max_uses {
                if self.uses(&c.code)? >= max {
                    return Err(PromoError::UsedUp(c.code));
                }
            }
            self.keys.insert(key.as_bytes(), c.code.as_bytes())?;
            let u = Use {
                v: 1,
                code: c.code.clone(),
                state: UseState::Applied,
            };
            self.uses
                .insert(format!("{}/{key}", c.code).as_bytes(), encode(&u)?)?;
        }
        self.durable().await
    }

    /// Releases the use under `key` (the booking compensated); without
    /// one, leaves a tombstone so that a late [`PromoStore::take`] with the
    /// key is refused. Durable on return.
    pub async fn release(&self, key: &str, code: &str) -> Result<(), PromoError> {
        {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let code = match self.keys.get(key.as_bytes())? {
                Some(b) => String::from_utf8_lossy(&b).into_owned(),
                None => normal_code(code),
            };
            self.keys.insert(key.as_bytes(), code.as_bytes())?;
            let u = Use {
                v: 1,
                code: code.clone(),
                state: UseState::Released,
            };
            self.uses
                .insert(format!("{code}/{key}").as_bytes(), encode(&u)?)?;
        }
        self.durable().await
    }

    /// True when the use under `key` is applied (consistency checks).
    pub fn applied(&self, key: &str) -> Result<bool, PromoError> {
        let Some(b) = self.keys.get(key.as_bytes())? else {
            return Ok(false);
        };
        let code = String::from_utf8_lossy(&b).into_owned();
        Ok(match self.uses.get(format!("{code}/{key}").as_bytes())? {
            Some(b) => decode::<Use>(&b)?.state == UseState::Applied,
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Currency;

    fn code(max: Option<u32>) -> PromoCode {
        let now = Utc::now();
        PromoCode {
            v: 1,
            code: "spring10".into(),
            rule: PromoRule::Percent { percent: 10 },
            valid_from: now - chrono::Duration::days(1),
            valid_until: now + chrono::Duration::days(1),
            max_uses: max,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_limit_holds_under_a_race_and_a_release_frees_a_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = std::sync::Arc::new(PromoStore::open(&db).unwrap());
        s.put(code(Some(5))).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.take(&format!("k{i}"), "SPRING10", Utc::now()).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e, PromoError::UsedUp("SPRING10".into())),
            }
        }
        assert_eq!((ok, s.uses("spring10").unwrap()), (5, 5));
        let winner = (0..50)
            .find(|i| s.applied(&format!("k{i}")).unwrap())
            .unwrap();
        let key = format!("k{winner}");
        s.take(&key, "SPRING10", Utc::now()).await.unwrap();
        assert_eq!(
            s.uses("SPRING10").unwrap(),
            5,
            "a repeat takes no second use"
        );
        s.release(&key, "SPRING10").await.unwrap();
        assert_eq!(s.uses("SPRING10").unwrap(), 4);
        assert_eq!(
            s.take(&key, "SPRING10", Utc::now()).await,
            Err(PromoError::Released("SPRING10".into()))
        );
        s.release("late", "SPRING10").await.unwrap();
        assert!(
            s.take("late", "SPRING10", Utc::now()).await.is_err(),
            "a tombstone refuses a late take"
        );
        s.take("new", "SPRING10", Utc::now()).await.unwrap();
        assert_eq!(s.uses("SPRING10").unwrap(), 5);
    }

    #[tokio::test]
    async fn a_code_outside_its_window_or_badly_defined_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = PromoStore::open(&db).unwrap();
        let mut c = code(None);
        c.valid_from = Utc::now() + chrono::Duration::days(1);
        c.valid_until = c.valid_from + chrono::Duration::days(1);
        s.put(c).await.unwrap();
        assert!(matches!(
            s.take("k", "spring10", Utc::now()).await,
            Err(PromoError::NotValidNow { .. })
        ));
        let mut bad = code(None);
        bad.rule = PromoRule::Percent { percent: 0 };
        assert!(matches!(s.put(bad).await, Err(PromoError::Invalid(_))));
        let p = crate::pricing::price(&Money::new(10_000, Currency::usd()), 1).unwrap();
        assert_eq!(
            s.quote("nope", &p, Utc::now()),
            Err(PromoError::Unknown("NOPE".into()))
        );
    }
}
