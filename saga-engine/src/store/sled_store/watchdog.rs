//! A guard against a lost wakeup in sled 0.34.7: a flush that sleeps
//! forever after the disk failed.
//!
//! sled's `flush` waits on a condition variable until the log is written up
//! to its mark, and checks sled's global error each time it wakes. When the
//! write of a log buffer fails in sled's `exit_reservation` path (the last
//! writer of a sealed buffer hands it to an IO thread), sled records the
//! error but does not wake the waiters (its other write paths do). A flush
//! already waiting then sleeps until something else wakes it, which under a
//! failed disk may be never: the engine's start hangs instead of failing.
//! Seen in `tests/storage_faults.rs` (about 1 trial in 500 with
//! `sync_file_range` failing): every start stuck behind a flush leader
//! parked in `make_stable_inner`, with sled's global error already set.
//!
//! Every sled write first checks the global error and, if one is set, wakes
//! the flush waiters before failing. So a flush that has run longer than
//! [`STALL`] gets a *poke*: a one-byte write to [`POKE_KEY`] from a thread
//! of the store's own. On a healthy but slow disk the poke is a harmless
//! small write; after a failure it wakes the stuck flush, which then sees
//! the error and returns it, and every waiting writer gets an error rather
//! than no answer.

use super::commit::GroupCommit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Weak};
use std::time::{Duration, Instant};

/// A flush running this long is poked (and poked again every [`TICK`]).
pub(super) const STALL: Duration = Duration::from_millis(200);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);
/// The key the poke writes (in the store's tree, beside the mark).
pub(super) const POKE_KEY: &[u8] = b"m/poke";

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since a process-wide base, never 0.
pub(super) fn now_ns() -> u64 {
    // +1 so that 0 always means "no flush under way".
    BASE.elapsed().as_nanos() as u64 + 1
}

/// When the flush under way began (0: none), and how many pokes were sent.
#[derive(Default)]
pub(super) struct FlushWatch {
    began_ns: AtomicU64,
    pub(super) pokes: AtomicU64,
}

impl FlushWatch {
    /// Marks a flush as under way until the returned guard drops.
    pub(super) fn flushing(&self) -> Flushing<'_> {
        self.began_ns.store(now_ns(), Ordering::Release);
        Flushing(self)
    }

    fn stalled(&self) -> bool {
        let began = self.began_ns.load(Ordering::Acquire);
        began != 0 && now_ns().saturating_sub(began) >= STALL.as_nanos() as u64
    }
}

/// A flush under way (see [`FlushWatch::flushing`]).
pub(super) struct Flushing<'a>(&'a FlushWatch);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.began_ns.store(0, Ordering::Release);
    }
}

/// Starts the store's watchdog thread. It holds the group commit only
/// weakly (never keeping sled open) and ends once the store is gone.
pub(super) fn spawn(commit: Weak<GroupCommit>) {
    let started = std::thread::Builder::new()
        .name("saga-flush-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            std::thread::sleep(TICK);
            let Some(c) = commit.upgrade() else { return };
            if crate::sabotage::active(crate::sabotage::FLUSH_UNWATCHED) {
                continue;
            }
            if c.watch.stalled() {
                c.watch.pokes.fetch_add(1, Ordering::Relaxed);
                // An error here is the point: sled wakes its flush waiters
                // before reporting it.
                let result = c.tree.insert(POKE_KEY, &[1u8][..]);
                tracing::debug!(
                    failed = result.is_err(),
                    "a sled flush is taking long: poked it"
                );
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the flush watchdog; a flush hung by a failed disk will not be woken");
    }
}

/// The tree [`flush_sled`] pokes (a database-wide wakeup: sled's error
/// state is per database).
const POKE_TREE: &str = "saga-engine-poke";

/// Flushes `db` as `sled::Db::flush` does (on a blocking thread), poking it
/// every [`STALL`] while the flush runs, so that a flush put to sleep by a
/// failed disk (see the module's text) wakes and returns the error. For
/// writers of a sled database other than the engine's store (participants,
/// an outbox), which flush on their own. Outside a tokio runtime it
/// flushes inline, unwatched.
pub async fn flush_sled(db: &sled::Db) -> sled::Result<usize> {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return db.flush();
    };
    let flushing = {
        let db = db.clone();
        rt.spawn_blocking(move || db.flush())
    };
    tokio::pin!(flushing);
    loop {
        tokio::select! {
            done = &mut flushing => {
                return done.unwrap_or_else(|e| Err(sled::Error::ReportableBug(e.to_string())));
            }
            _ = tokio::time::sleep(STALL) => {
                if !crate::sabotage::active(crate::sabotage::FLUSH_UNWATCHED) {
                    let poked = db.open_tree(POKE_TREE).and_then(|t| t.insert(b"p", &[1u8][..]));
                    tracing::debug!(failed = poked.is_err(), "a sled flush is taking long: poked it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::POKE_KEY;
    use crate::store::conformance::sample_record;
    use crate::store::{CreateOutcome, SledStore, Store};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A flush that cannot finish until something writes to the store (as
    /// sled's flush after a lost wakeup) is poked by the watchdog, and the
    /// write that waited for it returns. Red under `flush-unwatched`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_flush_is_poked_and_the_writer_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let tree = store.tree.clone();
        store.set_flush_hook(Some(Arc::new(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !tree.contains_key(POKE_KEY).unwrap_or(false) {
                if Instant::now() > deadline {
                    return Err("the stalled flush was never poked".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })));
        let r = sample_record("poked", Some("k"));
        assert_eq!(store.create(&r, &[]).await, Ok(CreateOutcome::Created));
        assert!(
            store
                .commit
                .watch
                .pokes
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }
}
