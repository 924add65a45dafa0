//! `saga_engine::testing::simulate` on a saga with attempt timeouts and
//! signal waits: a hold of two seats as a parallel group, the bank's
//! confirmation of the outbound and of the return payment as two signal
//! waits, and a pivot capture. The tool makes calls outlive their attempt
//! timeout (landing later, perhaps after compensation) and sends each
//! wait's signal on time, early, twice (same id, fresh id), late or never,
//! across crashes. The correct saga passes every seed; two planted
//! defects are caught, each by one of those faults:
//!
//! - a participant that keeps no tombstone for a compensated key: a call
//!   that outlived its timeout lands after the compensation and leaves a
//!   seat held by a compensated saga;
//! - both waits listening to one signal name: a sender's retry under a
//!   fresh id confirms the return payment with the outbound's message.

use saga_engine::testing::{simulate, SimOptions, SimTarget};
use saga_engine::{RetryPolicy, SagaDefinition, SagaRecord, SagaStatus, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Trip {
    passenger: String,
    /// Confirmations received, as (wait, which payment they confirm).
    confirmations: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Defect {
    None,
    NoTombstones,
    SharedSignalName,
}

#[derive(Default)]
struct Participant {
    applied: HashMap<String, u32>,
    standing: HashMap<String, bool>,
    undone: HashSet<String>,
}

struct Target {
    defect: Defect,
    world: Arc<Mutex<Participant>>,
}

type RunFn =
    Box<dyn Fn(StepContext, Trip) -> std::future::Ready<Result<Trip, StepError>> + Send + Sync>;

fn run_fn(world: Arc<Mutex<Participant>>, tombstones: bool) -> RunFn {
    Box::new(move |ctx, t| {
        let mut w = world.lock().unwrap();
        let key = ctx.idempotency_key.clone();
        if tombstones && w.undone.contains(&key) {
            return std::future::ready(Ok(t));
        }
        if w.standing.get(&key).copied().unwrap_or(false) {
            return std::future::ready(Ok(t));
        }
        *w.applied.entry(key.clone()).or_insert(0) += 1;
        w.standing.insert(key, true);
        std::future::ready(Ok(t))
    })
}

fn undo_fn(
    world: Arc<Mutex<Participant>>,
) -> impl Fn(StepContext, Trip) -> std::future::Ready<Result<(), StepError>> + Send + Sync + 'static
{
    move |ctx, _t| {
        let mut w = world.lock().unwrap();
        w.standing.insert(ctx.idempotency_key.clone(), false);
        w.undone.insert(ctx.idempotency_key.clone());
        std::future::ready(Ok(()))
    }
}

const WAITS: [&str; 2] = ["confirm_outbound_payment", "confirm_return_payment"];

impl SimTarget for Target {
    type Data = Trip;

    fn definition(&self) -> SagaDefinition<Trip> {
        let w = &self.world;
        let tombstones = self.defect != Defect::NoTombstones;
        let timed = RetryPolicy::default()
            .max_attempts(6)
            .attempt_timeout(Some(Duration::from_secs(2)));
        let signal = |i: usize| match self.defect {
            Defect::SharedSignalName => "bank_confirmation".to_string(),
            _ => format!("bank_confirmation_{i}"),
        };
        let deliver = |wait: &'static str| {
            move |t: &mut Trip, for_payment: String| {
                t.confirmations.push((wait.to_string(), for_payment))
            }
        };
        SagaDefinition::<Trip>::builder("trip", 1)
            .default_retry(timed)
            .group("seats", |g| {
                g.action(
                    "reserve_seat_outbound",
                    run_fn(w.clone(), tombstones),
                    undo_fn(w.clone()),
                )
                .action(
                    "reserve_seat_return",
                    run_fn(w.clone(), tombstones),
                    undo_fn(w.clone()),
                )
            })
            .wait_for(
                WAITS[0],
                signal(0),
                Duration::from_secs(60),
                deliver(WAITS[0]),
            )
            .wait_for(
                WAITS[1],
                signal(1),
                Duration::from_secs(60),
                deliver(WAITS[1]),
            )
            .pivot("capture", run_fn(w.clone(), true))
            .build()
            .unwrap()
    }

    fn input(&self, n: usize) -> Trip {
        Trip {
            passenger: format!("p{n}"),
            confirmations: Vec::new(),
        }
    }

    /// Each wait's signal says which payment it confirms.
    fn signal(&self, _n: usize, step: &str) -> Option<serde_json::Value> {
        Some(serde_json::json!(step))
    }

    fn check(&self, rec: &SagaRecord) -> Result<(), String> {
        let w = self.world.lock().unwrap();
        for s in &rec.state.steps {
            let key = format!("{}:{}", rec.id, s.name);
            let standing = w.standing.get(&key).copied().unwrap_or(false);
            if rec.status() == SagaStatus::Compensated && s.name.starts_with("reserve") && standing
            {
                return Err(format!("{} still held after compensation", s.name));
            }
            let applied = w.applied.get(&key).copied().unwrap_or(0);
            if applied > 1 {
                return Err(format!("{} applied {applied} times", s.name));
            }
        }
        let trip: Trip = rec.data_as().map_err(|e| e.to_string())?;
        for (wait, confirms) in &trip.confirmations {
            if wait != confirms {
                return Err(format!("{wait} took the confirmation meant for {confirms}"));
            }
        }
        if rec.status() == SagaStatus::Completed && trip.confirmations.len() != WAITS.len() {
            return Err(format!(
                "completed with confirmations {:?}",
                trip.confirmations
            ));
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

const SEEDS: u64 = 200;

#[test]
fn the_correct_saga_passes_with_timeouts_and_late_or_duplicate_signals() {
    let report = simulate(target(Defect::None), 0..SEEDS, &SimOptions::default());
    println!("{report:?}");
    report.assert_passed();
    assert!(
        report.timeouts > SEEDS / 10,
        "timeouts injected: {}",
        report.timeouts
    );
    assert!(
        report.signals > SEEDS * 5,
        "signals answered: {}",
        report.signals
    );
    assert!(
        report.crashes > SEEDS / 3,
        "crashes injected: {}",
        report.crashes
    );
    assert!(report.completed > 0 && report.compensated > 0);
}

#[test]
fn a_participant_without_tombstones_is_caught_by_calls_that_outlive_their_timeout() {
    caught(Defect::NoTombstones, &["still held after compensation"]);
}

#[test]
fn two_waits_on_one_signal_name_are_caught_by_a_retried_signal() {
    // The user's check (one wait took the other's message) or the tool's
    // (a wait timed out although its signal was accepted: the other wait
    // took it).
    caught(
        Defect::SharedSignalName,
        &[
            "took the confirmation meant for",
            "timed out after its signal was accepted",
        ],
    );
}

fn caught(defect: Defect, says: &[&str]) {
    let report = simulate(target(defect), 0..SEEDS, &SimOptions::default());
    assert!(!report.passed(), "{defect:?} not caught in {SEEDS} seeds");
    let first = &report.failures[0];
    println!(
        "{defect:?}: {} of {SEEDS} seeds fail, first {} ({})",
        report.failures.len(),
        first.seed,
        first.violation
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| says.iter().any(|s| f.violation.contains(s))),
        "{defect:?}: expected a failure saying {says:?}, got {:?}",
        report.failures
    );
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
