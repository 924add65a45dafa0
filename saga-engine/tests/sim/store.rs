//! A store with a durable layer and a volatile one, like sled's page cache
//! over its log, and with sled's indexes (see `layer.rs`).
//!
//! Each store call checks against, and applies to, the volatile view (which
//! reads see) the single-entry writes the sled store would make, in its
//! order, queues each of them, and then "flushes" after a seeded delay: the
//! flush moves every queued write up to the call's last one into the
//! durable layer (a prefix, as a log recovers), records the high-water mark
//! (in the durable layer, and after it in a side file), and only then does
//! the call return, so a write is durable on return.
//!
//! A crash throws the view away; the durable layer keeps what was flushed
//! and, like sled, whose own background flush may have written more of its
//! log than anyone waited for, a seeded prefix of the queue after it, which
//! may end in the middle of a call. A flush that was in flight when the
//! crash came finds its epoch gone and persists nothing. The next engine
//! opens on the durable layer: [`SimStore::open_check`] is sled's damage
//! check, and `list_active` answers from the active index and repairs
//! half-done creates and updates as sled's does.

use super::layer::{index_problems, Layer, Mark, Op};
use super::world::{Sabotage, World};
use saga_engine::store::{CreateOutcome, SagaRecord, Store, StoreError};
use saga_engine::{EventKind, SagaEvent, SagaId, SagaStatus};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A write applied to the view and waiting for a flush.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    op: Op,
    /// What it adds to sled's `created` count (1: the last write of a create).
    counts: u64,
    /// The last write of its store call.
    ends_call: bool,
}

#[derive(Debug, Default)]
struct State {
    durable: Layer,
    view: Layer,
    /// Writes applied to the view, not yet durable, in ticket order.
    pending: VecDeque<Queued>,
    next_ticket: u64,
    /// Bumped by every crash: the process of an older epoch is dead, and a
    /// flush it began persists nothing.
    epoch: u64,
    /// Writes queued in this epoch.
    writes: u64,
    /// Told when the write with this number (in this epoch) is queued.
    crash_trigger: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
    /// sled's count of creates since the store was new (never decremented):
    /// the tree's mark at open, plus creates since.
    created: u64,
    /// The high-water mark in the durable tree.
    durable_mark: Option<Mark>,
    /// The mark in the side file, written after each flush.
    mark_file: Option<Mark>,
}

impl State {
    /// Applies one single-entry write to the view and queues it.
    fn write(&mut self, op: Op, counts: u64) -> u64 {
        self.view.apply(&op);
        self.created += counts;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back(Queued {
            ticket,
            op,
            counts,
            ends_call: false,
        });
        self.writes += 1;
        if self
            .crash_trigger
            .as_ref()
            .is_some_and(|(n, _)| *n == self.writes)
        {
            let (_, tx) = self.crash_trigger.take().expect("armed");
            let _ = tx.send(());
        }
        ticket
    }

    /// Marks the last write queued as the end of its store call.
    fn end_call(&mut self) {
        if let Some(q) = self.pending.back_mut() {
            q.ends_call = true;
        }
    }
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
    /// Writes in flight (applied to the view, not flushed) that were lost.
    pub lost: usize,
    /// Of those, the key writes of creates (starts nobody was told about).
    pub lost_creates: usize,
    /// Writes nobody waited for that sled's own flush kept.
    pub kept: usize,
    /// The durable layer now ends in the middle of a store call.
    pub mid_call: bool,
    /// Sagas an operator retried that were not finished yet.
    pub retried_unfinished: usize,
}

impl SimStore {
    pub fn new(world: Arc<World>) -> SimStore {
        SimStore {
            world,
            state: Arc::new(Mutex::new(State::default())),
            epoch: 0,
        }
    }

    /// A store whose durable layer (and view) is `layer`, as a process
    /// that crashed left it: for tests of the repairs at open.
    pub fn on_layer(world: Arc<World>, layer: Layer) -> SimStore {
        let state = State {
            view: layer.clone(),
            durable: layer,
            ..State::default()
        };
        SimStore {
            world,
            state: Arc::new(Mutex::new(state)),
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

    /// The process dies: sled's log keeps what was flushed and a seeded
    /// prefix of the rest (its background flush runs on its own time);
    /// everything after that prefix is gone.
    pub fn crash(&self) -> CrashReport {
        let mut s = self.lock();
        let s = &mut *s;
        s.epoch += 1;
        let len = s.pending.len();
        // A sabotaged store flushes nothing, sled's own flusher included.
        let keep = if len == 0
            || self.world.sabotage == Sabotage::FlushLosesWrites
            || self.world.chance(50)
        {
            0
        } else {
            self.world.range(0..=len as u64) as usize
        };
        let mid_call = keep > 0 && !s.pending[keep - 1].ends_call;
        let retried_unfinished = s
            .view
            .records
            .values()
            .filter(|r| {
                !r.status().is_terminal()
                    && s.view.history.get(&r.id).is_some_and(|h| {
                        h.iter().any(|e| matches!(e.kind, EventKind::OperatorRetry))
                    })
            })
            .count();
        let describe = |q: &Queued| format!("#{} {}", q.ticket, q.op.describe());
        let kept: Vec<String> = s.pending.iter().take(keep).map(describe).collect();
        let lost: Vec<String> = s.pending.iter().skip(keep).map(describe).collect();
        let lost_creates = s
            .pending
            .iter()
            .skip(keep)
            .filter(|q| matches!(q.op, Op::PutKey(..)))
            .count();
        for q in s.pending.drain(..).take(keep) {
            s.durable.apply(&q.op);
        }
        s.view = s.durable.clone();
        // The next process counts on from the tree's mark.
        s.created = s.durable_mark.map_or(0, |m| m.created);
        s.writes = 0;
        s.crash_trigger = None;
        self.world.log(format!(
            "store CRASH: sled's own flush kept [{}], lost [{}]",
            kept.join(", "),
            lost.join(", ")
        ));
        CrashReport {
            lost: lost.len(),
            lost_creates,
            kept: kept.len(),
            mid_call,
            retried_unfinished,
        }
    }

    /// sled's damage check at open: the tree's high-water mark (commits
    /// and creates) against the side file's.
    pub fn open_check(&self) -> Result<(), String> {
        let s = self.lock();
        let Some(file) = s.mark_file else {
            return Ok(());
        };
        let tree = s.durable_mark.unwrap_or_default();
        if tree.seq < file.seq || tree.created < file.created {
            return Err(format!(
                "the store holds {} creates up to commit {} but {} creates up to commit {} were acknowledged",
                tree.created, tree.seq, file.created, file.seq
            ));
        }
        Ok(())
    }

    /// [`index_problems`] of the durable layer, as an engine opening now
    /// would find it.
    pub fn index_problems(&self) -> Vec<String> {
        index_problems(&self.lock().durable)
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
    async fn flush(&self, ticket: u64) -> Result<(), StoreError> {
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
        let mut n = 0;
        {
            let mut s = self.lock();
            let s = &mut *s;
            let seq = ticket + 1;
            if s.mark_file.is_some_and(|m| m.seq >= seq) {
                // A later flush already covered this one.
                return Ok(());
            }
            if self.world.sabotage != Sabotage::FlushLosesWrites {
                while s.pending.front().is_some_and(|q| q.ticket <= ticket) {
                    let q = s.pending.pop_front().expect("front exists");
                    s.durable.apply(&q.op);
                    n += 1;
                }
            }
            // Written to the tree before the flush (so made durable by it)
            // and to the file after it; counts what the flushed prefix holds.
            let later: u64 = s
                .pending
                .iter()
                .filter(|q| q.ticket > ticket)
                .map(|q| q.counts)
                .sum();
            let mark = Mark {
                seq,
                created: s.created - later,
            };
            if self.world.sabotage != Sabotage::FlushLosesWrites {
                s.durable_mark = Some(mark);
            }
            s.mark_file = Some(mark);
        }
        if n > 0 {
            self.world
                .log(format!("store flush <=#{ticket}: {n} writes"));
        }
        Ok(())
    }

    /// Returns once the writes up to `ticket` (already applied to the view
    /// and queued) are durable.
    async fn commit(&self, ticket: u64) -> Result<(), StoreError> {
        if self.world.sabotage == Sabotage::AckBeforeFlush {
            let me = self.clone();
            tokio::spawn(async move {
                let _ = me.flush(ticket).await;
            });
            return Ok(());
        }
        self.flush(ticket).await
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
        EventKind::WaitStarted {
            step,
            signal,
            until_ms,
        } => format!("wait {step} {signal:?} until={until_ms}"),
        EventKind::SignalReceived {
            name,
            signal_id,
            step,
        } => format!("signal {name} ({signal_id}) -> {step:?}"),
        EventKind::WaitTimedOut { step } => format!("wait-timeout {step}"),
        EventKind::DeadlinePassed { overdue } => format!("deadline overdue={overdue}"),
        // Operator operations: the simulation does not issue them.
        other => format!("{other:?}"),
    };
    format!("{}@{}:{k}", e.seq, e.at_ms)
}

fn fmt_events(events: &[SagaEvent]) -> String {
    events.iter().map(fmt_event).collect::<Vec<_>>().join(", ")
}

#[saga_engine::async_trait]
impl Store for SimStore {
    /// As sled: active entry, record, then the key (compare-and-swap in
    /// sled; here the lock makes it atomic). A create that finds its key
    /// taken by an existing record removes its record and entry again.
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let (existing, last) = {
            let Some(mut s) = self.live() else {
                return dead().await;
            };
            let s = &mut *s;
            let id = &record.id;
            if s.view.records.contains_key(id) {
                return Err(StoreError::AlreadyExists(id.clone()));
            }
            if !record.status().is_terminal() {
                s.write(Op::PutActive(id.clone()), 0);
            }
            let keyless = record.idempotency_key.is_none();
            let put = s.write(
                Op::PutRecord {
                    rec: Box::new(record.clone()),
                    events: events.to_vec(),
                    fresh: true,
                },
                u64::from(keyless),
            );
            let outcome = match &record.idempotency_key {
                None => (None, put),
                Some(k) => match s.view.by_key(k).cloned() {
                    Some(existing) => {
                        // Lost the race (or a replay): undo our record.
                        s.write(Op::DelRecord(id.clone()), 0);
                        let t = s.write(Op::DelActive(id.clone()), 0);
                        (Some(existing), t)
                    }
                    // A key naming a record that was never written is
                    // taken over.
                    None => (None, s.write(Op::PutKey(k.clone(), id.clone()), 1)),
                },
            };
            s.end_call();
            outcome
        };
        match existing {
            Some(rec) => {
                self.world.log(format!(
                    "store create {} key {:?}: existing {}",
                    record.id, record.idempotency_key, rec.id
                ));
                // As sled does: the winner may not be flushed yet, and the
                // caller is about to acknowledge it.
                self.commit(last).await?;
                Ok(CreateOutcome::Existing(Box::new(rec)))
            }
            None => {
                self.world.log(format!(
                    "store create {} key {:?} [{}]",
                    record.id,
                    record.idempotency_key,
                    fmt_events(events)
                ));
                self.commit(last).await?;
                Ok(CreateOutcome::Created)
            }
        }
    }

    /// As sled: a non-terminal saga's active entry back first (when it is
    /// missing: a stuck saga retried), then the record, then, for a
    /// terminal one, the entry removed.
    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let last = {
            let Some(mut s) = self.live() else {
                return dead().await;
            };
            let s = &mut *s;
            let id = &record.id;
            let found = s.view.records.get(id).map(|r| r.revision);
            if found != Some(record.revision.wrapping_sub(1)) {
                self.world.log(format!(
                    "store update {id} rev {}: conflict (found {found:?})",
                    record.revision
                ));
                return Err(StoreError::Conflict {
                    id: id.clone(),
                    expected: record.revision.wrapping_sub(1),
                    found,
                });
            }
            let terminal = record.status().is_terminal();
            if !terminal
                && !s.view.active.contains(id)
                && self.world.sabotage != Sabotage::StuckLeavesIndex
            {
                s.write(Op::PutActive(id.clone()), 0);
            }
            let mut written = record.clone();
            if self.world.sabotage == Sabotage::GroupMemberForgotten {
                forget_member(&mut written);
            }
            let put = s.write(
                Op::PutRecord {
                    rec: Box::new(written),
                    events: events.to_vec(),
                    fresh: false,
                },
                0,
            );
            // Sabotage::WaitLeavesIndex: a saga entering a wait leaves the index.
            let forgets_wait = self.world.sabotage == Sabotage::WaitLeavesIndex
                && record.state.parked_until().is_some();
            let last = if terminal || forgets_wait {
                s.write(Op::DelActive(id.clone()), 0)
            } else {
                put
            };
            s.end_call();
            last
        };
        self.world.log(format!(
            "store update {} rev {} {} [{}]",
            record.id,
            record.revision,
            record.status(),
            fmt_events(events)
        ));
        self.commit(last).await
    }

    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        let Some(s) = self.live() else {
            return dead().await;
        };
        Ok(s.view.records.get(id).cloned())
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        let Some(s) = self.live() else {
            return dead().await;
        };
        Ok(s.view.by_key(key).map(|r| r.id.clone()))
    }

    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        let Some(s) = self.live() else {
            return dead().await;
        };
        Ok(s.view.history.get(id).cloned().unwrap_or_default())
    }

    /// From the active index, as sled: entries whose record is missing or
    /// terminal are removed, and so are records whose key does not name
    /// them (a create that died before its key), with their entries.
    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        let (out, last, repaired) = {
            let Some(mut s) = self.live() else {
                return dead().await;
            };
            let s = &mut *s;
            let mut out = Vec::new();
            let mut last = None;
            let mut repaired = Vec::new();
            let ids: Vec<SagaId> = s.view.active.iter().cloned().collect();
            for id in ids {
                let orphan = match s.view.records.get(&id) {
                    Some(r) if !r.status().is_terminal() && !s.view.is_orphan(r) => {
                        out.push(r.clone());
                        continue;
                    }
                    Some(r) => !r.status().is_terminal(),
                    None => false,
                };
                if orphan {
                    // Never counted: `created` counts acknowledged creates.
                    s.write(Op::DelRecord(id.clone()), 0);
                }
                repaired.push(format!("{}{id}", if orphan { "orphan " } else { "" }));
                last = Some(s.write(Op::DelActive(id), 0));
            }
            s.end_call();
            (out, last, repaired)
        };
        if let Some(last) = last {
            self.world.ledger().stats.index_repairs += repaired.len() as u64;
            self.world.log(format!(
                "store list_active repaired [{}]",
                repaired.join(", ")
            ));
            self.commit(last).await?;
        }
        Ok(out)
    }

    /// A barrier, as sled's: waits for a flush covering every write queued
    /// so far, by anyone.
    async fn durable(&self) -> Result<(), StoreError> {
        let last = {
            let Some(s) = self.live() else {
                return dead().await;
            };
            s.pending.back().map(|q| q.ticket)
        };
        match last {
            Some(t) => self.commit(t).await,
            None => Ok(()),
        }
    }

    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let Some(s) = self.live() else {
            return dead().await;
        };
        Ok(s.view
            .records
            .values()
            // Records of creates that never finished are not sagas.
            .filter(|r| r.status().is_terminal() || !s.view.is_orphan(r))
            .filter(|r| status.is_none_or(|st| r.status() == st))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// `Sabotage::GroupMemberForgotten`: while a group runs, a member that
/// succeeded is written as never started.
fn forget_member(rec: &mut saga_engine::SagaRecord) {
    use saga_engine::StepState;
    let steps = &mut rec.state.steps;
    let running = steps
        .iter()
        .any(|s| s.group.is_some() && s.state == StepState::Running);
    if !running {
        return;
    }
    if let Some(s) = steps
        .iter_mut()
        .find(|s| s.group.is_some() && s.state == StepState::Succeeded)
    {
        s.state = StepState::Pending;
        s.attempts = 0;
    }
}
