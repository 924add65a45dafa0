//! `saga_engine::testing::simulate` pointed at a user's saga (a round trip:
//! two seats as a parallel group, a pivot capture, a retriable email): the
//! correct saga passes every seed, and three planted defects are each
//! caught: a participant that is not idempotent, a compensation that
//! forgets its effect, and a compensatable step after the pivot declared
//! through the unchecked builder.

use saga_engine::testing::{simulate, SimOptions, SimTarget};
use saga_engine::{SagaDefinition, SagaRecord, SagaStatus, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Trip {
    passenger: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Defect {
    None,
    NotIdempotent,
    ForgetfulCompensation,
    CompensatableAfterPivot,
}

/// A participant: effects by idempotency key (how many times applied),
/// and tombstones for keys compensated (a late call then does nothing).
#[derive(Default)]
struct Participant {
    applied: HashMap<String, u32>,
    standing: HashMap<String, bool>,
    undone: std::collections::HashSet<String>,
}

struct Target {
    defect: Defect,
    world: Arc<Mutex<Participant>>,
}

fn run_fn(
    world: Arc<Mutex<Participant>>,
    idempotent: bool,
) -> impl Fn(StepContext, Trip) -> std::future::Ready<Result<Trip, StepError>> + Send + Sync + 'static
{
    move |ctx, t| {
        let mut w = world.lock().unwrap();
        let key = ctx.idempotency_key.clone();
        if w.undone.contains(&key) {
            return std::future::ready(Ok(t));
        }
        if idempotent && w.standing.get(&key).copied().unwrap_or(false) {
            return std::future::ready(Ok(t));
        }
        *w.applied.entry(key.clone()).or_insert(0) += 1;
        w.standing.insert(key, true);
        std::future::ready(Ok(t))
    }
}

fn undo_fn(
    world: Arc<Mutex<Participant>>,
    forget: bool,
) -> impl Fn(StepContext, Trip) -> std::future::Ready<Result<(), StepError>> + Send + Sync + 'static
{
    move |ctx, _t| {
        if !forget {
            let mut w = world.lock().unwrap();
            w.standing.insert(ctx.idempotency_key.clone(), false);
            w.undone.insert(ctx.idempotency_key.clone());
        }
        std::future::ready(Ok(()))
    }
}

impl SimTarget for Target {
    type Data = Trip;

    fn definition(&self) -> SagaDefinition<Trip> {
        let w = &self.world;
        let idempotent = self.defect != Defect::NotIdempotent;
        let forget = self.defect == Defect::ForgetfulCompensation;
        let b = SagaDefinition::<Trip>::builder("round_trip", 1)
            .group("seats", |g| {
                g.action(
                    "reserve_seat_outbound",
                    run_fn(w.clone(), idempotent),
                    undo_fn(w.clone(), false),
                )
                .action(
                    "reserve_seat_return",
                    run_fn(w.clone(), true),
                    undo_fn(w.clone(), forget),
                )
            })
            .pivot("capture", run_fn(w.clone(), true));
        if self.defect == Defect::CompensatableAfterPivot {
            b.action(
                "award_miles",
                run_fn(w.clone(), true),
                undo_fn(w.clone(), false),
            )
            .build_unchecked()
        } else {
            b.retriable("email_itinerary", run_fn(w.clone(), true))
                .build()
                .unwrap()
        }
    }

    fn input(&self, n: usize) -> Trip {
        Trip {
            passenger: format!("p{n}"),
        }
    }

    fn check(&self, rec: &SagaRecord) -> Result<(), String> {
        let w = self.world.lock().unwrap();
        for s in &rec.state.steps {
            let key = format!("{}:{}", rec.id, s.name);
            let applied = w.applied.get(&key).copied().unwrap_or(0);
            if applied > 1 {
                return Err(format!("{} applied {applied} times", s.name));
            }
            let standing = w.standing.get(&key).copied().unwrap_or(false);
            let undoable = s.name.starts_with("reserve");
            if rec.status() == SagaStatus::Compensated && undoable && standing {
                return Err(format!("{} still standing after compensation", s.name));
            }
            if rec.status() == SagaStatus::Completed && !standing {
                return Err(format!("{} not standing in a completed saga", s.name));
            }
        }
        Ok(())
    }
}

fn target(defect: Defect) -> impl Fn(u64) -> Target {
    move |_seed| Target {
        defect,
        world: Arc::default(),
    }
}

#[test]
fn the_correct_saga_passes_every_seed_with_crashes_and_faults() {
    let report = simulate(target(Defect::None), 0..300, &SimOptions::default());
    println!("{report:?}");
    report.assert_passed();
    assert!(
        report.crashes > 100,
        "crashes were injected: {}",
        report.crashes
    );
    assert!(
        report.faults > 100,
        "faults were injected: {}",
        report.faults
    );
    assert!(report.completed > 0 && report.compensated > 0);
}

#[test]
fn each_planted_defect_is_caught_with_its_seed() {
    for defect in [
        Defect::NotIdempotent,
        Defect::ForgetfulCompensation,
        Defect::CompensatableAfterPivot,
    ] {
        let report = simulate(target(defect), 0..300, &SimOptions::default());
        assert!(
            !report.passed(),
            "{defect:?} not caught in {} seeds",
            report.seeds
        );
        let first = &report.failures[0];
        println!(
            "{defect:?}: {} failing seeds, first {} ({})",
            report.failures.len(),
            first.seed,
            first.violation
        );
        // The failing seed replays on its own.
        let again = simulate(
            target(defect),
            first.seed..first.seed + 1,
            &SimOptions::default(),
        );
        assert_eq!(
            again.failures.first(),
            Some(first),
            "seed {} replays",
            first.seed
        );
    }
}
