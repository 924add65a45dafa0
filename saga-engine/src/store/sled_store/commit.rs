//! Group commit: many writers share one sled flush, and the high-water
//! mark that lets a reopened store notice it lost acknowledged data.
//!
//! A writer applies its write, takes a ticket and waits until a flush
//! covering its ticket is done; writers that arrive during a flush share
//! the next one, led by one of the waiting writers. Before each flush the
//! mark (flush ticket, creates acknowledged) goes into sled, after it into
//! [`HWM_FILE`] beside sled's files.
//!
//! A leader first *gathers* (see [`super::gather`]): the writers the last
//! flush released that said they will write again (a saga's next step)
//! come back within microseconds, and the leader waits for them, up to the
//! last flush's duration, so that they share this flush instead of leaving
//! them the next one.

use super::gather::{self, Batch};
use super::layout::PURGED_KEY;
use crate::store::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// Writes whose writer said it will not write again soon (a saga's
    /// last write, an operator's), counted when ticketed.
    finals: AtomicU64,
    /// What the last flush released, for the next leader's gathering
    /// (touched by leaders only, one at a time).
    batch: std::sync::Mutex<Batch>,
    /// Leaders that waited for released writers (for tests and debugging).
    pub(super) gathers: AtomicU64,
    /// A test's fixed gathering budget in nanoseconds (0: adaptive).
    pub(super) gather_budget_ns: AtomicU64,
    /// The ticket a gathering leader waits for (`u64::MAX`: none gathers).
    gather_until: AtomicU64,
    /// When its budget is spent ([`super::watchdog::now_ns`]).
    gather_deadline_ns: AtomicU64,
    /// Wakes the gathering leader.
    gather_wake: tokio::sync::Notify,
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
            finals: AtomicU64::new(0),
            batch: std::sync::Mutex::new(Batch::new(start.seq)),
            gathers: AtomicU64::new(0),
            gather_budget_ns: AtomicU64::new(0),
            gather_until: AtomicU64::new(u64::MAX),
            gather_deadline_ns: AtomicU64::new(0),
            gather_wake: tokio::sync::Notify::new(),
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

    /// Returns once everything written before the call is durable; the
    /// writer does not announce a next write (see [`Self::durable_then`]).
    pub(super) async fn durable(&self) -> Result<(), StoreError> {
        self.durable_then(false).await
    }

    /// Returns once everything written before the call is durable.
    /// `again`: this writer will write again as soon as it is answered (a
    /// saga's next step follows), so the next leader waits for it a little
    /// (see [`super::gather`]). A lone writer never waits: it is the one
    /// the next flush expects.
    ///
    /// Cancel- and panic-safe: if the leader's future is dropped while it
    /// gathers or flushes, or the flush panics, [`LeaderGuard`] steps down
    /// and wakes the waiters, one of which leads the next flush (after a
    /// panic every waiter gets an error instead: the database is in an
    /// unknown state).
    pub(super) async fn durable_then(&self, again: bool) -> Result<(), StoreError> {
        if crate::sabotage::active(crate::sabotage::ACK_BEFORE_FLUSH) {
            return Ok(());
        }
        let mut rx = self.done.subscribe();
        if !again {
            self.finals.fetch_add(1, Ordering::SeqCst);
        }
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        self.arrived(ticket);
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
                self.gather().await;
                // Every ticket issued so far belongs to a write already
                // applied to sled's memory, so this flush covers it.
                let target = self.tickets.load(Ordering::SeqCst);
                let finals = self.finals.load(Ordering::SeqCst);
                let began = Instant::now();
                let result = self.flush_marked(target).await;
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.lock_batch().flushed(
                    target,
                    finals,
                    self.tickets.load(Ordering::SeqCst),
                    began.elapsed(),
                );
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

    /// The leader's wait for the writers the last flush released: until as
    /// many tickets as it expects were taken, or its budget is spent.
    /// It sleeps meanwhile; [`Self::arrived`] wakes it.
    async fn gather(&self) {
        let (expect, budget) = {
            let b = self.lock_batch();
            let fixed = self.gather_budget_ns.load(Ordering::Relaxed);
            let budget = match fixed {
                0 => b.budget(),
                ns => Duration::from_nanos(ns),
            };
            (b.expect, budget)
        };
        let began = Instant::now();
        // Outside a runtime nothing else runs meanwhile (and there is no
        // timer): flush at once.
        if tokio::runtime::Handle::try_current().is_err()
            || !gather::keep_waiting(
                self.tickets.load(Ordering::SeqCst),
                expect,
                Duration::ZERO,
                budget,
            )
        {
            return;
        }
        self.gathers.fetch_add(1, Ordering::Relaxed);
        let deadline = began + budget;
        self.gather_deadline_ns.store(
            super::watchdog::now_ns().saturating_add(budget.as_nanos() as u64),
            Ordering::SeqCst,
        );
        self.gather_until.store(expect, Ordering::SeqCst);
        loop {
            let woken = self.gather_wake.notified();
            tokio::pin!(woken);
            // Registered before the look: a writer taking the awaited
            // ticket after it wakes this wait.
            woken.as_mut().enable();
            if !gather::keep_waiting(
                self.tickets.load(Ordering::SeqCst),
                expect,
                began.elapsed(),
                budget,
            ) {
                break;
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        self.gather_until.store(u64::MAX, Ordering::SeqCst);
    }

    /// Wakes a gathering leader when this ticket is the one it waits for,
    /// or its budget is spent (the runtime's timer is coarser than that).
    fn arrived(&self, ticket: u64) {
        if ticket >= self.gather_until.load(Ordering::SeqCst)
            || (self.gather_until.load(Ordering::Relaxed) != u64::MAX
                && super::watchdog::now_ns() >= self.gather_deadline_ns.load(Ordering::SeqCst))
        {
            self.gather_wake.notify_one();
        }
    }

    fn lock_batch(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::GroupCommit;
    use crate::store::{FlushGate, SledStore};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    /// Long enough that a test never sees a budget run out.
    const PATIENT: Duration = Duration::from_secs(3600);
    const HANG: Duration = Duration::from_secs(30);

    fn patient_store(dir: &std::path::Path) -> (SledStore, Arc<GroupCommit>) {
        let store = SledStore::open(dir).unwrap();
        let commit = store.commit.clone();
        commit
            .gather_budget_ns
            .store(PATIENT.as_nanos() as u64, Ordering::Relaxed);
        (store, commit)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        tokio::time::timeout(HANG, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
    }

    /// Writer A (which says it writes again) has its flush held at a gate
    /// while `n` others arrive; then the gate opens, A is answered, and
    /// the leader of the next flush (one of the `n`) gathers, waiting for
    /// A. Returns the store (kept open), the commit, the `n` writers and
    /// the flush count before A.
    async fn a_released_writer_awaited(
        dir: &std::path::Path,
        n: u64,
    ) -> (
        SledStore,
        Arc<GroupCommit>,
        Vec<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>>,
        u64,
    ) {
        let (store, commit) = patient_store(dir);
        let gate = FlushGate::default();
        store.set_flush_hook(Some(gate.hook()));
        let start = commit.tickets.load(Ordering::SeqCst);
        let flushes = commit.flushes.load(Ordering::SeqCst);
        let c = commit.clone();
        let a = tokio::spawn(async move { c.durable_then(true).await });
        tokio::time::timeout(HANG, gate.wait_entered())
            .await
            .expect("A's flush reaches the gate");
        let others: Vec<_> = (0..n)
            .map(|_| {
                let c = commit.clone();
                tokio::spawn(async move { c.durable_then(false).await })
            })
            .collect();
        until("the others are ticketed", || {
            commit.tickets.load(Ordering::SeqCst) == start + n + 1
        })
        .await;
        gate.open();
        a.await.unwrap().unwrap();
        until("the next leader waits for A", || {
            commit.gathers.load(Ordering::SeqCst) >= 1
        })
        .await;
        (store, commit, others, flushes)
    }

    /// Writer A's flush is held while seven others arrive; when it ends,
    /// A (which said it writes again) is expected back: the leader of the
    /// next flush waits for it, and the seven and A share that one flush.
    /// Without the gathering the second flush starts at once and A's next
    /// write needs a third.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_flush_waits_for_a_writer_the_last_one_released() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, commit, others, flushes) = a_released_writer_awaited(dir.path(), 7).await;
        assert_eq!(commit.flushes.load(Ordering::SeqCst), flushes + 1);
        // A's next write.
        tokio::time::timeout(HANG, commit.durable_then(false))
            .await
            .expect("A's second write is answered")
            .unwrap();
        for o in others {
            o.await.unwrap().unwrap();
        }
        assert_eq!(
            commit.flushes.load(Ordering::SeqCst),
            flushes + 2,
            "the seven and A's second write shared one flush"
        );
    }

    /// A leader cancelled while it gathers (every task that could lead is
    /// aborted) steps down: the writer it waited for then leads, and is
    /// answered. Red under `flush-leader-sticks`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_cancelled_while_gathering_steps_down() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, commit, others, _) = a_released_writer_awaited(dir.path(), 3).await;
        for o in &others {
            o.abort();
        }
        for o in others {
            assert!(o.await.is_err_and(|e| e.is_cancelled()));
        }
        tokio::time::timeout(HANG, commit.durable_then(false))
            .await
            .expect("A's second write hangs: the cancelled gathering leader never stepped down")
            .unwrap();
    }

    /// A lone writer is the one writer the last flush expects back: it
    /// never waits, even with a budget it could not outlast.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_writer_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, commit) = patient_store(dir.path());
        let flushes = commit.flushes.load(Ordering::SeqCst);
        tokio::time::timeout(HANG, async {
            for i in 0..20 {
                commit.durable_then(i % 5 != 4).await.unwrap();
            }
        })
        .await
        .expect("a lone writer waited for writers that do not exist");
        assert_eq!(commit.gathers.load(Ordering::SeqCst), 0);
        assert_eq!(commit.flushes.load(Ordering::SeqCst), flushes + 20);
    }
}
