//! "My trips": the bookings of each account, newest first, paged with an
//! opaque cursor.
//!
//! Tree `account_trips` holds `{account}/{u64::MAX - started_ms:016x}/{key}`
//! (so a forward scan is newest first) for the engine's idempotency key of
//! each booking; tree `trip_owners` maps the key back to its account. Both
//! are written, and flushed, *before* the booking saga starts, so a crash
//! can never leave an account's booking out of its trips; a start that is
//! refused removes them again, and a key whose saga never started is
//! skipped when listed. A replayed key keeps its first owner.

use super::AccountError;
use serde::{Deserialize, Serialize};

/// Most trips in one page.
pub const MAX_PAGE: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    v: u32,
    account_id: String,
    index_key: String,
}

/// The trip index.
pub struct TripIndex {
    by_account: sled::Tree,
    owners: sled::Tree,
}

/// One page of an account's trips: engine keys, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripPage {
    /// The bookings' engine idempotency keys.
    pub keys: Vec<String>,
    /// The cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this listing returned")]
pub struct BadCursor;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl TripIndex {
    pub(super) fn open(db: &sled::Db) -> Result<Self, AccountError> {
        Ok(TripIndex {
            by_account: db.open_tree("account_trips")?,
            owners: db.open_tree("trip_owners")?,
        })
    }

    /// Records the booking under engine `key` as `account_id`'s, started
    /// at `at_ms`. False when the key already had an owner (a replay): it
    /// is left as it was. The caller flushes before starting the saga.
    pub fn record(&self, account_id: &str, key: &str, at_ms: u64) -> Result<bool, AccountError> {
        let index_key = format!("{account_id}/{:016x}/{key}", u64::MAX - at_ms);
        let owner = Owner {
            v: 1,
            account_id: account_id.to_string(),
            index_key: index_key.clone(),
        };
        let bytes = serde_json::to_vec(&owner).map_err(|e| AccountError::Store(e.to_string()))?;
        let claimed =
            self.owners
                .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(bytes))?;
        if claimed.is_err() {
            return Ok(false);
        }
        self.by_account.insert(index_key.as_bytes(), &[])?;
        Ok(true)
    }

    /// Forgets the booking under `key` (its start was refused).
    pub fn forget(&self, key: &str) -> Result<(), AccountError> {
        if let Some(b) = self.owners.remove(key.as_bytes())? {
            if let Ok(o) = serde_json::from_slice::<Owner>(&b) {
                self.by_account.remove(o.index_key.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The account owning the booking under engine `key`.
    pub fn owner(&self, key: &str) -> Result<Option<String>, AccountError> {
        Ok(self
            .owners
            .get(key.as_bytes())?
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
            .map(|o| o.account_id))
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) of `account_id`'s bookings after
    /// `cursor`, newest first.
    pub fn page(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Result<TripPage, BadCursor>, AccountError> {
        let prefix = format!("{account_id}/");
        let limit = limit.clamp(1, MAX_PAGE);
        let start: Vec<u8> = match cursor {
            None => prefix.as_bytes().to_vec(),
            Some(c) => match unhex(c) {
                Some(k) if k.starts_with(prefix.as_bytes()) => {
                    let mut k = k;
                    k.push(0); // strictly after the cursor
                    k
                }
                _ => return Ok(Err(BadCursor)),
            },
        };
        let mut keys = Vec::new();
        let mut last = None;
        for kv in self.by_account.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let text = String::from_utf8_lossy(&k).into_owned();
            // {account}/{16 hex}/{key}
            if let Some(engine_key) = text.get(prefix.len() + 17..) {
                keys.push(engine_key.to_string());
            }
            last = Some(k.to_vec());
            if keys.len() == limit {
                break;
            }
        }
        let next_cursor = (keys.len() == limit)
            .then(|| last.map(|k| hex(&k)))
            .flatten();
        Ok(Ok(TripPage { keys, next_cursor }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_newest_first_and_round_trip_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let t = TripIndex::open(&db).unwrap();
        for i in 0..7u64 {
            assert!(t.record("AC1", &format!("k{i}"), 1_000 + i).unwrap());
        }
        assert!(t.record("AC2", "other", 5_000).unwrap());
        assert!(
            !t.record("AC2", "k3", 9_000).unwrap(),
            "a replay keeps its owner"
        );
        assert_eq!(t.owner("k3").unwrap().as_deref(), Some("AC1"));
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = t.page("AC1", cursor.as_deref(), 3).unwrap().unwrap();
            seen.extend(p.keys);
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["k6", "k5", "k4", "k3", "k2", "k1", "k0"]);
        assert_eq!(t.page("AC1", Some("zz"), 3).unwrap(), Err(BadCursor));
        let foreign = t
            .page("AC2", None, 1)
            .unwrap()
            .unwrap()
            .next_cursor
            .unwrap();
        assert_eq!(t.page("AC1", Some(&foreign), 3).unwrap(), Err(BadCursor));
        t.forget("k0").unwrap();
        assert_eq!(t.owner("k0").unwrap(), None);
        assert_eq!(t.page("AC1", None, 50).unwrap().unwrap().keys.len(), 6);
    }
}
