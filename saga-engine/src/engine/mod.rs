//! The runtime: a registry of definitions, one tokio task per running saga,
//! durable retry timers, recovery on open, cancellation, operator retry,
//! graceful shutdown and a stream of events.
//!
//! Each worker loops: carry out the current decision, feed the outcome to
//! the state machine, persist the new state (durably), publish its events,
//! and only then carry out the next decision.
//!
//! The module is split by concept: `builder` (configuring and opening),
//! `start` (the first record), `worker` (the run loop), `group` (parallel
//! groups), `waits` (parked sagas, timers, signals), `admin` (operator
//! actions), `reads` (records, history, events) and `lifecycle` (recovery,
//! leases, retention, shutdown). This file holds the shared state.

use crate::clock::Clock;
use crate::definition::ErasedDefinition;
use crate::events::SagaEvent;
use crate::machine::{Ctx, PauseMark, SagaStatus};
use crate::retention::Retention;
use crate::store::{fingerprint, SagaRecord, Store};
use crate::{Error, SagaId};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

mod admin;
mod builder;
mod group;
mod lifecycle;
mod ops;
mod reads;
mod start;
mod waits;
mod worker;
pub use builder::EngineBuilder;
pub use ops::{BulkOutcome, Operation, OperationOutcome, OperationRequest};
pub use waits::SignalOutcome;
use worker::{events_for, outcome_event, stamp};

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
    /// Definitions paused as a whole (persisted in the store): their new
    /// sagas start paused. A start reads it and holds it until its create
    /// is written, so a definition's pause waits for starts under way and
    /// then finds their sagas.
    definition_pauses: Arc<tokio::sync::RwLock<std::collections::BTreeMap<String, PauseMark>>>,
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
    Op {
        op: ops::Operation,
        req: ops::OperationRequest,
        ack: oneshot::Sender<Result<ops::OperationOutcome, Error>>,
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
impl Inner {
    /// The lock that serialises starts with key `k` (by stripe).
    async fn start_lock(&self, k: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.start_locks[(fingerprint(k.as_bytes()) % START_STRIPES as u64) as usize]
            .lock()
            .await
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
    /// Persists the state after an input, then publishes its events.
    async fn commit(&self, rec: &mut SagaRecord, events: Vec<SagaEvent>) -> Result<(), Error> {
        if rec.status().is_terminal() {
            // Search attributes a step set (the booking reference) are
            // indexed when the saga ends (see `search.rs`).
            if let Ok(def) = self.definition_for(rec) {
                rec.attributes = def.search_attributes(&rec.data);
            }
        }
        rec.revision += 1;
        if let Err(e) = self.store.update(rec, &events).await {
            rec.revision -= 1;
            return Err(e.into());
        }
        self.publish(events);
        Ok(())
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
