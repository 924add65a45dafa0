//! Unit tests of the operator operations in the machine: what a pause
//! holds (a restart under a pause, a group), force compensation of a
//! saga stuck forward on its pivot, starting at a step, and the plan.

use super::*;
use std::time::Duration;

fn retry(n: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(n)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
}

fn action(class: StepClass) -> StepPolicy {
    StepPolicy {
        forward: retry(3),
        compensation: retry(3),
        class,
        kind: StepKind::Action,
    }
}

fn ctx(now_ms: u64) -> Ctx {
    Ctx {
        now_ms,
        jitter: 0.0,
    }
}

fn mark() -> PauseMark {
    PauseMark {
        operator: "ada".into(),
        reason: "test".into(),
        at_ms: 0,
    }
}

#[test]
fn a_restart_under_a_pause_runs_nothing_and_the_resume_retries_at_once() {
    let p = vec![
        action(StepClass::Compensatable),
        action(StepClass::Compensatable),
    ];
    let mut s = SagaState::new(["a", "b"]);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    // Paused while `a` runs; the process dies before `a` returns.
    assert_eq!(
        s.apply(&p, Input::Pause(mark()), ctx(1)).unwrap(),
        Decision::Run {
            step: 0,
            attempt: 1
        }
    );
    assert_eq!(
        s.apply(&p, Input::Resume, ctx(2)).unwrap(),
        Decision::Paused
    );
    assert_eq!(s.steps[0].state, StepState::RetryWait);
    assert!(s.steps[0].in_doubt);
    assert_eq!(s.parked_until(), Some(u64::MAX));
    assert_eq!(s.visible_status(), SagaStatus::Paused);
    // A stray timer changes nothing while paused.
    let before = s.clone();
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 0 }, ctx(50)).unwrap(),
        Decision::Paused
    );
    assert_eq!(s.steps, before.steps);
    assert_eq!(
        s.apply(&p, Input::Unpause, ctx(60)).unwrap(),
        Decision::Sleep {
            step: 0,
            until_ms: 2
        }
    );
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 0 }, ctx(60)).unwrap(),
        Decision::Run {
            step: 0,
            attempt: 2
        }
    );
}

#[test]
fn a_paused_group_lets_running_members_finish_and_starts_no_retry() {
    let p = vec![
        action(StepClass::Compensatable),
        action(StepClass::Compensatable),
        action(StepClass::Compensatable),
    ];
    let mut s = SagaState::grouped([
        ("m0", Some("g".to_string())),
        ("m1", Some("g".to_string())),
        ("after", None),
    ]);
    assert_eq!(
        s.apply(&p, Input::Start, ctx(0)).unwrap(),
        Decision::RunGroup { first: 0, end: 2 }
    );
    s.apply(&p, Input::Pause(mark()), ctx(1)).unwrap();
    let failed = Input::StepFailed {
        step: 0,
        kind: FailureKind::Retryable,
        error: "busy".into(),
    };
    // m1 still runs: the group goes on waiting for it.
    assert_eq!(
        s.apply(&p, failed, ctx(2)).unwrap(),
        Decision::RunGroup { first: 0, end: 2 }
    );
    // m1 returns: only m0's retry is left, and a pause holds it.
    assert_eq!(
        s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(3))
            .unwrap(),
        Decision::Paused
    );
    assert_eq!(s.steps[0].state, StepState::RetryWait);
    assert_eq!(
        s.apply(&p, Input::RetryNow, ctx(4)),
        Err(MachineError::Refused(Refusal::Paused))
    );
    assert_eq!(
        s.apply(&p, Input::Unpause, ctx(5)).unwrap(),
        Decision::RunGroup { first: 0, end: 2 }
    );
    assert_eq!(
        s.apply(&p, Input::RetryNow, ctx(5)).unwrap(),
        Decision::RunGroup { first: 0, end: 2 }
    );
    assert_eq!(s.steps[0].wake_at_ms, Some(5));
}

#[test]
fn force_compensation_of_a_saga_stuck_forward_on_its_pivot_undoes_what_came_before() {
    let p = vec![
        action(StepClass::Compensatable),
        action(StepClass::Pivot),
        action(StepClass::Retriable),
    ];
    let mut s = SagaState::new(["a", "pay", "ship"]);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    let mut d = Decision::AwaitRunning;
    for t in 0..3 {
        let timeout = Input::StepFailed {
            step: 1,
            kind: FailureKind::Timeout,
            error: "?".into(),
        };
        d = s.apply(&p, timeout, ctx(t * 100)).unwrap();
        if let Decision::Sleep { step, until_ms } = d {
            s.apply(&p, Input::TimerFired { step }, ctx(until_ms))
                .unwrap();
        }
    }
    assert_eq!(d, Decision::Finished(SagaStatus::Stuck));
    let d = s
        .apply(
            &p,
            Input::ForceCompensate {
                reason: "no charge found".into(),
            },
            ctx(1000),
        )
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 0,
            attempt: 1
        }
    );
    assert_eq!(
        s.failure.as_deref(),
        Some("compensation forced: no charge found")
    );

    // Past the pivot: refused, nothing changed.
    let mut s = SagaState::new(["a", "pay", "ship"]);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, Input::StepSucceeded { step: 0 }, ctx(0))
        .unwrap();
    s.apply(&p, Input::StepSucceeded { step: 1 }, ctx(0))
        .unwrap();
    let before = s.clone();
    let r = s.apply(&p, Input::ForceCompensate { reason: "x".into() }, ctx(1));
    assert!(
        matches!(r, Err(MachineError::Refused(Refusal::PastPivot { .. }))),
        "{r:?}"
    );
    assert_eq!(s, before);
    let r = s.apply(&p, Input::Skip { step: 0 }, ctx(1));
    assert!(
        matches!(r, Err(MachineError::Refused(Refusal::PastPivot { .. }))),
        "{r:?}"
    );
}

#[test]
fn start_at_counts_the_steps_before_as_done_and_the_plan_follows_the_machine() {
    let p = vec![
        action(StepClass::Compensatable),
        action(StepClass::Pivot),
        action(StepClass::Retriable),
    ];
    let mut s = SagaState::new(["a", "pay", "ship"]);
    let fresh = s.clone();
    assert_eq!(
        s.apply(&p, Input::StartAt { step: 1 }, ctx(0)).unwrap(),
        Decision::Run {
            step: 1,
            attempt: 1
        }
    );
    assert_eq!(s.steps[0].state, StepState::Succeeded);
    assert_eq!(s.steps[0].attempts, 0);
    let plan = s.plan_after(&fresh, &p, 0);
    let steps: Vec<(&str, PlannedAction)> = plan
        .steps
        .iter()
        .map(|x| (x.step.as_str(), x.action))
        .collect();
    assert_eq!(
        steps,
        [("pay", PlannedAction::Run), ("ship", PlannedAction::Run)]
    );
    assert_eq!(plan.ends_as, Some(SagaStatus::Completed));
    // The same state planned as it is: `pay` is under way and finishes.
    assert_eq!(s.plan(&p, 0).steps[0].action, PlannedAction::Finish);
    assert_eq!(
        SagaState::new(["a", "pay", "ship"]).apply(&p, Input::StartAt { step: 3 }, ctx(0)),
        Err(MachineError::Refused(Refusal::NoSuchStep {
            step: 3,
            len: 3
        }))
    );
}
