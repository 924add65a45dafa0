//! Unit tests of parallel groups in the pure machine: all members succeed,
//! a rejection while a sibling runs, a sibling waiting to retry given up,
//! a cancel mid-group, and a restart that resumes only the unfinished member.

use super::*;
use std::time::Duration;

fn pol(class: StepClass) -> StepPolicy {
    let r = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(100));
    StepPolicy {
        forward: r.clone(),
        compensation: r,
        class,
        kind: StepKind::Action,
    }
}

fn ctx(now_ms: u64) -> Ctx {
    Ctx {
        now_ms,
        jitter: 0.5,
    }
}

/// `a`, then the group `g` of `b` and `c`, then `d`: all compensatable.
fn layout() -> (Vec<StepPolicy>, SagaState) {
    let p = vec![pol(StepClass::Compensatable); 4];
    let g = Some("g".to_string());
    let s = SagaState::grouped([("a", None), ("b", g.clone()), ("c", g), ("d", None)]);
    (p, s)
}

const GROUP: Decision = Decision::RunGroup { first: 1, end: 3 };

fn ok(step: usize) -> Input {
    Input::StepSucceeded { step }
}

fn failed(step: usize, kind: FailureKind) -> Input {
    Input::StepFailed {
        step,
        kind,
        error: "no".into(),
    }
}

#[test]
fn a_group_starts_all_members_at_once_and_succeeds_when_all_do() {
    let (p, mut s) = layout();
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    assert_eq!(s.apply(&p, ok(0), ctx(0)).unwrap(), GROUP);
    assert_eq!(s.steps[1].state, StepState::Running);
    assert_eq!(s.steps[2].state, StepState::Running);
    assert_eq!((s.steps[1].attempts, s.steps[2].attempts), (1, 1));
    // Members finish in any order; the saga moves on after the last.
    assert_eq!(s.apply(&p, ok(2), ctx(0)).unwrap(), GROUP);
    assert_eq!(s.decision(), GROUP);
    let d = s.apply(&p, ok(1), ctx(0)).unwrap();
    assert_eq!(
        d,
        Decision::Run {
            step: 3,
            attempt: 1
        }
    );
    let d = s.apply(&p, ok(3), ctx(0)).unwrap();
    assert_eq!(d, Decision::Finished(SagaStatus::Completed));
}

#[test]
fn a_rejected_member_waits_for_its_running_sibling_then_compensates_it_and_the_steps_before() {
    let (p, mut s) = layout();
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, ok(0), ctx(0)).unwrap();
    let d = s
        .apply(&p, failed(1, FailureKind::Rejected), ctx(0))
        .unwrap();
    assert_eq!(d, GROUP, "the sibling still runs");
    assert!(
        s.cancel_requested,
        "the runtime is told to stop the sibling"
    );
    assert!(s.failure.as_deref().unwrap().contains("step b rejected"));
    // The sibling finished anyway: it is compensated, then `a`.
    let d = s.apply(&p, ok(2), ctx(0)).unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 2,
            attempt: 1
        }
    );
    let d = s
        .apply(&p, Input::CompensationSucceeded { step: 2 }, ctx(0))
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
    assert_eq!(s.steps[1].state, StepState::Rejected, "b took no effect");
    assert_eq!(s.steps[3].state, StepState::Pending, "d never ran");
}

#[test]
fn a_sibling_waiting_to_retry_is_given_up_in_doubt_and_compensated() {
    let (p, mut s) = layout();
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, ok(0), ctx(0)).unwrap();
    let d = s
        .apply(&p, failed(1, FailureKind::Timeout), ctx(0))
        .unwrap();
    assert_eq!(d, GROUP);
    assert_eq!(s.steps[1].state, StepState::RetryWait);
    // Its retry is due: it runs again while c still runs.
    let wake = s.steps[1].wake_at_ms.unwrap();
    assert_eq!(
        s.apply(&p, Input::TimerFired { step: 1 }, ctx(wake))
            .unwrap(),
        GROUP
    );
    assert_eq!(
        (s.steps[1].state, s.steps[1].attempts),
        (StepState::Running, 2)
    );
    s.apply(&p, failed(1, FailureKind::Retryable), ctx(wake))
        .unwrap();
    // c is rejected: b, in doubt, is not retried but compensated.
    let d = s
        .apply(&p, failed(2, FailureKind::Rejected), ctx(wake))
        .unwrap();
    assert_eq!(
        d,
        Decision::Compensate {
            step: 1,
            attempt: 1
        }
    );
    assert_eq!(s.steps[1].attempts, 2);
}

#[test]
fn a_cancel_mid_group_lets_members_finish_then_undoes_them_newest_first() {
    let (p, mut s) = layout();
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, ok(0), ctx(0)).unwrap();
    let cancel = Input::Cancel {
        reason: "user".into(),
    };
    assert_eq!(s.apply(&p, cancel, ctx(0)).unwrap(), GROUP);
    assert!(s.cancel_requested);
    assert_eq!(s.apply(&p, ok(1), ctx(0)).unwrap(), GROUP);
    let mut undone = vec![];
    let mut d = s.apply(&p, ok(2), ctx(0)).unwrap();
    while let Decision::Compensate { step, .. } = d {
        undone.push(step);
        d = s
            .apply(&p, Input::CompensationSucceeded { step }, ctx(0))
            .unwrap();
    }
    assert_eq!(undone, vec![2, 1, 0]);
    assert_eq!(d, Decision::Finished(SagaStatus::Compensated));
}

#[test]
fn a_restart_mid_group_runs_again_only_the_member_that_had_not_finished() {
    let (p, mut s) = layout();
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, ok(0), ctx(0)).unwrap();
    s.apply(&p, ok(1), ctx(0)).unwrap();
    // The process dies; the persisted state is reloaded.
    let mut s: SagaState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    let d = s.apply(&p, Input::Resume, ctx(0)).unwrap();
    assert_eq!(d, GROUP);
    assert_eq!(
        (s.steps[1].state, s.steps[1].attempts),
        (StepState::Succeeded, 1),
        "b is not run again"
    );
    assert_eq!(
        (s.steps[2].state, s.steps[2].attempts, s.steps[2].in_doubt),
        (StepState::Running, 2, true)
    );
    let d = s.apply(&p, ok(2), ctx(0)).unwrap();
    assert_eq!(
        d,
        Decision::Run {
            step: 3,
            attempt: 1
        }
    );
}

#[test]
fn a_member_interrupted_past_its_policy_fails_the_group_after_a_restart() {
    let (mut p, mut s) = layout();
    p[2].forward = p[2].forward.clone().max_attempts(1);
    s.apply(&p, Input::Start, ctx(0)).unwrap();
    s.apply(&p, ok(0), ctx(0)).unwrap();
    let d = s.apply(&p, Input::Resume, ctx(0)).unwrap();
    // c is in doubt past its policy: the group fails; b, interrupted too,
    // is not run again but compensated with c, then a.
    assert_eq!(
        d,
        Decision::Compensate {
            step: 2,
            attempt: 1
        }
    );
    assert_eq!(s.steps[1].state, StepState::InDoubt);
    assert!(s
        .failure
        .as_deref()
        .unwrap()
        .contains("step c gave no clear answer"));
}
