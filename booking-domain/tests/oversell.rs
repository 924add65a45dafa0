//! Inventory under pressure: concurrent holds of mixed sizes, duplicate
//! retries of the same key racing each other, releases racing the holds they
//! compensate, an observer checking the invariant while it all runs, and a
//! property test against a reference model that restarts the database
//! between operations.

use booking_domain::inventory::{
    HoldLookup, HoldRequest, HoldState, Inventory, InventoryError, LocalInventory, ReleaseOutcome,
};
use booking_domain::{Cabin, FlightId};
use chrono::NaiveDate;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Opens the database at `path` again. sled releases its file lock from a
/// background thread shortly after the last handle drops, so retry briefly.
fn reopen(path: &std::path::Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 7, 14).unwrap()
}

fn flight() -> FlightId {
    FlightId("ZZ9-1".into())
}

fn req(seats: u32) -> HoldRequest {
    HoldRequest {
        flight: flight(),
        date: date(),
        cabin: Cabin::Business,
        seats,
    }
}

/// Checks the counters against the holds themselves.
async fn assert_consistent(inv: &dyn Inventory, capacity: u32) {
    let totals = inv
        .totals(&flight(), date(), Cabin::Business)
        .await
        .unwrap();
    let holds = inv.all_holds().await.unwrap();
    let sum = |state| {
        holds
            .iter()
            .filter(|h| h.state == state)
            .map(|h| h.seats)
            .sum::<u32>()
    };
    assert_eq!(totals.capacity, capacity);
    assert_eq!(totals.held, sum(HoldState::Held));
    assert_eq!(totals.confirmed, sum(HoldState::Confirmed));
    assert!(totals.held + totals.confirmed <= capacity, "oversold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_concurrent_traffic_never_oversells() {
    const CAPACITY: u32 = 23;
    const SAGAS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let inv: Arc<dyn Inventory> = Arc::new(LocalInventory::open(&db).unwrap());
    inv.set_capacity(&flight(), date(), Cabin::Business, CAPACITY)
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let inv = inv.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut looks = 0u32;
            while !done.load(Ordering::SeqCst) {
                let t = inv
                    .totals(&flight(), date(), Cabin::Business)
                    .await
                    .unwrap();
                assert!(t.held + t.confirmed <= CAPACITY, "oversold: {t:?}");
                looks += 1;
                tokio::task::yield_now().await;
            }
            looks
        })
    };

    let mut tasks = Vec::new();
    for i in 0..SAGAS {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let key = format!("saga-{i}/hold");
            let seats = rng.gen_range(1..=3);
            // The engine may send the same step twice at once (a retry after
            // a timeout overlapping the first attempt).
            let request = req(seats);
            let mut attempts = (0..2)
                .map(|_| {
                    let (inv, key, request) = (inv.clone(), key.clone(), request.clone());
                    tokio::spawn(async move { inv.hold(&key, &request).await })
                })
                .collect::<Vec<_>>()
                .into_iter();
            let a = attempts.next().unwrap().await.unwrap();
            let b = attempts.next().unwrap().await.unwrap();
            assert_eq!(a, b, "both attempts see one outcome");
            match a {
                Ok(_) => {
                    if rng.gen_bool(0.3) {
                        // The saga failed later and compensates.
                        inv.release(&key).await.unwrap();
                        (0, false)
                    } else {
                        let (c, d) = tokio::join!(inv.confirm(&key), inv.confirm(&key));
                        assert_eq!(c.unwrap(), d.unwrap());
                        (seats, false)
                    }
                }
                Err(InventoryError::NotEnoughSeats { .. }) => (0, true),
                Err(e) => panic!("unexpected error {e}"),
            }
        }));
    }
    let (mut sold, mut refused) = (0, 0);
    for t in tasks {
        let (seats, was_refused) = t.await.unwrap();
        sold += seats;
        refused += usize::from(was_refused);
    }
    done.store(true, Ordering::SeqCst);
    assert!(observer.await.unwrap() > 0);

    let totals = inv
        .totals(&flight(), date(), Cabin::Business)
        .await
        .unwrap();
    assert_eq!(totals.confirmed, sold);
    assert_eq!(totals.held, 0);
    assert!(sold > 0 && sold <= CAPACITY, "sold {sold}");
    assert!(refused > 0, "the race must have been contended");
    assert_consistent(inv.as_ref(), CAPACITY).await;

    // No seat leaked either: exactly the seats reported left can still be
    // sold, one by one.
    let left = inv
        .seats_left(&flight(), date(), Cabin::Business)
        .await
        .unwrap();
    assert_eq!(left, CAPACITY - sold);
    for i in 0..left {
        inv.hold(&format!("last-{i}"), &req(1)).await.unwrap();
    }
    assert!(matches!(
        inv.hold("one-too-many", &req(1)).await,
        Err(InventoryError::NotEnoughSeats { available: 0, .. })
    ));
    assert_consistent(inv.as_ref(), CAPACITY).await;
}

/// A compensation racing the step it compensates: whichever lands first, no
/// seat stays taken, and the outcome is one of the two legal ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_racing_its_hold_never_leaks_seats() {
    const CAPACITY: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let inv: Arc<dyn Inventory> = Arc::new(LocalInventory::open(&db).unwrap());
    inv.set_capacity(&flight(), date(), Cabin::Business, CAPACITY)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("saga-{i}/hold");
            let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + i as u64);
            let (hold_delay, release_delay) = (rng.gen_range(0..4), rng.gen_range(0..4));
            let hold = {
                let (inv, key) = (inv.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..hold_delay {
                        tokio::task::yield_now().await;
                    }
                    inv.hold(&key, &req(1)).await
                })
            };
            let release = {
                let (inv, key) = (inv.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..release_delay {
                        tokio::task::yield_now().await;
                    }
                    inv.release(&key).await
                })
            };
            let hold = hold.await.unwrap();
            let release = release.await.unwrap().unwrap();
            match (&hold, &release) {
                // Hold first, then its release.
                (Ok(_), ReleaseOutcome::Released(h)) => assert_eq!(h.state, HoldState::Released),
                // Release first: a tombstone, and the hold is refused.
                (Err(InventoryError::AlreadyCompensated { .. }), ReleaseOutcome::NothingHeld) => {
                    assert_eq!(inv.hold_status(&key).await.unwrap(), HoldLookup::Tombstone)
                }
                other => panic!("illegal outcome {other:?}"),
            }
            matches!(release, ReleaseOutcome::NothingHeld)
        }));
    }
    let mut tombstoned = 0;
    for t in tasks {
        tombstoned += usize::from(t.await.unwrap());
    }
    // Both orders must have happened for the test to mean anything.
    assert!(
        tombstoned > 0 && tombstoned < 200,
        "tombstoned {tombstoned}"
    );
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::Business)
            .await
            .unwrap(),
        CAPACITY
    );
    assert_consistent(inv.as_ref(), CAPACITY).await;
}

#[derive(Debug, Clone)]
enum Op {
    Hold(u8, u32),
    Confirm(u8),
    Release(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 1u32..=4).prop_map(|(k, s)| Op::Hold(k, s)),
        2 => (0u8..8).prop_map(Op::Confirm),
        2 => (0u8..8).prop_map(Op::Release),
        1 => Just(Op::Restart),
    ]
}

/// The reference model: what each key's hold should be.
#[derive(Debug, Clone, PartialEq)]
enum Model {
    Held(u32),
    Confirmed(u32),
    Released(u32),
    Tombstone,
    /// Refused: the seats asked for and the seats that were left.
    Refused(u32, u32),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn inventory_matches_a_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        const CAPACITY: u32 = 10;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut db = sled::open(dir.path()).unwrap();
            let mut inv = LocalInventory::open(&db).unwrap();
            inv.set_capacity(&flight(), date(), Cabin::Business, CAPACITY).await.unwrap();
            let mut model: HashMap<u8, Model> = HashMap::new();
            for op in ops {
                let taken = |m: &HashMap<u8, Model>| m.values().map(|v| match v {
                    Model::Held(s) | Model::Confirmed(s) => *s,
                    _ => 0,
                }).sum::<u32>();
                match op {
                    Op::Hold(k, seats) => {
                        let key = format!("k{k}");
                        let got = inv.hold(&key, &req(seats)).await;
                        match model.get(&k).cloned() {
                            None => {
                                let available = CAPACITY - taken(&model);
                                if seats <= available {
                                    assert_eq!(got.unwrap().state, HoldState::Held);
                                    model.insert(k, Model::Held(seats));
                                } else {
                                    assert_eq!(got, Err(InventoryError::NotEnoughSeats { requested: seats, available }));
                                    model.insert(k, Model::Refused(seats, available));
                                }
                            }
                            Some(Model::Held(s) | Model::Confirmed(s)) if s != seats => {
                                assert_eq!(got, Err(InventoryError::KeyReused { key }));
                            }
                            Some(Model::Held(_)) => assert_eq!(got.unwrap().state, HoldState::Held),
                            Some(Model::Confirmed(_)) => assert_eq!(got.unwrap().state, HoldState::Confirmed),
                            Some(Model::Released(s) | Model::Refused(s, _)) if s != seats => {
                                assert_eq!(got, Err(InventoryError::KeyReused { key }));
                            }
                            Some(Model::Refused(_, available)) => {
                                assert_eq!(got, Err(InventoryError::NotEnoughSeats { requested: seats, available }));
                            }
                            Some(Model::Released(_) | Model::Tombstone) => {
                                assert_eq!(got, Err(InventoryError::AlreadyCompensated { key }));
                            }
                        }
                    }
                    Op::Confirm(k) => {
                        let key = format!("k{k}");
                        let got = inv.confirm(&key).await;
                        match model.get(&k).cloned() {
                            None => assert_eq!(got, Err(InventoryError::UnknownHold { key })),
                            Some(Model::Refused(requested, available)) => {
                                assert_eq!(got, Err(InventoryError::NotEnoughSeats { requested, available }));
                            }
                            Some(Model::Held(s) | Model::Confirmed(s)) => {
                                assert_eq!(got.unwrap().state, HoldState::Confirmed);
                                model.insert(k, Model::Confirmed(s));
                            }
                            Some(Model::Released(_) | Model::Tombstone) => {
                                assert_eq!(got, Err(InventoryError::AlreadyCompensated { key }));
                            }
                        }
                    }
                    Op::Release(k) => {
                        let got = inv.release(&format!("k{k}")).await.unwrap();
                        match model.get(&k).cloned() {
                            None | Some(Model::Tombstone) => {
                                assert_eq!(got, ReleaseOutcome::NothingHeld);
                                model.insert(k, Model::Tombstone);
                            }
                            Some(Model::Refused(..)) => assert_eq!(got, ReleaseOutcome::NothingHeld),
                            Some(Model::Held(s) | Model::Confirmed(s) | Model::Released(s)) => {
                                assert!(matches!(got, ReleaseOutcome::Released(ref h) if h.seats == s && h.state == HoldState::Released));
                                model.insert(k, Model::Released(s));
                            }
                        }
                    }
                    Op::Restart => {
                        drop(inv);
                        drop(db);
                        db = reopen(dir.path());
                        inv = LocalInventory::open(&db).unwrap();
                    }
                }
                let left = inv.seats_left(&flight(), date(), Cabin::Business).await.unwrap();
                assert_eq!(left, CAPACITY - taken(&model));
            }
            assert_consistent(&inv, CAPACITY).await;
        });
    }
}
