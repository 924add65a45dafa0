//! Retention on PostgreSQL (a module of `tests/postgres.rs`): the store
//! conformance checks for retention, the candidates read through their
//! index, a version-1 database upgraded at connect, purges racing with
//! claims and updates from other pools, and two engine processes purging
//! one database.

use super::pg_support::{eventually, PgServer};
use super::{fresh_store, worker_binary};
use saga_engine::store::{conformance, CreateOutcome, PostgresStore};
use saga_engine::{SagaId, SagaStatus, Store};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_retention_checks() {
    let server = PgServer::start();
    let counter = AtomicUsize::new(0);
    conformance::run_retention(|| fresh_store(&server, &counter)).await;
}

/// `finished_before` reads the `sagas_finished` index: with sequential
/// scans priced out, the index's scan count goes up by the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sagas_are_found_through_their_index() {
    let server = PgServer::start();
    let url = server.create_database("finidx").await;
    drop(PostgresStore::connect(&url).await.unwrap());
    let admin = server.client("postgres").await;
    admin
        .batch_execute("ALTER DATABASE finidx SET enable_seqscan = off")
        .await
        .unwrap();
    let store = PostgresStore::connect(&url).await.unwrap();
    for i in 0..50u64 {
        let mut r = conformance::sample_record(&format!("f{i:02}"), None);
        store.create(&r, &[]).await.unwrap();
        if i % 2 == 0 {
            r.revision = 1;
            r.state.status = SagaStatus::Completed;
            r.updated_at_ms = 1_000 + i;
            store.update(&r, &[]).await.unwrap();
        }
    }
    let db = server.client("finidx").await;
    let scans = || async {
        db.query_one(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'sagas_finished'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let before = scans().await;
    let got = store.finished_before(1_010, 100).await.unwrap();
    let ids: Vec<_> = got.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["f00", "f02", "f04", "f06", "f08"]);
    // Other backends' counters reach the view when they go idle (≤ 10 s).
    let used = eventually(Duration::from_secs(30), || async { scans().await > before }).await;
    assert!(used, "finished_before did not use the sagas_finished index");
}

/// The tables as version 1 of this backend created them.
const V1_SCHEMA: &str = "
CREATE TABLE saga_engine_schema (version INT NOT NULL);
INSERT INTO saga_engine_schema VALUES (1);
CREATE TABLE sagas (
    id TEXT PRIMARY KEY, definition TEXT NOT NULL, version INT NOT NULL,
    idempotency_key TEXT UNIQUE, status TEXT NOT NULL, revision BIGINT NOT NULL,
    lease_owner TEXT, lease_generation BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT NOT NULL DEFAULT 0, created_ms BIGINT NOT NULL,
    record TEXT NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX sagas_active ON sagas (id) WHERE status IN ('running', 'compensating');
CREATE INDEX sagas_status ON sagas (status, id);
CREATE TABLE saga_events (
    saga_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (saga_id, seq)
);
";

/// A database written by version 1 keeps working: the columns and indexes
/// are added at connect, its finished sagas get their finish time from
/// their records (a `\u0000` in the data included), and they can be purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_upgraded_at_connect() {
    let server = PgServer::start();
    let url = server.create_database("old").await;
    let db = server.client("old").await;
    db.batch_execute(V1_SCHEMA).await.unwrap();
    let mut done = conformance::sample_record("old-done", Some("old-key"));
    done.state.status = SagaStatus::Completed;
    done.updated_at_ms = 777;
    done.data = serde_json::json!({"text": "nul \u{0}", "updated_at_ms": 1});
    let running = conformance::sample_record("old-running", Some("run-key"));
    // Past its deadline after the pivot; a finished one and one whose data
    // only mentions the word are not overdue.
    let mut late = conformance::sample_record("old-late", Some("late-key"));
    late.state.overdue = true;
    let mut wordy = conformance::sample_record("old-wordy", Some("wordy-key"));
    wordy.data = serde_json::json!({"overdue": true});
    for r in [&done, &running, &late, &wordy] {
        db.execute(
            "INSERT INTO sagas (id, definition, version, idempotency_key, status, revision,
                 created_ms, record) VALUES ($1, 'conformance', 1, $2, $3, 0, 1, $4)",
            &[
                &r.id.as_str(),
                &r.idempotency_key,
                &r.status().as_str(),
                &serde_json::to_string(r).unwrap(),
            ],
        )
        .await
        .unwrap();
    }

    let store = PostgresStore::connect(&url).await.unwrap();
    let version: i32 = db
        .query_one("SELECT version FROM saga_engine_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 4);
    let overdue = store
        .list_page(
            &saga_engine::store::SagaFilter {
                overdue: true,
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let ids: Vec<_> = overdue.records.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["old-late"], "the overdue flag from the records");
    for r in [&late, &wordy] {
        db.execute("DELETE FROM sagas WHERE id = $1", &[&r.id.as_str()])
            .await
            .unwrap();
    }
    assert_eq!(store.get(&done.id).await.unwrap(), Some(done.clone()));
    // Version 3 counted the old rows and lists them.
    let counts = store.status_counts().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![("completed".to_string(), 1), ("running".to_string(), 1)]
    );
    let page = store
        .list_page(&Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert!(store.finished_before(777, 10).await.unwrap().is_empty());
    let found = store.finished_before(778, 10).await.unwrap();
    assert_eq!(found, vec![done.clone()], "finish time from the record");
    assert_eq!(
        store
            .purge(&[done.id.clone(), running.id.clone()], 900)
            .await
            .unwrap(),
        1
    );
    let again = conformance::sample_record("new", Some("old-key"));
    assert_eq!(
        store.create(&again, &[]).await.unwrap(),
        CreateOutcome::Retired { purged_at_ms: 900 }
    );
    assert_eq!(store.list_active().await.unwrap().len(), 1);
    assert_eq!(
        store
            .status_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("running".to_string(), 1)]
    );
    // A second connect finds the schema current and changes nothing.
    drop(PostgresStore::connect(&url).await.unwrap());
    assert_eq!(
        store.find_by_key("run-key").await.unwrap(),
        Some(running.id)
    );
}

/// Purgers in their own pools (as other processes would be) race with
/// claimers that drive sagas to their end, some through `Stuck` and an
/// operator's retry. One purger purges what `finished_before` lists, the
/// other blindly asks for every saga: the store's own check must keep
/// running and stuck sagas (any update of a purged saga fails, and every
/// update here unwraps), and each saga is counted purged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_racing_with_claims_take_each_finished_saga_once() {
    const N: usize = 120;
    let server = PgServer::start();
    let url = server.create_database("race").await;
    let seed = PostgresStore::connect(&url).await.unwrap();
    let all: Vec<SagaId> = (0..N)
        .map(|i| SagaId::from_raw(format!("r{i:03}")))
        .collect();
    for id in &all {
        let key = format!("key-{id}");
        seed.create(&conformance::sample_record(id.as_str(), Some(&key)), &[])
            .await
            .unwrap();
    }
    let runners_done = Arc::new(AtomicUsize::new(0));
    let mut runners = Vec::new();
    for w in 0..2 {
        let store = Arc::new(PostgresStore::connect_with_pool(&url, 4).await.unwrap());
        let done = runners_done.clone();
        runners.push(tokio::spawn(async move {
            let mut finished = 0;
            loop {
                let got = store
                    .claim(&format!("w{w}"), 1_000, 600_000, 3)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                for mut r in got {
                    let n: usize = r.id.as_str()[1..].parse().unwrap();
                    let path: &[SagaStatus] = if n.is_multiple_of(3) {
                        &[
                            SagaStatus::Compensating,
                            SagaStatus::Stuck,
                            SagaStatus::Compensating,
                            SagaStatus::Compensated,
                        ]
                    } else {
                        &[SagaStatus::Running, SagaStatus::Completed]
                    };
                    for status in path {
                        r.revision += 1;
                        r.state.status = *status;
                        r.updated_at_ms = 2_000 + r.revision;
                        store
                            .update(&r, &[])
                            .await
                            .unwrap_or_else(|e| panic!("{} to {status:?}: {e}", r.id));
                        tokio::task::yield_now().await;
                    }
                    finished += 1;
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            finished
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut purgers = Vec::new();
    for blind in [false, true] {
        let store = Arc::new(PostgresStore::connect_with_pool(&url, 2).await.unwrap());
        let all = all.clone();
        let stop = stop.clone();
        purgers.push(tokio::spawn(async move {
            let mut purged = 0;
            while !stop.load(Ordering::SeqCst) {
                let ids = if blind {
                    all.clone()
                } else {
                    let batch = store.finished_before(u64::MAX, 16).await.unwrap();
                    batch.into_iter().map(|r| r.id).collect()
                };
                purged += store.purge(&ids, 5_000).await.unwrap();
                tokio::task::yield_now().await;
            }
            purged
        }));
    }
    let mut finished = 0;
    for r in runners {
        finished += r.await.unwrap();
    }
    assert_eq!(finished, N, "every saga driven to its end");
    // Let the purgers take the last ones, then stop them.
    let cleared = eventually(Duration::from_secs(30), || async {
        seed.list(None, 1).await.unwrap().is_empty()
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut purged = 0;
    for p in purgers {
        purged += p.await.unwrap();
    }
    assert!(cleared, "finished sagas left unpurged");
    assert_eq!(purged, N, "each saga counted purged exactly once");
    assert_eq!(runners_done.load(Ordering::SeqCst), 2);
    for id in &all {
        assert!(seed.history(id).await.unwrap().is_empty());
        let again = conformance::sample_record(&format!("{id}-again"), Some(&format!("key-{id}")));
        assert_eq!(
            seed.create(&again, &[]).await.unwrap(),
            CreateOutcome::Retired {
                purged_at_ms: 5_000
            },
            "{id}'s key"
        );
    }
}

/// Two engine processes on one database, both running retention passes
/// with a short window while they work: no saga is purged twice (the
/// processes' purge counts add up to the tombstones) and none is purged
/// before it finished (every saga's effects, purged or not, are those of a
/// finished saga, and no live saga is active).
#[test]
fn two_engine_processes_with_retention_purge_each_saga_once() {
    const SAGAS: u64 = 120;
    let worker = worker_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = PgServer::start();
        let url = server.create_database("retain").await;
        drop(PostgresStore::connect(&url).await.unwrap());
        let spawn = |owner: &str| {
            tokio::process::Command::new(&worker)
                .args(["--url", &url, "--owner", owner])
                .args(["--sagas", &SAGAS.to_string()])
                .args(["--concurrency", "8", "--step-ms", "4"])
                .args(["--lease-ttl-ms", "2000", "--deadline-s", "100"])
                .args(["--retention-ms", "50"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn pg_worker")
        };
        let children = [("a", spawn("a")), ("b", spawn("b"))];
        let mut purged_by_workers = 0;
        for (name, child) in children {
            let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("{name} did not finish"))
                .unwrap();
            assert!(
                out.status.success(),
                "{name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line: serde_json::Value =
                serde_json::from_slice(out.stdout.trim_ascii()).expect("one JSON line");
            purged_by_workers += line["purged"].as_u64().expect("purged count");
        }
        let db = server.client("retain").await;
        let rows = db
            .query("SELECT id, idempotency_key, status FROM sagas", &[])
            .await
            .unwrap();
        assert_eq!(rows.len() as u64, 2 * SAGAS, "one row per saga");
        let effects: HashSet<String> = db
            .query("SELECT key FROM effects", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let compensated: HashSet<String> = db
            .query("SELECT key FROM compensations", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let events: HashMap<String, i64> = db
            .query(
                "SELECT saga_id, count(*) FROM saga_events GROUP BY saga_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut tombstones = 0;
        let mut problems = Vec::new();
        for r in &rows {
            let (id, key, status): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let n: u64 = key.split_once('-').unwrap().1.parse().unwrap();
            let rejects = n.is_multiple_of(5);
            match status.as_str() {
                "purged" => {
                    tombstones += 1;
                    if events.contains_key(&id) {
                        problems.push(format!("{key}: purged with its history"));
                    }
                }
                "completed" if !rejects => {}
                "compensated" if rejects => {}
                other => problems.push(format!("{key} ({id}) is {other}")),
            }
            for (i, step) in super::STEPS.iter().enumerate() {
                let fx = format!("{id}:{step}");
                let want = (!rejects || i < 2, rejects && i < 2);
                let got = (effects.contains(&fx), compensated.contains(&fx));
                if got != want && !(i == 2 && got.0 == want.0) {
                    problems.push(format!("{key} ({id}) {step}: {got:?}, want {want:?}"));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:?}");
        eprintln!(
            "{tombstones} of {} sagas purged by two processes' retention passes",
            2 * SAGAS
        );
        assert_eq!(
            purged_by_workers, tombstones,
            "the processes' purge counts must add up to the purged sagas"
        );
        assert!(
            tombstones >= SAGAS,
            "retention purged only {tombstones} sagas: the race was not exercised"
        );
    });
}
