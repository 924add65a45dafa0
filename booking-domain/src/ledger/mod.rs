//! The keyed ledger every local participant stores its effects in: one
//! record per idempotency key, projections (counters per bucket, listings
//! per owner) kept on disk beside the records, and opened without reading
//! the records.
//!
//! A participant decides, under the ledger's lock, what the record under a
//! key becomes (an effect, a tombstone, a remembered refusal); the ledger
//! writes it and moves the projections by the difference between the old
//! record's contribution and the new one's. Every write is a plain sled
//! insert of one key, never a batch or a transaction: those take sled's
//! process-wide concurrency-control lock, which waits for every flush in
//! progress, and cost several times the throughput.
//!
//! # Crash safety
//!
//! A mutation that moves counters writes, in this order: the *tail* (its
//! sequence number, key and counter deltas, in the meta tree), the listing
//! index entry when the key is new, the record (stamped with the sequence
//! number), then each counter bucket (stamped with the sequence number of
//! the last mutation applied to it). Mutations are serialised by the lock,
//! sequence numbers come from sled's monotonic id generator, and sled
//! recovers a prefix of its log; so after a crash at most the last mutation
//! is half done, and the tail names it. Open reads the tail and that one
//! record: if the record carries the tail's number (or a later one) the
//! mutation happened, and every bucket still stamped below it gets the
//! delta (roll forward); if not, no bucket was written either. A listing
//! entry written before a record that never made it points at a key whose
//! record is missing or was created by another write (`origin`), and is
//! skipped when read.
//!
//! Databases written before the ledger have records but no projections:
//! the first open rebuilds them with one scan and then marks the format, so
//! later opens do not scan.

mod cover;
mod plumbing;

pub(crate) use cover::Cover;
pub(crate) use plumbing::{GroupFlush, Registry};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard};

/// Most items one page of a listing returns; a larger limit is clamped.
pub const MAX_PAGE_LIMIT: usize = 1_000;

/// Two counters of one projection bucket (seats held and sold; miles
/// balance and qualifying miles).
pub(crate) type Counter = [i64; 2];

const TAIL_KEY: &[u8] = b"ledger/tail";
const FORMAT_KEY: &[u8] = b"ledger/format";
/// Marks a database whose projections are kept by the ledger.
const PROJECTIONS_FORMAT: &[u8] = b"1";

/// What a ledger stores under a key, and what it contributes to the
/// projections.
pub(crate) trait LedgerEntry: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// Buckets this record adds to, with what it adds.
    fn contributions(&self) -> Vec<(Vec<u8>, Counter)> {
        Vec::new()
    }

    /// The listing this record belongs to (a customer, an account), if any.
    /// A key never changes owner.
    fn owner(&self) -> Option<Vec<u8>> {
        None
    }

    /// Orders a listing when it is rebuilt from records written before the
    /// ledger (creation time in microseconds; ties fall back to key order).
    fn listed_at(&self) -> i64 {
        0
    }
}

/// A record as stored, with the ledger's numbers.
#[derive(Debug, Clone)]
pub(crate) struct Versioned<E> {
    /// The write that stored it (0: written before the ledger).
    pub seq: u64,
    /// The write that created its key (0: written before the ledger).
    pub origin: u64,
    /// The record.
    pub entry: E,
}

/// Why a ledger operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LedgerError {
    /// sled failed or holds a value that cannot be read.
    Storage(String),
    /// A page cursor that this ledger did not hand out.
    BadCursor,
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Storage(m) => f.write_str(m),
            LedgerError::BadCursor => f.write_str("invalid page cursor"),
        }
    }
}

impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

impl From<String> for LedgerError {
    fn from(e: String) -> Self {
        LedgerError::Storage(e)
    }
}

/// One page of a listing and the cursor of the next (`None`: the last).
pub(crate) type Page<T> = (Vec<T>, Option<String>);

/// The sled trees of one ledger.
pub(crate) struct Trees {
    /// One record per idempotency key.
    pub entries: &'static str,
    /// Counter buckets.
    pub buckets: &'static str,
    /// Listings: owner and creating write -> key.
    pub index: &'static str,
}

/// The last mutation that moved counters. Bucket keys are hex, which JSON
/// keeps shorter than an array of numbers.
#[derive(Serialize, Deserialize)]
struct Tail {
    seq: u64,
    key: String,
    deltas: Vec<(String, Counter)>,
}

#[derive(Serialize, Deserialize, Default, Clone, Copy)]
struct Bucket {
    seq: u64,
    counter: Counter,
}

/// A keyed ledger of `E` records; `S` is the participant's own state kept
/// under the same lock (or `()`).
pub(crate) struct Ledger<E, S = ()> {
    db: sled::Db,
    entries: sled::Tree,
    buckets: sled::Tree,
    index: sled::Tree,
    meta: sled::Tree,
    flusher: GroupFlush,
    /// Serialises mutations, so a check-then-write is never interleaved; no
    /// `.await` happens while it is held.
    state: Mutex<S>,
    read_at_open: u64,
    _entry: PhantomData<fn() -> E>,
}

fn add(into: &mut Counter, d: &Counter) {
    into[0] = into[0].saturating_add(d[0]);
    into[1] = into[1].saturating_add(d[1]);
}

fn index_prefix(owner: &[u8]) -> Vec<u8> {
    let len = u16::try_from(owner.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(owner.len() + 10);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(owner);
    k
}

fn index_key(owner: &[u8], seq: u64) -> Vec<u8> {
    let mut k = index_prefix(owner);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 || s.len() > 4096 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl<E: LedgerEntry, S> Ledger<E, S> {
    /// Opens the ledger on `db`'s `trees`, keeping its tail and format
    /// marker in `meta`. Finishes a mutation a crash left half done, and
    /// rebuilds the projections of a database written before the ledger.
    pub(crate) fn open(
        db: &sled::Db,
        meta: sled::Tree,
        trees: Trees,
        state: S,
    ) -> Result<Self, LedgerError> {
        let mut ledger = Ledger {
            db: db.clone(),
            entries: db.open_tree(trees.entries)?,
            buckets: db.open_tree(trees.buckets)?,
            index: db.open_tree(trees.index)?,
            meta,
            flusher: GroupFlush::new(db),
            state: Mutex::new(state),
            read_at_open: 0,
            _entry: PhantomData,
        };
        ledger.read_at_open = if ledger.meta.get(FORMAT_KEY)?.is_some() {
            ledger.recover()?
        } else {
            ledger.rebuild()?
        };
        Ok(ledger)
    }

    /// Records decoded while opening: at most one (the tail's), or every
    /// record once when a database written before the ledger is upgraded.
    pub(crate) fn read_at_open(&self) -> u64 {
        self.read_at_open
    }

    /// Rolls the tail's mutation forward if its record was written.
    fn recover(&self) -> Result<u64, LedgerError> {
        let Some(raw) = self.meta.get(TAIL_KEY)? else {
            return Ok(0);
        };
        let tail: Tail = crate::envelope::decode(&raw)?;
        let written = match self.get(&tail.key)? {
            Some(v) => v.seq >= tail.seq,
            None => false,
        };
        if written {
            let mut repaired = 0;
            for (bucket, delta) in &tail.deltas {
                let bucket = unhex(bucket)
                    .ok_or_else(|| LedgerError::Storage("corrupt ledger tail".into()))?;
                if self.apply(&bucket, delta, tail.seq)? {
                    repaired += 1;
                }
            }
            if repaired > 0 {
                tracing::info!(
                    key = %tail.key,
                    buckets = repaired,
                    "ledger: finished the projections of a write a crash interrupted"
                );
            }
        }
        Ok(1)
    }

    /// Builds the projections from every record (a database written before
    /// the ledger), then marks the format. A crash midway leaves no mark,
    /// and the next open starts over.
    fn rebuild(&self) -> Result<u64, LedgerError> {
        self.buckets.clear()?;
        self.index.clear()?;
        let mut sums: HashMap<Vec<u8>, Counter> = HashMap::new();
        let mut listed: Vec<(i64, String, Vec<u8>)> = Vec::new();
        let mut read = 0;
        for item in self.entries.iter() {
            let (key, raw) = item?;
            read += 1;
            let (_, _, entry) = crate::envelope::decode_versioned::<E>(&raw)?;
            for (bucket, c) in entry.contributions() {
                add(sums.entry(bucket).or_default(), &c);
            }
            if let Some(owner) = entry.owner() {
                let key = String::from_utf8_lossy(&key).into_owned();
                listed.push((entry.listed_at(), key, owner));
            }
        }
        for (bucket, counter) in sums {
            let value = crate::envelope::encode(&Bucket { seq: 0, counter })?;
            self.buckets.insert(bucket, value)?;
        }
        listed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, key, owner) in listed {
            let seq = self.next_seq()?;
            self.index.insert(index_key(&owner, seq), key.as_bytes())?;
        }
        self.meta.insert(FORMAT_KEY, PROJECTIONS_FORMAT)?;
        if read > 0 {
            tracing::info!(records = read, "ledger: projections built from the records");
        }
        Ok(read)
    }

    /// Adds `delta` to `bucket` unless a write numbered `seq` or later was
    /// applied to it already. True when it wrote.
    fn apply(&self, bucket: &[u8], delta: &Counter, seq: u64) -> Result<bool, LedgerError> {
        let mut b = self.bucket(bucket)?;
        if b.seq >= seq {
            return Ok(false);
        }
        add(&mut b.counter, delta);
        b.seq = seq;
        self.buckets.insert(bucket, crate::envelope::encode(&b)?)?;
        Ok(true)
    }

    /// A number above every one handed out before, across restarts and
    /// crashes (sled's id generator), and never 0 (records written before
    /// the ledger).
    fn next_seq(&self) -> Result<u64, LedgerError> {
        Ok(self.db.generate_id()?.saturating_add(1))
    }

    fn bucket(&self, bucket: &[u8]) -> Result<Bucket, LedgerError> {
        Ok(match self.buckets.get(bucket)? {
            Some(raw) => crate::envelope::decode(&raw)?,
            None => Bucket::default(),
        })
    }

    /// Takes the lock that serialises mutations (poison is ignored: every
    /// write is a single insert, so a panic leaves nothing half applied).
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record under `key`, with its numbers.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Versioned<E>>, LedgerError> {
        match self.entries.get(key.as_bytes())? {
            Some(raw) => {
                let (seq, origin, entry) = crate::envelope::decode_versioned(&raw)?;
                Ok(Some(Versioned { seq, origin, entry }))
            }
            None => Ok(None),
        }
    }

    /// The record under `key`.
    pub(crate) fn entry(&self, key: &str) -> Result<Option<E>, LedgerError> {
        Ok(self.get(key)?.map(|v| v.entry))
    }

    /// The counters of `bucket` (zero when nothing was ever added).
    pub(crate) fn counter(&self, bucket: &[u8]) -> Result<Counter, LedgerError> {
        Ok(self.bucket(bucket)?.counter)
    }

    /// Stores `new` under `key` in place of `old` (what [`get`](Self::get)
    /// returned under the same lock) and moves the projections. The guard
    /// proves the caller holds the lock.
    pub(crate) fn put(
        &self,
        _locked: &MutexGuard<'_, S>,
        key: &str,
        old: Option<&Versioned<E>>,
        new: &E,
    ) -> Result<(), LedgerError> {
        let seq = self.next_seq()?;
        let mut diff: BTreeMap<Vec<u8>, Counter> = BTreeMap::new();
        if let Some(old) = old {
            for (bucket, c) in old.entry.contributions() {
                add(diff.entry(bucket).or_default(), &[-c[0], -c[1]]);
            }
        }
        for (bucket, c) in new.contributions() {
            add(diff.entry(bucket).or_default(), &c);
        }
        let deltas: Vec<(Vec<u8>, Counter)> =
            diff.into_iter().filter(|(_, c)| *c != [0, 0]).collect();
        if !deltas.is_empty() {
            let tail = Tail {
                seq,
                key: key.to_string(),
                deltas: deltas.iter().map(|(b, c)| (hex(b), *c)).collect(),
            };
            self.meta
                .insert(TAIL_KEY, crate::envelope::encode(&tail)?)?;
        }
        let listed_before = old.is_some_and(|o| o.entry.owner().is_some());
        let origin = match (old, new.owner()) {
            (Some(o), _) if listed_before => o.origin,
            (_, Some(owner)) => {
                self.index.insert(index_key(&owner, seq), key.as_bytes())?;
                seq
            }
            (Some(o), None) => o.origin,
            (None, None) => seq,
        };
        self.entries.insert(
            key.as_bytes(),
            crate::envelope::encode_versioned(seq, origin, new)?,
        )?;
        #[cfg(test)]
        if tests::crash_after_entry() {
            return Ok(());
        }
        for (bucket, delta) in &deltas {
            self.apply(bucket, delta, seq)?;
        }
        Ok(())
    }

    /// The database the ledger writes to.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Returns once every write committed so far is durable.
    pub(crate) async fn durable(&self) -> Result<(), LedgerError> {
        self.flusher.durable().await.map_err(LedgerError::Storage)
    }

    /// Records in key order, `limit` at a time (clamped to
    /// `1..=MAX_PAGE_LIMIT`), starting after `cursor`. `keep` picks the
    /// records listed.
    pub(crate) fn page<T>(
        &self,
        cursor: Option<&str>,
        limit: usize,
        keep: impl Fn(E) -> Option<T>,
    ) -> Result<Page<T>, LedgerError> {
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        let iter = match cursor {
            None => self.entries.iter(),
            Some(c) => {
                let after = unhex(c).ok_or(LedgerError::BadCursor)?;
                self.entries
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
        };
        let mut out = Vec::new();
        let mut last = None;
        for item in iter {
            let (key, raw) = item?;
            let (_, _, entry) = crate::envelope::decode_versioned::<E>(&raw)?;
            if let Some(t) = keep(entry) {
                if out.len() == limit {
                    return Ok((out, last.map(|k: sled::IVec| hex(&k))));
                }
                out.push(t);
                last = Some(key);
            }
        }
        Ok((out, None))
    }

    /// The records listed under `owner`, in the order they were created,
    /// `limit` at a time (clamped to `1..=MAX_PAGE_LIMIT`), starting after
    /// `cursor`. Records created while a listing is paged come after the
    /// pages already read, so no record appears twice.
    pub(crate) fn owner_page(
        &self,
        owner: &[u8],
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<E>, LedgerError> {
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        let prefix = index_prefix(owner);
        let iter = match cursor {
            None => self.index.scan_prefix(&prefix),
            Some(c) => {
                let after: u64 = c.parse().map_err(|_| LedgerError::BadCursor)?;
                let start = index_key(owner, after.checked_add(1).ok_or(LedgerError::BadCursor)?);
                let mut end = prefix.clone();
                end.extend_from_slice(&[0xff; 9]);
                self.index.range(start..end)
            }
        };
        let mut out = Vec::new();
        let mut last = None;
        for item in iter {
            let (ikey, key) = item?;
            let Some(seq_bytes) = ikey
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            else {
                continue;
            };
            let seq = u64::from_be_bytes(seq_bytes);
            let key = String::from_utf8_lossy(&key).into_owned();
            // Skip what a crash left pointing at a record that was never
            // written (or was created by a later write).
            let Some(v) = self.get(&key)? else { continue };
            if !(v.origin == seq || v.origin == 0) || v.entry.owner().as_deref() != Some(owner) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, last.map(|s: u64| s.to_string())));
            }
            out.push(v.entry);
            last = Some(seq);
        }
        Ok((out, None))
    }

    /// Every record listed under `owner`, in the order they were created.
    pub(crate) fn owned(&self, owner: &[u8]) -> Result<Vec<E>, LedgerError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (items, next) = self.owner_page(owner, cursor.as_deref(), MAX_PAGE_LIMIT)?;
            out.extend(items);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests;
