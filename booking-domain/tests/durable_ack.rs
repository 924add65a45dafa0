//! Every acknowledgement of a booking follows a durable write, a replay of
//! an idempotency key included: on the real sled store (shared, as in the
//! demo server, by the engine and the participants), with its flush made
//! slow or failing through `SledStore::set_flush_hook`.
//!
//! Before the fix, `start_booking`'s same-key shortcut answered from sled's
//! memory: a second request with the key arriving while the first waited
//! for its flush, or a client retrying after a failed flush (as a 503's
//! `Retry-After` invites), got the saga id of a booking a crash could
//! still lose. `.ci/run` re-plants that defect
//! (`SAGA_SABOTAGE=replay-before-durable`) and requires these tests to fail.

#[path = "common/mod.rs"]
mod common;

use booking_domain::booking_saga::{
    booking_definition, start_booking, BookingError, BookingRequest, BookingServices,
};
use booking_domain::catalog::{Catalog, Flight};
use chrono::NaiveDate;
use saga_engine::store::FlushGate;
use saga_engine::{Engine, SagaStatus, SledStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);

struct World {
    engine: Engine,
    store: Arc<SledStore>,
    services: BookingServices,
    flight: Flight,
    date: NaiveDate,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    let db = saga_engine::store::open_sled_db(&db_dir).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = common::economy_flight(&catalog);
    let services = BookingServices::local(&db, catalog).unwrap();
    let store = Arc::new(SledStore::with_db_at(db, &db_dir).unwrap());
    let engine = Engine::builder_arc(store.clone())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    World {
        engine,
        store,
        services,
        flight,
        date,
        _dir: dir,
    }
}

impl World {
    fn request(&self) -> BookingRequest {
        common::ada_request(&self.flight, self.date)
    }
}

/// A second request with the key, arriving while the first one's flush is
/// under way, is answered only after that flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_same_key_start_during_a_slow_flush_waits_for_it() {
    let w = Arc::new(world().await);
    let gate = FlushGate::default();
    w.store.set_flush_hook(Some(gate.hook()));
    let w1 = w.clone();
    let first = tokio::spawn(async move {
        start_booking(&w1.engine, &w1.services, &w1.request(), "key-1").await
    });
    let deadline = Instant::now() + HANG;
    while !gate.entered() || w.engine.find_by_key("key-1").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the first start never reached its flush"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The record is in sled's memory, its flush held at the gate.
    let flushed = Arc::new(AtomicBool::new(false));
    let (w2, f2) = (w.clone(), flushed.clone());
    let replay = tokio::spawn(async move {
        let r = start_booking(&w2.engine, &w2.services, &w2.request(), "key-1").await;
        (r, f2.load(Ordering::SeqCst))
    });
    // Ample time for an in-memory answer (microseconds) to come back early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    flushed.store(true, Ordering::SeqCst);
    gate.open();
    let id = first.await.unwrap().unwrap();
    let (replayed, after_flush) = tokio::time::timeout(HANG, replay).await.unwrap().unwrap();
    assert_eq!(replayed.unwrap(), id, "the replay names the same booking");
    assert!(
        after_flush,
        "the replayed key was acknowledged before the booking was durable"
    );
    let rec = tokio::time::timeout(HANG, w.engine.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
}

/// After a failed flush (the first request got a storage error, a 503),
/// the client's retry with the same key must not be acknowledged either:
/// the booking it would name may not survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_key_retry_after_a_storage_fault_is_not_acknowledged() {
    let w = world().await;
    w.store
        .set_flush_hook(Some(Arc::new(|| Err("planted: EIO from the disk".into()))));
    let first = start_booking(&w.engine, &w.services, &w.request(), "key-2").await;
    assert!(
        matches!(first, Err(BookingError::Engine(_))),
        "the first start fails with a storage error: {first:?}"
    );
    // The write is still in sled's memory: the shortcut can see it.
    assert!(w.engine.find_by_key("key-2").await.unwrap().is_some());
    let retry = start_booking(&w.engine, &w.services, &w.request(), "key-2").await;
    match retry {
        Err(BookingError::Engine(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("EIO"), "{msg}");
        }
        Ok(id) => panic!("the retry was acknowledged with {id}, which is not durable"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}
