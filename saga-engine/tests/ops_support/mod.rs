//! What the operation tests share: a five-step saga with knobs, the
//! helpers, and the backend a scenario runs on (memory, sled, or
//! PostgreSQL behind the `postgres` feature). The scenarios themselves
//! are in `scenarios.rs`; `operations.rs` runs them on memory and sled,
//! `operations_pg.rs` on PostgreSQL.

#![allow(dead_code)]

pub mod scenarios;

use saga_engine::machine::Refusal;
use saga_engine::{
    Engine, Error, EventKind, MemoryStore, OperationRequest, RetryPolicy, SagaDefinition,
    SagaEvent, SagaId, SledStore, StepError, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Semaphore};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Data {
    pub trail: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub fee: u32,
}

/// What the steps did, and the knobs the tests turn.
#[derive(Default)]
pub struct Probe {
    pub log: Mutex<Vec<String>>,
    pub runs: Mutex<HashMap<String, u32>>,
    /// Step `b` fails retryably this many times first.
    pub b_failures: Mutex<u32>,
    /// Step `pay` (the pivot) rejects this many times first.
    pub pay_rejections: Mutex<u32>,
    /// Step `a`'s compensation fails this many times first.
    pub undo_a_failures: Mutex<u32>,
}

impl Probe {
    pub fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
    pub fn runs(&self, step: &str) -> u32 {
        self.runs.lock().unwrap().get(step).copied().unwrap_or(0)
    }
    pub fn count(&self, step: &str) -> u32 {
        let mut r = self.runs.lock().unwrap();
        let n = r.entry(step.to_string()).or_default();
        *n += 1;
        *n
    }
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

pub fn take(n: &Mutex<u32>) -> bool {
    let mut n = n.lock().unwrap();
    if *n > 0 {
        *n -= 1;
        true
    } else {
        false
    }
}

/// a (compensatable) -> b (compensatable; may wait on `gate`, may fail)
/// -> [nap: a durable sleep] -> pay (pivot) -> ship (retriable).
pub fn definition(
    probe: &Arc<Probe>,
    gate: Option<Arc<Semaphore>>,
    nap: Option<Duration>,
    backoff: Duration,
) -> SagaDefinition<Data> {
    let policy = RetryPolicy::default()
        .max_attempts(5)
        .backoff(backoff, backoff)
        .attempt_timeout(None);
    let (p1, p2, p3, p4, p5) = (
        probe.clone(),
        probe.clone(),
        probe.clone(),
        probe.clone(),
        probe.clone(),
    );
    let b = SagaDefinition::<Data>::builder("ops", 1)
        .default_retry(policy.clone())
        .default_compensation_retry(policy)
        .action(
            "a",
            move |_c, mut d: Data| {
                let p = p1.clone();
                async move {
                    p.count("a");
                    p.note("run a".into());
                    d.trail.push("a".into());
                    Ok(d)
                }
            },
            move |_c, _d| {
                let p = p2.clone();
                async move {
                    if take(&p.undo_a_failures) {
                        return Err(StepError::retryable("undo a: down"));
                    }
                    p.note("undo a".into());
                    Ok(())
                }
            },
        )
        .action(
            "b",
            move |_c, mut d: Data| {
                let p = p3.clone();
                let gate = gate.clone();
                async move {
                    p.count("b");
                    if let Some(g) = gate {
                        // Held until the test lets it go.
                        g.acquire().await.expect("gate open").forget();
                    }
                    if take(&p.b_failures) {
                        return Err(StepError::retryable("b: busy"));
                    }
                    p.note("run b".into());
                    d.trail.push("b".into());
                    Ok(d)
                }
            },
            |_c, _d| async move { Ok(()) },
        );
    let b = match nap {
        Some(n) => b.sleep("nap", n),
        None => b,
    };
    b.pivot("pay", move |_c, mut d: Data| {
        let p = p4.clone();
        async move {
            p.count("pay");
            if take(&p.pay_rejections) {
                return Err(StepError::rejected("card declined"));
            }
            p.note("run pay".into());
            d.trail.push("pay".into());
            Ok(d)
        }
    })
    .retriable("ship", move |_c, mut d: Data| {
        let p = p5.clone();
        async move {
            p.count("ship");
            p.note("run ship".into());
            d.trail.push("ship".into());
            Ok(d)
        }
    })
    .build()
    .expect("a valid definition")
}

pub fn req(id: &str) -> OperationRequest {
    OperationRequest {
        operation_id: id.into(),
        operator: "ada".into(),
        reason: format!("test {id}"),
        dry_run: false,
    }
}

pub fn dry(id: &str) -> OperationRequest {
    OperationRequest {
        dry_run: true,
        ..req(id)
    }
}

/// Waits for the first event of saga `id` that `pred` accepts.
pub async fn until(
    rx: &mut broadcast::Receiver<SagaEvent>,
    id: &SagaId,
    pred: impl Fn(&EventKind) -> bool,
) -> SagaEvent {
    loop {
        let e = rx.recv().await.expect("event stream");
        if &e.saga_id == id && pred(&e.kind) {
            return e;
        }
    }
}

/// Waits until no worker holds any saga (each has parked or finished).
pub async fn idle(engine: &Engine) {
    while engine.running_count() > 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Opens the store once the aborted worker of the previous engine has let
/// go of sled's directory lock (its task is dropped by this runtime).
pub async fn reopen(dir: &std::path::Path) -> SledStore {
    for _ in 0..2_000 {
        match SledStore::open(dir) {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    panic!("the store does not reopen");
}

pub fn refusal(e: Error) -> Refusal {
    match e {
        Error::Refused { refusal, .. } => refusal,
        e => panic!("expected a refusal, got {e}"),
    }
}

/// Where a scenario's store lives; `store()` opens it (again: a restart
/// reopens the same data).
pub enum Backend {
    /// One in-memory store (every `store()` is the same one).
    Memory(Arc<MemoryStore>),
    /// A sled directory.
    Sled(PathBuf),
    /// A PostgreSQL database URL.
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Backend {
    /// A fresh in-memory store.
    pub fn memory() -> Backend {
        Backend::Memory(Arc::new(MemoryStore::new()))
    }

    /// True for a store shared by leases (PostgreSQL): a worker holds a
    /// saga through its waits there.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Backend::Memory(_) | Backend::Sled(_))
    }

    /// The store, opened (again).
    pub async fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Memory(m) => m.clone(),
            Backend::Sled(dir) => Arc::new(reopen(dir).await),
            #[cfg(feature = "postgres")]
            Backend::Postgres(url) => Arc::new(
                saga_engine::store::PostgresStore::connect(url)
                    .await
                    .expect("connect"),
            ),
        }
    }
}
