//! The booking saga's pivot at capture (version 3), on the sled store:
//! reserve, redeem, authorize and award stay compensatable; confirm_booking
//! (capture + ticket) is the pivot; after it the retriable send_itinerary
//! step queues the itinerary in the outbox, once, never compensated. A
//! pivot that is rejected compensates the steps before it and queues
//! nothing. A saga started by version 2 resumes with its own steps after
//! a restart of an engine that registers every version.

#[path = "common/mod.rs"]
mod common;

use booking_domain::booking_saga::{
    booking_definition, booking_definitions, check_consistency, start_booking, BookingData,
    BookingRequest, BookingServices, BOOKING_SAGA_VERSION, SEND_ITINERARY_STEP,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::payments::{PaymentLookup, PaymentStatus};
use chrono::NaiveDate;
use saga_engine::{Engine, EventKind, SagaId, SagaStatus, SledStore, StepClass};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct World {
    services: BookingServices,
    flight: Flight,
    date: NaiveDate,
}

fn world(dir: &Path) -> World {
    let db = sled::open(dir.join("participants")).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = common::economy_flight(&catalog);
    let services = BookingServices::local_in(&db, &dir.join("participants"), catalog).unwrap();
    World {
        services,
        flight,
        date,
    }
}

impl World {
    fn request(&self) -> BookingRequest {
        common::ada_request(&self.flight, self.date)
    }
}

async fn engine(dir: &Path, w: &World) -> Engine {
    engine_on(Arc::new(SledStore::open(dir.join("engine")).unwrap()), w).await
}

async fn engine_on(store: Arc<SledStore>, w: &World) -> Engine {
    let mut b = Engine::builder_arc(store);
    for def in booking_definitions(&w.services) {
        b = b.register(def);
    }
    b.open().await.unwrap()
}

async fn steps_where(
    engine: &Engine,
    id: &SagaId,
    pick: fn(&EventKind) -> Option<&str>,
) -> Vec<String> {
    engine
        .history(id)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| pick(&e.kind).map(str::to_string))
        .collect()
}

#[test]
fn the_definition_has_its_pivot_at_capture() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let def = booking_definition(&w.services);
    assert_eq!(def.version(), BOOKING_SAGA_VERSION);
    assert_eq!(
        def.step_names(),
        [
            "reserve_seat",
            "reserve_return_seat",
            "await_payment",
            "redeem_miles",
            "authorize_payment",
            "await_confirmation",
            "award_miles",
            "confirm_booking",
            SEND_ITINERARY_STEP
        ]
    );
    use StepClass::*;
    assert_eq!(
        def.step_classes(),
        [
            Compensatable,
            Compensatable,
            ReadOnly,
            Compensatable,
            Compensatable,
            ReadOnly,
            Compensatable,
            Pivot,
            Retriable
        ]
    );
    // The earlier versions stay, unchanged.
    let versions: Vec<(u32, usize)> = booking_definitions(&w.services)
        .iter()
        .map(|d| (d.version(), d.step_names().len()))
        .collect();
    assert_eq!(versions, [(4, 9), (3, 6), (2, 5), (1, 4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_booking_queues_its_itinerary_once() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let engine = engine(dir.path(), &w).await;
    let id = start_booking(&engine, &w.services, &w.request(), "pivot-1")
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    let d: BookingData = rec.data_as().unwrap();
    let reference = d.booking_ref.clone().unwrap();
    let message = w.services.outbox.get(&id).unwrap().expect("queued");
    assert_eq!(message.booking_ref, reference);
    assert_eq!(message.to, "ada@example.com");
    assert!(message.body.contains(&reference.0) && message.body.contains("Ada Lovelace"));
    assert!(!message.body.contains("4242"), "{}", message.body);
    // A retry of the step queues nothing twice.
    let again = w
        .services
        .outbox
        .queue(booking_domain::booking_saga::itinerary(
            &id,
            &d,
            &reference,
            &w.services.catalog.current(),
        ))
        .await
        .unwrap();
    assert_eq!(again, message);
    assert_eq!(w.services.outbox.len(), 1);
    assert!(check_consistency(&engine, &w.services)
        .await
        .unwrap()
        .is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_pivot_compensates_the_steps_before_it_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let engine = engine(dir.path(), &w).await;
    let mut req = w.request();
    req.faults
        .insert(BookingStep::ConfirmBooking, Fault::Reject);
    let id = start_booking(&engine, &w.services, &req, "pivot-2")
        .await
        .unwrap();
    let rec = engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Compensated);
    let undone = steps_where(&engine, &id, |k| match k {
        EventKind::StepCompensated { step, .. } => Some(step),
        _ => None,
    })
    .await;
    assert_eq!(
        undone,
        [
            "award_miles",
            "authorize_payment",
            "redeem_miles",
            "reserve_return_seat",
            "reserve_seat"
        ]
    );
    match w
        .services
        .payments
        .get(&format!("{id}:authorize_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Payment(p) => assert_eq!(p.status, PaymentStatus::Voided),
        other => panic!("payment {other:?}"),
    }
    assert!(w.services.outbox.get(&id).unwrap().is_none());
    let ran = steps_where(&engine, &id, |k| match k {
        EventKind::StepStarted { step, .. } => Some(step),
        _ => None,
    })
    .await;
    assert!(!ran.iter().any(|s| s == SEND_ITINERARY_STEP), "{ran:?}");
    assert!(check_consistency(&engine, &w.services)
        .await
        .unwrap()
        .is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_saga_resumes_with_its_own_steps() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    // An engine of the previous release: version 2 only.
    let v2 = booking_definitions(&w.services)
        .into_iter()
        .find(|d| d.version() == 2)
        .unwrap();
    // One store for both engines, as one process reopening would hold it.
    let store = Arc::new(SledStore::open(dir.path().join("engine")).unwrap());
    let old = Engine::builder_arc(store.clone())
        .register(v2)
        .open()
        .await
        .unwrap();
    let mut req = w.request();
    req.faults
        .insert(BookingStep::ReserveSeat, Fault::Delay { ms: 1500 });
    let id = start_booking(&old, &w.services, &req, "v2-1")
        .await
        .unwrap();
    old.shutdown(Duration::from_millis(10)).await;
    drop(old);
    let engine = engine_on(store, &w).await;
    let rec = tokio::time::timeout(Duration::from_secs(60), engine.wait(&id))
        .await
        .expect("resumed")
        .unwrap();
    assert_eq!((rec.version, rec.status()), (2, SagaStatus::Completed));
    assert_eq!(rec.state.steps.len(), 5);
    assert!(w.services.outbox.get(&id).unwrap().is_none());
    assert!(check_consistency(&engine, &w.services)
        .await
        .unwrap()
        .is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}
