//! One seeded run: engines that open, work, crash and reopen on one
//! simulated store, clients that start sagas and wait for them, and the
//! checks once the faults stop.

use super::layer::{index_problems, Layer};
use super::participant::{step_name, SimData, SimStep};
use super::shapes::{check_wait, sender, Shape, SignalPlan, SIGNAL, WAIT_AT, WAIT_MS};
use super::store::{fmt_event, SimStore};
use super::world::{CompFault, Sabotage, Stats, World, ATTEMPT_TIMEOUT, BASE_MS};
use saga_engine::{
    Clock, Engine, EventKind, RetryPolicy, SagaDefinition, SagaEvent, SagaId, SagaStatus,
    TokioClock,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A stop at a time comes within this many virtual ms of the engine
/// opening; one waiting for a write gives up waiting after as long.
const CRASH_WINDOW_MS: u64 = 700;
/// A stop planned after an operator retry waits this long for one.
const RETRY_WINDOW: Duration = Duration::from_millis(2_000);
/// Once the faults stop, every saga must end within this (virtual) time.
const SETTLE: Duration = Duration::from_secs(600);

/// The outcome of a run that held every invariant.
pub struct Run {
    pub trace: Vec<String>,
    pub stats: Stats,
}

/// A run that broke an invariant.
pub struct Failure {
    /// The first violation, and how many more there were.
    pub reason: String,
    /// Every violation, in the order seen.
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

/// Runs `seed` on a fresh current-thread runtime with paused time.
pub fn run_seed(seed: u64, sabotage: Sabotage) -> Result<Run, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(simulate(seed, sabotage))
}

fn definitions(world: &Arc<World>) -> Vec<SagaDefinition<SimData>> {
    let forward = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(5), Duration::from_millis(40))
        .jitter(0.5)
        .attempt_timeout(Some(ATTEMPT_TIMEOUT));
    // Enough attempts that injected failures (at most 2) plus the attempts
    // crashes consume (each crash mid-compensation counts one) never park a
    // saga: only a compensation broken for good may.
    let compensation = forward.clone().max_attempts(8);
    let step = |i: usize| SimStep {
        world: world.clone(),
        index: i,
    };
    let mut defs: Vec<SagaDefinition<SimData>> = (2..=5)
        .map(|n| {
            let mut b = SagaDefinition::builder(format!("sim{n}"), 1)
                .default_retry(forward.clone())
                .default_compensation_retry(compensation.clone());
            for i in 0..n {
                b = b.step(
                    step_name(i),
                    SimStep {
                        world: world.clone(),
                        index: i,
                    },
                );
            }
            b.build().expect("a valid definition")
        })
        .collect();
    // s0, then s1 and s2 as one parallel group, then the rest.
    for n in 3..=5 {
        let mut b = SagaDefinition::builder(Shape::Group.definition(n), 1)
            .default_retry(forward.clone())
            .default_compensation_retry(compensation.clone())
            .step(step_name(0), step(0))
            .group("g", |g| {
                g.step(step_name(1), step(1)).step(step_name(2), step(2))
            });
        for i in 3..n {
            b = b.step(step_name(i), step(i));
        }
        defs.push(b.build().expect("a valid definition"));
    }
    // s0, a signal wait, then the rest.
    for n in 2..=5 {
        let mut b = SagaDefinition::builder(Shape::Wait(SignalPlan::Never).definition(n), 1)
            .default_retry(forward.clone())
            .default_compensation_retry(compensation.clone())
            .step(step_name(0), step(0))
            .wait_for(
                "w",
                SIGNAL,
                Duration::from_millis(WAIT_MS),
                |d: &mut SimData, p: String| d.signal.push(p),
            );
        for i in 1..n {
            b = b.step(step_name(i), step(i));
        }
        defs.push(b.build().expect("a valid definition"));
    }
    defs
}

/// When an engine process ends.
#[derive(Debug, Clone, Copy)]
enum When {
    /// This many virtual ms after it opened.
    After(u64),
    /// As its `n`th write is queued, before that write is durable.
    Write(u64),
    /// This many virtual ms after the engine accepts an operator retry
    /// (the retried saga is then most likely still compensating).
    AfterRetry(u64),
}

/// How an engine process ends before the faults stop.
#[derive(Debug, Clone, Copy)]
struct Stop {
    when: When,
    /// `None`: killed. `Some(ms)`: shut down with this grace period (steps
    /// under way may finish), then the process exits without a flush.
    graceful: Option<u64>,
}

async fn open(world: &Arc<World>, store: &SimStore, clock: &Arc<TokioClock>) -> Engine {
    // What the engine is about to open on must be whole: sled's damage
    // check passes, and every saga that is not terminal has the active
    // entry that makes `list_active` return it.
    if let Err(e) = store.open_check() {
        world.violation(format!("the store is damaged at open: {e}"));
    }
    for p in store.index_problems() {
        world.violation(format!("at open: {p}"));
    }
    let mut b = Engine::builder_arc(Arc::new(store.process()))
        .clock(clock.clone())
        .seed(world.rng_u64())
        .owner("sim")
        // The default (16,384 slots) costs more to allocate than a whole
        // run; a run publishes a few hundred events per process, and a
        // lagging subscriber is reported as a violation.
        .event_capacity(2_048);
    for d in definitions(world) {
        b = b.register(d);
    }
    b.open()
        .await
        .expect("the engine opens on the simulated store")
}

/// A client of one request: sends its start (again, after a crash, if it
/// was never acknowledged), waits for the saga to end, and plays the
/// operator for a stuck one.
async fn client(world: Arc<World>, engine: Engine, no: usize) {
    let plan = &world.plans[no];
    tokio::time::sleep_until(world.at(plan.start_at_ms)).await;
    let def = plan.shape.definition(plan.steps.len());
    let input = SimData {
        no,
        trail: Vec::new(),
        g1: false,
        g2: false,
        signal: Vec::new(),
    };
    let acked = world.acked(no);
    // A client that heard nothing must send the start again; one that did
    // may still repeat it (a retried HTTP request): both must name one saga.
    let id = match acked {
        Some(id) if !world.chance(30) => id,
        _ => {
            world.log(format!("client start req-{no}"));
            let start = || engine.start(&def, &input, Some(&plan.key));
            let result = if plan.dup_start {
                let (a, b) = tokio::join!(start(), start());
                match (a, b) {
                    (Ok(a), Ok(b)) if a == b => Ok(a),
                    (Ok(a), Ok(b)) => {
                        world
                            .violation(format!("req-{no}: two concurrent starts gave {a} and {b}"));
                        Ok(a)
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            } else {
                start().await
            };
            match result {
                Ok(id) => {
                    world.ack(no, &id);
                    id
                }
                Err(e) => {
                    world.violation(format!("req-{no}: start failed: {e}"));
                    return;
                }
            }
        }
    };
    loop {
        let rec = match engine.wait(&id).await {
            Ok(rec) => rec,
            Err(e) => {
                world.violation(format!("req-{no}: wait failed: {e}"));
                return;
            }
        };
        match rec.status() {
            SagaStatus::Completed | SagaStatus::Compensated => {
                world.note_final(no, rec.status());
                return;
            }
            SagaStatus::Stuck => {
                world.log(format!("client req-{no} saw stuck"));
                // The operator looks, fixes the participant, retries.
                let pause = world.range(1..=200);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                world.ledger().fixed.insert(no);
                world.log(format!("operator fixes req-{no} and retries"));
                world.ledger().stats.operator_retries += 1;
                if let Err(e) = engine.retry(&id).await {
                    world.violation(format!("req-{no}: operator retry failed: {e}"));
                    return;
                }
                world.retries.send_modify(|n| *n += 1);
            }
            other => {
                world.violation(format!("req-{no}: wait returned a saga that is {other}"));
                return;
            }
        }
    }
}

async fn simulate(seed: u64, sabotage: Sabotage) -> Result<Run, Failure> {
    let world = Arc::new(World::new(seed, sabotage));
    let store = SimStore::new(world.clone());
    let clock = Arc::new(TokioClock::new(BASE_MS));
    let crashes: Vec<Stop> = {
        let n = match world.below(100) {
            0..=24 => 0,
            25..=59 => 1,
            60..=84 => 2,
            _ => 3,
        };
        (0..n)
            .map(|_| Stop {
                when: match world.below(100) {
                    0..=44 => When::Write(world.range(1..=40)),
                    45..=84 => When::After(world.range(0..=CRASH_WINDOW_MS)),
                    _ => When::AfterRetry(world.range(0..=6)),
                },
                graceful: world.chance(25).then(|| world.range(0..=80)),
            })
            .collect()
    };
    world.log(format!(
        "seed {seed}: {} sagas, crashes at {crashes:?}",
        world.plans.len()
    ));
    for (no, p) in world.plans.iter().enumerate() {
        world.log(format!("plan req-{no}: {p:?}"));
    }
    let mut stats = Stats {
        seeds: 1,
        sagas: world.plans.len() as u64,
        ..Stats::default()
    };

    let mut published = Vec::new();
    for epoch in 0..=crashes.len() {
        world.log(format!("engine opens (epoch {epoch})"));
        let on_write = match crashes.get(epoch).map(|s| s.when) {
            Some(When::Write(n)) => Some(store.crash_on_write(n)),
            _ => None,
        };
        let mut retried = world.retries.subscribe();
        let engine = open(&world, &store, &clock).await;
        // Recovery kept every start acknowledged so far.
        let (durable, _) = store.durable();
        let acks = world.ledger().acks.clone();
        for (no, id) in acks {
            if durable.keys.get(&world.plans[no].key) != Some(&id) {
                world.violation(format!(
                    "req-{no}: acknowledged start {id} missing after recovery (epoch {epoch})"
                ));
            }
        }
        // Subscribed before any worker runs: sees every event this process
        // publishes.
        let mut events = engine.subscribe();
        world.set_down(false);
        world.set_engine(Some(engine.clone()));
        let mut clients = JoinSet::new();
        for no in 0..world.plans.len() {
            clients.spawn(client(world.clone(), engine.clone(), no));
            if matches!(world.plans[no].shape, Shape::Wait(_)) {
                clients.spawn(sender(world.clone(), engine.clone(), no));
            }
        }
        match crashes.get(epoch) {
            Some(&stop) => {
                let window = std::time::Duration::from_millis(CRASH_WINDOW_MS);
                match (stop.when, on_write) {
                    (When::After(ms), _) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    (When::Write(_), Some(rx)) => {
                        // Fewer writes than that (all sagas done): stop anyway.
                        let _ = tokio::time::timeout(window, rx).await;
                    }
                    (When::Write(_), None) => unreachable!("armed above"),
                    (When::AfterRetry(ms), _) => {
                        // No retry (no saga goes stuck in time): stop anyway.
                        let retry = tokio::time::timeout(RETRY_WINDOW, retried.changed()).await;
                        if retry.is_ok() {
                            world.log(format!("an operator retried; the engine stops in {ms} ms"));
                        }
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                }
                {
                    // What the process was doing when it stopped.
                    let (now, _) = store.durable();
                    let running_member = now.records.values().any(|r| {
                        r.state.steps.iter().any(|s| {
                            s.group.is_some()
                                && matches!(
                                    s.state,
                                    saga_engine::StepState::Running
                                        | saga_engine::StepState::RetryWait
                                )
                        })
                    });
                    let waiting = now
                        .records
                        .values()
                        .any(|r| r.state.parked_until().is_some());
                    stats.crashes_in_group += u64::from(running_member);
                    stats.crashes_in_wait += u64::from(waiting);
                }
                let lost = match stop.graceful {
                    None => {
                        // The process dies: unflushed writes vanish, and
                        // nothing of it runs again (clients first, so none
                        // hears the store fail).
                        let lost = store.crash();
                        world.set_down(true);
                        clients.abort_all();
                        world.set_engine(None);
                        engine.shutdown(Duration::ZERO).await;
                        lost
                    }
                    Some(grace) => {
                        // A worker's retry timer firing in the very tick the
                        // shutdown signal arrives would be ordered by the
                        // engine's unbiased `select!`: step off such ticks.
                        while store.timer_due(clock.now_ms()) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        world.log(format!("engine shuts down (grace {grace} ms)"));
                        // From here on no step may start.
                        world.set_down(true);
                        clients.abort_all();
                        world.set_engine(None);
                        engine.shutdown(Duration::from_millis(grace)).await;
                        store.crash()
                    }
                };
                drain(&world, &mut events, &mut published);
                stats.crashes += u64::from(stop.graceful.is_none());
                stats.graceful_stops += u64::from(stop.graceful.is_some());
                stats.writes_lost += lost.lost as u64;
                stats.writes_kept += lost.kept as u64;
                stats.crashes_mid_call += u64::from(lost.mid_call);
                stats.crashes_after_retry += u64::from(lost.retried_unfinished > 0);
                stats.crashes_mid_flush += u64::from(lost.lost > 0);
                stats.unacked_starts_lost += lost.lost_creates as u64;
                clients.shutdown().await;
            }
            None => {
                let done = tokio::time::timeout(SETTLE, async {
                    while let Some(r) = clients.join_next().await {
                        if let Err(e) = r {
                            world.violation(format!("a client task failed: {e}"));
                        }
                    }
                })
                .await;
                if done.is_err() {
                    world.violation(format!(
                        "sagas still running {} s after the faults stopped",
                        SETTLE.as_secs()
                    ));
                }
                world.set_engine(None);
                engine.shutdown(Duration::from_secs(1)).await;
                drain(&world, &mut events, &mut published);
            }
        }
    }
    // Late requests still on their way land before the checks.
    for h in world.take_remote() {
        if tokio::time::timeout(SETTLE, h).await.is_err() {
            world.violation("a late request never arrived".into());
        }
    }

    let (durable, settled) = store.durable();
    if !settled {
        world.violation("the store has unflushed writes after the run".into());
    }
    check(&world, &durable, &mut stats);
    // What subscribers were told was durable when they were told.
    for e in &published {
        let stored = durable
            .history
            .get(&e.saga_id)
            .and_then(|h| h.get(e.seq as usize));
        if stored != Some(e) {
            world.violation(format!(
                "published event {} of {} is not in the store as published (found {:?})",
                fmt_event(e),
                e.saga_id,
                stored.map(fmt_event)
            ));
        }
    }
    dump(&world, &durable);
    let violations = world.ledger().violations.clone();
    stats.add(&world.ledger().stats);
    if let Some(first) = violations.first() {
        return Err(Failure {
            violations: violations.clone(),
            reason: if violations.len() > 1 {
                format!("{first} (and {} more)", violations.len() - 1)
            } else {
                first.clone()
            },
            trace: world.trace(),
        });
    }
    let trace = world.trace();
    stats.digest = digest(seed, &trace);
    Ok(Run { trace, stats })
}

/// A hash of the seed and every trace line (`DefaultHasher::new` has fixed
/// keys, so it is the same in every run of one build).
fn digest(seed: u64, trace: &[String]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write_u64(seed);
    for line in trace {
        h.write(line.as_bytes());
        h.write_u8(b'\n');
    }
    h.finish()
}

/// Takes the events a subscriber has received so far.
fn drain(
    world: &World,
    rx: &mut tokio::sync::broadcast::Receiver<SagaEvent>,
    into: &mut Vec<SagaEvent>,
) {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match rx.try_recv() {
            Ok(e) => into.push(e),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            Err(TryRecvError::Lagged(n)) => {
                world.violation(format!("the subscriber missed {n} events"));
            }
        }
    }
}

/// Appends the final durable state to the trace, so that two runs of one
/// seed compare their outcomes too.
fn dump(world: &World, durable: &Layer) {
    for (id, rec) in &durable.records {
        world.log(format!(
            "final {id} {:?} rev {} {} {:?}",
            rec.idempotency_key,
            rec.revision,
            rec.status(),
            rec.state.steps.iter().map(|s| s.state).collect::<Vec<_>>()
        ));
        for e in durable.history.get(id).into_iter().flatten() {
            world.log(format!("  {}", fmt_event(e)));
        }
    }
}

/// The invariants, on the durable state and the ledger once all is quiet.
fn check(world: &World, durable: &Layer, stats: &mut Stats) {
    let mut problems = Vec::new();
    let ledger = world.ledger();
    let mut by_key: BTreeMap<&str, Vec<&SagaId>> = BTreeMap::new();
    for rec in durable.records.values() {
        match &rec.idempotency_key {
            Some(k) => by_key.entry(k.as_str()).or_default().push(&rec.id),
            None => problems.push(format!("saga {} has no idempotency key", rec.id)),
        }
    }
    for (no, plan) in world.plans.iter().enumerate() {
        let ids = by_key.remove(plan.key.as_str()).unwrap_or_default();
        let id = match ids.as_slice() {
            [id] => *id,
            [] => {
                problems.push(format!(
                    "req-{no}: no saga in the store (acknowledged as {:?})",
                    ledger.acks.get(&no)
                ));
                continue;
            }
            many => {
                problems.push(format!("req-{no}: {} sagas for one request", many.len()));
                continue;
            }
        };
        if durable.keys.get(&plan.key) != Some(id) {
            problems.push(format!("req-{no}: the key index does not name {id}"));
        }
        match ledger.acks.get(&no) {
            Some(acked) if acked != id => problems.push(format!(
                "req-{no}: start acknowledged {acked}, store holds {id}"
            )),
            Some(_) => {}
            None => problems.push(format!("req-{no}: no start was ever acknowledged")),
        }
        if ledger.saga_of.get(&no).is_some_and(|seen| seen != id) {
            problems.push(format!(
                "req-{no}: participants served {:?}, store holds {id}",
                ledger.saga_of.get(&no)
            ));
        }
        let rec = &durable.records[id];
        let history = durable.history.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let status = rec.status();
        match plan.shape {
            Shape::Chain => {}
            Shape::Group => stats.groups += 1,
            Shape::Wait(signals) => {
                stats.waits += 1;
                let answers = ledger.signal_answers.get(&no).cloned().unwrap_or_default();
                stats.signals_late_refused += (signals == SignalPlan::Late
                    && answers.iter().any(|a| a.starts_with("refused")))
                    as u64;
                stats.waits_timed_out += rec.state.steps[WAIT_AT]
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out"))
                    as u64;
                check_wait(signals, no, rec, &answers, &mut problems);
            }
        }

        // Every saga ends, in exactly one terminal state.
        match status {
            SagaStatus::Completed => stats.completed += 1,
            SagaStatus::Compensated => stats.compensated += 1,
            other => problems.push(format!("req-{no}: ended {other}")),
        }
        let seqs_ok = history.iter().enumerate().all(|(i, e)| e.seq == i as u64)
            && rec.next_seq == history.len() as u64
            && history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms)
            && history.iter().all(|e| e.saga_id == *id);
        if !seqs_ok {
            problems.push(format!(
                "req-{no}: history is not a gapless, ordered sequence"
            ));
        }
        let finished: Vec<SagaStatus> = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SagaFinished { status, .. } => Some(*status),
                _ => None,
            })
            .collect();
        let final_ends =
            finished.last() == Some(&status) && history.last().is_some_and(|e| e.is_terminal());
        let terminal: Vec<&SagaStatus> = finished
            .iter()
            .filter(|s| **s != SagaStatus::Stuck)
            .collect();
        if !final_ends || terminal.len() != 1 {
            problems.push(format!(
                "req-{no}: finished {finished:?} but the record says {status}"
            ));
        }
        let stuck_times = finished.iter().filter(|s| **s == SagaStatus::Stuck).count();
        let retries = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::OperatorRetry))
            .count();
        stats.stuck += stuck_times as u64;
        if stuck_times != retries {
            problems.push(format!(
                "req-{no}: stuck {stuck_times} times, operator retries {retries}"
            ));
        }

        // Stuck only where a compensation was broken for good, and always there.
        let broken = plan.steps.iter().any(|s| s.comp == CompFault::Forever);
        if stuck_times > 0 && !broken {
            problems.push(format!(
                "req-{no}: went stuck although no compensation was broken for good"
            ));
        }
        if ledger.broken_comp_called.contains(&no) && stuck_times == 0 {
            problems.push(format!(
                "req-{no}: a compensation broken for good was called but the saga never went stuck"
            ));
        }

        // Effects: each applied at most once; all standing if completed;
        // none standing if compensated.
        let comps = ledger.comps.get(&no).map(Vec::len).unwrap_or(0);
        for (i, step) in plan.steps.iter().enumerate() {
            let key = format!("{id}:{}", step_name(i));
            let applied = ledger.applied.get(&key).copied().unwrap_or(0);
            let effect = ledger.effects.get(&key).copied();
            if applied > 1 {
                problems.push(format!("req-{no}: effect {key} applied {applied} times"));
            }
            if step.reject && applied > 0 {
                problems.push(format!("req-{no}: rejected step {i} took effect"));
            }
            match status {
                SagaStatus::Completed if effect != Some(super::world::Effect::Applied) => problems
                    .push(format!(
                        "req-{no}: completed, but step {i}'s effect is {effect:?}"
                    )),
                SagaStatus::Compensated if effect == Some(super::world::Effect::Applied) => {
                    problems.push(format!(
                        "req-{no}: compensated, but step {i}'s effect still stands"
                    ))
                }
                _ => {}
            }
        }
        if status == SagaStatus::Completed {
            if comps > 0 {
                problems.push(format!(
                    "req-{no}: completed, but {comps} compensation calls"
                ));
            }
            if plan.steps.iter().any(|s| s.reject) {
                problems.push(format!(
                    "req-{no}: completed despite a step that always rejects"
                ));
            }
            if ledger.cancel_acked.contains(&no) {
                problems.push(format!(
                    "req-{no}: completed despite an acknowledged cancel"
                ));
            }
        }
    }
    for (key, ids) in by_key {
        problems.push(format!("sagas {ids:?} for key {key} nobody started"));
    }
    problems.extend(index_problems(durable));
    drop(ledger);
    for p in problems {
        world.violation(p);
    }
}
