//! Operator actions on one saga: cancel (to a worker or a parked saga),
//! retry of a stuck saga, a retention pass on demand, and how a control
//! request that reached a worker is applied and persisted.

use super::{events_for, Control, Engine, Inner, SignalOutcome, HANDOVER_TRIES};
use crate::definition::ErasedDefinition;
use crate::events::EventKind;
use crate::machine::{Decision, Input, Refusal};
use crate::retention::{self, PurgeReport, Retention};
use crate::store::{SagaRecord, StoreError};
use crate::{Error, SagaId};
use tokio::sync::oneshot;

impl Engine {
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

    /// Retries a `Stuck` saga (an operator action): its failed
    /// compensation gets a fresh round of attempts, or its stuck forward
    /// step runs again. A thin wrapper of [`Engine::operate`] with
    /// [`Operation::Retry`](crate::Operation::Retry) under a fresh
    /// operation id, recorded as by operator `engine` (prefer `operate`,
    /// which records who and why and is idempotent by your id). A saga
    /// that is not stuck is [`Error::InvalidState`], as before.
    pub async fn retry(&self, id: &SagaId) -> Result<(), Error> {
        let req = crate::OperationRequest {
            operation_id: format!("retry-{:016x}", self.inner.random_u64()),
            operator: "engine".into(),
            reason: "Engine::retry".into(),
            dry_run: false,
        };
        match self.operate(id, crate::Operation::Retry, &req).await {
            Ok(_) => Ok(()),
            Err(Error::Refused {
                refusal: Refusal::NotStuck(status) | Refusal::Finished(status),
                ..
            }) => Err(Error::InvalidState {
                id: id.clone(),
                status,
                operation: "retry (only a stuck saga can be retried)",
            }),
            Err(e) => Err(e),
        }
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
}

impl Inner {
    /// Applies and persists a control request that reached the worker,
    /// answering its sender. `Ok(Some(d))`: applied, `d` is what to do
    /// next; `Ok(None)`: refused (nothing changed); `Err`: the store failed.
    pub(super) async fn control(
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
            Control::Op { op, req, ack } => self.control_op(def, rec, op, req, ack).await,
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
}
