//! The participants' keyed ledger through their public API on real sled
//! databases: a crash between a record and its projection is finished at
//! open, open reads no records however many there are, a database written
//! before the projections were kept on disk is upgraded once, and paged
//! listings return every item once while items are added.

use booking_domain::inventory::{HoldRequest, Inventory, LocalInventory};
use booking_domain::loyalty::{CreateAccount, LocalLoyalty, Loyalty};
use booking_domain::payments::{
    AuthorizeRequest, CardDetails, FixedClock, LocalPayments, PaymentError, Payments,
};
use booking_domain::{Cabin, Currency, FlightId, Money};
use chrono::NaiveDate;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

fn reopen(path: &Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

fn req(seats: u32) -> HoldRequest {
    HoldRequest {
        flight: FlightId("LG100".into()),
        date: NaiveDate::from_ymd_opt(2030, 5, 6).unwrap(),
        cabin: Cabin::Economy,
        seats,
    }
}

fn payments(db: &sled::Db) -> LocalPayments {
    let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    LocalPayments::open_with_clock(db, Arc::new(FixedClock::on(today))).unwrap()
}

fn auth(email: &str, minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        customer_email: email.into(),
        card: CardDetails {
            number: "4242 4242 4242 4242".into(),
            exp_month: 11,
            exp_year: 2029,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        },
        amount: Money::new(minor, Currency::usd()),
    }
}

fn member() -> CreateAccount {
    CreateAccount {
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
        email: "grace@example.com".into(),
    }
}

/// The only value of a tree that holds one.
fn only_value(db: &sled::Db, tree: &str) -> (sled::IVec, sled::IVec) {
    let t = db.open_tree(tree).unwrap();
    assert_eq!(t.len(), 1, "{tree}");
    t.iter().next().unwrap().unwrap()
}

#[tokio::test]
async fn a_crash_between_a_record_and_its_counts_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let inv = LocalInventory::open(&db).unwrap();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy.create_account("signup", &member()).await.unwrap();
    inv.hold("a", &req(2)).await.unwrap();
    loy.award("m1", &acc.id, &Money::new(10_000, Currency::usd()))
        .await
        .unwrap();
    // The counts as they stood before the last write of each participant.
    let (seat_bucket, seats_before) = only_value(&db, "inventory_counts");
    let (miles_bucket, miles_before) = only_value(&db, "loyalty_counters");
    inv.hold("b", &req(3)).await.unwrap();
    loy.award("m2", &acc.id, &Money::new(20_000, Currency::usd()))
        .await
        .unwrap();
    // Build the half-done state by hand: the records are written, the counts
    // are not (a crash between the two inserts).
    db.open_tree("inventory_counts")
        .unwrap()
        .insert(&seat_bucket, seats_before)
        .unwrap();
    db.open_tree("loyalty_counters")
        .unwrap()
        .insert(&miles_bucket, miles_before)
        .unwrap();
    let r = req(1);
    assert_eq!(
        inv.totals(&r.flight, r.date, r.cabin).await.unwrap().held,
        2
    );
    assert_eq!(loy.account(&acc.id).await.unwrap().balance, 500);
    drop((inv, loy));
    db.flush().unwrap();
    drop(db);

    let db = reopen(dir.path());
    let inv = LocalInventory::open(&db).unwrap();
    let loy = LocalLoyalty::open(&db).unwrap();
    let t = inv.totals(&r.flight, r.date, r.cabin).await.unwrap();
    assert_eq!(t.held, 5, "the second hold is counted after open");
    assert_eq!(t.available(), 144 - 5);
    let acc = loy.account(&acc.id).await.unwrap();
    assert_eq!((acc.balance, acc.qualifying_miles), (1_500, 1_500));
    // Replaying the writes adds nothing: the records say they were applied.
    inv.hold("b", &req(3)).await.unwrap();
    assert_eq!(
        inv.totals(&r.flight, r.date, r.cabin).await.unwrap().held,
        5
    );
}

/// Opens the three participants on a fresh handle of the database at
/// `path` and returns the records each decoded while opening.
fn reads_at_open(path: &Path) -> [u64; 3] {
    let db = reopen(path);
    let inv = LocalInventory::open(&db).unwrap();
    let pay = payments(&db);
    let loy = LocalLoyalty::open(&db).unwrap();
    [
        inv.entries_read_at_open(),
        pay.entries_read_at_open(),
        loy.entries_read_at_open(),
    ]
}

async fn book(db: &sled::Db, from: usize, to: usize) {
    let inv = LocalInventory::open(db).unwrap();
    let pay = payments(db);
    let loy = LocalLoyalty::open(db).unwrap();
    let acc = loy.create_account("signup", &member()).await.unwrap();
    for i in from..to {
        let key = format!("booking-{i:04}");
        let mut r = req(1);
        r.flight = FlightId(format!("LG{}", i % 7));
        inv.hold(&key, &r).await.unwrap();
        inv.confirm(&key).await.unwrap();
        pay.authorize(&key, &auth("ada@example.com", 5_000))
            .await
            .unwrap();
        pay.capture(&key).await.unwrap();
        loy.award(&key, &acc.id, &Money::new(5_000, Currency::usd()))
            .await
            .unwrap();
    }
    db.flush().unwrap();
}

#[tokio::test]
async fn open_reads_no_records_however_many_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    book(&db, 0, 10).await;
    drop(db);
    let few = reads_at_open(dir.path());
    let db = reopen(dir.path());
    book(&db, 10, 300).await;
    drop(db);
    let many = reads_at_open(dir.path());
    assert_eq!(few, many, "reads at open do not grow with the records");
    // The one read is the record of the last write that moved counts
    // (payments move none).
    assert_eq!(many, [1, 0, 1]);
}

#[tokio::test]
async fn a_database_without_projections_is_upgraded_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    // The previous format, by hand: records in the v1 envelope with no
    // numbers, and no counts or history trees.
    let holds = db.open_tree("inventory_holds").unwrap();
    for (key, state) in [("h1", "held"), ("h2", "confirmed"), ("h3", "released")] {
        let raw = format!(
            r#"{{"v":1,"record":{{"hold":{{"key":"{key}","flight":"LG100","date":"2030-05-06","cabin":"economy","seats":2,"state":"{state}"}}}}}}"#
        );
        holds.insert(key, raw.as_bytes()).unwrap();
    }
    let records = db.open_tree("payments_records").unwrap();
    for (key, at) in [
        ("p1", "2026-01-03"),
        ("p2", "2026-01-01"),
        ("p3", "2026-01-02"),
    ] {
        let raw = format!(
            r#"{{"v":1,"record":{{"payment":{{"key":"{key}","authorization_id":"auth_{key}","customer_email":"ada@example.com","holder_name":"A B","brand":"visa","last4":"4242","amount":{{"minor":100,"currency":"USD"}},"status":"captured","decline_reason":null,"created_at":"{at}T00:00:00Z","updated_at":"{at}T00:00:00Z"}}}}}}"#
        );
        records.insert(key, raw.as_bytes()).unwrap();
    }
    db.flush().unwrap();
    drop((holds, records));
    drop(db);

    let db = reopen(dir.path());
    let inv = LocalInventory::open(&db).unwrap();
    let pay = payments(&db);
    assert_eq!(inv.entries_read_at_open(), 3, "the upgrade reads each once");
    assert_eq!(pay.entries_read_at_open(), 3);
    let r = req(1);
    let t = inv.totals(&r.flight, r.date, r.cabin).await.unwrap();
    assert_eq!((t.held, t.confirmed), (2, 2));
    let keys: Vec<String> = pay
        .history("ada@example.com")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["p2", "p3", "p1"], "oldest first");
    inv.release("h1").await.unwrap();
    drop((inv, pay));
    db.flush().unwrap();
    drop(db);
    assert_eq!(reads_at_open(dir.path()), [1, 0, 0], "upgraded once");
    let db = reopen(dir.path());
    let inv = LocalInventory::open(&db).unwrap();
    let t = inv.totals(&r.flight, r.date, r.cabin).await.unwrap();
    assert_eq!((t.held, t.confirmed), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_return_every_item_once_while_items_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let pay = payments(&db);
    let loy = LocalLoyalty::open(&db).unwrap();
    let inv = LocalInventory::open(&db).unwrap();
    let acc = loy.create_account("signup", &member()).await.unwrap();
    for i in 0..40 {
        let key = format!("k{i:03}");
        pay.authorize(&key, &auth("ada@example.com", 100 + i))
            .await
            .unwrap();
        pay.authorize(&format!("other-{i}"), &auth("bob@example.com", 100))
            .await
            .unwrap();
        loy.award(&key, &acc.id, &Money::new(1_000, Currency::usd()))
            .await
            .unwrap();
        inv.hold(&key, &req(1)).await.unwrap();
    }
    let before: Vec<String> = pay
        .history("ada@example.com")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    // Inserts run while the pages are read.
    let writer = {
        let (pay, loy, inv, id) = (pay.clone(), loy.clone(), inv.clone(), acc.id.clone());
        tokio::spawn(async move {
            for i in 0..30 {
                let key = format!("late-{i:03}");
                pay.authorize(&key, &auth("ada@example.com", 100))
                    .await
                    .unwrap();
                loy.award(&key, &id, &Money::new(1_000, Currency::usd()))
                    .await
                    .unwrap();
                inv.hold(&key, &req(1)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = pay
            .history_page("ada@example.com", cursor.as_deref(), 7)
            .unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.into_iter().map(|p| p.key));
        tokio::task::yield_now().await;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut loy_seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = loy.history_page(&acc.id, cursor.as_deref(), 5).unwrap();
        loy_seen.extend(items.into_iter().map(|e| e.key));
        tokio::task::yield_now().await;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut holds_seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = inv.all_holds_page(cursor.as_deref(), 6).unwrap();
        holds_seen.extend(items.into_iter().map(|h| h.key));
        tokio::task::yield_now().await;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    writer.await.unwrap();
    for (name, list) in [
        ("payments", &seen),
        ("loyalty", &loy_seen),
        ("holds", &holds_seen),
    ] {
        let unique: HashSet<&String> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "{name}: no duplicates");
        for k in &before {
            assert!(unique.contains(k), "{name}: {k} was there before paging");
        }
    }
    assert_eq!(&seen[..before.len()], &before[..], "oldest first, in order");
    // Once the writes are done, the pages are exactly the whole listing.
    let full: Vec<String> = pay
        .history("ada@example.com")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = pay
            .history_page("ADA@example.com", cursor.as_deref(), 1_000_000)
            .unwrap();
        paged.extend(items.into_iter().map(|p| p.key));
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, full);
    assert_eq!(full.len(), 70);
    let all: Vec<_> = loy.history(&acc.id).await.unwrap();
    assert_eq!(all.len(), 70);
    assert_eq!(inv.all_holds().await.unwrap().len(), 70);
    // A cursor that was not handed out is bad input, not a panic.
    assert!(matches!(
        pay.history_page("ada@example.com", Some("x"), 5),
        Err(PaymentError::InvalidRequest { .. })
    ));
    assert!(inv
        .all_holds_page(Some("not hex"), 5)
        .unwrap_err()
        .is_rejection());
}
