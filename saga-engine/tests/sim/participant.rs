//! The simulated participants: one `Step` per step index, sharing the
//! world's ledger.
//!
//! A forward call is a request to a remote service that applies its effect
//! at most once per idempotency key and keeps a tombstone for every key it
//! compensated, so a request that arrives after its compensation is refused.
//! The faults are drawn per call from the run's generator; the checks the
//! participants can make on the spot (ordering, keys, saga data) are made
//! here and recorded as violations.

use super::world::{
    Applied, CancelWhen, CompFault, Effect, Fault, Ledger, World, ATTEMPT_TIMEOUT, BASE_MS,
};
use saga_engine::{SagaId, Step, StepContext, StepError, StepState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The saga data: which request it serves, and the steps that took effect
/// so far (each step appends its name, so a step can check that what the
/// previous ones wrote was persisted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimData {
    pub no: usize,
    pub trail: Vec<String>,
    /// Group members' marks (a member changes its own field: members'
    /// changes are merged field by field).
    #[serde(default)]
    pub g1: bool,
    #[serde(default)]
    pub g2: bool,
    /// Signal payloads the wait delivered (one, or none).
    #[serde(default)]
    pub signal: Vec<String>,
}

pub fn step_name(i: usize) -> String {
    format!("s{i}")
}

/// The participant behind step `index` of every simulated saga.
pub struct SimStep {
    pub world: Arc<World>,
    pub index: usize,
}

fn reply(a: Applied) -> Result<(), StepError> {
    match a {
        Applied::Now | Applied::Already => Ok(()),
        Applied::Refused => Err(StepError::rejected("refused: already compensated")),
        Applied::Rejected => Err(StepError::rejected("no")),
    }
}

/// Remembers which saga serves request `no`; a second one is a violation
/// (one request, one saga: idempotent start).
fn note_saga(l: &mut Ledger, no: usize, id: &SagaId) -> Option<String> {
    match l.saga_of.get(&no) {
        Some(known) if known != id => Some(format!(
            "req-{no}: participants see two sagas, {known} and {id}"
        )),
        Some(_) => None,
        None => {
            l.saga_of.insert(no, id.clone());
            None
        }
    }
}

impl SimStep {
    /// The checks a participant can make when a forward call arrives.
    fn on_run_call(&self, ctx: &StepContext, data: &SimData) {
        let w = &self.world;
        let (no, i) = (data.no, self.index);
        let key = &ctx.idempotency_key;
        w.log(format!("call run {key} attempt {}", ctx.attempt));
        if w.is_down() {
            w.violation(format!(
                "req-{no}: {key} called by an engine that was stopped"
            ));
        }
        if *key != format!("{}:{}", ctx.saga_id, step_name(i)) || ctx.step != step_name(i) {
            w.violation(format!(
                "req-{no}: step {i} called with key {key:?}, step {:?}",
                ctx.step
            ));
        }
        let plan = &w.plans[no];
        let shape = plan.shape;
        if let Some(p) = shape.check_data(i, plan.steps.len(), data, no) {
            w.violation(format!("req-{no}: {p}"));
        }
        let mut problems = Vec::new();
        {
            let mut l = w.ledger();
            let l = &mut *l;
            problems.extend(note_saga(l, no, &ctx.saga_id));
            if l.comps.get(&no).is_some_and(|c| !c.is_empty()) {
                problems.push(format!(
                    "req-{no}: step {i} called forward after compensation began"
                ));
            }
            let runs = l.runs.entry(no).or_default();
            if runs
                .last()
                .is_some_and(|&last| shape.position(last) > shape.position(i))
            {
                problems.push(format!(
                    "req-{no}: step {i} called after step {}",
                    runs.last().unwrap()
                ));
            }
            runs.push(i);
            for k in shape.before(i) {
                let prev = format!("{}:{}", ctx.saga_id, step_name(k));
                if l.effects.get(&prev) != Some(&Effect::Applied) {
                    problems.push(format!(
                        "req-{no}: step {i} called before step {k} took effect ({:?})",
                        l.effects.get(&prev)
                    ));
                }
            }
        }
        for p in problems {
            w.violation(p);
        }
    }

    /// The checks a participant can make when a compensation arrives.
    fn on_comp_call(&self, ctx: &StepContext, data: &SimData) {
        let w = &self.world;
        let (no, i) = (data.no, self.index);
        let key = &ctx.idempotency_key;
        w.log(format!("call comp {key} attempt {}", ctx.attempt));
        if w.is_down() {
            w.violation(format!(
                "req-{no}: {key} compensated by an engine that was stopped"
            ));
        }
        let mut problems = Vec::new();
        if *key != format!("{}:{}", ctx.saga_id, step_name(i)) {
            problems.push(format!(
                "req-{no}: compensation of step {i} has key {key:?}"
            ));
        }
        let plan = &w.plans[no];
        let order = plan.shape.trail_order(plan.steps.len());
        let before = order
            .iter()
            .filter(|s| {
                s.trim_start_matches('s')
                    .parse::<usize>()
                    .is_ok_and(|k| k < i)
            })
            .count();
        if !order.starts_with(&data.trail) || data.trail.len() < before {
            problems.push(format!(
                "req-{no}: compensation of step {i} saw saga data {:?}",
                data.trail
            ));
        }
        {
            let mut l = w.ledger();
            let comps = l.comps.entry(no).or_default();
            if comps.last().is_some_and(|&last| last < i) {
                problems.push(format!(
                    "req-{no}: step {i} compensated after step {} (not newest first)",
                    comps.last().unwrap()
                ));
            }
            comps.push(i);
            problems.extend(note_saga(&mut l, no, &ctx.saga_id));
        }
        for p in problems {
            w.violation(p);
        }
    }
}

/// A customer cancels saga `id` from a task of its own. With `backoff`
/// (a step index), only if that step is found waiting to retry with its
/// timer at least 5 ms away: a cancel landing in the same tick as the
/// timer would leave the order to the engine's unbiased `select!`, and a
/// flush (at most 3 ms) separates the record from the worker's wait.
fn send_cancel(
    w: &Arc<World>,
    no: usize,
    id: SagaId,
    backoff: Option<usize>,
) -> tokio::task::JoinHandle<()> {
    let Some(engine) = w.engine() else {
        return tokio::spawn(async {});
    };
    let w2 = w.clone();
    w.spawn_client(async move {
        if let Some(i) = backoff {
            let Ok(rec) = engine.status(&id).await else {
                return;
            };
            let s = &rec.state.steps[w2.plans[no].shape.state_index(i)];
            let ok = s.state == StepState::RetryWait
                && s.wake_at_ms.is_some_and(|t| t >= BASE_MS + w2.now_ms() + 5);
            if !ok {
                w2.log(format!("client cancel req-{no} skipped: {:?}", s.state));
                return;
            }
        }
        w2.log(format!("client cancel req-{no}"));
        match engine.cancel(&id, "customer cancelled").await {
            Ok(()) => {
                w2.log(format!("client cancel req-{no} acked"));
                let mut l = w2.ledger();
                l.cancel_acked.insert(no);
                l.stats.cancels_acked += 1;
            }
            Err(e) => w2.violation(format!("req-{no}: cancel failed: {e}")),
        }
    })
}

#[saga_engine::async_trait]
impl Step<SimData> for SimStep {
    async fn run(&self, ctx: &StepContext, data: &mut SimData) -> Result<(), StepError> {
        let w = self.world.clone();
        let (no, i) = (data.no, self.index);
        self.on_run_call(ctx, data);
        let key = ctx.idempotency_key.clone();

        // A customer cancels while this step is under way: the engine must
        // record it, and compensate once the step returns. The cancel comes
        // from a task of its own, as a customer's would; sent from inside
        // this call, it would reach the engine in the same poll as the
        // call's progress, and the engine's unbiased `select!` would order
        // the two from tokio's unseeded generator.
        if w.plans[no].cancel == Some((i, CancelWhen::DuringCall))
            && w.ledger().cancel_sent.insert(no)
        {
            // The step stays under way until the cancel is recorded.
            let _ = send_cancel(&w, no, ctx.saga_id.clone(), None).await;
        }

        let fault = w.draw_fault(w.plans[no].steps[i].reject);
        w.log(format!("fault {key}: {fault:?}"));
        let result = match fault {
            Fault::Ok => reply(w.deliver(no, i, &key, "call")),
            Fault::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply(w.deliver(no, i, &key, "call"))
            }
            Fault::RetryBefore => Err(StepError::retryable("busy")),
            Fault::Reject => {
                w.ledger().stats.rejections += 1;
                reply(w.deliver(no, i, &key, "call"))
            }
            Fault::LostReply => {
                w.ledger().stats.lost_replies += 1;
                let _ = w.deliver(no, i, &key, "call");
                Err(StepError::retryable("reply lost"))
            }
            Fault::Duplicate => {
                w.ledger().stats.duplicates += 1;
                let _ = w.deliver(no, i, &key, "call");
                reply(w.deliver(no, i, &key, "duplicate"))
            }
            Fault::TimeoutBefore(extra) => {
                w.ledger().stats.timeouts += 1;
                let w2 = w.clone();
                w.spawn_remote(async move {
                    tokio::time::sleep(ATTEMPT_TIMEOUT + Duration::from_millis(extra)).await;
                    let _ = w2.deliver(no, i, &key, "after-timeout");
                });
                // The engine abandons this call at its attempt timeout.
                std::future::pending::<()>().await;
                unreachable!("the attempt timeout drops this call")
            }
            Fault::LateAfterCompensation => {
                let r = w.deliver(no, i, &key, "call");
                let w2 = w.clone();
                let extra = w.range(0..=5);
                w.spawn_remote(async move {
                    // Arrive after the key's compensation, or give up
                    // waiting (the saga completed) and arrive anyway.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                    loop {
                        let notified = w2.compensated.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if w2.is_compensated(&key) {
                            break;
                        }
                        tokio::select! {
                            biased;
                            _ = notified => {}
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(extra)).await;
                    let _ = w2.deliver(no, i, &key, "late");
                });
                reply(r)
            }
        };
        if matches!(result, Err(StepError::Retryable(_)))
            && w.plans[no].cancel == Some((i, CancelWhen::DuringBackoff))
            && w.ledger().cancel_sent.insert(no)
        {
            // Lands while the engine waits to retry; not awaited, since
            // the engine records it only once this call has returned.
            drop(send_cancel(&w, no, ctx.saga_id.clone(), Some(i)));
        }
        w.log(format!("reply run {} {result:?}", ctx.idempotency_key));
        if result.is_ok() {
            match (w.plans[no].shape.in_group(i), i) {
                (true, 1) => data.g1 = true,
                (true, _) => data.g2 = true,
                _ => data.trail.push(step_name(i)),
            }
        }
        result
    }

    async fn compensate(&self, ctx: &StepContext, data: &SimData) -> Result<(), StepError> {
        let w = self.world.clone();
        let (no, i) = (data.no, self.index);
        self.on_comp_call(ctx, data);
        let key = ctx.idempotency_key.clone();
        match w.plans[no].steps[i].comp {
            CompFault::None => {}
            CompFault::FailTimes(n) => {
                let fail = {
                    let mut l = w.ledger();
                    let l = &mut *l;
                    let failed = l.comp_failures.entry(key.clone()).or_default();
                    let fail = *failed < n;
                    if fail {
                        *failed += 1;
                        l.stats.comp_failures += 1;
                    }
                    fail
                };
                if fail {
                    w.log(format!("reply comp {key}: fails"));
                    return Err(StepError::retryable("compensation failed"));
                }
            }
            CompFault::TimeoutOnce(extra) => {
                if w.ledger().comp_timed_out.insert(key.clone()) {
                    w.log(format!("reply comp {key}: hangs"));
                    let w2 = w.clone();
                    w.spawn_remote(async move {
                        tokio::time::sleep(ATTEMPT_TIMEOUT + Duration::from_millis(extra)).await;
                        w2.undo(&key, "after-timeout");
                    });
                    std::future::pending::<()>().await;
                    unreachable!("the attempt timeout drops this call")
                }
            }
            CompFault::Forever => {
                let mut l = w.ledger();
                if !l.fixed.contains(&no) {
                    l.broken_comp_called.insert(no);
                    l.stats.comp_failures += 1;
                    drop(l);
                    w.log(format!("reply comp {key}: broken"));
                    return Err(StepError::retryable("compensation broken for good"));
                }
            }
        }
        w.undo(&key, "call");
        Ok(())
    }
}
