//! Round trips on sled (booking saga v4): both legs' seats reserved by one
//! parallel group, one charge for both; the return leg refused (injected,
//! or sold out) releases the outbound and captures nothing; a crash image
//! taken in the middle of the group resumes only the member that had not
//! finished (participant calls counted); a cancellation releases both legs
//! and refunds the whole charge; a bad return leg is refused by field.

use async_trait::async_trait;
use booking_domain::booking_saga::{
    booking_definitions, check_consistency, prepare, return_key, start_booking, BookingData,
    BookingError, BookingRequest, BookingServices, Passenger, ReturnSeat,
};
use booking_domain::cancellation::{cancellation_definition, record_of_saga, start_cancellation};
use booking_domain::catalog::{flight_id, Airport, Catalog, Flight};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::inventory::{
    Hold, HoldLookup, HoldRequest, HoldState, Inventory, InventoryError, ReleaseOutcome, SeatTotals,
};
use booking_domain::payments::{CardDetails, PaymentLookup, PaymentStatus};
use booking_domain::pricing::{combine, price};
use booking_domain::types::{Currency, Money};
use booking_domain::{Cabin, FlightId};
use chrono::{Datelike, Days, NaiveDate, NaiveTime, Utc, Weekday};
use saga_engine::{Engine, EventKind, SagaId, SagaStatus, SledStore};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn airport(code: &str) -> Airport {
    Airport {
        code: code.into(),
        city: format!("City {code}"),
        name: format!("{code} Airport"),
        country: "Testland".into(),
        utc_offset_minutes: Some(0),
        location: None,
    }
}

fn flight(no: &str, from: &str, to: &str, dep: (u32, u32), arr: (u32, u32), fare: i64) -> Flight {
    Flight {
        id: flight_id(no, from, to, Weekday::Wed, 0),
        flight_no: no.into(),
        airline_code: "RT".into(),
        airline: "Round Trip Air".into(),
        origin: from.into(),
        destination: to.into(),
        weekday: Weekday::Wed,
        departure: NaiveTime::from_hms_opt(dep.0, dep.1, 0).unwrap(),
        arrival: NaiveTime::from_hms_opt(arr.0, arr.1, 0).unwrap(),
        arrival_weekday: Weekday::Wed,
        duration_minutes: 150,
        economy: Some(Money::new(fare, Currency::usd())),
        business: None,
        first: None,
    }
}

/// AAA -> BBB (lands 11:30); back at 15:00 (fine) and at 08:00 (before
/// the outbound lands the same day); and CCC -> AAA (the wrong way back).
fn catalog() -> Arc<Catalog> {
    Arc::new(
        Catalog::in_memory(
            vec![airport("AAA"), airport("BBB"), airport("CCC")],
            vec![
                flight("RT1", "AAA", "BBB", (9, 0), (11, 30), 20_000),
                flight("RT2", "BBB", "AAA", (15, 0), (17, 30), 15_000),
                flight("RT3", "BBB", "AAA", (8, 0), (10, 30), 15_000),
                flight("RT4", "CCC", "AAA", (15, 0), (17, 30), 15_000),
            ],
        )
        .unwrap(),
    )
}

fn id(no: &str, from: &str, to: &str) -> FlightId {
    flight_id(no, from, to, Weekday::Wed, 0)
}

fn next_wednesday() -> NaiveDate {
    let mut date = Utc::now().date_naive() + Days::new(7);
    while date.weekday() != Weekday::Wed {
        date = date + Days::new(1);
    }
    date
}

fn request(back: Option<(&FlightId, NaiveDate)>) -> BookingRequest {
    BookingRequest {
        flight_id: id("RT1", "AAA", "BBB").0,
        date: next_wednesday(),
        cabin: Cabin::Economy,
        passengers: vec![
            Passenger {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                date_of_birth: None,
            },
            Passenger {
                first_name: "Charles".into(),
                last_name: "Babbage".into(),
                date_of_birth: None,
            },
        ],
        email: "ada@example.com".into(),
        phone: None,
        hold: false,
        loyalty_id: None,
        card: CardDetails {
            number: "4242 4242 4242 4242".into(),
            exp_month: 12,
            exp_year: Utc::now().year() as u32 + 3,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        },
        redeem_miles: 0,
        faults: BTreeMap::new(),
        return_flight_id: back.map(|(f, _)| f.0.clone()),
        return_date: back.map(|(_, d)| d),
    }
}

fn round_trip() -> BookingRequest {
    request(Some((&id("RT2", "BBB", "AAA"), next_wednesday())))
}

/// An inventory that counts holds per key and can keep the return leg's
/// hold from ever answering (the member is then mid-call when the crash
/// image is taken).
struct Counted {
    inner: Arc<dyn Inventory>,
    holds: Mutex<HashMap<String, u32>>,
    stall_return: bool,
}

impl Counted {
    fn new(inner: Arc<dyn Inventory>, stall_return: bool) -> Arc<Self> {
        Arc::new(Counted {
            inner,
            holds: Mutex::new(HashMap::new()),
            stall_return,
        })
    }
    fn calls(&self, key: &str) -> u32 {
        self.holds.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Inventory for Counted {
    async fn hold(&self, key: &str, r: &HoldRequest) -> Result<Hold, InventoryError> {
        *self
            .holds
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default() += 1;
        if self.stall_return && key.ends_with(":reserve_return_seat") {
            std::future::pending::<()>().await;
        }
        self.inner.hold(key, r).await
    }
    async fn confirm(&self, key: &str) -> Result<Hold, InventoryError> {
        self.inner.confirm(key).await
    }
    async fn release(&self, key: &str) -> Result<ReleaseOutcome, InventoryError> {
        self.inner.release(key).await
    }
    async fn seats_left(
        &self,
        f: &FlightId,
        d: NaiveDate,
        c: Cabin,
    ) -> Result<u32, InventoryError> {
        self.inner.seats_left(f, d, c).await
    }
    async fn totals(
        &self,
        f: &FlightId,
        d: NaiveDate,
        c: Cabin,
    ) -> Result<SeatTotals, InventoryError> {
        self.inner.totals(f, d, c).await
    }
    async fn hold_status(&self, key: &str) -> Result<HoldLookup, InventoryError> {
        self.inner.hold_status(key).await
    }
    async fn set_capacity(
        &self,
        f: &FlightId,
        d: NaiveDate,
        c: Cabin,
        seats: u32,
    ) -> Result<SeatTotals, InventoryError> {
        self.inner.set_capacity(f, d, c, seats).await
    }
    async fn all_holds(&self) -> Result<Vec<Hold>, InventoryError> {
        self.inner.all_holds().await
    }
}

/// Participants and an engine on sled directories under `root`.
struct World {
    engine: Engine,
    services: BookingServices,
    counted: Arc<Counted>,
    _pdb: sled::Db,
}

async fn open(root: &Path, stall_return: bool) -> World {
    let (pdir, sdir) = (root.join("participants"), root.join("sagas"));
    let pdb = sled::Config::new()
        .path(&pdir)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let mut services = BookingServices::local_in(&pdb, &pdir, catalog()).unwrap();
    let counted = Counted::new(services.inventory.clone(), stall_return);
    services.inventory = counted.clone();
    let mut b = Engine::builder(SledStore::open(&sdir).unwrap());
    for def in booking_definitions(&services) {
        b = b.register(def);
    }
    let engine = b
        .register(cancellation_definition(&services))
        .open()
        .await
        .unwrap();
    World {
        engine,
        services,
        counted,
        _pdb: pdb,
    }
}

async fn hold(w: &World, key: &str) -> HoldLookup {
    w.services.inventory.hold_status(key).await.unwrap()
}

fn outbound_key(saga: &SagaId) -> String {
    format!("{saga}:reserve_seat")
}

async fn seats_left(w: &World, f: &FlightId) -> u32 {
    w.services
        .inventory
        .seats_left(f, next_wednesday(), Cabin::Economy)
        .await
        .unwrap()
}

async fn book(w: &World, req: &BookingRequest, key: &str) -> (SagaId, SagaStatus, BookingData) {
    let saga = start_booking(&w.engine, &w.services, req, key)
        .await
        .unwrap();
    let rec = w.engine.wait(&saga).await.unwrap();
    let data = rec.data_as::<BookingData>().unwrap();
    (saga, rec.status(), data)
}

fn confirmed(h: &HoldLookup, flight: &FlightId, seats: u32) -> bool {
    matches!(h, HoldLookup::Hold(h) if h.state == HoldState::Confirmed && &h.flight == flight && h.seats == seats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_confirms_with_both_seats_held_and_one_charge() {
    let root = tempfile::tempdir().unwrap();
    let w = open(root.path(), false).await;
    let (out, back) = (id("RT1", "AAA", "BBB"), id("RT2", "BBB", "AAA"));
    let (before_out, before_back) = (seats_left(&w, &out).await, seats_left(&w, &back).await);
    let (saga, status, data) = book(&w, &round_trip(), "rt-1").await;
    assert_eq!(status, SagaStatus::Completed, "{data:?}");
    let rec = w.engine.status(&saga).await.unwrap();
    assert_eq!(rec.version, 4);
    assert!(confirmed(&hold(&w, &outbound_key(&saga)).await, &out, 2));
    assert!(confirmed(&hold(&w, &return_key(&saga)).await, &back, 2));
    assert_eq!(seats_left(&w, &out).await, before_out - 2);
    assert_eq!(seats_left(&w, &back).await, before_back - 2);
    assert_eq!(data.return_seat, Some(ReturnSeat::Held { seats: 2 }));
    // One charge for both legs, each priced as one leg is.
    let both = combine(
        &price(&Money::new(20_000, Currency::usd()), 2).unwrap(),
        &price(&Money::new(15_000, Currency::usd()), 2).unwrap(),
    )
    .unwrap();
    assert_eq!(data.price, both);
    match w
        .services
        .payments
        .get(&format!("{saga}:authorize_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Payment(p) => {
            assert_eq!(p.status, PaymentStatus::Captured);
            assert_eq!(p.amount, both.total);
        }
        other => panic!("payment is {other:?}"),
    }
    let record = record_of_saga(&w.services, &saga).unwrap();
    assert_eq!(
        record.return_leg.as_ref().map(|l| &l.flight_id),
        Some(&back)
    );
    let message = w.services.outbox.get(&saga).unwrap().expect("an itinerary");
    assert!(
        message.body.contains("Return RT2 BBB -> AAA on"),
        "{}",
        message.body
    );
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());

    // A one-way booking on v4: the return member ran, did nothing, said so.
    let (one, status, data) = book(&w, &request(None), "ow-1").await;
    assert_eq!(status, SagaStatus::Completed);
    assert_eq!(data.return_seat, Some(ReturnSeat::OneWay));
    assert_eq!(hold(&w, &return_key(&one)).await, HoldLookup::Unknown);
    assert_eq!(w.counted.calls(&return_key(&one)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_return_leg_releases_the_outbound_and_captures_nothing() {
    let root = tempfile::tempdir().unwrap();
    let w = open(root.path(), false).await;
    let (out, back) = (id("RT1", "AAA", "BBB"), id("RT2", "BBB", "AAA"));
    let before_out = seats_left(&w, &out).await;
    // Injected: the return leg's participant says no.
    let mut req = round_trip();
    req.faults
        .insert(BookingStep::ReserveReturnSeat, Fault::Reject);
    // Sold out: too few seats left on the return flight.
    w.services
        .inventory
        .set_capacity(&back, next_wednesday(), Cabin::Economy, 1)
        .await
        .unwrap();
    for (req, key) in [(req, "rt-reject"), (round_trip(), "rt-sold-out")] {
        let (saga, status, data) = book(&w, &req, key).await;
        assert_eq!(status, SagaStatus::Compensated, "{key}: {data:?}");
        let rec = w.engine.status(&saga).await.unwrap();
        let reason = rec.state.failure.clone().unwrap_or_default();
        assert!(reason.contains("reserve_return_seat"), "{key}: {reason}");
        match hold(&w, &outbound_key(&saga)).await {
            HoldLookup::Hold(h) => assert_eq!(h.state, HoldState::Released, "{key}"),
            other => panic!("{key}: the outbound hold is {other:?}"),
        }
        assert!(
            !matches!(hold(&w, &return_key(&saga)).await, HoldLookup::Hold(h) if h.state != HoldState::Released),
            "{key}: a return seat is held"
        );
        let pay = w
            .services
            .payments
            .get(&format!("{saga}:authorize_payment"))
            .await
            .unwrap();
        assert!(
            !matches!(&pay, PaymentLookup::Payment(p) if matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured)),
            "{key}: payment is {pay:?}"
        );
        assert_eq!(seats_left(&w, &out).await, before_out, "{key}");
    }
    let held: Vec<_> = w
        .services
        .inventory
        .all_holds()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.state != HoldState::Released)
        .collect();
    assert!(held.is_empty(), "nothing left held: {held:?}");
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The crash is a crash image (as in `card_restart.rs`): the directories
/// copied while the outbound member has finished and the return member's
/// call hangs. Opened again on the copies, only the return member runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_the_seat_group_resumes_only_the_unfinished_member() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let w = open(&live, true).await;
    let mut events = w.engine.subscribe();
    let saga = start_booking(&w.engine, &w.services, &round_trip(), "rt-restart")
        .await
        .unwrap();
    // Wait (for conditions) until the engine has recorded the outbound's
    // success (its event is published once the transition is committed)
    // and the return member is in its call.
    loop {
        let e = events.recv().await.unwrap();
        if e.saga_id == saga
            && matches!(&e.kind, EventKind::StepSucceeded { step, .. } if step == "reserve_seat")
        {
            break;
        }
    }
    while w.counted.calls(&return_key(&saga)) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.engine.durable().await.unwrap();
    assert_eq!(w.counted.calls(&outbound_key(&saga)), 1);
    let image = root.path().join("image");
    copy_dir(&live.join("participants"), &image.join("participants"));
    copy_dir(&live.join("sagas"), &image.join("sagas"));

    let again = open(&image, false).await;
    let rec = again.engine.wait(&saga).await.unwrap();
    assert_eq!(
        again.counted.calls(&outbound_key(&saga)),
        0,
        "the outbound member had finished: it must not run again"
    );
    assert_eq!(
        rec.status(),
        SagaStatus::Completed,
        "{:?}",
        rec.state.failure
    );
    assert_eq!(again.counted.calls(&return_key(&saga)), 1);
    assert!(confirmed(
        &hold(&again, &outbound_key(&saga)).await,
        &id("RT1", "AAA", "BBB"),
        2
    ));
    assert!(confirmed(
        &hold(&again, &return_key(&saga)).await,
        &id("RT2", "BBB", "AAA"),
        2
    ));
    assert!(check_consistency(&again.engine, &again.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_round_trip_releases_both_legs_and_refunds_the_whole_charge() {
    let root = tempfile::tempdir().unwrap();
    let w = open(root.path(), false).await;
    let (out, back) = (id("RT1", "AAA", "BBB"), id("RT2", "BBB", "AAA"));
    let (before_out, before_back) = (seats_left(&w, &out).await, seats_left(&w, &back).await);
    let (saga, status, data) = book(&w, &round_trip(), "rt-cancel").await;
    assert_eq!(status, SagaStatus::Completed);
    let record = record_of_saga(&w.services, &saga).unwrap();
    let cancel = start_cancellation(&w.engine, &w.services, &record, Utc::now())
        .await
        .unwrap();
    let rec = w.engine.wait(&cancel).await.unwrap();
    assert_eq!(
        rec.status(),
        SagaStatus::Completed,
        "{:?}",
        rec.state.failure
    );
    for key in [outbound_key(&saga), return_key(&saga)] {
        assert!(
            matches!(hold(&w, &key).await, HoldLookup::Hold(h) if h.state == HoldState::Released),
            "{key} not released"
        );
    }
    assert_eq!(seats_left(&w, &out).await, before_out);
    assert_eq!(seats_left(&w, &back).await, before_back);
    match w
        .services
        .payments
        .get(&format!("{cancel}:refund_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Refund(r) => assert_eq!(r.amount, data.charge()),
        other => panic!("refund is {other:?}"),
    }
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_return_leg_is_refused_by_field_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    let w = open(root.path(), false).await;
    let today = Utc::now().date_naive();
    let wed = next_wednesday();
    let cases: Vec<(BookingRequest, &str, &str)> = vec![
        (
            request(Some((&id("RT4", "CCC", "AAA"), wed))),
            "return_flight_id",
            "must fly BBB",
        ),
        (
            request(Some((&id("RT3", "BBB", "AAA"), wed))),
            "return_date",
            "before the outbound lands",
        ),
        (
            request(Some((&id("RT2", "BBB", "AAA"), wed - Days::new(7)))),
            "return_date",
            "before the outbound lands",
        ),
        (
            request(Some((&id("RT2", "BBB", "AAA"), wed + Days::new(1)))),
            "return_date",
            "operates on Wed",
        ),
        (
            request(Some((&FlightId("NOPE".into()), wed))),
            "return_flight_id",
            "no flight",
        ),
        (
            BookingRequest {
                return_date: None,
                ..round_trip()
            },
            "return_date",
            "is required",
        ),
        (
            BookingRequest {
                return_flight_id: None,
                ..round_trip()
            },
            "return_flight_id",
            "is required",
        ),
    ];
    for (req, field, says) in cases {
        match prepare(&w.services, &req, today).await {
            Err(BookingError::Invalid(e)) => assert!(
                e.0.iter()
                    .any(|f| f.field == field && f.message.contains(says)),
                "expected {field}: {says}; got {e}"
            ),
            other => panic!("expected {field} refused, got {other:?}"),
        }
    }
    assert!(w.engine.list(None, 10).await.unwrap().is_empty());
}
