//! Exact status counts and query indexes on sled without batches: a short
//! journal of the writes that change them, and a checkpoint of the counts.
//!
//! A sled `Batch` would make a record and its index entries one atomic
//! write, but in sled 0.34 the first batch switches on a global lock that
//! every later read and write takes: measured with `loadgen` at
//! concurrency 128, that cut throughput to 0.36-0.44 of the same code
//! without it. So these writes stay single-key inserts, and crash safety
//! comes from order, as for the store's other indexes:
//!
//! 1. under one mutex, a write that creates, deletes or changes the status
//!    of a record first appends a journal entry `qj/{seq BE}` naming the
//!    saga, its creation time, the statuses and search attributes it
//!    touches; then it writes the index entries, then the record;
//! 2. every [`CHECKPOINT_EVERY`] such writes, the counts go to
//!    `qm/checkpoint` with the last journal sequence number they include
//!    (the mutex makes that exact), then the entries it covers are
//!    removed, after the mutex is let go (1,024 removals held every
//!    counted write back);
//! 3. at open, the entries after the checkpoint (at most
//!    [`CHECKPOINT_EVERY`]) are replayed against the records as they survived: each
//!    touched saga's entries are rewritten from its record (or removed
//!    with it), and its count moves from the status it had at the
//!    checkpoint (its first entry's old status) to the one it has now.
//!
//! sled recovers a prefix of its log, so whatever a kill cut short is in
//! the journal, and the counts and indexes after an open describe exactly
//! the records that survived.

use super::layout::{corrupt, io};
use crate::store::query::{bump, StatusCounts};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const JOURNAL: &[u8] = b"qj/";
const CHECKPOINT: &[u8] = b"qm/checkpoint";
/// Counted writes between checkpoints.
pub(super) const CHECKPOINT_EVERY: u64 = 1024;

/// One counted write: what it may have touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The saga.
    pub(super) id: String,
    /// Its creation time (the index keys hold it).
    pub(super) created_ms: u64,
    /// Its status before the write (`None`: it did not exist).
    pub(super) old: Option<String>,
    /// Its status after the write (`None`: deleted).
    pub(super) new: Option<String>,
    /// Every search attribute whose entry the write removes or adds.
    pub(super) attributes: Vec<(String, String)>,
}

/// The checkpoint: counts including every journal entry up to `seq`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) seq: u64,
    pub(super) counts: StatusCounts,
}

/// What the mutex guards: the counts, the journal position, the
/// checkpoints.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) counts: StatusCounts,
    pub(super) seq: u64,
    /// Sequence number of the last checkpoint written.
    pub(super) checkpoint: u64,
}

pub(super) fn journal_key(seq: u64) -> Vec<u8> {
    let mut k = JOURNAL.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Appends `e` as entry `state.seq + 1`.
pub(super) fn append(
    tree: &sled::Tree,
    state: &mut State,
    e: &Entry,
) -> Result<(), crate::store::StoreError> {
    let body = serde_json::to_vec(e).expect("journal entries serialize");
    state.seq += 1;
    tree.insert(journal_key(state.seq), body).map_err(io)?;
    Ok(())
}

/// Writes a checkpoint of `state` if one is due; the entries it covers
/// are then the caller's to drop, once it has let go of the mutex.
pub(super) fn maybe_checkpoint(
    tree: &sled::Tree,
    state: &mut State,
) -> Result<Option<Covered>, crate::store::StoreError> {
    if state.seq < state.checkpoint + CHECKPOINT_EVERY {
        return Ok(None);
    }
    write_checkpoint(tree, state).map(Some)
}

/// The journal entries a checkpoint made unneeded.
#[must_use = "the covered entries stay until removed"]
pub(super) struct Covered {
    upto: u64,
}

impl Covered {
    /// Drops every entry up to the checkpoint's. Not under the mutex: the
    /// writes after the checkpoint append entries past these, and an entry
    /// left by a crash here is dropped by the next checkpoint's pass (it
    /// starts from the journal's first key) and never replayed (replay
    /// starts after the checkpoint). After the checkpoint in the log: a
    /// prefix holding these removals holds the checkpoint that makes them
    /// unneeded.
    pub(super) fn remove(self, tree: &sled::Tree) -> Result<(), crate::store::StoreError> {
        for k in tree.range(JOURNAL.to_vec()..=journal_key(self.upto)).keys() {
            tree.remove(k.map_err(io)?).map_err(io)?;
        }
        Ok(())
    }
}

/// Writes the checkpoint now; the entries it covers are returned, to drop.
pub(super) fn write_checkpoint(
    tree: &sled::Tree,
    state: &mut State,
) -> Result<Covered, crate::store::StoreError> {
    let c = Checkpoint {
        seq: state.seq,
        counts: state.counts.clone(),
    };
    tree.insert(
        CHECKPOINT,
        serde_json::to_vec(&c).expect("checkpoints serialize"),
    )
    .map_err(io)?;
    state.checkpoint = state.seq;
    Ok(Covered { upto: state.seq })
}

/// The stored checkpoint, if any.
pub(super) fn load_checkpoint(
    tree: &sled::Tree,
) -> Result<Option<Checkpoint>, crate::store::StoreError> {
    match tree.get(CHECKPOINT).map_err(io)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| corrupt(CHECKPOINT, e)),
    }
}

/// What the entries after a checkpoint say about one saga.
#[derive(Debug, Default)]
pub(super) struct Touched {
    pub(super) created_ms: u64,
    /// Its status at the checkpoint (the first entry's old status).
    pub(super) at_checkpoint: Option<String>,
    /// Every status any entry named.
    pub(super) statuses: BTreeSet<String>,
    /// Every attribute any entry named.
    pub(super) attributes: BTreeSet<(String, String)>,
}

/// The sagas touched by entries after `after`, and the last sequence
/// number found.
pub(super) fn replay(
    tree: &sled::Tree,
    after: u64,
) -> Result<(BTreeMap<String, Touched>, u64), crate::store::StoreError> {
    let mut out: BTreeMap<String, Touched> = BTreeMap::new();
    let mut last = after;
    for kv in tree.range(journal_key(after.saturating_add(1))..journal_key(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let seq = k
            .get(JOURNAL.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt(&k, "bad journal key"))?;
        let e: Entry = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
        last = last.max(seq);
        let first = !out.contains_key(&e.id);
        let t = out.entry(e.id.clone()).or_default();
        t.created_ms = e.created_ms;
        if first {
            t.at_checkpoint = e.old.clone();
        }
        t.statuses.extend(e.old.into_iter().chain(e.new));
        t.attributes.extend(e.attributes);
    }
    Ok((out, last))
}

/// Moves `counts` for one replayed saga: off its status at the checkpoint,
/// onto its status now (`None`: gone).
pub(super) fn recount(counts: &mut StatusCounts, t: &Touched, now: Option<&str>) {
    if let Some(s) = &t.at_checkpoint {
        bump(counts, s, -1);
    }
    if let Some(s) = now {
        bump(counts, s, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::key;
    use super::super::query::QueryIndex;
    use super::*;
    use crate::store::conformance::sample_record;

    #[test]
    fn the_journal_stays_within_a_checkpoint_of_entries() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let index = QueryIndex::open(&tree).unwrap();
        let writes = 3 * CHECKPOINT_EVERY + 10;
        for i in 0..writes {
            let r = sample_record(&format!("s{i:05}"), None);
            let rk = key(b"s/", r.id.as_str());
            index.insert_new(&tree, &rk, vec![], &r).unwrap();
        }
        let left = tree.scan_prefix(JOURNAL).count() as u64;
        assert!(
            left <= CHECKPOINT_EVERY,
            "{left} journal entries after {writes} counted writes"
        );
        let cp = load_checkpoint(&tree).unwrap().unwrap();
        assert_eq!(cp.seq, 3 * CHECKPOINT_EVERY);
        assert_eq!(index.counts()["running"], 3 * CHECKPOINT_EVERY + 10);
    }
}
