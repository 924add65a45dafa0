//! Deterministic simulation of a user's own saga: [`simulate`] runs many
//! seeds of a [`SimTarget`] on a virtual clock (tokio's paused time), each
//! seed a few sagas through engines that crash at a seeded durable write
//! (just before or just after it) and reopen on the same store, with
//! faults injected at participant calls (a call lost before its effect, a
//! reply lost after it, a duplicate delivery, a rejection, a call that
//! outlives its attempt timeout and lands later; compensations lost or
//! delivered twice) and, for the signal waits the target gives a payload
//! for, signals sent on time, early, twice (same id, and a fresh id),
//! late or never, across the crashes. Clients retry unacknowledged starts
//! under the same idempotency key. Once the faults stop, it checks the
//! promises (a late signal refused, a repeated one changing nothing, no
//! timeout after an accepted signal, besides those below):
//! every acknowledged start kept, one terminal state each (exactly one
//! `saga_finished` event), completed sagas with every step succeeded,
//! compensation newest first and never after the pivot succeeded, and the
//! target's own check (typically: each participant's effects applied once
//! per key, none left standing by a compensated saga). A failing seed is
//! reported with the range that replays it.
//!
//! This is a smaller tool than the engine's internal simulation
//! (`saga-engine/tests/sim`), whose store also models sled's unflushed
//! writes and torn calls; it is aimed at a user's definition, not at the
//! engine.

mod faults;
mod signals;

use crate::clock::TokioClock;
use crate::definition::SagaDefinition;
use crate::engine::Engine;
use crate::events::EventKind;
use crate::machine::{SagaStatus, StepClass, StepKind, StepState};
use crate::store::{MemoryStore, SagaRecord, Store};
use crate::SagaId;
use faults::{CrashStore, Faulty, Injected};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the simulation runs: a user's saga, fresh for each seed.
pub trait SimTarget: Send + Sync + 'static {
    /// The saga's data.
    type Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The definition, built over this target's participants. Called again
    /// at every (re)open of the simulated process: it must share the
    /// participants' state (an `Arc` the target holds), which outlives
    /// the process as a real participant would.
    fn definition(&self) -> SagaDefinition<Self::Data>;

    /// The input of the `n`th saga of a seed.
    fn input(&self, n: usize) -> Self::Data;

    /// The target's own promises about a finished saga (e.g. every effect
    /// applied once per idempotency key; none standing if it compensated).
    fn check(&self, record: &SagaRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// The payload the `n`th saga's signal wait `step` is to receive, as
    /// JSON of the wait's payload type; `None` (the default): the
    /// simulation sends it nothing (the wait times out).
    fn signal(&self, n: usize, step: &str) -> Option<serde_json::Value> {
        let _ = (n, step);
        None
    }
}

/// How hard to push each seed.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Sagas started per seed.
    pub sagas: usize,
    /// At most this many crashes per seed (seeded, 0 to this).
    pub max_crashes: u32,
    /// Probability that a participant call is disturbed.
    pub fault_rate: f64,
    /// Virtual time every saga must finish within once faults stop.
    pub settle: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            sagas: 4,
            max_crashes: 2,
            fault_rate: 0.2,
            settle: Duration::from_secs(3_600),
        }
    }
}

/// One seed that broke a promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFailure {
    /// The seed: `simulate(target, seed..seed + 1, options)` replays it.
    pub seed: u64,
    /// What went wrong (the first violation).
    pub violation: String,
}

/// What [`simulate`] saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Seeds run.
    pub seeds: u64,
    /// Sagas by final status.
    pub completed: u64,
    /// Sagas that compensated.
    pub compensated: u64,
    /// Sagas parked for an operator (a compensation or a step past the
    /// pivot failing past its policy): not a violation by itself.
    pub stuck: u64,
    /// Simulated crashes.
    pub crashes: u64,
    /// Participant calls, and how many of them were disturbed.
    pub calls: u64,
    /// Disturbed participant calls.
    pub faults: u64,
    /// Of those, calls that outlived their attempt timeout (and reached
    /// the participant later).
    pub timeouts: u64,
    /// Signals the engine answered (accepted, kept, duplicate or refused).
    pub signals: u64,
    /// Seeds that broke a promise.
    pub failures: Vec<SeedFailure>,
}

impl Report {
    /// True when no seed broke a promise.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics with the first failing seed and how to replay it.
    pub fn assert_passed(&self) {
        if let Some(f) = self.failures.first() {
            panic!(
                "simulation: {} of {} seeds failed; first: seed {}: {}\nreplay: simulate(target, {}..{}, options)",
                self.failures.len(),
                self.seeds,
                f.seed,
                f.violation,
                f.seed,
                f.seed + 1
            );
        }
    }
}

/// Runs `seeds` of the target `make(seed)` and checks the promises (see
/// the module docs). Each seed runs on its own current-thread runtime
/// with paused time; call it from synchronous code (a plain `#[test]`).
pub fn simulate<T, F>(make: F, seeds: Range<u64>, options: &SimOptions) -> Report
where
    T: SimTarget,
    F: Fn(u64) -> T,
{
    let mut report = Report::default();
    for seed in seeds {
        report.seeds += 1;
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                report.failures.push(SeedFailure {
                    seed,
                    violation: format!("no runtime: {e}"),
                });
                continue;
            }
        };
        let target = Arc::new(make(seed));
        if let Err(violation) = rt.block_on(run_seed(target, seed, options, &mut report)) {
            report.failures.push(SeedFailure { seed, violation });
        }
    }
    report
}

/// The target's definition with every action's calls disturbed.
fn disturbed<T: SimTarget>(
    target: &T,
    rng: &Arc<Mutex<StdRng>>,
    injected: &Arc<Injected>,
    rate: f64,
) -> SagaDefinition<T::Data> {
    let mut def = target.definition();
    for s in &mut def.steps {
        if s.policy.kind != StepKind::Action {
            continue;
        }
        s.step = Arc::new(Faulty {
            inner: s.step.clone(),
            rng: rng.clone(),
            injected: injected.clone(),
            may_reject: s.policy.class != StepClass::Retriable,
            rate,
            timeout: s.policy.forward.attempt_timeout,
        });
    }
    def
}

async fn run_seed<T: SimTarget>(
    target: Arc<T>,
    seed: u64,
    options: &SimOptions,
    report: &mut Report,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let calls_rng = Arc::new(Mutex::new(StdRng::seed_from_u64(rng.gen())));
    let injected = Arc::new(Injected::default());
    let durable = Arc::new(MemoryStore::new());
    let clock = Arc::new(TokioClock::new(1_700_000_000_000));
    let crashes = rng.gen_range(0..=options.max_crashes);
    let keys: Vec<String> = (0..options.sagas)
        .map(|n| format!("sim-{seed}-{n}"))
        .collect();
    let mut acked: Vec<Option<SagaId>> = vec![None; options.sagas];
    let senders = {
        let def = target.definition();
        let kinds: Vec<StepKind> = def.steps.iter().map(|s| s.policy.kind.clone()).collect();
        let names: Vec<String> = def.steps.iter().map(|s| s.name.clone()).collect();
        let plans = signals::plan(
            &kinds,
            &names,
            options.sagas,
            |n, step| target.signal(n, step),
            &mut rng,
        );
        Arc::new(Mutex::new(plans))
    };
    let senders_done = |acked: &[Option<SagaId>]| {
        let s = senders.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().all(|x| x.done() || acked[x.n].is_none())
    };
    for round in 0..=crashes {
        let last = round == crashes;
        let crashed = Arc::new(AtomicBool::new(false));
        let store = CrashStore {
            inner: durable.clone(),
            writes: AtomicU64::new(0),
            crash_at: (!last).then(|| rng.gen_range(1..=(8 * options.sagas as u64).max(2))),
            after: rng.gen(),
            crashed: crashed.clone(),
        };
        let def = disturbed(
            &*target,
            &calls_rng,
            &injected,
            if last { 0.0 } else { options.fault_rate },
        );
        let def_name = def.name.clone();
        let engine = Engine::builder(store)
            .clock(clock.clone())
            .seed(rng.gen())
            .register(def)
            .open()
            .await;
        let engine = match engine {
            Ok(e) => e,
            Err(_) if crashed.load(Ordering::SeqCst) => {
                report.crashes += 1;
                continue;
            }
            Err(e) => return Err(format!("the engine did not open: {e}")),
        };
        // Clients start (again, under the same key) what is not acknowledged.
        for (n, key) in keys.iter().enumerate() {
            if acked[n].is_some() {
                continue;
            }
            if let Ok(id) = engine.start(&def_name, &target.input(n), Some(key)).await {
                acked[n] = Some(id);
            }
        }
        // Senders go on with the signals not yet answered.
        let pending: Vec<usize> = {
            let s = senders.lock().unwrap_or_else(|e| e.into_inner());
            (0..s.len())
                .filter(|&i| !s[i].done() && acked[s[i].n].is_some())
                .collect()
        };
        for i in pending {
            let n = senders.lock().unwrap_or_else(|e| e.into_inner())[i].n;
            let (Some(id), key) = (acked[n].clone(), keys[n].clone()) else {
                continue;
            };
            tokio::spawn(signals::drive(
                engine.clone(),
                durable.clone(),
                senders.clone(),
                i,
                id,
                key,
            ));
        }
        let limit = tokio::time::Instant::now() + options.settle;
        loop {
            if crashed.load(Ordering::SeqCst) {
                report.crashes += 1;
                break;
            }
            let mut done = true;
            for id in acked.iter().flatten() {
                let rec = durable.get(id).await.map_err(|e| e.to_string())?;
                if !rec.is_some_and(|r| r.status().is_terminal()) {
                    done = false;
                }
            }
            if done && senders_done(&acked) && (last || acked.iter().all(Option::is_some)) {
                break;
            }
            if tokio::time::Instant::now() >= limit {
                if last {
                    return Err(format!(
                        "sagas not finished within {:?} of virtual time after the faults stopped",
                        options.settle
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        engine.shutdown(Duration::ZERO).await;
    }
    // Calls that outlived their timeout reach the participant before the
    // effects are judged.
    while injected.late_pending.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.calls += injected.calls.load(Ordering::Relaxed);
    report.faults += injected.faults.load(Ordering::Relaxed);
    report.timeouts += injected.timeouts.load(Ordering::Relaxed);
    let senders = senders.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.signals += senders.iter().map(|s| s.answers_len() as u64).sum::<u64>();
    let def = target.definition();
    for (n, id) in acked.iter().enumerate() {
        let Some(id) = id else {
            return Err(format!("saga {n}'s start was never acknowledged"));
        };
        let rec = durable
            .get(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("acknowledged saga {id} lost"))?;
        let history = durable.history(id).await.map_err(|e| e.to_string())?;
        check_saga(&def, &rec, &history).map_err(|e| format!("saga {id}: {e}"))?;
        let mine: Vec<signals::Sender> = senders.iter().filter(|s| s.n == n).cloned().collect();
        signals::check(&mine, &rec).map_err(|e| format!("saga {id}: {e}"))?;
        target.check(&rec).map_err(|e| format!("saga {id}: {e}"))?;
        match rec.status() {
            SagaStatus::Completed => report.completed += 1,
            SagaStatus::Compensated => report.compensated += 1,
            _ => report.stuck += 1,
        }
    }
    Ok(())
}

/// The engine's promises about one finished saga, from its record and history.
fn check_saga<D>(
    def: &SagaDefinition<D>,
    rec: &SagaRecord,
    history: &[crate::events::SagaEvent],
) -> Result<(), String> {
    let status = rec.status();
    if !status.is_terminal() {
        return Err(format!("not terminal: {status}"));
    }
    let finished = history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SagaFinished { .. }))
        .count();
    if finished != 1 {
        return Err(format!("{finished} saga_finished events"));
    }
    let index = |name: &str| def.steps.iter().position(|s| s.name == name);
    let pivot = def
        .steps
        .iter()
        .position(|s| s.policy.class == StepClass::Pivot);
    let mut pivot_done = false;
    let mut last_undone: Option<usize> = None;
    for e in history {
        match &e.kind {
            EventKind::StepSucceeded { step, .. } if index(step) == pivot && pivot.is_some() => {
                pivot_done = true
            }
            EventKind::CompensationStarted { step, .. } if pivot_done => {
                return Err(format!("{step} compensated after the pivot succeeded"));
            }
            EventKind::StepCompensated { step, .. } => {
                let i = index(step).ok_or_else(|| format!("unknown step {step}"))?;
                if last_undone.is_some_and(|l| i >= l) {
                    return Err(format!("compensation out of order at {step}"));
                }
                last_undone = Some(i);
            }
            _ => {}
        }
    }
    if status == SagaStatus::Completed
        && rec
            .state
            .steps
            .iter()
            .any(|s| s.state != StepState::Succeeded)
    {
        return Err("completed with a step that did not succeed".into());
    }
    Ok(())
}
