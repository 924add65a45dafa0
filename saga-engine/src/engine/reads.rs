//! Reading sagas: waiting for an outcome, a record, its history, lists,
//! the event stream and the engine's counters.

use super::{Engine, UnregisteredSaga};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::store::{SagaRecord, Store};
use crate::{Error, SagaId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

impl Engine {
    /// A durability barrier: returns once everything the store holds so far
    /// is durable (see [`Store::durable`]). Call it before acknowledging a
    /// saga found by [`Engine::find_by_key`], [`Engine::status`] or
    /// [`Engine::list`]: a read can see a start whose flush is still under
    /// way, or failed.
    pub async fn durable(&self) -> Result<(), Error> {
        Ok(self.inner.store.durable().await?)
    }

    /// Waits until the saga reaches a terminal status and returns its
    /// record (through any number of durable waits).
    pub async fn wait(&self, id: &SagaId) -> Result<SagaRecord, Error> {
        let mut shutdown = self.inner.shutdown.subscribe();
        // Only a saga found parked needs the event stream. A receiver sees
        // (and on drop walks) every saga's events while it lives, which at
        // high concurrency cost more than the rest of `wait`; so the first
        // look goes without one, and a parked saga is looked at again with
        // one subscribed before the look.
        let mut watch_events = false;
        loop {
            // Subscribed before looking, so nothing that happens after the
            // look is missed.
            let mut events = watch_events.then(|| self.inner.events.subscribe());
            let mut rx = self.inner.lock_workers().get(id).map(|w| w.outcome.clone());
            if rx.is_none() {
                // Found by its key (a replayed start), the saga may be written
                // while its start has not yet registered the worker: that start
                // holds the key's stripe lock until it has.
                if let Some(k) = self
                    .inner
                    .store
                    .get(id)
                    .await?
                    .filter(|r| !r.status().is_terminal())
                    .and_then(|r| r.idempotency_key)
                {
                    let _registered = self.inner.start_lock(&k).await;
                    rx = self.inner.lock_workers().get(id).map(|w| w.outcome.clone());
                }
            }
            if let Some(mut rx) = rx {
                // The sender is dropped when the worker exits (finished, shut
                // down, parked or failed); the record tells which.
                let _ = rx.wait_for(|s| s.is_some()).await;
            }
            let mut rec = self.status(id).await?;
            if self.inner.store.is_shared() {
                // Another process may own it (or take it over): watch the store.
                while !rec.status().is_terminal()
                    && !self.inner.shutting_down.load(Ordering::SeqCst)
                    && self.inner.definition_for(&rec).is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    rec = self.status(id).await?;
                }
            }
            if rec.status().is_terminal() {
                return Ok(rec);
            }
            let mut parked =
                rec.state.parked_until().is_some() || self.inner.lock_workers().contains_key(id);
            if !parked {
                // A hand-over (a timer waking a parked saga, a signal to
                // one) writes the record and then registers its worker,
                // under the saga's lock: seen in between, look again under
                // the lock (found by waits_crash: "no worker runs it").
                let _handed_over = self.inner.saga_lock(id).await;
                let again = self.status(id).await?;
                parked = again.status().is_terminal()
                    || again.state.parked_until().is_some()
                    || self.inner.lock_workers().contains_key(id);
                if parked {
                    continue;
                }
            }
            if !parked
                || self.inner.shutting_down.load(Ordering::SeqCst)
                || self.inner.store.is_shared()
                || self.inner.definition_for(&rec).is_err()
            {
                return Err(self.inner.not_runnable(
                    &rec,
                    "wait: no worker runs it (engine shutting down or storage failed)",
                ));
            }
            // Parked in a durable wait: the next event of this saga (its
            // wake, a signal, a cancel) is the moment to look again.
            let Some(events) = events.as_mut() else {
                watch_events = true;
                continue;
            };
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Ok(e) if &e.saga_id == id => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                }
            }
        }
    }

    /// The saga's current record.
    pub async fn status(&self, id: &SagaId) -> Result<SagaRecord, Error> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// The saga started with `key`, if any.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, Error> {
        Ok(self.inner.store.find_by_key(key).await?)
    }

    /// The saga's full history.
    pub async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, Error> {
        let h = self.inner.store.history(id).await?;
        if h.is_empty() && self.inner.store.get(id).await?.is_none() {
            return Err(Error::NotFound(id.clone()));
        }
        Ok(h)
    }

    /// Sagas, oldest first, optionally only those with `status`.
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, Error> {
        Ok(self.inner.store.list(status, limit).await?)
    }

    /// A stream of every saga's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SagaEvent> {
        self.inner.events.subscribe()
    }

    /// Sagas in the store that this engine cannot run (unregistered definition).
    pub fn unregistered(&self) -> Vec<UnregisteredSaga> {
        self.inner.lock_unregistered().clone()
    }

    /// Sagas parked in a durable wait in this process right now: they have
    /// no worker, only an entry in the timer index.
    pub fn parked_count(&self) -> usize {
        self.inner.lock_timers().len()
    }

    /// Sagas with a worker in this process right now.
    pub fn running_count(&self) -> usize {
        self.inner.lock_workers().len()
    }

    /// Times the store made writes durable (see [`Store::flush_count`]).
    pub fn flush_count(&self) -> u64 {
        self.inner.store.flush_count()
    }

    /// The store the engine runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }
}
