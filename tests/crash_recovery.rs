//! Crash test: sagas run in a child process that is killed with SIGKILL at
//! random moments, again and again; then a final child finishes the work
//! and the parent checks the engine's promises against a participant ledger
//! kept outside the engine's store.
//!
//! `harness = false`: this binary is both the parent (no arguments) and the
//! child (`--child`). `CRASH_KILLS` sets the number of kills (default 60).

use saga_engine::{
    Engine, RetryPolicy, SagaDefinition, SagaStatus, SledStore, Step, StepContext, StepError, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

const STEPS: [&str; 4] = [
    "reserve_seat",
    "authorize_payment",
    "award_miles",
    "confirm_booking",
];
const PER_ROUND: usize = 12;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    n: u64,
}

/// The participants' ledger: an append-only file of `A key` (effect applied)
/// and `C key` (effect compensated) lines, synced before each reply.
struct Ledger {
    file: Mutex<std::fs::File>,
    state: Mutex<(HashSet<String>, HashSet<String>)>,
}

impl Ledger {
    fn open(path: &Path) -> Ledger {
        let (applied, compensated) = read_ledger(path);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Ledger {
            file: Mutex::new(file),
            state: Mutex::new((
                applied.into_keys().collect(),
                compensated.into_keys().collect(),
            )),
        }
    }

    fn append(&self, line: &str) {
        let mut f = self.file.lock().unwrap();
        f.write_all(line.as_bytes()).unwrap();
        f.sync_data().unwrap();
    }

    /// Applies the effect once per key; refuses a key already compensated.
    fn apply(&self, key: &str) -> Result<(), StepError> {
        let mut st = self.state.lock().unwrap();
        if st.1.contains(key) {
            return Err(StepError::rejected("already compensated"));
        }
        if st.0.insert(key.to_string()) {
            self.append(&format!("A {key}\n"));
        }
        Ok(())
    }

    fn compensate(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        if st.1.insert(key.to_string()) {
            self.append(&format!("C {key}\n"));
        }
    }
}

/// Counts of `A` and `C` lines per key (a torn last line is ignored).
fn read_ledger(path: &Path) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut a = HashMap::new();
    let mut c = HashMap::new();
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let line = line.trim_end();
        if let Some(k) = line.strip_prefix("A ") {
            *a.entry(k.to_string()).or_insert(0) += 1;
        } else if let Some(k) = line.strip_prefix("C ") {
            *c.entry(k.to_string()).or_insert(0) += 1;
        }
    }
    (a, c)
}

struct Participant {
    index: usize,
    ledger: Arc<Ledger>,
    transient: Arc<Mutex<HashMap<String, u32>>>,
}

#[saga_engine::async_trait]
impl Step<Order> for Participant {
    async fn run(&self, ctx: &StepContext, o: &mut Order) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 3000)).await;
        // Step 3 rejects for some orders; step 2 fails transiently for others.
        if self.index == 2 && o.n % 4 == 3 {
            return Err(StepError::rejected("declined"));
        }
        if self.index == 1 && o.n % 5 == 1 {
            let mut t = self.transient.lock().unwrap();
            let n = t.entry(ctx.idempotency_key.clone()).or_insert(0);
            *n += 1;
            if *n <= 2 {
                return Err(StepError::retryable("busy"));
            }
        }
        self.ledger.apply(&ctx.idempotency_key)
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

async fn child(dir: PathBuf, round: usize, finish: bool) {
    let ledger = Arc::new(Ledger::open(&dir.join("ledger.log")));
    let store = match SledStore::open(dir.join("engine")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: cannot open the store: {e}");
            std::process::exit(3);
        }
    };
    let engine = Engine::builder(store)
        .register(definition(ledger))
        .open()
        .await
        .unwrap();
    if finish {
        while engine.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return;
    }
    // Start this round's sagas and, again, the last round's (same keys: they
    // must map to the sagas already started).
    let mut tasks = Vec::new();
    let acks = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("acks.log"))
            .unwrap(),
    ));
    for r in [round, round.saturating_sub(1)] {
        for i in 0..PER_ROUND {
            let engine = engine.clone();
            let acks = acks.clone();
            tasks.push(tokio::spawn(async move {
                let n = (r * PER_ROUND + i) as u64;
                let key = format!("order-{n}");
                let id = engine
                    .start("crashy", &Order { n }, Some(&key))
                    .await
                    .unwrap();
                // The start is acknowledged: it must survive any crash.
                {
                    let mut f = acks.lock().unwrap();
                    f.write_all(format!("{key} {id}\n").as_bytes()).unwrap();
                    f.sync_data().unwrap();
                }
                engine.wait(&id).await.unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Idle until killed.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn parent() -> Result<(), String> {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let killed_alive = support::kill_loop(&exe, &dir, kills, 20..140)?.killed_alive;

    // Verify.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = SledStore::open(dir.join("engine")).unwrap();
    let records = rt.block_on(store.list(None, usize::MAX)).unwrap();
    let (applied, compensated) = read_ledger(&dir.join("ledger.log"));
    let mut problems = Vec::new();
    let mut keys = HashSet::new();
    let (mut completed, mut undone) = (0, 0);
    for (k, n) in &applied {
        if *n > 1 {
            problems.push(format!("effect {k} applied {n} times"));
        }
    }
    for (k, n) in &compensated {
        if *n > 1 {
            problems.push(format!("effect {k} compensated {n} times"));
        }
    }
    let by_key: HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| Some((r.idempotency_key.as_deref()?, r.id.as_str())))
        .collect();
    let acks = std::fs::read_to_string(dir.join("acks.log")).unwrap_or_default();
    let mut acked = 0;
    for line in acks.lines() {
        let mut parts = line.split(' ');
        let (Some(key), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        acked += 1;
        if by_key.get(key) != Some(&id) {
            problems.push(format!(
                "acknowledged start {key} -> {id} was lost (store has {:?})",
                by_key.get(key)
            ));
        }
    }
    if acked == 0 {
        problems.push("no start was acknowledged".into());
    }
    for r in &records {
        if let Some(k) = &r.idempotency_key {
            if !keys.insert(k.clone()) {
                problems.push(format!("idempotency key {k} started two sagas"));
            }
        }
        let step_keys: Vec<String> = STEPS.iter().map(|s| format!("{}:{s}", r.id)).collect();
        match r.status() {
            SagaStatus::Completed => {
                completed += 1;
                for k in &step_keys {
                    if !applied.contains_key(k) {
                        problems.push(format!("completed saga {} lacks effect {k}", r.id));
                    }
                    if compensated.contains_key(k) {
                        problems.push(format!("completed saga {} has compensation {k}", r.id));
                    }
                }
            }
            SagaStatus::Compensated => {
                undone += 1;
                for k in &step_keys {
                    if applied.contains_key(k) && !compensated.contains_key(k) {
                        problems.push(format!("compensated saga {} left effect {k}", r.id));
                    }
                }
            }
            other => problems.push(format!("saga {} ended {other}", r.id)),
        }
        let order: Order = r.data_as().unwrap();
        let expect_reject = order.n % 4 == 3;
        if expect_reject && r.status() == SagaStatus::Completed {
            problems.push(format!("saga {} should have been rejected", r.id));
        }
    }
    eprintln!(
        "crash_recovery: {kills} kills ({killed_alive} mid-run), {} sagas: {completed} completed, {undone} compensated, {} effects, {} compensations, {:.1}s",
        records.len(),
        applied.len(),
        compensated.len(),
        started.elapsed().as_secs_f64()
    );
    if records.len() < kills {
        problems.push(format!("only {} sagas were started", records.len()));
    }
    if completed == 0 || undone == 0 {
        problems.push("expected both completed and compensated sagas".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.truncate(20);
        Err(problems.join("\n"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let dir = PathBuf::from(std::env::var("CRASH_DIR").unwrap());
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
    match parent() {
        Ok(()) => eprintln!("crash_recovery ... ok"),
        Err(e) => {
            eprintln!("crash_recovery FAILED:\n{e}");
            std::process::exit(1);
        }
    }
}
