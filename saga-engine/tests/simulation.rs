//! Deterministic simulation of the engine under crashes and faulty
//! participants.
//!
//! Each seed is one run on a current-thread tokio runtime with paused time:
//! the engine's clock is a [`saga_engine::TokioClock`], its seed comes from
//! the run's generator, and every other choice (the scenario, flush delays,
//! faults, crash times) is drawn from that one seeded generator, so a seed
//! replays bit for bit (`same_seed_same_run` compares traces; the sweep
//! prints a digest of all of them to compare across processes).
//!
//! - `sim/layer.rs`, `sim/store.rs`: a store shaped like the sled store,
//!   records beside an active index, a key index and a high-water mark,
//!   each store call a sequence of single-entry writes in sled's order.
//!   Writes sit in a volatile layer until a seeded flush makes them durable,
//!   and only then return; a crash discards the volatile layer (and any
//!   flush in flight) except a seeded prefix of the unflushed writes (sled's
//!   own background flush), which may end in the middle of a call. The next
//!   engine opens on the durable layer after sled's damage check, and
//!   resumes what the active index lists (repairing half-done writes).
//! - `sim/participant.rs`: participants that apply an effect once per
//!   idempotency key and keep tombstones for compensated keys, in a ledger
//!   that outlives crashes; they inject retryable errors, rejections, hangs
//!   past the attempt timeout, lost replies, duplicate deliveries, requests
//!   that arrive after their compensation, cancels (during a call and during
//!   a retry wait), and compensations that fail for a while or for good.
//! - `sim/shapes.rs`: besides plain chains, sagas whose steps 1 and 2 run
//!   as a parallel group (members checked against the group's layout, their
//!   data merged), and sagas with a durable signal wait after step 0 (a
//!   400 ms timeout) whose client sends the signal on time, early, twice
//!   (same id, then a fresh id), late or never, across crashes: a signal
//!   reaches the data exactly once, repeats and late ones are refused, an
//!   accepted signal is never followed by a timeout, an unsignalled wait
//!   times out; the sweep requires crashes with a member under way and with
//!   a saga waiting.
//! - `sim/scenario.rs`: 3 to 8 sagas of 2 to 5 steps, clients that start
//!   them (again, after a crash, if unacknowledged; sometimes twice at once)
//!   and play the operator for stuck ones, 0 to 3 kills or graceful
//!   shutdowns at seeded times, writes, or just after an operator retry;
//!   at every open, no saga that is not terminal missing from the active
//!   index; then, once the faults stop, the checks: one saga per request,
//!   every acknowledged start kept, one terminal state each, no effect
//!   applied twice, none left standing by a compensated saga, all standing
//!   for a completed one, stuck only where a compensation was broken for
//!   good, every published event durable.
//!
//! Environment: `SIM_SEED` runs one seed, `SIM_SEEDS` sets how many
//! (default 10,000), `SIM_START` the first; `SIM_TRACE=1` prints the trace
//! of a replayed seed, `SIM_SABOTAGE=<defect>` replays it with one of
//! `checks_bite`'s planted defects. A failure prints its seed and the
//! command that replays it.
//!
//! Two things in the engine no seed controls, which the trace leaves out or
//! steers around: `StepSucceeded::duration_us` is measured with
//! `std::time::Instant` (wall time), and the engine's `tokio::select!`s are
//! not `biased`, so when two branches are ready at once the order comes
//! from tokio's per-runtime random seed. The scenario never lets that
//! happen: cancels come from a task of their own, during a backoff only
//! with the retry timer well away, and a graceful shutdown steps off any
//! tick where a retry timer fires.

mod sim {
    pub mod layer;
    pub mod participant;
    pub mod scenario;
    pub mod shapes;
    pub mod store;
    pub mod world;
}

use sim::scenario::{run_seed, Failure};
use sim::world::{Sabotage, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn replay_command(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test -p saga-engine --test simulation -- replay")
}

/// The failure of `seed`: its violations, the trace leading to the first,
/// and how to replay it.
fn report(seed: u64, f: &Failure) -> String {
    let first = f
        .trace
        .iter()
        .position(|l| l.contains("VIOLATION"))
        .map_or(f.trace.len(), |i| i + 1);
    let excerpt = &f.trace[first.saturating_sub(40)..first];
    // The story of the saga the first violation names (ids are 28 hex digits).
    let saga = f.violations.first().and_then(|v| {
        v.split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() == 28)
    });
    let story: Vec<&str> = saga.map_or_else(Vec::new, |id| {
        f.trace
            .iter()
            .filter(|l| l.contains(id))
            .take(80)
            .map(String::as_str)
            .collect()
    });
    format!(
        "simulation seed {seed} failed: {}\n  replay: {}\n  (with SIM_TRACE=1 and -- --nocapture it prints the whole trace)\n  violations:\n    {}\n  trace up to the first violation (virtual ms):\n    {}",
        f.reason,
        replay_command(seed),
        f.violations.iter().take(10).cloned().collect::<Vec<_>>().join("\n    "),
        excerpt.join("\n    ")
    ) + &if story.is_empty() {
        String::new()
    } else {
        format!(
            "\n  every trace line about saga {}:\n    {}",
            saga.unwrap_or_default(),
            story.join("\n    ")
        )
    }
}

/// Runs one seed, turning a panic in the run into a failure.
fn run_caught(seed: u64, sabotage: Sabotage) -> Result<sim::scenario::Run, Failure> {
    std::panic::catch_unwind(|| run_seed(seed, sabotage)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(Failure {
            reason: format!("panicked: {msg}"),
            violations: vec![format!("panicked: {msg}")],
            trace: Vec::new(),
        })
    })
}

/// Runs `seeds` across one thread per core (each seed on its own runtime,
/// so the split does not touch determinism). Returns the summed stats and
/// the failures that `counts`, lowest seed first; stops early after one.
fn sweep(
    seeds: std::ops::Range<u64>,
    sabotage: Sabotage,
    counts: &(dyn Fn(&Failure) -> bool + Sync),
) -> (Stats, Vec<(u64, Failure)>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    let stats = Mutex::new(Stats::default());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    match run_caught(seed, sabotage) {
                        Ok(run) => mine.add(&run.stats),
                        Err(f) if counts(&f) => {
                            stop.store(true, Ordering::Relaxed);
                            failures.lock().unwrap().push((seed, f));
                        }
                        Err(_) => {}
                    }
                }
                stats.lock().unwrap().add(&mine);
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    (stats.into_inner().unwrap(), failures)
}

/// The seed sweep CI runs: `SIM_SEEDS` seeds from `SIM_START` (or just
/// `SIM_SEED`), every invariant checked after each.
#[test]
fn seeds() {
    let range = match env_u64("SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let start = env_u64("SIM_START").unwrap_or(0);
            let seeds = env_u64("SIM_SEEDS").unwrap_or(10_000);
            // A knob may lengthen the sweep, never shrink it to nothing.
            assert!(
                seeds >= 1_000,
                "SIM_SEEDS={seeds}: at least 1,000 seeds (SIM_SEED=N runs one seed on purpose)"
            );
            start..start + seeds
        }
    };
    let began = Instant::now();
    let (stats, failures) = sweep(range.clone(), Sabotage::None, &|_| true);
    println!(
        "simulated seeds {range:?} in {:.1} s (trace digest {:016x}): {stats:?}",
        began.elapsed().as_secs_f64(),
        stats.digest
    );
    if let Some((seed, f)) = failures.first() {
        panic!("{}", report(*seed, f));
    }
    assert_eq!(stats.seeds, range.end - range.start, "every seed ran");
    if stats.seeds >= 1_000 {
        // The faults must actually happen, or the sweep proves little.
        for (what, n) in [
            ("crash", stats.crashes),
            ("crash losing unflushed writes", stats.crashes_mid_flush),
            ("crash keeping unflushed writes", stats.writes_kept),
            (
                "crash in the middle of a store call",
                stats.crashes_mid_call,
            ),
            ("index repair at open", stats.index_repairs),
            (
                "crash with an operator-retried saga unfinished",
                stats.crashes_after_retry,
            ),
            ("completed saga", stats.completed),
            ("compensated saga", stats.compensated),
            ("stuck saga", stats.stuck),
            ("acknowledged cancel", stats.cancels_acked),
            ("lost reply", stats.lost_replies),
            ("attempt timeout", stats.timeouts),
            ("duplicate delivery", stats.duplicates),
            (
                "late delivery refused after compensation",
                stats.late_refused,
            ),
            ("rejection", stats.rejections),
            ("failed compensation", stats.comp_failures),
            ("saga with a parallel group", stats.groups),
            ("saga with a signal wait", stats.waits),
            ("signal answered", stats.signals),
            ("late signal refused", stats.signals_late_refused),
            ("wait timed out", stats.waits_timed_out),
            (
                "crash with a group member under way",
                stats.crashes_in_group,
            ),
            ("crash with a saga waiting", stats.crashes_in_wait),
        ] {
            assert!(n > 0, "no {what} in {} seeds", stats.seeds);
        }
    }
}

/// Replays one seed (`SIM_SEED`, default 0) and prints its trace with
/// `SIM_TRACE=1`; `SIM_SABOTAGE=StuckLeavesIndex` (any [`Sabotage`]
/// variant) replays it with that defect planted.
#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let sabotage = std::env::var("SIM_SABOTAGE").map_or(Sabotage::None, |v| {
        Sabotage::named(&v).unwrap_or_else(|| panic!("SIM_SABOTAGE={v:?}: no such defect"))
    });
    let result = run_caught(seed, sabotage);
    if std::env::var("SIM_TRACE").is_ok_and(|v| v == "1") {
        let trace = match &result {
            Ok(r) => &r.trace,
            Err(f) => &f.trace,
        };
        for line in trace {
            println!("{line}");
        }
    }
    match result {
        Ok(run) => println!("seed {seed} passed: {:?}", run.stats),
        Err(f) => panic!("{}", report(seed, &f)),
    }
}

/// The same seed gives the same run, event for event.
#[test]
fn same_seed_same_run() {
    let seeds = env_u64("SIM_SEED").map_or(0..200, |s| s..s + 1);
    for seed in seeds {
        let a = run_caught(seed, Sabotage::None);
        let b = run_caught(seed, Sabotage::None);
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a.trace, b.trace),
            (Err(f), _) | (_, Err(f)) => panic!("{}", report(seed, &f)),
        };
        if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            panic!(
                "seed {seed} diverged at trace line {i}:\n  first:  {:?}\n  second: {:?}\n  replay: {}",
                a.get(i),
                b.get(i),
                replay_command(seed)
            );
        }
        assert!(a.len() > 10, "seed {seed} traced almost nothing");
    }
}

/// The simulated store keeps the contract every backend keeps.
#[test]
fn sim_store_conforms() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let world = std::sync::Arc::new(sim::world::World::new(0, Sabotage::None));
        saga_engine::store::conformance::run_all(|| {
            let store = sim::store::SimStore::new(world.clone()).process();
            async move { store }
        })
        .await;
    });
}

/// The simulated store's indexes behave as the sled store's: the
/// half-done states a crash can leave are repaired by `list_active` (as
/// `sled_store.rs`'s own unit tests build them by hand), and a stuck saga
/// retried by an operator gets its active entry back.
#[test]
fn sim_store_repairs_like_sled() {
    use saga_engine::store::conformance::sample_record;
    use saga_engine::store::{CreateOutcome, Store};
    use saga_engine::SagaStatus;
    use sim::layer::Layer;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let world = std::sync::Arc::new(sim::world::World::new(0, Sabotage::None));
        // A create that died after its active entry and record, before its
        // key; an entry whose record was never written; an entry of a
        // terminal saga (an update that died before removing it); a live one.
        let orphan = sample_record("orphan", Some("k1"));
        let mut done = sample_record("done", Some("k2"));
        done.state.status = SagaStatus::Compensated;
        let live = sample_record("live", Some("k3"));
        let mut layer = Layer::default();
        for r in [&orphan, &done, &live] {
            layer.records.insert(r.id.clone(), r.clone());
            layer.active.insert(r.id.clone());
        }
        layer
            .active
            .insert(saga_engine::SagaId::from_raw("missing".into()));
        layer.keys.insert("k2".into(), done.id.clone());
        layer.keys.insert("k3".into(), live.id.clone());
        let store = sim::store::SimStore::on_layer(world.clone(), layer);
        assert_eq!(
            store.list(None, 10).await.unwrap().len(),
            2,
            "an unacknowledged record is no saga"
        );
        let active = store.list_active().await.unwrap();
        assert_eq!(active, vec![live.clone()]);
        let (durable, settled) = store.durable();
        assert!(settled, "the repairs were flushed");
        assert_eq!(
            durable
                .active
                .iter()
                .map(|id| id.as_str())
                .collect::<Vec<_>>(),
            ["live"]
        );
        assert!(!durable.records.contains_key(&orphan.id), "orphan removed");
        assert_eq!(store.find_by_key("k1").await.unwrap(), None);
        let again = sample_record("second", Some("k1"));
        assert_eq!(
            store.create(&again, &[]).await.unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store.find_by_key("k1").await.unwrap(),
            Some(again.id.clone())
        );
        assert!(store.open_check().is_ok());

        // Stuck (out of the index), then retried: back in it before the
        // record says compensating.
        let mut rec = live.clone();
        for status in [SagaStatus::Stuck, SagaStatus::Compensating] {
            rec.revision += 1;
            rec.state.status = status;
            store.update(&rec, &[]).await.unwrap();
            let in_index = store.durable().0.active.contains(&rec.id);
            assert_eq!(in_index, status == SagaStatus::Compensating, "{status}");
        }
        assert!(store.index_problems().is_empty());
        let ids: Vec<_> = store
            .list_active()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert!(ids.contains(&rec.id), "a retried saga is resumed at open");
    });
}

/// Whether violation `v` is one that `sabotage` should cause.
fn caused_by(sabotage: Sabotage, v: &str) -> bool {
    match sabotage {
        // Lost acknowledged writes: a start, or a step's intent (whose
        // effect then is never compensated).
        Sabotage::FlushLosesWrites | Sabotage::AckBeforeFlush => {
            v.contains("damaged at open")
                || v.contains("no saga in the store")
                || v.contains("still stands")
                || v.contains("acknowledged")
                || v.contains("not found")
        }
        Sabotage::NotIdempotent => v.contains("applied 2 times"),
        Sabotage::NoTombstones => v.contains("still stands") || v.contains("applied 2 times"),
        // An operator-retried saga that a restart does not resume: its
        // client's wait finds no worker running it, and it never ends.
        // (The index check at open sees it too: `index_check_bites`.)
        Sabotage::StuckLeavesIndex => {
            (v.contains("wait failed") && v.contains("no worker runs it"))
                || v.contains("ended compensating")
        }
        // A member's success lost at a crash: the member looks never
        // started, so the group is compensated without it.
        Sabotage::GroupMemberForgotten => v.contains("still stands"),
        // A waiting saga the index forgets: the open after a crash misses
        // it (the index check sees it; its client waits forever).
        Sabotage::WaitLeavesIndex => {
            v.contains("no active index entry") || v.contains("still running")
        }
        Sabotage::None => false,
    }
}

/// The checks catch real mistakes: each deliberate defect makes some seed
/// fail, and for the reason the defect implies (not merely because the
/// defect left the store untidy).
#[test]
fn checks_bite() {
    for sabotage in Sabotage::ALL {
        let (_, failures) = sweep(0..2_000, sabotage, &|f| {
            f.violations.iter().any(|v| caused_by(sabotage, v))
        });
        let (seed, f) = failures
            .first()
            .unwrap_or_else(|| panic!("{sabotage:?}: 2,000 seeds and no check noticed"));
        let v = f
            .violations
            .iter()
            .find(|v| caused_by(sabotage, v))
            .expect("matched");
        println!("{sabotage:?} caught by seed {seed}: {v}");
    }
}

/// A saga that is not terminal but has no active index entry is reported,
/// at the open that would miss it and at the end: directly, on a layer
/// built by hand, and in the runs where the planted index defect makes one.
#[test]
fn index_check_bites() {
    use saga_engine::store::conformance::sample_record;
    let mut layer = sim::layer::Layer::default();
    let mut rec = sample_record("retried", Some("k"));
    rec.state.status = saga_engine::SagaStatus::Compensating;
    layer.records.insert(rec.id.clone(), rec.clone());
    layer.keys.insert("k".into(), rec.id.clone());
    let problems = sim::layer::index_problems(&layer);
    assert!(
        problems.len() == 1 && problems[0].contains("no active index entry"),
        "{problems:?}"
    );
    layer.active.insert(rec.id.clone());
    assert!(sim::layer::index_problems(&layer).is_empty());

    let sabotage = Sabotage::StuckLeavesIndex;
    let (_, failures) = sweep(0..2_000, sabotage, &|f| {
        f.violations
            .iter()
            .any(|v| v.starts_with("at open:") && v.contains("no active index entry"))
    });
    let (seed, f) = failures.first().unwrap_or_else(|| {
        panic!("{sabotage:?}: 2,000 seeds and the index check at open never fired")
    });
    println!(
        "{sabotage:?} seen in the index at open by seed {seed}: {}",
        f.violations[0]
    );
}
