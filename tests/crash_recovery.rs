//! Crash test: sagas run in a child process that is killed with SIGKILL at
//! random moments (`saga_workspace::kill_loop`), again and again; then a
//! final child finishes the work and the parent checks the engine's
//! promises against a participant ledger kept outside the engine's store
//! (`support/ledger.rs`) and the children's acknowledgement log:
//!
//! - every acknowledged start survives every kill (checked by each
//!   restarted child, and at the end);
//! - no effect belongs to an acknowledged saga the store lost;
//! - each effect is applied once and compensated at most once; a completed
//!   saga has all its effects and no compensation; a compensated one left
//!   none behind;
//! - steps run in order, none after compensation began; compensations run
//!   newest first, and only for steps that ran (or may have).
//!
//! `harness = false`: this binary is both the parent (no arguments) and the
//! child (`--child`). `CRASH_KILLS` sets the number of kills (default 60,
//! at least 20).

use saga_engine::{
    Engine, RetryPolicy, SagaDefinition, SagaRecord, SagaStatus, SledStore, Step, StepContext,
    StepError, Store,
};
use saga_workspace::acklog::{self, AckLog};
use saga_workspace::kill_loop::{self, InFlight, Plan};
use saga_workspace::verdict::{self, Figures, Violations};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::ledger::{self, Entry, Ledger};

mod support;

const STEPS: [&str; 4] = [
    "reserve_seat",
    "authorize_payment",
    "award_miles",
    "confirm_booking",
];
const PER_ROUND: usize = 12;
const DEFAULT_KILLS: usize = 60;
const MIN_KILLS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    n: u64,
}

struct Participant {
    index: usize,
    ledger: Arc<Ledger>,
    transient: Arc<Mutex<HashMap<String, u32>>>,
}

#[saga_engine::async_trait]
impl Step<Order> for Participant {
    async fn run(&self, ctx: &StepContext, o: &mut Order) -> Result<(), StepError> {
        let key = &ctx.idempotency_key;
        self.ledger.attempt(key);
        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 3000)).await;
        // Step 3 rejects for some orders; step 2 fails transiently for others.
        if self.index == 2 && o.n % 4 == 3 {
            self.ledger.answered(key, "no");
            return Err(StepError::rejected("declined"));
        }
        if self.index == 1 && o.n % 5 == 1 {
            let busy = {
                let mut t = self.transient.lock().unwrap();
                let n = t.entry(key.clone()).or_insert(0);
                *n += 1;
                *n <= 2
            };
            if busy {
                self.ledger.answered(key, "busy");
                return Err(StepError::retryable("busy"));
            }
        }
        let r = self.ledger.apply(key);
        self.ledger
            .answered(key, if r.is_ok() { "ok" } else { "no" });
        r
    }

    async fn compensate(&self, ctx: &StepContext, _o: &Order) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 2000)).await;
        self.ledger.compensate(&ctx.idempotency_key);
        Ok(())
    }
}

fn definition(ledger: Arc<Ledger>) -> SagaDefinition<Order> {
    let transient = Arc::new(Mutex::new(HashMap::new()));
    let mut b = SagaDefinition::builder("crashy", 1)
        .default_retry(
            RetryPolicy::default()
                .max_attempts(50)
                .backoff(Duration::from_millis(1), Duration::from_millis(20)),
        )
        .default_compensation_retry(RetryPolicy::default().max_attempts(1000));
    for (i, name) in STEPS.iter().enumerate() {
        b = b.step(
            *name,
            Participant {
                index: i,
                ledger: ledger.clone(),
                transient: transient.clone(),
            },
        );
    }
    b.build().unwrap()
}

/// Opens the engine, checks that every acknowledged start survived, and
/// reports; exits 3 on a violation.
async fn open_and_check(dir: &std::path::Path) -> Engine {
    let ledger = Arc::new(Ledger::open(&dir.join("ledger.log"), &STEPS).expect("ledger opens"));
    let mut v = Violations::new();
    let store = match SledStore::open(dir.join("engine")) {
        Ok(s) => s,
        Err(e) => {
            v.push("store refused to open", e.to_string());
            v.print_lines();
            std::process::exit(3);
        }
    };
    let engine = match Engine::builder(store)
        .register(definition(ledger))
        .open()
        .await
    {
        Ok(e) => e,
        Err(e) => {
            v.push("store refused to open", format!("engine: {e}"));
            v.print_lines();
            std::process::exit(3);
        }
    };
    let checked = acklog::check_survived(&engine, &dir.join("acks.log"), &mut v).await;
    if !v.is_empty() {
        v.print_lines();
        std::process::exit(3);
    }
    kill_loop::report_checked(checked);
    engine
}

async fn child(dir: PathBuf, round: usize, finish: bool) {
    let engine = open_and_check(&dir).await;
    if finish {
        while engine.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return;
    }
    let acks = Arc::new(AckLog::open(&dir.join("acks.log")).expect("ack log opens"));
    let inflight = InFlight::new();
    // Start this round's sagas and, again, the last round's (same keys: they
    // must map to the sagas already started).
    let mut tasks = Vec::new();
    for r in [round, round.saturating_sub(1)] {
        for i in 0..PER_ROUND {
            let (engine, acks, guard) = (engine.clone(), acks.clone(), inflight.enter());
            tasks.push(tokio::spawn(async move {
                let _guard = guard;
                let n = (r * PER_ROUND + i) as u64;
                let key = format!("order-{n}");
                let id = match engine.start("crashy", &Order { n }, Some(&key)).await {
                    Ok(id) => id,
                    Err(e) => return kill_loop::report_error("start", format!("{key}: {e}")),
                };
                // The start is acknowledged: it must survive any crash.
                if let Err(e) = acks.ack(&key, id.as_str()) {
                    return kill_loop::report_error("start", format!("{key}: ack log: {e}"));
                }
                if let Err(e) = engine.wait(&id).await {
                    kill_loop::report_error("wait", format!("{key} ({id}): {e}"));
                }
            }));
        }
    }
    let (e, count) = (engine.clone(), inflight.clone());
    let _beat = kill_loop::heartbeat(move || count.get().max(e.running_count()));
    for t in tasks {
        if let Err(e) = t.await {
            kill_loop::report_error("wait", format!("a saga task panicked: {e}"));
        }
    }
    // Idle until killed.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// What the ledger says about one saga.
#[derive(Default)]
struct SagaLog {
    /// Per step: an attempt began; the effect was applied.
    started: [bool; 4],
    applied: [bool; 4],
    /// Steps compensated, in ledger order.
    compensations: Vec<usize>,
}

/// Order checks over the ledger, one saga at a time; returns the logs.
fn check_order(entries: &[Entry], v: &mut Violations) -> BTreeMap<String, SagaLog> {
    let mut sagas: BTreeMap<String, SagaLog> = BTreeMap::new();
    let mut applied: HashSet<&str> = HashSet::new();
    let mut compensated: HashSet<&str> = HashSet::new();
    for e in entries {
        let key = e.key();
        let Some((saga, step)) = key.split_once(':') else {
            v.push("ledger unreadable", format!("key {key:?}"));
            continue;
        };
        let Some(i) = STEPS.iter().position(|s| *s == step) else {
            v.push("ledger unreadable", format!("unknown step in {key:?}"));
            continue;
        };
        let log = sagas.entry(saga.to_string()).or_default();
        match e {
            Entry::Start(_) => {
                if !log.compensations.is_empty() {
                    v.push(
                        "step ran after compensation began",
                        format!(
                            "saga {saga}: {step} after compensating {:?}",
                            log.compensations
                        ),
                    );
                }
                if i > 0 && !log.applied[i - 1] {
                    v.push(
                        "step ran before its predecessor took effect",
                        format!("saga {saga}: {step} before {}", STEPS[i - 1]),
                    );
                }
                log.started[i] = true;
            }
            Entry::End(..) => {}
            Entry::Applied(_) => {
                if !applied.insert(key) {
                    v.push("effect applied twice", key.to_string());
                }
                log.applied[i] = true;
            }
            Entry::Compensated(_) => {
                if !compensated.insert(key) {
                    v.push("effect compensated twice", key.to_string());
                }
                if !log.started[i] {
                    v.push(
                        "compensated a step that never ran",
                        format!("saga {saga}: {step}"),
                    );
                }
                if let Some(&last) = log.compensations.last() {
                    if i >= last {
                        v.push(
                            "compensation order",
                            format!(
                                "saga {saga}: {step} compensated after {} (newest must come first)",
                                STEPS[last]
                            ),
                        );
                    }
                }
                log.compensations.push(i);
            }
        }
    }
    sagas
}

/// The store's sagas against the ledger and the acknowledgements.
fn check_outcomes(
    records: &[SagaRecord],
    logs: &BTreeMap<String, SagaLog>,
    acked: &[(String, String)],
    v: &mut Violations,
) -> (usize, usize, usize) {
    let by_key: HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| Some((r.idempotency_key.as_deref()?, r.id.as_str())))
        .collect();
    for (key, id) in acked {
        if let Some(d) = acklog::lost(key, id, by_key.get(key.as_str()).copied()) {
            v.push("lost acknowledged start", d);
        }
    }
    let mut keys = HashSet::new();
    let (mut completed, mut undone) = (0, 0);
    let none = SagaLog::default();
    for r in records {
        if let Some(k) = &r.idempotency_key {
            if !keys.insert(k.clone()) {
                v.push("idempotency key started two sagas", k.clone());
            }
        }
        let log = logs.get(r.id.as_str()).unwrap_or(&none);
        let comp: BTreeSet<usize> = log.compensations.iter().copied().collect();
        match r.status() {
            SagaStatus::Completed => {
                completed += 1;
                for (i, step) in STEPS.iter().enumerate() {
                    if !log.applied[i] {
                        v.push("completed saga lacks effect", format!("{}:{step}", r.id));
                    }
                    if comp.contains(&i) {
                        v.push(
                            "completed saga has compensation",
                            format!("{}:{step}", r.id),
                        );
                    }
                }
            }
            SagaStatus::Compensated => {
                undone += 1;
                for (i, step) in STEPS.iter().enumerate() {
                    if log.applied[i] && !comp.contains(&i) {
                        v.push("compensated saga left effect", format!("{}:{step}", r.id));
                    }
                }
            }
            other => v.push("saga not ended", format!("saga {} is {other}", r.id)),
        }
        match r.data_as::<Order>() {
            Ok(o) if o.n % 4 == 3 && r.status() == SagaStatus::Completed => {
                v.push("rejected saga completed", r.id.to_string())
            }
            Ok(_) => {}
            Err(e) => v.push("saga data unreadable", format!("{}: {e}", r.id)),
        }
    }
    // Effects whose saga the store does not hold: harmless for a start the
    // store never acknowledged, a loss for one it did.
    let in_store: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let acked_ids: HashSet<&str> = acked.iter().map(|(_, id)| id.as_str()).collect();
    let mut orphans = 0;
    for (saga, log) in logs.iter().filter(|(s, _)| !in_store.contains(s.as_str())) {
        let applied = STEPS.iter().enumerate().filter(|(i, _)| log.applied[*i]);
        for (_, step) in applied {
            if acked_ids.contains(saga.as_str()) {
                v.push(
                    "effect without saga",
                    format!("{saga}:{step} of an acknowledged saga the store lost"),
                );
            } else {
                orphans += 1;
            }
        }
    }
    (completed, undone, orphans)
}

fn parent() -> i32 {
    let kills = match verdict::knob("CRASH_KILLS", DEFAULT_KILLS, MIN_KILLS) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("crash_recovery REFUSED: {e}");
            return 2;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let started = Instant::now();
    let plan = Plan {
        exe: std::env::current_exe().unwrap(),
        dir: dir.clone(),
        kills,
        window_ms: 20..140,
        aimed_ms: 0..40,
        blind_every: 4,
        ack_log: dir.join("acks.log"),
        finish_timeout: Duration::from_secs(180),
    };
    let out = match kill_loop::run(&plan) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("crash_recovery FAILED: {e}");
            return 1;
        }
    };
    let mut v = out.violations;
    let acked = acklog::read(&dir.join("acks.log"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = match SledStore::open(dir.join("engine")) {
        Ok(store) => rt
            .block_on(store.list(None, usize::MAX))
            .map_err(|e| v.push("store read failed", e.to_string()))
            .ok(),
        Err(e) => {
            v.push("store refused to open", format!("at the final check: {e}"));
            None
        }
    };
    let (entries, torn) = ledger::read(&dir.join("ledger.log"), &STEPS);
    if torn > 0 {
        eprintln!("crash_recovery: {torn} torn ledger lines skipped");
    }
    let logs = check_order(&entries, &mut v);
    // Without a readable store only the ledger's own order can be judged.
    let (completed, undone, orphans) = match &records {
        Some(r) => check_outcomes(r, &logs, &acked, &mut v),
        None => (0, 0, 0),
    };
    let records = records.unwrap_or_default();
    let effects = entries
        .iter()
        .filter(|e| matches!(e, Entry::Applied(_)))
        .count();
    let compensations = entries
        .iter()
        .filter(|e| matches!(e, Entry::Compensated(_)))
        .count();
    eprintln!(
        "crash_recovery: {} kills ({} in flight, {} recovering, {} idle), {} checks, {} sagas: {completed} completed, {undone} compensated; {} acknowledged, {effects} effects, {compensations} compensations, {orphans} effects of unacknowledged lost starts, {:.1}s",
        out.kills,
        out.in_flight,
        out.recovering,
        out.idle,
        out.checks,
        records.len(),
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    if out.stopped_early.is_none() {
        if out.in_flight * 2 < kills {
            problems.push(format!(
                "only {} of {kills} kills landed while sagas were in flight (need half)",
                out.in_flight
            ));
        }
        if out.checks * 2 < kills {
            problems.push(format!(
                "only {} post-restart checks completed for {kills} kills (need half)",
                out.checks
            ));
        }
        if acked.len() < kills {
            problems.push(format!(
                "only {} starts were acknowledged in {kills} rounds",
                acked.len()
            ));
        }
        if completed == 0 || undone == 0 {
            problems.push("expected both completed and compensated sagas".into());
        }
    }
    let mut startup = out.startup_ms.clone();
    startup.sort_unstable();
    eprintln!(
        "crash_recovery: spawn to first heartbeat p50 {} ms, max {} ms; {:.1}s of kills",
        startup.get(startup.len() / 2).unwrap_or(&0),
        startup.last().unwrap_or(&0),
        out.loop_time.as_secs_f64()
    );
    for e in &out.expected {
        eprintln!("  expected error (explained): {e}");
    }
    let figures = Figures {
        sagas: records.len(),
        acked: acked.len(),
        kills: out.kills,
        in_flight: out.in_flight,
        checks: out.checks,
        start_errors: out.start_errors,
        wait_errors: out.wait_errors,
        expected_errors: out.expected.len(),
    };
    verdict::conclude("crash_recovery", &figures, &v, &problems)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let dir = kill_loop::child_dir();
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("warn")
            .init();
        let arg = args.get(1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if arg == "finish" {
            rt.block_on(child(dir, 0, true));
        } else {
            rt.block_on(child(dir, arg.parse().unwrap(), false));
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list` asks for test names.
        println!("crash_recovery: test");
        return;
    }
    let code = parent();
    if code == 0 {
        eprintln!("crash_recovery ... ok");
    }
    std::process::exit(code);
}
