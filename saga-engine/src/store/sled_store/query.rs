//! The sled backend's query indexes: sagas by creation time, by status,
//! by search attribute, and a counter per status, each changed with the
//! record it describes under one journal entry (see `journal`).
//!
//! Keys (beside those of `layout`):
//!
//! - `qc/{created ms BE}{id}` -> `{status}\0{definition}`: every saga;
//! - `qs/{status}\0{created ms BE}{id}` -> `{definition}`: sagas by status;
//! - `qa/{name len u16 BE}{name}{value len u32 BE}{value}{created ms BE}{id}`:
//!   search attributes (written at create and at every status change);
//! - the count of records per status name (a new status needs no code),
//!   kept in memory and checkpointed with a journal (see `journal`);
//! - `qm/built`: the indexes cover every record (a store written before
//!   them is indexed once, at open).
//!
//! Only a write that creates a record, deletes one or changes its status
//! touches them; the other updates (a step recorded, the saga still in the
//! same status) stay one plain `insert`. Those writes go through one mutex
//! and are journaled first, so that an open replays whatever a crash cut
//! short (see `journal`): after it the counters and entries describe
//! exactly the records that survived.

use super::journal::{self, Entry, State};
use super::layout::{corrupt, io, key, Value};
use crate::store::query::{bump, PageCursor, SagaFilter, SagaPage, StatusCounts};
use crate::store::{SagaRecord, StoreError};
use crate::SagaId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

const CREATED: &[u8] = b"qc/";
const STATUS: &[u8] = b"qs/";
const ATTRIBUTE: &[u8] = b"qa/";
const BUILT: &[u8] = b"qm/built";

/// The counts and the journal's position, under the mutex every counted
/// write takes.
pub(super) struct QueryIndex {
    state: Mutex<State>,
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

fn pairs(attributes: &BTreeMap<String, String>) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
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

impl QueryIndex {
    /// Loads the counts from the checkpoint and replays the journal after
    /// it (see `journal`), first indexing every record if the store was
    /// written before these indexes existed.
    pub(super) fn open(tree: &sled::Tree) -> Result<QueryIndex, StoreError> {
        if !tree.contains_key(BUILT).map_err(io)? {
            backfill(tree)?;
        }
        let cp = journal::load_checkpoint(tree)?.unwrap_or_default();
        let (touched, last) = journal::replay(tree, cp.seq)?;
        let mut state = State {
            counts: cp.counts,
            seq: last,
            checkpoint: cp.seq,
        };
        for (id, t) in &touched {
            let id = SagaId::from_raw(id.clone());
            for s in &t.statuses {
                tree.remove(time_key(&status_prefix(s), t.created_ms, &id))
                    .map_err(io)?;
            }
            for (n, v) in &t.attributes {
                tree.remove(time_key(&attribute_prefix(n, v), t.created_ms, &id))
                    .map_err(io)?;
            }
            tree.remove(time_key(CREATED, t.created_ms, &id))
                .map_err(io)?;
            let rk = key(b"s/", id.as_str());
            let now = match tree.get(&rk).map_err(io)? {
                Some(v) => Some(Value::parse(&rk, &v)?.record(&rk)?),
                None => None,
            };
            if let Some(r) = &now {
                for (k, v) in entries(r, r.status().as_str()) {
                    tree.insert(k, v).map_err(io)?;
                }
            }
            journal::recount(
                &mut state.counts,
                t,
                now.as_ref().map(|r| r.status().as_str()),
            );
        }
        if !touched.is_empty() {
            tracing::info!(sagas = touched.len(), "replayed the query index journal");
            // After the repairs in the log: a prefix with this checkpoint
            // holds them all.
            journal::write_checkpoint(tree, &mut state)?.remove(tree)?;
        }
        Ok(QueryIndex {
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sagas by status name.
    pub(super) fn counts(&self) -> StatusCounts {
        self.lock().counts.clone()
    }

    /// Journals `entry`, applies the index changes `ops` (key, value or
    /// removal), then the record's write, and moves the counts, all under
    /// the mutex.
    fn apply(
        &self,
        tree: &sled::Tree,
        record_write: (&[u8], Option<Vec<u8>>),
        entry: Entry,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !crate::sabotage::active(crate::sabotage::INDEX_UNJOURNALED) {
            journal::append(tree, &mut state, &entry)?;
        } else {
            // The defect: nothing tells an open what a kill cut short.
            state.seq += 1;
        }
        for (k, v) in ops {
            match v {
                Some(v) => tree.insert(k, v).map(drop),
                None => tree.remove(k).map(drop),
            }
            .map_err(io)?;
        }
        match record_write.1 {
            Some(v) => tree.insert(record_write.0, v).map(drop),
            None => tree.remove(record_write.0).map(drop),
        }
        .map_err(io)?;
        if let Some(s) = &entry.old {
            bump(&mut state.counts, s, -1);
        }
        if let Some(s) = &entry.new {
            bump(&mut state.counts, s, 1);
        }
        let covered = journal::maybe_checkpoint(tree, &mut state)?;
        drop(state);
        match covered {
            Some(c) => c.remove(tree),
            None => Ok(()),
        }
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
        let entry = Entry {
            id: r.id.as_str().to_string(),
            created_ms: r.created_at_ms,
            old: None,
            new: Some(status.to_string()),
            attributes: pairs(&r.attributes),
        };
        let ops = entries(r, status)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        self.apply(tree, (rk, Some(value)), entry, ops)
    }

    /// Replaces a record's value; if its status changed, moves its index
    /// entries and count and re-indexes its attributes, else writes the
    /// value alone. `stored` is the stored record's status when its value
    /// says it (format 3): the index holds the same (its entries change
    /// with the record, and an open replays what a crash cut short), so it
    /// is not read.
    pub(super) fn replace(
        &self,
        tree: &sled::Tree,
        rk: &[u8],
        value: Vec<u8>,
        r: &SagaRecord,
        stored: Option<String>,
    ) -> Result<(), StoreError> {
        let new = r.status().as_str();
        let old = match stored {
            Some(s) => Some(s),
            None => self.stored_status(tree, r)?,
        };
        if old.as_deref() == Some(new) {
            tree.insert(rk, value).map_err(io)?;
            return Ok(());
        }
        let mut ops = Vec::new();
        if let Some(old) = &old {
            ops.push((time_key(&status_prefix(old), r.created_at_ms, &r.id), None));
        }
        // Attributes are re-taken at a status change: drop the entries of
        // values the record no longer has, add those it gained; the
        // unchanged ones stay as they are.
        let before = match tree.get(rk).map_err(io)? {
            Some(bytes) => Value::parse(rk, &bytes)?.record(rk)?.attributes,
            None => BTreeMap::new(),
        };
        let mut touched = Vec::new();
        for (n, v) in &before {
            if r.attributes.get(n) != Some(v) {
                ops.push((
                    time_key(&attribute_prefix(n, v), r.created_at_ms, &r.id),
                    None,
                ));
                touched.push((n.clone(), v.clone()));
            }
        }
        for (n, v) in &r.attributes {
            if before.get(n) != Some(v) {
                ops.push((
                    time_key(&attribute_prefix(n, v), r.created_at_ms, &r.id),
                    Some(Vec::new()),
                ));
                touched.push((n.clone(), v.clone()));
            }
        }
        ops.extend(
            entries(r, new)
                .into_iter()
                .take(2)
                .map(|(k, v)| (k, Some(v))),
        );
        let entry = Entry {
            id: r.id.as_str().to_string(),
            created_ms: r.created_at_ms,
            old,
            new: Some(new.to_string()),
            attributes: touched,
        };
        self.apply(tree, (rk, Some(value)), entry, ops)
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
        let ops = entries(r, &status)
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
        let entry = Entry {
            id: r.id.as_str().to_string(),
            created_ms: r.created_at_ms,
            old: Some(status),
            new: None,
            attributes: pairs(&r.attributes),
        };
        self.apply(tree, (rk, None), entry, ops)?;
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
pub(super) fn read_listed(
    tree: &sled::Tree,
    id: &SagaId,
) -> Result<Option<SagaRecord>, StoreError> {
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
/// the entries (plain inserts: a sled batch would switch on its global
/// lock for the rest of the process), then the counts' checkpoint and the
/// `built` mark. A crash part-way leaves no mark, and the next open starts again
/// (the entries it rewrites are the same).
fn backfill(tree: &sled::Tree) -> Result<(), StoreError> {
    // A journal without the mark describes no counts: start from the records.
    for k in tree.scan_prefix(b"qj/").keys() {
        tree.remove(k.map_err(io)?).map_err(io)?;
    }
    let mut counts = StatusCounts::new();
    let mut total = 0usize;
    for kv in tree.scan_prefix(b"s/") {
        let (k, v) = kv.map_err(io)?;
        let r = Value::parse(&k, &v)?.record(&k)?;
        bump(&mut counts, r.status().as_str(), 1);
        for (k, v) in entries(&r, r.status().as_str()) {
            tree.insert(k, v).map_err(io)?;
        }
        total += 1;
    }
    // The counts, then the mark, after every entry in the log.
    let mut state = State {
        counts,
        ..State::default()
    };
    journal::write_checkpoint(tree, &mut state)?.remove(tree)?;
    tree.insert(BUILT, &[][..]).map_err(io)?;
    if total > 0 {
        tracing::info!(
            sagas = total,
            "indexed an older store for paged listing and status counts"
        );
    }
    Ok(())
}
