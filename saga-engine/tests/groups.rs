//! Parallel groups through the public API, on SledStore: members run at
//! once and their data is merged; a rejected member stops a slow sibling
//! cooperatively and both the members and the steps before the group are
//! compensated, members first; a crash mid-group (the process's runtime
//! dropped with one member finished) resumes only the unfinished member.

use saga_engine::{
    Engine, Error, SagaDefinition, SagaStatus, SledStore, StepContext, StepError, StepOrderProblem,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Trip {
    outbound: Option<String>,
    inbound: Option<String>,
    paid: bool,
}

/// Every call, in order: `run:{key}` or `undo:{key}`.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    fn note(&self, what: &str, ctx: &StepContext) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{what}:{}", ctx.idempotency_key));
    }
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, entry: &str) -> usize {
        self.calls().iter().filter(|c| *c == entry).count()
    }
    fn per_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for c in self.calls() {
            *m.entry(c).or_insert(0) += 1;
        }
        m
    }
}

fn undo(
    ledger: &Ledger,
) -> impl Fn(StepContext, Trip) -> std::future::Ready<Result<(), StepError>> + Send + Sync + 'static
{
    let l = ledger.clone();
    move |ctx, _t| {
        l.note("undo", &ctx);
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn all_members_run_at_once_their_data_is_merged_and_the_saga_completes() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    // Both legs wait for each other: run one after the other, they would
    // time out on the barrier and the saga would not complete.
    let both = Arc::new(tokio::sync::Barrier::new(2));
    let leg = |field: &'static str| {
        let l = ledger.clone();
        let both = both.clone();
        move |ctx: StepContext, mut t: Trip| {
            let l = l.clone();
            let both = both.clone();
            async move {
                l.note("run", &ctx);
                tokio::time::timeout(Duration::from_secs(20), both.wait())
                    .await
                    .map_err(|_| StepError::rejected("the other leg never ran alongside"))?;
                let seat = Some(format!("seat-{field}"));
                match field {
                    "outbound" => t.outbound = seat,
                    _ => t.inbound = seat,
                }
                Ok(t)
            }
        }
    };
    let l = ledger.clone();
    let def = SagaDefinition::<Trip>::builder("trip", 1)
        .group("seats", |g| {
            g.action("reserve_seat_outbound", leg("outbound"), undo(&ledger))
                .action("reserve_seat_return", leg("return"), undo(&ledger))
        })
        .action(
            "pay",
            move |ctx, mut t: Trip| {
                l.note("run", &ctx);
                t.paid = true;
                async move { Ok(t) }
            },
            undo(&ledger),
        )
        .build()
        .unwrap();
    let (builder, trips) =
        Engine::builder(SledStore::open(dir.path()).unwrap()).register_typed(def);
    let engine = builder.open().await.unwrap();
    let id = trips.start(&engine, &Trip::default(), None).await.unwrap();
    let out = trips.wait(&engine, &id).await.unwrap();
    assert_eq!(out.status, SagaStatus::Completed, "{:?}", out.failure);
    assert_eq!(
        out.data,
        Trip {
            outbound: Some("seat-outbound".into()),
            inbound: Some("seat-return".into()),
            paid: true
        },
        "each member's fields are kept"
    );
    let calls = ledger.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2], format!("run:{id}:pay"), "the group comes first");
    assert_eq!(ledger.count(&format!("run:{id}:reserve_seat_outbound")), 1);
    assert_eq!(ledger.count(&format!("run:{id}:reserve_seat_return")), 1);
    // Both members' starts are in the history.
    let history = engine.history(&id).await.unwrap();
    let started = history
        .iter()
        .filter(|e| matches!(&e.kind, saga_engine::EventKind::StepStarted { step, .. } if step.starts_with("reserve")))
        .count();
    assert_eq!(started, 2);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_rejected_member_cancels_its_slow_sibling_and_everything_is_compensated_members_first() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let saw_cancel = Arc::new(Mutex::new(false));
    let (l1, l2, l3) = (ledger.clone(), ledger.clone(), ledger.clone());
    let seen = saw_cancel.clone();
    let def = SagaDefinition::<Trip>::builder("trip", 1)
        .action(
            "hold_price",
            move |ctx, t: Trip| {
                l1.note("run", &ctx);
                async move { Ok(t) }
            },
            undo(&ledger),
        )
        .group("seats", |g| {
            g.action(
                "reserve_seat_outbound",
                move |ctx: StepContext, t: Trip| {
                    let l = l2.clone();
                    let seen = seen.clone();
                    async move {
                        l.note("run", &ctx);
                        // Slow: it would take a minute, unless told to stop.
                        tokio::select! {
                            _ = ctx.cancelled() => {
                                *seen.lock().unwrap() = ctx.is_cancelled();
                                Err(StepError::retryable("stopped: the group is failing"))
                            }
                            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(t),
                        }
                    }
                },
                undo(&ledger),
            )
            .action(
                "reserve_seat_return",
                move |ctx: StepContext, _t: Trip| {
                    l3.note("run", &ctx);
                    async move { Err(StepError::rejected("no seats on the return flight")) }
                },
                undo(&ledger),
            )
        })
        .build()
        .unwrap();
    let (builder, trips) =
        Engine::builder(SledStore::open(dir.path()).unwrap()).register_typed(def);
    let engine = builder.open().await.unwrap();
    let started = tokio::time::Instant::now();
    let id = trips.start(&engine, &Trip::default(), None).await.unwrap();
    let out = trips.wait(&engine, &id).await.unwrap();
    assert_eq!(out.status, SagaStatus::Compensated);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the slow member did not wait out its minute"
    );
    assert!(
        *saw_cancel.lock().unwrap(),
        "the slow member was told to stop"
    );
    assert!(out
        .failure
        .as_deref()
        .unwrap()
        .contains("reserve_seat_return rejected"));
    let undos: Vec<String> = ledger
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("undo:"))
        .collect();
    assert_eq!(
        undos,
        vec![
            // In doubt (stopped without a clear answer): compensated.
            format!("undo:{id}:reserve_seat_outbound"),
            format!("undo:{id}:hold_price"),
        ],
        "the rejected member is not undone; the step before the group goes last"
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The crash test's definition: `outbound` finishes at once, `return`
/// blocks until `release` is notified (never, in the first process).
fn crash_def(ledger: &Ledger, release: Arc<tokio::sync::Semaphore>) -> SagaDefinition<Trip> {
    let (l1, l2, l3) = (ledger.clone(), ledger.clone(), ledger.clone());
    SagaDefinition::<Trip>::builder("trip", 1)
        .group("seats", |g| {
            g.action(
                "reserve_seat_outbound",
                move |ctx: StepContext, mut t: Trip| {
                    l1.note("run", &ctx);
                    t.outbound = Some("seat-1A".into());
                    async move { Ok(t) }
                },
                undo(ledger),
            )
            .action(
                "reserve_seat_return",
                move |ctx: StepContext, mut t: Trip| {
                    let l = l2.clone();
                    let release = release.clone();
                    async move {
                        l.note("run", &ctx);
                        let _permit = release.acquire().await.map_err(StepError::retryable)?;
                        t.inbound = Some("seat-2B".into());
                        Ok(t)
                    }
                },
                undo(ledger),
            )
        })
        .action(
            "pay",
            move |ctx, mut t: Trip| {
                l3.note("run", &ctx);
                t.paid = true;
                async move { Ok(t) }
            },
            undo(ledger),
        )
        .build()
        .unwrap()
}

#[test]
fn a_crash_mid_group_resumes_only_the_member_that_had_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let path = dir.path().to_path_buf();
    // The first process: its runtime is dropped (every task with it, no
    // shutdown) once one member's success is durable.
    let id = {
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let id = rt.block_on(async {
                let never = Arc::new(tokio::sync::Semaphore::new(0));
                let engine = Engine::builder(SledStore::open(&path).unwrap())
                    .register(crash_def(&ledger, never))
                    .open()
                    .await
                    .unwrap();
                let id = engine.start("trip", &Trip::default(), None).await.unwrap();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let rec = engine.status(&id).await.unwrap();
                    let s = &rec.state.steps;
                    if s[0].state == saga_engine::StepState::Succeeded
                        && s[1].state == saga_engine::StepState::Running
                    {
                        assert_eq!(rec.data["outbound"], "seat-1A", "its data is durable too");
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "never got mid-group"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // No shutdown: the engine is dropped, then the runtime
                // with every task still in flight.
                drop(engine);
                id
            });
            drop(rt);
            id
        })
        .join()
        .unwrap()
    };
    let before = ledger.per_key();
    assert_eq!(before[&format!("run:{id}:reserve_seat_outbound")], 1);
    assert_eq!(before[&format!("run:{id}:reserve_seat_return")], 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let go = Arc::new(tokio::sync::Semaphore::new(100));
        let store = open_again(dir.path()).await;
        let engine = Engine::builder(store)
            .register(crash_def(&ledger, go))
            .open()
            .await
            .unwrap();
        let rec = engine.wait(&id).await.unwrap();
        assert_eq!(rec.status(), SagaStatus::Completed);
        assert_eq!(rec.data["outbound"], "seat-1A");
        assert_eq!(rec.data["inbound"], "seat-2B");
        assert_eq!(
            rec.state.steps[0].attempts, 1,
            "the finished member kept its one attempt"
        );
        assert_eq!(
            rec.state.steps[1].attempts, 2,
            "the interrupted attempt counts"
        );
        engine.shutdown(Duration::from_secs(1)).await;
    });
    let after = ledger.per_key();
    assert_eq!(
        after[&format!("run:{id}:reserve_seat_outbound")],
        1,
        "the finished member did not run again"
    );
    assert_eq!(after[&format!("run:{id}:reserve_seat_return")], 2);
    assert_eq!(after[&format!("run:{id}:pay")], 1);
    assert!(!after.keys().any(|k| k.starts_with("undo:")));
}

/// Reopens the directory once the dead process's handle is gone (sled
/// holds a file lock until its last reference drops).
async fn open_again(path: &std::path::Path) -> SledStore {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "could not reopen: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[test]
fn the_builder_refuses_a_pivot_a_wait_or_an_empty_group() {
    let problem = |r: Result<SagaDefinition<Trip>, Error>| match r {
        Err(Error::StepOrder { problem, .. }) => problem,
        other => panic!("expected a step order error, got {:?}", other.map(|_| ())),
    };
    let ok = |_c: StepContext, t: Trip| async move { Ok(t) };
    let pivot = SagaDefinition::<Trip>::builder("t", 1)
        .group("g", |g| g.read_only("a", ok).pivot("p", ok))
        .build();
    assert_eq!(
        problem(pivot),
        StepOrderProblem::PivotInGroup { group: "g".into() }
    );
    let wait = SagaDefinition::<Trip>::builder("t", 1)
        .group("g", |g| {
            g.read_only("a", ok).sleep("nap", Duration::from_secs(1))
        })
        .build();
    assert_eq!(
        problem(wait),
        StepOrderProblem::NotAGroupMember {
            group: "g".into(),
            what: "sleep"
        }
    );
    let after = SagaDefinition::<Trip>::builder("t", 1)
        .pivot("p", ok)
        .group("g", |g| g.retriable("r", ok))
        .build();
    assert_eq!(
        problem(after),
        StepOrderProblem::GroupAfterPivot { group: "g".into() }
    );
    let empty = SagaDefinition::<Trip>::builder("t", 1)
        .read_only("a", ok)
        .group("g", |g| g)
        .build();
    assert_eq!(
        problem(empty),
        StepOrderProblem::BadGroup { group: "g".into() }
    );
}

/// Two members changing the same top-level data field: whichever finishes
/// second is refused (its effect counts and is compensated), the saga is
/// cancelled with a reason naming both and the field, and everything is
/// compensated, whichever member finishes first.
#[tokio::test]
async fn two_members_changing_one_field_cancel_the_saga_whichever_finishes_first() {
    for first in ["seat_a", "seat_b"] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::default();
        let member = |name: &'static str| {
            let l = ledger.clone();
            move |ctx: StepContext, mut t: Trip| {
                let l = l.clone();
                async move {
                    if name != first {
                        // The other one finishes first.
                        while !l.calls().iter().any(|c| c.ends_with(first)) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    l.note("run", &ctx);
                    t.outbound = Some(name.into());
                    Ok(t)
                }
            }
        };
        let l = ledger.clone();
        let def = SagaDefinition::<Trip>::builder("clash", 1)
            .action(
                "pay",
                move |ctx, mut t: Trip| {
                    l.note("run", &ctx);
                    t.paid = true;
                    async move { Ok(t) }
                },
                undo(&ledger),
            )
            .group("seats", |g| {
                g.action("seat_a", member("seat_a"), undo(&ledger)).action(
                    "seat_b",
                    member("seat_b"),
                    undo(&ledger),
                )
            })
            .build()
            .unwrap();
        let (builder, clash) =
            Engine::builder(SledStore::open(dir.path()).unwrap()).register_typed(def);
        let engine = builder.open().await.unwrap();
        let id = clash.start(&engine, &Trip::default(), None).await.unwrap();
        let out = clash.wait(&engine, &id).await.unwrap();
        assert_eq!(out.status, SagaStatus::Compensated, "{:?}", out.failure);
        let why = out.failure.unwrap_or_default();
        assert!(
            why.contains("seat_a and seat_b") || why.contains("seat_b and seat_a"),
            "{why}"
        );
        assert!(why.contains("field outbound"), "{why}");
        assert_eq!(
            out.data.outbound.as_deref(),
            Some(first),
            "the refused member's data was merged"
        );
        for step in ["seat_a", "seat_b", "pay"] {
            assert_eq!(ledger.count(&format!("undo:{id}:{step}")), 1, "{step}");
        }
        engine.shutdown(Duration::from_secs(1)).await;
    }
}
