//! The booking participants (inventory, payments, loyalty) through their
//! public API on real sled databases: idempotency by key, tombstones for
//! compensations that arrive first, declines and validation, what payments
//! store, tiers and miles, durability across reopen, and a race for the last
//! seats.

use booking_domain::inventory::{
    HoldLookup, HoldRequest, HoldState, Inventory, InventoryError, LocalInventory, ReleaseOutcome,
    SeatLayout, SeatTotals,
};
use booking_domain::loyalty::{
    AccountId, CreateAccount, EntryKind, EntryLookup, EntryState, LocalLoyalty, Loyalty,
    LoyaltyError, ReverseOutcome, Tier,
};
use booking_domain::payments::{
    AuthorizeRequest, CardBrand, CardDetails, CardProblem, DeclineReason, FixedClock,
    LocalPayments, PaymentError, PaymentLookup, PaymentStatus, Payments, VoidOutcome, TEST_CARDS,
};
use booking_domain::{Cabin, Currency, FlightId, Money};
use chrono::NaiveDate;
use std::path::Path;
use std::sync::Arc;

fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
}

/// Opens the database at `path` again. sled releases its file lock from a
/// background thread shortly after the last handle drops, so retry briefly.
fn reopen(path: &Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 6, 1).unwrap()
}

fn flight() -> FlightId {
    FlightId("AA100-6".into())
}

fn req(cabin: Cabin, seats: u32) -> HoldRequest {
    HoldRequest {
        flight: flight(),
        date: date(),
        cabin,
        seats,
    }
}

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::usd())
}

/// Payments opened with a clock on 2026-03-15, so expiry checks are fixed.
fn payments(db: &sled::Db) -> LocalPayments {
    let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    LocalPayments::open_with_clock(db, Arc::new(FixedClock::on(today))).unwrap()
}

fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 11,
        exp_year: 2029,
        cvc: "9071".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

fn auth(number: &str, minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        customer_email: "ada@example.com".into(),
        card: card(number),
        amount: usd(minor),
    }
}

fn member(email: &str) -> CreateAccount {
    CreateAccount {
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
        email: email.into(),
    }
}

// ---------------------------------------------------------------- inventory

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
async fn authorize_capture_refund_twice_equal_once() {
    let (_dir, db) = temp_db();
    let pay: Arc<dyn Payments> = Arc::new(payments(&db));
    let a1 = pay
        .authorize("saga-1/pay", &auth("4242 4242 4242 4242", 22_620))
        .await
        .unwrap();
    let a2 = pay
        .authorize("saga-1/pay", &auth("4242-4242-4242-4242", 22_620))
        .await
        .unwrap();
    assert_eq!(a1, a2, "same key, same authorization");
    assert!(a1.authorization_id.starts_with("auth_"));
    assert_eq!(a1.status, PaymentStatus::Authorized);
    assert_eq!(a1.brand, CardBrand::Visa);
    assert_eq!(a1.last4, "4242");
    assert_eq!(pay.history("ada@example.com").await.unwrap().len(), 1);

    let c1 = pay.capture("saga-1/pay").await.unwrap();
    let c2 = pay.capture("saga-1/pay").await.unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.status, PaymentStatus::Captured);
    assert_eq!(c1.authorization_id, a1.authorization_id);

    let r1 = pay.void_or_refund("saga-1/pay").await.unwrap();
    let r2 = pay.void_or_refund("saga-1/pay").await.unwrap();
    assert_eq!(r1, r2);
    assert!(matches!(&r1, VoidOutcome::Refunded(p) if p.status == PaymentStatus::Refunded));

    // After the refund a late authorize or capture does not apply.
    assert_eq!(
        pay.authorize("saga-1/pay", &auth("4242424242424242", 22_620))
            .await,
        Err(PaymentError::AlreadyCompensated {
            key: "saga-1/pay".into()
        })
    );
    assert_eq!(
        pay.capture("saga-1/pay").await,
        Err(PaymentError::AlreadyCompensated {
            key: "saga-1/pay".into()
        })
    );
    let history = pay.history("ADA@example.com").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, PaymentStatus::Refunded);
}

#[tokio::test]
async fn an_uncaptured_authorization_is_voided() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    pay.authorize("k", &auth("5555 5555 5555 4444", 1_000))
        .await
        .unwrap();
    let v1 = pay.void_or_refund("k").await.unwrap();
    let v2 = pay.void_or_refund("k").await.unwrap();
    assert_eq!(v1, v2);
    match v1 {
        VoidOutcome::Voided(p) => {
            assert_eq!(p.status, PaymentStatus::Voided);
            assert_eq!(p.brand, CardBrand::Mastercard);
            assert_eq!(p.last4, "4444");
        }
        other => panic!("expected a void, got {other:?}"),
    }
    assert!(pay.capture("k").await.unwrap_err().is_rejection());
}

#[tokio::test]
async fn void_before_authorize_leaves_a_tombstone_that_refuses_it() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    assert_eq!(pay.get("late").await.unwrap(), PaymentLookup::Unknown);
    assert_eq!(
        pay.void_or_refund("late").await.unwrap(),
        VoidOutcome::NothingToUndo
    );
    assert_eq!(
        pay.void_or_refund("late").await.unwrap(),
        VoidOutcome::NothingToUndo
    );
    assert_eq!(pay.get("late").await.unwrap(), PaymentLookup::Tombstone);
    let err = pay
        .authorize("late", &auth("4242424242424242", 5_000))
        .await
        .unwrap_err();
    assert_eq!(err, PaymentError::AlreadyCompensated { key: "late".into() });
    assert!(err.is_rejection());
    assert!(pay.history("ada@example.com").await.unwrap().is_empty());
    assert!(pay.all_payments().await.unwrap().is_empty());
    assert_eq!(
        pay.capture("never").await,
        Err(PaymentError::UnknownPayment {
            key: "never".into()
        })
    );
}

#[tokio::test]
async fn test_cards_decline_with_their_reasons() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    let expected = [
        ("4000 0000 0000 9995", DeclineReason::InsufficientFunds),
        ("4000 0000 0000 0002", DeclineReason::CardDeclined),
        ("4000 0000 0000 0069", DeclineReason::ExpiredCard),
    ];
    for (i, (number, reason)) in expected.iter().enumerate() {
        let key = format!("decline-{i}");
        // The expiry date is in the future: 0069 still declines as expired.
        let err = pay.authorize(&key, &auth(number, 1_000)).await.unwrap_err();
        assert_eq!(err, PaymentError::Declined { reason: *reason }, "{number}");
        assert!(err.is_rejection() && err.is_decline());
        // A retry gets the same answer, and no second record.
        assert_eq!(pay.authorize(&key, &auth(number, 1_000)).await, Err(err));
        assert_eq!(
            pay.capture(&key).await,
            Err(PaymentError::Declined { reason: *reason })
        );
        assert_eq!(
            pay.void_or_refund(&key).await.unwrap(),
            VoidOutcome::NothingToUndo
        );
        let rec = pay.get(&key).await.unwrap();
        assert!(
            matches!(&rec, PaymentLookup::Payment(p) if p.status == PaymentStatus::Declined && p.decline_reason == Some(*reason)),
            "{rec:?}"
        );
    }
    let history = pay.history("ada@example.com").await.unwrap();
    assert_eq!(history.len(), 3, "declines are in the history, once each");
    assert_eq!(history[0].key, "decline-0");
    assert_eq!(history[2].key, "decline-2");

    // The published list agrees with what the participant does.
    for (i, t) in TEST_CARDS.iter().enumerate() {
        let result = pay
            .authorize(&format!("listed-{i}"), &auth(t.number, 1_000))
            .await;
        match t.decline {
            None => {
                let p = result.unwrap();
                assert_eq!(p.brand, t.brand);
                let expected = if t.needs_confirmation {
                    PaymentStatus::RequiresConfirmation
                } else {
                    PaymentStatus::Authorized
                };
                assert_eq!(p.status, expected, "{}", t.number);
            }
            Some(reason) => assert_eq!(result, Err(PaymentError::Declined { reason })),
        }
    }
    let amex = TEST_CARDS
        .iter()
        .find(|t| t.brand == CardBrand::Amex)
        .unwrap();
    assert_eq!(amex.decline, None);
}

#[tokio::test]
async fn invalid_card_data_is_a_typed_validation_error_and_stores_nothing() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    let cases: Vec<(CardDetails, CardProblem)> = vec![
        (card("4242 4242 4242 4241"), CardProblem::LuhnCheckFailed),
        (card("4242 4242 4242 424x"), CardProblem::NumberNotDigits),
        (
            card("4242 4242 42"),
            CardProblem::NumberLength { digits: 10 },
        ),
        (
            card("4242 4242 4242 4242 4242"),
            CardProblem::NumberLength { digits: 20 },
        ),
        (
            CardDetails {
                exp_month: 2,
                exp_year: 2026,
                ..card("4242424242424242")
            },
            CardProblem::Expired {
                month: 2,
                year: 2026,
            },
        ),
        (
            CardDetails {
                exp_month: 13,
                ..card("4242424242424242")
            },
            CardProblem::ExpiryMonth { month: 13 },
        ),
        (
            CardDetails {
                cvc: "12".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                cvc: "12345".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                cvc: "12a".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                holder_name: "  ".into(),
                ..card("4242424242424242")
            },
            CardProblem::HolderName,
        ),
    ];
    for (i, (c, problem)) in cases.into_iter().enumerate() {
        let request = AuthorizeRequest {
            customer_email: "ada@example.com".into(),
            card: c,
            amount: usd(1_000),
        };
        let err = pay
            .authorize(&format!("bad-{i}"), &request)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            PaymentError::InvalidCard {
                problem: problem.clone()
            }
        );
        assert!(err.is_rejection() && !err.is_decline());
    }
    // The current month is still valid; 12 digits and a 3 digit CVC are fine.
    let this_month = AuthorizeRequest {
        card: CardDetails {
            exp_month: 3,
            exp_year: 2026,
            cvc: "123".into(),
            ..card("4242424242424242")
        },
        ..auth("", 1_000)
    };
    pay.authorize("ok-now", &this_month).await.unwrap();
    // Bad amounts and emails are refused too.
    assert!(matches!(
        pay.authorize("zero", &auth("4242424242424242", 0)).await,
        Err(PaymentError::InvalidRequest { .. })
    ));
    let mut bad_email = auth("4242424242424242", 100);
    bad_email.customer_email = "not-an-email".into();
    assert!(matches!(
        pay.authorize("email", &bad_email).await,
        Err(PaymentError::InvalidRequest { .. })
    ));
    // A key reused for a different payment is refused.
    assert_eq!(
        pay.authorize("ok-now", &auth("4242424242424242", 2_000))
            .await,
        Err(PaymentError::KeyReused {
            key: "ok-now".into()
        })
    );
    let all = pay.all_payments().await.unwrap();
    assert_eq!(all.len(), 1, "only the valid payment is stored");
}

fn files_under(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn only_brand_and_last_four_are_stored() {
    let (dir, db) = temp_db();
    let pay = payments(&db);
    let number = "5555 5555 5555 4444";
    let p = pay.authorize("k1", &auth(number, 12_300)).await.unwrap();
    pay.capture("k1").await.unwrap();
    let _ = pay.authorize("k2", &auth("4000-0000-0000-9995", 500)).await;
    assert_eq!((p.brand, p.last4.as_str()), (CardBrand::Mastercard, "4444"));

    let full_forms: [&[u8]; 4] = [
        b"5555555555554444",
        b"5555 5555 5555 4444",
        b"4000000000009995",
        b"4000-0000-0000-9995",
    ];
    // Every key and value of every tree.
    let mut tree_bytes = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            tree_bytes.extend_from_slice(&k);
            tree_bytes.push(b'\n');
            tree_bytes.extend_from_slice(&v);
            tree_bytes.push(b'\n');
        }
    }
    assert!(contains(&tree_bytes, b"\"last4\":\"4444\""));
    for form in full_forms {
        assert!(!contains(&tree_bytes, form), "full number stored");
    }
    assert!(!contains(&tree_bytes, b"9071"), "CVC stored");
    assert!(!contains(&tree_bytes, b"cvc"), "a CVC field stored");

    // And the raw files sled wrote to disk.
    db.flush().unwrap();
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    assert!(
        files.iter().any(|f| contains(f, b"ada@example.com")),
        "the scan must see what sled stored"
    );
    for bytes in &files {
        for form in full_forms {
            assert!(!contains(bytes, form), "full number on disk");
        }
        assert!(!contains(bytes, b"\"9071\""), "CVC on disk");
    }
}

// ---------------------------------------------------------------- loyalty

#[tokio::test]
async fn accounts_are_created_once_per_key_and_email() {
    let (_dir, db) = temp_db();
    let loy: Arc<dyn Loyalty> = Arc::new(LocalLoyalty::open(&db).unwrap());
    let a1 = loy
        .create_account("signup-1", &member("grace@example.com"))
        .await
        .unwrap();
    let a2 = loy
        .create_account("signup-1", &member("grace@example.com"))
        .await
        .unwrap();
    assert_eq!(a1, a2);
    assert_eq!(a1.id.0.len(), 8);
    assert!(a1.id.0.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        (a1.balance, a1.qualifying_miles, a1.tier),
        (0, 0, Tier::Regular)
    );
    assert_eq!(loy.account(&a1.id).await.unwrap(), a1);
    assert_eq!(
        loy.account_by_email("GRACE@example.com").await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(
        loy.create_account("signup-2", &member("Grace@Example.com"))
            .await,
        Err(LoyaltyError::EmailInUse {
            account_id: a1.id.clone()
        })
    );
    let bad = CreateAccount {
        first_name: " ".into(),
        ..member("x@example.com")
    };
    assert!(matches!(
        loy.create_account("signup-3", &bad).await,
        Err(LoyaltyError::InvalidRequest { .. })
    ));
    assert_eq!(loy.all_accounts().await.unwrap(), vec![a1]);

    let nobody = AccountId("00000000".into());
    let err = loy.account(&nobody).await.unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::UnknownAccount {
            account_id: nobody.clone()
        }
    );
    assert!(err.is_rejection());
    assert!(matches!(
        loy.award("a", &nobody, &usd(100)).await,
        Err(LoyaltyError::UnknownAccount { .. })
    ));
    assert!(matches!(
        loy.history(&nobody).await,
        Err(LoyaltyError::UnknownAccount { .. })
    ));
}

#[tokio::test]
async fn award_redeem_reverse_twice_equal_once() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();

    // $100.00 at Regular = 500 miles.
    let w1 = loy
        .award("saga-1/miles", &acc.id, &usd(10_000))
        .await
        .unwrap();
    let w2 = loy
        .award("saga-1/miles", &acc.id, &usd(10_000))
        .await
        .unwrap();
    assert_eq!(w1, w2);
    assert_eq!(w1.miles, 500);
    assert_eq!(w1.tier, Tier::Regular);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));

    let r1 = loy.redeem("spend-1", &acc.id, 200).await.unwrap();
    let r2 = loy.redeem("spend-1", &acc.id, 200).await.unwrap();
    assert_eq!(r1, r2);
    assert_eq!(r1.kind, EntryKind::Redemption);
    assert_eq!(r1.balance_after, 300);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (300, 500));

    // Reversing the redemption gives the miles back, once.
    let x1 = loy.reverse("spend-1").await.unwrap();
    let x2 = loy.reverse("spend-1").await.unwrap();
    assert_eq!(x1, x2);
    assert!(matches!(&x1, ReverseOutcome::Reversed(e) if e.state == EntryState::Reversed));
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));

    // Reversing the award takes its miles off both counters, once.
    let y1 = loy.reverse("saga-1/miles").await.unwrap();
    let y2 = loy.reverse("saga-1/miles").await.unwrap();
    assert_eq!(y1, y2);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));

    // After their reversal, late replays do not apply.
    assert_eq!(
        loy.award("saga-1/miles", &acc.id, &usd(10_000)).await,
        Err(LoyaltyError::AlreadyCompensated {
            key: "saga-1/miles".into()
        })
    );
    assert_eq!(
        loy.redeem("spend-1", &acc.id, 200).await,
        Err(LoyaltyError::AlreadyCompensated {
            key: "spend-1".into()
        })
    );
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));

    let history = loy.history(&acc.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].key, "saga-1/miles");
    assert_eq!(history[1].key, "spend-1");
    assert!(history.iter().all(|e| e.state == EntryState::Reversed));
}

#[tokio::test]
async fn reverse_before_award_leaves_a_tombstone_that_refuses_it() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    assert_eq!(loy.entry("late").await.unwrap(), EntryLookup::Unknown);
    assert_eq!(
        loy.reverse("late").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(
        loy.reverse("late").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(loy.entry("late").await.unwrap(), EntryLookup::Tombstone);
    let err = loy.award("late", &acc.id, &usd(10_000)).await.unwrap_err();
    assert_eq!(err, LoyaltyError::AlreadyCompensated { key: "late".into() });
    assert!(err.is_rejection());
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));
    assert!(loy.history(&acc.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn reversing_a_spent_award_clamps_the_balance_and_records_it() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    loy.award("earn", &acc.id, &usd(10_000)).await.unwrap(); // 500
    loy.redeem("spend", &acc.id, 400).await.unwrap(); // balance 100
    match loy.reverse("earn").await.unwrap() {
        ReverseOutcome::Reversed(e) => assert_eq!(e.clamped_miles, 400),
        other => panic!("expected a reversal, got {other:?}"),
    }
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));
}

#[tokio::test]
async fn tiers_and_multipliers() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let expected = [
        (Tier::Regular, 0u64, 500u64),
        (Tier::Gold, 25_000, 700),
        (Tier::Platinum, 50_000, 800),
        (Tier::PlatinumPro, 75_000, 900),
        (Tier::ExecutivePlatinum, 100_000, 1_100),
        (Tier::ConciergeKey, 125_000, 1_100),
    ];
    for (i, (tier, threshold, miles_per_100_usd)) in expected.into_iter().enumerate() {
        assert_eq!(tier.threshold(), threshold);
        // Two members: one a mile short of the threshold, one exactly at it.
        // At Regular, 20 cents earn one mile.
        let short = loy
            .create_account(&format!("short-{i}"), &member(&format!("s{i}@example.com")))
            .await
            .unwrap();
        let at = loy
            .create_account(&format!("at-{i}"), &member(&format!("a{i}@example.com")))
            .await
            .unwrap();
        if threshold > 0 {
            let cents = i64::try_from(threshold).unwrap() * 20;
            let e = loy
                .award(&format!("short-{i}/earn"), &short.id, &usd(cents - 20))
                .await
                .unwrap();
            assert_eq!(e.miles, threshold - 1);
            let e = loy
                .award(&format!("at-{i}/earn"), &at.id, &usd(cents))
                .await
                .unwrap();
            assert_eq!(e.miles, threshold);
            let below = loy.account(&short.id).await.unwrap().tier;
            assert!(below < tier, "{below} should be below {tier}");
        }
        let a = loy.account(&at.id).await.unwrap();
        assert_eq!(a.tier, tier);
        // The next $100 earns at the new tier's multiplier.
        let e = loy
            .award(&format!("at-{i}/next"), &at.id, &usd(10_000))
            .await
            .unwrap();
        assert_eq!(e.tier, tier);
        assert_eq!(e.miles, miles_per_100_usd, "{tier}");
    }
    // Rupees earn at the fixed rate: INR 8,300.00 = $100 = 500 miles.
    let m = loy
        .create_account("inr", &member("inr@example.com"))
        .await
        .unwrap();
    let e = loy
        .award("inr/earn", &m.id, &Money::new(830_000, Currency::inr()))
        .await
        .unwrap();
    assert_eq!(e.miles, 500);
    assert!(matches!(
        loy.award("xyz", &m.id, &Money::new(100, Currency("XYZ".into())))
            .await,
        Err(LoyaltyError::InvalidAmount { .. })
    ));
    assert!(matches!(
        loy.award("neg", &m.id, &usd(-100)).await,
        Err(LoyaltyError::InvalidAmount { .. })
    ));
}

#[tokio::test]
async fn redeeming_never_lowers_a_tier() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    loy.award("earn", &acc.id, &usd(500_000)).await.unwrap(); // 25,000 miles
    assert_eq!(loy.account(&acc.id).await.unwrap().tier, Tier::Gold);

    let err = loy.redeem("too-much", &acc.id, 25_001).await.unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::InsufficientMiles {
            balance: 25_000,
            requested: 25_001
        }
    );
    assert!(err.is_rejection());
    assert_eq!(
        loy.entry("too-much").await.unwrap(),
        EntryLookup::Refused { error: err.clone() }
    );
    // Remembered: the same key gets the same refusal even once the miles
    // are there; reversing it has nothing to undo.
    loy.award("earn-more", &acc.id, &usd(20)).await.unwrap(); // 1 mile
    assert_eq!(
        loy.redeem("too-much", &acc.id, 25_001).await,
        Err(err.clone())
    );
    assert_eq!(
        loy.reverse("too-much").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(
        loy.redeem("too-much", &acc.id, 5).await,
        Err(LoyaltyError::KeyReused {
            key: "too-much".into()
        })
    );
    loy.redeem("one", &acc.id, 1).await.unwrap();

    loy.redeem("all", &acc.id, 25_000).await.unwrap();
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!(a.balance, 0);
    assert_eq!(
        a.qualifying_miles, 25_001,
        "redeeming keeps qualifying miles"
    );
    assert_eq!(a.tier, Tier::Gold, "redeeming keeps the tier");
    assert!(matches!(
        loy.redeem("zero", &acc.id, 0).await,
        Err(LoyaltyError::InvalidRequest { .. })
    ));
    assert!(matches!(
        loy.redeem("more", &acc.id, 1).await,
        Err(LoyaltyError::InsufficientMiles { balance: 0, .. })
    ));
    // Reusing a key for a different request is refused.
    assert_eq!(
        loy.redeem("all", &acc.id, 10).await,
        Err(LoyaltyError::KeyReused { key: "all".into() })
    );
}

// ---------------------------------------------------------------- durability

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
