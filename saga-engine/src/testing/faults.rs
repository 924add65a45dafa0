//! The faults [`super::simulate`] injects: a step wrapper that makes a
//! participant call fail before its effect, lose its reply after it, be
//! delivered twice, or be rejected; and a store wrapper that crashes the
//! process at a chosen durable write, just before or just after it.

use crate::definition::{Step, StepContext, StepError};
use crate::events::SagaEvent;
use crate::machine::SagaStatus;
use crate::store::{CreateOutcome, MemoryStore, Resumable, SagaRecord, Store, StoreError};
use crate::SagaId;
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What was injected in one seed, for the report.
#[derive(Debug, Default)]
pub(super) struct Injected {
    pub calls: AtomicU64,
    pub faults: AtomicU64,
}

/// A step whose calls the simulation may disturb.
pub(super) struct Faulty<D> {
    pub inner: Arc<dyn Step<D>>,
    pub rng: Arc<Mutex<StdRng>>,
    pub injected: Arc<Injected>,
    /// May the simulation answer "no" for it (not after the pivot, where a
    /// rejection parks the saga for an operator by design)?
    pub may_reject: bool,
    /// Fault probability per call.
    pub rate: f64,
}

impl<D> Faulty<D> {
    fn draw(&self) -> (f64, u32) {
        let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (r.gen::<f64>(), r.gen_range(0..4u32))
    }
}

#[async_trait]
impl<D: Clone + Send + Sync + 'static> Step<D> for Faulty<D> {
    async fn run(&self, ctx: &StepContext, data: &mut D) -> Result<(), StepError> {
        self.injected.calls.fetch_add(1, Ordering::Relaxed);
        let (p, which) = self.draw();
        if p >= self.rate {
            return self.inner.run(ctx, data).await;
        }
        self.injected.faults.fetch_add(1, Ordering::Relaxed);
        match which {
            // Lost on the way there: no effect.
            0 => Err(StepError::retryable("simulated: participant unreachable")),
            // Lost on the way back: the effect happened.
            1 => {
                let mut copy = data.clone();
                self.inner.run(ctx, &mut copy).await?;
                Err(StepError::retryable("simulated: reply lost"))
            }
            // Delivered twice.
            2 => {
                let mut copy = data.clone();
                let _ = self.inner.run(ctx, &mut copy).await;
                self.inner.run(ctx, data).await
            }
            _ if self.may_reject => Err(StepError::rejected("simulated: participant said no")),
            _ => self.inner.run(ctx, data).await,
        }
    }

    async fn compensate(&self, ctx: &StepContext, data: &D) -> Result<(), StepError> {
        self.injected.calls.fetch_add(1, Ordering::Relaxed);
        let (p, which) = self.draw();
        if p >= self.rate {
            return self.inner.compensate(ctx, data).await;
        }
        self.injected.faults.fetch_add(1, Ordering::Relaxed);
        match which {
            0 => Err(StepError::retryable("simulated: participant unreachable")),
            1 => {
                self.inner.compensate(ctx, data).await?;
                Err(StepError::retryable("simulated: reply lost"))
            }
            _ => {
                let _ = self.inner.compensate(ctx, data).await;
                self.inner.compensate(ctx, data).await
            }
        }
    }
}

/// One process's view of the shared durable store: after `crash_at`
/// writes it "dies" (every later write fails), the fatal write taking
/// effect or not as `after` says.
pub(super) struct CrashStore {
    pub inner: Arc<MemoryStore>,
    pub writes: AtomicU64,
    pub crash_at: Option<u64>,
    pub after: bool,
    pub crashed: Arc<AtomicBool>,
}

impl CrashStore {
    /// Counts a write; `Err` when the process is (now) dead, with whether
    /// the write is to take effect first.
    fn gate(&self) -> Result<(), bool> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(false);
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == self.crash_at {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.after);
        }
        Ok(())
    }
}

fn dead() -> StoreError {
    StoreError::Io("simulated crash".into())
}

#[async_trait]
impl Store for CrashStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        match self.gate() {
            Ok(()) => self.inner.create(record, events).await,
            Err(true) => {
                self.inner.create(record, events).await?;
                Err(dead())
            }
            Err(false) => Err(dead()),
        }
    }
    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        match self.gate() {
            Ok(()) => self.inner.update(record, events).await,
            Err(true) => {
                self.inner.update(record, events).await?;
                Err(dead())
            }
            Err(false) => Err(dead()),
        }
    }
    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        self.inner.find_by_key(key).await
    }
    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        self.inner.history(id).await
    }
    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list_active().await
    }
    async fn list_resumable(&self) -> Result<Resumable, StoreError> {
        self.inner.list_resumable().await
    }
    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list(status, limit).await
    }
}
