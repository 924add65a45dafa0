//! Passengers' dates of birth and the contact phone (issue 14) on sled:
//! checked before anything starts (one error per field, nothing started,
//! no card kept), then sealed. A booking with both is confirmed; every
//! byte of the participants' and the engine's data directories, every
//! engine event and every log line (captured at TRACE) is searched for
//! them in clear and none holds them; after a restart on the same
//! directories the confirmed booking's details still open (the key file
//! lasts), and under another directory's key they do not.

#[path = "common/mod.rs"]
mod common;

use booking_domain::booking_saga::{
    booking_definition, prepare, start_booking, BookingError, BookingServices, Passenger,
};
use booking_domain::catalog::Catalog;
use booking_domain::personal::{PersonalText, PERSONAL_KEY_FILE};
use saga_engine::{Engine, SagaStatus, SledStore};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DOB_ADA: &str = "1987-03-14";
const DOB_CHARLES: &str = "1991-11-23";
const PHONE: &str = "+44 20-7946 0958";

/// The details in every form they could be written in clear.
const IN_CLEAR: &[&str] = &[
    "1987-03-14",
    "19870314",
    "14.03.1987",
    "1991-11-23",
    "19911123",
    "+442079460958",
    "442079460958",
    "2079460958",
    "20-7946 0958",
    "7946 0958",
];

/// Log lines written through `tracing` while the test runs.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&entry.path()));
        } else {
            out.push((
                entry.path().display().to_string(),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    out
}

fn assert_nothing_in_clear(what: &str, bytes: &[u8]) {
    for secret in IN_CLEAR {
        let s = secret.as_bytes();
        assert!(
            !bytes.windows(s.len()).any(|w| w == s),
            "{what} holds {secret} in clear"
        );
    }
}

fn with_details(req: &mut booking_domain::booking_saga::BookingRequest) {
    req.passengers[0].date_of_birth = Some(PersonalText::from(DOB_ADA));
    req.passengers.push(Passenger {
        first_name: "Charles".into(),
        last_name: "Babbage".into(),
        date_of_birth: Some(PersonalText::from(DOB_CHARLES)),
    });
    req.phone = Some(PersonalText::from(PHONE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_of_birth_and_phone_are_sealed_everywhere_and_open_after_a_restart() {
    let log = Capture::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global: the engine's workers log from other threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let root = tempfile::tempdir().unwrap();
    let (pdir, sdir) = (root.path().join("participants"), root.path().join("sagas"));
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = common::economy_flight(&catalog);
    let mut req = common::ada_request(&flight, date);
    with_details(&mut req);

    let reference;
    let id;
    let pdb = sled::open(&pdir).unwrap();
    let events = {
        let services = BookingServices::local_in(&pdb, &pdir, catalog.clone()).unwrap();
        let engine = Engine::builder(SledStore::open(&sdir).unwrap())
            .register(booking_definition(&services))
            .open()
            .await
            .unwrap();
        let mut events = engine.subscribe();
        id = start_booking(&engine, &services, &req, "personal-1")
            .await
            .unwrap();
        let done = tokio::time::timeout(Duration::from_secs(60), engine.wait(&id))
            .await
            .expect("the booking ends")
            .unwrap();
        assert_eq!(done.status(), SagaStatus::Completed, "{:?}", done.state);
        // The saga's record, as the admin API would show it.
        assert_nothing_in_clear("the saga record", format!("{done:?}").as_bytes());
        assert_nothing_in_clear("the saga data", &serde_json::to_vec(&done.data).unwrap());
        let record = services.bookings.by_saga(&id).unwrap().expect("confirmed");
        assert_nothing_in_clear("the booking record", format!("{record:?}").as_bytes());
        let details = services.bookings.personal_of(&record).unwrap().unwrap();
        assert_eq!(details.date_of_birth(0).unwrap().iso(), DOB_ADA);
        assert_eq!(details.date_of_birth(1).unwrap().iso(), DOB_CHARLES);
        assert_eq!(details.phone.as_ref().unwrap().e164(), "+442079460958");
        reference = record.reference.0.clone();
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(format!("{e:?}"));
        }
        engine.shutdown(Duration::from_secs(5)).await;
        pdb.flush().unwrap();
        seen
    };
    assert!(
        events.len() >= 6,
        "the booking's events were seen: {events:?}"
    );
    assert_nothing_in_clear("the engine's events", events.join("\n").as_bytes());
    let logged = log.0.lock().unwrap().clone();
    assert!(
        !logged.is_empty(),
        "the capture saw the booking's log lines"
    );
    assert_nothing_in_clear("the log", &logged);
    // Every byte of both data directories (all sled files, the key files).
    let mut scanned = 0;
    for (path, bytes) in files(&pdir).into_iter().chain(files(&sdir)) {
        scanned += bytes.len();
        assert_nothing_in_clear(&path, &bytes);
    }
    assert!(scanned > 0);
    assert!(pdir.join(PERSONAL_KEY_FILE).exists());

    // Opened again from the directory (the key read back from its file;
    // the database handle stays, sled holds its lock a moment after the
    // last one drops): the details still open.
    let bookings = booking_domain::booking_saga::BookingStore::open_in(&pdb, &pdir).unwrap();
    let record = bookings.by_reference(&reference).unwrap().unwrap();
    let details = bookings.personal_of(&record).unwrap().unwrap();
    assert_eq!(details.date_of_birth(1).unwrap().iso(), DOB_CHARLES);
    // Under another directory's key: an error, never other details.
    let other = root.path().join("other");
    let foreign =
        booking_domain::booking_saga::BookingStore::open_in(&sled::open(&other).unwrap(), &other)
            .unwrap();
    assert!(foreign.personal_of(&record).is_err());
}

#[tokio::test]
async fn bad_dates_of_birth_and_phones_are_refused_per_field_and_nothing_starts() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let services = BookingServices::local(&db, catalog.clone()).unwrap();
    let engine = Engine::builder(saga_engine::MemoryStore::new())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    let (flight, date) = common::economy_flight(&catalog);
    let today = chrono::Utc::now().date_naive();
    let tomorrow = (today + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    for (dob, phone, fields) in [
        (
            "2023-02-29",
            "+44 20 7946 0958",
            vec!["passengers[1].date_of_birth"],
        ),
        (
            tomorrow.as_str(),
            "+44",
            vec!["passengers[1].date_of_birth", "phone"],
        ),
        (
            "1899-12-31",
            "020 7946 0958",
            vec!["passengers[1].date_of_birth", "phone"],
        ),
        (
            "1990-7-4",
            "+44 20 7946 0958 99999",
            vec!["passengers[1].date_of_birth", "phone"],
        ),
        ("2024-02-29", "+44 (20) 7946", vec!["phone"]),
    ] {
        let mut req = common::ada_request(&flight, date);
        with_details(&mut req);
        req.passengers[1].date_of_birth = Some(PersonalText::from(dob));
        req.phone = Some(PersonalText::from(phone));
        let key = format!("bad-{dob}-{phone}");
        let e = start_booking(&engine, &services, &req, &key)
            .await
            .unwrap_err();
        let BookingError::Invalid(v) = &e else {
            panic!("{dob} {phone}: {e}")
        };
        let got: Vec<&str> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(got, fields, "{dob} {phone}: {e}");
        for secret in [dob, phone, "7946"] {
            assert!(!e.to_string().contains(secret), "{secret} quoted: {e}");
        }
        assert!(engine.find_by_key(&key).await.unwrap().is_none(), "started");
        assert_eq!(
            services.payments.cards_held().await.unwrap(),
            0,
            "card kept"
        );
    }
    // Leaving them out is fine (the JSON API keeps them optional), and a
    // 29 February of a leap year is a date of birth.
    let mut req = common::ada_request(&flight, date);
    let plain = prepare(&services, &req, today).await.unwrap();
    assert!(plain.personal.is_none());
    req.passengers[0].date_of_birth = Some(PersonalText::from("2024-02-29"));
    let sealed = prepare(&services, &req, today).await.unwrap();
    let details = services
        .bookings
        .personal_of_data(&sealed)
        .unwrap()
        .unwrap();
    assert_eq!(details.date_of_birth(0).unwrap().iso(), "2024-02-29");
    assert!(details.phone.is_none());
    assert!(sealed.passengers.iter().all(|p| p.date_of_birth.is_none()));
}
