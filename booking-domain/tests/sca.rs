//! Payments that need the customer's confirmation (strong customer
//! authentication), at the participant and in the booking saga, on sled:
//! the test card 4000 0000 0000 3220 authorizes as `requires_confirmation`;
//! nothing is captured until the authorization is confirmed; an
//! unconfirmed one can be voided; confirming is idempotent and refused
//! once voided. In the booking saga (version 4) such a booking waits for
//! the customer (`tests/waits.rs`); unconfirmed, its wait times out and the
//! saga compensates: the authorization voided, the seats released, nothing
//! captured.

use booking_domain::booking_saga::{
    booking_definitions, check_consistency, start_booking, BookingRequest, BookingServices,
    Passenger,
};
use booking_domain::catalog::Catalog;
use booking_domain::payments::{
    AuthorizeRequest, CardDetails, LocalPayments, PaymentError, PaymentLookup, PaymentStatus,
    Payments, VoidOutcome, TEST_CARDS,
};
use booking_domain::types::Currency;
use booking_domain::{Cabin, Money};
use chrono::{Datelike, Days, Utc};
use saga_engine::{Engine, SagaStatus, SledStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const SCA_CARD: &str = "4000 0000 0000 3220";

fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 12,
        exp_year: Utc::now().year() as u32 + 3,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

fn request(minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        customer_email: "ada@example.com".into(),
        card: card(SCA_CARD),
        amount: Money::new(minor, Currency::usd()),
    }
}

#[tokio::test]
async fn nothing_is_captured_before_the_customer_confirms() {
    assert!(
        TEST_CARDS
            .iter()
            .any(|t| t.number == SCA_CARD && t.needs_confirmation),
        "listed as a test card"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let pay = LocalPayments::open_in(&db, dir.path()).unwrap();
    let p = pay.authorize("k1", &request(500)).await.unwrap();
    assert_eq!(p.status, PaymentStatus::RequiresConfirmation);
    let e = pay.capture("k1").await.unwrap_err();
    assert!(e.to_string().contains("confirmation"), "{e}");
    assert!(e.is_rejection());
    assert!(matches!(
        pay.get("k1").await.unwrap(),
        PaymentLookup::Payment(p) if p.status == PaymentStatus::RequiresConfirmation
    ));
    let confirmed = pay.confirm_authorization("k1").await.unwrap();
    assert_eq!(confirmed.status, PaymentStatus::Authorized);
    assert_eq!(pay.confirm_authorization("k1").await.unwrap(), confirmed);
    assert_eq!(
        pay.capture("k1").await.unwrap().status,
        PaymentStatus::Captured
    );

    // Unconfirmed, it is voided; confirming after that is refused.
    pay.authorize("k2", &request(700)).await.unwrap();
    assert!(matches!(
        pay.void_or_refund("k2").await.unwrap(),
        VoidOutcome::Voided(p) if p.status == PaymentStatus::Voided
    ));
    assert!(matches!(
        pay.confirm_authorization("k2").await,
        Err(PaymentError::AlreadyCompensated { .. })
    ));
    assert!(matches!(
        pay.confirm_authorization("nope").await,
        Err(PaymentError::UnknownPayment { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_payment_is_never_captured_by_the_booking() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("participants");
    let db = sled::open(&pdir).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let flight = catalog
        .flights()
        .into_iter()
        .find(|f| f.economy.is_some())
        .unwrap()
        .clone();
    let mut date = Utc::now().date_naive() + Days::new(7);
    while date.weekday() != flight.weekday {
        date = date + Days::new(1);
    }
    let mut services = BookingServices::local_in(&db, &pdir, catalog).unwrap();
    services.waits.confirmation_timeout = Duration::from_millis(300);
    let mut b = Engine::builder(SledStore::open(dir.path().join("engine")).unwrap());
    for def in booking_definitions(&services) {
        b = b.register(def);
    }
    let engine = b.open().await.unwrap();
    let before = services
        .inventory
        .seats_left(&flight.id, date, Cabin::Economy)
        .await
        .unwrap();
    let req = BookingRequest {
        hold: false,
        flight_id: flight.id.0.clone(),
        date,
        cabin: Cabin::Economy,
        passengers: vec![Passenger {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: None,
        }],
        email: "ada@example.com".into(),
        loyalty_id: None,
        phone: None,
        card: card(SCA_CARD),
        redeem_miles: 0,
        faults: BTreeMap::new(),
        return_flight_id: None,
        return_date: None,
    };
    let id = start_booking(&engine, &services, &req, "sca-1")
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated, "{:?}", rec.state);
    let failure = rec.state.failure.clone().unwrap_or_default();
    assert!(failure.contains("confirmation"), "{failure}");
    match services
        .payments
        .get(&format!("{id}:authorize_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Payment(p) => assert_eq!(p.status, PaymentStatus::Voided),
        other => panic!("payment {other:?}"),
    }
    assert_eq!(
        services
            .inventory
            .seats_left(&flight.id, date, Cabin::Economy)
            .await
            .unwrap(),
        before,
        "the seats are back"
    );
    assert!(check_consistency(&engine, &services)
        .await
        .unwrap()
        .is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}
