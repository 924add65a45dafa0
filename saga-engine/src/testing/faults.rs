//! The faults [`super::simulate`] injects: a step wrapper that makes a
//! participant call fail before its effect, lose its reply after it, be
//! delivered twice, be rejected, or outlive its attempt timeout (the
//! engine gives up on it while the call is still on its way, and the
//! effect lands later, maybe after the saga compensated it); and a store
//! wrapper that crashes the process at a chosen durable write, just before
//! or just after it.

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
    /// Calls that outlived their attempt timeout.
    pub timeouts: AtomicU64,
    /// Late calls still on their way to the participant.
    pub late_pending: AtomicU64,
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
    /// The step's attempt timeout, if it has one.
    pub timeout: Option<std::time::Duration>,
}

impl<D> Faulty<D> {
    fn draw(&self) -> (f64, u32) {
        let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (r.gen::<f64>(), r.gen_range(0..5u32))
    }

    fn late_by(&self, timeout: std::time::Duration) -> std::time::Duration {
        let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        // Up to 40 timeouts late: a backlog at the participant, so it often
        // lands after the saga gave up on the step and compensated it.
        timeout + timeout.mul_f64(r.gen_range(0.0..40.0))
    }
}

#[async_trait]
impl<D: Clone + Send + Sync + 'static> Step<D> for Faulty<D> {
    async fn run(&self, ctx: &StepContext, data: &mut D) -> Result<(), StepError> {
        self.run_disturbed(ctx, data).await
    }

    async fn compensate(&self, ctx: &StepContext, data: &D) -> Result<(), StepError> {
        self.compensate_disturbed(ctx, data).await
    }
}

impl<D: Clone + Send + Sync + 'static> Faulty<D> {
    async fn run_disturbed(&self, ctx: &StepContext, data: &mut D) -> Result<(), StepError> {
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
            3 if self.may_reject => Err(StepError::rejected("simulated: participant said no")),
            3 => self.inner.run(ctx, data).await,
            // Slower than the attempt timeout: the engine stops waiting
            // (and retries, or compensates) while the call is still on its
            // way; it reaches the participant later.
            _ => match self.timeout {
                Some(t) => {
                    self.injected.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.injected.late_pending.fetch_add(1, Ordering::SeqCst);
                    let (inner, ctx, mut copy) = (self.inner.clone(), ctx.clone(), data.clone());
                    let (late, injected) = (self.late_by(t), self.injected.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(late).await;
                        let _ = inner.run(&ctx, &mut copy).await;
                        injected.late_pending.fetch_sub(1, Ordering::SeqCst);
                    });
                    // Never answers within the timeout (the engine drops
                    // this call when it expires).
                    tokio::time::sleep(t * 8).await;
                    Err(StepError::retryable("simulated: reply after the timeout"))
                }
                // No timeout to outlive: a slow reply.
                None => {
                    let r = self.inner.run(ctx, data).await;
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    r
                }
            },
        }
    }

    async fn compensate_disturbed(&self, ctx: &StepContext, data: &D) -> Result<(), StepError> {
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
    async fn definition_pauses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::machine::PauseMark>, StoreError> {
        self.inner.definition_pauses().await
    }
    async fn set_definition_pause(
        &self,
        definition: &str,
        mark: Option<&crate::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        self.inner.set_definition_pause(definition, mark).await
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
