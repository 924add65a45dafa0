//! The embedded backend: one sled tree, made durable by group commit.
//!
//! A saga is one value, `s/{id}`: its revision, its record and its whole
//! history, so a transition is a single `insert` (atomic in sled) with no
//! batch or transaction and none of their global locks. Two indexes sit
//! beside it: `a/{id}` (not terminal: what to resume at open) and
//! `k/{key}` (idempotency key -> id). They are written in an order that a
//! crash at any point leaves either consistent or detectably half-done, and
//! [`Store::list_active`] repairs the half-done cases (see `create`).
//!
//! sled 0.34 keeps only what was flushed across a `kill -9`, so no write is
//! reported done before a flush that started after it has finished. A
//! writer applies its write, takes a ticket and waits until a flush covering
//! its ticket is done; writers that arrive during a flush share the next
//! one (group commit, led by one of the waiting writers). sled recovers a
//! prefix of its log, so a durable write implies every earlier one is too.

use super::{CreateOutcome, SagaRecord, Store, StoreError};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::SagaId;
use async_trait::async_trait;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

const TREE: &str = "saga_engine";
/// First byte of every saga value: the value format.
const VALUE_FORMAT: u8 = 1;

/// The sled backend (default).
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    commit: Arc<GroupCommit>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("flushes", &self.commit.flushes.load(Ordering::Relaxed))
            .finish()
    }
}

#[derive(Clone, Default)]
struct Mark {
    flushed: u64,
    error: Option<Arc<str>>,
}

/// Group commit without a thread of its own: the first writer that finds
/// no flush under way becomes the leader and flushes for everyone whose
/// write was applied before the flush began; the others wait for it, and
/// the first of them not covered leads the next flush. A lone writer
/// flushes at once, with no hand-off between threads.
struct GroupCommit {
    db: sled::Db,
    tree: sled::Tree,
    tickets: AtomicU64,
    leader: AtomicBool,
    done: watch::Sender<Mark>,
    flushes: AtomicU64,
    /// Creates acknowledged since the store was new (never decremented),
    /// for the high-water mark.
    created: AtomicU64,
    /// The high-water-mark file, when the store knows its directory.
    hwm: Option<std::fs::File>,
    /// Fault injection for tests ([`SledStore::set_flush_hook`]).
    hook: std::sync::Mutex<Option<FlushHook>>,
    /// Sagas purged by retention since the store was new.
    purged: AtomicU64,
}

/// The high-water mark: flush tickets made durable, records created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Mark16 {
    seq: u64,
    created: u64,
}

impl Mark16 {
    fn encode(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..].copy_from_slice(&self.created.to_be_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Mark16> {
        (b.len() == 16).then(|| Mark16 {
            seq: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            created: u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }
}

const HWM_KEY: &[u8] = b"m/hwm";
/// File beside sled's own, holding the last high-water mark made durable.
pub const HWM_FILE: &str = "saga-engine.hwm";

impl GroupCommit {
    fn new(
        db: sled::Db,
        tree: sled::Tree,
        start: Mark16,
        hwm: Option<std::fs::File>,
    ) -> GroupCommit {
        GroupCommit {
            db,
            tree: tree.clone(),
            tickets: AtomicU64::new(start.seq),
            leader: AtomicBool::new(false),
            done: watch::Sender::new(Mark {
                flushed: start.seq,
                error: None,
            }),
            flushes: AtomicU64::new(0),
            created: AtomicU64::new(start.created),
            hwm,
            hook: std::sync::Mutex::new(None),
            purged: AtomicU64::new(
                tree.get(PURGED_KEY)
                    .ok()
                    .flatten()
                    .and_then(|v| v.as_ref().try_into().ok())
                    .map_or(0, u64::from_be_bytes),
            ),
        }
    }

    /// Marks in sled what the coming flush makes durable, flushes, then
    /// records the mark in the side file. At open, a sled that lost records
    /// (a damaged log it silently truncated) shows an older mark, or fewer
    /// records, than the file.
    async fn flush_marked(&self, target: u64) -> sled::Result<usize> {
        let mark = Mark16 {
            seq: target,
            created: self.created.load(Ordering::SeqCst),
        };
        if self.hwm.is_some() {
            self.tree.insert(HWM_KEY, &mark.encode()[..])?;
        }
        let n = self.flush_now().await?;
        if let Some(f) = &self.hwm {
            use std::os::unix::fs::FileExt;
            // No fsync: like sled's own flush, this is kept across a process
            // crash, which is the scope of the guarantee.
            f.write_all_at(&mark.encode(), 0).map_err(sled::Error::Io)?;
        }
        Ok(n)
    }

    /// Flushes sled, blocking this thread, in the way the runtime allows.
    async fn flush_now(&self) -> sled::Result<usize> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let db = self.db.clone();
        let hook = self.lock_hook().clone();
        let flush = move || {
            if let Some(h) = &hook {
                h().map_err(|e| sled::Error::Io(std::io::Error::other(e)))?;
            }
            if crate::sabotage::active(crate::sabotage::NO_FLUSH) {
                return Ok(0);
            }
            db.flush()
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(flush),
            Ok(_) => tokio::task::spawn_blocking(flush)
                .await
                .unwrap_or_else(|e| Err(sled::Error::ReportableBug(e.to_string()))),
            Err(_) => flush(),
        }
    }

    fn lock_hook(&self) -> std::sync::MutexGuard<'_, Option<FlushHook>> {
        self.hook.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once everything written before the call is durable.
    ///
    /// Cancel- and panic-safe: if the leader's future is dropped while it
    /// flushes, or the flush panics, [`LeaderGuard`] steps down and wakes
    /// the waiters, one of which leads the next flush (after a panic every
    /// waiter gets an error instead: the database is in an unknown state).
    async fn durable(&self) -> Result<(), StoreError> {
        if crate::sabotage::active(crate::sabotage::ACK_BEFORE_FLUSH) {
            return Ok(());
        }
        let mut rx = self.done.subscribe();
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            {
                let m = rx.borrow_and_update();
                if m.flushed >= ticket {
                    return Ok(());
                }
                if let Some(e) = &m.error {
                    return Err(StoreError::Io(e.to_string()));
                }
            }
            if !self.leader.swap(true, Ordering::AcqRel) {
                let guard = LeaderGuard { commit: self };
                // Let writers that are ready to run on this thread (woken by
                // the previous flush) apply their writes first, so that this
                // flush covers them too instead of leaving them the next one.
                tokio::task::yield_now().await;
                // Every ticket issued so far belongs to a write already
                // applied to sled's memory, so this flush covers it.
                let target = self.tickets.load(Ordering::SeqCst);
                let result = self.flush_marked(target).await;
                self.flushes.fetch_add(1, Ordering::Relaxed);
                std::mem::forget(guard);
                // Step down before announcing, so that a waiter who saw a
                // flush under way is sure to see this announcement.
                self.leader.store(false, Ordering::Release);
                self.done.send_modify(|m| match &result {
                    Ok(_) => m.flushed = m.flushed.max(target),
                    Err(e) => {
                        tracing::error!(error = %e, "sled flush failed; the store must be reopened");
                        m.error = Some(Arc::from(e.to_string()));
                    }
                });
                continue;
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Io("the store was dropped".into()));
            }
        }
    }
}

/// Held by the leader of a flush. Dropped without being forgotten means the
/// flush did not finish normally: the leader's future was cancelled (a
/// timeout around a write, a dropped request) or the flush panicked.
struct LeaderGuard<'a> {
    commit: &'a GroupCommit,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if crate::sabotage::active(crate::sabotage::FLUSH_LEADER_STICKS) {
            return;
        }
        let panicked = std::thread::panicking();
        self.commit.leader.store(false, Ordering::Release);
        // Wakes every waiter: one of them leads the next flush.
        self.commit.done.send_modify(|m| {
            if panicked && m.error.is_none() {
                m.error = Some(Arc::from(
                    "the sled flush panicked; the store must be reopened",
                ));
            }
        });
        if panicked {
            tracing::error!("sled flush panicked; the store must be reopened");
        } else {
            tracing::debug!("a flush leader was cancelled; another writer takes over");
        }
    }
}

/// Called before every flush, on the thread that flushes: a test's way to
/// make the disk slow (block), failing (return an error) or broken (panic).
pub type FlushHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Opens a sled database for the engine (and anything sharing its
/// directory), working around a sled 0.34 recovery bug, and turning sled's
/// failures (and its panics on some damaged files) into an error that
/// names the directory.
///
/// sled writes a snapshot to `snap.<lsn>.generating`, syncs it and renames
/// it; a process killed before the rename leaves a partial file that sled
/// 0.34.7 then picks as its newest snapshot and refuses to open with
/// `Corruption { at: None }` (sled issues #1527, #1533; seen here about
/// once per 600 SIGKILLs). Such a file is incomplete by construction and
/// sled recovers from the previous snapshot and its log, so it is removed.
///
/// The files are removed only while holding sled's own lock on the
/// directory (an exclusive `flock` on its `db` file), so that opening the
/// directory of a live process fails instead of deleting the snapshot that
/// process is writing.
pub fn open_sled_db(path: &Path) -> Result<sled::Db, StoreError> {
    remove_half_written_snapshots(path)?;
    let mut config = sled::Config::new().path(path);
    if crate::sabotage::active(crate::sabotage::NO_FLUSH) {
        // Nor may sled's own periodic flush save what we do not.
        config = config.flush_every_ms(None);
    }
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::Io(format!("opening {}: {e}", path.display()))),
        Err(_) => Err(StoreError::Damaged {
            path: path.display().to_string(),
            detail: "sled could not read its files".into(),
        }),
    }
}

/// See [`open_sled_db`]: under the directory's lock, or not at all.
fn remove_half_written_snapshots(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::io::AsRawFd;
    let Ok(entries) = std::fs::read_dir(path) else {
        return Ok(()); // A new directory: nothing to repair.
    };
    let half_written: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && name.ends_with(".generating")
        })
        .map(|e| e.path())
        .collect();
    if half_written.is_empty() {
        return Ok(());
    }
    let lock_path = path.join("db");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::Io(format!("opening {}: {e}", lock_path.display())))?;
    // SAFETY: flock on a descriptor we own; it takes no pointers.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StoreError::Io(format!(
            "{} is in use by another process (its lock is held); not touching its files",
            path.display()
        )));
    }
    for p in half_written {
        tracing::warn!(file = %p.display(), "removing a snapshot that a crash left half-written");
        std::fs::remove_file(&p)
            .map_err(|err| StoreError::Io(format!("removing {}: {err}", p.display())))?;
    }
    // Closing the file releases the lock, for sled to take at once (flock
    // locks are per open file, so sled could not take it while we hold it).
    drop(lock);
    Ok(())
}

/// Finished for retention: ended for good (a stuck saga is not).
fn is_finished(status: SagaStatus) -> bool {
    matches!(status, SagaStatus::Completed | SagaStatus::Compensated)
}

/// `f/{finished at, ms, BE}{id}`: finished sagas in the order they ended.
fn finished_key(at_ms: u64, id: &SagaId) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + id.as_str().len());
    k.extend_from_slice(b"f/");
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn parse_finished_key(k: &[u8]) -> Option<(u64, SagaId)> {
    let at = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
    let id = std::str::from_utf8(k.get(10..)?).ok()?;
    Some((at, SagaId::from_raw(id.to_string())))
}

/// `r/{retired at, ms, BE}{key}`: retired idempotency keys, oldest first.
fn retired_key(at_ms: u64, k: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + k.len());
    out.extend_from_slice(b"r/");
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(k.as_bytes());
    out
}

/// The value of `k/{key}` once its saga is purged: a zero byte (no saga id
/// starts with one) and the purge time.
fn retired_marker(at_ms: u64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[1..].copy_from_slice(&at_ms.to_be_bytes());
    v
}

fn retired_at(v: &[u8]) -> Option<u64> {
    (v.len() == 9 && v[0] == 0).then(|| u64::from_be_bytes(v[1..].try_into().expect("8 bytes")))
}

const PURGED_KEY: &[u8] = b"m/purged";

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// A saga's value: `[format u8][revision u64 BE][record len u32 BE][record
/// JSON]` then the history, each event as `[len u32 BE][event JSON]`. New
/// events are appended to the old bytes without decoding them.
struct Value<'a> {
    revision: u64,
    record: &'a [u8],
    events: &'a [u8],
}

impl<'a> Value<'a> {
    fn parse(key: &[u8], bytes: &'a [u8]) -> Result<Value<'a>, StoreError> {
        if bytes.len() < 13 || bytes[0] != VALUE_FORMAT {
            return Err(corrupt(key, "unknown value format"));
        }
        let revision = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
        let record = bytes
            .get(13..13 + len)
            .ok_or_else(|| corrupt(key, "truncated record"))?;
        Ok(Value {
            revision,
            record,
            events: &bytes[13 + len..],
        })
    }

    fn record(&self, key: &[u8]) -> Result<SagaRecord, StoreError> {
        serde_json::from_slice(self.record).map_err(|e| corrupt(key, e))
    }

    fn events(&self, key: &[u8]) -> Result<Vec<SagaEvent>, StoreError> {
        let mut out = Vec::new();
        let mut rest = self.events;
        while !rest.is_empty() {
            let len = rest
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| corrupt(key, "truncated event length"))?;
            let body = rest
                .get(4..4 + len)
                .ok_or_else(|| corrupt(key, "truncated event"))?;
            out.push(serde_json::from_slice(body).map_err(|e| corrupt(key, e))?);
            rest = &rest[4 + len..];
        }
        Ok(out)
    }
}

fn encode_value(record: &SagaRecord, old_events: &[u8], new_events: &[SagaEvent]) -> Vec<u8> {
    // Our record types contain only strings, numbers and JSON values:
    // serializing them cannot fail.
    let rec = serde_json::to_vec(record).expect("saga records always serialize");
    let mut v = Vec::with_capacity(13 + rec.len() + old_events.len() + 160 * new_events.len());
    v.push(VALUE_FORMAT);
    v.extend_from_slice(&record.revision.to_be_bytes());
    v.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    v.extend_from_slice(&rec);
    v.extend_from_slice(old_events);
    for e in new_events {
        let body = serde_json::to_vec(e).expect("saga events always serialize");
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
    }
    v
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

    /// Uses a tree of an already open database, so that participants can
    /// keep their own trees in the same data directory. Without the
    /// directory there is no high-water mark: prefer [`SledStore::with_db_at`].
    pub fn with_db(db: sled::Db) -> Result<SledStore, StoreError> {
        let tree = db.open_tree(TREE).map_err(io)?;
        let start = Self::current_mark(&tree)?;
        let commit = Arc::new(GroupCommit::new(db.clone(), tree.clone(), start, None));
        Ok(SledStore { db, tree, commit })
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
        let commit = Arc::new(GroupCommit::new(
            db.clone(),
            tree.clone(),
            start,
            Some(file),
        ));
        Ok(SledStore { db, tree, commit })
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

    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn read(&self, id: &SagaId) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(key(b"s/", id.as_str())).map_err(io)
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
        self.tree
            .insert(&rk, encode_value(record, &[], events))
            .map_err(io)?;
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
                            self.tree.remove(&rk).map_err(io)?;
                            self.tree.remove(&ak).map_err(io)?;
                            return Ok(CreateOutcome::Retired { purged_at_ms });
                        }
                        let owner_id =
                            SagaId::from_raw(String::from_utf8_lossy(&owner).into_owned());
                        match self.get(&owner_id).await? {
                            Some(existing) => {
                                // Lost the race (or a replay): undo our record.
                                self.tree.remove(&rk).map_err(io)?;
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
        self.commit.created.fetch_add(1, Ordering::SeqCst);
        self.commit.durable().await?;
        Ok(CreateOutcome::Created)
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let rk = key(b"s/", record.id.as_str());
        let old = self.tree.get(&rk).map_err(io)?;
        let (found, old_events) = match &old {
            Some(bytes) => {
                let v = Value::parse(&rk, bytes)?;
                (Some(v.revision), v.events)
            }
            None => (None, &[][..]),
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
            if !self.tree.contains_key(&ak).map_err(io)? {
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
        self.tree
            .insert(&rk, encode_value(record, old_events, events))
            .map_err(io)?;
        if terminal {
            // After the record: a crash in between leaves an index entry
            // for a terminal saga, which `list_active` skips and removes.
            self.tree.remove(&ak).map_err(io)?;
        }
        self.commit.durable().await
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
        match self.read(id)? {
            Some(bytes) => Value::parse(&rk, &bytes)?.events(&rk),
            None => Ok(Vec::new()),
        }
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        let mut out = Vec::new();
        let mut repaired = 0usize;
        for kv in self.tree.scan_prefix(b"a/") {
            let (ak, _) = kv.map_err(io)?;
            let id = SagaId::from_raw(String::from_utf8_lossy(&ak[2..]).into_owned());
            let record = match self.get(&id).await? {
                Some(r) => r,
                None => {
                    // Index written, record not: a create that died.
                    self.tree.remove(&ak).map_err(io)?;
                    repaired += 1;
                    continue;
                }
            };
            if record.status().is_terminal() {
                self.tree.remove(&ak).map_err(io)?;
                repaired += 1;
                continue;
            }
            if let Some(k) = &record.idempotency_key {
                let owner = self.tree.get(key(b"k/", k)).map_err(io)?;
                if owner.as_deref() != Some(id.as_str().as_bytes()) {
                    // Record written, key not (or taken over): never
                    // acknowledged, so it must not run.
                    // Never counted: `created` counts acknowledged creates.
                    self.tree.remove(key(b"s/", id.as_str())).map_err(io)?;
                    self.tree.remove(&ak).map_err(io)?;
                    repaired += 1;
                    continue;
                }
            }
            out.push(record);
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
                // Purged already, or an update that died before its record.
                _ => {
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
            // saga (record and history are one value), then its finish
            // entry. A crash at any point leaves the saga whole or gone
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
                .tree
                .remove(key(b"s/", id.as_str()))
                .map_err(io)?
                .is_some()
            {
                purged += 1;
            }
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

#[cfg(test)]
mod tests {
    //! Crash-in-the-middle states of a create or update, built by hand,
    //! and how the store repairs them.

    use super::*;
    use crate::store::conformance::sample_record;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_record_whose_key_was_never_written_is_not_resumed_and_is_removed() {
        let (_d, s) = store();
        let r = sample_record("orphan", Some("k1"));
        // The create died after writing index and record, before the key.
        s.tree.insert(key(b"a/", "orphan"), &[][..]).unwrap();
        s.tree
            .insert(key(b"s/", "orphan"), encode_value(&r, &[], &[]))
            .unwrap();
        assert!(s.list_active().await.unwrap().is_empty());
        assert_eq!(s.get(&r.id).await.unwrap(), None, "orphan removed");
        assert_eq!(s.find_by_key("k1").await.unwrap(), None);
        // The caller retries the start: it creates a saga normally.
        let again = sample_record("second", Some("k1"));
        assert_eq!(s.create(&again, &[]).await.unwrap(), CreateOutcome::Created);
        assert_eq!(s.find_by_key("k1").await.unwrap(), Some(again.id.clone()));
        assert_eq!(s.list_active().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_key_naming_a_missing_record_is_taken_over() {
        let (_d, s) = store();
        s.tree.insert(key(b"k/", "k2"), "ghost").unwrap();
        assert_eq!(s.find_by_key("k2").await.unwrap(), None);
        let r = sample_record("real", Some("k2"));
        assert_eq!(s.create(&r, &[]).await.unwrap(), CreateOutcome::Created);
        assert_eq!(s.find_by_key("k2").await.unwrap(), Some(r.id.clone()));
    }

    #[tokio::test]
    async fn index_entries_of_missing_or_terminal_records_are_skipped_and_removed() {
        let (_d, s) = store();
        s.tree.insert(key(b"a/", "missing"), &[][..]).unwrap();
        let mut done = sample_record("done", None);
        done.state.status = SagaStatus::Compensated;
        s.tree.insert(key(b"a/", "done"), &[][..]).unwrap();
        s.tree
            .insert(key(b"s/", "done"), encode_value(&done, &[], &[]))
            .unwrap();
        let live = sample_record("live", None);
        s.create(&live, &[]).await.unwrap();
        let active = s.list_active().await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].id, live.id);
        assert!(!s.tree.contains_key(key(b"a/", "missing")).unwrap());
        assert!(!s.tree.contains_key(key(b"a/", "done")).unwrap());
    }

    #[tokio::test]
    async fn a_half_written_snapshot_left_by_a_crash_does_not_block_opening() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample_record("kept", None);
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.create(&r, &[]).await.unwrap();
        }
        // What a process killed while sled wrote a snapshot leaves behind.
        std::fs::write(
            dir.path().join("snap.7FFFFFFFFFFFFFFF.generating"),
            b"partial",
        )
        .unwrap();
        assert!(
            sled::open(dir.path()).is_err(),
            "sled alone refuses such a directory (the bug worked around)"
        );
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&r.id).await.unwrap(), Some(r));
    }

    #[tokio::test]
    async fn a_damaged_value_is_reported_as_corrupt_not_a_panic() {
        let (_d, s) = store();
        s.tree.insert(key(b"s/", "bad"), &[9u8, 1, 2][..]).unwrap();
        let err = s.get(&SagaId::from_raw("bad".into())).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let r = sample_record("trunc", None);
        let mut v = encode_value(&r, &[], &[]);
        v.truncate(v.len() - 3);
        s.tree.insert(key(b"s/", "trunc"), v).unwrap();
        assert!(matches!(
            s.get(&r.id).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
