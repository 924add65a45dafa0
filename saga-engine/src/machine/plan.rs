//! A dry run: what a saga would do from its state on, if every step and
//! every compensation from now on succeeded and every awaited signal came.
//! Operator operations are previewed by applying them to a copy of the
//! state and planning from the result; nothing is run, nothing is written.
//!
//! The plan follows the machine itself (the same transitions, on a copy),
//! so it cannot disagree with what the runtime would do on the happy path;
//! what a failure would change is, by nature, not in it.

use super::*;
use serde::Serialize;

/// What a step would do, in a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedAction {
    /// An attempt already under way finishes.
    Finish,
    /// The step runs (or is retried after its backoff).
    Run,
    /// The step's effect is undone.
    Compensate,
    /// The step waits (a signal that is assumed to come, or a sleep).
    Wait,
}

/// One entry of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// Step index.
    pub index: usize,
    /// Step name.
    pub step: String,
    /// What it would do.
    pub action: PlannedAction,
}

/// The steps a saga would run or compensate, in order, and where it would end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In order.
    pub steps: Vec<PlannedStep>,
    /// How it would end, if it would (on the happy path).
    pub ends_as: Option<SagaStatus>,
    /// The saga would be (or stay) paused after the first `held_after`
    /// entries; the rest is what it does once resumed.
    pub held_after: Option<usize>,
}

impl SagaState {
    /// Plans the saga's future from this state (see the module docs);
    /// `now_ms` is the time the plan starts at.
    pub fn plan(&self, p: &[StepPolicy], now_ms: u64) -> Plan {
        self.plan_after(self, p, now_ms)
    }

    /// Like [`SagaState::plan`], for the state a transition from `before`
    /// led to: only the attempts under way in `before` (and still the same
    /// attempt) count as finishing; those the transition started, run.
    pub fn plan_after(&self, before: &SagaState, p: &[StepPolicy], now_ms: u64) -> Plan {
        let mut s = self.clone();
        let mut out = Plan {
            steps: Vec::new(),
            ends_as: None,
            held_after: None,
        };
        let mut now = now_ms;
        let ctx = |t: u64| Ctx {
            now_ms: t,
            jitter: 0.0,
        };
        let mut d = s.decision();
        // Attempts under way now: their first entry says they finish.
        let mut inflight: Vec<usize> = (0..s.steps.len())
            .filter(|&i| {
                let (b, a) = (&before.steps[i], &s.steps[i]);
                matches!(a.state, StepState::Running | StepState::Compensating)
                    && b.state == a.state
                    && b.attempts == a.attempts
                    && b.compensation_attempts == a.compensation_attempts
            })
            .collect();
        let mut under_way = |i: usize| match inflight.iter().position(|&x| x == i) {
            Some(k) => {
                inflight.remove(k);
                true
            }
            None => false,
        };
        for _ in 0..(s.steps.len() * 6 + 16) {
            let mut push = |s: &SagaState, index: usize, action: PlannedAction| {
                out.steps.push(PlannedStep {
                    index,
                    step: s.steps[index].name.clone(),
                    action,
                })
            };
            let next = match d {
                Decision::Finished(status) => {
                    out.ends_as = Some(status);
                    return out;
                }
                Decision::Paused => {
                    if out.held_after.is_none() {
                        out.held_after = Some(out.steps.len());
                    }
                    s.apply(p, Input::Unpause, ctx(now))
                }
                Decision::Run { step, .. } => {
                    let a = if under_way(step) {
                        PlannedAction::Finish
                    } else {
                        PlannedAction::Run
                    };
                    push(&s, step, a);
                    s.apply(p, Input::StepSucceeded { step }, ctx(now))
                }
                Decision::Compensate { step, .. } => {
                    let a = if under_way(step) {
                        PlannedAction::Finish
                    } else {
                        PlannedAction::Compensate
                    };
                    push(&s, step, a);
                    s.apply(p, Input::CompensationSucceeded { step }, ctx(now))
                }
                Decision::AwaitRunning => {
                    // After a cancel under way: the running step returns.
                    match s.steps.iter().position(|x| x.state == StepState::Running) {
                        Some(step) => {
                            push(&s, step, PlannedAction::Finish);
                            s.apply(p, Input::StepSucceeded { step }, ctx(now))
                        }
                        None => s.apply(p, Input::Resume, ctx(now)),
                    }
                }
                Decision::RunGroup { first: f, end } => {
                    let running: Vec<usize> = (f..end)
                        .filter(|&i| s.steps[i].state == StepState::Running)
                        .collect();
                    if let Some(&step) = running.first() {
                        let a = if under_way(step) {
                            PlannedAction::Finish
                        } else {
                            PlannedAction::Run
                        };
                        push(&s, step, a);
                        s.apply(p, Input::StepSucceeded { step }, ctx(now))
                    } else {
                        let due = (f..end)
                            .filter(|&i| s.steps[i].state == StepState::RetryWait)
                            .map(|i| (s.steps[i].wake_at_ms.unwrap_or(0), i))
                            .min();
                        match due {
                            Some((w, step)) => {
                                now = now.max(w);
                                s.apply(p, Input::TimerFired { step }, ctx(now))
                            }
                            None => return out,
                        }
                    }
                }
                Decision::Sleep { step, until_ms } => {
                    now = now.max(until_ms);
                    s.apply(p, Input::TimerFired { step }, ctx(now))
                }
                Decision::Wait { step, until_ms } => {
                    push(&s, step, PlannedAction::Wait);
                    match &p[step].kind {
                        StepKind::Signal { name, .. } => s.apply(
                            p,
                            Input::Signal {
                                id: format!("plan-{step}-{}", s.signals.len()),
                                name: name.clone(),
                                payload: serde_json::Value::Null,
                            },
                            ctx(now),
                        ),
                        _ => {
                            now = now.max(until_ms);
                            s.apply(p, Input::TimerFired { step }, ctx(now))
                        }
                    }
                }
            };
            match next {
                Ok(n) => d = n,
                Err(_) => return out,
            }
        }
        out
    }
}
