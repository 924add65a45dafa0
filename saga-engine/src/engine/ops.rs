//! Operator operations on one saga (or on every saga of a definition):
//! pause, resume, retry-now, retry of a stuck saga, skip a step with a
//! supplied result, force compensation, and re-run from a step; each with
//! a dry run.
//!
//! Every operation is a transition of the machine ([`crate::machine`]),
//! applied by whoever holds the saga: its worker if it has one, else the
//! caller under the saga's lock (a parked, paused or stuck saga). It is
//! recorded in the saga's state (by operation id) and in its history (who,
//! why), in the one durable write of the transition, so it is applied
//! whole or not at all. Repeating an operation id returns the first
//! result; another operation under a used id is refused.
//!
//! A skip's result is a JSON object merged into the saga's data (its
//! top-level fields replace the data's), and the merged data must decode
//! as the definition's data type, or the skip is refused. A definition
//! whose data type is `serde_json::Value` accepts any object.
//!
//! A re-run starts a new saga of the same definition and version at the
//! given step, the steps before it counting as succeeded, with the
//! original's data as it last stood. A compensation never changes the
//! data, so that is the data at the step where the original stopped
//! going forward (for an earlier step, it also holds what the steps from
//! there on wrote). The new saga records the original (`rerun_of`), and
//! the original the new one (`reruns`): two writes, the new saga first,
//! under an idempotency key made of the original's id and the operation
//! id, so a repeat after a crash in between finds the new saga and
//! completes the link.

use super::{events_for, stamp, Control, Engine, Inner, HANDOVER_TRIES};
use crate::definition::ErasedDefinition;
use crate::events::{EventKind, SagaEvent};
use crate::machine::{
    AppliedOperation, Decision, Input, MachineError, PauseMark, Plan, Refusal, SagaState,
    SagaStatus,
};
use crate::store::{fingerprint, CreateOutcome, Lease, SagaRecord, RECORD_FORMAT};
use crate::{Error, SagaId};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

/// An operator operation on a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    /// Pause: no step starts and no timer fires until it is resumed; a
    /// step under way finishes and its result is recorded.
    Pause,
    /// Resume a paused saga where it stood.
    Resume,
    /// Wake a saga waiting in backoff (forward or compensating) at once.
    RetryNow,
    /// Retry a stuck saga: its failed compensation gets a fresh round of
    /// attempts, or its stuck forward step (past the pivot) runs again.
    Retry,
    /// The operator did `step` by hand: it counts as succeeded, and
    /// `result` (a JSON object) is merged into the data. Only before the
    /// pivot, for a step that has not succeeded and is not running.
    Skip {
        /// The step's name.
        step: String,
        /// What the step would have written into the data.
        result: serde_json::Value,
    },
    /// Cancel with a reason: compensate what was done (a running saga, or
    /// one stuck forward on a pivot that never succeeded).
    ForceCompensate,
    /// Start a new saga from step `from_step` with this one's data (a saga
    /// that ended compensated or stuck).
    Rerun {
        /// The step the new saga starts at.
        from_step: String,
    },
}

impl Operation {
    /// The operation's name, as recorded.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::RetryNow => "retry_now",
            Operation::Retry => "retry",
            Operation::Skip { .. } => "skip",
            Operation::ForceCompensate => "force_compensate",
            Operation::Rerun { .. } => "rerun",
        }
    }

    fn fingerprint(&self) -> u64 {
        fingerprint(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Who asks for an operation, why, under which id, and whether only to
/// preview it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRequest {
    /// The caller's id for the operation: repeating it returns the first
    /// result.
    pub operation_id: String,
    /// The operator's name.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// Only say what would happen; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What an operation did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationOutcome {
    /// The saga operated on.
    pub saga_id: SagaId,
    /// The operation's id.
    pub operation_id: String,
    /// Which operation.
    pub operation: &'static str,
    /// False for a dry run.
    pub applied: bool,
    /// True when the id had been used for this operation already: nothing
    /// was done again.
    pub repeated: bool,
    /// The saga's status afterwards (for a dry run: what it would be).
    pub status: SagaStatus,
    /// The steps that would run or be compensated from here, in order
    /// (of the new saga, for a re-run).
    pub plan: Plan,
    /// The saga a re-run started (or would start: `None` in a dry run).
    pub new_saga: Option<SagaId>,
}

/// An operation on every saga of a definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkOutcome {
    /// The sagas it applied to (or, dry, would).
    pub applied: Vec<OperationOutcome>,
    /// The sagas it did not apply to, and why.
    pub refused: Vec<(SagaId, String)>,
}

/// An operation prepared on a copy of the record.
pub(super) enum Prepared {
    /// The id was used for this operation before: its outcome now.
    Repeat(OperationOutcome),
    /// To commit (unless a dry run): the new record, what to do next,
    /// the events, and the outcome to answer.
    Apply {
        next: Box<SagaRecord>,
        decision: Decision,
        events: Vec<SagaEvent>,
        outcome: OperationOutcome,
    },
}

impl Engine {
    /// Applies an operator operation to saga `id` (or previews it with
    /// `req.dry_run`). Returns once the operation is durable. Refusals are
    /// [`Error::Refused`] (nothing changed) and
    /// [`Error::OperationIdReused`].
    pub async fn operate(
        &self,
        id: &SagaId,
        op: Operation,
        req: &OperationRequest,
    ) -> Result<OperationOutcome, Error> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        if let Operation::Rerun { from_step } = &op {
            return self.inner.rerun(id, from_step, req).await;
        }
        for _ in 0..HANDOVER_TRIES {
            let tx = self.inner.lock_workers().get(id).map(|w| w.control.clone());
            if let Some(tx) = tx {
                let (ack, rx) = oneshot::channel();
                let sent = tx.send(Control::Op {
                    op: op.clone(),
                    req: req.clone(),
                    ack,
                });
                if sent.is_ok() {
                    if let Ok(r) = rx.await {
                        return r;
                    }
                }
                // The worker went away (parked, finished): look again.
                tokio::task::yield_now().await;
                continue;
            }
            if let Some(r) = self.inner.operate_unowned(id, &op, req).await? {
                return r;
            }
        }
        let rec = self.status(id).await?;
        Err(self.inner.not_runnable(
            &rec,
            "operate: no worker runs it (engine shutting down or storage failed)",
        ))
    }

    /// Pauses or resumes (`op`) every saga of `definition` that it applies
    /// to (running or compensating ones for a pause, paused ones for a
    /// resume), each under the same operation id. A pause also holds the
    /// sagas started later: it is persisted as the definition's flag (in
    /// the store, so it survives a restart) and a new saga of a paused
    /// definition is created paused (status `paused`, its history saying
    /// by whom and why); the resume clears the flag first, then resumes
    /// every paused saga of the definition, those started while it was
    /// paused included. A dry run changes no flag.
    pub async fn operate_definition(
        &self,
        definition: &str,
        op: Operation,
        req: &OperationRequest,
    ) -> Result<BulkOutcome, Error> {
        if !self.inner.latest.contains_key(definition) {
            return Err(Error::UnknownDefinition {
                name: definition.to_string(),
                version: None,
            });
        }
        let statuses: &[SagaStatus] = match op {
            Operation::Pause => &[SagaStatus::Running, SagaStatus::Compensating],
            Operation::Resume => &[SagaStatus::Paused],
            _ => {
                return Err(Error::Refused {
                    id: SagaId::from_raw(String::new()),
                    operation: op.name(),
                    refusal: Refusal::BadRequest(
                        "only pause and resume apply to a whole definition".into(),
                    ),
                })
            }
        };
        if !req.dry_run {
            // The flag first, under the lock every start reads it under:
            // a start under way finishes its create before this goes on,
            // so the listing below finds its saga.
            let mut pauses = self.inner.definition_pauses.write().await;
            let mark = PauseMark {
                operator: req.operator.clone(),
                reason: req.reason.clone(),
                at_ms: self.inner.clock.now_ms(),
            };
            let paused = matches!(op, Operation::Pause);
            self.inner
                .store
                .set_definition_pause(definition, paused.then_some(&mark))
                .await?;
            if paused {
                pauses.insert(definition.to_string(), mark);
            } else {
                pauses.remove(definition);
            }
        }
        let mut ids = Vec::new();
        for &st in statuses {
            for r in self.inner.store.list(Some(st), usize::MAX).await? {
                if r.definition == definition {
                    ids.push(r.id);
                }
            }
        }
        let mut out = BulkOutcome {
            applied: Vec::new(),
            refused: Vec::new(),
        };
        for id in ids {
            match self.operate(&id, op.clone(), req).await {
                Ok(o) => out.applied.push(o),
                Err(e @ (Error::Refused { .. } | Error::OperationIdReused { .. })) => {
                    out.refused.push((id, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// What saga `id` would do from now on if every step succeeded (a dry
    /// run of doing nothing).
    pub async fn plan(&self, id: &SagaId) -> Result<Plan, Error> {
        let rec = self.status(id).await?;
        let def = self
            .inner
            .definition_for(&rec)
            .map_err(|_| self.inner.not_runnable(&rec, "plan"))?;
        Ok(rec.state.plan(def.policies(), self.inner.clock.now_ms()))
    }
}

/// Merges a skip's result (an object) into the data's top level.
fn merge_result(
    data: &serde_json::Value,
    result: &serde_json::Value,
    step: &str,
) -> Result<serde_json::Value, Refusal> {
    let invalid = |reason: &str| Refusal::InvalidResult {
        step: step.to_string(),
        reason: reason.to_string(),
    };
    let serde_json::Value::Object(fields) = result else {
        return Err(invalid(
            "it must be a JSON object (its fields are merged into the data)",
        ));
    };
    let mut merged = data.clone();
    match &mut merged {
        serde_json::Value::Object(d) => {
            for (k, v) in fields {
                d.insert(k.clone(), v.clone());
            }
        }
        serde_json::Value::Null => merged = result.clone(),
        _ => return Err(invalid("the saga's data is not a JSON object")),
    }
    Ok(merged)
}

impl Inner {
    fn refused(&self, id: &SagaId, op: &'static str, e: Error) -> Error {
        let refusal = match e {
            Error::Machine(MachineError::Refused(r)) => r,
            Error::Machine(MachineError::Finished(s)) => Refusal::Finished(s),
            Error::Machine(MachineError::PastPivot { pivot }) => Refusal::PastPivot { pivot },
            e => return e,
        };
        Error::Refused {
            id: id.clone(),
            operation: op,
            refusal,
        }
    }

    /// The outcome of an id used before for the same operation, or the
    /// refusal of an id used for another one.
    fn seen(
        &self,
        rec: &SagaRecord,
        def: &dyn ErasedDefinition,
        op: &Operation,
        req: &OperationRequest,
    ) -> Result<Option<OperationOutcome>, Error> {
        let Some(a) = rec
            .state
            .operations
            .iter()
            .find(|a| a.id == req.operation_id)
        else {
            return Ok(None);
        };
        if a.operation != op.name() || a.fingerprint != op.fingerprint() {
            return Err(Error::OperationIdReused {
                id: rec.id.clone(),
                operation_id: req.operation_id.clone(),
                first: a.operation.clone(),
            });
        }
        Ok(Some(OperationOutcome {
            saga_id: rec.id.clone(),
            operation_id: req.operation_id.clone(),
            operation: op.name(),
            applied: true,
            repeated: true,
            status: rec.status(),
            plan: rec.state.plan(def.policies(), self.clock.now_ms()),
            new_saga: a.new_saga.clone().map(SagaId::from_raw),
        }))
    }

    /// Prepares `op` on a copy of `rec`: checks, the machine's transition,
    /// the record of it, the events and the outcome.
    pub(super) fn prepare(
        &self,
        def: &dyn ErasedDefinition,
        rec: &SagaRecord,
        op: &Operation,
        req: &OperationRequest,
    ) -> Result<Prepared, Error> {
        let name = op.name();
        if !req.dry_run {
            if let Some(o) = self.seen(rec, def, op, req)? {
                return Ok(Prepared::Repeat(o));
            }
        }
        let now = self.clock.now_ms();
        let mut next = rec.clone();
        let bad = |r: Refusal| Error::Refused {
            id: rec.id.clone(),
            operation: name,
            refusal: r,
        };
        let (input, lifecycle) = match op {
            Operation::Pause => (
                Input::Pause(PauseMark {
                    operator: req.operator.clone(),
                    reason: req.reason.clone(),
                    at_ms: now,
                }),
                Some(EventKind::SagaPaused {
                    operator: req.operator.clone(),
                    reason: req.reason.clone(),
                }),
            ),
            Operation::Resume => (
                Input::Unpause,
                Some(EventKind::SagaUnpaused {
                    operator: req.operator.clone(),
                }),
            ),
            Operation::RetryNow => (Input::RetryNow, None),
            Operation::Retry => {
                if rec.status() != SagaStatus::Stuck {
                    return Err(bad(Refusal::NotStuck(rec.status())));
                }
                (Input::OperatorRetry, Some(EventKind::OperatorRetry))
            }
            Operation::Skip { step, result } => {
                let i = rec
                    .state
                    .steps
                    .iter()
                    .position(|s| &s.name == step)
                    .ok_or_else(|| bad(Refusal::UnknownStep(step.clone())))?;
                let merged = merge_result(&rec.data, result, step).map_err(bad)?;
                def.check_data(&merged).map_err(|reason| {
                    bad(Refusal::InvalidResult {
                        step: step.clone(),
                        reason,
                    })
                })?;
                next.data = merged;
                (
                    Input::Skip { step: i },
                    Some(EventKind::StepSkipped {
                        step: step.clone(),
                        operator: req.operator.clone(),
                    }),
                )
            }
            Operation::ForceCompensate => (
                Input::ForceCompensate {
                    reason: req.reason.clone(),
                },
                Some(EventKind::CancelRequested {
                    reason: req.reason.clone(),
                }),
            ),
            Operation::Rerun { .. } => {
                return Err(bad(Refusal::BadRequest(
                    "a re-run is not prepared here".into(),
                )))
            }
        };
        let (decision, model) = self
            .step(def, &mut next, input, now)
            .map_err(|e| self.refused(&rec.id, name, e))?;
        next.state.operations.push(AppliedOperation {
            id: req.operation_id.clone(),
            operation: name.to_string(),
            fingerprint: op.fingerprint(),
            operator: req.operator.clone(),
            at_ms: now,
            new_saga: None,
        });
        let applied = EventKind::OperationApplied {
            operation_id: req.operation_id.clone(),
            operation: name.to_string(),
            operator: req.operator.clone(),
            reason: req.reason.clone(),
        };
        let events = events_for(
            &mut next,
            std::iter::once(applied).chain(lifecycle).chain(model),
            decision,
            now,
        );
        let outcome = OperationOutcome {
            saga_id: rec.id.clone(),
            operation_id: req.operation_id.clone(),
            operation: name,
            applied: !req.dry_run,
            repeated: false,
            status: next.status(),
            plan: next.state.plan_after(&rec.state, def.policies(), now),
            new_saga: None,
        };
        Ok(Prepared::Apply {
            next: Box::new(next),
            decision,
            events,
            outcome,
        })
    }

    /// Applies an operation to a saga no worker holds here (parked in a
    /// wait, paused, or finished). `Ok(None)`: a worker has it now.
    async fn operate_unowned(
        self: &Arc<Self>,
        id: &SagaId,
        op: &Operation,
        req: &OperationRequest,
    ) -> Result<Option<Result<OperationOutcome, Error>>, Error> {
        let _control = self.control.lock().await;
        let _guard = self.saga_lock(id).await;
        if self.lock_workers().contains_key(id) {
            return Ok(None);
        }
        let Some(rec) = self.store.get(id).await? else {
            return Ok(Some(Err(Error::NotFound(id.clone()))));
        };
        let parked = rec.state.parked_until();
        if parked.is_none() && !rec.status().is_terminal() {
            // Running, yet no worker here: shutting down, a failed
            // store, or another process owns it.
            return Ok(Some(Err(self.not_runnable(&rec, "operate"))));
        }
        let def = match self.definition_for(&rec) {
            Ok(d) => d,
            Err(_) => return Ok(Some(Err(self.not_runnable(&rec, "operate")))),
        };
        let (mut next, decision, events, outcome) = match self.prepare(&*def, &rec, op, req) {
            Ok(Prepared::Repeat(o)) => return Ok(Some(Ok(o))),
            Ok(Prepared::Apply {
                next,
                decision,
                events,
                outcome,
            }) => (*next, decision, events, outcome),
            Err(e) => return Ok(Some(Err(e))),
        };
        if req.dry_run {
            return Ok(Some(Ok(outcome)));
        }
        if matches!(op, Operation::Pause)
            && crate::sabotage::active(crate::sabotage::PAUSE_NOT_DURABLE)
        {
            // Planted defect: the pause is acknowledged, never written.
            self.publish(events);
            if let Some(t) = parked {
                self.unpark(id, t);
            }
            return Ok(Some(Ok(outcome)));
        }
        self.commit(&mut next, events).await?;
        if let Some(t) = parked {
            self.unpark(id, t);
        }
        if self.store.is_shared() {
            // No lease is held for it: the next claim (here or in another
            // process) runs it.
            return Ok(Some(Ok(outcome)));
        }
        self.after_parked(def, next, decision);
        Ok(Some(Ok(outcome)))
    }

    /// An operation that reached the saga's worker: prepare, persist,
    /// answer. `Ok(Some(d))`: applied, `d` is what to do next.
    pub(super) async fn control_op(
        &self,
        def: &dyn ErasedDefinition,
        rec: &mut SagaRecord,
        op: Operation,
        req: OperationRequest,
        ack: oneshot::Sender<Result<OperationOutcome, Error>>,
    ) -> Result<Option<Decision>, Error> {
        let (mut next, decision, events, outcome) = match self.prepare(def, rec, &op, &req) {
            Ok(Prepared::Repeat(o)) => {
                let _ = ack.send(Ok(o));
                return Ok(None);
            }
            Ok(Prepared::Apply {
                next,
                decision,
                events,
                outcome,
            }) => (*next, decision, events, outcome),
            Err(e) => {
                let _ = ack.send(Err(e));
                return Ok(None);
            }
        };
        if req.dry_run {
            let _ = ack.send(Ok(outcome));
            return Ok(None);
        }
        if matches!(op, Operation::Pause)
            && crate::sabotage::active(crate::sabotage::PAUSE_NOT_DURABLE)
        {
            // Planted defect: the pause is acknowledged, never written.
            self.publish(events);
            next.revision = rec.revision;
            *rec = next;
            let _ = ack.send(Ok(outcome));
            return Ok(Some(decision));
        }
        match self.commit(&mut next, events).await {
            Ok(()) => {
                *rec = next;
                let _ = ack.send(Ok(outcome));
                Ok(Some(decision))
            }
            Err(e) => {
                let _ = ack.send(Err(Error::Store(crate::store::StoreError::Io(
                    e.to_string(),
                ))));
                Err(e)
            }
        }
    }

    /// Re-runs saga `id` from `from_step` as a new saga (see the module docs).
    async fn rerun(
        self: &Arc<Self>,
        id: &SagaId,
        from_step: &str,
        req: &OperationRequest,
    ) -> Result<OperationOutcome, Error> {
        let op = Operation::Rerun {
            from_step: from_step.to_string(),
        };
        let name = op.name();
        let _control = self.control.lock().await;
        let _guard = self.saga_lock(id).await;
        let original = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        let def = self
            .definition_for(&original)
            .map_err(|_| self.not_runnable(&original, "rerun"))?;
        let seen = if req.dry_run {
            None
        } else {
            self.seen(&original, &*def, &op, req)?
        };
        if let Some(o) = seen {
            return Ok(o);
        }
        let bad = |r: Refusal| Error::Refused {
            id: id.clone(),
            operation: name,
            refusal: r,
        };
        let status = original.status();
        if !matches!(status, SagaStatus::Compensated | SagaStatus::Stuck) {
            return Err(bad(Refusal::NotRerunnable(status)));
        }
        let step = original
            .state
            .steps
            .iter()
            .position(|s| s.name == from_step)
            .ok_or_else(|| bad(Refusal::UnknownStep(from_step.to_string())))?;
        let now = self.clock.now_ms();
        let new_id = SagaId::from_parts(now, self.random_u64());
        let key = format!("rerun:{}:{}", id, req.operation_id);
        let mut rec = SagaRecord {
            revision: 0,
            v: RECORD_FORMAT,
            id: new_id.clone(),
            definition: original.definition.clone(),
            version: original.version,
            idempotency_key: Some(key.clone()),
            input_fingerprint: fingerprint(key.as_bytes()),
            next_seq: 0,
            created_at_ms: now,
            updated_at_ms: now,
            state: SagaState::grouped(def.step_names().into_iter().zip(def.groups())),
            data: original.data.clone(),
            lease: self.store.is_shared().then(|| Lease {
                owner: self.owner.clone(),
                generation: 1,
                expires_at_ms: now + self.lease_ttl_ms,
            }),
            attributes: Default::default(),
        };
        rec.attributes = def.search_attributes(&rec.data);
        rec.state.rerun_of = Some(id.to_string());
        rec.state.deadline_ms = def
            .deadline()
            .map(|d| now.saturating_add(d.as_millis() as u64));
        let fresh = rec.state.clone();
        let (decision, model) = self
            .step(&*def, &mut rec, Input::StartAt { step }, now)
            .map_err(|e| self.refused(id, name, e))?;
        let plan = rec.state.plan_after(&fresh, def.policies(), now);
        if req.dry_run {
            return Ok(OperationOutcome {
                saga_id: id.clone(),
                operation_id: req.operation_id.clone(),
                operation: name,
                applied: false,
                repeated: false,
                status,
                plan,
                new_saga: None,
            });
        }
        let started = [
            EventKind::SagaStarted {
                definition: rec.definition.clone(),
                version: rec.version,
            },
            EventKind::RerunStarted {
                original: id.clone(),
                from_step: from_step.to_string(),
            },
            EventKind::OperationApplied {
                operation_id: req.operation_id.clone(),
                operation: name.to_string(),
                operator: req.operator.clone(),
                reason: req.reason.clone(),
            },
        ];
        let events = events_for(&mut rec, started.into_iter().chain(model), decision, now);
        // The new saga first: a crash before the original's write leaves a
        // new saga that names the original; repeating the operation finds
        // it by its key and writes the link.
        let (new_id, created) = match self.store.create(&rec, &events).await? {
            CreateOutcome::Created => (new_id, true),
            CreateOutcome::Existing(existing) => (existing.id.clone(), false),
            CreateOutcome::Retired { purged_at_ms } => {
                return Err(Error::KeyRetired { key, purged_at_ms })
            }
        };
        if created {
            self.publish(events);
        }
        let mut orig = original.clone();
        if !orig.state.reruns.iter().any(|r| r == new_id.as_str()) {
            orig.state.reruns.push(new_id.to_string());
        }
        {
            orig.state.operations.push(AppliedOperation {
                id: req.operation_id.clone(),
                operation: name.to_string(),
                fingerprint: op.fingerprint(),
                operator: req.operator.clone(),
                at_ms: now,
                new_saga: Some(new_id.to_string()),
            });
        }
        let link = [
            EventKind::OperationApplied {
                operation_id: req.operation_id.clone(),
                operation: name.to_string(),
                operator: req.operator.clone(),
                reason: req.reason.clone(),
            },
            EventKind::RerunCreated {
                rerun: new_id.clone(),
                from_step: from_step.to_string(),
            },
        ];
        let events = stamp(&mut orig, link, now);
        self.commit(&mut orig, events).await?;
        if created && !self.store.is_shared() {
            self.spawn(def, rec, None);
        }
        Ok(OperationOutcome {
            saga_id: id.clone(),
            operation_id: req.operation_id.clone(),
            operation: name,
            applied: true,
            repeated: !created,
            status,
            plan,
            new_saga: Some(new_id),
        })
    }
}
