//! The PostgreSQL backend against a real server (started by `pg_support`
//! in a temporary directory): the store conformance suite with its lease
//! checks, durability across a server crash, and three engine processes on
//! one database, one of them killed with SIGKILL under load; retention
//! (purges, retired keys, the schema upgrade) in `pg_support/retention.rs`.
//!
//! Run with `cargo test -p saga-engine --features postgres --test postgres`;
//! the PostgreSQL server binaries must be installed (Debian: `postgresql`).

#![cfg(feature = "postgres")]

mod pg_support;
#[path = "pg_support/retention.rs"]
mod retention;

use pg_support::{eventually, PgServer};
use saga_engine::store::{conformance, PostgresStore};
use saga_engine::{
    Engine, EventKind, SagaDefinition, SagaStatus, Step, StepContext, StepError, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A fresh, empty database on `server` for each call.
async fn fresh_store(server: &PgServer, counter: &AtomicUsize) -> PostgresStore {
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let url = server.create_database(&format!("conf_{n}")).await;
    PostgresStore::connect(&url).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let server = PgServer::start();
    let counter = AtomicUsize::new(0);
    conformance::run_all(|| fresh_store(&server, &counter)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_with_queries() {
    let server = PgServer::start();
    let counter = AtomicUsize::new(0);
    conformance::run_query(|| fresh_store(&server, &counter)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_with_leases() {
    let server = PgServer::start();
    let counter = AtomicUsize::new(0);
    let store = fresh_store(&server, &counter).await;
    assert!(store.is_shared());
    conformance::run_shared(|| fresh_store(&server, &counter)).await;
}

/// Claimers in different pools (as different processes would be) split the
/// work too, each saga claimed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_with_separate_connections_never_share_a_saga() {
    let server = PgServer::start();
    let url = server.create_database("claims").await;
    let seed = PostgresStore::connect(&url).await.unwrap();
    for i in 0..200 {
        seed.create(&conformance::sample_record(&format!("s{i:03}"), None), &[])
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for c in 0..4 {
        let store = Arc::new(PostgresStore::connect_with_pool(&url, 4).await.unwrap());
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..40 {
                    let got = store
                        .claim(&format!("c{c}"), 1_000, 60_000, 2)
                        .await
                        .unwrap();
                    mine.extend(got.into_iter().map(|r| (r.id, t)));
                }
                mine
            }));
        }
    }
    let mut seen = HashMap::new();
    for t in tasks {
        for (id, _) in t.await.unwrap() {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "a saga was claimed twice");
    assert_eq!(seen.len(), 200, "every saga claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_server_crash_and_restart() {
    let mut server = PgServer::start();
    let url = server.create_database("durable").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let mut rec = conformance::sample_record("keep", Some("keep-key"));
    let id = rec.id.clone();
    let ev = |seq: u64| saga_engine::SagaEvent {
        saga_id: id.clone(),
        seq,
        at_ms: seq,
        kind: EventKind::Resumed,
    };
    store.create(&rec, &[ev(0)]).await.unwrap();
    let claimed = store.claim("me", 10, 1_000, 1).await.unwrap().remove(0);
    rec.lease = claimed.lease.clone();
    rec.revision = 1;
    rec.data = serde_json::json!({"n": 2, "text": "nul \u{0} and ünïcode"});
    let events = [ev(1), ev(2)];
    store.update(&rec, &events).await.unwrap();
    for i in 0..50 {
        store
            .create(&conformance::sample_record(&format!("more{i}"), None), &[])
            .await
            .unwrap();
    }

    // Every acknowledged write is in the WAL: an immediate shutdown (no
    // checkpoint, like a power cut of the server process) loses none.
    server.crash_restart();

    let reopened = PostgresStore::connect(&url).await.unwrap();
    let got = reopened.get(&rec.id).await.unwrap().expect("record kept");
    assert_eq!(got, rec);
    assert_eq!(
        got.lease.as_ref().map(|l| (l.owner.as_str(), l.generation)),
        Some(("me", 1))
    );
    assert_eq!(
        reopened.history(&rec.id).await.unwrap(),
        vec![ev(0), ev(1), ev(2)]
    );
    assert_eq!(
        reopened.find_by_key("keep-key").await.unwrap(),
        Some(rec.id.clone())
    );
    assert_eq!(reopened.list_active().await.unwrap().len(), 51);
    assert_eq!(reopened.status_counts().await.unwrap()["running"], 51);

    // The first store's pool drops the connections the restart closed and
    // opens new ones: after at most one failed call per dead connection it
    // works again, with no restart of the process.
    let mut failures = Vec::new();
    loop {
        match store.get(&rec.id).await {
            Ok(r) => {
                assert_eq!(r.as_ref(), Some(&rec));
                break;
            }
            Err(e) => failures.push(e),
        }
        assert!(
            failures.len() <= 16,
            "the old store does not recover: {failures:?}"
        );
    }
    let mut next = rec.clone();
    next.revision = 2;
    store.update(&next, &[ev(3)]).await.unwrap();
    assert_eq!(reopened.history(&rec.id).await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let server = PgServer::start();
    let url = server.create_database("schema").await;
    drop(PostgresStore::connect(&url).await.unwrap());
    let client = server.client("schema").await;
    client
        .batch_execute("UPDATE saga_engine_schema SET version = 99")
        .await
        .unwrap();
    match PostgresStore::connect(&url).await {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("99"), "{reason}"),
        other => panic!("connect to a newer schema gave {other:?}"),
    }
    assert!(matches!(
        PostgresStore::connect("postgres://nobody@127.0.0.1:1/none").await,
        Err(StoreError::Io(_))
    ));
}

#[derive(Serialize, Deserialize)]
struct Trip {
    fail: bool,
    done: Vec<String>,
}

struct Leg(&'static str);

#[saga_engine::async_trait]
impl Step<Trip> for Leg {
    async fn run(&self, _: &StepContext, t: &mut Trip) -> Result<(), StepError> {
        if t.fail && self.0 == "hotel" {
            return Err(StepError::rejected("no rooms"));
        }
        t.done.push(self.0.to_string());
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Trip) -> Result<(), StepError> {
        Ok(())
    }
}

fn trip() -> SagaDefinition<Trip> {
    SagaDefinition::builder("trip", 1)
        .step("flight", Leg("flight"))
        .step("hotel", Leg("hotel"))
        .step("car", Leg("car"))
        .build()
        .unwrap()
}

/// An engine on PostgreSQL: sagas complete or compensate, starts are
/// idempotent, histories end with one finish, and a second engine opened
/// on the same database finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_runs_sagas_on_postgres() {
    let server = PgServer::start();
    let url = server.create_database("engine").await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let engine = Engine::builder_arc(store.clone())
        .register(trip())
        .owner("solo")
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..40 {
        let input = Trip {
            fail: n % 4 == 0,
            done: Vec::new(),
        };
        let id = engine
            .start("trip", &input, Some(&format!("trip-{n}")))
            .await
            .unwrap();
        assert_eq!(
            engine
                .start("trip", &input, Some(&format!("trip-{n}")))
                .await
                .unwrap(),
            id,
            "same key, same saga"
        );
        ids.push((n, id));
    }
    for (n, id) in &ids {
        let rec = engine.wait(id).await.unwrap();
        let want = if n % 4 == 0 {
            SagaStatus::Compensated
        } else {
            SagaStatus::Completed
        };
        assert_eq!(rec.status(), want, "saga {n}");
        let history = engine.history(id).await.unwrap();
        let finishes = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::SagaFinished { .. }))
            .count();
        assert_eq!(finishes, 1, "saga {n}: {history:?}");
        assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
    engine.shutdown(Duration::from_secs(5)).await;
    assert!(store.list_active().await.unwrap().is_empty());
    assert_eq!(
        store
            .list(Some(SagaStatus::Completed), 100)
            .await
            .unwrap()
            .len(),
        30
    );
    let again = Engine::builder_arc(store)
        .register(trip())
        .owner("second")
        .open()
        .await
        .unwrap();
    assert_eq!(again.running_count(), 0);
    again.shutdown(Duration::from_secs(1)).await;
}

/// Builds the `pg_worker` example in this test's own target directory and
/// profile, and returns its path.
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/postgres-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("debug");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--example", "pg_worker", "--features", "postgres"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example pg_worker failed");
    let bin = profile_dir.join("examples").join("pg_worker");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

const SAGAS_PER_WORKER: u64 = 300;
const STEPS: [&str; 4] = ["reserve", "charge", "award", "confirm"];

/// The test: three engine processes on one database under load,
/// one killed with SIGKILL mid-load. Every saga reaches exactly one terminal
/// state, no effect is applied twice for one key (the ledger refuses and
/// counts the repeats), and the survivors finish the dead process's sagas.
#[test]
fn three_engine_processes_survive_a_sigkill() {
    let worker = worker_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = PgServer::start();
        let url = server.create_database("multi").await;
        // The store's schema exists before the workers race to create it.
        drop(PostgresStore::connect(&url).await.unwrap());
        let spawn = |owner: &str| {
            tokio::process::Command::new(&worker)
                .args(["--url", &url, "--owner", owner])
                .args(["--sagas", &SAGAS_PER_WORKER.to_string()])
                .args(["--concurrency", "16", "--step-ms", "20"])
                .args(["--lease-ttl-ms", "1500", "--deadline-s", "150"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn pg_worker")
        };
        let w0 = spawn("w0");
        let mut victim = spawn("w1");
        let w2 = spawn("w2");

        let db = server.client("multi").await;
        let victim_effects = || async {
            db.query_one("SELECT count(*) FROM effects WHERE applied_by = 'w1'", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0) // the ledger's tables may not exist yet
        };
        let loaded = eventually(Duration::from_secs(60), || async {
            victim_effects().await >= 120
        })
        .await;
        assert!(loaded, "w1 never got going");
        victim.start_kill().expect("SIGKILL w1"); // SIGKILL on Unix
        let status = victim.wait().await.unwrap();
        assert!(!status.success(), "w1 was killed");
        let at_kill = victim_effects().await;

        for (name, child) in [("w0", w0), ("w2", w2)] {
            let out = tokio::time::timeout(Duration::from_secs(170), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("{name} did not finish"))
                .unwrap();
            assert!(
                out.status.success(),
                "{name} failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                server
                    .log()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }

        // Every saga in the database, with its key and final lease.
        let rows = db
            .query(
                "SELECT id, idempotency_key, status, lease_owner, lease_generation FROM sagas",
                &[],
            )
            .await
            .unwrap();
        let finishes: HashMap<String, i64> = db
            .query(
                "SELECT saga_id, count(*) FROM saga_events
                 WHERE event::jsonb->>'event' = 'saga_finished' GROUP BY saga_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let effects: HashMap<String, (String, i64)> = db
            .query("SELECT key, applied_by, generation FROM effects", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let compensations: HashMap<String, bool> = db
            .query("SELECT key, had_effect FROM compensations", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let applied_per_key: Vec<(String, i64)> = db
            .query(
                "SELECT key, count(*) FILTER (WHERE applied) FROM effect_attempts
                 GROUP BY key HAVING count(*) FILTER (WHERE applied) <> 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let refused: i64 = db
            .query_one(
                "SELECT count(*) FROM effect_attempts WHERE NOT applied",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let refused_comp: i64 = db
            .query_one(
                "SELECT count(*) FROM compensation_attempts WHERE NOT applied",
                &[],
            )
            .await
            .unwrap()
            .get(0);

        let mut per_starter: BTreeMap<String, usize> = BTreeMap::new();
        let mut taken_over = 0;
        let mut problems = Vec::new();
        for r in &rows {
            let id: String = r.get(0);
            let key: String = r.get(1);
            let status: String = r.get(2);
            let owner: Option<String> = r.get(3);
            let generation: i64 = r.get(4);
            let (starter, n) = key.split_once('-').expect("key owner-n");
            let n: u64 = n.parse().unwrap();
            *per_starter.entry(starter.to_string()).or_default() += 1;
            let rejects = n.is_multiple_of(5);
            let want = if rejects { "compensated" } else { "completed" };
            if status != want {
                problems.push(format!("{key} ({id}) is {status}, expected {want}"));
            }
            if finishes.get(&id) != Some(&1) {
                problems.push(format!(
                    "{key} ({id}) has {:?} saga_finished events",
                    finishes.get(&id)
                ));
            }
            let fx = |step: &str| format!("{id}:{step}");
            for (i, step) in STEPS.iter().enumerate() {
                let applied = effects.contains_key(&fx(step));
                let compensated = compensations.contains_key(&fx(step));
                let (want_applied, want_comp) = match (rejects, i) {
                    (false, _) => (true, false),
                    (true, 0 | 1) => (true, true),
                    (true, _) => (false, false),
                };
                if applied != want_applied || (i != 2 && compensated != want_comp) {
                    problems.push(format!(
                        "{key} ({id}) step {step}: applied {applied}, compensated {compensated}"
                    ));
                }
            }
            if starter == "w1" && owner.as_deref() != Some("w1") {
                taken_over += 1;
                assert!(
                    generation >= 2,
                    "{key}: taken over at generation {generation}"
                );
            }
        }
        let report = format!(
            "sagas per starter {per_starter:?}; w1 had applied {at_kill} effects when killed; \
             {taken_over} of its sagas finished by survivors; {refused} repeated effects and \
             {refused_comp} repeated compensations refused by the ledger"
        );
        eprintln!("{report}");
        assert!(
            problems.is_empty(),
            "{} problems, first: {:?}\n{report}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
        assert!(
            applied_per_key.is_empty(),
            "effects applied more than once: {applied_per_key:?}"
        );
        assert_eq!(per_starter.get("w0"), Some(&(SAGAS_PER_WORKER as usize)));
        assert_eq!(per_starter.get("w2"), Some(&(SAGAS_PER_WORKER as usize)));
        let victims = per_starter.get("w1").copied().unwrap_or(0);
        assert!(
            victims >= 30 && victims < SAGAS_PER_WORKER as usize,
            "w1 should die mid-load: it started {victims}\n{report}"
        );
        assert!(
            taken_over > 0,
            "the survivors finished none of w1's sagas\n{report}"
        );
        assert!(
            refused > 0,
            "no step was repeated after the kill, so effectively-once was not exercised\n{report}"
        );
        let late: Vec<_> = effects
            .iter()
            .filter(|(_, (by, g))| by != "w1" && *g < 1)
            .collect();
        assert!(late.is_empty(), "effects without a fencing token: {late:?}");
    });
}
