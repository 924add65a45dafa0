//! The engine through its public API: ordering, retries, timeouts,
//! compensation, stuck and operator retry, cancel, idempotent start,
//! recovery and versioning.

use saga_engine::{
    Engine, Error, EventKind, MemoryStore, RetryPolicy, SagaDefinition, SagaStatus, SledStore,
    Step, StepContext, StepError, StepState, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Data {
    input: u32,
    trail: Vec<String>,
}

/// What a scripted step does.
#[derive(Clone, Default)]
struct Script {
    /// Fail retryably this many times, then succeed.
    transient: u32,
    reject: bool,
    /// Sleep this long in run.
    delay: Option<Duration>,
    /// Compensation fails this many times, then succeeds.
    comp_failures: u32,
}

/// A participant that logs every call and follows a script per step.
#[derive(Clone, Default)]
struct Ledger {
    log: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
    comp_calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Ledger {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

struct Scripted {
    name: &'static str,
    script: Script,
    ledger: Ledger,
}

#[saga_engine::async_trait]
impl Step<Data> for Scripted {
    async fn run(&self, ctx: &StepContext, d: &mut Data) -> Result<(), StepError> {
        assert_eq!(
            ctx.idempotency_key,
            format!("{}:{}", ctx.saga_id, self.name)
        );
        let n = {
            let mut c = self.ledger.calls.lock().unwrap();
            let n = c.entry(ctx.idempotency_key.clone()).or_default();
            *n += 1;
            *n
        };
        if let Some(delay) = self.script.delay {
            tokio::time::sleep(delay).await;
        }
        if self.script.reject {
            self.ledger
                .log
                .lock()
                .unwrap()
                .push(format!("reject {}", self.name));
            return Err(StepError::rejected(format!("{} says no", self.name)));
        }
        if n <= self.script.transient {
            return Err(StepError::retryable(format!("{} busy ({n})", self.name)));
        }
        self.ledger
            .log
            .lock()
            .unwrap()
            .push(format!("run {}", self.name));
        d.trail.push(self.name.to_string());
        Ok(())
    }

    async fn compensate(&self, ctx: &StepContext, _d: &Data) -> Result<(), StepError> {
        let n = {
            let mut c = self.ledger.comp_calls.lock().unwrap();
            let n = c.entry(ctx.idempotency_key.clone()).or_default();
            *n += 1;
            *n
        };
        if n <= self.script.comp_failures {
            return Err(StepError::retryable(format!(
                "{} undo failed ({n})",
                self.name
            )));
        }
        self.ledger
            .log
            .lock()
            .unwrap()
            .push(format!("undo {}", self.name));
        Ok(())
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .attempt_timeout(Some(Duration::from_millis(500)))
}

fn definition(
    name: &str,
    version: u32,
    ledger: &Ledger,
    scripts: [(&'static str, Script); 3],
) -> SagaDefinition<Data> {
    let mut b = SagaDefinition::builder(name, version)
        .default_retry(fast())
        .default_compensation_retry(fast());
    for (step, script) in scripts {
        b = b.step(
            step,
            Scripted {
                name: step,
                script,
                ledger: ledger.clone(),
            },
        );
    }
    b.build().unwrap()
}

fn plain(ledger: &Ledger) -> SagaDefinition<Data> {
    definition(
        "trip",
        1,
        ledger,
        [
            ("a", Script::default()),
            ("b", Script::default()),
            ("c", Script::default()),
        ],
    )
}

async fn engine_with(def: SagaDefinition<Data>) -> Engine {
    Engine::builder(MemoryStore::new())
        .register(def)
        .open()
        .await
        .unwrap()
}

#[tokio::test]
async fn steps_run_in_order_and_pass_data_forward() {
    let ledger = Ledger::default();
    let engine = engine_with(plain(&ledger)).await;
    let id = engine
        .start(
            "trip",
            &Data {
                input: 7,
                trail: vec![],
            },
            None,
        )
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let data: Data = rec.data_as().unwrap();
    assert_eq!(data.trail, vec!["a", "b", "c"]);
    assert_eq!(data.input, 7);
    assert_eq!(ledger.log(), vec!["run a", "run b", "run c"]);
    let kinds: Vec<String> = engine
        .history(&id)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::to_value(&e.kind).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "saga_started",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "saga_finished"
        ]
    );
    let seqs: Vec<u64> = engine
        .history(&id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_rejection_compensates_completed_steps_newest_first() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            ("a", Script::default()),
            ("b", Script::default()),
            (
                "c",
                Script {
                    reject: true,
                    ..Script::default()
                },
            ),
        ],
    );
    let engine = engine_with(def).await;
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(
        ledger.log(),
        vec!["run a", "run b", "reject c", "undo b", "undo a"]
    );
    assert!(rec.state.failure.unwrap().contains("c says no"));
    assert_eq!(rec.state.steps[2].state, StepState::Rejected);
    assert_eq!(rec.state.steps[2].attempts, 1, "a rejection is not retried");
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            ("a", Script::default()),
            (
                "b",
                Script {
                    transient: 2,
                    ..Script::default()
                },
            ),
            ("c", Script::default()),
        ],
    );
    let engine = engine_with(def).await;
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert_eq!(rec.state.steps[1].attempts, 3);
    let key = format!("{id}:b");
    assert_eq!(ledger.calls.lock().unwrap()[&key], 3);
    let failures = engine
        .history(&id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::StepFailed {
                    retry_at_ms: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(failures, 2);
}

#[tokio::test]
async fn retries_past_the_policy_leave_the_step_in_doubt_and_it_is_compensated() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            ("a", Script::default()),
            (
                "b",
                Script {
                    transient: 99,
                    ..Script::default()
                },
            ),
            ("c", Script::default()),
        ],
    );
    let engine = engine_with(def).await;
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(rec.state.steps[1].attempts, 3);
    assert_eq!(rec.state.steps[1].state, StepState::Compensated);
    assert_eq!(ledger.log(), vec!["run a", "undo b", "undo a"]);
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_timeout_is_in_doubt_and_compensated() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            ("a", Script::default()),
            (
                "b",
                Script {
                    delay: Some(Duration::from_secs(3600)),
                    ..Script::default()
                },
            ),
            ("c", Script::default()),
        ],
    );
    let engine = engine_with(def).await;
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert!(rec.state.steps[1].in_doubt);
    assert!(rec.state.steps[1]
        .last_error
        .as_deref()
        .unwrap()
        .contains("timed out"));
    assert_eq!(ledger.log(), vec!["run a", "undo b", "undo a"]);
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_parks_the_saga_stuck_until_an_operator_retries() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            (
                "a",
                Script {
                    comp_failures: 4,
                    ..Script::default()
                },
            ),
            ("b", Script::default()),
            (
                "c",
                Script {
                    reject: true,
                    ..Script::default()
                },
            ),
        ],
    );
    let engine = engine_with(def).await;
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Stuck);
    assert_eq!(rec.state.steps[0].state, StepState::CompensationFailed);
    let stuck = engine.list(Some(SagaStatus::Stuck), 10).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert!(matches!(
        engine.cancel(&id, "no").await,
        Err(Error::InvalidState { .. })
    ));

    // 3 attempts failed; the operator's retry gets 3 more; the 5th succeeds.
    engine.retry(&id).await.unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(ledger.log().last().unwrap(), "undo a");
    assert!(matches!(
        engine.retry(&id).await,
        Err(Error::InvalidState {
            status: SagaStatus::Compensated,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_starts_one_saga_even_when_racing() {
    let ledger = Ledger::default();
    let engine = engine_with(plain(&ledger)).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .start(
                    "trip",
                    &Data {
                        input: 1,
                        trail: vec![],
                    },
                    Some("order-9"),
                )
                .await
                .unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    engine.wait(&id).await.unwrap();
    assert_eq!(engine.list(None, 100).await.unwrap().len(), 1);
    assert_eq!(ledger.log(), vec!["run a", "run b", "run c"]);
    match engine
        .start(
            "trip",
            &Data {
                input: 2,
                trail: vec![],
            },
            Some("order-9"),
        )
        .await
    {
        Err(Error::IdempotencyConflict { existing, key }) => {
            assert_eq!(existing, id);
            assert_eq!(key, "order-9");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_during_a_step_lets_it_finish_then_compensates_it() {
    let ledger = Ledger::default();
    let def = definition(
        "trip",
        1,
        &ledger,
        [
            ("a", Script::default()),
            (
                "b",
                Script {
                    delay: Some(Duration::from_millis(200)),
                    ..Script::default()
                },
            ),
            ("c", Script::default()),
        ],
    );
    let engine = engine_with(def).await;
    let mut events = engine.subscribe();
    let id = engine.start("trip", &Data::default(), None).await.unwrap();
    // Wait until b has started.
    loop {
        let e = events.recv().await.unwrap();
        if matches!(&e.kind, EventKind::StepStarted { step, .. } if step == "b") {
            break;
        }
    }
    engine
        .cancel(&id, "customer changed their mind")
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(ledger.log(), vec!["run a", "run b", "undo b", "undo a"]);
    assert_eq!(rec.state.steps[2].state, StepState::Pending);
    assert!(rec.state.failure.unwrap().contains("customer changed"));
}

#[tokio::test]
async fn unknown_definitions_and_ids_are_typed_errors() {
    let ledger = Ledger::default();
    let engine = engine_with(plain(&ledger)).await;
    assert!(matches!(
        engine.start("nope", &Data::default(), None).await,
        Err(Error::UnknownDefinition { .. })
    ));
    let ghost = saga_engine::SagaId::parse("ghost").unwrap();
    assert!(matches!(
        engine.status(&ghost).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        engine.history(&ghost).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        engine.cancel(&ghost, "x").await,
        Err(Error::NotFound(_))
    ));
    assert!(saga_engine::SagaId::parse("../etc").is_none());
    let dup = Engine::builder(MemoryStore::new())
        .register(plain(&ledger))
        .register(plain(&ledger))
        .open()
        .await;
    assert!(matches!(dup, Err(Error::InvalidDefinition { .. })));
    assert!(SagaDefinition::<Data>::builder("empty", 1).build().is_err());
}

/// A step that never returns until released, to hold a saga mid-flight.
struct Gate(Arc<tokio::sync::Notify>, Arc<AtomicU32>);

#[saga_engine::async_trait]
impl Step<Data> for Gate {
    async fn run(&self, _: &StepContext, d: &mut Data) -> Result<(), StepError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.notified().await;
        d.trail.push("gate".into());
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_engine_resumes_in_flight_sagas_and_retry_timers() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let gate = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let gated = |gate: &Arc<tokio::sync::Notify>, runs: &Arc<AtomicU32>| {
        SagaDefinition::<Data>::builder("gated", 1)
            .step("hold", Gate(gate.clone(), runs.clone()))
            .build()
            .unwrap()
    };
    let ledger = Ledger::default();
    let slow_retry = || {
        SagaDefinition::<Data>::builder("retrying", 1)
            .step(
                "x",
                Scripted {
                    name: "x",
                    script: Script {
                        transient: 1,
                        ..Script::default()
                    },
                    ledger: ledger.clone(),
                },
            )
            .retry(
                RetryPolicy::default()
                    .max_attempts(3)
                    .jitter(0.0)
                    .backoff(Duration::from_millis(400), Duration::from_millis(400)),
            )
            .build()
            .unwrap()
    };

    let first = Engine::builder_arc(store.clone())
        .register(gated(&gate, &runs))
        .register(slow_retry())
        .open()
        .await
        .unwrap();
    let held = first.start("gated", &Data::default(), None).await.unwrap();
    let timed = first
        .start("retrying", &Data::default(), None)
        .await
        .unwrap();
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the retrying saga fail once and persist its timer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = first.status(&timed).await.unwrap();
    assert_eq!(waiting.state.steps[0].state, StepState::RetryWait);
    // "Crash": abort every worker without letting anything finish.
    first.shutdown(Duration::ZERO).await;
    drop(first);
    assert_eq!(
        store.get(&held).await.unwrap().unwrap().status(),
        SagaStatus::Running
    );

    let second = Engine::builder_arc(store.clone())
        .register(gated(&gate, &runs))
        .register(slow_retry())
        .open()
        .await
        .unwrap();
    while runs.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.notify_waiters();
    let rec = second.wait(&held).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    assert_eq!(
        rec.state.steps[0].attempts, 2,
        "the interrupted attempt counts"
    );
    let rec = second.wait(&timed).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let history = second.history(&held).await.unwrap();
    assert!(history.iter().any(|e| e.kind == EventKind::Resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_of_an_unregistered_version_are_reported_and_left_untouched() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let v1 = Engine::builder_arc(store.clone())
        .register(
            SagaDefinition::<Data>::builder("gated", 1)
                .step("hold", Gate(gate.clone(), runs.clone()))
                .build()
                .unwrap(),
        )
        .open()
        .await
        .unwrap();
    let id = v1.start("gated", &Data::default(), None).await.unwrap();
    v1.shutdown(Duration::ZERO).await;
    let before = store.get(&id).await.unwrap().unwrap();

    let v2 = Engine::builder_arc(store.clone())
        .register(
            SagaDefinition::<Data>::builder("gated", 2)
                .step("hold", Gate(gate.clone(), runs.clone()))
                .build()
                .unwrap(),
        )
        .open()
        .await
        .unwrap();
    let un = v2.unregistered();
    assert_eq!(un.len(), 1);
    assert_eq!(un[0].id, id);
    assert_eq!(un[0].version, 1);
    assert!(un[0].reason.contains("version 1 is not registered"));
    assert!(matches!(
        v2.wait(&id).await,
        Err(Error::UnregisteredVersion { version: 1, .. })
    ));
    assert_eq!(
        store.get(&id).await.unwrap().unwrap(),
        before,
        "left untouched"
    );
}

#[tokio::test]
async fn after_shutdown_no_saga_starts() {
    let ledger = Ledger::default();
    let engine = engine_with(plain(&ledger)).await;
    engine.shutdown(Duration::from_secs(1)).await;
    assert!(matches!(
        engine.start("trip", &Data::default(), None).await,
        Err(Error::ShuttingDown)
    ));
}
