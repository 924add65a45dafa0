//! Unit and property tests of the pure state machine.

use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn policies(n: usize, forward: u32, comp: u32) -> Vec<StepPolicy> {
    (0..n)
        .map(|_| {
            StepPolicy::action(
                RetryPolicy::default()
                    .max_attempts(forward)
                    .backoff(Duration::from_millis(10), Duration::from_millis(100)),
                RetryPolicy::default()
                    .max_attempts(comp)
                    .backoff(Duration::from_millis(10), Duration::from_millis(100)),
            )
        })
        .collect()
}

fn ctx(now_ms: u64) -> Ctx {
    Ctx {
        now_ms,
        jitter: 0.5,
    }
}

fn state(n: usize) -> SagaState {
    SagaState::new((0..n).map(|i| format!("s{i}")))
}

#[test]
fn happy_path_runs_every_step_in_order_and_completes() {
    let p = policies(3, 3, 3);
    let mut s = state(3);
    assert_eq!(
        s.apply(&p, Input::Start, ctx(0)).unwrap(),
        Decision::Run {
            step: 0,
            attempt: 1
        }
    );
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(1))
            .unwrap(),
        Decision::Run {
            step: 1,
            attempt: 1
        }
    );
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(2))
            .unwrap(),
        Decision::Run {
            step: 2,
            attempt: 1
        }
    );
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 2 }, ctx(3))
            .unwrap(),
        Decision::Finished(SagaStatus::Completed)
    );
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 2 }, ctx(3)),
        Err(MachineError::Finished(SagaStatus::Completed))
    );
}

#[test]
fn rejection_compensates_completed_steps_newest_first() {
    let p = policies(3, 3, 3);
    let mut s = state(3);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(0))
        .unwrap();
    let d = s
        .apply(
            &p,
            Input::StepFailed {
                step: 2,
                kind: FailureKind::Rejected,
                error: "card declined".into(),
            },
            ctx(0),
        )
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 1,
            attempt: 1
        }
    );
    assert_eq!(s.status, SagaStatus::Compensating);
    assert!(s.failure.as_deref().unwrap().contains("card declined"));
    let d = s
        .apply(&p, Input::CompensationSucceeded { step: 1 }, ctx(0))
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    let d = s
        .apply(&p, Input::CompensationSucceeded { step: 0 }, ctx(0))
        .unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Compensated));
    assert_eq!(s.steps[2].state, StepState::Rejected);
}

#[test]
fn retryable_failure_waits_with_backoff_then_retries() {
    let p = policies(1, 3, 1);
    let mut s = state(1);
    s.apply(&p, Input::Start, ctx(1000)).unwrap();
    let fail = || Input::StepFailed {
        step: 0,
        kind: FailureKind::Retryable,
        error: "busy".into(),
    };
    let d = s.apply(&p, fail(), ctx(1000)).unwrap();
    assert_eq!(
        d,
        Decision::Sleep {
            step: 0,
            until_ms: 1010
        }
    );
    assert_eq!(s.decision(), d, "the wait is persisted in the state");
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 0 }, ctx(1010))
            .unwrap(),
        Decision::Run {
            step: 0,
            attempt: 2
        }
    );
    let d = s.apply(&p, fail(), ctx(1010)).unwrap();
    assert_eq!(
        d,
        Decision::Sleep {
            step: 0,
            until_ms: 1030
        }
    );
    s.apply(&p, Input::TimerFired { step: 0 }, ctx(1030))
        .unwrap();
    // Third failure exhausts the policy: in doubt, so it is compensated.
    let d = s.apply(&p, fail(), ctx(1030)).unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    assert!(s.steps[0].in_doubt);
}

#[test]
fn rejection_after_an_in_doubt_attempt_is_still_compensated() {
    let p = policies(1, 3, 1);
    let mut s = state(1);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(
        &p,
        Input::StepFailed {
            step: 0,
            kind: FailureKind::Timeout,
            error: "timeout".into(),
        },
        ctx(0),
    )
    .unwrap();
    s.apply(&p, Input::TimerFired { step: 0 }, ctx(100))
        .unwrap();
    let d = s
        .apply(
            &p,
            Input::StepFailed {
                step: 0,
                kind: FailureKind::Rejected,
                error: "no".into(),
            },
            ctx(100),
        )
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
}

#[test]
fn compensation_failing_past_policy_parks_as_stuck_and_operator_retry_resumes() {
    let p = policies(2, 1, 2);
    let mut s = state(2);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    s.apply(
        &p,
        Input::StepFailed {
            step: 1,
            kind: FailureKind::Rejected,
            error: "no".into(),
        },
        ctx(0),
    )
    .unwrap();
    let cf = || Input::CompensationFailed {
        step: 0,
        error: "down".into(),
    };
    assert!(matches!(
        s.apply(&p, cf(), ctx(0)).unwrap(),
        Decision::Sleep { step: 0, .. }
    ));
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 0 }, ctx(50)).unwrap(),
        Decision::Compensate {
            step: 0,
            attempt: 2
        }
    );
    assert_eq!(
        s.apply(&p, cf(), ctx(50)).unwrap(),
        Decision::Finished(SagaStatus::Stuck)
    );
    assert_eq!(s.steps[0].state, StepState::CompensationFailed);
    assert!(s.apply(&p, Input::Start, ctx(0)).is_err());
    assert_eq!(
        s.apply(&p, Input::OperatorRetry, ctx(60)).unwrap(),
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    assert_eq!(
        s.apply(&p, Input::CompensationSucceeded { step: 0 }, ctx(60))
            .unwrap(),
        Decision::Finished(SagaStatus::Compensated)
    );
}

#[test]
fn resume_reruns_an_interrupted_step_and_counts_the_attempt() {
    let p = policies(2, 2, 1);
    let mut s = state(2);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    assert_eq!(
        s.apply(&p, Input::Resume, ctx(0)).unwrap(),
        Decision::Run {
            step: 0,
            attempt: 2
        }
    );
    // Interrupted again with no attempts left: in doubt, compensated.
    assert_eq!(
        s.apply(&p, Input::Resume, ctx(0)).unwrap(),
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
}

#[test]
fn cancel_while_running_waits_for_the_step_then_compensates_it() {
    let p = policies(3, 1, 1);
    let mut s = state(3);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    assert_eq!(
        s.apply(
            &p,
            Input::Cancel {
                reason: "user".into()
            },
            ctx(0)
        )
        .unwrap(),
        Decision::AwaitRunning
    );
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(0))
            .unwrap(),
        Decision::Compensate {
            step: 1,
            attempt: 1
        }
    );
    assert_eq!(s.steps[2].state, StepState::Pending);
}

#[test]
fn inputs_that_do_not_fit_are_refused_without_change() {
    let p = policies(2, 1, 1);
    let mut s = state(2);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    let before = s.clone();
    assert!(s
        .apply(&p, Input::StepSucceeded { step: 1 }, ctx(0))
        .is_err());
    assert!(s
        .apply(&p, Input::StepSucceeded { step: 9 }, ctx(0))
        .is_err());
    assert!(s
        .apply(&p, Input::CompensationSucceeded { step: 0 }, ctx(0))
        .is_err());
    assert!(s.apply(&p, Input::OperatorRetry, ctx(0)).is_err());
    assert!(s.apply(&policies(1, 1, 1), Input::Resume, ctx(0)).is_err());
    assert_eq!(s, before);
}

/// One scripted outcome per decision the driver meets.
#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    Retryable,
    Timeout,
    Reject,
    CompFail,
    Crash,
    Cancel,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        2 => Just(Outcome::Retryable),
        1 => Just(Outcome::Timeout),
        1 => Just(Outcome::Reject),
        2 => Just(Outcome::CompFail),
        1 => Just(Outcome::Crash),
        1 => Just(Outcome::Cancel),
    ]
}

#[derive(Debug, Default)]
struct Trace {
    ran: Vec<usize>,
    compensated: Vec<usize>,
    saw_compensation: bool,
    forward_after_compensation: bool,
}

/// Drives the machine like the runtime would, taking outcomes from `script`
/// (then all `Ok`), and returns the final state and what ran.
fn drive(n: usize, p: &[StepPolicy], script: &[Outcome]) -> (SagaState, Trace, Vec<Decision>) {
    let mut s = state(n);
    let mut t = Trace::default();
    let mut decisions = vec![];
    let mut it = script.iter().cloned();
    let mut now = 0u64;
    let mut d = s.apply(p, Input::Start, ctx(now)).unwrap();
    let mut operator_retries = 0;
    for _ in 0..10_000 {
        decisions.push(d);
        let o = it.next().unwrap_or(Outcome::Ok);
        // Crashes and cancels can happen at any decision point.
        if matches!(o, Outcome::Crash) && !s.status.is_terminal() {
            d = s.apply(p, Input::Resume, ctx(now)).unwrap();
            assert_eq!(d, s.decision_after_resume_check(d));
            continue;
        }
        if let Outcome::Cancel = o {
            if !s.status.is_terminal() {
                let nd = s
                    .apply(
                        p,
                        Input::Cancel {
                            reason: "test".into(),
                        },
                        ctx(now),
                    )
                    .unwrap();
                if nd != Decision::AwaitRunning {
                    d = nd;
                }
                continue;
            }
        }
        d = match d {
            Decision::Run { step, .. } => {
                if t.saw_compensation {
                    t.forward_after_compensation = true;
                }
                let input = match o {
                    Outcome::Ok | Outcome::CompFail | Outcome::Cancel | Outcome::Crash => {
                        t.ran.push(step);
                        Input::StepSucceeded { step }
                    }
                    Outcome::Retryable => Input::StepFailed {
                        step,
                        kind: FailureKind::Retryable,
                        error: "busy".into(),
                    },
                    Outcome::Timeout => Input::StepFailed {
                        step,
                        kind: FailureKind::Timeout,
                        error: "timeout".into(),
                    },
                    Outcome::Reject => Input::StepFailed {
                        step,
                        kind: FailureKind::Rejected,
                        error: "no".into(),
                    },
                };
                s.apply(p, input, ctx(now)).unwrap()
            }
            Decision::Compensate { step, .. } => {
                t.saw_compensation = true;
                let input = match o {
                    Outcome::CompFail => Input::CompensationFailed {
                        step,
                        error: "down".into(),
                    },
                    _ => {
                        t.compensated.push(step);
                        Input::CompensationSucceeded { step }
                    }
                };
                s.apply(p, input, ctx(now)).unwrap()
            }
            Decision::Sleep { step, until_ms } => {
                now = now.max(until_ms);
                s.apply(p, Input::TimerFired { step }, ctx(now)).unwrap()
            }
            Decision::Wait { .. } => panic!("these sagas have no waits"),
            Decision::AwaitRunning => panic!("driver never leaves a running step"),
            Decision::Paused => panic!("nothing pauses this saga"),
            Decision::Finished(SagaStatus::Stuck) if operator_retries < 3 => {
                operator_retries += 1;
                s.apply(p, Input::OperatorRetry, ctx(now)).unwrap()
            }
            Decision::RunGroup { .. } => unreachable!("no groups in these layouts"),
            Decision::Finished(_) => return (s, t, decisions),
        };
    }
    panic!("saga did not finish in 10,000 decisions");
}

impl SagaState {
    /// After a resume, the decision returned must agree with the persisted state.
    fn decision_after_resume_check(&self, d: Decision) -> Decision {
        match (d, self.decision()) {
            (Decision::Finished(a), Decision::Finished(b)) if a == b => d,
            (_, persisted) => persisted,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_saga_ends_once_and_compensates_newest_first(
        n in 1usize..6,
        forward in 1u32..4,
        comp in 1u32..4,
        script in proptest::collection::vec(outcome(), 0..40),
    ) {
        let p = policies(n, forward, comp);
        let (s, t, decisions) = drive(n, &p, &script);

        // Exactly one terminal state, and it is the last decision.
        prop_assert!(s.status.is_terminal());
        let finished: Vec<_> = decisions.iter().filter(|d| matches!(d, Decision::Finished(_))).collect();
        prop_assert!(!finished.is_empty());
        prop_assert_eq!(decisions.last().copied(), Some(Decision::Finished(s.status)));

        // No forward step after compensation began.
        prop_assert!(!t.forward_after_compensation, "forward step after compensation: {:?}", decisions);

        // Compensations are newest first (each step compensated once, in
        // strictly decreasing order).
        for w in t.compensated.windows(2) {
            prop_assert!(w[0] > w[1], "compensation order {:?}", t.compensated);
        }

        match s.status {
            SagaStatus::Completed => {
                prop_assert!(s.steps.iter().all(|x| x.state == StepState::Succeeded));
                prop_assert!(t.compensated.is_empty());
            }
            SagaStatus::Compensated => {
                // Every step that ran (or may have run) was compensated.
                for (i, x) in s.steps.iter().enumerate() {
                    let ran = t.ran.contains(&i) || x.in_doubt;
                    if ran {
                        prop_assert_eq!(x.state, StepState::Compensated, "step {} ran but is {:?}", i, x.state);
                        prop_assert!(t.compensated.contains(&i));
                    }
                    prop_assert!(matches!(x.state, StepState::Compensated | StepState::Rejected | StepState::Pending),
                        "step {} left {:?}", i, x.state);
                }
            }
            SagaStatus::Stuck => {
                prop_assert_eq!(s.steps.iter().filter(|x| x.state == StepState::CompensationFailed).count(), 1);
            }
            other => prop_assert!(false, "not terminal: {}", other),
        }
    }
}
