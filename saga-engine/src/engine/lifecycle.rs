//! The engine's life: resuming sagas found at open or claimed from a shared
//! store, renewing leases, background retention, and graceful shutdown.

use super::{Engine, Inner, UnregisteredSaga};
use crate::machine::{Input, SagaStatus};
use crate::retention::{self};
use crate::store::{SagaRecord, StoreError};
use crate::{Error, SagaId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

impl Engine {
    /// Stops accepting new sagas, lets steps under way finish for up to
    /// `grace`, then stops every worker. What is unfinished stays persisted
    /// and resumes at the next open.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
        let owned: Vec<SagaId> = self.inner.lock_workers().keys().cloned().collect();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left: Vec<watch::Receiver<Option<SagaStatus>>> = self
                .inner
                .lock_workers()
                .values()
                .map(|w| w.outcome.clone())
                .collect();
            if left.is_empty() {
                break;
            }
            let all = async {
                for mut rx in left {
                    let _ = rx.wait_for(|_| false).await;
                }
            };
            if tokio::time::timeout_at(deadline, all).await.is_err() {
                let tasks: Vec<_> = self
                    .inner
                    .lock_workers()
                    .drain()
                    .filter_map(|(_, w)| w.task)
                    .collect();
                tracing::warn!(
                    aborted = tasks.len(),
                    "shutdown grace ran out; aborting workers (they resume at the next open)"
                );
                for t in tasks {
                    t.abort();
                }
                break;
            }
        }
        if self.inner.store.is_shared() && !owned.is_empty() {
            if let Err(e) = self.inner.store.release(&self.inner.owner, &owned).await {
                tracing::warn!(error = %e, "could not release leases; they expire on their own");
            }
        }
    }
}

impl Inner {
    /// Spawns a worker for a saga found in the store, or reports it as
    /// unregistered. True when it runs.
    pub(super) fn resume_or_report(self: &Arc<Self>, rec: SagaRecord) -> bool {
        match self.definition_for(&rec) {
            Ok(def) => {
                self.spawn(def, rec, Some(Input::Resume));
                true
            }
            Err(reason) => {
                let mut un = self.lock_unregistered();
                if !un.iter().any(|u| u.id == rec.id) {
                    tracing::error!(saga_id = %rec.id, definition = %rec.definition, version = rec.version,
                        %reason, "saga left untouched: its definition is not registered");
                    un.push(UnregisteredSaga {
                        id: rec.id.clone(),
                        definition: rec.definition.clone(),
                        version: rec.version,
                        reason,
                    });
                }
                false
            }
        }
    }

    /// Claims sagas nobody holds and runs them; gives back at once those
    /// this process cannot run (another process may have their version).
    pub(super) async fn claim_and_spawn(self: &Arc<Self>) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let claimed = self
            .store
            .claim(&self.owner, now, self.lease_ttl_ms, 256)
            .await?;
        let mut resumed = 0;
        let mut foreign = Vec::new();
        for rec in claimed {
            if self.lock_workers().contains_key(&rec.id) {
                // A worker of ours whose lease lapsed: it will hit a
                // conflict and stop; the new generation runs afresh.
                if let Some(w) = self.lock_workers().remove(&rec.id) {
                    if let Some(t) = w.task {
                        t.abort();
                    }
                }
            }
            let id = rec.id.clone();
            if self.resume_or_report(rec) {
                resumed += 1;
            } else {
                foreign.push(id);
            }
        }
        if !foreign.is_empty() {
            self.store.release(&self.owner, &foreign).await?;
        }
        Ok(resumed)
    }

    /// Renews this process's leases and claims abandoned sagas, every third
    /// of the lease, until shutdown.
    pub(super) async fn lease_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let every = Duration::from_millis((self.lease_ttl_ms / 3).max(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let leases: Vec<(SagaId, u64)> = self
                .lock_workers()
                .iter()
                .map(|(id, w)| (id.clone(), w.generation))
                .collect();
            let now = self.clock.now_ms();
            match self
                .store
                .renew(&self.owner, &leases, now, self.lease_ttl_ms)
                .await
            {
                Ok(lost) => {
                    for id in lost {
                        if let Some(w) = self.lock_workers().remove(&id) {
                            tracing::warn!(saga_id = %id, "lease lost to another process; stopping its worker");
                            if let Some(t) = w.task {
                                t.abort();
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            if let Err(e) = self.claim_and_spawn().await {
                tracing::warn!(error = %e, "claiming sagas failed");
            }
        }
    }

    /// Runs retention passes until shutdown.
    pub(super) async fn retention_loop(self: Arc<Self>) {
        let Some(policy) = self.retention.clone() else {
            return;
        };
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(policy.every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            match retention::pass(&*self.store, &policy, self.clock.now_ms()).await {
                Ok(r) if r.purged > 0 || r.keys_forgotten > 0 => {
                    tracing::info!(
                        purged = r.purged,
                        keys_forgotten = r.keys_forgotten,
                        "retention pass"
                    );
                }
                Ok(_) => {}
                Err(Error::Store(StoreError::Unsupported(what))) => {
                    tracing::warn!(
                        what,
                        "the store does not support retention; finished sagas are kept"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; retrying at the next one")
                }
            }
        }
    }
}
