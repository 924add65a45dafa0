//! The defects an outside review found on the real sled store, each as a
//! test that failed before its fix: a stuck saga retried by an operator
//! lost at the next restart, a group commit that a cancelled or panicking
//! flush leader left blocked for ever, an `Engine::start` that a caller
//! going away left without a worker, a damage check that switched
//! itself off when its side file was missing, and a control arriving
//! while a step led a flush, which hung every write of the process.
//!
//! `.ci/run` re-plants each defect with the `sabotage` feature
//! (`SAGA_SABOTAGE=...`, see `src/sabotage.rs`) and requires these tests to
//! fail.

use saga_engine::store::{conformance::sample_record, open_sled_db, FlushGate, HWM_FILE};
use saga_engine::{
    Engine, ManualClock, RetryPolicy, SagaDefinition, SagaStatus, SledStore, Step, StepContext,
    StepError, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous bound for "this must not hang": a hang fails the test, a slow
/// machine does not.
const HANG: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    n: u32,
}

/// Step `a`: succeeds; its compensation fails while `broken` is set.
struct Fragile {
    broken: Arc<AtomicBool>,
    undo_calls: Arc<AtomicU32>,
}

#[saga_engine::async_trait]
impl Step<Data> for Fragile {
    async fn run(&self, _: &StepContext, _: &mut Data) -> Result<(), StepError> {
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        self.undo_calls.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            Err(StepError::retryable("the refund service is down"))
        } else {
            Ok(())
        }
    }
}

/// Step `b`: always says no.
struct Refuses;

#[saga_engine::async_trait]
impl Step<Data> for Refuses {
    async fn run(&self, _: &StepContext, _: &mut Data) -> Result<(), StepError> {
        Err(StepError::rejected("no"))
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        Ok(())
    }
}

/// Succeeds at once.
struct Fine;

#[saga_engine::async_trait]
impl Step<Data> for Fine {
    async fn run(&self, _: &StepContext, _: &mut Data) -> Result<(), StepError> {
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        Ok(())
    }
}

fn fragile_definition(broken: &Arc<AtomicBool>, undo: &Arc<AtomicU32>) -> SagaDefinition<Data> {
    // Two compensation attempts an hour apart, then stuck.
    let comp = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_secs(3600),
        multiplier: 1.0,
        max_backoff: Duration::from_secs(3600),
        jitter: 0.0,
        attempt_timeout: None,
    };
    SagaDefinition::builder("fragile", 1)
        .step(
            "a",
            Fragile {
                broken: broken.clone(),
                undo_calls: undo.clone(),
            },
        )
        .compensation_retry(comp)
        .step("b", Refuses)
        .build()
        .unwrap()
}

/// An engine on a NEW `SledStore` over `dir`, its clock at `clock_ms`.
async fn engine_at(
    dir: &Path,
    clock_ms: u64,
    broken: &Arc<AtomicBool>,
    undo: &Arc<AtomicU32>,
) -> Engine {
    Engine::builder(reopen(dir))
        .clock(Arc::new(ManualClock::new(clock_ms)))
        .register(fragile_definition(broken, undo))
        .open()
        .await
        .unwrap()
}

/// Polls the saga until `undo` compensation calls were made and it sleeps
/// in `compensating` for its next attempt.
async fn until_compensation_waits(
    engine: &Engine,
    id: &saga_engine::SagaId,
    undo: &AtomicU32,
    calls: u32,
) {
    let deadline = Instant::now() + HANG;
    loop {
        let rec = engine.status(id).await.unwrap();
        if undo.load(Ordering::SeqCst) == calls && rec.state.steps[0].wake_at_ms.is_some() {
            assert_eq!(rec.status(), SagaStatus::Compensating);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "compensation call {calls} never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Opens the store, waiting for a previous engine's last task in this
/// process to let go of sled's directory lock.
fn reopen(dir: &Path) -> SledStore {
    let deadline = Instant::now() + HANG;
    loop {
        match SledStore::open(dir) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the store does not reopen: {e}"),
        }
    }
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + HANG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Stuck -> operator retry -> the compensation fails again, with an hour's
/// backoff -> shutdown -> a NEW `SledStore` on the same directory: the saga
/// must be resumed (its timer included) and end compensated. Before the
/// fix, the reopened store did not list it as active: it sat in
/// `compensating` for ever with no worker, and `retry` refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_saga_retried_by_an_operator_resumes_after_a_restart_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let undo = Arc::new(AtomicU32::new(0));
    let hour = 3600 * 1000;
    let t0 = now_ms();

    // First process: step b says no, a's compensation fails; next try in an hour.
    let engine = engine_at(dir.path(), t0, &broken, &undo).await;
    let id = engine
        .start("fragile", &Data::default(), None)
        .await
        .unwrap();
    until_compensation_waits(&engine, &id, &undo, 1).await;
    engine.shutdown(Duration::from_secs(5)).await;
    drop(engine);

    // Second process, two hours later: the timer fires, the second attempt
    // fails, the saga is stuck; the operator retries, that attempt fails
    // too, and the next one is an hour away when this process stops.
    let engine = engine_at(dir.path(), t0 + 2 * hour, &broken, &undo).await;
    let rec = tokio::time::timeout(HANG, engine.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status(), SagaStatus::Stuck);
    assert_eq!(undo.load(Ordering::SeqCst), 2);
    engine.retry(&id).await.unwrap();
    until_compensation_waits(&engine, &id, &undo, 3).await;
    engine.shutdown(Duration::from_secs(5)).await;
    drop(engine);

    // Third process, with the refund service back: the saga must be
    // resumed from the active index, its timer fire, and the saga end.
    broken.store(false, Ordering::SeqCst);
    let store = reopen(dir.path());
    let active = store.list_active().await.unwrap();
    assert_eq!(
        active.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![id.clone()],
        "the operator-retried saga must be resumed after a restart"
    );
    drop(store);
    let engine = engine_at(dir.path(), t0 + 4 * hour, &broken, &undo).await;
    let rec = tokio::time::timeout(HANG, engine.wait(&id))
        .await
        .expect("the resumed saga ends")
        .unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(undo.load(Ordering::SeqCst), 4);
}

/// The caller leading a flush goes away mid-flush (a timeout around the
/// write, on a current-thread runtime where the flush runs on a blocking
/// thread): later writers must not wait for ever on a leader that is gone.
#[tokio::test]
async fn a_flush_leader_cancelled_mid_flush_does_not_block_later_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let gate = FlushGate::default();
    store.set_flush_hook(Some(gate.hook()));
    let first = sample_record("first", None);
    {
        let leading = store.create(&first, &[]);
        tokio::pin!(leading);
        tokio::time::timeout(HANG, async {
            tokio::select! {
                r = &mut leading => panic!("the flush is held at the gate, yet the write returned {r:?}"),
                () = gate.wait_entered() => {}
            }
        })
        .await
        .expect("the first write's flush never reached the gate");
        // Dropped here: the leader goes away while its flush is held.
    }
    gate.open();
    let second = sample_record("second", None);
    let r = tokio::time::timeout(HANG, store.create(&second, &[]))
        .await
        .expect("a later writer hangs: the cancelled leader never stepped down");
    assert!(r.is_ok(), "{r:?}");
    // The second flush covered the first write too.
    assert!(store.get(&first.id).await.unwrap().is_some());
    assert!(store.get(&second.id).await.unwrap().is_some());
}

/// A flush that panics (a bug in sled, say) must fail the writers waiting
/// on it, and every later one, instead of leaving them waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_flush_fails_later_writers_instead_of_hanging_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    store.set_flush_hook(Some(Arc::new(|| panic!("planted: the flush panics"))));
    let s = store.clone();
    let first = tokio::spawn(async move { s.create(&sample_record("p1", None), &[]).await });
    let outcome = first.await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "the leader's own call panics: {outcome:?}"
    );
    store.set_flush_hook(None);
    let later = tokio::time::timeout(HANG, store.create(&sample_record("p2", None), &[]))
        .await
        .expect("a later writer hangs: the panicking leader never stepped down");
    match later {
        Err(StoreError::Io(msg)) => assert!(msg.contains("panicked"), "{msg}"),
        other => panic!("after a panicking flush the store must fail writes: {other:?}"),
    }
}

/// A caller of `Engine::start` that goes away while its record is being
/// made durable (a timeout around `start`): the record may already be in
/// the store, so its worker must still be spawned and the saga must end.
#[tokio::test]
async fn a_start_whose_caller_went_away_still_gets_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let gate = FlushGate::default();
    store.set_flush_hook(Some(gate.hook()));
    let engine = Engine::builder_arc(store.clone())
        .register(
            SagaDefinition::<Data>::builder("fine", 1)
                .step("a", Fine)
                .step("b", Fine)
                .build()
                .unwrap(),
        )
        .open()
        .await
        .unwrap();
    let gone = tokio::time::timeout(
        Duration::from_millis(50),
        engine.start("fine", &Data::default(), Some("order-1")),
    )
    .await;
    assert!(gone.is_err(), "the start's flush is held at the gate");
    gate.open();
    let deadline = Instant::now() + HANG;
    let id = loop {
        if let Some(id) = engine.find_by_key("order-1").await.unwrap() {
            break id;
        }
        assert!(Instant::now() < deadline, "the record never appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The worker is spawned once the flush is done: the saga must end.
    let deadline = Instant::now() + HANG;
    loop {
        let rec = engine.status(&id).await.unwrap();
        if rec.status() == SagaStatus::Completed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saga never ran: a start whose caller went away has no worker ({:?})",
            rec.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And a replay of the key returns the same saga.
    let again = engine
        .start("fine", &Data::default(), Some("order-1"))
        .await
        .unwrap();
    assert_eq!(again, id);
}

/// A store that has flushed (sled holds a high-water mark) and is reopened
/// with its side file in each broken shape.
async fn open_with_broken_mark(break_it: impl FnOnce(&Path)) -> Result<SledStore, StoreError> {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create(&sample_record("kept", None), &[]).await.unwrap();
    }
    break_it(&dir.path().join(HWM_FILE));
    let r = SledStore::open(dir.path());
    drop(dir);
    r
}

fn assert_damaged(r: Result<SledStore, StoreError>, what: &str) {
    match r {
        Err(StoreError::Damaged { detail, .. }) => assert!(detail.contains(HWM_FILE), "{detail}"),
        Err(e) => panic!("{what}: expected Damaged, got {e}"),
        Ok(_) => panic!("{what}: the store opened; the damage check switched itself off"),
    }
}

/// The damage check fails closed: a mark in sled with the side file
/// missing, short or unreadable is refused, not taken as "no check".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_damage_check_fails_closed_when_its_side_file_is_missing_short_or_unreadable() {
    assert_damaged(
        open_with_broken_mark(|f| std::fs::remove_file(f).unwrap()).await,
        "missing",
    );
    assert_damaged(
        open_with_broken_mark(|f| std::fs::write(f, b"short").unwrap()).await,
        "short",
    );
    assert_damaged(
        open_with_broken_mark(|f| {
            // Root reads any file: a directory in its place is unreadable.
            std::fs::remove_file(f).unwrap();
            std::fs::create_dir(f).unwrap();
        })
        .await,
        "unreadable",
    );
    // A new directory is not damaged, and its file is whole at once.
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join(HWM_FILE)).unwrap().len(), 16);
    drop(s);
    assert!(SledStore::open(dir.path()).is_ok());
}

/// A second opener of a live store's directory must not delete the
/// snapshot the live process may be writing: it is refused first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_opener_does_not_remove_a_live_stores_snapshot_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let live = SledStore::open(dir.path()).unwrap();
    live.create(&sample_record("live", None), &[])
        .await
        .unwrap();
    let snap = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&snap, b"being written by the live process").unwrap();
    let second = open_sled_db(dir.path());
    assert!(second.is_err(), "the directory is in use");
    assert!(
        snap.exists(),
        "a second opener deleted the live process's snapshot in progress"
    );
    drop(live);
    // Once nobody holds the directory, the half-written file is cleared.
    let store = reopen(dir.path());
    assert!(!snap.exists());
    assert!(store
        .get(&sample_record("live", None).id)
        .await
        .unwrap()
        .is_some());
}

/// `Engine::durable` waits for a flush that is under way for someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_durability_barrier_waits_for_a_flush_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let gate = FlushGate::default();
    store.set_flush_hook(Some(gate.hook()));
    let s = store.clone();
    let writer = tokio::spawn(async move { s.create(&sample_record("w", None), &[]).await });
    until("the writer's flush to start", || gate.entered()).await;
    let released = Arc::new(AtomicBool::new(false));
    let r = released.clone();
    let s = store.clone();
    let barrier = tokio::spawn(async move {
        s.durable().await.unwrap();
        r.load(Ordering::SeqCst)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    released.store(true, Ordering::SeqCst);
    gate.open();
    assert!(
        barrier.await.unwrap(),
        "the barrier returned while the flush was still held"
    );
    writer.await.unwrap().unwrap();
}

/// Step `pay`: writes a participant's record to the engine's own sled
/// database and waits for it to be durable through the engine's group
/// commit (as an in-process participant does for a write it acknowledges
/// to someone else), with the store's next flush held at `gate`.
struct LeadsAFlush {
    store: Arc<SledStore>,
    gate: FlushGate,
}

#[saga_engine::async_trait]
impl Step<Data> for LeadsAFlush {
    async fn run(&self, ctx: &StepContext, _: &mut Data) -> Result<(), StepError> {
        self.store
            .db()
            .open_tree("participant")
            .and_then(|t| t.insert(ctx.idempotency_key.as_bytes(), &b"done"[..]))
            .map_err(StepError::retryable)?;
        self.store.set_flush_hook(Some(self.gate.hook()));
        self.store
            .durability()
            .durable()
            .await
            .map_err(StepError::retryable)
    }
    async fn compensate(&self, _: &StepContext, _: &Data) -> Result<(), StepError> {
        Ok(())
    }
}

/// A control (here an operator's cancel) arriving while a step waits for
/// the group commit, with that step leading the flush: the worker records
/// the control while the step is still polled, so the step's flush
/// completes, the control's own write follows it, and the saga ends. With
/// the step left unpolled meanwhile, the leader never announced its flush
/// and every write of the process waited on it for ever (found when the
/// card vault's forget joined the group commit: a booking's cancel hung the
/// server). On a current-thread runtime the flush runs on a blocking
/// thread, so the leader is a suspended future while it flushes.
#[tokio::test]
async fn a_control_arriving_while_a_step_leads_a_flush_does_not_hang_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let gate = FlushGate::default();
    let def = SagaDefinition::<Data>::builder("leads", 1)
        .step(
            "pay",
            LeadsAFlush {
                store: store.clone(),
                gate: gate.clone(),
            },
        )
        .step("confirm", Refuses)
        .build()
        .unwrap();
    let engine = Engine::builder_arc(store.clone())
        .register(def)
        .open()
        .await
        .unwrap();
    let id = engine.start("leads", &Data::default(), None).await.unwrap();
    tokio::time::timeout(HANG, gate.wait_entered())
        .await
        .expect("the step's flush never reached the gate");
    let canceller = {
        let engine = engine.clone();
        let id = id.clone();
        tokio::spawn(async move { engine.cancel(&id, "the customer changed their mind").await })
    };
    // The worker records the cancel while the step's flush is held: its
    // write is applied (readable, not yet durable) and waits for a flush.
    tokio::time::timeout(HANG, async {
        while !store
            .get(&id)
            .await
            .unwrap()
            .is_some_and(|r| r.state.cancel_requested)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cancel was never recorded");
    gate.open();
    let cancelled = tokio::time::timeout(HANG, canceller)
        .await
        .expect("the cancel hangs: the step leading the flush was left unpolled")
        .unwrap();
    assert!(cancelled.is_ok(), "{cancelled:?}");
    let rec = tokio::time::timeout(HANG, engine.wait(&id))
        .await
        .expect("the saga never ends")
        .unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated, "{:?}", rec.state);
    // The store still takes writes.
    tokio::time::timeout(HANG, store.create(&sample_record("after", None), &[]))
        .await
        .expect("a later write hangs")
        .unwrap();
}
