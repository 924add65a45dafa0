//! The runtime: a registry of definitions, one tokio task per running saga,
//! durable retry timers, recovery on open, cancellation, operator retry,
//! graceful shutdown and a stream of events.
//!
//! Each worker loops: carry out the current decision, feed the outcome to
//! the state machine, persist the new state (durably), publish its events,
//! and only then carry out the next decision.

use crate::clock::{Clock, SystemClock};
use crate::definition::{Erased, ErasedDefinition, SagaDefinition, StepContext, StepError};
use crate::events::{EventKind, SagaEvent};
use crate::machine::{Ctx, Decision, FailureKind, Input, SagaState, SagaStatus};
use crate::retention::{self, PurgeReport, Retention};
use crate::store::{
    fingerprint, CreateOutcome, Lease, SagaRecord, Store, StoreError, RECORD_FORMAT,
};
use crate::{Error, SagaId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

mod group;
mod waits;
pub use waits::SignalOutcome;

/// A saga found in the store whose definition (name, version and steps) is
/// not registered in this engine. It is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisteredSaga {
    /// The saga.
    pub id: SagaId,
    /// Its definition's name.
    pub definition: String,
    /// Its definition's version.
    pub version: u32,
    /// Why it cannot run.
    pub reason: String,
}

const START_STRIPES: usize = 1024;
const SAGA_STRIPES: usize = 1024;
/// How often a request looks again for a saga moving between a worker and
/// the parked state before it reports the saga as not runnable.
const HANDOVER_TRIES: usize = 50;

/// Configures and opens an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    defs: Vec<Arc<dyn ErasedDefinition>>,
    clock: Arc<dyn Clock>,
    event_capacity: usize,
    seed: Option<u64>,
    owner: Option<String>,
    lease_ttl: Duration,
    retention: Option<Retention>,
}

impl EngineBuilder {
    /// Registers a saga definition. Every version whose instances may be in
    /// the store must be registered for them to resume.
    pub fn register<D>(mut self, def: SagaDefinition<D>) -> Self
    where
        D: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.defs.push(Arc::new(Erased::new(def)));
        self
    }

    /// Uses `clock` for "now" (timers, timestamps). Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Draws saga ids and backoff jitter from a generator seeded with
    /// `seed` instead of the thread's random generator, so that a run
    /// under a virtual clock repeats exactly (simulation, tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The name this engine process goes by when it owns sagas in a shared
    /// store (default: host, process id and a random suffix).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long a lease on a saga lasts in a shared store before another
    /// process may take the saga over (default 10 s). Leases are renewed
    /// every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Purges finished sagas, and later their idempotency keys, in the
    /// background (see [`Retention`]). Default: everything is kept.
    pub fn retention(mut self, policy: Retention) -> Self {
        self.retention = Some(policy);
        self
    }

    /// How many events a slow subscriber may fall behind before it misses
    /// some (it then gets `RecvError::Lagged`). Default 16,384.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Opens the engine and resumes every non-terminal saga in the store.
    pub async fn open(self) -> Result<Engine, Error> {
        let mut defs = HashMap::new();
        let mut latest: HashMap<String, u32> = HashMap::new();
        for d in self.defs {
            let key = (d.name().to_string(), d.version());
            if defs.contains_key(&key) {
                return Err(Error::InvalidDefinition {
                    name: key.0,
                    reason: format!("version {} is registered twice", key.1),
                });
            }
            let v = latest.entry(key.0.clone()).or_insert(key.1);
            *v = (*v).max(key.1);
            defs.insert(key, d);
        }
        let (events, _) = broadcast::channel(self.event_capacity);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store: self.store,
            defs,
            latest,
            clock: self.clock,
            events,
            workers: Mutex::new(HashMap::new()),
            unregistered: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            shutdown,
            control: tokio::sync::Mutex::new(()),
            rng: self.seed.map(|s| Mutex::new(StdRng::seed_from_u64(s))),
            owner: self.owner.unwrap_or_else(|| {
                format!(
                    "{}-{}-{:08x}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".into()),
                    std::process::id(),
                    rand::random::<u32>()
                )
            }),
            lease_ttl_ms: self.lease_ttl.as_millis() as u64,
            start_locks: (0..START_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            retention: self.retention,
            timers: Mutex::new(std::collections::BTreeSet::new()),
            timer_wake: Arc::new(tokio::sync::Notify::new()),
            saga_locks: (0..SAGA_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        if inner.store.is_shared() {
            // Several processes share the store: take what nobody holds,
            // then keep renewing and claiming in the background.
            let resumed = inner.claim_and_spawn().await?;
            if resumed > 0 {
                tracing::info!(resumed, owner = %inner.owner, "claimed sagas in a shared store");
            }
            tokio::spawn(inner.clone().lease_loop());
        } else {
            // Sagas in a durable wait are not loaded: their id and wake
            // time go to the timer index, and a timer task wakes them.
            let resumable = inner.store.list_resumable().await?;
            let mut resumed = 0usize;
            for rec in resumable.now {
                if inner.resume_or_report(rec) {
                    resumed += 1;
                }
            }
            let parked = resumable.parked.len();
            inner.park_many(resumable.parked);
            if resumed > 0 || parked > 0 {
                tracing::info!(resumed, parked, "resumed sagas that were in flight");
            }
            tokio::spawn(inner.clone().timer_loop());
        }
        if inner.retention.is_some() {
            tokio::spawn(inner.clone().retention_loop());
        }
        Ok(Engine { inner })
    }
}

/// The saga engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("running", &self.running_count())
            .finish()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    defs: HashMap<(String, u32), Arc<dyn ErasedDefinition>>,
    latest: HashMap<String, u32>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<SagaEvent>,
    workers: Mutex<HashMap<SagaId, Worker>>,
    unregistered: Mutex<Vec<UnregisteredSaga>>,
    shutting_down: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Serialises operator actions on sagas that have no worker.
    control: tokio::sync::Mutex<()>,
    /// The seeded generator, if one was asked for.
    rng: Option<Mutex<StdRng>>,
    /// This process's name as a lease owner.
    owner: String,
    /// Lease length in a shared store.
    lease_ttl_ms: u64,
    /// Starts with one idempotency key are serialised (by stripe) so that a
    /// second start returns only once the first one's worker is registered.
    start_locks: Vec<tokio::sync::Mutex<()>>,
    /// What finished sagas are purged after, if anything.
    retention: Option<Retention>,
    /// Sagas parked in a durable wait, by wake time: all a waiting saga
    /// costs in memory (it has no worker).
    timers: Mutex<std::collections::BTreeSet<(u64, SagaId)>>,
    /// Wakes the timer task when an earlier timer is added.
    timer_wake: Arc<tokio::sync::Notify>,
    /// Serialises hand-overs of one saga between a worker and the parked
    /// state (park, wake, a signal or cancel for a parked saga), by stripe.
    saga_locks: Vec<tokio::sync::Mutex<()>>,
}

struct Worker {
    /// Lease generation the worker runs under (0 without leases).
    generation: u64,
    control: mpsc::UnboundedSender<Control>,
    outcome: watch::Receiver<Option<SagaStatus>>,
    task: Option<JoinHandle<()>>,
}

enum Control {
    Cancel {
        reason: String,
        ack: oneshot::Sender<Result<(), Error>>,
    },
    Signal {
        signal_id: String,
        name: String,
        payload: serde_json::Value,
        ack: oneshot::Sender<Result<SignalOutcome, Error>>,
    },
}

/// How a worker ended.
enum Exit {
    /// Finished, stopped by shutdown, or handed over elsewhere.
    Done,
    /// The saga entered a durable wait until this time: the worker goes
    /// away and the timer index holds the saga.
    Parked(u64),
}

impl Engine {
    /// Starts configuring an engine over `store`.
    pub fn builder(store: impl Store) -> EngineBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Like [`Engine::builder`], for a store shared with other owners.
    pub fn builder_arc(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            defs: Vec::new(),
            clock: Arc::new(SystemClock),
            event_capacity: 16_384,
            seed: None,
            owner: None,
            lease_ttl: Duration::from_secs(10),
            retention: None,
        }
    }

    /// Starts a saga of the latest registered version of `definition` with
    /// `input` as its data. Returns once the saga is durably recorded.
    ///
    /// With an idempotency key that already started a saga, returns that
    /// saga's id and starts nothing; if the earlier input differs, fails with
    /// [`Error::IdempotencyConflict`].
    pub async fn start<I: Serialize>(
        &self,
        definition: &str,
        input: &I,
        idempotency_key: Option<&str>,
    ) -> Result<SagaId, Error> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let version = *inner
            .latest
            .get(definition)
            .ok_or_else(|| Error::UnknownDefinition {
                name: definition.to_string(),
                version: None,
            })?;
        let def = inner.defs[&(definition.to_string(), version)].clone();
        let data = serde_json::to_value(input).map_err(|e| Error::InvalidInput {
            definition: definition.to_string(),
            reason: e.to_string(),
        })?;
        let fp = fingerprint(&serde_json::to_vec(&data).unwrap_or_default());
        let now = inner.clock.now_ms();
        let id = SagaId::from_parts(now, inner.random_u64());
        let mut rec = SagaRecord {
            revision: 0,
            v: RECORD_FORMAT,
            id: id.clone(),
            definition: def.name().to_string(),
            version,
            idempotency_key: idempotency_key.map(str::to_string),
            input_fingerprint: fp,
            next_seq: 0,
            created_at_ms: now,
            updated_at_ms: now,
            state: SagaState::grouped(def.step_names().into_iter().zip(def.groups())),
            data,
            lease: inner.store.is_shared().then(|| Lease {
                owner: inner.owner.clone(),
                generation: 1,
                expires_at_ms: now + inner.lease_ttl_ms,
            }),
        };
        rec.state.deadline_ms = def
            .deadline()
            .map(|d| now.saturating_add(d.as_millis() as u64));
        let (decision, model) = inner.step(&*def, &mut rec, Input::Start, now)?;
        let events = events_for(
            &mut rec,
            Some(EventKind::SagaStarted {
                definition: def.name().to_string(),
                version,
            })
            .into_iter()
            .chain(model),
            decision,
            now,
        );
        // The write and the worker's spawn run in a task of their own, so
        // that a caller that goes away (a timeout around `start`, a dropped
        // request) cannot leave a record written without its worker: once
        // the record may be in the store, its worker is sure to follow.
        let inner = self.inner.clone();
        let key = idempotency_key.map(str::to_string);
        let definition = definition.to_string();
        let create = async move {
            let _guard = match &key {
                Some(k) => Some(inner.start_lock(k).await),
                None => None,
            };
            match inner.store.create(&rec, &events).await? {
                CreateOutcome::Created => {
                    tracing::debug!(saga_id = %id, definition, "saga started");
                    inner.publish(events);
                    inner.spawn(def, rec, None);
                    Ok(id)
                }
                CreateOutcome::Existing(existing) => {
                    if existing.input_fingerprint != fp || existing.definition != definition {
                        return Err(Error::IdempotencyConflict {
                            key: key.unwrap_or_default(),
                            existing: existing.id.clone(),
                        });
                    }
                    Ok(existing.id.clone())
                }
                CreateOutcome::Retired { purged_at_ms } => Err(Error::KeyRetired {
                    key: key.unwrap_or_default(),
                    purged_at_ms,
                }),
            }
        };
        if crate::sabotage::active(crate::sabotage::START_INLINE) {
            return create.await;
        }
        match tokio::spawn(create).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Store(StoreError::Io(format!(
                "the start was interrupted: {e}"
            )))),
        }
    }

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
        loop {
            // Subscribed before looking, so nothing that happens after the
            // look is missed.
            let mut events = self.inner.events.subscribe();
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

    /// Asks a running saga to stop and compensate what it did. A step under
    /// way finishes first (and is compensated). Returns once the request is
    /// durable.
    pub async fn cancel(&self, id: &SagaId, reason: &str) -> Result<(), Error> {
        for _ in 0..HANDOVER_TRIES {
            let tx = self.inner.lock_workers().get(id).map(|w| w.control.clone());
            if let Some(tx) = tx {
                let (ack, rx) = oneshot::channel();
                if tx
                    .send(Control::Cancel {
                        reason: reason.to_string(),
                        ack,
                    })
                    .is_ok()
                {
                    if let Ok(r) = rx.await {
                        return r;
                    }
                }
                // The worker went away (parked, finished): look again.
                tokio::task::yield_now().await;
                continue;
            }
            match self.inner.cancel_parked(id, reason).await? {
                Some(r) => return r,
                None => continue,
            }
        }
        // No worker (any more): say why.
        let rec = self.status(id).await?;
        if rec.status().is_terminal() {
            return Err(Error::InvalidState {
                id: id.clone(),
                status: rec.status(),
                operation: "cancel",
            });
        }
        Err(self.inner.not_runnable(
            &rec,
            "cancel: no worker runs it (engine shutting down or storage failed)",
        ))
    }

    /// Retries the compensation of a `Stuck` saga (an operator action).
    pub async fn retry(&self, id: &SagaId) -> Result<(), Error> {
        let _guard = self.inner.control.lock().await;
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let mut rec = self.status(id).await?;
        if rec.status() != SagaStatus::Stuck {
            return Err(Error::InvalidState {
                id: id.clone(),
                status: rec.status(),
                operation: "retry (only a stuck saga can be retried)",
            });
        }
        let def = self
            .inner
            .definition_for(&rec)
            .map_err(|_| self.inner.not_runnable(&rec, "retry"))?;
        let now = self.inner.clock.now_ms();
        let (decision, model) = self
            .inner
            .step(&*def, &mut rec, Input::OperatorRetry, now)?;
        let events = events_for(
            &mut rec,
            std::iter::once(EventKind::OperatorRetry).chain(model),
            decision,
            now,
        );
        rec.revision += 1;
        self.inner.store.update(&rec, &events).await?;
        self.inner.publish(events);
        if self.inner.store.is_shared() {
            // Its lease has run out (a stuck saga has no worker to renew
            // it): the next claim, here or in another process, runs it.
            return Ok(());
        }
        self.inner.spawn(def, rec, None);
        Ok(())
    }

    /// Runs one retention pass now with the engine's policy (or `policy`
    /// if given): purges finished sagas past the window and forgets keys
    /// past theirs. The background task runs the same pass.
    pub async fn purge_finished(&self, policy: Option<&Retention>) -> Result<PurgeReport, Error> {
        let policy = policy
            .or(self.inner.retention.as_ref())
            .ok_or(Error::Store(StoreError::Unsupported(
                "purge without a retention policy (EngineBuilder::retention)",
            )))?;
        retention::pass(&*self.inner.store, policy, self.inner.clock.now_ms()).await
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
    fn resume_or_report(self: &Arc<Self>, rec: SagaRecord) -> bool {
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
    async fn claim_and_spawn(self: &Arc<Self>) -> Result<usize, StoreError> {
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
    async fn lease_loop(self: Arc<Self>) {
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

    /// The lock that serialises starts with key `k` (by stripe).
    async fn start_lock(&self, k: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.start_locks[(fingerprint(k.as_bytes()) % START_STRIPES as u64) as usize]
            .lock()
            .await
    }

    /// Runs retention passes until shutdown.
    async fn retention_loop(self: Arc<Self>) {
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

    fn ctx(&self, now_ms: u64) -> Ctx {
        // 53 random bits make a uniform f64 in [0, 1).
        let jitter = (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Ctx { now_ms, jitter }
    }

    fn random_u64(&self) -> u64 {
        match &self.rng {
            Some(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).gen(),
            None => rand::random(),
        }
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, HashMap<SagaId, Worker>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unregistered(&self) -> std::sync::MutexGuard<'_, Vec<UnregisteredSaga>> {
        self.unregistered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, events: Vec<SagaEvent>) {
        for e in events {
            // No subscribers is fine.
            let _ = self.events.send(e);
        }
    }

    /// The registered definition a record was started with, or why there is none.
    fn definition_for(&self, rec: &SagaRecord) -> Result<Arc<dyn ErasedDefinition>, String> {
        let def = self
            .defs
            .get(&(rec.definition.clone(), rec.version))
            .ok_or_else(|| {
                format!(
                    "definition {:?} version {} is not registered",
                    rec.definition, rec.version
                )
            })?;
        let names = def.step_names();
        let stored: Vec<&str> = rec.state.steps.iter().map(|s| s.name.as_str()).collect();
        if names.iter().map(String::as_str).ne(stored.iter().copied()) {
            return Err(format!(
                "definition {:?} version {} has steps {:?} but the saga was started with {:?}",
                rec.definition, rec.version, names, stored
            ));
        }
        let groups: Vec<Option<String>> = rec.state.steps.iter().map(|s| s.group.clone()).collect();
        if def.groups() != groups {
            return Err(format!(
                "definition {:?} version {} groups its steps as {:?} but the saga was started with {:?}",
                rec.definition,
                rec.version,
                def.groups(),
                groups
            ));
        }
        Ok(def.clone())
    }

    /// Why a non-terminal saga cannot be acted on here: its definition is
    /// not registered, or no worker runs it.
    fn not_runnable(&self, rec: &SagaRecord, operation: &'static str) -> Error {
        match self.definition_for(rec) {
            Err(_) => Error::UnregisteredVersion {
                id: rec.id.clone(),
                name: rec.definition.clone(),
                version: rec.version,
            },
            Ok(_) => Error::InvalidState {
                id: rec.id.clone(),
                status: rec.status(),
                operation,
            },
        }
    }

    fn spawn(
        self: &Arc<Self>,
        def: Arc<dyn ErasedDefinition>,
        rec: SagaRecord,
        first: Option<Input>,
    ) {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = watch::channel(None);
        let id = rec.id.clone();
        self.lock_workers().insert(
            id.clone(),
            Worker {
                generation: rec.lease.as_ref().map_or(0, |l| l.generation),
                control: ctl_tx,
                outcome: out_rx,
                task: None,
            },
        );
        let span = tracing::info_span!("saga", saga_id = %id, definition = %rec.definition);
        let inner = self.clone();
        let key = id.clone();
        let generation = rec.lease.as_ref().map_or(0, |l| l.generation);
        let task = tokio::spawn(
            async move {
                let mut ctl_rx = ctl_rx;
                let result = inner.clone().drive(def, rec, first, &mut ctl_rx, &out_tx).await;
                let _parking = match result {
                    Err(Error::Store(StoreError::Conflict { .. })) if inner.store.is_shared() => {
                        tracing::info!("saga taken over by another process; worker stops");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "saga worker stopped; the saga resumes at the next open");
                        None
                    }
                    Ok(Exit::Done) => None,
                    Ok(Exit::Parked(until)) => {
                        // Hand the saga to the timer index under its lock,
                        // so a signal or a timer cannot find it with
                        // neither a worker nor a timer. Control messages
                        // still queued are dropped: their senders see the
                        // worker gone and retry on the parked saga.
                        let guard = inner.saga_lock(&id).await;
                        ctl_rx.close();
                        while ctl_rx.try_recv().is_ok() {}
                        inner.park(id.clone(), until);
                        Some(guard)
                    }
                };
                // Only our own entry: a newer worker may have replaced it
                // after a takeover.
                let mut workers = inner.lock_workers();
                if workers.get(&id).is_some_and(|w| w.generation == generation) {
                    workers.remove(&id);
                }
                drop(workers);
                drop(out_tx);
            }
            .instrument(span),
        );
        // A worker that already finished removed its entry; then the handle
        // is simply dropped.
        if let Some(w) = self.lock_workers().get_mut(&key) {
            w.task = Some(task);
        }
    }

    /// Persists the state after an input, then publishes its events.
    async fn commit(&self, rec: &mut SagaRecord, events: Vec<SagaEvent>) -> Result<(), Error> {
        rec.revision += 1;
        if let Err(e) = self.store.update(rec, &events).await {
            rec.revision -= 1;
            return Err(e.into());
        }
        self.publish(events);
        Ok(())
    }

    /// The worker of one saga: act on the decision, feed the outcome to the
    /// machine, persist, repeat.
    async fn drive(
        self: Arc<Self>,
        def: Arc<dyn ErasedDefinition>,
        mut rec: SagaRecord,
        first: Option<Input>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        outcome: &watch::Sender<Option<SagaStatus>>,
    ) -> Result<Exit, Error> {
        let policies = def.policies();
        let mut shutdown = self.shutdown.subscribe();
        let mut decision = match first {
            Some(input) => {
                let now = self.clock.now_ms();
                let (d, model) = self.step(&*def, &mut rec, input, now)?;
                let events = events_for(
                    &mut rec,
                    std::iter::once(EventKind::Resumed).chain(model),
                    d,
                    now,
                );
                self.commit(&mut rec, events).await?;
                d
            }
            None => rec.state.decision(),
        };
        loop {
            if *shutdown.borrow() && !matches!(decision, Decision::Finished(_)) {
                tracing::debug!("shutting down; the saga resumes at the next open");
                return Ok(Exit::Done);
            }
            let (input, prior) = match decision {
                Decision::Finished(status) => {
                    let _ = outcome.send(Some(status));
                    return Ok(Exit::Done);
                }
                Decision::Wait { until_ms, .. } if !self.store.is_shared() => {
                    // A durable wait: no worker holds the saga meanwhile.
                    return Ok(Exit::Parked(until_ms));
                }
                Decision::AwaitRunning => {
                    // Only produced for a cancel while a step runs, which the
                    // Run arm handles; reaching it here means nothing is
                    // running: compensate.
                    (
                        Input::Cancel {
                            reason: "nothing running after a cancel".into(),
                        },
                        None,
                    )
                }
                Decision::RunGroup { .. } => {
                    match self
                        .drive_group(&def, &mut rec, control, &mut shutdown)
                        .await?
                    {
                        group::GroupExit::Next(d) => {
                            decision = d;
                            continue;
                        }
                        group::GroupExit::Shutdown => return Ok(Exit::Done),
                    }
                }
                Decision::Run { step, attempt } | Decision::Compensate { step, attempt } => {
                    let compensating = matches!(decision, Decision::Compensate { .. });
                    let name = rec.state.steps[step].name.clone();
                    let ctx = StepContext {
                        saga_id: rec.id.clone(),
                        idempotency_key: format!("{}:{}", rec.id, name),
                        fencing_token: rec.lease.as_ref().map_or(0, |l| l.generation),
                        step: name.clone(),
                        attempt,
                    };
                    let policy = if compensating {
                        &policies[step].compensation
                    } else {
                        &policies[step].forward
                    };
                    let timeout = policy.attempt_timeout;
                    let mut data = rec.data.clone();
                    // tokio's clock: virtual under paused time, so histories repeat.
                    let started = tokio::time::Instant::now();
                    let span = tracing::info_span!("step", step = %name, attempt, compensating);
                    let result = {
                        let call = {
                            let def = def.clone();
                            let ctx = ctx.clone();
                            let data = &mut data;
                            async move {
                                let work = async {
                                    if compensating {
                                        def.compensate(step, &ctx, data).await
                                    } else {
                                        def.run(step, &ctx, data).await
                                    }
                                };
                                match timeout {
                                    Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ()),
                                    None => Ok(work.await),
                                }
                            }
                            .instrument(span)
                        };
                        tokio::pin!(call);
                        loop {
                            tokio::select! {
                                // Fixed branch order: a run under a virtual clock repeats exactly.
                                biased;
                                r = &mut call => break r,
                                Some(c) = control.recv() => {
                                    // The running step goes on; what the
                                    // control changed takes effect when it returns.
                                    self.control(&*def, &mut rec, c).await?;
                                }
                            }
                        }
                    };
                    let took = started.elapsed();
                    let input = match (compensating, result) {
                        (false, Ok(Ok(()))) => {
                            rec.data = data;
                            Input::StepSucceeded { step }
                        }
                        (false, Ok(Err(StepError::Rejected(error)))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Rejected,
                            error,
                        },
                        (false, Ok(Err(StepError::Retryable(error)))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Retryable,
                            error,
                        },
                        (false, Err(())) => Input::StepFailed {
                            step,
                            kind: FailureKind::Timeout,
                            error: format!("attempt timed out after {timeout:?}"),
                        },
                        (true, Ok(Ok(()))) => Input::CompensationSucceeded { step },
                        (true, Ok(Err(e))) => Input::CompensationFailed {
                            step,
                            error: e.to_string(),
                        },
                        (true, Err(())) => Input::CompensationFailed {
                            step,
                            error: format!("compensation timed out after {timeout:?}"),
                        },
                    };
                    (input, Some((name, attempt, took)))
                }
                Decision::Sleep { step, until_ms } | Decision::Wait { step, until_ms } => {
                    let wait = Duration::from_millis(until_ms.saturating_sub(self.clock.now_ms()));
                    tokio::select! {
                        // Fixed branch order: a run under a virtual clock repeats exactly.
                        biased;
                        _ = tokio::time::sleep(wait) => (Input::TimerFired { step }, None),
                        Some(c) = control.recv() => {
                            match self.control(&*def, &mut rec, c).await {
                                Ok(Some(d)) => {
                                    decision = d;
                                    continue;
                                }
                                Ok(None) => continue,
                                Err(e) => {
                                    tracing::error!(error = %e, "could not record a control request; worker stops");
                                    return Ok(Exit::Done);
                                }
                            }
                        }
                        _ = shutdown.changed() => continue,
                    }
                }
            };
            let now = self.clock.now_ms();
            let (next, model) = self.step(&*def, &mut rec, input.clone(), now)?;
            let outcome_event = prior
                .and_then(|(name, attempt, took)| outcome_event(&input, name, attempt, took, next));
            let events = events_for(&mut rec, outcome_event.into_iter().chain(model), next, now);
            self.commit(&mut rec, events).await?;
            decision = next;
        }
    }

    /// Applies and persists a control request that reached the worker,
    /// answering its sender. `Ok(Some(d))`: applied, `d` is what to do
    /// next; `Ok(None)`: refused (nothing changed); `Err`: the store failed.
    async fn control(
        &self,
        def: &dyn ErasedDefinition,
        rec: &mut SagaRecord,
        c: Control,
    ) -> Result<Option<Decision>, Error> {
        let now = self.clock.now_ms();
        match c {
            Control::Cancel { reason, ack } => {
                let mut next = rec.clone();
                let r = self.step(
                    def,
                    &mut next,
                    Input::Cancel {
                        reason: reason.clone(),
                    },
                    now,
                );
                let (d, model) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ack.send(Err(self.refusal(rec, e, "cancel")));
                        return Ok(None);
                    }
                };
                let events = events_for(
                    &mut next,
                    std::iter::once(EventKind::CancelRequested { reason }).chain(model),
                    d,
                    now,
                );
                match self.commit(&mut next, events).await {
                    Ok(()) => {
                        *rec = next;
                        let _ = ack.send(Ok(()));
                        Ok(Some(d))
                    }
                    Err(e) => {
                        let _ = ack.send(Err(Error::Store(StoreError::Io(e.to_string()))));
                        Err(e)
                    }
                }
            }
            Control::Signal {
                signal_id,
                name,
                payload,
                ack,
            } => {
                let mut next = rec.clone();
                match self.signal_in(def, &mut next, &signal_id, &name, payload, now) {
                    Ok((SignalOutcome::Duplicate, _, _)) => {
                        let _ = ack.send(Ok(SignalOutcome::Duplicate));
                        Ok(None)
                    }
                    Ok((outcome, d, events)) => match self.commit(&mut next, events).await {
                        Ok(()) => {
                            *rec = next;
                            let _ = ack.send(Ok(outcome));
                            Ok(Some(d))
                        }
                        Err(e) => {
                            let _ = ack.send(Err(Error::Store(StoreError::Io(e.to_string()))));
                            Err(e)
                        }
                    },
                    Err(e) => {
                        let _ = ack.send(Err(e));
                        Ok(None)
                    }
                }
            }
        }
    }

    /// A machine refusal as the caller's error.
    fn refusal(&self, rec: &SagaRecord, e: Error, operation: &'static str) -> Error {
        match e {
            Error::Machine(crate::machine::MachineError::PastPivot { .. }) => Error::InvalidState {
                id: rec.id.clone(),
                status: rec.status(),
                operation: match operation {
                    "cancel" => "cancel: the saga is past its pivot and only moves forward",
                    _ => operation,
                },
            },
            e => e,
        }
    }
}

/// The event describing how an attempt ended.
fn outcome_event(
    input: &Input,
    step: String,
    attempt: u32,
    took: Duration,
    next: Decision,
) -> Option<EventKind> {
    let retry_at_ms = match next {
        Decision::Sleep { until_ms, .. } => Some(until_ms),
        _ => None,
    };
    Some(match input {
        Input::StepSucceeded { .. } => EventKind::StepSucceeded {
            step,
            attempt,
            duration_us: took.as_micros() as u64,
        },
        Input::StepFailed { kind, error, .. } => EventKind::StepFailed {
            step,
            attempt,
            error: error.clone(),
            kind: match kind {
                FailureKind::Retryable => "retryable",
                FailureKind::Timeout => "timeout",
                FailureKind::Rejected => "rejected",
            }
            .into(),
            retry_at_ms,
        },
        Input::CompensationSucceeded { .. } => EventKind::StepCompensated { step, attempt },
        Input::CompensationFailed { error, .. } => EventKind::CompensationFailed {
            step,
            attempt,
            error: error.clone(),
            retry_at_ms,
        },
        _ => return None,
    })
}

/// The events of one transition: what happened (if anything), then what the
/// decision starts. Assigns sequence numbers and bumps the record's clock.
fn events_for(
    rec: &mut SagaRecord,
    happened: impl IntoIterator<Item = EventKind>,
    decision: Decision,
    now: u64,
) -> Vec<SagaEvent> {
    rec.updated_at_ms = now;
    let name = |i: usize| rec.state.steps[i].name.clone();
    let started = match decision {
        Decision::Run { step, attempt } => Some(EventKind::StepStarted {
            step: name(step),
            attempt,
        }),
        Decision::Compensate { step, attempt } => Some(EventKind::CompensationStarted {
            step: name(step),
            attempt,
        }),
        Decision::Finished(status) => Some(EventKind::SagaFinished {
            status,
            reason: rec.state.failure.clone(),
        }),
        // A wait's start and a group's member starts are among the
        // machine's events (see `waits`).
        Decision::Wait { .. }
        | Decision::Sleep { .. }
        | Decision::AwaitRunning
        | Decision::RunGroup { .. } => None,
    };
    let mut out = Vec::with_capacity(2);
    for kind in happened.into_iter().chain(started) {
        out.push(SagaEvent {
            saga_id: rec.id.clone(),
            seq: rec.next_seq,
            at_ms: now,
            kind,
        });
        rec.next_seq += 1;
    }
    out
}
