//! What the participant suites share: a temporary sled database and
//! its reopen, a flight and date, requests, money, cards and members.

#![allow(dead_code, unused_imports)]

pub use booking_domain::inventory::{
    HoldLookup, HoldRequest, HoldState, Inventory, InventoryError, LocalInventory, ReleaseOutcome,
    SeatLayout, SeatTotals,
};
pub use booking_domain::loyalty::{
    AccountId, CreateAccount, EntryKind, EntryLookup, EntryState, LocalLoyalty, Loyalty,
    LoyaltyError, ReverseOutcome, Tier,
};
pub use booking_domain::payments::{
    AuthorizeRequest, CardBrand, CardDetails, CardProblem, DeclineReason, FixedClock,
    LocalPayments, PaymentError, PaymentLookup, PaymentStatus, Payments, VoidOutcome, TEST_CARDS,
};
pub use booking_domain::{Cabin, Currency, FlightId, Money};
pub use chrono::NaiveDate;
pub use std::path::Path;
pub use std::sync::Arc;

pub fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
}

/// Opens the database at `path` again. sled releases its file lock from a
/// background thread shortly after the last handle drops, so retry briefly.
pub fn reopen(path: &Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

pub fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 6, 1).unwrap()
}

pub fn flight() -> FlightId {
    FlightId("AA100-6".into())
}

pub fn req(cabin: Cabin, seats: u32) -> HoldRequest {
    HoldRequest {
        flight: flight(),
        date: date(),
        cabin,
        seats,
    }
}

pub fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::usd())
}

/// Payments opened with a clock on 2026-03-15, so expiry checks are fixed.
pub fn payments(db: &sled::Db) -> LocalPayments {
    let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    LocalPayments::open_with_clock(db, Arc::new(FixedClock::on(today))).unwrap()
}

pub fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 11,
        exp_year: 2029,
        cvc: "9071".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

pub fn auth(number: &str, minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        customer_email: "ada@example.com".into(),
        card: card(number),
        amount: usd(minor),
    }
}

pub fn member(email: &str) -> CreateAccount {
    CreateAccount {
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
        email: email.into(),
    }
}

// ---------------------------------------------------------------- inventory
