//! Property and unit tests of the saga model's transitions: step classes
//! and the pivot, durable waits (signals, sleeps), deadlines, and (in the
//! property test) parallel groups.

use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn retry(n: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(n)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
}

fn pol(class: StepClass, kind: StepKind, forward: u32, comp: u32) -> StepPolicy {
    StepPolicy {
        forward: retry(forward),
        compensation: retry(comp),
        class,
        kind,
    }
}

fn ctx(now_ms: u64) -> Ctx {
    Ctx {
        now_ms,
        jitter: 0.5,
    }
}

fn signal(name: &str, timeout_ms: u64) -> StepKind {
    StepKind::Signal {
        name: name.into(),
        timeout_ms,
    }
}

fn state(p: &[StepPolicy]) -> SagaState {
    SagaState::new((0..p.len()).map(|i| format!("s{i}")))
}

fn sig(id: &str, name: &str) -> Input {
    Input::Signal {
        id: id.into(),
        name: name.into(),
        payload: serde_json::json!({"ok": true}),
    }
}

#[test]
fn rejection_after_the_pivot_parks_stuck_forward_and_never_compensates() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(Pivot, StepKind::Action, 3, 3),
        pol(Retriable, StepKind::Action, 2, 3),
    ];
    let mut s = state(&p);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(0))
        .unwrap();
    assert!(s.past_pivot(&p));
    // Cancel is refused past the pivot.
    assert!(matches!(
        s.apply(&p, Input::Cancel { reason: "x".into() }, ctx(0)),
        Err(MachineError::PastPivot { .. })
    ));
    let fail = Input::StepFailed {
        step: 2,
        kind: FailureKind::Retryable,
        error: "down".into(),
    };
    let d = s.apply(&p, fail.clone(), ctx(0)).unwrap();
    assert!(matches!(d, Decision::Sleep { step: 2, .. }));
    s.apply(&p, Input::TimerFired { step: 2 }, ctx(1_000))
        .unwrap();
    let d = s.apply(&p, fail, ctx(1_000)).unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Stuck));
    assert_eq!(s.steps[2].state, StepState::StuckForward);
    assert_eq!(s.steps[0].state, StepState::Succeeded, "never compensated");
    // The operator retry runs it forward again.
    let d = s.apply(&p, Input::OperatorRetry, ctx(2_000)).unwrap();
    assert_eq!(
        d,
        Decision::Run {
            step: 2,
            attempt: 1
        }
    );
    let d = s
        .apply(&p, Input::StepSucceeded { step: 2 }, ctx(2_000))
        .unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Completed));
}

#[test]
fn a_rejected_pivot_compensates_the_steps_before_it_and_skips_read_only_ones() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(ReadOnly, StepKind::Action, 3, 3),
        pol(Pivot, StepKind::Action, 3, 3),
    ];
    let mut s = state(&p);
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
                error: "no".into(),
            },
            ctx(0),
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
fn a_pivot_in_doubt_past_its_policy_is_stuck_forward_not_compensated() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(Pivot, StepKind::Action, 1, 3),
    ];
    let mut s = state(&p);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    let d = s
        .apply(
            &p,
            Input::StepFailed {
                step: 1,
                kind: FailureKind::Timeout,
                error: "timeout".into(),
            },
            ctx(0),
        )
        .unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Stuck));
    assert_eq!(s.steps[1].state, StepState::StuckForward);
}

#[test]
fn signal_wait_takes_the_payload_once_keeps_early_ones_and_refuses_late_ones() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(ReadOnly, signal("confirm", 1_000), 1, 1),
        pol(ReadOnly, signal("again", 1_000), 1, 1),
    ];
    let mut s = state(&p);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    // Early: kept while step 0 runs.
    let d = s.apply(&p, sig("a1", "again"), ctx(0)).unwrap();
    assert_eq!(
        d,
        Decision::Run {
            step: 0,
            attempt: 1
        }
    );
    assert_eq!(s.signals.len(), 1);
    // Unknown name: refused.
    assert!(matches!(
        s.apply(&p, sig("x", "nope"), ctx(0)),
        Err(MachineError::SignalRefused { .. })
    ));
    let d = s
        .apply(&p, Input::StepSucceeded { step: 0 }, ctx(10))
        .unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 1,
            until_ms: 1_010
        }
    );
    assert_eq!(s.parked_until(), Some(1_010));
    // A crash while waiting resumes the same wait.
    let mut r = s.clone();
    assert_eq!(r.apply(&p, Input::Resume, ctx(500)).unwrap(), d);
    // The signal ends the wait; the early one ends the next at once.
    let d = s.apply(&p, sig("c1", "confirm"), ctx(20)).unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Completed));
    assert_eq!(s.signals[1].consumed_by, Some(1));
    assert_eq!(s.signals[0].consumed_by, Some(2));
    // A duplicate is refused as finished (the saga is done), a duplicate
    // while running would change nothing: see the property test.
    assert!(matches!(
        s.apply(&p, sig("c1", "confirm"), ctx(30)),
        Err(MachineError::SignalRefused { .. })
    ));
}

#[test]
fn a_signal_wait_that_times_out_compensates_and_refuses_the_late_signal() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(ReadOnly, signal("confirm", 1_000), 1, 1),
        pol(Compensatable, StepKind::Action, 3, 3),
    ];
    let mut s = state(&p);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    // Fired early (spurious): nothing changes.
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 1 }, ctx(999))
            .unwrap(),
        Decision::Wait {
            step: 1,
            until_ms: 1_000
        }
    );
    let d = s
        .apply(&p, Input::TimerFired { step: 1 }, ctx(1_000))
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    assert!(s.failure.as_deref().unwrap().contains("timed out"));
    match s.apply(&p, sig("late", "confirm"), ctx(1_001)) {
        Err(MachineError::SignalRefused { reason, .. }) => {
            assert!(reason.contains("timed out"), "{reason}")
        }
        other => panic!("late signal accepted: {other:?}"),
    }
}

#[test]
fn a_deadline_before_the_pivot_compensates_with_its_reason_and_after_it_flags_overdue() {
    use StepClass::*;
    let p = vec![
        pol(Compensatable, StepKind::Action, 3, 3),
        pol(ReadOnly, StepKind::Sleep { for_ms: 10_000 }, 1, 1),
        pol(Pivot, StepKind::Action, 3, 3),
        pol(Retriable, StepKind::Sleep { for_ms: 10_000 }, 1, 1),
    ];
    // Before the pivot: the sleep is woken at the deadline and the saga compensates.
    let mut s = state(&p);
    s.deadline_ms = Some(5_000);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    let d = s
        .apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 1,
            until_ms: 5_000
        },
        "woken at the deadline"
    );
    let d = s
        .apply(&p, Input::TimerFired { step: 1 }, ctx(5_000))
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    assert!(s.failure.as_deref().unwrap().contains("deadline"));
    // After the pivot: goes on, overdue.
    let mut s = state(&p);
    s.deadline_ms = Some(15_000);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    s.apply(&p, Input::TimerFired { step: 1 }, ctx(10_000))
        .unwrap();
    let d = s
        .apply(&p, Input::StepSucceeded { step: 2 }, ctx(10_000))
        .unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 3,
            until_ms: 15_000
        }
    );
    let d = s
        .apply(&p, Input::TimerFired { step: 3 }, ctx(15_000))
        .unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 3,
            until_ms: 20_000
        }
    );
    assert!(s.overdue && s.deadline_passed);
    let d = s
        .apply(&p, Input::TimerFired { step: 3 }, ctx(20_000))
        .unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Completed));
    assert_eq!(s.failure, None);
}

#[test]
fn old_records_without_the_new_fields_still_decode() {
    let old = r#"{"status":"running","steps":[{"name":"a","state":"running","attempts":1,
        "compensation_attempts":0,"in_doubt":false,"last_error":null,"wake_at_ms":null}],
        "cancel_requested":false,"failure":null}"#;
    let s: SagaState = serde_json::from_str(old).unwrap();
    assert!(s.signals.is_empty() && s.deadline_ms.is_none() && !s.overdue);
    // And a state without the new fields is written in the old shape.
    let fresh = serde_json::to_value(SagaState::new(["a"])).unwrap();
    assert!(fresh.get("signals").is_none() && fresh.get("deadline_ms").is_none());
}

// ---- the property test over random layouts ----

#[derive(Debug, Clone)]
enum Shape {
    Comp,
    ReadOnly,
    Wait,
    Sleep,
    /// A sleep until the instant `250 * k` ms (0 is already past at the start).
    SleepUntil(u8),
    /// A parallel group; each member compensatable (true) or read-only.
    Group(Vec<bool>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Retryable,
    Timeout,
    Reject,
    CompFail,
    Crash,
    Cancel,
    /// A signal for a random wait, early or on time, perhaps a duplicate.
    Signal(u8, bool),
    /// Time jumps (past the deadline, past wait timeouts).
    Jump,
    /// Operator operations, interleaved anywhere.
    Pause,
    Unpause,
    RetryNow,
    Skip(u8),
    ForceCompensate,
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
        3 => (0u8..4, any::<bool>()).prop_map(|(w, dup)| Outcome::Signal(w, dup)),
        1 => Just(Outcome::Jump),
        2 => Just(Outcome::Pause),
        1 => Just(Outcome::Unpause),
        1 => Just(Outcome::RetryNow),
        1 => (0u8..8).prop_map(Outcome::Skip),
        1 => Just(Outcome::ForceCompensate),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        4 => Just(Shape::Comp),
        1 => Just(Shape::ReadOnly),
        2 => Just(Shape::Wait),
        1 => Just(Shape::Sleep),
        1 => (0u8..4).prop_map(Shape::SleepUntil),
        2 => proptest::collection::vec(any::<bool>(), 1..4).prop_map(Shape::Group),
    ]
}

/// The instant a `SleepUntil(k)` step sleeps until.
fn until_ms(k: u8) -> u64 {
    250 * u64::from(k)
}

/// Builds a layout: `before` steps (groups among them), then maybe a pivot
/// and `after` retriable steps (0: an action, 1: a sleep, 2 and up: a
/// sleep until an instant), as the builder allows; and each step's group.
fn layout(
    before: &[Shape],
    pivot: bool,
    after: &[u8],
    forward: u32,
    comp: u32,
) -> (Vec<StepPolicy>, Vec<Option<String>>) {
    let mut p = Vec::new();
    let mut groups = Vec::new();
    for (i, sh) in before.iter().enumerate() {
        if let Shape::Group(members) = sh {
            for &c in members {
                let class = if c {
                    StepClass::Compensatable
                } else {
                    StepClass::ReadOnly
                };
                p.push(pol(class, StepKind::Action, forward, comp));
                groups.push(Some(format!("g{i}")));
            }
            continue;
        }
        groups.push(None);
        p.push(match sh {
            Shape::Comp => pol(StepClass::Compensatable, StepKind::Action, forward, comp),
            Shape::ReadOnly => pol(StepClass::ReadOnly, StepKind::Action, forward, comp),
            Shape::Wait => pol(
                StepClass::ReadOnly,
                signal(&format!("w{}", i % 4), 500),
                1,
                1,
            ),
            Shape::Sleep => pol(StepClass::ReadOnly, StepKind::Sleep { for_ms: 300 }, 1, 1),
            Shape::SleepUntil(k) => pol(
                StepClass::ReadOnly,
                StepKind::SleepUntil {
                    at_ms: until_ms(*k),
                },
                1,
                1,
            ),
            Shape::Group(_) => unreachable!(),
        });
    }
    if pivot {
        p.push(pol(StepClass::Pivot, StepKind::Action, forward, comp));
        for &a in after {
            p.push(match a {
                0 => pol(StepClass::Retriable, StepKind::Action, forward, comp),
                1 => pol(StepClass::Retriable, StepKind::Sleep { for_ms: 300 }, 1, 1),
                k => pol(
                    StepClass::Retriable,
                    StepKind::SleepUntil {
                        at_ms: until_ms(k - 2),
                    },
                    1,
                    1,
                ),
            });
        }
    }
    groups.resize(p.len(), None);
    (p, groups)
}

#[derive(Debug, Default)]
struct Trace {
    ran: Vec<usize>,
    compensated: Vec<usize>,
    saw_compensation: bool,
    forward_after_compensation: bool,
    pivot_succeeded: bool,
    compensated_after_pivot: bool,
    signals_sent: u32,
    operations: u32,
}

/// Applies `input` and checks the pause's promise: while paused, no
/// attempt starts (only one already under way may still be running).
fn apply_checked(
    s: &mut SagaState,
    p: &[StepPolicy],
    input: Input,
    c: Ctx,
) -> Result<Decision, MachineError> {
    let before = s.clone();
    let r = s.apply(p, input.clone(), c);
    if s.paused.is_some() {
        for (i, (b, a)) in before.steps.iter().zip(&s.steps).enumerate() {
            let started = match a.state {
                StepState::Running => b.state != StepState::Running || b.attempts != a.attempts,
                StepState::Compensating => {
                    b.state != StepState::Compensating
                        || b.compensation_attempts != a.compensation_attempts
                }
                _ => false,
            };
            assert!(
                !started,
                "step {i} started while paused, by {input:?}: {before:?} -> {s:?}"
            );
        }
        if let Ok(d) = &r {
            assert!(
                matches!(d, Decision::Paused | Decision::Finished(_))
                    || s.steps
                        .iter()
                        .any(|x| matches!(x.state, StepState::Running | StepState::Compensating)),
                "a paused saga was told to act: {d:?}"
            );
        }
    }
    if r.is_err() {
        assert_eq!(&before, s, "a refused input changed the state");
    }
    // A sleep until an instant waits for exactly that instant, and ends
    // only once it has come (or when an operator skips it).
    for (i, (b, a)) in before.steps.iter().zip(&s.steps).enumerate() {
        let StepKind::SleepUntil { at_ms } = p[i].kind else {
            continue;
        };
        if a.state == StepState::Waiting && b.state != StepState::Waiting {
            assert_eq!(
                a.wake_at_ms,
                Some(at_ms),
                "step {i} sleeps to the wrong instant"
            );
        }
        let skipped = matches!(input, Input::Skip { step } if step == i);
        if a.state == StepState::Succeeded && b.state != StepState::Succeeded && !skipped {
            assert!(
                c.now_ms >= at_ms,
                "step {i} woke at {} before its instant {at_ms}, by {input:?}",
                c.now_ms
            );
        }
    }
    r
}

/// The input for a forward attempt of `step` ending as `o`.
fn forward_input(o: Outcome, step: usize, pivot: Option<usize>, t: &mut Trace) -> Input {
    if t.saw_compensation {
        t.forward_after_compensation = true;
    }
    match o {
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
        _ => {
            // Crashes included: a step that succeeded never runs again.
            assert!(!t.ran.contains(&step), "step {step} succeeded twice");
            t.ran.push(step);
            if Some(step) == pivot {
                t.pivot_succeeded = true;
            }
            Input::StepSucceeded { step }
        }
    }
}

/// True when the decision is one attempt the driver has under way (its
/// result is still to come, whatever an operation said meanwhile).
fn in_flight(d: Decision) -> bool {
    matches!(d, Decision::Run { .. } | Decision::Compensate { .. })
}

fn drive(
    p: &[StepPolicy],
    groups: &[Option<String>],
    deadline: Option<u64>,
    script: &[Outcome],
) -> (SagaState, Trace, Vec<Decision>) {
    let mut s = SagaState::grouped((0..p.len()).map(|i| (format!("s{i}"), groups[i].clone())));
    s.deadline_ms = deadline;
    let pivot = p.iter().position(|x| x.class == StepClass::Pivot);
    let mut t = Trace::default();
    let mut decisions = vec![];
    let mut it = script.iter().cloned();
    let mut now = 0u64;
    let mut d = apply_checked(&mut s, p, Input::Start, ctx(now)).unwrap();
    let mut operator_retries = 0;
    let mut last_signal: Option<(String, String)> = None;
    for _ in 0..10_000 {
        decisions.push(d);
        let o = it.next().unwrap_or(Outcome::Ok);
        if s.status.is_terminal() && !matches!(d, Decision::Finished(_)) {
            panic!("terminal state with a non-final decision {d:?}");
        }
        match o {
            Outcome::Crash if !s.status.is_terminal() => {
                let persisted = s.decision();
                d = apply_checked(&mut s, p, Input::Resume, ctx(now)).unwrap();
                if let Decision::Wait { .. } | Decision::Sleep { .. } = persisted {
                    assert_eq!(d, persisted, "a wait or a sleep resumes as it was");
                }
                continue;
            }
            Outcome::Cancel if !s.status.is_terminal() => {
                match s.apply(
                    p,
                    Input::Cancel {
                        reason: "test".into(),
                    },
                    ctx(now),
                ) {
                    Ok(Decision::AwaitRunning) => {}
                    Ok(nd) => d = nd,
                    Err(MachineError::PastPivot { .. }) => assert!(s.past_pivot(p)),
                    Err(e) => panic!("cancel refused: {e}"),
                }
                continue;
            }
            Outcome::Signal(w, dup) if !s.status.is_terminal() => {
                let (id, name) = match (&last_signal, dup) {
                    (Some(l), true) => l.clone(),
                    _ => {
                        t.signals_sent += 1;
                        (format!("g{}", t.signals_sent), format!("w{w}"))
                    }
                };
                last_signal = Some((id.clone(), name.clone()));
                let before = s.clone();
                match apply_checked(&mut s, p, sig(&id, &name), ctx(now)) {
                    Ok(nd) => {
                        if before.signals.iter().any(|g| g.id == id) {
                            assert_eq!(s, before, "a duplicate signal changes nothing");
                        }
                        if !matches!(d, Decision::Run { .. } | Decision::Compensate { .. }) {
                            d = nd;
                        }
                    }
                    Err(MachineError::SignalRefused { .. }) => assert_eq!(s, before),
                    Err(e) => panic!("signal: {e}"),
                }
                continue;
            }
            Outcome::Pause if !s.status.is_terminal() => {
                t.operations += 1;
                let mark = PauseMark {
                    operator: "op".into(),
                    reason: "test".into(),
                    at_ms: now,
                };
                match apply_checked(&mut s, p, Input::Pause(mark), ctx(now)) {
                    Ok(nd) => {
                        if !in_flight(d) {
                            d = nd;
                        }
                    }
                    Err(MachineError::Refused(Refusal::AlreadyPaused)) => {}
                    Err(e) => panic!("pause refused: {e}"),
                }
                continue;
            }
            Outcome::Unpause if !s.status.is_terminal() => {
                t.operations += 1;
                match apply_checked(&mut s, p, Input::Unpause, ctx(now)) {
                    Ok(nd) => {
                        if !in_flight(d) {
                            d = nd;
                        }
                    }
                    Err(MachineError::Refused(Refusal::NotPaused)) => {}
                    Err(e) => panic!("resume refused: {e}"),
                }
                continue;
            }
            Outcome::RetryNow if !s.status.is_terminal() => {
                t.operations += 1;
                match apply_checked(&mut s, p, Input::RetryNow, ctx(now)) {
                    Ok(nd) => {
                        if !in_flight(d) {
                            d = nd;
                        }
                    }
                    Err(MachineError::Refused(Refusal::NotInBackoff | Refusal::Paused)) => {}
                    Err(e) => panic!("retry-now refused: {e}"),
                }
                continue;
            }
            Outcome::Skip(k) if !s.status.is_terminal() => {
                t.operations += 1;
                let step = k as usize % p.len();
                match apply_checked(&mut s, p, Input::Skip { step }, ctx(now)) {
                    Ok(nd) => {
                        assert!(
                            pivot.is_none_or(|v| step < v),
                            "skipped the pivot or after it"
                        );
                        assert!(!t.ran.contains(&step), "skipped a step that succeeded");
                        t.ran.push(step);
                        if !in_flight(d) {
                            d = nd;
                        }
                    }
                    Err(MachineError::Refused(_)) => {}
                    Err(e) => panic!("skip: {e}"),
                }
                continue;
            }
            Outcome::ForceCompensate
                if !s.status.is_terminal() || s.status == SagaStatus::Stuck =>
            {
                t.operations += 1;
                let input = Input::ForceCompensate {
                    reason: "test".into(),
                };
                match apply_checked(&mut s, p, input, ctx(now)) {
                    Ok(Decision::AwaitRunning) => {}
                    Ok(nd) => {
                        if !in_flight(d) {
                            d = nd;
                        }
                    }
                    Err(MachineError::Refused(Refusal::PastPivot { .. })) => {
                        assert!(s.forward_only(p))
                    }
                    Err(MachineError::Refused(
                        Refusal::Compensating | Refusal::StuckCompensating,
                    )) => {}
                    Err(e) => panic!("force-compensate: {e}"),
                }
                continue;
            }
            Outcome::Jump => now += 400,
            _ => {}
        }
        d = match d {
            Decision::Run { step, .. } => {
                let input = forward_input(o, step, pivot, &mut t);
                apply_checked(&mut s, p, input, ctx(now)).unwrap()
            }
            Decision::RunGroup { first, end } => {
                let running: Vec<usize> = (first..end)
                    .filter(|&i| s.steps[i].state == StepState::Running)
                    .collect();
                if running.is_empty() {
                    // Only retry waits left: the earliest one's timer fires.
                    let (w, step) = (first..end)
                        .filter(|&i| s.steps[i].state == StepState::RetryWait)
                        .map(|i| (s.steps[i].wake_at_ms.unwrap_or(0), i))
                        .min()
                        .expect("a group decision with nothing running or waiting");
                    now = now.max(w);
                    apply_checked(&mut s, p, Input::TimerFired { step }, ctx(now)).unwrap()
                } else {
                    // Members report in an order the script varies.
                    let step = running[(decisions.len() * 7 + now as usize) % running.len()];
                    let input = forward_input(o, step, pivot, &mut t);
                    apply_checked(&mut s, p, input, ctx(now)).unwrap()
                }
            }
            Decision::Compensate { step, .. } => {
                t.saw_compensation = true;
                if t.pivot_succeeded {
                    t.compensated_after_pivot = true;
                }
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
                apply_checked(&mut s, p, input, ctx(now)).unwrap()
            }
            Decision::Sleep { step, until_ms } | Decision::Wait { step, until_ms } => {
                now = now.max(until_ms);
                apply_checked(&mut s, p, Input::TimerFired { step }, ctx(now)).unwrap()
            }
            Decision::AwaitRunning => panic!("driver never leaves a running step"),
            Decision::Paused => {
                // Nothing runs while paused: the operator resumes it.
                assert!(s.paused.is_some());
                apply_checked(&mut s, p, Input::Unpause, ctx(now)).unwrap()
            }
            Decision::Finished(SagaStatus::Stuck) if operator_retries < 3 => {
                operator_retries += 1;
                apply_checked(&mut s, p, Input::OperatorRetry, ctx(now)).unwrap()
            }
            Decision::Finished(_) => return (s, t, decisions),
        };
    }
    panic!("saga did not finish in 10,000 decisions");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_model_holds_for_pivots_waits_deadlines_and_groups(
        before in proptest::collection::vec(shape(), 0..5),
        pivot in any::<bool>(),
        after in proptest::collection::vec(0u8..6, 0..3),
        forward in 1u32..4,
        comp in 1u32..4,
        deadline in proptest::option::of(0u64..3_000),
        script in proptest::collection::vec(outcome(), 0..50),
    ) {
        let (p, groups) = layout(&before, pivot, &after, forward, comp);
        prop_assume!(!p.is_empty());
        let (s, t, decisions) = drive(&p, &groups, deadline, &script);

        // Exactly one terminal state, and it is the last decision.
        prop_assert!(s.status.is_terminal());
        prop_assert!(s.paused.is_none(), "a finished saga is still paused");
        prop_assert_eq!(decisions.last().copied(), Some(Decision::Finished(s.status)));
        prop_assert!(!t.forward_after_compensation, "forward after compensation: {:?}", decisions);
        prop_assert!(!t.compensated_after_pivot, "compensated after the pivot: {:?}", decisions);
        for w in t.compensated.windows(2) {
            prop_assert!(w[0] > w[1], "compensation order {:?}", t.compensated);
        }
        // Only compensatable steps are ever compensated.
        for &i in &t.compensated {
            prop_assert_eq!(p[i].class, StepClass::Compensatable);
        }
        // Each signal is consumed at most once, by a wait for its name.
        for g in &s.signals {
            if let Some(i) = g.consumed_by {
                let ok = matches!(&p[i].kind, StepKind::Signal { name, .. } if name == &g.name);
                prop_assert!(ok);
            }
        }
        if s.overdue {
            prop_assert!(t.pivot_succeeded, "overdue without the pivot");
        }
        match s.status {
            SagaStatus::Completed => {
                prop_assert!(s.steps.iter().all(|x| x.state == StepState::Succeeded));
                prop_assert!(t.compensated.is_empty());
            }
            SagaStatus::Compensated => {
                prop_assert!(!t.pivot_succeeded);
                for (i, x) in s.steps.iter().enumerate() {
                    let ran = t.ran.contains(&i) || x.in_doubt;
                    if ran && p[i].class == StepClass::Compensatable {
                        prop_assert_eq!(x.state, StepState::Compensated, "step {} ran but is {:?}", i, x.state);
                    }
                }
                if s.deadline_passed {
                    prop_assert!(s.failure.is_some());
                }
            }
            SagaStatus::Stuck => {
                let parked = s.steps.iter().filter(|x| matches!(x.state, StepState::CompensationFailed | StepState::StuckForward)).count();
                prop_assert_eq!(parked, 1);
                if s.steps.iter().any(|x| x.state == StepState::StuckForward) {
                    prop_assert!(t.compensated.is_empty());
                }
            }
            other => prop_assert!(false, "not terminal: {}", other),
        }
    }
}
