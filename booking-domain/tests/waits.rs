//! The booking's durable waits (saga version 4), on sled: a card that
//! needs the customer's confirmation waits (`await_confirmation`) and is
//! confirmed once the customer confirms, or released when the wait times
//! out (seats back, authorization voided, the reason saying so); a held
//! booking waits for its payment (`await_payment`), goes on once paid
//! (token only), or releases its seats when the hold window passes. A
//! restart (the engine and the participants reopened on the same
//! directories) in the middle of each wait keeps it waiting; a repeated
//! confirmation or payment is a duplicate; one after the timeout is
//! refused with the reason.

#[path = "common/mod.rs"]
mod common;

use booking_domain::booking_saga::{
    booking_definitions, check_consistency, confirm_booking_payment, pay_held_booking,
    start_booking, wait_failure_reason, wait_status, BookingData, BookingRequest, BookingServices,
    BookingWaits, WaitError, WaitStatus, AWAIT_CONFIRMATION_STEP, AWAIT_PAYMENT_STEP,
    CONFIRMATION_TIMED_OUT, HOLD_EXPIRED,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::payments::{CardDetails, PaymentLookup, PaymentStatus};
use booking_domain::Cabin;
use chrono::{Datelike, NaiveDate, Utc};
use saga_engine::{Engine, SagaId, SagaRecord, SagaStatus, SignalOutcome, SledStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SCA_CARD: &str = "4000 0000 0000 3220";
const VISA: &str = "4242 4242 4242 4242";

fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 12,
        exp_year: Utc::now().year() as u32 + 3,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

/// An engine and local participants on two directories that outlive them.
struct World {
    dir: tempfile::TempDir,
    waits: BookingWaits,
    catalog: Arc<Catalog>,
    flight: Flight,
    date: NaiveDate,
    engine: Option<Engine>,
    services: Option<BookingServices>,
    db: Option<sled::Db>,
}

/// Opens sled at `path`, waiting for the last handle's background threads
/// to let go of the directory lock.
fn open_sled(path: &Path) -> sled::Db {
    let mut tries = 0;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if tries < 500 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("sled at {} does not open: {e}", path.display()),
        }
    }
}

fn open_store(path: PathBuf) -> SledStore {
    let mut tries = 0;
    loop {
        match SledStore::open(&path) {
            Ok(s) => return s,
            Err(e) if tries < 500 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the engine's store does not open: {e}"),
        }
    }
}

impl World {
    async fn new(waits: BookingWaits) -> World {
        let catalog = Arc::new(Catalog::default_dataset());
        let (flight, date) = common::economy_flight(&catalog);
        let mut w = World {
            dir: tempfile::tempdir().unwrap(),
            waits,
            catalog,
            flight,
            date,
            engine: None,
            services: None,
            db: None,
        };
        w.open().await;
        w
    }

    async fn open(&mut self) {
        let pdir = self.dir.path().join("participants");
        let db = open_sled(&pdir);
        let mut services = BookingServices::local_in(&db, &pdir, self.catalog.clone()).unwrap();
        services.waits = self.waits;
        let mut b = Engine::builder(open_store(self.dir.path().join("engine")));
        for def in booking_definitions(&services) {
            b = b.register(def);
        }
        self.engine = Some(b.open().await.unwrap());
        self.services = Some(services);
        self.db = Some(db);
    }

    /// Shuts the engine down and drops every handle, then opens both
    /// directories again.
    async fn restart(&mut self) {
        let engine = self.engine.take().unwrap();
        engine.shutdown(Duration::from_secs(5)).await;
        drop(engine);
        self.services = None;
        if let Some(db) = self.db.take() {
            db.flush_async().await.unwrap();
        }
        self.open().await;
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn services(&self) -> &BookingServices {
        self.services.as_ref().unwrap()
    }

    fn request(&self, number: Option<&str>) -> BookingRequest {
        let mut r = common::ada_request(&self.flight, self.date);
        match number {
            Some(n) => r.card = card(n),
            None => {
                r.card = CardDetails::default();
                r.hold = true;
            }
        }
        r
    }

    async fn seats_left(&self) -> u32 {
        self.services()
            .inventory
            .seats_left(&self.flight.id, self.date, Cabin::Economy)
            .await
            .unwrap()
    }

    async fn payment(&self, id: &SagaId) -> PaymentLookup {
        self.services()
            .payments
            .get(&format!("{id}:authorize_payment"))
            .await
            .unwrap()
    }

    /// Polls until the booking stands in a wait `pick` accepts.
    async fn until_waiting(&self, id: &SagaId, pick: fn(WaitStatus) -> bool) -> WaitStatus {
        for _ in 0..3000 {
            let rec = self.engine().status(id).await.unwrap();
            if let Some(w) = wait_status(&rec).filter(|w| pick(*w)) {
                return w;
            }
            assert!(
                !rec.status().is_terminal(),
                "ended before the wait: {:?}",
                rec.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("booking {id} never reached its wait");
    }

    async fn finish(self) {
        assert_eq!(
            check_consistency(self.engine(), self.services())
                .await
                .unwrap(),
            Vec::<String>::new()
        );
        self.engine().shutdown(Duration::from_secs(5)).await;
    }
}

fn held(w: WaitStatus) -> bool {
    matches!(w, WaitStatus::Held { .. })
}

fn awaiting(w: WaitStatus) -> bool {
    matches!(w, WaitStatus::AwaitingConfirmation { .. })
}

fn step_state(rec: &SagaRecord, name: &str) -> saga_engine::StepState {
    rec.state
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .state
}

fn long() -> BookingWaits {
    BookingWaits {
        confirmation_timeout: Duration::from_secs(600),
        hold_window: Duration::from_secs(600),
    }
}

fn short() -> BookingWaits {
    BookingWaits {
        confirmation_timeout: Duration::from_secs(1),
        hold_window: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_needing_confirmation_waits_across_a_restart_and_is_confirmed() {
    let mut w = World::new(long()).await;
    let before = w.seats_left().await;
    let id = start_booking(
        w.engine(),
        w.services(),
        &w.request(Some(SCA_CARD)),
        "sca-1",
    )
    .await
    .unwrap();
    let WaitStatus::AwaitingConfirmation { expires_at_ms } = w.until_waiting(&id, awaiting).await
    else {
        unreachable!()
    };
    let now_ms = Utc::now().timestamp_millis() as u64;
    assert!(expires_at_ms > now_ms && expires_at_ms <= now_ms + 600_000);
    assert!(matches!(w.payment(&id).await,
        PaymentLookup::Payment(p) if p.status == PaymentStatus::RequiresConfirmation));
    assert_eq!(w.seats_left().await, before - 1, "held while waiting");

    // A restart in the middle of the wait: still waiting, same deadline.
    w.restart().await;
    assert_eq!(
        w.until_waiting(&id, awaiting).await,
        WaitStatus::AwaitingConfirmation { expires_at_ms }
    );
    assert_eq!(w.engine().parked_count(), 1, "parked, holding no worker");

    assert_eq!(
        confirm_booking_payment(w.engine(), &id).await.unwrap(),
        SignalOutcome::Delivered
    );
    assert_eq!(
        confirm_booking_payment(w.engine(), &id).await.unwrap(),
        SignalOutcome::Duplicate,
        "a second confirmation changes nothing"
    );
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    assert!(rec.data_as::<BookingData>().unwrap().customer_confirmed);
    assert!(matches!(w.payment(&id).await,
        PaymentLookup::Payment(p) if p.status == PaymentStatus::Captured));
    assert_eq!(
        confirm_booking_payment(w.engine(), &id).await.unwrap(),
        SignalOutcome::Duplicate
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_payment_times_out_voided_with_the_seats_back() {
    let w = World::new(short()).await;
    let before = w.seats_left().await;
    let id = start_booking(
        w.engine(),
        w.services(),
        &w.request(Some(SCA_CARD)),
        "sca-2",
    )
    .await
    .unwrap();
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated, "{:?}", rec.state);
    let failure = rec.state.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with(&format!("step {AWAIT_CONFIRMATION_STEP} timed out")),
        "{failure}"
    );
    assert_eq!(wait_failure_reason(&failure), Some(CONFIRMATION_TIMED_OUT));
    assert!(matches!(w.payment(&id).await,
        PaymentLookup::Payment(p) if p.status == PaymentStatus::Voided));
    assert_eq!(w.seats_left().await, before, "the seats are back");
    match confirm_booking_payment(w.engine(), &id).await {
        Err(WaitError::Expired { reason, .. }) => assert_eq!(reason, CONFIRMATION_TIMED_OUT),
        other => panic!("a late confirmation: {other:?}"),
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_needing_no_confirmation_does_not_wait() {
    let w = World::new(long()).await;
    let id = start_booking(w.engine(), w.services(), &w.request(Some(VISA)), "visa-1")
        .await
        .unwrap();
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    assert_eq!(rec.version, 4);
    assert!(!rec.data_as::<BookingData>().unwrap().customer_confirmed);
    match confirm_booking_payment(w.engine(), &id).await {
        Err(WaitError::NotWaiting { why, .. }) => assert!(why.contains("confirmed"), "{why}"),
        other => panic!("confirming a booking that needed none: {other:?}"),
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_waits_across_a_restart_and_is_confirmed_once_paid() {
    let mut w = World::new(long()).await;
    let before = w.seats_left().await;
    let id = start_booking(w.engine(), w.services(), &w.request(None), "hold-1")
        .await
        .unwrap();
    let status = w.until_waiting(&id, held).await;
    assert_eq!(w.seats_left().await, before - 1, "the seats are held");
    assert!(matches!(w.payment(&id).await, PaymentLookup::Unknown));
    assert_eq!(w.services().payments.cards_held().await.unwrap(), 0);

    w.restart().await;
    assert_eq!(w.until_waiting(&id, held).await, status, "still held");
    let outcome = pay_held_booking(w.engine(), w.services(), &id, &card(VISA))
        .await
        .unwrap();
    assert_eq!(outcome, SignalOutcome::Delivered);
    assert_eq!(
        pay_held_booking(w.engine(), w.services(), &id, &card(VISA))
            .await
            .unwrap(),
        SignalOutcome::Duplicate,
        "paying twice with the same card"
    );
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    let data: BookingData = rec.data_as().unwrap();
    assert_eq!(data.card_last4, "4242");
    let saved = serde_json::to_string(&rec.data).unwrap();
    assert!(!saved.contains("4242424242424242") && !saved.contains("\"123\""));
    assert!(matches!(w.payment(&id).await,
        PaymentLookup::Payment(p) if p.status == PaymentStatus::Captured));
    assert_eq!(w.seats_left().await, before - 1);
    // Paying again once confirmed: the same card is a duplicate, another
    // is refused.
    assert_eq!(
        pay_held_booking(w.engine(), w.services(), &id, &card(VISA))
            .await
            .unwrap(),
        SignalOutcome::Duplicate
    );
    assert!(matches!(
        pay_held_booking(w.engine(), w.services(), &id, &card("5555 5555 5555 4444")).await,
        Err(WaitError::NotWaiting { .. })
    ));
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_paid_with_a_card_needing_confirmation_waits_for_it() {
    let w = World::new(long()).await;
    let id = start_booking(w.engine(), w.services(), &w.request(None), "hold-sca")
        .await
        .unwrap();
    w.until_waiting(&id, held).await;
    pay_held_booking(w.engine(), w.services(), &id, &card(SCA_CARD))
        .await
        .unwrap();
    w.until_waiting(&id, awaiting).await;
    confirm_booking_payment(w.engine(), &id).await.unwrap();
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_expires_releases_the_seats_and_refuses_a_late_payment() {
    let w = World::new(short()).await;
    let before = w.seats_left().await;
    let id = start_booking(w.engine(), w.services(), &w.request(None), "hold-2")
        .await
        .unwrap();
    let rec = w.engine().wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated, "{:?}", rec.state);
    assert_eq!(
        step_state(&rec, AWAIT_PAYMENT_STEP),
        saga_engine::StepState::Rejected
    );
    let failure = rec.state.failure.clone().unwrap_or_default();
    assert_eq!(
        wait_failure_reason(&failure),
        Some(HOLD_EXPIRED),
        "{failure}"
    );
    assert_eq!(w.seats_left().await, before, "the seats are back");
    match pay_held_booking(w.engine(), w.services(), &id, &card(VISA)).await {
        Err(WaitError::Expired { reason, .. }) => assert_eq!(reason, HOLD_EXPIRED),
        other => panic!("a late payment: {other:?}"),
    }
    assert!(matches!(
        w.payment(&id).await,
        PaymentLookup::Unknown | PaymentLookup::Tombstone
    ));
    assert_eq!(
        w.services().payments.cards_held().await.unwrap(),
        0,
        "the refused payment's card is not kept"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_is_refused_with_a_card_and_a_booking_paid_at_once_is_not_held() {
    let w = World::new(long()).await;
    let mut r = w.request(None);
    r.card = card(VISA);
    let e = start_booking(w.engine(), w.services(), &r, "hold-card")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("card"), "{e}");
    let id = start_booking(w.engine(), w.services(), &w.request(Some(VISA)), "paid")
        .await
        .unwrap();
    w.engine().wait(&id).await.unwrap();
    match pay_held_booking(w.engine(), w.services(), &id, &card(VISA)).await {
        Err(WaitError::NotWaiting { why, .. }) => assert!(why.contains("not held"), "{why}"),
        other => panic!("paying a booking that was not held: {other:?}"),
    }
    let bad = CardDetails {
        cvc: "1".into(),
        ..card(VISA)
    };
    let hold = start_booking(w.engine(), w.services(), &w.request(None), "hold-3")
        .await
        .unwrap();
    w.until_waiting(&hold, held).await;
    match pay_held_booking(w.engine(), w.services(), &hold, &bad).await {
        Err(WaitError::Invalid(v)) => assert_eq!(v.0[0].field, "card.cvc"),
        other => panic!("a bad card: {other:?}"),
    }
    w.finish().await;
}

/// The automatic signals arrive while the new saga's worker runs its first
/// step or parks it at `await_payment`: each must reach the saga however
/// long that hand-over takes (the engine once gave up after 50 quick
/// tries: "signal: no worker runs it", 1 start in 20 on a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_as_the_saga_parks_reach_it() {
    let w = World::new(long()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let number = if i % 2 == 0 { SCA_CARD } else { VISA };
        let id = start_booking(
            w.engine(),
            w.services(),
            &w.request(Some(number)),
            &format!("race-{i}"),
        )
        .await
        .unwrap();
        ids.push((id, number));
    }
    for (id, number) in ids {
        if number == SCA_CARD {
            w.until_waiting(&id, awaiting).await;
            confirm_booking_payment(w.engine(), &id).await.unwrap();
        }
        let rec = w.engine().wait(&id).await.unwrap();
        assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    }
    w.finish().await;
}
