//! The worker of one saga: carry out the current decision, feed the outcome
//! to the state machine, persist the new state durably, publish its events,
//! and only then carry out the next decision; plus how a transition's events
//! are named and numbered.

use super::{group, Control, Exit, Inner, Worker};
use crate::definition::{ErasedDefinition, StepContext, StepError};
use crate::events::{EventKind, SagaEvent};
use crate::machine::{Decision, FailureKind, Input, SagaStatus};
use crate::store::{SagaRecord, StoreError};
use crate::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

impl Inner {
    pub(super) fn spawn(
        self: &Arc<Self>,
        def: Arc<dyn ErasedDefinition>,
        rec: SagaRecord,
        first: Option<Input>,
    ) {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = watch::channel(None);
        let id = rec.id.clone();
        self.lock_workers().insert(
            id.clone(),
            Worker {
                generation: rec.lease.as_ref().map_or(0, |l| l.generation),
                control: ctl_tx,
                outcome: out_rx,
                task: None,
            },
        );
        let span = tracing::info_span!("saga", saga_id = %id, definition = %rec.definition);
        let inner = self.clone();
        let key = id.clone();
        let generation = rec.lease.as_ref().map_or(0, |l| l.generation);
        let task = tokio::spawn(
            async move {
                let mut ctl_rx = ctl_rx;
                let result = inner.clone().drive(def, rec, first, &mut ctl_rx, &out_tx).await;
                let _parking = match result {
                    Err(Error::Store(StoreError::Conflict { .. })) if inner.store.is_shared() => {
                        tracing::info!("saga taken over by another process; worker stops");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "saga worker stopped; the saga resumes at the next open");
                        None
                    }
                    Ok(Exit::Done) => None,
                    Ok(Exit::Parked(until)) => {
                        // Hand the saga to the timer index under its lock,
                        // so a signal or a timer cannot find it with
                        // neither a worker nor a timer. Control messages
                        // still queued are dropped: their senders see the
                        // worker gone and retry on the parked saga.
                        let guard = inner.saga_lock(&id).await;
                        ctl_rx.close();
                        while ctl_rx.try_recv().is_ok() {}
                        inner.park(id.clone(), until);
                        Some(guard)
                    }
                };
                // Only our own entry: a newer worker may have replaced it
                // after a takeover.
                let mut workers = inner.lock_workers();
                if workers.get(&id).is_some_and(|w| w.generation == generation) {
                    workers.remove(&id);
                }
                drop(workers);
                drop(out_tx);
            }
            .instrument(span),
        );
        // A worker that already finished removed its entry; then the handle
        // is simply dropped.
        if let Some(w) = self.lock_workers().get_mut(&key) {
            w.task = Some(task);
        }
    }

    /// The worker of one saga: act on the decision, feed the outcome to the
    /// machine, persist, repeat.
    pub(super) async fn drive(
        self: Arc<Self>,
        def: Arc<dyn ErasedDefinition>,
        mut rec: SagaRecord,
        first: Option<Input>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        outcome: &watch::Sender<Option<SagaStatus>>,
    ) -> Result<Exit, Error> {
        let policies = def.policies();
        let mut shutdown = self.shutdown.subscribe();
        let mut decision = match first {
            Some(input) => {
                let now = self.clock.now_ms();
                let (d, model) = self.step(&*def, &mut rec, input, now)?;
                let events = events_for(
                    &mut rec,
                    std::iter::once(EventKind::Resumed).chain(model),
                    d,
                    now,
                );
                self.commit(&mut rec, events).await?;
                d
            }
            None => rec.state.decision(),
        };
        loop {
            if *shutdown.borrow() && !matches!(decision, Decision::Finished(_)) {
                tracing::debug!("shutting down; the saga resumes at the next open");
                return Ok(Exit::Done);
            }
            let (input, prior) = match decision {
                Decision::Finished(status) => {
                    let _ = outcome.send(Some(status));
                    return Ok(Exit::Done);
                }
                Decision::Wait { until_ms, .. } if !self.store.is_shared() => {
                    // A durable wait: no worker holds the saga meanwhile.
                    return Ok(Exit::Parked(until_ms));
                }
                Decision::Paused if !self.store.is_shared() => {
                    // Paused: no worker and no timer until an operator
                    // resumes it.
                    return Ok(Exit::Parked(u64::MAX));
                }
                Decision::Paused => {
                    // A shared store never hands a paused saga out; its
                    // lease runs out, and a resume makes it claimable.
                    return Ok(Exit::Done);
                }
                Decision::AwaitRunning => {
                    // Only produced for a cancel while a step runs, which the
                    // Run arm handles; reaching it here means nothing is
                    // running: compensate.
                    (
                        Input::Cancel {
                            reason: "nothing running after a cancel".into(),
                        },
                        None,
                    )
                }
                Decision::RunGroup { .. } => {
                    match self
                        .drive_group(&def, &mut rec, control, &mut shutdown)
                        .await?
                    {
                        group::GroupExit::Next(d) => {
                            decision = d;
                            continue;
                        }
                        group::GroupExit::Shutdown => return Ok(Exit::Done),
                    }
                }
                Decision::Run { step, attempt } | Decision::Compensate { step, attempt } => {
                    let compensating = matches!(decision, Decision::Compensate { .. });
                    let name = rec.state.steps[step].name.clone();
                    let ctx = StepContext {
                        saga_id: rec.id.clone(),
                        idempotency_key: format!("{}:{}", rec.id, name),
                        fencing_token: rec.lease.as_ref().map_or(0, |l| l.generation),
                        step: name.clone(),
                        attempt,
                    };
                    let policy = if compensating {
                        &policies[step].compensation
                    } else {
                        &policies[step].forward
                    };
                    let timeout = policy.attempt_timeout;
                    let mut data = rec.data.clone();
                    // tokio's clock: virtual under paused time, so histories repeat.
                    let started = tokio::time::Instant::now();
                    let span = tracing::info_span!("step", step = %name, attempt, compensating);
                    let result = {
                        let call = {
                            let def = def.clone();
                            let ctx = ctx.clone();
                            let data = &mut data;
                            async move {
                                let work = async {
                                    if compensating {
                                        def.compensate(step, &ctx, data).await
                                    } else {
                                        def.run(step, &ctx, data).await
                                    }
                                };
                                match timeout {
                                    Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ()),
                                    None => Ok(work.await),
                                }
                            }
                            .instrument(span)
                        };
                        tokio::pin!(call);
                        loop {
                            tokio::select! {
                                // Fixed branch order: a run under a virtual clock repeats exactly.
                                biased;
                                r = &mut call => break r,
                                Some(c) = control.recv() => {
                                    // The running step goes on; what the
                                    // control changed takes effect when it
                                    // returns.
                                    let recording = self.control(&*def, &mut rec, c);
                                    if crate::sabotage::active(crate::sabotage::CONTROL_FREEZES_STEP) {
                                        recording.await?;
                                        continue;
                                    }
                                    if let Some(r) = record_polling(&mut call, recording).await? {
                                        break r;
                                    }
                                }
                            }
                        }
                    };
                    let took = started.elapsed();
                    let input = match (compensating, result) {
                        (false, Ok(Ok(()))) => {
                            rec.data = data;
                            Input::StepSucceeded { step }
                        }
                        (false, Ok(Err(StepError::Rejected(error)))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Rejected,
                            error,
                        },
                        (false, Ok(Err(StepError::Retryable(error)))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Retryable,
                            error,
                        },
                        (false, Err(())) => Input::StepFailed {
                            step,
                            kind: FailureKind::Timeout,
                            error: format!("attempt timed out after {timeout:?}"),
                        },
                        (true, Ok(Ok(()))) => Input::CompensationSucceeded { step },
                        (true, Ok(Err(e))) => Input::CompensationFailed {
                            step,
                            error: e.to_string(),
                        },
                        (true, Err(())) => Input::CompensationFailed {
                            step,
                            error: format!("compensation timed out after {timeout:?}"),
                        },
                    };
                    (input, Some((name, attempt, took)))
                }
                Decision::Sleep { step, until_ms } | Decision::Wait { step, until_ms } => {
                    let wait = Duration::from_millis(until_ms.saturating_sub(self.clock.now_ms()));
                    tokio::select! {
                        // Fixed branch order: a run under a virtual clock repeats exactly.
                        biased;
                        _ = tokio::time::sleep(wait) => (Input::TimerFired { step }, None),
                        Some(c) = control.recv() => {
                            match self.control(&*def, &mut rec, c).await {
                                Ok(Some(d)) => {
                                    decision = d;
                                    continue;
                                }
                                Ok(None) => continue,
                                Err(e) => {
                                    tracing::error!(error = %e, "could not record a control request; worker stops");
                                    return Ok(Exit::Done);
                                }
                            }
                        }
                        _ = shutdown.changed() => continue,
                    }
                }
            };
            let now = self.clock.now_ms();
            let (next, model) = self.step(&*def, &mut rec, input.clone(), now)?;
            let outcome_event = prior
                .and_then(|(name, attempt, took)| outcome_event(&input, name, attempt, took, next));
            let events = events_for(&mut rec, outcome_event.into_iter().chain(model), next, now);
            self.commit(&mut rec, events).await?;
            decision = next;
        }
    }
}

/// Drives `recording` (a control being written) to its end while still
/// polling the running `step`, and returns the step's result if it came
/// meanwhile. The step may hold what that write waits for (the group
/// commit's leadership, when the step waits for `durable()`): left
/// unpolled, it hung every write of the process
/// (`tests/trust.rs`, sabotage `control-freezes-step`).
async fn record_polling<S, T>(
    step: &mut S,
    recording: impl Future<Output = Result<T, Error>>,
) -> Result<Option<S::Output>, Error>
where
    S: Future + Unpin,
{
    tokio::pin!(recording);
    let mut returned = None;
    loop {
        tokio::select! {
            biased;
            r = &mut *step, if returned.is_none() => returned = Some(r),
            recorded = &mut recording => {
                recorded?;
                return Ok(returned);
            }
        }
    }
}

/// The event describing how an attempt ended.
pub(super) fn outcome_event(
    input: &Input,
    step: String,
    attempt: u32,
    took: Duration,
    next: Decision,
) -> Option<EventKind> {
    let retry_at_ms = match next {
        Decision::Sleep { until_ms, .. } => Some(until_ms),
        _ => None,
    };
    Some(match input {
        Input::StepSucceeded { .. } => EventKind::StepSucceeded {
            step,
            attempt,
            duration_us: took.as_micros() as u64,
        },
        Input::StepFailed { kind, error, .. } => EventKind::StepFailed {
            step,
            attempt,
            error: error.clone(),
            kind: match kind {
                FailureKind::Retryable => "retryable",
                FailureKind::Timeout => "timeout",
                FailureKind::Rejected => "rejected",
            }
            .into(),
            retry_at_ms,
        },
        Input::CompensationSucceeded { .. } => EventKind::StepCompensated { step, attempt },
        Input::CompensationFailed { error, .. } => EventKind::CompensationFailed {
            step,
            attempt,
            error: error.clone(),
            retry_at_ms,
        },
        _ => return None,
    })
}

/// The events of one transition: what happened (if anything), then what the
/// decision starts. Assigns sequence numbers and bumps the record's clock.
pub(super) fn events_for(
    rec: &mut SagaRecord,
    happened: impl IntoIterator<Item = EventKind>,
    decision: Decision,
    now: u64,
) -> Vec<SagaEvent> {
    let name = |i: usize| rec.state.steps[i].name.clone();
    let started = match decision {
        Decision::Run { step, attempt } => Some(EventKind::StepStarted {
            step: name(step),
            attempt,
        }),
        Decision::Compensate { step, attempt } => Some(EventKind::CompensationStarted {
            step: name(step),
            attempt,
        }),
        Decision::Finished(status) => Some(EventKind::SagaFinished {
            status,
            reason: rec.state.failure.clone(),
        }),
        // A wait's start and a group's member starts are among the
        // machine's events (see `waits`).
        Decision::Wait { .. }
        | Decision::Sleep { .. }
        | Decision::AwaitRunning
        | Decision::Paused
        | Decision::RunGroup { .. } => None,
    };
    stamp(rec, happened.into_iter().chain(started), now)
}

/// Stamps `happened` as the saga's next events (sequence numbers, time)
/// and bumps the record's clock.
pub(super) fn stamp(
    rec: &mut SagaRecord,
    happened: impl IntoIterator<Item = EventKind>,
    now: u64,
) -> Vec<SagaEvent> {
    rec.updated_at_ms = now;
    let mut out = Vec::with_capacity(2);
    for kind in happened {
        out.push(SagaEvent {
            saga_id: rec.id.clone(),
            seq: rec.next_seq,
            at_ms: now,
            kind,
        });
        rec.next_seq += 1;
    }
    out
}
