//! The runtime of a parallel group ([`Decision::RunGroup`]): every member
//! whose attempt the state counts runs in its own tokio task, at once; each
//! result is applied to the machine and persisted as it arrives (one
//! durable write per transition, as for a single step), and a member due
//! for a retry is woken by its timer. When the machine marks the group as
//! failing (`cancel_requested`: a rejected sibling, a cancel, a deadline),
//! the members still running are told so through
//! [`StepContext::is_cancelled`] / [`StepContext::cancelled`]; they stop
//! or finish as they choose, and their results still count.
//!
//! Members start from the data as it stands when they are launched; the
//! top-level fields a member changes are merged into the saga's data when
//! it succeeds. **A top-level field may be changed by one member of a
//! group only**: which of two writers would win depends on which finishes
//! first, which differs from run to run and across a crash, so it is
//! refused at run time instead. The fields each succeeded member changed
//! are kept in its step's record ([`StepProgress::wrote`], persisted with
//! its success); a member whose result changes one of a sibling's fields
//! counts as succeeded (its effect happened, so it is compensated) but its
//! data is not merged, and the saga is cancelled with a reason naming
//! both members and the field (`group g: members a and b both changed the
//! data field x ...`): every member that succeeded or is in doubt, and
//! the steps before the group, are compensated.
//!
//! [`StepProgress::wrote`]: crate::machine::StepProgress::wrote

use super::{events_for, outcome_event, Control, Inner};
use crate::definition::{ErasedDefinition, StepContext, StepError};
use crate::events::EventKind;
use crate::machine::{Decision, FailureKind, Input, StepState};
use crate::store::SagaRecord;
use crate::Error;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

tokio::task_local! {
    /// The group's stop flag, visible to the member running in this task.
    static GROUP_CANCEL: watch::Receiver<bool>;
}

impl StepContext {
    /// True when the step runs as a member of a parallel group that is
    /// failing (a sibling was rejected, the saga was cancelled or its
    /// deadline passed): the member may stop early (its result is still
    /// recorded; stopping with an error leaves it in doubt, so it is
    /// compensated). Always false outside a group.
    pub fn is_cancelled(&self) -> bool {
        GROUP_CANCEL.try_with(|r| *r.borrow()).unwrap_or(false)
    }

    /// Completes when [`StepContext::is_cancelled`] becomes true; never,
    /// outside a group. Race it against the member's own work with
    /// `tokio::select!`.
    pub async fn cancelled(&self) {
        match GROUP_CANCEL.try_with(|r| r.clone()) {
            Ok(mut r) => {
                if r.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

/// How one member's attempt ended.
struct Finished {
    step: usize,
    attempt: u32,
    /// The data the member started from, and what it left.
    base: serde_json::Value,
    result: Result<Result<serde_json::Value, StepError>, ()>,
    took: Duration,
}

/// Merges what a member changed (relative to `base`) into `data`.
fn merge(data: &mut serde_json::Value, base: &serde_json::Value, out: serde_json::Value) {
    match (data.as_object_mut(), base.as_object(), out) {
        (Some(d), Some(b), serde_json::Value::Object(o)) => {
            for k in b.keys() {
                if !o.contains_key(k) {
                    d.remove(k);
                }
            }
            for (k, v) in o {
                if b.get(&k) != Some(&v) {
                    d.insert(k, v);
                }
            }
        }
        (_, _, out) => {
            if &out != base {
                *data = out;
            }
        }
    }
}

/// The top-level fields `out` changes relative to `base` (added, changed
/// or removed); `[""]` when either is not an object and they differ.
fn changed_fields(base: &serde_json::Value, out: &serde_json::Value) -> Vec<String> {
    match (base.as_object(), out.as_object()) {
        (Some(b), Some(o)) => {
            let mut f: Vec<String> = o
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .chain(b.keys().filter(|k| !o.contains_key(*k)).cloned())
                .collect();
            f.sort();
            f
        }
        _ if base != out => vec![String::new()],
        _ => Vec::new(),
    }
}

/// The reason to refuse member `step` whose result changes `fields`, if a
/// succeeded sibling of its group changed one of them.
fn conflict(rec: &SagaRecord, step: usize, fields: &[String]) -> Option<String> {
    let me = &rec.state.steps[step];
    let group = me.group.as_ref()?;
    rec.state.steps.iter().find_map(|s| {
        let shared = s
            .wrote
            .iter()
            .find(|f| fields.contains(f) || f.is_empty() || fields.iter().any(|x| x.is_empty()))?;
        (s.group.as_ref() == Some(group) && s.name != me.name).then(|| {
            let field = if shared.is_empty() {
                "(the whole data)".to_string()
            } else {
                shared.clone()
            };
            format!(
                "group {group}: members {} and {} both changed the data field {field}; \
                 a field may be changed by one member of a group only",
                s.name, me.name
            )
        })
    })
}

/// What the group loop tells the worker.
pub(super) enum GroupExit {
    /// The saga left the group: act on this decision.
    Next(Decision),
    /// Shutdown: the saga resumes at the next open.
    Shutdown,
}

impl Inner {
    /// Runs the group until the saga's decision is no longer
    /// [`Decision::RunGroup`].
    pub(super) async fn drive_group(
        self: &Arc<Self>,
        def: &Arc<dyn ErasedDefinition>,
        rec: &mut SagaRecord,
        control: &mut mpsc::UnboundedReceiver<Control>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<GroupExit, Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut set: JoinSet<Finished> = JoinSet::new();
        let mut inflight: HashSet<usize> = HashSet::new();
        // Members the planted defect `group-member-not-persisted` forgets.
        let mut forgotten: Vec<usize> = Vec::new();
        loop {
            let d = rec.state.decision();
            let Decision::RunGroup { first, end } = d else {
                return Ok(GroupExit::Next(d));
            };
            if rec.state.cancel_requested {
                stop_tx.send_replace(true);
            }
            let stopping = *shutdown.borrow();
            let mut due: Option<(u64, usize)> = None;
            for i in first..end {
                let s = &rec.state.steps[i];
                if inflight.contains(&i) {
                    continue;
                }
                match s.state {
                    StepState::Running if !stopping => {
                        inflight.insert(i);
                        self.launch(def, rec, i, s.attempts, &stop_rx, &mut set);
                    }
                    StepState::RetryWait if rec.state.paused.is_none() => {
                        let w = s.wake_at_ms.unwrap_or(0);
                        if due.is_none_or(|(dw, _)| w < dw) {
                            due = Some((w, i));
                        }
                    }
                    _ => {}
                }
            }
            if stopping && set.is_empty() {
                tracing::debug!("shutting down mid-group; the saga resumes at the next open");
                return Ok(GroupExit::Shutdown);
            }
            let wait =
                due.map(|(w, _)| Duration::from_millis(w.saturating_sub(self.clock.now_ms())));
            // A member's result refused for a field a sibling changed.
            let mut refused: Option<String> = None;
            let (input, prior) = tokio::select! {
                // Fixed branch order: a run under a virtual clock repeats exactly.
                biased;
                Some(joined) = set.join_next() => {
                    let f = match joined {
                        Ok(f) => f,
                        Err(e) => {
                            // A member that panicked: its step is unknown,
                            // so let the restart path find it.
                            return Err(Error::Store(crate::store::StoreError::Io(format!(
                                "a group member's task failed: {e}"
                            ))));
                        }
                    };
                    inflight.remove(&f.step);
                    let name = rec.state.steps[f.step].name.clone();
                    let timeout = def.policies()[f.step].forward.attempt_timeout;
                    let step = f.step;
                    let input = match f.result {
                        Ok(Ok(out)) => {
                            let fields = changed_fields(&f.base, &out);
                            match conflict(rec, step, &fields) {
                                Some(why) => refused = Some(why),
                                None => {
                                    merge(&mut rec.data, &f.base, out);
                                    rec.state.steps[step].wrote = fields;
                                }
                            }
                            Input::StepSucceeded { step }
                        }
                        Ok(Err(StepError::Rejected(error))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Rejected,
                            error,
                        },
                        Ok(Err(StepError::Retryable(error))) => Input::StepFailed {
                            step,
                            kind: FailureKind::Retryable,
                            error,
                        },
                        Err(()) => Input::StepFailed {
                            step,
                            kind: FailureKind::Timeout,
                            error: format!("attempt timed out after {timeout:?}"),
                        },
                    };
                    (input, Some((name, f.attempt, f.took)))
                }
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() && !stopping => {
                    let step = due.map_or(first, |(_, i)| i);
                    (Input::TimerFired { step }, None)
                }
                Some(c) = control.recv() => {
                    // A cancel is recorded here; the members hear of it at
                    // the top of the loop.
                    if forgotten.is_empty() {
                        self.control(&**def, rec, c).await?;
                    } else {
                        // (Only under the planted defect below.)
                        let mut written = forget(rec, &forgotten);
                        let r = self.control(&**def, &mut written, c).await;
                        *rec = remember(written, rec, &forgotten);
                        r?;
                    }
                    continue;
                }
                _ = shutdown.changed() => continue,
            };
            let now = self.clock.now_ms();
            let mut model = Vec::new();
            if let Some(reason) = refused.take().filter(|_| !rec.state.cancel_requested) {
                // Two members wrote one field: the group fails (as on a
                // cancel arriving while this member ran), then its result
                // is applied, in the same write.
                tracing::warn!(saga_id = %rec.id, %reason, "group members conflict");
                let cancel = Input::Cancel {
                    reason: reason.clone(),
                };
                let (_, more) = self.step(&**def, rec, cancel, now)?;
                model.push(EventKind::CancelRequested { reason });
                model.extend(more);
            }
            let (next, more) = self.step(&**def, rec, input.clone(), now)?;
            let outcome = prior
                .and_then(|(name, attempt, took)| outcome_event(&input, name, attempt, took, next));
            model.extend(outcome);
            model.extend(more);
            let events = events_for(rec, model, next, now);
            if crate::sabotage::active(crate::sabotage::GROUP_MEMBER_NOT_PERSISTED) {
                // Planted defect: a member's success is acted on but, for as
                // long as the group runs, written as if it had never started.
                if let (Input::StepSucceeded { step }, Decision::RunGroup { .. }) = (&input, next) {
                    forgotten.push(*step);
                }
                let mut written = forget(rec, &forgotten);
                let r = self.commit(&mut written, events).await;
                *rec = remember(written, rec, &forgotten);
                r?;
                continue;
            }
            self.commit(rec, events).await?;
        }
    }

    /// Starts one member's attempt in its own task.
    fn launch(
        &self,
        def: &Arc<dyn ErasedDefinition>,
        rec: &SagaRecord,
        step: usize,
        attempt: u32,
        stop: &watch::Receiver<bool>,
        set: &mut JoinSet<Finished>,
    ) {
        let name = rec.state.steps[step].name.clone();
        let ctx = StepContext {
            saga_id: rec.id.clone(),
            idempotency_key: format!("{}:{}", rec.id, name),
            fencing_token: rec.lease.as_ref().map_or(0, |l| l.generation),
            step: name.clone(),
            attempt,
        };
        let timeout = def.policies()[step].forward.attempt_timeout;
        let base = rec.data.clone();
        let def = def.clone();
        let span = tracing::info_span!("step", step = %name, attempt, group = true);
        let work = async move {
            let started = tokio::time::Instant::now();
            let mut data = base.clone();
            let call = def.run(step, &ctx, &mut data);
            let r = match timeout {
                Some(t) => tokio::time::timeout(t, call).await.map_err(|_| ()),
                None => Ok(call.await),
            };
            Finished {
                step,
                attempt,
                base,
                result: r.map(|r| r.map(|()| data)),
                took: started.elapsed(),
            }
        };
        set.spawn(GROUP_CANCEL.scope(stop.clone(), work).instrument(span));
    }
}

/// The record as the planted defect `group-member-not-persisted` writes it:
/// the `forgotten` members as never started.
fn forget(rec: &SagaRecord, forgotten: &[usize]) -> SagaRecord {
    let mut written = rec.clone();
    for &i in forgotten {
        written.state.steps[i].state = StepState::Pending;
        written.state.steps[i].attempts = 0;
    }
    written
}

/// `written` after its write, with the `forgotten` members as they really
/// are in `rec`.
fn remember(mut written: SagaRecord, rec: &SagaRecord, forgotten: &[usize]) -> SagaRecord {
    for &i in forgotten {
        written.state.steps[i] = rec.state.steps[i].clone();
    }
    written
}
