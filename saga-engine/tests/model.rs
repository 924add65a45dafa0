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
