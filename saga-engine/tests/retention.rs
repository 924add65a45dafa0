//! Retention through the engine on the real sled store: finished sagas are
//! purged by the background task after the window, stuck and running ones
//! never; a purged saga's key is refused with `Error::KeyRetired` until the
//! key window ends, then forgotten; purged sagas are exported first; the
//! store reopens (its damage check intact) with the right count.

use saga_engine::{
    Engine, Error, ManualClock, Retention, RetryPolicy, SagaDefinition, SagaStatus, SledStore,
    Step, StepContext, StepError, Store,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HANG: Duration = Duration::from_secs(30);
const HOUR: u64 = 3_600_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    mode: String,
}

/// `hold`: waits until released; `stuck`: compensation always fails after
/// a rejection; otherwise succeeds.
struct Scripted {
    release: Arc<AtomicBool>,
}

#[saga_engine::async_trait]
impl Step<Data> for Scripted {
    async fn run(&self, _: &StepContext, d: &mut Data) -> Result<(), StepError> {
        match d.mode.as_str() {
            "hold" => {
                while !self.release.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    async fn compensate(&self, _: &StepContext, d: &Data) -> Result<(), StepError> {
        if d.mode == "stuck" {
            Err(StepError::retryable("never"))
        } else {
            Ok(())
        }
    }
}

struct RejectsStuck;

#[saga_engine::async_trait]
impl Step<Data> for RejectsStuck {
    async fn run(&self, _: &StepContext, d: &mut Data) -> Result<(), StepError> {
        if d.mode == "stuck" {
            Err(StepError::rejected("no"))
        } else {
            Ok(())
        }
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        Ok(())
    }
}

fn definition(release: &Arc<AtomicBool>) -> SagaDefinition<Data> {
    SagaDefinition::builder("kept", 1)
        .step(
            "a",
            Scripted {
                release: release.clone(),
            },
        )
        .compensation_retry(RetryPolicy::no_retry())
        .step("b", RejectsStuck)
        .build()
        .unwrap()
}

fn data(mode: &str) -> Data {
    Data { mode: mode.into() }
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + HANG;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sagas_are_purged_after_the_window_and_their_keys_refused_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("purged.jsonl");
    let store_dir = dir.path().join("store");
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Arc::new(ManualClock::new(t0));
    let release = Arc::new(AtomicBool::new(false));
    let policy = Retention::new(Duration::from_secs(3600))
        .keys(Duration::from_secs(3 * 3600))
        .every(Duration::from_millis(10))
        .batch(2)
        .export_to(&export);
    let store = Arc::new(SledStore::open(&store_dir).unwrap());
    let engine = Engine::builder_arc(store.clone())
        .clock(clock.clone())
        .retention(policy)
        .register(definition(&release))
        .open()
        .await
        .unwrap();

    let mut done = Vec::new();
    for i in 0..5 {
        let id = engine
            .start("kept", &data("ok"), Some(&format!("order-{i}")))
            .await
            .unwrap();
        assert_eq!(
            engine.wait(&id).await.unwrap().status(),
            SagaStatus::Completed
        );
        done.push(id);
    }
    let stuck = engine
        .start("kept", &data("stuck"), Some("stuck-1"))
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&stuck).await.unwrap().status(),
        SagaStatus::Stuck
    );
    let held = engine
        .start("kept", &data("hold"), Some("held-1"))
        .await
        .unwrap();
    assert_eq!(store.saga_count(), Some(7));

    // Inside the window nothing goes.
    clock.advance(HOUR / 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.saga_count(),
        Some(7),
        "nothing is purged inside the window"
    );

    // Past it, the finished ones go, in batches; stuck and running stay.
    clock.advance(HOUR);
    until("the finished sagas to be purged", || async {
        store.saga_count() == Some(2)
    })
    .await;
    for id in &done {
        assert!(matches!(engine.status(id).await, Err(Error::NotFound(_))));
        assert!(matches!(engine.history(id).await, Err(Error::NotFound(_))));
    }
    assert_eq!(
        engine.status(&stuck).await.unwrap().status(),
        SagaStatus::Stuck
    );
    assert_eq!(
        engine.status(&held).await.unwrap().status(),
        SagaStatus::Running
    );

    // A purged saga's key is refused, not replayed and not restarted.
    match engine.start("kept", &data("ok"), Some("order-0")).await {
        Err(Error::KeyRetired { key, .. }) => assert_eq!(key, "order-0"),
        other => panic!("a retired key must be refused: {other:?}"),
    }
    assert_eq!(engine.find_by_key("order-0").await.unwrap(), None);

    // The export holds each purged saga once, with its history.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let mut exported: Vec<String> = lines
        .iter()
        .map(|l| {
            assert!(l["history"].as_array().unwrap().len() >= 4);
            l["record"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    exported.sort();
    let mut expected: Vec<String> = done.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(exported, expected);

    // The held saga finishes; it is purged only a window after that.
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        engine.wait(&held).await.unwrap().status(),
        SagaStatus::Completed
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.saga_count(), Some(2));

    // Past the key window the key is forgotten and starts a new saga.
    clock.advance(3 * HOUR);
    until("the held saga to be purged", || async {
        store.saga_count() == Some(1)
    })
    .await;
    let deadline = Instant::now() + HANG;
    let again = loop {
        match engine.start("kept", &data("ok"), Some("order-0")).await {
            Ok(id) => break Some(id),
            Err(Error::KeyRetired { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "the retired key is never forgotten"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let again = again.unwrap();
    assert!(!done.contains(&again));
    assert_eq!(
        engine.wait(&again).await.unwrap().status(),
        SagaStatus::Completed
    );
    engine.shutdown(Duration::from_secs(5)).await;
    drop(engine);
    drop(store);

    // The store reopens (the damage check is not fooled by purges) with
    // the stuck saga and the new one.
    let deadline = Instant::now() + HANG;
    let store = loop {
        match SledStore::open(&store_dir) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "does not reopen: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(store.saga_count(), Some(2));
    assert!(store.get(&stuck).await.unwrap().is_some());
}
