//! Configuring and opening an engine: registering definitions, the clock,
//! leases and retention, and resuming what the store holds at open.

use super::{Engine, Inner, SAGA_STRIPES, START_STRIPES};
use crate::clock::{Clock, SystemClock};
use crate::definition::{Erased, ErasedDefinition, SagaDefinition};
use crate::retention::Retention;
use crate::store::Store;
use crate::Error;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
        let definition_pauses = self.store.definition_pauses().await?;
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
            definition_pauses: Arc::new(tokio::sync::RwLock::new(definition_pauses)),
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
}
