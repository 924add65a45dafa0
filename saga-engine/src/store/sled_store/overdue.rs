//! The sled backend's index of overdue sagas: those past their deadline
//! after the pivot and not finished ([`SagaRecord::is_overdue`]), so an
//! operator's overview lists them without reading every running saga.
//!
//! Keys: `qo/{created ms BE}{id}` -> `{definition}`, one per overdue saga,
//! newest first when read backwards (the order of every listing).
//!
//! The set is small and changes rarely (a saga enters it once, when the
//! deadline passes, and leaves it once, when it finishes), so it is kept
//! without the query journal, by order alone, as the active index is:
//!
//! - an entry goes in *before* the write that makes its record overdue
//!   (the flag set, or a stuck overdue saga retried back to running);
//! - it comes out *after* the write that finishes the record, or deletes
//!   it.
//!
//! sled recovers a prefix of its log, so a crash leaves the entries a
//! superset of the overdue records, never less. Listing reads each entry's
//! record and keeps it only if it is overdue now, and an open removes the
//! entries a crash left behind (reading only the entries, not every
//! record), so after an open the index is exact. A store written before
//! this index is indexed once at open (`qm/overdue-built` marks it done).
//!
//! Updates of sagas that never had a deadline pass add no read and no
//! write: only a record whose `overdue` flag is set touches this index.

use super::layout::{corrupt, io, key, Value};
use super::query::read_listed;
use crate::store::{PageCursor, SagaFilter, SagaPage, SagaRecord, StoreError};
use crate::SagaId;

const OVERDUE: &[u8] = b"qo/";
const BUILT: &[u8] = b"qm/overdue-built";

fn entry_key(created_ms: u64, id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(OVERDUE.len() + 8 + id.as_str().len());
    k.extend_from_slice(OVERDUE);
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u64, SagaId)> {
    let n = OVERDUE.len();
    let at = u64::from_be_bytes(k.get(n..n + 8)?.try_into().ok()?);
    let id = std::str::from_utf8(k.get(n + 8..)?).ok()?;
    Some((at, SagaId::from_raw(id.to_string())))
}

/// Before writing `r`: its entry, if `r` is overdue and has none yet.
pub(super) fn before_write(tree: &sled::Tree, r: &SagaRecord) -> Result<(), StoreError> {
    if !r.is_overdue() || crate::sabotage::active(crate::sabotage::OVERDUE_NOT_INDEXED) {
        return Ok(());
    }
    let k = entry_key(r.created_at_ms, &r.id);
    if !tree.contains_key(&k).map_err(io)? {
        tree.insert(k, r.definition.as_bytes()).map_err(io)?;
    }
    Ok(())
}

/// After writing (or deleting) `r`: its entry out, if `r` was flagged
/// overdue and is not overdue any more (it finished, or is gone:
/// `deleted`).
pub(super) fn after_write(
    tree: &sled::Tree,
    r: &SagaRecord,
    deleted: bool,
) -> Result<(), StoreError> {
    if r.state.overdue && (deleted || !r.is_overdue()) {
        tree.remove(entry_key(r.created_at_ms, &r.id)).map_err(io)?;
    }
    Ok(())
}

/// At open: indexes an older store once, else drops the entries whose
/// record is not overdue (what a crash between an entry and its record's
/// write leaves).
pub(super) fn open(tree: &sled::Tree) -> Result<(), StoreError> {
    if !tree.contains_key(BUILT).map_err(io)? {
        for kv in tree.scan_prefix(b"s/") {
            let (k, v) = kv.map_err(io)?;
            let r = Value::parse(&k, &v)?.record(&k)?;
            if r.is_overdue() {
                tree.insert(entry_key(r.created_at_ms, &r.id), r.definition.as_bytes())
                    .map_err(io)?;
            }
        }
        // After every entry in the log.
        tree.insert(BUILT, &[][..]).map_err(io)?;
        return Ok(());
    }
    let mut dropped = 0usize;
    for (k, id) in entries(tree)? {
        if !record_is_overdue(tree, &id)? {
            tree.remove(k).map_err(io)?;
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::info!(
            entries = dropped,
            "dropped overdue index entries a crash left"
        );
    }
    Ok(())
}

/// Every entry's key and saga.
fn entries(tree: &sled::Tree) -> Result<Vec<(sled::IVec, SagaId)>, StoreError> {
    tree.scan_prefix(OVERDUE)
        .keys()
        .map(|k| {
            let k = k.map_err(io)?;
            let (_, id) = parse_key(&k).ok_or_else(|| corrupt(&k, "bad overdue index key"))?;
            Ok((k, id))
        })
        .collect()
}

fn record_is_overdue(tree: &sled::Tree, id: &SagaId) -> Result<bool, StoreError> {
    let rk = key(b"s/", id.as_str());
    Ok(match tree.get(&rk).map_err(io)? {
        Some(v) => Value::parse(&rk, &v)?.record(&rk)?.is_overdue(),
        None => false,
    })
}

/// One page of [`crate::Store::list_page`] for a filter asking for overdue
/// sagas: the entries newest first, each record read and checked against
/// the whole filter.
pub(super) fn list_page(
    tree: &sled::Tree,
    filter: &SagaFilter,
    cursor: Option<&PageCursor>,
    limit: usize,
) -> Result<SagaPage, StoreError> {
    let want = limit.saturating_add(1);
    let mut lo = OVERDUE.to_vec();
    if let Some(a) = filter.created_after_ms {
        lo.extend_from_slice(&a.to_be_bytes());
    }
    let mut hi = OVERDUE.to_vec();
    match filter.created_before_ms {
        Some(b) => hi.extend_from_slice(&b.to_be_bytes()),
        None => hi.extend_from_slice(&[0xff; 9]),
    }
    if let Some(c) = cursor {
        hi = hi.min(entry_key(c.created_ms, &c.id));
    }
    let mut out = Vec::new();
    if hi > lo {
        for kv in tree.range(lo..hi).rev() {
            let (k, def) = kv.map_err(io)?;
            let (at, id) = parse_key(&k).ok_or_else(|| corrupt(&k, "bad overdue index key"))?;
            if filter
                .definition
                .as_deref()
                .is_some_and(|d| d.as_bytes() != &def[..])
            {
                continue;
            }
            out.extend(
                read_listed(tree, &id)?.filter(|r| r.created_at_ms == at && filter.matches(r)),
            );
            if out.len() >= want {
                break;
            }
        }
    }
    Ok(SagaPage::from_matches(out, limit))
}

/// Compares the entries with the records: the problems found (empty when
/// the index holds exactly the overdue sagas). Reads every record.
pub(super) fn check(tree: &sled::Tree) -> Result<Vec<String>, StoreError> {
    let mut want = std::collections::BTreeSet::new();
    for kv in tree.scan_prefix(b"s/") {
        let (k, v) = kv.map_err(io)?;
        let r = Value::parse(&k, &v)?.record(&k)?;
        if r.is_overdue() {
            want.insert(entry_key(r.created_at_ms, &r.id));
        }
    }
    let mut problems = Vec::new();
    let mut have = std::collections::BTreeSet::new();
    for (k, id) in entries(tree)? {
        if !want.contains(&k[..]) {
            problems.push(format!("overdue index entry for {id}, not overdue"));
        }
        have.insert(k.to_vec());
    }
    for k in want.difference(&have) {
        let id = parse_key(k).map_or_else(String::new, |(_, id)| id.to_string());
        problems.push(format!("overdue saga {id} has no overdue index entry"));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::SagaStatus;
    use crate::store::conformance::sample_record;
    use crate::store::{SledStore, Store};

    fn overdue_record(id: &str) -> SagaRecord {
        let mut r = sample_record(id, None);
        r.state.overdue = true;
        r
    }

    #[tokio::test]
    async fn an_entry_a_crash_left_before_its_record_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample_record("late", None);
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.create(&r, &[]).await.unwrap();
            // The write that flags it overdue died after its entry.
            before_write(&s.tree, &overdue_record("late")).unwrap();
            let page = s
                .list_page(
                    &SagaFilter {
                        overdue: true,
                        ..SagaFilter::default()
                    },
                    None,
                    10,
                )
                .await
                .unwrap();
            assert!(page.records.is_empty(), "listed a saga that is not overdue");
            assert_eq!(check(&s.tree).unwrap().len(), 1);
        }
        let s = crate::store::conformance::reopen_sled(dir.path());
        assert_eq!(check(&s.tree).unwrap(), Vec::<String>::new());
        assert_eq!(entries(&s.tree).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn an_older_store_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            let mut r = overdue_record("old");
            r.state.status = SagaStatus::Running;
            s.create(&r, &[]).await.unwrap();
            // As written before this index existed.
            for (k, _) in entries(&s.tree).unwrap() {
                s.tree.remove(k).unwrap();
            }
            s.tree.remove(BUILT).unwrap();
            s.tree.flush().unwrap();
        }
        let s = crate::store::conformance::reopen_sled(dir.path());
        assert_eq!(check(&s.tree).unwrap(), Vec::<String>::new());
        assert_eq!(entries(&s.tree).unwrap().len(), 1);
    }
}
