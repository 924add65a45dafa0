//! The booking's search attributes on the real sled store: after a
//! booking completes it is found by its reference, by the hash of its
//! contact address (never the address itself) and by its departure date,
//! through the store's attribute index.

#[path = "common/mod.rs"]
mod common;

use booking_domain::booking_saga::{
    booking_definition, start_booking, BookingData, BookingRequest, BookingServices,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::search::{email_attribute, DEPARTURE, EMAIL, REFERENCE};
use chrono::NaiveDate;
use saga_engine::store::SagaFilter;
use saga_engine::{Engine, SagaStatus, SledStore, Store};
use std::sync::Arc;

struct World {
    engine: Engine,
    store: Arc<SledStore>,
    services: BookingServices,
    flight: Flight,
    date: NaiveDate,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    let db = saga_engine::store::open_sled_db(&db_dir).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = common::economy_flight(&catalog);
    let services = BookingServices::local(&db, catalog).unwrap();
    let store = Arc::new(SledStore::with_db_at(db, &db_dir).unwrap());
    let engine = Engine::builder_arc(store.clone())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    World {
        engine,
        store,
        services,
        flight,
        date,
        _dir: dir,
    }
}

impl World {
    fn request(&self) -> BookingRequest {
        common::ada_request(&self.flight, self.date)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_booking_is_found_by_reference_email_hash_and_departure() {
    let w = world().await;
    let mut req = w.request();
    req.email = "Ada.Lovelace@Example.com".into();
    let id = start_booking(&w.engine, &w.services, &req, "search-1")
        .await
        .unwrap();
    let rec = w.engine.wait(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed);
    let data: BookingData = rec.data_as().unwrap();
    let reference = data
        .booking_ref
        .expect("a confirmed booking has a reference")
        .0;
    let hash = email_attribute("ada.lovelace@example.com");
    assert_eq!(rec.attributes[EMAIL], hash);
    assert!(
        rec.attributes
            .values()
            .all(|v| !v.to_lowercase().contains("lovelace")),
        "the address reached the index in clear: {:?}",
        rec.attributes
    );
    for (name, value) in [
        (REFERENCE, reference.clone()),
        (EMAIL, email_attribute(" ADA.LOVELACE@example.com ")),
        (DEPARTURE, w.date.to_string()),
    ] {
        let filter = SagaFilter {
            attribute: Some((name.to_string(), value.clone())),
            ..Default::default()
        };
        let page = w.store.list_page(&filter, None, 10).await.unwrap();
        let ids: Vec<_> = page.records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, vec![id.clone()], "{name} = {value}");
    }
    let other = SagaFilter {
        attribute: Some((EMAIL.to_string(), email_attribute("someone@else.org"))),
        ..Default::default()
    };
    assert!(w
        .store
        .list_page(&other, None, 10)
        .await
        .unwrap()
        .records
        .is_empty());
    assert_eq!(w.store.check_query_indexes().unwrap(), Vec::<String>::new());
}
