//! Durable waits at run time: the timer index of parked sagas, the task
//! that wakes them, signals (to a worker or to a parked saga), and the one
//! place where an input is applied to a record (`Inner::step`), which also
//! moves a consumed signal's payload into the data and names the model's
//! events (wait started, signal received, wait timed out, deadline passed).
//!
//! A parked saga has no task: it is its record in the store, an entry in
//! the store's timer index (read at open without loading the record) and an
//! (id, wake time) pair here. Moving a saga between a worker and the parked
//! state happens under the saga's stripe lock, so a signal, a cancel or a
//! timer always finds it on one side.

use super::{events_for, Engine, Inner, HANDOVER_TRIES};
use crate::definition::ErasedDefinition;
use crate::events::{EventKind, SagaEvent};
use crate::machine::{Decision, Input, MachineError, SagaState, StepKind, StepPolicy, StepState};
use crate::store::SagaRecord;
use crate::{Error, SagaId};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What became of a signal ([`Engine::signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalOutcome {
    /// A waiting step took it: its payload is in the saga's data and the
    /// saga moves on.
    Delivered,
    /// No step waits for it yet: it is kept for the wait to come.
    Kept,
    /// A signal with this id was already accepted; nothing changed.
    Duplicate,
}

impl Engine {
    /// Delivers the signal `name` to a saga, with `signal_id` as the
    /// sender's id for it (a repeat with the same id is a
    /// [`SignalOutcome::Duplicate`] and changes nothing) and `payload`,
    /// which the waiting step moves into the saga's data. A signal that
    /// arrives before its wait begins is kept for it. Returns once the
    /// signal is durable.
    ///
    /// Refused with [`Error::SignalRefused`] when no step of the saga waits
    /// for `name`, its wait is over (timed out: the error says so; or
    /// already received), the saga has finished, or the payload does not
    /// fit the wait's type.
    pub async fn signal<P: Serialize>(
        &self,
        id: &SagaId,
        name: &str,
        signal_id: &str,
        payload: &P,
    ) -> Result<SignalOutcome, Error> {
        let payload = serde_json::to_value(payload).map_err(|e| Error::SignalRefused {
            id: id.clone(),
            name: name.to_string(),
            reason: format!("the payload does not serialize: {e}"),
        })?;
        for _ in 0..HANDOVER_TRIES {
            let tx = self.inner.lock_workers().get(id).map(|w| w.control.clone());
            if let Some(tx) = tx {
                let (ack, rx) = oneshot::channel();
                let sent = tx.send(super::Control::Signal {
                    signal_id: signal_id.to_string(),
                    name: name.to_string(),
                    payload: payload.clone(),
                    ack,
                });
                if sent.is_ok() {
                    if let Ok(r) = rx.await {
                        return r;
                    }
                }
                // The worker let go of its messages: it is parking the
                // saga, under the saga's lock, which `signal_parked` takes
                // (so it finds the saga parked, however long the hand-over
                // takes, instead of spending the tries while it lasts).
            }
            if let Some(r) = self
                .inner
                .signal_parked(id, signal_id, name, payload.clone())
                .await?
            {
                return r;
            }
            tokio::task::yield_now().await;
        }
        let rec = self.status(id).await?;
        Err(self.inner.not_runnable(
            &rec,
            "signal: no worker runs it (engine shutting down or storage failed)",
        ))
    }
}

impl Inner {
    /// Applies `input` to `rec` (its state, and the data a consumed
    /// signal's payload goes to) and returns the decision with the model's
    /// events. The state is unchanged on error.
    pub(super) fn step(
        &self,
        def: &dyn ErasedDefinition,
        rec: &mut SagaRecord,
        input: Input,
        now: u64,
    ) -> Result<(Decision, Vec<EventKind>), Error> {
        let before = rec.state.clone();
        // Sleep-until steps take their instant from the data as it stands.
        let policies = def.policies_for(&rec.data);
        let d = rec.state.apply(&policies, input, self.ctx(now))?;
        for g in rec.state.signals.iter_mut() {
            if let (Some(i), false) = (g.consumed_by, g.payload.is_null()) {
                let payload = std::mem::take(&mut g.payload);
                if let Err(e) = def.deliver(i, &mut rec.data, payload) {
                    // Checked when the signal was accepted; only a record
                    // that no longer decodes gets here.
                    tracing::error!(saga_id = %rec.id, error = %e, "signal payload not delivered");
                }
            }
        }
        Ok((d, model_events(&before, &rec.state, &policies, d)))
    }

    /// Applies a signal to `rec` (not yet persisted): the outcome, the new
    /// decision and the events to commit with it.
    pub(super) fn signal_in(
        &self,
        def: &dyn ErasedDefinition,
        rec: &mut SagaRecord,
        signal_id: &str,
        name: &str,
        payload: serde_json::Value,
        now: u64,
    ) -> Result<(SignalOutcome, Decision, Vec<SagaEvent>), Error> {
        if rec.state.signals.iter().any(|g| g.id == signal_id) {
            return Ok((SignalOutcome::Duplicate, rec.state.decision(), Vec::new()));
        }
        let refused = |reason: String| Error::SignalRefused {
            id: rec.id.clone(),
            name: name.to_string(),
            reason,
        };
        let wait = def
            .policies()
            .iter()
            .position(|p| matches!(&p.kind, StepKind::Signal { name: n, .. } if n == name));
        if let Some(i) = wait {
            def.check_signal(i, &payload).map_err(refused)?;
        }
        let input = Input::Signal {
            id: signal_id.to_string(),
            name: name.to_string(),
            payload,
        };
        let (d, model) = match self.step(def, rec, input, now) {
            Ok(x) => x,
            Err(Error::Machine(MachineError::SignalRefused { reason, .. })) => {
                return Err(Error::SignalRefused {
                    id: rec.id.clone(),
                    name: name.to_string(),
                    reason,
                })
            }
            Err(e) => return Err(e),
        };
        let outcome = match rec.state.signals.last() {
            Some(g) if g.consumed_by.is_some() => SignalOutcome::Delivered,
            _ => SignalOutcome::Kept,
        };
        let events = events_for(rec, model, d, now);
        Ok((outcome, d, events))
    }

    /// The lock that serialises hand-overs of saga `id` (by stripe).
    pub(super) async fn saga_lock(&self, id: &SagaId) -> tokio::sync::MutexGuard<'_, ()> {
        let i = crate::store::fingerprint(id.as_str().as_bytes()) % self.saga_locks.len() as u64;
        self.saga_locks[i as usize].lock().await
    }

    pub(super) fn lock_timers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(u64, SagaId)>> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks saga `id` until `until_ms`.
    pub(super) fn park(&self, id: SagaId, until_ms: u64) {
        if until_ms == u64::MAX {
            // Paused: no timer; only an operator wakes it.
            return;
        }
        let first = {
            let mut t = self.lock_timers();
            t.insert((until_ms, id));
            t.first().map(|(w, _)| *w) == Some(until_ms)
        };
        if first {
            self.timer_wake.notify_one();
        }
    }

    /// Parks many sagas at once (at open).
    pub(super) fn park_many(&self, parked: Vec<(SagaId, u64)>) {
        self.lock_timers().extend(
            parked
                .into_iter()
                .filter(|(_, t)| *t != u64::MAX)
                .map(|(id, t)| (t, id)),
        );
        self.timer_wake.notify_one();
    }

    /// Wakes parked sagas when their time comes, until shutdown. Holds
    /// the engine only weakly while it sleeps, so that dropping the engine
    /// releases the store.
    pub(super) async fn timer_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let notify = self.timer_wake.clone();
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let now = inner.clock.now_ms();
            let (due, next) = {
                let mut t = inner.lock_timers();
                let mut due = Vec::new();
                while t.first().is_some_and(|(w, _)| *w <= now) {
                    if let Some((_, id)) = t.pop_first() {
                        due.push(id);
                    }
                }
                (due, t.first().map(|(w, _)| *w))
            };
            for id in due {
                let inner = inner.clone();
                tokio::spawn(async move {
                    if let Err(e) = inner.wake(&id).await {
                        tracing::warn!(saga_id = %id, error = %e, "waking a parked saga failed; it wakes at the next open");
                    }
                });
            }
            drop(inner);
            let wait = next.map_or(Duration::from_secs(3600), |w| {
                Duration::from_millis(w.saturating_sub(now))
            });
            tokio::select! {
                // Fixed branch order: a run under a virtual clock repeats exactly.
                biased;
                _ = shutdown.changed() => {}
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A parked saga's time has come: feed it the timer, persist, and give
    /// it a worker (or park it again).
    async fn wake(self: &Arc<Self>, id: &SagaId) -> Result<(), Error> {
        let _guard = self.saga_lock(id).await;
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
            || self.lock_workers().contains_key(id)
        {
            return Ok(());
        }
        let Some(mut rec) = self.store.get(id).await? else {
            return Ok(());
        };
        let Decision::Wait { step, until_ms } = rec.state.decision() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        if until_ms > now {
            self.park(id.clone(), until_ms);
            return Ok(());
        }
        let def = match self.definition_for(&rec) {
            Ok(d) => d,
            Err(_) => {
                self.resume_or_report(rec);
                return Ok(());
            }
        };
        let (d, model) = self.step(&*def, &mut rec, Input::TimerFired { step }, now)?;
        let events = events_for(&mut rec, model, d, now);
        self.commit(&mut rec, events).await?;
        self.after_parked(def, rec, d);
        Ok(())
    }

    /// A parked saga changed (woken, signalled, cancelled): park it again,
    /// or give it a worker.
    pub(super) fn after_parked(
        self: &Arc<Self>,
        def: Arc<dyn ErasedDefinition>,
        rec: SagaRecord,
        d: Decision,
    ) {
        match d {
            Decision::Wait { until_ms, .. } => self.park(rec.id.clone(), until_ms),
            Decision::Finished(_) | Decision::Paused => {}
            _ => self.spawn(def, rec, None),
        }
    }

    /// Removes the timer entry of a parked saga that is leaving its wait.
    pub(super) fn unpark(&self, id: &SagaId, until_ms: u64) {
        self.lock_timers().remove(&(until_ms, id.clone()));
    }

    /// Loads saga `id` under its lock if it is parked (no worker, in a
    /// durable wait). `Ok(None)` when a worker has it now (look again);
    /// `Ok(Some(Err))` when it is neither parked nor running here.
    async fn parked(
        &self,
        id: &SagaId,
        operation: &'static str,
    ) -> Result<Option<Result<(SagaRecord, Arc<dyn ErasedDefinition>, u64), Error>>, Error> {
        if self.lock_workers().contains_key(id) {
            return Ok(None);
        }
        let Some(rec) = self.store.get(id).await? else {
            return Err(Error::NotFound(id.clone()));
        };
        let Some(until) = rec.state.parked_until() else {
            if rec.status().is_terminal() {
                return Ok(Some(Err(Error::InvalidState {
                    id: id.clone(),
                    status: rec.status(),
                    operation,
                })));
            }
            return Ok(Some(Err(self.not_runnable(&rec, operation))));
        };
        match self.definition_for(&rec) {
            Ok(def) => Ok(Some(Ok((rec, def, until)))),
            Err(_) => Ok(Some(Err(self.not_runnable(&rec, operation)))),
        }
    }

    /// A signal for a saga without a worker. `Ok(None)`: a worker has it
    /// now, send it there.
    pub(super) async fn signal_parked(
        self: &Arc<Self>,
        id: &SagaId,
        signal_id: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<Option<Result<SignalOutcome, Error>>, Error> {
        let _guard = self.saga_lock(id).await;
        let (mut rec, def, until) = match self.parked(id, "signal").await {
            Ok(Some(Ok(x))) => x,
            Ok(Some(Err(Error::InvalidState { status, .. }))) => {
                return Ok(Some(Err(Error::SignalRefused {
                    id: id.clone(),
                    name: name.to_string(),
                    reason: format!("the saga has finished as {status}"),
                })))
            }
            Ok(Some(Err(e))) => return Ok(Some(Err(e))),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = self.clock.now_ms();
        let (outcome, d, events) =
            match self.signal_in(&*def, &mut rec, signal_id, name, payload, now) {
                Ok(x) => x,
                Err(e) => return Ok(Some(Err(e))),
            };
        if outcome == SignalOutcome::Duplicate {
            return Ok(Some(Ok(outcome)));
        }
        self.commit(&mut rec, events).await?;
        self.unpark(id, until);
        self.after_parked(def, rec, d);
        Ok(Some(Ok(outcome)))
    }

    /// A cancel for a saga without a worker. `Ok(None)`: a worker has it
    /// now, send it there.
    pub(super) async fn cancel_parked(
        self: &Arc<Self>,
        id: &SagaId,
        reason: &str,
    ) -> Result<Option<Result<(), Error>>, Error> {
        let _guard = self.saga_lock(id).await;
        let (mut rec, def, until) = match self.parked(id, "cancel").await? {
            Some(Ok(x)) => x,
            Some(Err(e)) => return Ok(Some(Err(e))),
            None => return Ok(None),
        };
        let now = self.clock.now_ms();
        let input = Input::Cancel {
            reason: reason.to_string(),
        };
        let (d, model) = match self.step(&*def, &mut rec, input, now) {
            Ok(x) => x,
            Err(e) => return Ok(Some(Err(self.refusal(&rec, e, "cancel")))),
        };
        let events = events_for(
            &mut rec,
            std::iter::once(EventKind::CancelRequested {
                reason: reason.to_string(),
            })
            .chain(model),
            d,
            now,
        );
        self.commit(&mut rec, events).await?;
        self.unpark(id, until);
        self.after_parked(def, rec, d);
        Ok(Some(Ok(())))
    }
}

/// The events of the saga model a transition produced, found by comparing
/// the state before and after it.
fn model_events(
    before: &SagaState,
    after: &SagaState,
    p: &[StepPolicy],
    d: Decision,
) -> Vec<EventKind> {
    let mut out = Vec::new();
    for g in after.signals.iter().skip(before.signals.len()) {
        out.push(EventKind::SignalReceived {
            name: g.name.clone(),
            signal_id: g.id.clone(),
            step: g.consumed_by.map(|i| after.steps[i].name.clone()),
        });
    }
    for (i, (b, a)) in before.steps.iter().zip(&after.steps).enumerate() {
        let timed_out = b.state == StepState::Waiting
            && matches!(a.state, StepState::Rejected | StepState::StuckForward)
            && matches!(p[i].kind, StepKind::Signal { .. })
            && a.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("timed out"));
        if timed_out {
            out.push(EventKind::WaitTimedOut {
                step: a.name.clone(),
            });
        }
    }
    for (b, a) in before.steps.iter().zip(&after.steps) {
        // Group members start without a `Decision::Run` of their own.
        let started = a.state == StepState::Running
            && (b.state != StepState::Running || b.attempts != a.attempts);
        if a.group.is_some() && started {
            out.push(EventKind::StepStarted {
                step: a.name.clone(),
                attempt: a.attempts,
            });
        }
    }
    if after.deadline_passed && !before.deadline_passed {
        out.push(EventKind::DeadlinePassed {
            overdue: after.overdue,
        });
    }
    if let Decision::Wait { step, until_ms } = d {
        if before.steps[step].state != StepState::Waiting {
            out.push(EventKind::WaitStarted {
                step: after.steps[step].name.clone(),
                signal: match &p[step].kind {
                    StepKind::Signal { name, .. } => Some(name.clone()),
                    _ => None,
                },
                until_ms,
            });
        }
    }
    out
}
