//! The booking participants through their public API on real sled
//! databases: the inventory (idempotency by key, tombstones for releases
//! that arrive first, capacity, a race for the last seats) and what holds
//! across all three participants (durability across reopen, concurrent
//! duplicates, projections rebuilt at open, one instance per database).
//! Payments: `participants_payments.rs`; loyalty: `participants_loyalty.rs`.

#[path = "participants_support/mod.rs"]
mod support;
use support::*;

#[tokio::test]
async fn hold_confirm_release_twice_equal_once() {
    let (_dir, db) = temp_db();
    let inv: Arc<dyn Inventory> = Arc::new(LocalInventory::open(&db).unwrap());
    let f = flight();
    let (inv_ref, f_ref) = (&inv, &f);
    let left = || async move {
        inv_ref
            .seats_left(f_ref, date(), Cabin::Business)
            .await
            .unwrap()
    };
    assert_eq!(left().await, 24, "default layout has 24 business seats");

    let first = inv
        .hold("saga-1/hold", &req(Cabin::Business, 3))
        .await
        .unwrap();
    let again = inv
        .hold("saga-1/hold", &req(Cabin::Business, 3))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.state, HoldState::Held);
    assert_eq!(left().await, 21, "a repeated hold takes seats once");
    assert_eq!(
        inv.totals(&f, date(), Cabin::Business).await.unwrap(),
        SeatTotals {
            capacity: 24,
            held: 3,
            confirmed: 0
        }
    );

    let c1 = inv.confirm("saga-1/hold").await.unwrap();
    let c2 = inv.confirm("saga-1/hold").await.unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.state, HoldState::Confirmed);
    assert_eq!(
        inv.totals(&f, date(), Cabin::Business).await.unwrap(),
        SeatTotals {
            capacity: 24,
            held: 0,
            confirmed: 3
        }
    );
    // A late hold replay after confirmation returns the hold, takes nothing.
    assert_eq!(
        inv.hold("saga-1/hold", &req(Cabin::Business, 3))
            .await
            .unwrap()
            .state,
        HoldState::Confirmed
    );
    assert_eq!(left().await, 21);

    let r1 = inv.release("saga-1/hold").await.unwrap();
    let r2 = inv.release("saga-1/hold").await.unwrap();
    assert_eq!(r1, r2);
    match r1 {
        ReleaseOutcome::Released(h) => assert_eq!(h.state, HoldState::Released),
        other => panic!("expected a release, got {other:?}"),
    }
    assert_eq!(left().await, 24, "seats come back exactly once");
    assert_eq!(
        inv.totals(&f, date(), Cabin::Business).await.unwrap(),
        SeatTotals {
            capacity: 24,
            held: 0,
            confirmed: 0
        }
    );
    // After its compensation, neither a late hold nor a confirm applies.
    assert_eq!(
        inv.hold("saga-1/hold", &req(Cabin::Business, 3)).await,
        Err(InventoryError::AlreadyCompensated {
            key: "saga-1/hold".into()
        })
    );
    assert_eq!(
        inv.confirm("saga-1/hold").await,
        Err(InventoryError::AlreadyCompensated {
            key: "saga-1/hold".into()
        })
    );
    assert_eq!(left().await, 24);
}

#[tokio::test]
async fn release_of_a_held_hold_returns_its_seats() {
    let (_dir, db) = temp_db();
    let inv = LocalInventory::open(&db).unwrap();
    inv.hold("a", &req(Cabin::First, 4)).await.unwrap();
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        8
    );
    inv.release("a").await.unwrap();
    inv.release("a").await.unwrap();
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        12
    );
}

#[tokio::test]
async fn release_before_hold_leaves_a_tombstone_that_refuses_the_hold() {
    let (_dir, db) = temp_db();
    let inv = LocalInventory::open(&db).unwrap();
    assert_eq!(inv.hold_status("late").await.unwrap(), HoldLookup::Unknown);
    assert_eq!(
        inv.release("late").await.unwrap(),
        ReleaseOutcome::NothingHeld
    );
    assert_eq!(
        inv.release("late").await.unwrap(),
        ReleaseOutcome::NothingHeld
    );
    assert_eq!(
        inv.hold_status("late").await.unwrap(),
        HoldLookup::Tombstone
    );
    let err = inv.hold("late", &req(Cabin::Economy, 2)).await.unwrap_err();
    assert_eq!(
        err,
        InventoryError::AlreadyCompensated { key: "late".into() }
    );
    assert!(err.is_rejection());
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::Economy)
            .await
            .unwrap(),
        144
    );
    assert!(inv.all_holds().await.unwrap().is_empty());
    assert_eq!(
        inv.confirm("never").await,
        Err(InventoryError::UnknownHold {
            key: "never".into()
        })
    );
}

#[tokio::test]
async fn not_enough_seats_is_a_rejection_with_what_is_left() {
    let (_dir, db) = temp_db();
    let inv = LocalInventory::open(&db).unwrap();
    inv.set_capacity(&flight(), date(), Cabin::First, 5)
        .await
        .unwrap();
    inv.hold("a", &req(Cabin::First, 4)).await.unwrap();
    let err = inv.hold("b", &req(Cabin::First, 2)).await.unwrap_err();
    assert_eq!(
        err,
        InventoryError::NotEnoughSeats {
            requested: 2,
            available: 1
        }
    );
    assert!(err.is_rejection());
    assert_eq!(
        inv.hold_status("b").await.unwrap(),
        HoldLookup::Refused { error: err.clone() }
    );
    // A refused hold leaves nothing to compensate; compensating it anyway
    // is a harmless no-op.
    assert_eq!(inv.release("b").await.unwrap(), ReleaseOutcome::NothingHeld);
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        1
    );
    // The refusal is remembered: a retry under the same key gets the same
    // answer even after seats free up, and confirming it repeats it too.
    inv.release("a").await.unwrap();
    assert_eq!(inv.hold("b", &req(Cabin::First, 2)).await, Err(err.clone()));
    assert_eq!(inv.confirm("b").await, Err(err));
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        5
    );
    // A new key is a new attempt.
    inv.hold("b2", &req(Cabin::First, 2)).await.unwrap();
    // Other dates and cabins are separate buckets.
    let mut other = req(Cabin::First, 9);
    other.date = date().succ_opt().unwrap();
    inv.hold("c", &other).await.unwrap();
    inv.hold("d", &req(Cabin::Economy, 9)).await.unwrap();
}

#[tokio::test]
async fn a_custom_layout_sets_default_capacity() {
    let (_dir, db) = temp_db();
    let layout = SeatLayout {
        first: 0,
        business: 8,
        economy: 100,
    };
    let inv = LocalInventory::open_with_layout(&db, layout).unwrap();
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        inv.hold("a", &req(Cabin::First, 1)).await,
        Err(InventoryError::NotEnoughSeats { available: 0, .. })
    ));
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::Business)
            .await
            .unwrap(),
        8
    );
}

/// 200 real tasks on four worker threads race for the last 7 seats: exactly
/// 7 are sold, every other booking is refused with `NotEnoughSeats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_bookings_never_oversell() {
    const CAPACITY: u32 = 7;
    const TASKS: usize = 200;
    let (_dir, db) = temp_db();
    let inv: Arc<dyn Inventory> = Arc::new(LocalInventory::open(&db).unwrap());
    inv.set_capacity(&flight(), date(), Cabin::Economy, CAPACITY)
        .await
        .unwrap();

    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let inv = inv.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let key = format!("saga-{i}/hold");
            match inv.hold(&key, &req(Cabin::Economy, 1)).await {
                Ok(_) => {
                    inv.confirm(&key).await.unwrap();
                    true
                }
                Err(InventoryError::NotEnoughSeats { .. }) => false,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }));
    }
    let mut sold = 0;
    for t in tasks {
        if t.await.unwrap() {
            sold += 1;
        }
    }
    assert_eq!(sold, CAPACITY);
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::Economy)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        inv.totals(&flight(), date(), Cabin::Economy).await.unwrap(),
        SeatTotals {
            capacity: CAPACITY,
            held: 0,
            confirmed: CAPACITY
        }
    );
    let holds = inv.all_holds().await.unwrap();
    assert_eq!(holds.len(), CAPACITY as usize);
    assert!(holds.iter().all(|h| h.state == HoldState::Confirmed));
}

// ---------------------------------------------------------------- payments

#[tokio::test]
async fn state_survives_closing_and_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let account_id;
    let authorization_id;
    {
        let db = sled::open(dir.path()).unwrap();
        let inv = LocalInventory::open(&db).unwrap();
        let pay = payments(&db);
        let loy = LocalLoyalty::open(&db).unwrap();
        inv.set_capacity(&flight(), date(), Cabin::First, 3)
            .await
            .unwrap();
        inv.hold("s/hold", &req(Cabin::First, 2)).await.unwrap();
        inv.confirm("s/hold").await.unwrap();
        inv.release("ghost/hold").await.unwrap();
        authorization_id = pay
            .authorize("s/pay", &auth("4242424242424242", 9_900))
            .await
            .unwrap()
            .authorization_id;
        pay.capture("s/pay").await.unwrap();
        pay.void_or_refund("ghost/pay").await.unwrap();
        let acc = loy
            .create_account("signup", &member("g@example.com"))
            .await
            .unwrap();
        loy.award("s/miles", &acc.id, &usd(10_000)).await.unwrap();
        loy.reverse("ghost/miles").await.unwrap();
        account_id = acc.id;
    }
    let db = reopen(dir.path());
    let inv = LocalInventory::open(&db).unwrap();
    let pay = payments(&db);
    let loy = LocalLoyalty::open(&db).unwrap();

    assert_eq!(
        inv.totals(&flight(), date(), Cabin::First).await.unwrap(),
        SeatTotals {
            capacity: 3,
            held: 0,
            confirmed: 2
        }
    );
    assert!(matches!(
        inv.hold_status("s/hold").await.unwrap(),
        HoldLookup::Hold(h) if h.state == HoldState::Confirmed
    ));
    assert!(matches!(
        inv.hold("ghost/hold", &req(Cabin::First, 1)).await,
        Err(InventoryError::AlreadyCompensated { .. })
    ));

    let p = pay
        .authorize("s/pay", &auth("4242424242424242", 9_900))
        .await
        .unwrap();
    assert_eq!(p.authorization_id, authorization_id);
    assert_eq!(p.status, PaymentStatus::Captured);
    assert!(matches!(
        pay.authorize("ghost/pay", &auth("4242424242424242", 9_900))
            .await,
        Err(PaymentError::AlreadyCompensated { .. })
    ));

    let a = loy.account(&account_id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));
    assert_eq!(
        loy.award("s/miles", &account_id, &usd(10_000))
            .await
            .unwrap()
            .miles,
        500
    );
    assert_eq!(loy.account(&account_id).await.unwrap().balance, 500);
    assert_eq!(
        loy.entry("ghost/miles").await.unwrap(),
        EntryLookup::Tombstone
    );
}

/// The same step delivered many times at once, to all three participants
/// sharing one database (as in the server): each effect lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_apply_once() {
    let (_dir, db) = temp_db();
    let inv: Arc<dyn Inventory> = Arc::new(LocalInventory::open(&db).unwrap());
    let pay: Arc<dyn Payments> = Arc::new(payments(&db));
    let loy: Arc<dyn Loyalty> = Arc::new(LocalLoyalty::open(&db).unwrap());
    let acc = loy
        .create_account("signup", &member("dup@example.com"))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (inv, pay, loy, id) = (inv.clone(), pay.clone(), loy.clone(), acc.id.clone());
        tasks.push(tokio::spawn(async move {
            let hold = inv.hold("dup/hold", &req(Cabin::First, 2)).await.unwrap();
            let auth = pay
                .authorize("dup/pay", &auth("4242424242424242", 10_000))
                .await
                .unwrap();
            let award = loy.award("dup/miles", &id, &usd(10_000)).await.unwrap();
            (hold, auth, award)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        inv.seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        10
    );
    assert_eq!(pay.all_payments().await.unwrap().len(), 1);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));
    assert_eq!(loy.history(&acc.id).await.unwrap().len(), 1);
}

/// Counters, balances and indexes are rebuilt from the stored records on
/// open; whatever order the records come back in, they must agree with what
/// the running participant reported.
#[tokio::test]
async fn projections_are_rebuilt_exactly_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (before_seats, before_acc, before_hist, before_pay) = {
        let db = sled::open(dir.path()).unwrap();
        let inv = LocalInventory::open(&db).unwrap();
        let pay = payments(&db);
        let loy = LocalLoyalty::open(&db).unwrap();
        inv.set_capacity(&flight(), date(), Cabin::Business, 9)
            .await
            .unwrap();
        inv.hold("z-hold", &req(Cabin::Business, 2)).await.unwrap();
        inv.hold("a-hold", &req(Cabin::Business, 3)).await.unwrap();
        inv.confirm("a-hold").await.unwrap();
        inv.hold("m-hold", &req(Cabin::Business, 4)).await.unwrap();
        inv.release("m-hold").await.unwrap();
        let _ = inv.hold("refused", &req(Cabin::Business, 9)).await;

        let acc = loy
            .create_account("signup", &member("r@example.com"))
            .await
            .unwrap();
        // Keys chosen so that key order is not the order of events.
        loy.award("z-earn", &acc.id, &usd(10_000)).await.unwrap(); // +500
        loy.redeem("a-spend", &acc.id, 400).await.unwrap(); // 100 left
        loy.reverse("z-earn").await.unwrap(); // 100 taken back, 400 clamped
        loy.award("b-earn", &acc.id, &usd(6_000)).await.unwrap(); // +300
        loy.redeem("c-spend", &acc.id, 50).await.unwrap();
        loy.reverse("c-spend").await.unwrap(); // +50 back
        let _ = loy.redeem("d-too-much", &acc.id, 1_000).await;
        let acc = loy.account(&acc.id).await.unwrap();
        assert_eq!((acc.balance, acc.qualifying_miles), (300, 300));

        pay.authorize("z-pay", &auth("4242424242424242", 100))
            .await
            .unwrap();
        pay.authorize("a-pay", &auth("5555555555554444", 200))
            .await
            .unwrap();
        (
            inv.totals(&flight(), date(), Cabin::Business)
                .await
                .unwrap(),
            acc.clone(),
            loy.history(&acc.id).await.unwrap(),
            pay.history("ada@example.com").await.unwrap(),
        )
    };
    let db = reopen(dir.path());
    let inv = LocalInventory::open(&db).unwrap();
    let pay = payments(&db);
    let loy = LocalLoyalty::open(&db).unwrap();
    let seats = inv
        .totals(&flight(), date(), Cabin::Business)
        .await
        .unwrap();
    assert_eq!(seats, before_seats);
    assert_eq!(
        seats,
        SeatTotals {
            capacity: 9,
            held: 2,
            confirmed: 3
        }
    );
    assert_eq!(loy.account(&before_acc.id).await.unwrap(), before_acc);
    assert_eq!(
        loy.account_by_email("r@example.com").await.unwrap(),
        Some(before_acc.clone())
    );
    // The creating key still finds the account.
    assert_eq!(
        loy.create_account("signup", &member("r@example.com"))
            .await
            .unwrap(),
        before_acc
    );
    let hist = loy.history(&before_acc.id).await.unwrap();
    assert_eq!(hist.len(), before_hist.len());
    let keys = |h: &[booking_domain::loyalty::LoyaltyEntry]| {
        let mut k: Vec<_> = h.iter().map(|e| e.key.clone()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&hist), keys(&before_hist));
    assert_eq!(
        pay.history("ada@example.com").await.unwrap().len(),
        before_pay.len()
    );
}

/// Opening a participant again on a database where one is already open
/// shares it, so two handles cannot oversell between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_open_on_the_same_database_shares_the_instance() {
    let (_dir, db) = temp_db();
    let first = LocalInventory::open(&db).unwrap();
    first
        .set_capacity(&flight(), date(), Cabin::First, 5)
        .await
        .unwrap();
    first.hold("one", &req(Cabin::First, 2)).await.unwrap();
    let second = LocalInventory::open(&db).unwrap();
    assert_eq!(
        second
            .seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        3
    );
    let handles: Vec<Arc<dyn Inventory>> = vec![Arc::new(first), Arc::new(second)];
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let inv = handles[i % 2].clone();
            tokio::spawn(async move { inv.hold(&format!("race-{i}"), &req(Cabin::First, 1)).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            won += 1;
        }
    }
    assert_eq!(won, 3);
    assert_eq!(
        handles[0]
            .seats_left(&flight(), date(), Cabin::First)
            .await
            .unwrap(),
        0
    );
    // Once every handle is gone, the next open rebuilds from the records.
    drop(handles);
    let third = LocalInventory::open(&db).unwrap();
    assert_eq!(
        third.totals(&flight(), date(), Cabin::First).await.unwrap(),
        SeatTotals {
            capacity: 5,
            held: 5,
            confirmed: 0
        }
    );
    // Payments and loyalty share the same way.
    let p1 = payments(&db);
    p1.authorize("p", &auth("4242424242424242", 100))
        .await
        .unwrap();
    assert_eq!(
        payments(&db)
            .history("ada@example.com")
            .await
            .unwrap()
            .len(),
        1
    );
    let l1 = LocalLoyalty::open(&db).unwrap();
    let acc = l1
        .create_account("k", &member("s@example.com"))
        .await
        .unwrap();
    l1.award("e", &acc.id, &usd(10_000)).await.unwrap();
    let l2 = LocalLoyalty::open(&db).unwrap();
    assert_eq!(l2.account(&acc.id).await.unwrap().balance, 500);
}

mod loyalty_model {
    //! Loyalty against a reference model, with restarts in between.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Award(u8, i64),
        Redeem(u8, u64),
        Reverse(u8),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        // A few fixed amounts make replays of the same request likely.
        let cents = prop_oneof![Just(10_000i64), Just(500_000), 0i64..2_000_000];
        let miles = prop_oneof![Just(100u64), Just(30_000), 1u64..20_000];
        prop_oneof![
            3 => (0u8..8, cents).prop_map(|(k, c)| Op::Award(k, c)),
            3 => (0u8..8, miles).prop_map(|(k, m)| Op::Redeem(k, m)),
            2 => (0u8..8).prop_map(Op::Reverse),
            1 => Just(Op::Restart),
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Model {
        Award {
            cents: i64,
            miles: u64,
            reversed: bool,
        },
        Redeem {
            miles: u64,
            reversed: bool,
        },
        Refused {
            miles: u64,
            balance: u64,
        },
        Tombstone,
    }

    fn reused(key: &str) -> Result<u64, LoyaltyError> {
        Err(LoyaltyError::KeyReused { key: key.into() })
    }

    fn compensated(key: &str) -> Result<u64, LoyaltyError> {
        Err(LoyaltyError::AlreadyCompensated { key: key.into() })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn loyalty_matches_a_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mut db = sled::open(dir.path()).unwrap();
                let mut loy = LocalLoyalty::open(&db).unwrap();
                let id = loy.create_account("signup", &member("m@example.com")).await.unwrap().id;
                let (mut balance, mut qualifying) = (0u64, 0u64);
                let mut model: std::collections::HashMap<u8, Model> = Default::default();
                for op in ops {
                    match op {
                        Op::Award(k, cents) => {
                            let key = format!("k{k}");
                            let got = loy.award(&key, &id, &usd(cents)).await.map(|e| e.miles);
                            let expected = match model.get(&k).cloned() {
                                None => {
                                    let tier = Tier::for_qualifying_miles(qualifying);
                                    let miles = booking_domain::loyalty::miles_for_usd_minor(cents, tier);
                                    balance += miles;
                                    qualifying += miles;
                                    model.insert(k, Model::Award { cents, miles, reversed: false });
                                    Ok(miles)
                                }
                                Some(Model::Award { cents: c, miles, reversed }) if c == cents => {
                                    if reversed { compensated(&key) } else { Ok(miles) }
                                }
                                Some(Model::Tombstone) => compensated(&key),
                                Some(_) => reused(&key),
                            };
                            assert_eq!(got, expected);
                        }
                        Op::Redeem(k, miles) => {
                            let key = format!("k{k}");
                            let got = loy.redeem(&key, &id, miles).await.map(|e| e.miles);
                            let expected = match model.get(&k).cloned() {
                                None if miles <= balance => {
                                    balance -= miles;
                                    model.insert(k, Model::Redeem { miles, reversed: false });
                                    Ok(miles)
                                }
                                None => {
                                    model.insert(k, Model::Refused { miles, balance });
                                    Err(LoyaltyError::InsufficientMiles { balance, requested: miles })
                                }
                                Some(Model::Redeem { miles: m, reversed }) if m == miles => {
                                    if reversed { compensated(&key) } else { Ok(miles) }
                                }
                                Some(Model::Refused { miles: m, balance: b }) if m == miles => {
                                    Err(LoyaltyError::InsufficientMiles { balance: b, requested: miles })
                                }
                                Some(Model::Tombstone) => compensated(&key),
                                Some(_) => reused(&key),
                            };
                            assert_eq!(got, expected);
                        }
                        Op::Reverse(k) => {
                            let got = loy.reverse(&format!("k{k}")).await.unwrap();
                            match model.get(&k).cloned() {
                                None => {
                                    assert_eq!(got, ReverseOutcome::NothingToReverse);
                                    model.insert(k, Model::Tombstone);
                                }
                                Some(Model::Tombstone | Model::Refused { .. }) => {
                                    assert_eq!(got, ReverseOutcome::NothingToReverse)
                                }
                                Some(Model::Award { cents, miles, reversed }) => {
                                    if !reversed {
                                        balance -= miles.min(balance);
                                        qualifying -= miles;
                                        model.insert(k, Model::Award { cents, miles, reversed: true });
                                    }
                                    assert!(matches!(got, ReverseOutcome::Reversed(ref e) if e.miles == miles));
                                }
                                Some(Model::Redeem { miles, reversed }) => {
                                    if !reversed {
                                        balance += miles;
                                        model.insert(k, Model::Redeem { miles, reversed: true });
                                    }
                                    assert!(matches!(got, ReverseOutcome::Reversed(ref e) if e.miles == miles));
                                }
                            }
                        }
                        Op::Restart => {
                            drop(loy);
                            drop(db);
                            db = reopen(dir.path());
                            loy = LocalLoyalty::open(&db).unwrap();
                        }
                    }
                    let acc = loy.account(&id).await.unwrap();
                    assert_eq!((acc.balance, acc.qualifying_miles), (balance, qualifying));
                    assert_eq!(acc.tier, Tier::for_qualifying_miles(qualifying));
                }
            });
        }
    }
}
