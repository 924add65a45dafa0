//! Sleeping until a wall-clock instant computed from the saga's data
//! (`SagaDefinitionBuilder::sleep_until`), on sled: the wake time comes
//! from the data and is fixed when the sleep begins, the saga holds no
//! worker meanwhile, it survives a restart (and wakes at once at open if
//! its time passed while no process ran), and an instant already past
//! wakes at once. Plus the pure machine's side of it.

use saga_engine::machine::{Ctx, Decision, Input, SagaState, StepKind, StepPolicy};
use saga_engine::{
    Engine, Error, EventKind, RetryPolicy, SagaDefinition, SagaStatus, SledStore, StepClass,
    StepOrderProblem,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    /// When the hold expires, ms since the Unix epoch.
    expires_at_ms: u64,
    /// When the step after the sleep ran (wall clock).
    expired_seen_at_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn definition() -> SagaDefinition<Hold> {
    SagaDefinition::<Hold>::builder("hold", 1)
        .sleep_until("until_expiry", |h: &Hold| {
            UNIX_EPOCH + Duration::from_millis(h.expires_at_ms)
        })
        .read_only("expire", |_ctx, mut h: Hold| async move {
            h.expired_seen_at_ms = Some(now_ms());
            Ok(h)
        })
        .build()
        .unwrap()
}

async fn open(dir: &Path) -> Engine {
    Engine::builder(SledStore::open(dir).unwrap())
        .register(definition())
        .open()
        .await
        .unwrap()
}

async fn until_parked(engine: &Engine, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.parked_count() < n {
        assert!(std::time::Instant::now() < deadline, "saga never parked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn hold(expires_at_ms: u64) -> Hold {
    Hold {
        expires_at_ms,
        expired_seen_at_ms: None,
    }
}

#[tokio::test]
async fn a_sleep_until_the_datas_instant_survives_a_restart_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let at = now_ms() + 400;
    let id = {
        let engine = open(dir.path()).await;
        let id = engine.start("hold", &hold(at), None).await.unwrap();
        until_parked(&engine, 1).await;
        assert_eq!(engine.running_count(), 0, "a sleeping saga holds no worker");
        let history = engine.history(&id).await.unwrap();
        let until = history.iter().find_map(|e| match e.kind {
            EventKind::WaitStarted { until_ms, .. } => Some(until_ms),
            _ => None,
        });
        assert_eq!(until, Some(at), "the wake time is the data's instant");
        engine.shutdown(Duration::from_secs(1)).await;
        id
    };
    let engine = open(dir.path()).await;
    assert_eq!(engine.parked_count(), 1, "found in the timer index at open");
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let seen = rec.data_as::<Hold>().unwrap().expired_seen_at_ms.unwrap();
    assert!(seen >= at, "woke at {seen}, before its instant {at}");
}

#[tokio::test]
async fn an_instant_that_passed_while_no_process_ran_wakes_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let at = now_ms() + 150;
    let id = {
        let engine = open(dir.path()).await;
        let id = engine.start("hold", &hold(at), None).await.unwrap();
        until_parked(&engine, 1).await;
        engine.shutdown(Duration::from_secs(1)).await;
        id
    };
    // No engine runs while the instant passes.
    while now_ms() <= at {
        std::thread::sleep(Duration::from_millis(10));
    }
    let engine = open(dir.path()).await;
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert!(rec.data_as::<Hold>().unwrap().expired_seen_at_ms.unwrap() >= at);
}

#[tokio::test]
async fn an_instant_already_past_wakes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let id = engine.start("hold", &hold(1_000), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let history = engine.history(&id).await.unwrap();
    assert!(history.iter().any(|e| matches!(
        e.kind,
        EventKind::WaitStarted {
            until_ms: 1_000,
            ..
        }
    )));
}

#[test]
fn sleep_until_is_allowed_after_the_pivot_and_refused_in_a_group() {
    let at = |_: &Hold| UNIX_EPOCH;
    let ok = |_c, h: Hold| async move { Ok(h) };
    let after_pivot = SagaDefinition::<Hold>::builder("p", 1)
        .pivot("capture", ok)
        .sleep_until("later", at)
        .retriable("send", ok)
        .build()
        .unwrap();
    assert_eq!(
        after_pivot.step_classes(),
        vec![StepClass::Pivot, StepClass::Retriable, StepClass::Retriable]
    );
    let in_group = SagaDefinition::<Hold>::builder("g", 1)
        .group("g", |g| g.read_only("a", ok).sleep_until("later", at))
        .build();
    match in_group {
        Err(Error::StepOrder {
            problem: StepOrderProblem::NotAGroupMember { what, .. },
            ..
        }) => assert_eq!(what, "sleep"),
        other => panic!("expected NotAGroupMember, got {other:?}"),
    }
}

/// The machine: the wake time is the policy's instant, fixed in the state
/// when the sleep begins; a timer before it changes nothing.
#[test]
fn the_machine_sleeps_until_the_instant_it_is_given() {
    let pol = |kind| StepPolicy {
        forward: RetryPolicy::default(),
        compensation: RetryPolicy::default(),
        class: StepClass::ReadOnly,
        kind,
    };
    let ctx = |now_ms| Ctx {
        now_ms,
        jitter: 0.0,
    };
    let mut p = vec![
        pol(StepKind::SleepUntil { at_ms: 5_000 }),
        pol(StepKind::Action),
    ];
    let mut s = SagaState::new(["until", "after"]);
    let d = s.apply(&p, Input::Start, ctx(1_000)).unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 0,
            until_ms: 5_000
        }
    );
    // The data (and so the policy's instant) changing later does not move
    // a sleep that has begun.
    p[0] = pol(StepKind::SleepUntil { at_ms: 9_000 });
    let d = s
        .apply(&p, Input::TimerFired { step: 0 }, ctx(4_999))
        .unwrap();
    assert_eq!(
        d,
        Decision::Wait {
            step: 0,
            until_ms: 5_000
        }
    );
    let d = s
        .apply(&p, Input::TimerFired { step: 0 }, ctx(5_000))
        .unwrap();
    assert_eq!(
        d,
        Decision::Run {
            step: 1,
            attempt: 1
        }
    );
}
