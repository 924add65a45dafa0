//! A store with a durable layer and a volatile one, like sled's page cache
//! over its log.
//!
//! A write is checked against, and applied to, the volatile view (which
//! reads see), queued, and then "flushed" after a seeded delay: the flush
//! moves every queued write up to its own into the durable layer (a prefix,
//! as a log recovers) and only then does the call return, so a write is
//! durable on return. A crash throws the volatile view and the queue away
//! and leaves the durable layer for the next engine to open; a flush that
//! was in flight when the crash came finds its epoch gone and persists
//! nothing.

use super::world::{Sabotage, World};
use saga_engine::store::{CreateOutcome, SagaRecord, Store, StoreError};
use saga_engine::{EventKind, SagaEvent, SagaId, SagaStatus};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One copy of everything the store holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub records: BTreeMap<SagaId, SagaRecord>,
    pub keys: BTreeMap<String, SagaId>,
    pub history: BTreeMap<SagaId, Vec<SagaEvent>>,
}

impl Layer {
    fn create(&mut self, rec: &SagaRecord, events: &[SagaEvent]) {
        if let Some(k) = &rec.idempotency_key {
            self.keys.insert(k.clone(), rec.id.clone());
        }
        self.records.insert(rec.id.clone(), rec.clone());
        self.history.insert(rec.id.clone(), events.to_vec());
    }

    fn update(&mut self, rec: &SagaRecord, events: &[SagaEvent]) {
        self.records.insert(rec.id.clone(), rec.clone());
        self.history
            .entry(rec.id.clone())
            .or_default()
            .extend_from_slice(events);
    }
}

#[derive(Debug)]
enum Op {
    Create(SagaRecord, Vec<SagaEvent>),
    Update(SagaRecord, Vec<SagaEvent>),
}

#[derive(Debug, Default)]
struct State {
    durable: Layer,
    view: Layer,
    /// Writes applied to the view, not yet durable, by ticket.
    pending: VecDeque<(u64, Op)>,
    next_ticket: u64,
    /// Bumped by every crash: the process of an older epoch is dead, and a
    /// flush it began persists nothing.
    epoch: u64,
    /// Writes queued in this epoch.
    writes: u64,
    /// Told when the write with this number (in this epoch) is queued.
    crash_trigger: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
}

/// The simulated store, as one engine process sees it. Clones share one
/// store; [`SimStore::process`] gives the handle of the live process.
#[derive(Clone)]
pub struct SimStore {
    world: Arc<World>,
    state: Arc<Mutex<State>>,
    /// The epoch of the process using this handle.
    epoch: u64,
}

/// What a crash destroyed.
pub struct CrashReport {
    /// Writes in flight (applied to the view, not flushed).
    pub lost: usize,
    /// Of those, creates of sagas (starts nobody was told about).
    pub lost_creates: usize,
}

impl SimStore {
    pub fn new(world: Arc<World>) -> SimStore {
        SimStore {
            world,
            state: Arc::new(Mutex::new(State::default())),
            epoch: 0,
        }
    }

    /// The handle a newly started engine process uses.
    pub fn process(&self) -> SimStore {
        SimStore {
            epoch: self.lock().epoch,
            ..self.clone()
        }
    }

    /// A receiver told when the `n`th write of this epoch is queued (the
    /// process then crashes with that write in flight).
    pub fn crash_on_write(&self, n: u64) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().crash_trigger = Some((n, tx));
        rx
    }

    /// Locks the state for a call from this handle's process; `None` if
    /// that process is dead.
    fn live(&self) -> Option<MutexGuard<'_, State>> {
        let s = self.lock();
        (s.epoch == self.epoch).then_some(s)
    }

    fn alive(&self) -> bool {
        self.lock().epoch == self.epoch
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process dies: every write not yet flushed is gone.
    pub fn crash(&self) -> CrashReport {
        let mut s = self.lock();
        s.epoch += 1;
        let lost = s.pending.len();
        let lost_creates = s
            .pending
            .iter()
            .filter(|(_, op)| matches!(op, Op::Create(..)))
            .count();
        let lost_desc: Vec<String> = s
            .pending
            .iter()
            .map(|(t, op)| match op {
                Op::Create(r, _) => format!("#{t} create {}", r.id),
                Op::Update(r, _) => format!("#{t} update {} rev {}", r.id, r.revision),
            })
            .collect();
        s.pending.clear();
        s.view = s.durable.clone();
        s.writes = 0;
        s.crash_trigger = None;
        drop(s);
        self.world.log(format!(
            "store CRASH: lost unflushed [{}]",
            lost_desc.join(", ")
        ));
        CrashReport { lost, lost_creates }
    }

    /// True when a saga's retry timer (as the latest write says) fires at
    /// `now_ms` (the engine clock's reading).
    pub fn timer_due(&self, now_ms: u64) -> bool {
        self.lock().view.records.values().any(|r| {
            !r.status().is_terminal() && r.state.steps.iter().any(|s| s.wake_at_ms == Some(now_ms))
        })
    }

    /// The durable layer, and whether the view agrees with it (nothing pending).
    pub fn durable(&self) -> (Layer, bool) {
        let s = self.lock();
        (
            s.durable.clone(),
            s.pending.is_empty() && s.view == s.durable,
        )
    }

    /// Waits a seeded flush delay, then makes every write up to `ticket`
    /// durable, unless the process crashed meanwhile.
    async fn flush(&self, ticket: Option<u64>) -> Result<(), StoreError> {
        let delay = self.world.below(4);
        if delay == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if !self.alive() {
            // The process that issued this write died meanwhile.
            return dead().await;
        }
        let Some(ticket) = ticket else {
            return Ok(());
        };
        if self.world.sabotage == Sabotage::FlushLosesWrites {
            return Ok(());
        }
        let mut n = 0;
        {
            let mut s = self.lock();
            while s.pending.front().is_some_and(|(t, _)| *t <= ticket) {
                let (_, op) = s.pending.pop_front().expect("front exists");
                match &op {
                    Op::Create(r, e) => s.durable.create(r, e),
                    Op::Update(r, e) => s.durable.update(r, e),
                }
                n += 1;
            }
        }
        if n > 0 {
            self.world
                .log(format!("store flush <=#{ticket}: {n} writes"));
        }
        Ok(())
    }

    /// Queues `op` (already applied to the view) and waits until it is durable.
    async fn write(&self, op: Op) -> Result<(), StoreError> {
        let ticket = {
            let mut s = self.lock();
            let t = s.next_ticket;
            s.next_ticket += 1;
            s.pending.push_back((t, op));
            s.writes += 1;
            if s.crash_trigger
                .as_ref()
                .is_some_and(|(n, _)| *n == s.writes)
            {
                let (_, tx) = s.crash_trigger.take().expect("armed");
                let _ = tx.send(());
            }
            t
        };
        if self.world.sabotage == Sabotage::AckBeforeFlush {
            let me = self.clone();
            tokio::spawn(async move {
                let _ = me.flush(Some(ticket)).await;
            });
            return Ok(());
        }
        self.flush(Some(ticket)).await
    }
}

/// A dead process gets no answer, ever: its tasks are being torn down.
async fn dead<T>() -> T {
    std::future::pending::<T>().await
}

/// One event, short, without its wall-clock duration (see the module docs
/// of `simulation.rs`: the engine measures step durations with
/// `std::time::Instant`, which no seed can repeat).
pub fn fmt_event(e: &SagaEvent) -> String {
    let k = match &e.kind {
        EventKind::SagaStarted {
            definition,
            version,
        } => format!("started {definition}@{version}"),
        EventKind::StepStarted { step, attempt } => format!("run {step}#{attempt}"),
        EventKind::StepSucceeded { step, attempt, .. } => format!("ok {step}#{attempt}"),
        EventKind::StepFailed {
            step,
            attempt,
            error,
            kind,
            retry_at_ms,
        } => format!("fail {step}#{attempt} {kind} ({error}) retry={retry_at_ms:?}"),
        EventKind::CompensationStarted { step, attempt } => format!("comp {step}#{attempt}"),
        EventKind::StepCompensated { step, attempt } => format!("undone {step}#{attempt}"),
        EventKind::CompensationFailed {
            step,
            attempt,
            error,
            retry_at_ms,
        } => format!("comp-fail {step}#{attempt} ({error}) retry={retry_at_ms:?}"),
        EventKind::CancelRequested { reason } => format!("cancel ({reason})"),
        EventKind::Resumed => "resumed".to_string(),
        EventKind::OperatorRetry => "operator-retry".to_string(),
        EventKind::SagaFinished { status, reason } => format!("finished {status} ({reason:?})"),
    };
    format!("{}@{}:{k}", e.seq, e.at_ms)
}

fn fmt_events(events: &[SagaEvent]) -> String {
    events.iter().map(fmt_event).collect::<Vec<_>>().join(", ")
}

#[saga_engine::async_trait]
impl Store for SimStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let existing = {
            let Some(mut s) = self.live() else {
                return dead().await;
            };
            let existing = record
                .idempotency_key
                .as_ref()
                .and_then(|k| s.view.keys.get(k))
                .map(|id| s.view.records[id].clone());
            match existing {
                Some(e) => Some((e, s.next_ticket.checked_sub(1))),
                None => {
                    if s.view.records.contains_key(&record.id) {
                        return Err(StoreError::AlreadyExists(record.id.clone()));
                    }
                    s.view.create(record, events);
                    None
                }
            }
        };
        match existing {
            Some((rec, ticket)) => {
                self.world.log(format!(
                    "store create {} key {:?}: existing {}",
                    record.id, record.idempotency_key, rec.id
                ));
                // As sled does: the winner may not be flushed yet, and the
                // caller is about to acknowledge it.
                self.flush(ticket).await?;
                Ok(CreateOutcome::Existing(Box::new(rec)))
            }
            None => {
                self.world.log(format!(
                    "store create {} key {:?} [{}]",
                    record.id,
                    record.idempotency_key,
                    fmt_events(events)
                ));
                self.write(Op::Create(record.clone(), events.to_vec()))
                    .await?;
                Ok(CreateOutcome::Created)
            }
        }
    }

    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        {
            let Some(mut s) = self.live() else {
                return dead().await;
            };
            let found = s.view.records.get(&record.id).map(|r| r.revision);
            if found != Some(record.revision.wrapping_sub(1)) {
                drop(s);
                self.world.log(format!(
                    "store update {} rev {}: conflict (found {found:?})",
                    record.id, record.revision
                ));
                return Err(StoreError::Conflict {
                    id: record.id.clone(),
                    expected: record.revision.wrapping_sub(1),
                    found,
                });
            }
            s.view.update(record, events);
        }
        self.world.log(format!(
            "store update {} rev {} {} [{}]",
            record.id,
            record.revision,
            record.status(),
            fmt_events(events)
        ));
        self.write(Op::Update(record.clone(), events.to_vec()))
            .await
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        if !self.alive() {
            return dead().await;
        }
        Ok(self.lock().view.records.get(id).cloned())
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        if !self.alive() {
            return dead().await;
        }
        Ok(self.lock().view.keys.get(key).cloned())
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        if !self.alive() {
            return dead().await;
        }
        Ok(self
            .lock()
            .view
            .history
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        if !self.alive() {
            return dead().await;
        }
        Ok(self
            .lock()
            .view
            .records
            .values()
            .filter(|r| !r.status().is_terminal())
            .cloned()
            .collect())
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        if !self.alive() {
            return dead().await;
        }
        Ok(self
            .lock()
            .view
            .records
            .values()
            .filter(|r| status.is_none_or(|s| r.status() == s))
            .take(limit)
            .cloned()
            .collect())
    }
}
