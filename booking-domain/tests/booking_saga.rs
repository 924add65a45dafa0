//! The booking saga end to end on local participants: the happy path, each
//! failing step with exactly the compensations it needs, in-doubt replies,
//! validation, idempotent start and the no-card-on-disk rule.

use booking_domain::booking_saga::{
    booking_definition, check_consistency, start_booking, BookingError, BookingRequest,
    BookingServices, Passenger, BOOKING_SAGA,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::inventory::HoldLookup;
use booking_domain::loyalty::{CreateAccount, EntryLookup, EntryState};
use booking_domain::payments::{CardDetails, PaymentLookup, PaymentStatus};
use booking_domain::Cabin;
use chrono::{Datelike, Days, NaiveDate, Utc};
use saga_engine::{Engine, EventKind, MemoryStore, SagaId, SagaStatus};
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
        .find(|f| f.economy.is_some() && f.business.is_some())
        .expect("a flight with economy and business")
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

fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 12,
        exp_year: Utc::now().year() as u32 + 3,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

impl World {
    fn request(&self, passengers: usize) -> BookingRequest {
        BookingRequest {
            hold: false,
            flight_id: self.flight.id.0.clone(),
            date: self.date,
            cabin: Cabin::Economy,
            passengers: (0..passengers)
                .map(|i| Passenger {
                    first_name: format!("Ada{}", "x".repeat(i)),
                    last_name: "Lovelace".into(),
                    date_of_birth: None,
                })
                .collect(),
            email: "ada@example.com".into(),
            loyalty_id: None,
            phone: None,
            card: card("4242 4242 4242 4242"),
            redeem_miles: 0,
            faults: BTreeMap::new(),
            return_flight_id: None,
            return_date: None,
        }
    }

    async fn member(&self) -> String {
        self.services
            .loyalty
            .create_account(
                "enroll-ada",
                &CreateAccount {
                    first_name: "Ada".into(),
                    last_name: "Lovelace".into(),
                    email: "ada@example.com".into(),
                },
            )
            .await
            .unwrap()
            .id
            .0
    }

    async fn seats_left(&self) -> u32 {
        self.services
            .inventory
            .seats_left(&self.flight.id, self.date, Cabin::Economy)
            .await
            .unwrap()
    }

    async fn book(&self, req: &BookingRequest, key: &str) -> (SagaId, saga_engine::SagaRecord) {
        let id = start_booking(&self.engine, &self.services, req, key)
            .await
            .unwrap();
        let rec = self.engine.wait(&id).await.unwrap();
        (id, rec)
    }

    /// The steps compensated, in order (a group's members newest index
    /// first: reserve_return_seat, then reserve_seat).
    async fn compensated_steps(&self, id: &SagaId) -> Vec<String> {
        self.engine
            .history(id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::StepCompensated { step, .. } => Some(step),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_reserves_charges_awards_and_confirms() {
    let w = world().await;
    let before = w.seats_left().await;
    let mut req = w.request(2);
    req.loyalty_id = Some(w.member().await);
    let (id, rec) = w.book(&req, "k1").await;
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    let data: booking_domain::booking_saga::BookingData = rec.data_as().unwrap();
    let reference = data.booking_ref.clone().unwrap();
    assert_eq!(reference.0.len(), 6);
    assert_eq!(w.seats_left().await, before - 2);

    let pay = w
        .services
        .payments
        .get(&format!("{id}:authorize_payment"))
        .await
        .unwrap();
    match pay {
        PaymentLookup::Payment(p) => {
            assert_eq!(p.status, PaymentStatus::Captured);
            assert_eq!(p.amount, data.price.total);
            assert_eq!(p.last4, "4242");
        }
        other => panic!("payment {other:?}"),
    }
    let account = w
        .services
        .loyalty
        .account(
            req.loyalty_id
                .as_ref()
                .map(|s| booking_domain::loyalty::AccountId(s.clone()))
                .as_ref()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(account.balance > 0);
    assert_eq!(Some(account.balance), data.miles_awarded);

    let found = w
        .services
        .bookings
        .get(&reference.0, "lovelace")
        .unwrap()
        .unwrap();
    assert_eq!(found.saga_id, id);
    assert_eq!(found.total, data.price.total);
    assert!(w
        .services
        .bookings
        .get(&reference.0, "Babbage")
        .unwrap()
        .is_none());
    assert!(w
        .services
        .bookings
        .get("ZZZZZZ", "Lovelace")
        .unwrap()
        .is_none());
    assert!(
        w.services.payments.cards_held().await.unwrap() == 0,
        "the card is forgotten once captured"
    );

    // The persisted saga data holds no card number and no CVC.
    let json = serde_json::to_string(&rec.data).unwrap();
    assert!(!json.contains("4242424242424242") && !json.contains("4242 4242 4242 4242"));
    assert!(!json.contains("\"123\""));
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failing_step_compensates_exactly_the_steps_before_it() {
    let w = world().await;
    let member = w.member().await;
    let capacity = w.seats_left().await;
    let expected: [(BookingStep, &[&str]); 4] = [
        // The one-way booking's return member did nothing, succeeded, and
        // is compensated with the group (a no-op).
        (BookingStep::ReserveSeat, &["reserve_return_seat"]),
        (
            BookingStep::AuthorizePayment,
            &["redeem_miles", "reserve_return_seat", "reserve_seat"],
        ),
        (
            BookingStep::AwardMiles,
            &[
                "authorize_payment",
                "redeem_miles",
                "reserve_return_seat",
                "reserve_seat",
            ],
        ),
        (
            BookingStep::ConfirmBooking,
            &[
                "award_miles",
                "authorize_payment",
                "redeem_miles",
                "reserve_return_seat",
                "reserve_seat",
            ],
        ),
    ];
    for (i, (step, undone)) in expected.into_iter().enumerate() {
        let mut req = w.request(1);
        req.loyalty_id = Some(member.clone());
        req.faults.insert(step, Fault::Reject);
        let (id, rec) = w.book(&req, &format!("fail-{i}")).await;
        assert_eq!(rec.status(), SagaStatus::Compensated, "failing {step}");
        assert_eq!(
            w.compensated_steps(&id).await,
            undone.to_vec(),
            "failing {step}"
        );
        assert!(rec
            .state
            .failure
            .as_deref()
            .unwrap()
            .contains(step.as_str()));
        // Final state: seats back, no money held, no miles standing.
        assert_eq!(w.seats_left().await, capacity, "failing {step}");
        let pay = w
            .services
            .payments
            .get(&format!("{id}:authorize_payment"))
            .await
            .unwrap();
        assert!(
            !matches!(&pay, PaymentLookup::Payment(p) if matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured)),
            "failing {step}: payment {pay:?}"
        );
        let miles = w
            .services
            .loyalty
            .entry(&format!("{id}:award_miles"))
            .await
            .unwrap();
        assert!(
            !matches!(&miles, EntryLookup::Entry(e) if e.state == EntryState::Applied),
            "failing {step}: miles {miles:?}"
        );
        assert!(w.services.bookings.by_saga(&id).unwrap().is_none());
    }
    let account = w
        .services
        .loyalty
        .account(&booking_domain::loyalty::AccountId(member))
        .await
        .unwrap();
    assert_eq!(account.balance, 0);
    assert_eq!(account.qualifying_miles, 0);
    assert!(w.services.payments.cards_held().await.unwrap() == 0);
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_releases_the_seats_with_the_decline_reason() {
    let w = world().await;
    let capacity = w.seats_left().await;
    let mut req = w.request(3);
    req.card = card("4000 0000 0000 9995");
    let (id, rec) = w.book(&req, "declined").await;
    assert_eq!(rec.status(), SagaStatus::Compensated);
    assert!(
        rec.state
            .failure
            .as_deref()
            .unwrap()
            .contains("insufficient"),
        "{:?}",
        rec.state.failure
    );
    assert_eq!(
        w.compensated_steps(&id).await,
        vec!["redeem_miles", "reserve_return_seat", "reserve_seat"]
    );
    assert_eq!(w.seats_left().await, capacity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_and_transient_failures_still_apply_each_effect_once() {
    let w = world().await;
    let before = w.seats_left().await;
    let mut req = w.request(1);
    req.email = "grace@example.com".into();
    req.faults
        .insert(BookingStep::ReserveSeat, Fault::LoseReply);
    req.faults
        .insert(BookingStep::AuthorizePayment, Fault::LoseReply);
    req.faults
        .insert(BookingStep::ConfirmBooking, Fault::Transient { times: 2 });
    let (_, rec) = w.book(&req, "doubt").await;
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    let attempts = |name: &str| {
        rec.state
            .steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.attempts)
    };
    assert_eq!(attempts("reserve_seat"), Some(2));
    assert_eq!(attempts("authorize_payment"), Some(2));
    assert_eq!(attempts("confirm_booking"), Some(3));
    assert_eq!(w.seats_left().await, before - 1, "one seat, not two");
    let history = w
        .services
        .payments
        .history("grace@example.com")
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "one payment, not two");
    assert_eq!(history[0].status, PaymentStatus::Captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_per_field_and_start_nothing() {
    let w = world().await;
    let mut req = w.request(1);
    req.passengers[0].last_name = "".into();
    req.email = "not-an-email".into();
    req.card.number = "4242 4242 4242 4241".into();
    req.cabin = Cabin::First;
    req.date = w.date - Days::new(14);
    req.loyalty_id = Some("00000000".into());
    req.faults
        .insert(BookingStep::AwardMiles, Fault::Delay { ms: 10_000_000 });
    let err = start_booking(&w.engine, &w.services, &req, "bad")
        .await
        .unwrap_err();
    let BookingError::Invalid(errors) = err else {
        panic!("expected validation errors, got {err:?}");
    };
    let mut fields: Vec<&str> = errors.0.iter().map(|f| f.field.as_str()).collect();
    fields.sort();
    fields.dedup();
    let mut expected = vec![
        "card.number",
        "date",
        "email",
        "faults.award_miles",
        "loyalty_id",
        "passengers[0].last_name",
    ];
    if w.flight.first.is_none() {
        expected.push("cabin");
        expected.sort();
    }
    assert_eq!(fields, expected, "{errors:?}");
    assert!(w.engine.list(None, 10).await.unwrap().is_empty());
    assert!(w.services.payments.cards_held().await.unwrap() == 0);

    let mut none = w.request(1);
    none.passengers.clear();
    none.flight_id = "NOPE".into();
    let BookingError::Invalid(errors) = start_booking(&w.engine, &w.services, &none, "bad2")
        .await
        .unwrap_err()
    else {
        panic!()
    };
    let fields: Vec<&str> = errors.0.iter().map(|f| f.field.as_str()).collect();
    assert!(
        fields.contains(&"flight_id") && fields.contains(&"passengers"),
        "{fields:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_gives_the_same_booking_and_a_different_body_is_refused() {
    let w = world().await;
    let req = w.request(1);
    let a = start_booking(&w.engine, &w.services, &req, "same")
        .await
        .unwrap();
    let b = start_booking(&w.engine, &w.services, &req, "same")
        .await
        .unwrap();
    assert_eq!(a, b);
    let mut other = req.clone();
    other.passengers[0].first_name = "Grace".into();
    match start_booking(&w.engine, &w.services, &other, "same").await {
        Err(BookingError::KeyReused { existing }) => assert_eq!(existing, a),
        other => panic!("expected KeyReused, got {other:?}"),
    }
    w.engine.wait(&a).await.unwrap();
    assert_eq!(w.engine.list(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        w.engine.list(None, 10).await.unwrap()[0].definition,
        BOOKING_SAGA
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_bookings_for_the_last_seats_never_oversell() {
    let w = Arc::new(world().await);
    w.services
        .inventory
        .set_capacity(&w.flight.id, w.date, Cabin::Economy, 5)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let req = w.request(1);
            let id = start_booking(&w.engine, &w.services, &req, &format!("race-{i}"))
                .await
                .unwrap();
            w.engine.wait(&id).await.unwrap().status()
        }));
    }
    let mut completed = 0;
    for t in tasks {
        if t.await.unwrap() == SagaStatus::Completed {
            completed += 1;
        }
    }
    assert_eq!(completed, 5);
    assert_eq!(w.seats_left().await, 0);
    let holds = w.services.inventory.all_holds().await.unwrap();
    let confirmed: u32 = holds
        .iter()
        .filter(|h| h.state == booking_domain::inventory::HoldState::Confirmed)
        .map(|h| h.seats)
        .sum();
    assert_eq!(confirmed, 5);
    let _ = HoldLookup::Unknown;
    assert!(check_consistency(&w.engine, &w.services)
        .await
        .unwrap()
        .is_empty());
}
