//! A slow disk for tests: a [`FlushHook`] that holds the store's first
//! flush until the test opens the gate, so a test can act while a write is
//! applied in sled's memory but not yet durable, and can wait until the
//! flush has reached the gate ([`FlushGate::wait_entered`]).

use super::FlushHook;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Holds the first flush of the store it is hooked into until [`FlushGate::open`].
#[derive(Clone, Default)]
pub struct FlushGate {
    open: Arc<(Mutex<bool>, Condvar)>,
    calls: Arc<AtomicU32>,
    entered: Arc<tokio::sync::Notify>,
}

impl FlushGate {
    /// The hook to give [`super::SledStore::set_flush_hook`]: its first call
    /// blocks (on the flushing thread) until the gate opens; later calls pass.
    pub fn hook(&self) -> FlushHook {
        let g = self.clone();
        Arc::new(move || {
            if g.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                g.entered.notify_waiters();
                let (m, c) = &*g.open;
                let mut open = m.lock().unwrap_or_else(|e| e.into_inner());
                while !*open {
                    open = c.wait(open).unwrap_or_else(|e| e.into_inner());
                }
            }
            Ok(())
        })
    }

    /// Lets the held flush (and every later one) through.
    pub fn open(&self) {
        *self.open.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.open.1.notify_all();
    }

    /// True once a flush reached the gate.
    pub fn entered(&self) -> bool {
        self.calls.load(Ordering::SeqCst) > 0
    }

    /// Returns once a flush has reached the gate (at once if one has).
    pub async fn wait_entered(&self) {
        loop {
            let signalled = self.entered.notified();
            tokio::pin!(signalled);
            // Registered before the look, so a flush entering after it
            // wakes this wait.
            signalled.as_mut().enable();
            if self.entered() {
                return;
            }
            signalled.await;
        }
    }
}
