//! Promo codes in the booking saga: a code limited to 5 uses, raced by 50
//! concurrent bookings, confirms exactly 5; the charge is the price less
//! the code's discount (and miles priced on what is left); a booking that
//! compensates gives its use back; a code cannot be used outside its window.

use booking_domain::booking_saga::{
    booking_definition, check_consistency, start_booking_with, BookingData, BookingError,
    BookingRequest, BookingServices, Passenger,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::payments::{CardDetails, PaymentStatus};
use booking_domain::pricing::PromoRule;
use booking_domain::promo::PromoCode;
use booking_domain::Cabin;
use chrono::{Datelike, Days, NaiveDate, Utc};
use saga_engine::{Engine, MemoryStore, SagaStatus};
use std::collections::BTreeMap;
use std::sync::Arc;

struct World {
    engine: Engine,
    services: BookingServices,
    flight: Flight,
    date: NaiveDate,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let flight = catalog
        .flights()
        .into_iter()
        .find(|f| f.economy.is_some())
        .expect("a flight with economy")
        .clone();
    let mut date = Utc::now().date_naive() + Days::new(7);
    while date.weekday() != flight.weekday {
        date = date + Days::new(1);
    }
    let services = BookingServices::local(&db, catalog).unwrap();
    let engine = Engine::builder(MemoryStore::new())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    World {
        engine,
        services,
        flight,
        date,
        _dir: dir,
    }
}

fn request(w: &World, email: &str) -> BookingRequest {
    BookingRequest {
        hold: false,
        flight_id: w.flight.id.0.clone(),
        date: w.date,
        cabin: Cabin::Economy,
        passengers: vec![Passenger {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: None,
        }],
        email: email.into(),
        loyalty_id: None,
        phone: None,
        card: CardDetails {
            number: "4242 4242 4242 4242".into(),
            exp_month: 12,
            exp_year: Utc::now().year() as u32 + 3,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        },
        redeem_miles: 0,
        faults: BTreeMap::new(),
        return_flight_id: None,
        return_date: None,
    }
}

async fn add_code(w: &World, code: &str, percent: u32, max_uses: Option<u32>) {
    let now = Utc::now();
    w.services
        .promos
        .put(PromoCode {
            v: 1,
            code: code.into(),
            rule: PromoRule::Percent { percent },
            valid_from: now - chrono::Duration::hours(1),
            valid_until: now + chrono::Duration::days(1),
            max_uses,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_bookings_for_five_uses_confirm_exactly_five() {
    let w = Arc::new(world().await);
    add_code(&w, "RACE5", 10, Some(5)).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let req = request(&w, &format!("racer{i}@example.com"));
            match start_booking_with(
                &w.engine,
                &w.services,
                &req,
                &format!("race-{i}"),
                Some("race5"),
            )
            .await
            {
                Ok(id) => Some(w.engine.wait(&id).await.unwrap()),
                // Seen used up already while validating: refused before starting.
                Err(BookingError::Invalid(v)) => {
                    assert!(v.0.iter().any(|f| f.field == "promo_code"), "{v:?}");
                    None
                }
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let (mut confirmed, mut compensated, mut refused) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Some(rec) if rec.status() == SagaStatus::Completed => {
                confirmed += 1;
                let d: BookingData = rec.data_as().unwrap();
                let promo = d.promo.clone().unwrap();
                assert_eq!(promo.discount.minor, d.price.base.minor / 10);
                let pay = w.services.payments.history(&d.email).await.unwrap();
                assert_eq!(pay[0].status, PaymentStatus::Captured);
                assert_eq!(pay[0].amount, d.charge());
                assert_eq!(d.charge().minor, d.price.total.minor - promo.discount.minor);
            }
            Some(rec) => {
                assert_eq!(rec.status(), SagaStatus::Compensated);
                assert!(
                    rec.state.failure.as_deref().unwrap().contains("used up"),
                    "{:?}",
                    rec.state.failure
                );
                compensated += 1;
            }
            None => refused += 1,
        }
    }
    println!("promo race: {confirmed} confirmed, {compensated} compensated at the use step, {refused} refused at validation");
    assert_eq!(confirmed, 5, "exactly the code's limit");
    assert_eq!(confirmed + compensated + refused, 50);
    assert_eq!(w.services.promos.uses("RACE5").unwrap(), 5);
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensated_booking_gives_its_use_back() {
    let w = world().await;
    add_code(&w, "ONCE", 25, Some(1)).await;
    let mut req = request(&w, "grace@example.com");
    req.faults
        .insert(BookingStep::AuthorizePayment, Fault::Reject);
    let id = start_booking_with(&w.engine, &w.services, &req, "fails", Some("ONCE"))
        .await
        .unwrap();
    let rec = w.engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert_eq!(
        w.services.promos.uses("ONCE").unwrap(),
        0,
        "released by the compensation"
    );
    let req = request(&w, "grace@example.com");
    let id = start_booking_with(&w.engine, &w.services, &req, "works", Some("ONCE"))
        .await
        .unwrap();
    assert_eq!(
        w.engine.wait(&id).await.unwrap().status(),
        SagaStatus::Completed
    );
    assert_eq!(w.services.promos.uses("ONCE").unwrap(), 1);
    // Used up now: refused while validating, naming the field.
    let err = start_booking_with(
        &w.engine,
        &w.services,
        &request(&w, "x@example.com"),
        "third",
        Some("ONCE"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BookingError::Invalid(v) if v.0[0].field == "promo_code" && v.0[0].message.contains("used up")),
        "{err}"
    );
    // The same key with another code is another request.
    let err = start_booking_with(&w.engine, &w.services, &req, "works", None)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::KeyReused { .. }), "{err}");
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_codes_are_refused_before_booking() {
    let w = world().await;
    let now = Utc::now();
    w.services
        .promos
        .put(PromoCode {
            v: 1,
            code: "OLD".into(),
            rule: PromoRule::Percent { percent: 50 },
            valid_from: now - chrono::Duration::days(10),
            valid_until: now - chrono::Duration::days(1),
            max_uses: None,
        })
        .await
        .unwrap();
    for code in ["OLD", "NOPE"] {
        let err = start_booking_with(
            &w.engine,
            &w.services,
            &request(&w, "a@example.com"),
            code,
            Some(code),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, BookingError::Invalid(v) if v.0[0].field == "promo_code"),
            "{err}"
        );
    }
}
