//! Group commit: many writers share one sled flush, and the high-water
//! mark that lets a reopened store notice it lost acknowledged data.
//!
//! A writer applies its write, takes a ticket and waits until a flush
//! covering its ticket is done; writers that arrive during a flush share
//! the next one, led by one of the waiting writers. Before each flush the
//! mark (flush ticket, creates acknowledged) goes into sled, after it into
//! [`HWM_FILE`] beside sled's files.

use super::layout::PURGED_KEY;
use crate::store::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

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
pub(super) struct GroupCommit {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    tickets: AtomicU64,
    leader: AtomicBool,
    done: watch::Sender<Mark>,
    pub(super) flushes: AtomicU64,
    /// Creates acknowledged since the store was new (never decremented),
    /// for the high-water mark.
    pub(super) created: AtomicU64,
    /// The high-water-mark file, when the store knows its directory.
    pub(super) hwm: Option<std::fs::File>,
    /// Fault injection for tests ([`SledStore::set_flush_hook`]).
    pub(super) hook: std::sync::Mutex<Option<FlushHook>>,
    /// Sagas purged by retention since the store was new.
    pub(super) purged: AtomicU64,
    /// The flush under way, for the watchdog ([`super::watchdog`]).
    pub(super) watch: super::watchdog::FlushWatch,
}

/// The high-water mark: flush tickets made durable, records created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Mark16 {
    pub(super) seq: u64,
    pub(super) created: u64,
}

impl Mark16 {
    pub(super) fn encode(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..].copy_from_slice(&self.created.to_be_bytes());
        b
    }
    pub(super) fn decode(b: &[u8]) -> Option<Mark16> {
        (b.len() == 16).then(|| Mark16 {
            seq: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            created: u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }
}

pub(super) const HWM_KEY: &[u8] = b"m/hwm";
/// File beside sled's own, holding the last high-water mark made durable.
pub const HWM_FILE: &str = "saga-engine.hwm";

impl GroupCommit {
    /// The group commit of a store, with its flush watchdog running.
    pub(super) fn start(
        db: sled::Db,
        tree: sled::Tree,
        start: Mark16,
        hwm: Option<std::fs::File>,
    ) -> Arc<GroupCommit> {
        let commit = Arc::new(GroupCommit::new(db, tree, start, hwm));
        super::watchdog::spawn(Arc::downgrade(&commit));
        commit
    }

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
            watch: Default::default(),
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
        let _flushing = self.watch.flushing();
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(flush),
            Ok(_) => tokio::task::spawn_blocking(flush)
                .await
                .unwrap_or_else(|e| Err(sled::Error::ReportableBug(e.to_string()))),
            Err(_) => flush(),
        }
    }

    pub(super) fn lock_hook(&self) -> std::sync::MutexGuard<'_, Option<FlushHook>> {
        self.hook.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once everything written before the call is durable.
    ///
    /// Cancel- and panic-safe: if the leader's future is dropped while it
    /// flushes, or the flush panics, [`LeaderGuard`] steps down and wakes
    /// the waiters, one of which leads the next flush (after a panic every
    /// waiter gets an error instead: the database is in an unknown state).
    pub(super) async fn durable(&self) -> Result<(), StoreError> {
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

/// The store's group commit, shared with whatever else writes to the same
/// sled database in this process (the booking's in-process participants).
///
/// One flush of a sled database covers every write applied to it before the
/// flush began, whichever tree it went to. A participant that lives in the
/// engine's database therefore need not flush the effect of a step on its
/// own: the engine writes the step's result after the step returns and
/// flushes before it acts on it, and that flush covers the effect too. A
/// crash before it leaves the step in doubt, and the step is retried under
/// the same idempotency key. Writes that are not a step's (an account
/// opened over the API) wait for [`Durability::durable`], which joins the
/// engine's group commit instead of running a flush of its own.
#[derive(Clone)]
pub struct Durability {
    commit: Arc<GroupCommit>,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("flushes", &self.flushes())
            .finish()
    }
}

impl Durability {
    pub(super) fn new(commit: Arc<GroupCommit>) -> Durability {
        Durability { commit }
    }

    /// Returns once everything written to the database before the call is
    /// durable (sharing the engine's flushes).
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.commit.durable().await
    }

    /// The database whose writes this handle makes durable.
    pub fn db(&self) -> &sled::Db {
        &self.commit.db
    }

    /// Flushes run so far (by the engine's writers and this handle's).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }
}
