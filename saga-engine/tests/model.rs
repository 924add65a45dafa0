//! The saga model through the public API: step classes enforced by the
//! builder, the pivot, durable waits for signals and sleeps, deadlines.

use saga_engine::{
    Engine, Error, MemoryStore, RetryPolicy, SagaDefinition, SagaStatus, StepClass, StepError,
    StepOrderProblem,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Order {
    log: Vec<String>,
    confirmation: Option<String>,
}

fn push(
    what: &'static str,
) -> impl Fn(saga_engine::StepContext, Order) -> std::future::Ready<Result<Order, StepError>>
       + Send
       + Sync
       + 'static {
    move |_ctx, mut o: Order| {
        o.log.push(what.to_string());
        std::future::ready(Ok(o))
    }
}

fn undo(
    counter: Arc<AtomicU32>,
) -> impl Fn(saga_engine::StepContext, Order) -> std::future::Ready<Result<(), StepError>>
       + Send
       + Sync
       + 'static {
    move |_ctx, _o| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

fn order_problem(r: Result<SagaDefinition<Order>, Error>) -> StepOrderProblem {
    match r {
        Err(Error::StepOrder { problem, .. }) => problem,
        other => panic!("expected a step-order error, got {other:?}"),
    }
}

#[test]
fn the_builder_refuses_steps_in_the_wrong_order_with_a_typed_error() {
    let c = Arc::new(AtomicU32::new(0));
    let two_pivots = SagaDefinition::<Order>::builder("o", 1)
        .pivot("p1", push("p1"))
        .pivot("p2", push("p2"))
        .build();
    assert_eq!(
        order_problem(two_pivots),
        StepOrderProblem::SecondPivot { first: "p1".into() }
    );
    let comp_after = SagaDefinition::<Order>::builder("o", 1)
        .pivot("p", push("p"))
        .action("a", push("a"), undo(c.clone()))
        .build();
    assert_eq!(
        order_problem(comp_after),
        StepOrderProblem::CompensatableAfterPivot
    );
    let retriable_before = SagaDefinition::<Order>::builder("o", 1)
        .retriable("r", push("r"))
        .pivot("p", push("p"))
        .build();
    assert_eq!(
        order_problem(retriable_before),
        StepOrderProblem::RetriableBeforePivot
    );
    let wait_after = SagaDefinition::<Order>::builder("o", 1)
        .pivot("p", push("p"))
        .wait_for(
            "w",
            "confirm",
            Duration::from_secs(1),
            |_o: &mut Order, _p: ()| {},
        )
        .build();
    assert_eq!(order_problem(wait_after), StepOrderProblem::WaitAfterPivot);
    let retry_first = SagaDefinition::<Order>::builder("o", 1)
        .retry(RetryPolicy::no_retry())
        .action("a", push("a"), undo(c.clone()))
        .build();
    assert_eq!(
        order_problem(retry_first),
        StepOrderProblem::PolicyBeforeAnyStep { setter: "retry" }
    );
    let ok = SagaDefinition::<Order>::builder("o", 1)
        .read_only("check", push("check"))
        .action("a", push("a"), undo(c))
        .pivot("p", push("p"))
        .retriable("r", push("r"))
        .sleep("s", Duration::from_millis(1))
        .build()
        .unwrap();
    assert_eq!(
        ok.step_classes(),
        vec![
            StepClass::ReadOnly,
            StepClass::Compensatable,
            StepClass::Pivot,
            StepClass::Retriable,
            StepClass::Retriable
        ]
    );
}

#[tokio::test]
async fn a_failure_after_the_pivot_is_retried_and_parked_never_compensated() {
    let undone = Arc::new(AtomicU32::new(0));
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let def = SagaDefinition::<Order>::builder("o", 1)
        .action("reserve", push("reserve"), undo(undone.clone()))
        .pivot("capture", push("capture"))
        .retriable("email", move |_ctx, o| {
            let n = t.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 4 {
                    Err(StepError::retryable("mail server down"))
                } else {
                    Ok(o)
                }
            }
        })
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .backoff(Duration::from_millis(1), Duration::from_millis(2)),
        )
        .build()
        .unwrap();
    let engine = Engine::builder(MemoryStore::new())
        .register(def)
        .open()
        .await
        .unwrap();
    let id = engine.start("o", &Order::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Stuck, "parked stuck forward");
    assert_eq!(undone.load(Ordering::SeqCst), 0, "nothing compensated");
    // Cancel is refused past the pivot; operator retries move it forward.
    engine.retry(&id).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Stuck);
    engine.retry(&id).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert_eq!(undone.load(Ordering::SeqCst), 0);
    assert_eq!(
        rec.data_as::<Order>().unwrap().log,
        vec!["reserve", "capture"]
    );
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Confirmation {
    code: String,
}

fn confirm_def(undone: Arc<AtomicU32>, timeout: Duration) -> SagaDefinition<Order> {
    SagaDefinition::<Order>::builder("confirm", 1)
        .action("reserve", push("reserve"), undo(undone))
        .wait_for(
            "await_confirmation",
            "confirmed",
            timeout,
            |o: &mut Order, c: Confirmation| o.confirmation = Some(c.code),
        )
        .pivot("capture", push("capture"))
        .build()
        .unwrap()
}

async fn until_parked(engine: &Engine, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.parked_count() < n {
        assert!(std::time::Instant::now() < deadline, "saga never parked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_signal_reaches_the_data_once_and_a_waiting_saga_holds_no_worker() {
    let undone = Arc::new(AtomicU32::new(0));
    let engine = Engine::builder(MemoryStore::new())
        .register(confirm_def(undone.clone(), Duration::from_secs(60)))
        .open()
        .await
        .unwrap();
    let id = engine
        .start("confirm", &Order::default(), None)
        .await
        .unwrap();
    until_parked(&engine, 1).await;
    assert_eq!(engine.running_count(), 0, "a waiting saga has no worker");
    // A bad payload is refused with a typed error.
    let bad = engine.signal(&id, "confirmed", "s0", &42).await;
    assert!(matches!(bad, Err(Error::SignalRefused { .. })), "{bad:?}");
    let unknown = engine.signal(&id, "nope", "s0", &()).await;
    assert!(matches!(unknown, Err(Error::SignalRefused { .. })));
    let c = Confirmation {
        code: "ok-1".into(),
    };
    let first = engine.signal(&id, "confirmed", "s1", &c).await.unwrap();
    assert_eq!(first, saga_engine::SignalOutcome::Delivered);
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let o: Order = rec.data_as().unwrap();
    assert_eq!(o.confirmation.as_deref(), Some("ok-1"));
    assert_eq!(o.log, vec!["reserve", "capture"]);
    // A repeat of the same signal id is refused as the saga has finished.
    let again = engine.signal(&id, "confirmed", "s1", &c).await;
    assert!(matches!(again, Err(Error::SignalRefused { .. })));
    assert_eq!(undone.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_early_signal_is_kept_and_a_duplicate_changes_nothing() {
    let undone = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let def = SagaDefinition::<Order>::builder("early", 1)
        .action(
            "slow",
            move |_ctx, o: Order| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok(o)
                }
            },
            undo(undone),
        )
        .wait_for(
            "wait",
            "go",
            Duration::from_secs(60),
            |o: &mut Order, c: Confirmation| o.confirmation = Some(c.code),
        )
        .build()
        .unwrap();
    let engine = Engine::builder(MemoryStore::new())
        .register(def)
        .open()
        .await
        .unwrap();
    let id = engine
        .start("early", &Order::default(), None)
        .await
        .unwrap();
    let c = Confirmation {
        code: "early".into(),
    };
    assert_eq!(
        engine.signal(&id, "go", "e1", &c).await.unwrap(),
        saga_engine::SignalOutcome::Kept
    );
    assert_eq!(
        engine.signal(&id, "go", "e1", &c).await.unwrap(),
        saga_engine::SignalOutcome::Duplicate
    );
    gate.notify_one();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert_eq!(
        rec.data_as::<Order>().unwrap().confirmation.as_deref(),
        Some("early")
    );
}

#[tokio::test]
async fn a_wait_that_times_out_compensates_and_a_late_signal_is_refused_clearly() {
    let undone = Arc::new(AtomicU32::new(0));
    let engine = Engine::builder(MemoryStore::new())
        .register(confirm_def(undone.clone(), Duration::from_millis(50)))
        .open()
        .await
        .unwrap();
    let id = engine
        .start("confirm", &Order::default(), None)
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert!(rec.state.failure.as_deref().unwrap().contains("timed out"));
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    let late = engine
        .signal(&id, "confirmed", "late", &Confirmation { code: "x".into() })
        .await;
    match late {
        Err(Error::SignalRefused { reason, .. }) => {
            assert!(reason.contains("finished"), "{reason}")
        }
        other => panic!("late signal accepted: {other:?}"),
    }
    let history = engine.history(&id).await.unwrap();
    assert!(history
        .iter()
        .any(|e| matches!(e.kind, saga_engine::EventKind::WaitTimedOut { .. })));
}

#[tokio::test]
async fn a_waiting_saga_survives_a_restart_and_a_sleep_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let undone = Arc::new(AtomicU32::new(0));
    let id = {
        let engine = Engine::builder(saga_engine::SledStore::open(dir.path()).unwrap())
            .register(confirm_def(undone.clone(), Duration::from_secs(60)))
            .open()
            .await
            .unwrap();
        let id = engine
            .start("confirm", &Order::default(), None)
            .await
            .unwrap();
        until_parked(&engine, 1).await;
        engine.shutdown(Duration::from_secs(1)).await;
        id
    };
    let engine = Engine::builder(saga_engine::SledStore::open(dir.path()).unwrap())
        .register(confirm_def(undone.clone(), Duration::from_secs(60)))
        .open()
        .await
        .unwrap();
    assert_eq!(engine.parked_count(), 1, "found in the timer index at open");
    assert_eq!(engine.running_count(), 0);
    engine
        .signal(
            &id,
            "confirmed",
            "s1",
            &Confirmation {
                code: "after".into(),
            },
        )
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert_eq!(
        rec.data_as::<Order>().unwrap().confirmation.as_deref(),
        Some("after")
    );

    let sleepy = SagaDefinition::<Order>::builder("sleepy", 1)
        .sleep("nap", Duration::from_millis(30))
        .read_only("after", push("after"))
        .build()
        .unwrap();
    let engine = Engine::builder(MemoryStore::new())
        .register(sleepy)
        .open()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let id = engine
        .start("sleepy", &Order::default(), None)
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(rec.data_as::<Order>().unwrap().log, vec!["after"]);
}

#[tokio::test]
async fn a_deadline_before_the_pivot_compensates_and_after_it_flags_overdue() {
    let undone = Arc::new(AtomicU32::new(0));
    let before = SagaDefinition::<Order>::builder("late", 1)
        .deadline(Duration::from_millis(40))
        .action("reserve", push("reserve"), undo(undone.clone()))
        .sleep("nap", Duration::from_secs(60))
        .pivot("capture", push("capture"))
        .build()
        .unwrap();
    let after = SagaDefinition::<Order>::builder("overdue", 1)
        .deadline(Duration::from_millis(40))
        .action("reserve", push("reserve"), undo(undone.clone()))
        .pivot("capture", push("capture"))
        .sleep("nap", Duration::from_millis(200))
        .build()
        .unwrap();
    let engine = Engine::builder(MemoryStore::new())
        .register(before)
        .register(after)
        .open()
        .await
        .unwrap();
    let a = engine.start("late", &Order::default(), None).await.unwrap();
    let rec = engine.wait(&a).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert!(rec.state.failure.as_deref().unwrap().contains("deadline"));
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    let b = engine
        .start("overdue", &Order::default(), None)
        .await
        .unwrap();
    let rec = engine.wait(&b).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert!(rec.state.overdue);
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    let history = engine.history(&b).await.unwrap();
    assert!(history.iter().any(|e| matches!(
        e.kind,
        saga_engine::EventKind::DeadlinePassed { overdue: true }
    )));
}

#[tokio::test]
async fn a_typed_handle_starts_sagas_and_returns_typed_outcomes() {
    let undone = Arc::new(AtomicU32::new(0));
    let def = SagaDefinition::<Order>::builder("typed", 1)
        .action("a", push("a"), undo(undone.clone()))
        .action(
            "b",
            |_ctx, o: Order| async move {
                if o.log.iter().any(|l| l == "fail") {
                    Err(StepError::rejected("no"))
                } else {
                    Ok(o)
                }
            },
            undo(undone.clone()),
        )
        .build()
        .unwrap();
    let (builder, orders) = Engine::builder(MemoryStore::new()).register_typed(def);
    let engine = builder.open().await.unwrap();
    let ok = orders.run(&engine, &Order::default(), None).await.unwrap();
    assert_eq!(ok.status, SagaStatus::Completed);
    assert_eq!(ok.data.log, vec!["a"]);
    let input = Order {
        log: vec!["fail".into()],
        confirmation: None,
    };
    let bad = orders.run(&engine, &input, None).await.unwrap();
    assert_eq!(bad.status, SagaStatus::Compensated);
    assert!(bad.failure.unwrap().contains("rejected"));
    assert_eq!(undone.load(Ordering::SeqCst), 1);
}

/// A record as the code before saga model v2 wrote it (no signals, no
/// deadline fields): a saga it started resumes and finishes.
#[tokio::test]
async fn a_saga_written_in_the_previous_record_shape_resumes() {
    let old = r#"{"revision":1,"v":1,"id":"0000000000010000000000000001","definition":"old","version":1,
      "idempotency_key":null,"input_fingerprint":0,"next_seq":2,"created_at_ms":1,"updated_at_ms":1,
      "state":{"status":"running","steps":[
        {"name":"a","state":"succeeded","attempts":1,"compensation_attempts":0,"in_doubt":false,"last_error":null,"wake_at_ms":null},
        {"name":"b","state":"running","attempts":1,"compensation_attempts":0,"in_doubt":false,"last_error":null,"wake_at_ms":null}],
        "cancel_requested":false,"failure":null},
      "data":{"log":["a"],"confirmation":null}}"#;
    let rec: saga_engine::SagaRecord = serde_json::from_str(old).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = saga_engine::SledStore::open(dir.path()).unwrap();
    use saga_engine::Store;
    store.create(&rec, &[]).await.unwrap();
    let undone = Arc::new(AtomicU32::new(0));
    let def = SagaDefinition::<Order>::builder("old", 1)
        .action("a", push("a"), undo(undone.clone()))
        .action("b", push("b"), undo(undone))
        .build()
        .unwrap();
    let engine = Engine::builder(store).register(def).open().await.unwrap();
    let done = engine.wait(&rec.id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    assert_eq!(done.data_as::<Order>().unwrap().log, vec!["a", "b"]);
}
