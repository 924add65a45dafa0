//! The sled backend's query indexes: sagas by creation time, by status,
//! by search attribute, and a counter per status, each changed in the
//! same atomic sled batch as the record it describes.
//!
//! Keys (beside those of `layout`):
//!
//! - `qc/{created ms BE}{id}` -> `{status}\0{definition}`: every saga;
//! - `qs/{status}\0{created ms BE}{id}` -> `{definition}`: sagas by status;
//! - `qa/{name len u16 BE}{name}{value len u32 BE}{value}{created ms BE}{id}`:
//!   search attributes (written at create and at every status change);
//! - `qn/{status}` -> count (u64 BE): the number of `s/` records in that
//!   status, keyed by the status's name, so a new status needs no code;
//! - `qm/built`: the indexes cover every record (a store written before
//!   them is indexed once, at open).
//!
//! Only a write that creates a record, deletes one or changes its status
//! touches them; the other updates (a step recorded, the saga still in the
//! same status) stay one plain `insert`. Those writes go through one mutex
//! that applies them as a sled `Batch` (atomic across keys, recovered whole
//! or not at all after a crash) holding the record and the counters'
//! absolute values. The mutex makes the order of batches in sled's log the
//! order in which their counts were computed, and sled recovers a prefix
//! of its log: after a crash the counters are exactly those of the records
//! that survived.

use super::layout::{corrupt, io, key, Value};
use crate::store::query::{bump, PageCursor, SagaFilter, SagaPage, StatusCounts};
use crate::store::{SagaRecord, StoreError};
use crate::SagaId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

const CREATED: &[u8] = b"qc/";
const STATUS: &[u8] = b"qs/";
const ATTRIBUTE: &[u8] = b"qa/";
const COUNT: &[u8] = b"qn/";
const BUILT: &[u8] = b"qm/built";
/// Records indexed per batch when indexing an older store at open.
const BACKFILL_BATCH: usize = 1000;

/// The counters' in-memory copy (what the next batch writes).
pub(super) struct QueryIndex {
    counts: Mutex<StatusCounts>,
}

fn time_key(prefix: &[u8], at_ms: u64, id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8 + id.as_str().len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn status_prefix(status: &str) -> Vec<u8> {
    let mut k = STATUS.to_vec();
    k.extend_from_slice(status.as_bytes());
    k.push(0);
    k
}

fn attribute_prefix(name: &str, value: &str) -> Vec<u8> {
    let mut k = ATTRIBUTE.to_vec();
    k.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k.extend_from_slice(&(value.len().min(u32::MAX as usize) as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

fn entry_value(status: &str, definition: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(status.len() + 1 + definition.len());
    v.extend_from_slice(status.as_bytes());
    v.push(0);
    v.extend_from_slice(definition.as_bytes());
    v
}

/// `(status, definition)` of a `qc/` value.
fn parse_entry(v: &[u8]) -> Option<(&str, &str)> {
    let at = v.iter().position(|b| *b == 0)?;
    Some((
        std::str::from_utf8(&v[..at]).ok()?,
        std::str::from_utf8(&v[at + 1..]).ok()?,
    ))
}

/// `(created, id)` of a key `{prefix}{created BE}{id}`.
fn parse_tail(k: &[u8], prefix_len: usize) -> Option<(u64, SagaId)> {
    let at = u64::from_be_bytes(k.get(prefix_len..prefix_len + 8)?.try_into().ok()?);
    let id = std::str::from_utf8(k.get(prefix_len + 8..)?).ok()?;
    Some((at, SagaId::from_raw(id.to_string())))
}

/// Every index entry of `r` in status `status`, as (key, value).
fn entries(r: &SagaRecord, status: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![
        (
            time_key(CREATED, r.created_at_ms, &r.id),
            entry_value(status, &r.definition),
        ),
        (
            time_key(&status_prefix(status), r.created_at_ms, &r.id),
            r.definition.as_bytes().to_vec(),
        ),
    ];
    for (n, v) in &r.attributes {
        out.push((
            time_key(&attribute_prefix(n, v), r.created_at_ms, &r.id),
            Vec::new(),
        ));
    }
    out
}

/// A readable form of an index key, for the check's messages.
fn describe(k: &[u8]) -> String {
    let tail = |rest: &[u8]| match parse_tail(rest, 0) {
        Some((at, id)) => format!("{at}/{id}"),
        None => rest.escape_ascii().to_string(),
    };
    if let Some(rest) = k.strip_prefix(CREATED) {
        return format!("qc/{}", tail(rest));
    }
    if let Some(rest) = k.strip_prefix(STATUS) {
        if let Some(z) = rest.iter().position(|b| *b == 0) {
            return format!("qs/{}/{}", rest[..z].escape_ascii(), tail(&rest[z + 1..]));
        }
    }
    if let Some(rest) = k.strip_prefix(ATTRIBUTE) {
        let parsed = (|| {
            let nl = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let name = rest.get(2..2 + nl)?;
            let at = 2 + nl;
            let vl = u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
            let value = rest.get(at + 4..at + 4 + vl)?;
            Some(format!(
                "qa/{}={}/{}",
                name.escape_ascii(),
                value.escape_ascii(),
                tail(&rest[at + 4 + vl..])
            ))
        })();
        if let Some(p) = parsed {
            return p;
        }
    }
    k.escape_ascii().to_string()
}

fn count_key(status: &str) -> Vec<u8> {
    key(COUNT, status)
}

impl QueryIndex {
    /// Loads the counters, first indexing every record if the store was
    /// written before these indexes existed.
    pub(super) fn open(tree: &sled::Tree) -> Result<QueryIndex, StoreError> {
        if !tree.contains_key(BUILT).map_err(io)? {
            backfill(tree)?;
        }
        let mut counts = StatusCounts::new();
        for kv in tree.scan_prefix(COUNT) {
            let (k, v) = kv.map_err(io)?;
            let n = <[u8; 8]>::try_from(&v[..])
                .map_err(|_| corrupt(&k, "bad status count"))
                .map(u64::from_be_bytes)?;
            let status = String::from_utf8_lossy(&k[COUNT.len()..]).into_owned();
            if n > 0 {
                counts.insert(status, n);
            }
        }
        Ok(QueryIndex {
            counts: Mutex::new(counts),
        })
    }

    fn lock(&self) -> MutexGuard<'_, StatusCounts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sagas by status name.
    pub(super) fn counts(&self) -> StatusCounts {
        self.lock().clone()
    }

    /// Applies `batch` (the record's write and its index changes) with the
    /// counters moved by `deltas`, atomically, under the counters' lock.
    fn apply(
        &self,
        tree: &sled::Tree,
        record_write: (&[u8], Option<Vec<u8>>),
        mut index: sled::Batch,
        deltas: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        let mut counts = self.lock();
        let mut next = counts.clone();
        for (status, d) in deltas {
            bump(&mut next, status, *d);
            let n = next.get(*status).copied().unwrap_or(0);
            index.insert(count_key(status), &n.to_be_bytes()[..]);
        }
        let (k, v) = record_write;
        if crate::sabotage::active(crate::sabotage::INDEX_OUTSIDE_BATCH) {
            // The defect: the record's write goes alone and is flushed,
            // its index entries and counts after it, in a write of their
            // own (a kill in between leaves them behind the record).
            match v {
                Some(v) => tree.insert(k, v).map(drop),
                None => tree.remove(k).map(drop),
            }
            .and_then(|()| tree.flush().map(drop))
            .map_err(io)?;
        } else {
            match v {
                Some(v) => index.insert(k, v),
                None => index.remove(k),
            }
        }
        tree.apply_batch(index).map_err(io)?;
        *counts = next;
        Ok(())
    }

    /// Writes a new record's value with its index entries and count.
    pub(super) fn insert_new(
        &self,
        tree: &sled::Tree,
        rk: &[u8],
        value: Vec<u8>,
        r: &SagaRecord,
    ) -> Result<(), StoreError> {
        let status = r.status().as_str();
        let mut b = sled::Batch::default();
        for (k, v) in entries(r, status) {
            b.insert(k, v);
        }
        self.apply(tree, (rk, Some(value)), b, &[(status, 1)])
    }

    /// Replaces a record's value; if its status changed, moves its index
    /// entries and counts and re-indexes its attributes in the same batch,
    /// else writes the value alone.
    pub(super) fn replace(
        &self,
        tree: &sled::Tree,
        rk: &[u8],
        value: Vec<u8>,
        r: &SagaRecord,
    ) -> Result<(), StoreError> {
        let new = r.status().as_str();
        let old = self.stored_status(tree, r)?;
        if old.as_deref() == Some(new) {
            tree.insert(rk, value).map_err(io)?;
            return Ok(());
        }
        let mut b = sled::Batch::default();
        let mut deltas = vec![(new, 1)];
        if let Some(old) = &old {
            b.remove(time_key(&status_prefix(old), r.created_at_ms, &r.id));
            deltas.push((old.as_str(), -1));
        }
        for (k, v) in entries(r, new) {
            b.insert(k, v);
        }
        // Attributes are re-taken at a status change: drop the entries of
        // values the record no longer has.
        if let Some(bytes) = tree.get(rk).map_err(io)? {
            let before = Value::parse(rk, &bytes)?.record(rk)?;
            for (n, v) in &before.attributes {
                if r.attributes.get(n) != Some(v) {
                    b.remove(time_key(&attribute_prefix(n, v), r.created_at_ms, &r.id));
                }
            }
        }
        self.apply(tree, (rk, Some(value)), b, &deltas)
    }

    /// Deletes a record with its index entries and count; false if there
    /// was no such record.
    pub(super) fn remove(
        &self,
        tree: &sled::Tree,
        rk: &[u8],
        r: &SagaRecord,
    ) -> Result<bool, StoreError> {
        if !tree.contains_key(rk).map_err(io)? {
            return Ok(false);
        }
        let status = self
            .stored_status(tree, r)?
            .unwrap_or_else(|| r.status().as_str().to_string());
        let mut b = sled::Batch::default();
        for (k, _) in entries(r, &status) {
            b.remove(k);
        }
        self.apply(tree, (rk, None), b, &[(&status, -1)])?;
        Ok(true)
    }

    /// The status the index holds for `r`'s saga (that of its stored record).
    fn stored_status(
        &self,
        tree: &sled::Tree,
        r: &SagaRecord,
    ) -> Result<Option<String>, StoreError> {
        let ck = time_key(CREATED, r.created_at_ms, &r.id);
        match tree.get(&ck).map_err(io)? {
            None => Ok(None),
            Some(v) => parse_entry(&v)
                .map(|(s, _)| Some(s.to_string()))
                .ok_or_else(|| corrupt(&ck, "bad index entry")),
        }
    }

    /// One page of [`crate::Store::list_page`].
    pub(super) fn list_page(
        &self,
        tree: &sled::Tree,
        filter: &SagaFilter,
        cursor: Option<&PageCursor>,
        limit: usize,
    ) -> Result<SagaPage, StoreError> {
        let want = limit.saturating_add(1);
        let mut out = Vec::new();
        // The record of an index entry that passes the filter, read only
        // once the entry's own fields (status, definition) pass it.
        let take = |at: u64, id: SagaId, status: Option<&str>, def: &str| {
            let status_ok = status.is_none_or(|s| {
                filter.statuses.is_empty() || filter.statuses.iter().any(|f| f.as_str() == s)
            });
            if !status_ok || filter.definition.as_deref().is_some_and(|d| d != def) {
                return Ok::<_, StoreError>(None);
            }
            Ok(read_listed(tree, &id)?.filter(|r| r.created_at_ms == at && filter.matches(r)))
        };
        if let Some((n, v)) = &filter.attribute {
            let prefix = attribute_prefix(n, v);
            for kv in tree.range(bounds(&prefix, filter, cursor)).rev() {
                let (k, _) = kv.map_err(io)?;
                let (at, id) =
                    parse_tail(&k, prefix.len()).ok_or_else(|| corrupt(&k, "bad index key"))?;
                let Some(e) = tree.get(time_key(CREATED, at, &id)).map_err(io)? else {
                    continue;
                };
                let (status, def) =
                    parse_entry(&e).ok_or_else(|| corrupt(&k, "bad index entry"))?;
                out.extend(take(at, id, Some(status), def)?);
                if out.len() >= want {
                    break;
                }
            }
        } else if !filter.statuses.is_empty() {
            // Newest first across the statuses asked for: merge their
            // indexes, each read newest first.
            let names: BTreeSet<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            let prefixes: Vec<Vec<u8>> = names.iter().map(|s| status_prefix(s)).collect();
            let mut iters: Vec<_> = prefixes
                .iter()
                .map(|p| tree.range(bounds(p, filter, cursor)).rev())
                .collect();
            let mut heads: Vec<Option<(u64, SagaId, sled::IVec)>> = Vec::new();
            for (i, it) in iters.iter_mut().enumerate() {
                heads.push(next_entry(it, prefixes[i].len())?);
            }
            while out.len() < want {
                let best = heads
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| h.as_ref().map(|(at, id, _)| ((*at, id.clone()), i)))
                    .max();
                let Some((_, i)) = best else { break };
                let (at, id, def) = heads[i].take().expect("the chosen head");
                heads[i] = next_entry(&mut iters[i], prefixes[i].len())?;
                out.extend(take(at, id, None, &String::from_utf8_lossy(&def))?);
            }
        } else {
            for kv in tree.range(bounds(CREATED, filter, cursor)).rev() {
                let (k, e) = kv.map_err(io)?;
                let (at, id) =
                    parse_tail(&k, CREATED.len()).ok_or_else(|| corrupt(&k, "bad index key"))?;
                let (status, def) =
                    parse_entry(&e).ok_or_else(|| corrupt(&k, "bad index entry"))?;
                out.extend(take(at, id, Some(status), def)?);
                if out.len() >= want {
                    break;
                }
            }
        }
        Ok(SagaPage::from_matches(out, limit))
    }

    /// Compares every index entry and counter with the records: the
    /// problems found (empty when the indexes describe the records
    /// exactly). Reads the whole store: for tests and repair tools.
    pub(super) fn check(&self, tree: &sled::Tree) -> Result<Vec<String>, StoreError> {
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut tally = StatusCounts::new();
        for kv in tree.scan_prefix(b"s/") {
            let (k, v) = kv.map_err(io)?;
            let r = Value::parse(&k, &v)?.record(&k)?;
            bump(&mut tally, r.status().as_str(), 1);
            want.extend(entries(&r, r.status().as_str()));
        }
        let mut problems = Vec::new();
        let mut have: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for prefix in [CREATED, STATUS, ATTRIBUTE] {
            for kv in tree.scan_prefix(prefix) {
                let (k, v) = kv.map_err(io)?;
                have.insert(k.to_vec(), v.to_vec());
            }
        }
        for (k, v) in &have {
            match want.get(k) {
                None => problems.push(format!("index entry {} names no record", describe(k))),
                Some(w) if w != v => problems.push(format!(
                    "index entry {} says {}, its record {}",
                    describe(k),
                    v.escape_ascii(),
                    w.escape_ascii()
                )),
                Some(_) => {}
            }
        }
        for k in want.keys().filter(|k| !have.contains_key(*k)) {
            problems.push(format!("record has no index entry {}", describe(k)));
        }
        let mut stored = StatusCounts::new();
        for kv in tree.scan_prefix(COUNT) {
            let (k, v) = kv.map_err(io)?;
            let n = <[u8; 8]>::try_from(&v[..]).map_or(u64::MAX, u64::from_be_bytes);
            if n > 0 {
                stored.insert(String::from_utf8_lossy(&k[COUNT.len()..]).into_owned(), n);
            }
        }
        if stored != tally {
            problems.push(format!(
                "stored status counts {stored:?} but the records are {tally:?}"
            ));
        }
        let live = self.counts();
        if live != tally {
            problems.push(format!(
                "in-memory status counts {live:?} but the records are {tally:?}"
            ));
        }
        Ok(problems)
    }
}

/// The key range of index `prefix` inside the filter's time window and
/// before the cursor.
fn bounds(
    prefix: &[u8],
    filter: &SagaFilter,
    cursor: Option<&PageCursor>,
) -> std::ops::Range<Vec<u8>> {
    let mut lo = prefix.to_vec();
    if let Some(a) = filter.created_after_ms {
        lo.extend_from_slice(&a.to_be_bytes());
    }
    let mut hi = prefix.to_vec();
    match filter.created_before_ms {
        Some(b) => hi.extend_from_slice(&b.to_be_bytes()),
        None => hi.extend_from_slice(&[0xff; 9]),
    }
    if let Some(c) = cursor {
        hi = hi.min(time_key(prefix, c.created_ms, &c.id));
    }
    if hi < lo {
        hi = lo.clone();
    }
    lo..hi
}

fn next_entry(
    it: &mut std::iter::Rev<sled::Iter>,
    prefix_len: usize,
) -> Result<Option<(u64, SagaId, sled::IVec)>, StoreError> {
    match it.next() {
        None => Ok(None),
        Some(kv) => {
            let (k, v) = kv.map_err(io)?;
            let (at, id) =
                parse_tail(&k, prefix_len).ok_or_else(|| corrupt(&k, "bad index key"))?;
            Ok(Some((at, id, v)))
        }
    }
}

/// The record of `id` if it is to be listed: a record whose create never
/// finished (its idempotency key does not name it) is not.
fn read_listed(tree: &sled::Tree, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
    let rk = key(b"s/", id.as_str());
    let Some(v) = tree.get(&rk).map_err(io)? else {
        return Ok(None);
    };
    let r = Value::parse(&rk, &v)?.record(&rk)?;
    if let (Some(k), false) = (&r.idempotency_key, r.status().is_terminal()) {
        let owner = tree.get(key(b"k/", k)).map_err(io)?;
        if owner.as_deref() != Some(id.as_str().as_bytes()) {
            return Ok(None);
        }
    }
    Ok(Some(r))
}

/// Indexes every record of a store written before the query indexes:
/// entries in batches, then the counters and the `built` mark in one last
/// batch. A crash part-way leaves no mark, and the next open starts again
/// (the entries it rewrites are the same).
fn backfill(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut counts = StatusCounts::new();
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut total = 0usize;
    for kv in tree.scan_prefix(b"s/") {
        let (k, v) = kv.map_err(io)?;
        let r = Value::parse(&k, &v)?.record(&k)?;
        bump(&mut counts, r.status().as_str(), 1);
        for (k, v) in entries(&r, r.status().as_str()) {
            batch.insert(k, v);
        }
        in_batch += 1;
        total += 1;
        if in_batch >= BACKFILL_BATCH {
            tree.apply_batch(std::mem::take(&mut batch)).map_err(io)?;
            in_batch = 0;
        }
    }
    for (status, n) in &counts {
        batch.insert(count_key(status), &n.to_be_bytes()[..]);
    }
    batch.insert(BUILT, &[][..]);
    tree.apply_batch(batch).map_err(io)?;
    if total > 0 {
        tracing::info!(
            sagas = total,
            "indexed an older store for paged listing and status counts"
        );
    }
    Ok(())
}
