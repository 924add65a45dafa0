//! The plumbing every local participant shares: one instance per database
//! in a process ([`Registry`]), and one sled flush shared by every caller
//! waiting at the same moment ([`GroupFlush`]).
//!
//! Each local participant serialises its mutations under one lock and keeps
//! that lock in memory, so it must exist once per database: the registry
//! makes a second `open` on the same database return the instance already
//! open.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Instances of one kind of local participant that are open in this
/// process, by database.
pub(crate) struct Registry<T> {
    open: std::sync::Mutex<Vec<(u128, std::sync::Weak<T>)>>,
}

impl<T> Registry<T> {
    pub(crate) const fn new() -> Self {
        Registry {
            open: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The instance open on the database that holds `meta`, or a new one
    /// from `build`, recorded for the next caller. `meta_of` gives an
    /// instance's own meta tree.
    pub(crate) fn open_or_build<E>(
        &self,
        meta: &sled::Tree,
        meta_of: impl Fn(&T) -> &sled::Tree,
        build: impl FnOnce() -> Result<T, E>,
        storage: impl Fn(sled::Error) -> E,
    ) -> Result<Arc<T>, E> {
        let id = database_id(meta).map_err(&storage)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        for (other, weak) in open.iter() {
            if *other != id {
                continue;
            }
            if let Some(inner) = weak.upgrade() {
                // A copy of a database directory carries the same id: make
                // sure this is the very same database before sharing.
                if same_database(meta, meta_of(&inner)).map_err(&storage)? {
                    return Ok(inner);
                }
            }
        }
        let inner = Arc::new(build()?);
        open.push((id, Arc::downgrade(&inner)));
        Ok(inner)
    }
}

/// A random id for the database holding `meta`, made on first use.
fn database_id(meta: &sled::Tree) -> Result<u128, sled::Error> {
    let fresh: u128 = rand::thread_rng().gen();
    // Losing the race (or the id, to a crash before a flush) is harmless:
    // the id only has to be stable while the database is open.
    let _ = meta.compare_and_swap(
        b"database_id",
        None as Option<&[u8]>,
        Some(&fresh.to_be_bytes()[..]),
    )?;
    let stored = meta.get(b"database_id")?;
    Ok(stored
        .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
        .map_or(fresh, u128::from_be_bytes))
}

/// Whether two meta trees are the same tree of the same open database.
pub(super) fn same_database(a: &sled::Tree, b: &sled::Tree) -> Result<bool, sled::Error> {
    let nonce: u128 = rand::thread_rng().gen();
    a.insert(b"probe", &nonce.to_be_bytes()[..])?;
    Ok(b.get(b"probe")?.as_deref() == Some(&nonce.to_be_bytes()[..]))
}

/// Makes a participant's committed writes durable before it replies, sharing
/// one sled flush among all callers waiting at the same moment (group
/// commit). Used by every local participant and the booking store.
///
/// Never `flush_async`: in sled 0.34.7 concurrent `flush_async` calls fill
/// sled's small IO thread pool with flushes that wait for IO the pool can
/// then no longer run, and the whole process deadlocks. A blocking flush on
/// tokio's blocking pool does not.
pub(crate) struct GroupFlush {
    db: sled::Db,
    /// Tickets handed out: one per committed write that wants durability.
    committed: AtomicU64,
    /// Every ticket up to this one is durable.
    flushed: AtomicU64,
    /// One flush at a time; the waiters behind it are usually covered by it.
    flushing: Mutex<()>,
    /// Flushes actually run (for tests of the coalescing).
    pub(crate) runs: AtomicU64,
}

impl GroupFlush {
    pub(crate) fn new(db: &sled::Db) -> Self {
        GroupFlush {
            db: db.clone(),
            committed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: Mutex::new(()),
            runs: AtomicU64::new(0),
        }
    }

    /// Returns once everything committed before the call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), String> {
        // The ticket is taken after the caller's write committed, so a flush
        // that starts after reading a count >= ticket covers that write.
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _turn = self.flushing.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covered = self.committed.load(Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::Relaxed);
        // Poked while it runs long: see `saga_engine::store::flush_sled`.
        let result = saga_engine::store::flush_sled(&self.db).await;
        result.map_err(|e| e.to_string())?;
        self.flushed.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flushes_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flusher = Arc::new(GroupFlush::new(&db));
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (db, flusher) = (db.clone(), flusher.clone());
                tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), b"x".to_vec()).unwrap();
                    flusher.durable().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let runs = flusher.runs.load(Ordering::Relaxed);
        assert!((1..64).contains(&runs), "{runs} flushes for 64 writers");
        assert_eq!(flusher.flushed.load(Ordering::SeqCst), 64);
    }

    #[test]
    fn flushes_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flusher = GroupFlush::new(&db);
        db.insert(b"k", b"v".to_vec()).unwrap();
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Noop));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(flusher.durable());
        // With no runtime the flush runs inline, so the first poll finishes.
        assert!(matches!(
            fut.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(()))
        ));
    }
}
