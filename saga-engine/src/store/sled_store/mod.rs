//! The embedded backend: one sled tree, made durable by group commit.
//!
//! A saga is one value, `s/{id}`: its revision, its record and its history
//! (a long history's older part in chunks, see `layout`), so a transition
//! is a single `insert` (atomic in sled) with no batch or transaction and
//! none of their global locks. Measured against one key per event (same
//! run, 20,000 sagas at concurrency 128): that layout was 35% slower and
//! took 65% more disk, sled's cost per key outweighing the bytes saved.
//! Indexes beside it: `a/{id}` (not terminal: what to resume at open),
//! `k/{key}` (idempotency key -> id, or retired), `f/{at}{id}` (finished,
//! for retention), `r/{at}{key}` (retired keys). They are written in an
//! order that a crash at any point leaves either consistent or detectably
//! half-done, and [`Store::list_active`] repairs the half-done cases (see
//! `create`). The query indexes (`qc/`, `qs/`, `qa/`, status counts, see
//! `query`) change only with a create, a delete or a status change,
//! journaled first so that an open replays what a crash cut short (see
//! `journal`).
//!
//! sled 0.34 keeps only what was flushed across a `kill -9`, so no write is
//! reported done before a flush that started after it has finished. A
//! writer applies its write, takes a ticket and waits until a flush covering
//! its ticket is done; writers that arrive during a flush share the next
//! one (group commit, led by one of the waiting writers). sled recovers a
//! prefix of its log, so a durable write implies every earlier one is too.

mod commit;
mod gate;
mod gather;
mod journal;
mod layout;
mod open;
mod overdue;
mod query;
#[cfg(test)]
mod tests;
mod watchdog;

pub use commit::{Durability, FlushHook, HWM_FILE};
pub use gate::FlushGate;
pub use open::{open_sled_db, open_sled_db_with_cache, DEFAULT_CACHE_BYTES};
pub use watchdog::flush_sled;

use super::{
    CreateOutcome, PageCursor, Resumable, SagaFilter, SagaPage, SagaRecord, StatusCounts, Store,
    StoreError,
};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::SagaId;
use async_trait::async_trait;
use commit::{GroupCommit, Mark16, HWM_KEY};
use layout::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const TREE: &str = "saga_engine";

/// The sled backend (default).
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    commit: Arc<GroupCommit>,
    query: query::QueryIndex,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("flushes", &self.commit.flushes.load(Ordering::Relaxed))
            .finish()
    }
}

impl SledStore {
    /// Opens (or creates) a sled database in `path`.
    ///
    /// Refuses, with [`StoreError::Damaged`] naming the directory, a
    /// database that lost records it had acknowledged (see [`HWM_FILE`]).
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let path = path.as_ref();
        let db = open_sled_db(path)?;
        SledStore::with_db_at(db, path)
    }

    /// Like [`SledStore::open`], with sled's page cache limited to
    /// `cache_bytes` (default [`DEFAULT_CACHE_BYTES`]).
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: u64,
    ) -> Result<SledStore, StoreError> {
        let path = path.as_ref();
        let db = open_sled_db_with_cache(path, cache_bytes)?;
        SledStore::with_db_at(db, path)
    }

    /// Uses a tree of an already open database, so that participants can
    /// keep their own trees in the same data directory. Without the
    /// directory there is no high-water mark: prefer [`SledStore::with_db_at`].
    pub fn with_db(db: sled::Db) -> Result<SledStore, StoreError> {
        let tree = db.open_tree(TREE).map_err(io)?;
        let start = Self::current_mark(&tree)?;
        let commit = GroupCommit::start(db.clone(), tree.clone(), start, None);
        let query = query::QueryIndex::open(&tree)?;
        overdue::open(&tree)?;
        Ok(SledStore {
            db,
            tree,
            commit,
            query,
        })
    }

    /// Like [`SledStore::with_db`], for a database opened at `dir`: checks
    /// the high-water mark kept in `dir` and keeps it up to date.
    ///
    /// Fails closed with [`StoreError::Damaged`]: when sled holds a mark
    /// but the file is missing, short or unreadable, as when sled holds
    /// fewer records or an older mark than the file.
    pub fn with_db_at(db: sled::Db, dir: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let dir = dir.as_ref();
        let tree = db.open_tree(TREE).map_err(io)?;
        let start = Self::current_mark(&tree)?;
        let sled_has_mark = tree.contains_key(HWM_KEY).map_err(io)?;
        let file_path = dir.join(HWM_FILE);
        let damaged = |detail: String| StoreError::Damaged {
            path: dir.display().to_string(),
            detail,
        };
        let on_file = match std::fs::read(&file_path) {
            Ok(b) => Some(Mark16::decode(&b).ok_or_else(|| {
                damaged(format!(
                    "{} holds {} bytes, not a high-water mark; the damage check cannot vouch for this store. \
                     Restore a backup; do not run on it",
                    file_path.display(),
                    b.len()
                ))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(damaged(format!(
                    "{} is unreadable ({e}); the damage check cannot vouch for this store",
                    file_path.display()
                )))
            }
        };
        let check = !crate::sabotage::active(crate::sabotage::NO_DAMAGE_CHECK);
        match on_file {
            _ if !check => {}
            None if sled_has_mark => {
                return Err(damaged(format!(
                    "the database has flushed with a high-water mark but {} is missing; \
                     the damage check cannot vouch for this store. Restore a backup; do not run on it",
                    file_path.display()
                )))
            }
            Some(f) if start.seq < f.seq || start.created < f.created => {
                return Err(damaged(format!(
                    "the database holds {} records up to commit {} but {} records up to commit {} were acknowledged; \
                     it lost acknowledged data (a damaged file?). Restore a backup; do not run on it",
                    start.created, start.seq, f.created, f.seq
                )));
            }
            _ => {}
        }
        if on_file.is_none() {
            // Written whole (temporary file, then rename) before the first
            // flush, so that a crash never leaves a short file behind.
            let tmp = dir.join(format!("{HWM_FILE}.tmp"));
            std::fs::write(&tmp, start.encode())
                .and_then(|()| std::fs::rename(&tmp, &file_path))
                .map_err(|e| StoreError::Io(format!("writing {}: {e}", file_path.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file_path)
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", file_path.display())))?;
        let commit = GroupCommit::start(db.clone(), tree.clone(), start, Some(file));
        let query = query::QueryIndex::open(&tree)?;
        overdue::open(&tree)?;
        Ok(SledStore {
            db,
            tree,
            commit,
            query,
        })
    }

    /// The mark the database itself holds: its last flush ticket and the
    /// creates acknowledged up to it. Read from one key: opening costs the
    /// same whether the store holds ten sagas or ten million.
    fn current_mark(tree: &sled::Tree) -> Result<Mark16, StoreError> {
        match tree.get(HWM_KEY).map_err(io)? {
            Some(b) => Mark16::decode(&b).ok_or_else(|| corrupt(HWM_KEY, "bad high-water mark")),
            None => Ok(Mark16::default()),
        }
    }

    /// Installs (or, with `None`, removes) a hook called before every
    /// flush, on the flushing thread. For fault-injection tests: a hook
    /// that blocks is a slow disk, one that returns an error is a failing
    /// one (the store then fails every later write until reopened, as sled
    /// does), one that panics is a bug in the flush.
    pub fn set_flush_hook(&self, hook: Option<FlushHook>) {
        *self.commit.lock_hook() = hook;
    }

    /// Compares the query indexes (by creation time, status and search
    /// attribute, overdue, and the status counters) with the records: the problems
    /// found, empty when they agree exactly. Reads every record: for tests
    /// and repair tools, not for serving requests.
    pub fn check_query_indexes(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = self.query.check(&self.tree)?;
        problems.extend(overdue::check(&self.tree)?);
        Ok(problems)
    }

    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The store's group commit, for in-process participants that keep
    /// their trees in the same database (see [`Durability`]).
    pub fn durability(&self) -> Durability {
        Durability::new(self.commit.clone())
    }

    fn read(&self, id: &SagaId) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(key(b"s/", id.as_str())).map_err(io)
    }

    /// The record an active-index entry names, if it is to run; repairs
    /// (and counts in `repaired`) entries of interrupted writes: a create
    /// that died before its record or its key, a saga that is terminal.
    async fn check_active(
        &self,
        ak: &[u8],
        repaired: &mut usize,
    ) -> Result<Option<SagaRecord>, StoreError> {
        let id = SagaId::from_raw(String::from_utf8_lossy(&ak[2..]).into_owned());
        let record = match self.get(&id).await? {
            Some(r) => r,
            None => {
                // Index written, record not: a create that died.
                self.tree.remove(ak).map_err(io)?;
                *repaired += 1;
                return Ok(None);
            }
        };
        if record.status().is_terminal() {
            self.tree.remove(ak).map_err(io)?;
            *repaired += 1;
            return Ok(None);
        }
        if let Some(k) = &record.idempotency_key {
            let owner = self.tree.get(key(b"k/", k)).map_err(io)?;
            if owner.as_deref() != Some(id.as_str().as_bytes()) {
                // Record written, key not (or taken over): never
                // acknowledged, so it must not run.
                // Never counted: `created` counts acknowledged creates.
                self.query
                    .remove(&self.tree, &key(b"s/", id.as_str()), &record)?;
                self.tree.remove(ak).map_err(io)?;
                *repaired += 1;
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// Deletes the history chunks of a saga whose record is gone.
    fn remove_chunks(&self, id: &SagaId) -> Result<(), StoreError> {
        for k in self.tree.scan_prefix(chunk_prefix(id)).keys() {
            self.tree.remove(k.map_err(io)?).map_err(io)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        // Order: active index, record, then the idempotency key. A crash
        // before the key is written leaves a record no key names: it was
        // never acknowledged, and `list_active` deletes it. The key is
        // claimed with compare-and-swap, so racing creates agree on one
        // winner, and a winner's record is always written before its key.
        let rk = key(b"s/", record.id.as_str());
        let ak = key(b"a/", record.id.as_str());
        if self.tree.contains_key(&rk).map_err(io)? {
            return Err(StoreError::AlreadyExists(record.id.clone()));
        }
        if !record.status().is_terminal() {
            self.tree.insert(&ak, &[][..]).map_err(io)?;
        }
        overdue::before_write(&self.tree, record)?;
        self.query
            .insert_new(&self.tree, &rk, encode_value(record, &[], events), record)?;
        if let Some(k) = &record.idempotency_key {
            let kk = key(b"k/", k);
            let mut expected: Option<sled::IVec> = None;
            loop {
                match self
                    .tree
                    .compare_and_swap(&kk, expected.clone(), Some(record.id.as_str().as_bytes()))
                    .map_err(io)?
                {
                    Ok(()) => break,
                    Err(cas) => {
                        let owner = cas.current.expect("a failed swap from a value has one");
                        if let Some(purged_at_ms) = retired_at(&owner) {
                            self.query.remove(&self.tree, &rk, record)?;
                            overdue::after_write(&self.tree, record, true)?;
                            self.tree.remove(&ak).map_err(io)?;
                            return Ok(CreateOutcome::Retired { purged_at_ms });
                        }
                        let owner_id =
                            SagaId::from_raw(String::from_utf8_lossy(&owner).into_owned());
                        match self.get(&owner_id).await? {
                            Some(existing) => {
                                // Lost the race (or a replay): undo our record.
                                self.query.remove(&self.tree, &rk, record)?;
                                overdue::after_write(&self.tree, record, true)?;
                                self.tree.remove(&ak).map_err(io)?;
                                // The winner may not be flushed yet.
                                self.commit.durable().await?;
                                return Ok(CreateOutcome::Existing(Box::new(existing)));
                            }
                            // The key names a record that was never written
                            // (a crash mid-create): take the key over.
                            None => expected = Some(owner),
                        }
                    }
                }
            }
        }
        if let Some(t) = record.state.parked_until() {
            // Created straight into a wait: only now, with the create
            // whole, may the index say "parked" (a parked entry is never
            // checked at open; a crash before this leaves "resume now").
            self.tree.insert(&ak, &t.to_be_bytes()[..]).map_err(io)?;
        }
        self.commit.created.fetch_add(1, Ordering::SeqCst);
        // The first step's result follows at once (unless created waiting).
        self.commit
            .durable_then(record.state.parked_until().is_none())
            .await?;
        Ok(CreateOutcome::Created)
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let rk = key(b"s/", record.id.as_str());
        let old = self.tree.get(&rk).map_err(io)?;
        let (found, head, mut old_events) = match &old {
            Some(bytes) => {
                let v = Value::parse(&rk, bytes)?;
                let head = v.head.clone();
                (Some(v.revision), head, v.events_bytes(&record.id, &rk)?)
            }
            None => (None, None, Vec::new()),
        };
        if found != Some(record.revision.wrapping_sub(1)) {
            return Err(StoreError::Conflict {
                id: record.id.clone(),
                expected: record.revision.wrapping_sub(1),
                found,
            });
        }
        let ak = key(b"a/", record.id.as_str());
        let terminal = record.status().is_terminal();
        if !terminal && !crate::sabotage::active(crate::sabotage::STUCK_LEAVES_INDEX) {
            // A saga leaving a terminal status (an operator retrying a stuck
            // one) must be resumed at the next open: back into the active
            // index, before the record, so that a crash in between leaves
            // an entry for a stuck saga, which `list_active` skips.
            // The same holds for a saga leaving a durable wait: "resume
            // now" (an empty entry) goes before the record. A stored
            // record that is neither terminal nor parked already has that
            // entry (it is written before such a record, and removed or
            // changed only after a record that is terminal or parked), so
            // its index is not read.
            let resume_now = head.as_ref().is_some_and(|h| {
                !h.parked && SagaStatus::parse(&h.status).is_some_and(|s| !s.is_terminal())
            });
            if !resume_now
                && self
                    .tree
                    .get(&ak)
                    .map_err(io)?
                    .is_none_or(|v| !v.is_empty())
            {
                self.tree.insert(&ak, &[][..]).map_err(io)?;
            }
        }
        if is_finished(record.status()) {
            // Before the record: a crash in between leaves an entry for a
            // saga that has not finished, which `finished_before` drops.
            self.tree
                .insert(finished_key(record.updated_at_ms, &record.id), &[][..])
                .map_err(io)?;
        }
        if old_events.len() > SPILL_BYTES {
            // A long history: move the embedded part to a chunk first, so
            // that this and later transitions do not rewrite it. A crash
            // in between leaves its events in both places; `history`
            // reads each sequence number once.
            let first = decode_events(CHUNK_FORMAT, &record.id, &rk, &old_events)?
                .first()
                .map_or(0, |e| e.seq);
            self.tree
                .insert(chunk_key(&record.id, first), &old_events[..])
                .map_err(io)?;
            old_events.clear();
        }
        overdue::before_write(&self.tree, record)?;
        self.query.replace(
            &self.tree,
            &rk,
            encode_value(record, &old_events, events),
            record,
            head.map(|h| h.status),
        )?;
        overdue::after_write(&self.tree, record, false)?;
        if terminal {
            // After the record: a crash in between leaves an index entry
            // for a terminal saga, which `list_active` skips and removes.
            self.tree.remove(&ak).map_err(io)?;
        } else if let Some(t) = record.state.parked_until() {
            // Entering a durable wait: "parked until t" goes after the
            // record, so a crash in between leaves "resume now" (the saga
            // is loaded at open and parks again), never a parked entry for
            // a saga that is running.
            if crate::sabotage::active(crate::sabotage::WAIT_NOT_INDEXED) {
                // Planted defect: the waiting saga leaves the index.
                self.tree.remove(&ak).map_err(io)?;
            } else {
                self.tree.insert(&ak, &t.to_be_bytes()[..]).map_err(io)?;
            }
        }
        // A running saga's next write follows its next step at once.
        self.commit
            .durable_then(!terminal && record.state.parked_until().is_none())
            .await
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        let rk = key(b"s/", id.as_str());
        match self.read(id)? {
            Some(bytes) => Ok(Some(Value::parse(&rk, &bytes)?.record(&rk)?)),
            None => Ok(None),
        }
    }

    async fn find_by_key(&self, k: &str) -> Result<Option<SagaId>, StoreError> {
        let Some(v) = self.tree.get(key(b"k/", k)).map_err(io)? else {
            return Ok(None);
        };
        if retired_at(&v).is_some() {
            return Ok(None);
        }
        let id = SagaId::from_raw(String::from_utf8_lossy(&v).into_owned());
        // A key whose record was never written (crash mid-create) names nothing.
        Ok(self.read(&id)?.is_some().then_some(id))
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        let rk = key(b"s/", id.as_str());
        let Some(bytes) = self.read(id)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SagaEvent> = Vec::new();
        for kv in self.tree.scan_prefix(chunk_prefix(id)) {
            let (k, chunk) = kv.map_err(io)?;
            out.extend(decode_events(CHUNK_FORMAT, id, &k, &chunk)?);
        }
        for e in Value::parse(&rk, &bytes)?.events(id, &rk)? {
            // Spilled, and still embedded after a crash mid-spill.
            if out.last().is_none_or(|last| e.seq > last.seq) {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::new();
        let mut repaired = 0usize;
        for kv in self.tree.scan_prefix(b"a/") {
            let (ak, _) = kv.map_err(io)?;
            if let Some(r) = self.check_active(&ak, &mut repaired).await? {
                out.push(r);
            }
        }
        if repaired > 0 {
            tracing::info!(repaired, "repaired index entries of interrupted writes");
            self.commit.durable().await?;
        }
        Ok(out)
    }

    async fn list_resumable(&self) -> Result<Resumable, StoreError> {
        // Parked entries (8 bytes: the wake time) are not loaded: a store
        // full of waiting sagas opens by reading its index only. Everything
        // else goes through `list_active`'s checks and repairs.
        let mut out = Resumable::default();
        let mut repaired = 0usize;
        for kv in self.tree.scan_prefix(b"a/") {
            let (ak, v) = kv.map_err(io)?;
            match <[u8; 8]>::try_from(&v[..]) {
                Ok(t) => {
                    let id = SagaId::from_raw(String::from_utf8_lossy(&ak[2..]).into_owned());
                    out.parked.push((id, u64::from_be_bytes(t)));
                }
                Err(_) => {
                    if let Some(r) = self.check_active(&ak, &mut repaired).await? {
                        out.now.push(r);
                    }
                }
            }
        }
        if repaired > 0 {
            tracing::info!(repaired, "repaired index entries of interrupted writes");
            self.commit.durable().await?;
        }
        Ok(out)
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"s/") {
            let (k, v) = kv.map_err(io)?;
            let r = Value::parse(&k, &v)?.record(&k)?;
            if r.idempotency_key.is_some() && !r.status().is_terminal() {
                // Skip records of creates that never finished (see list_active).
                let owner = self
                    .tree
                    .get(key(b"k/", r.idempotency_key.as_deref().unwrap_or_default()))
                    .map_err(io)?;
                if owner.as_deref() != Some(r.id.as_str().as_bytes()) {
                    continue;
                }
            }
            if status.is_none_or(|s| r.status() == s) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.commit.durable().await
    }

    async fn list_page(
        &self,
        filter: &SagaFilter,
        cursor: Option<&PageCursor>,
        limit: usize,
    ) -> Result<SagaPage, StoreError> {
        if filter.overdue {
            return overdue::list_page(&self.tree, filter, cursor, limit);
        }
        self.query.list_page(&self.tree, filter, cursor, limit)
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        Ok(self.query.counts())
    }

    async fn definition_pauses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::machine::PauseMark>, StoreError> {
        // `dp/{definition}` -> the pause mark, as JSON.
        let mut out = std::collections::BTreeMap::new();
        for kv in self.tree.scan_prefix(b"dp/") {
            let (k, v) = kv.map_err(io)?;
            let name = String::from_utf8_lossy(&k[3..]).into_owned();
            out.insert(
                name,
                serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?,
            );
        }
        Ok(out)
    }

    async fn set_definition_pause(
        &self,
        definition: &str,
        mark: Option<&crate::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        let k = key(b"dp/", definition);
        match mark {
            Some(m) => self
                .tree
                .insert(k, serde_json::to_vec(m).expect("pause marks serialize"))
                .map(drop),
            None => self.tree.remove(k).map(drop),
        }
        .map_err(io)?;
        self.commit.durable().await
    }

    async fn finished_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"f/") {
            let (fk, _) = kv.map_err(io)?;
            let Some((at, id)) = parse_finished_key(&fk) else {
                return Err(corrupt(&fk, "bad finish index entry"));
            };
            if at >= before_ms || out.len() >= limit {
                break;
            }
            match self.get(&id).await? {
                Some(r) if is_finished(r.status()) && r.updated_at_ms == at => out.push(r),
                // A purge that died after deleting the record: finish it.
                None => {
                    self.remove_chunks(&id)?;
                    self.tree.remove(&fk).map_err(io)?;
                }
                // An update that died before its record.
                Some(_) => {
                    self.tree.remove(&fk).map_err(io)?;
                }
            }
        }
        Ok(out)
    }

    async fn purge(&self, ids: &[SagaId], now_ms: u64) -> Result<usize, StoreError> {
        let mut purged = 0u64;
        for id in ids {
            let Some(r) = self.get(id).await? else {
                continue;
            };
            if !is_finished(r.status()) {
                continue;
            }
            // Order: retire the key (index entry first), then delete the
            // record (with the newest history), its history chunks, then
            // its finish entry (a crash before that finds the entry again
            // and finishes the job). A crash at any point leaves the saga whole or gone
            // and its key retired or still naming it, never naming nothing.
            let retire = !crate::sabotage::active(crate::sabotage::PURGE_FORGETS_KEYS);
            if let Some(k) = r.idempotency_key.as_ref().filter(|_| retire) {
                self.tree
                    .insert(retired_key(now_ms, k), &[][..])
                    .map_err(io)?;
                let _ = self
                    .tree
                    .compare_and_swap(
                        key(b"k/", k),
                        Some(id.as_str().as_bytes()),
                        Some(&retired_marker(now_ms)[..]),
                    )
                    .map_err(io)?;
            }
            if self
                .query
                .remove(&self.tree, &key(b"s/", id.as_str()), &r)?
            {
                purged += 1;
            }
            overdue::after_write(&self.tree, &r, true)?;
            self.remove_chunks(id)?;
            self.tree
                .remove(finished_key(r.updated_at_ms, id))
                .map_err(io)?;
        }
        if purged > 0 {
            let total = self.commit.purged.fetch_add(purged, Ordering::SeqCst) + purged;
            self.tree
                .insert(PURGED_KEY, &total.to_be_bytes()[..])
                .map_err(io)?;
        }
        self.commit.durable().await?;
        Ok(purged as usize)
    }

    async fn forget_keys(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut forgotten = 0;
        for kv in self.tree.scan_prefix(b"r/") {
            let (rk, _) = kv.map_err(io)?;
            if rk.len() < 10 || forgotten >= limit {
                break;
            }
            let at = u64::from_be_bytes(rk[2..10].try_into().expect("8 bytes"));
            if at >= before_ms {
                break;
            }
            let kk = key(b"k/", &String::from_utf8_lossy(&rk[10..]));
            if let Some(v) = self.tree.get(&kk).map_err(io)? {
                if retired_at(&v).is_some() {
                    let _ = self
                        .tree
                        .compare_and_swap(&kk, Some(v), None as Option<&[u8]>)
                        .map_err(io)?;
                }
            }
            self.tree.remove(&rk).map_err(io)?;
            forgotten += 1;
        }
        if forgotten > 0 {
            self.commit.durable().await?;
        }
        Ok(forgotten)
    }

    fn saga_count(&self) -> Option<u64> {
        let created = self.commit.created.load(Ordering::SeqCst);
        Some(created.saturating_sub(self.commit.purged.load(Ordering::SeqCst)))
    }

    fn flush_count(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }
}
