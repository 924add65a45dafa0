//! Retention under SIGKILL: a child runs sagas with idempotency keys while
//! retention purges every finished one as fast as it can, in small batches;
//! the parent kills it at random moments, again and again. After each kill
//! the parent checks, on a copy of the directory, that no purge was left
//! half-done where it matters:
//!
//! - every acknowledged key either names a whole saga (record and history)
//!   or is retired: a create with it must never start a new saga (that
//!   would be a key pointing nowhere, silently taken over);
//! - no history without its record, no finished saga that lost its key;
//! - the query indexes (by creation time, status, search attribute) and
//!   the status counts describe exactly the records that survived: no
//!   attribute entry naming a purged saga, no count off by a saga whose
//!   create, finish or purge the kill cut short.
//!
//! `harness = false`: the binary is parent and child (`--child`).
//! `PURGE_KILLS` sets the kills (default 25, at least 10).

use saga_engine::store::CreateOutcome;
use saga_engine::{
    Engine, Retention, SagaDefinition, SagaId, SledStore, Step, StepContext, StepError, Store,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOOR: usize = 10;

#[derive(Serialize, Deserialize)]
struct Order {
    n: u64,
}

struct Trivial;

#[saga_engine::async_trait]
impl Step<Order> for Trivial {
    async fn run(&self, _: &StepContext, _: &mut Order) -> Result<(), StepError> {
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Order) -> Result<(), StepError> {
        Ok(())
    }
}

fn definition() -> SagaDefinition<Order> {
    SagaDefinition::builder("purged", 1)
        .step("a", Trivial)
        .step("b", Trivial)
        .search_attribute_typed("bucket", |o: &Order| Some((o.n % 7).to_string()))
        .build()
        .unwrap()
}

/// The child: starts sagas with keys `r{round}-{i}`, logging each key and
/// id once acknowledged (synced), while retention purges every finished
/// saga (window 0) in batches of 3, every millisecond.
async fn child(dir: &Path, round: usize) {
    let store = SledStore::open(dir.join("store")).expect("the store opens after a kill");
    let engine = Engine::builder(store)
        .register(definition())
        .retention(
            Retention::new(Duration::ZERO)
                .batch(3)
                .every(Duration::from_millis(1)),
        )
        .open()
        .await
        .expect("engine opens");
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks"))
        .unwrap();
    for i in 0.. {
        let key = format!("r{round}-{i}");
        let id = engine
            .start("purged", &Order { n: i }, Some(&key))
            .await
            .expect("start");
        writeln!(acks, "{key} {id}").unwrap();
        acks.sync_data().unwrap();
        if i % 4 == 0 {
            // With a zero window a saga may be purged the moment it ends.
            match engine.wait(&id).await {
                Ok(_) | Err(saga_engine::Error::NotFound(_)) => {}
                Err(e) => panic!("wait: {e}"),
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Checks a copy of the store against the acknowledgement log; returns the
/// violations, and (whole, retired) counts.
async fn check(dir: &Path, scratch: &Path) -> (Vec<String>, usize, usize) {
    let _ = std::fs::remove_dir_all(scratch);
    copy_dir(&dir.join("store"), scratch);
    let store = SledStore::open(scratch).expect("the killed store reopens");
    let mut bad: Vec<String> = store
        .check_query_indexes()
        .expect("the index check reads the store")
        .into_iter()
        .map(|p| format!("query index: {p}"))
        .collect();
    let acks = std::fs::read_to_string(dir.join("acks")).unwrap_or_default();
    let (mut whole, mut retired) = (0, 0);
    for line in acks.lines() {
        let Some((key, id)) = line.split_once(' ') else {
            continue; // the last line may be cut by the kill
        };
        let id = SagaId::from_raw(id.to_string());
        let mut probe =
            saga_engine::store::conformance::sample_record(&format!("probe-{key}"), Some(key));
        probe.definition = "probe".into();
        match store.create(&probe, &[]).await {
            Ok(CreateOutcome::Existing(rec)) => {
                if rec.id != id {
                    bad.push(format!("key {key} names {} instead of {id}", rec.id));
                } else if store.history(&id).await.unwrap().is_empty() {
                    bad.push(format!("saga {id} has a record but no history"));
                } else {
                    whole += 1;
                }
            }
            Ok(CreateOutcome::Retired { .. }) => {
                // Its record may still be there (a kill between retiring
                // the key and deleting it): the next pass deletes it.
                retired += 1;
            }
            Ok(CreateOutcome::Created) => bad.push(format!(
                "acknowledged key {key} (saga {id}) names nothing: a reuse started a new saga"
            )),
            Err(e) => bad.push(format!("key {key}: {e}")),
        }
    }
    for rec in store.list_active().await.unwrap() {
        if rec.status().is_terminal() {
            bad.push(format!(
                "saga {} is {} but listed active",
                rec.id,
                rec.status()
            ));
        }
    }
    (bad, whole, retired)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("--child") {
        let dir = PathBuf::from(std::env::var("PURGE_DIR").unwrap());
        let round: usize = args[2].parse().unwrap();
        rt.block_on(child(&dir, round));
        return;
    }
    let kills: usize = match std::env::var("PURGE_KILLS") {
        Ok(v) => match v.parse() {
            Ok(n) if n >= FLOOR => n,
            _ => {
                eprintln!("PURGE_KILLS={v}: at least {FLOOR} kills are needed for the test to mean anything");
                std::process::exit(2);
            }
        },
        Err(_) => 25,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut violations = Vec::new();
    let (mut whole, mut retired, mut purges_seen) = (0, 0, 0);
    for round in 0..kills {
        let mut c = Command::new(&exe)
            .arg("--child")
            .arg(round.to_string())
            .env("PURGE_DIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Kill only once the child is acknowledging (open + a few sagas),
        // then at a random moment within the next 150 ms.
        let acked =
            |d: &Path| std::fs::read_to_string(d.join("acks")).map_or(0, |s| s.lines().count());
        let before = acked(dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked(dir) < before + 5 {
            if let Ok(Some(status)) = c.try_wait() {
                eprintln!("purge_crash: child {round} exited on its own: {status}");
                std::process::exit(1);
            }
            assert!(
                Instant::now() < deadline,
                "child {round} never acknowledged a start"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 150));
        c.kill().unwrap();
        c.wait().unwrap();
        let (bad, w, r) = rt.block_on(check(dir, &tmp.path().join("scratch")));
        if r > 0 {
            purges_seen += 1;
        }
        whole = w;
        retired = r;
        violations.extend(bad.into_iter().map(|v| format!("after kill {round}: {v}")));
    }
    let acked = std::fs::read_to_string(dir.join("acks"))
        .unwrap()
        .lines()
        .count();
    println!(
        "purge_crash: {kills} kills, {acked} acknowledged sagas, at the end {whole} whole + {retired} purged with key retired, \
         {purges_seen} checks saw purges, {} violations, {:.1} s",
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    for v in violations.iter().take(20) {
        println!("  violation: {v}");
    }
    if !violations.is_empty() {
        std::process::exit(1);
    }
    if purges_seen < kills / 2 || retired == 0 {
        println!("purge_crash: retention purged too little for the test to mean anything");
        std::process::exit(1);
    }
    println!("1 passed, 0 failed");
}
