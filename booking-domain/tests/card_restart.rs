//! Cards survive restarts: a booking acknowledged before its authorization
//! resumes after a crash and is confirmed, instead of compensating with
//! "card details are no longer held" (the in-memory vault's answer).
//!
//! The crash is a crash image: once `start_booking` has answered, the
//! participants' and the engine's directories are copied as they are on
//! disk (what a `kill -9` leaves: the page cache, nothing sled still holds
//! in memory), with sled's periodic flush off so that only our own flushes
//! put anything there. The booking's first step is held back, so nothing
//! after the start has flushed the participants. A new engine and new
//! participants on the copies must finish the booking. Under
//! `SAGA_SABOTAGE=vault-no-flush` (the token answered before the sealed
//! card is durable) the copy has no card and the test fails.

use booking_domain::booking_saga::{
    booking_definition, check_consistency, start_booking, BookingServices,
};
use booking_domain::catalog::Catalog;
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::payments::{PaymentStatus, VAULT_KEY_FILE};
use saga_engine::{Engine, SagaStatus, SledStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;
use common::{ada_request as request, economy_flight as flight_and_date};

/// The card `common::ada_request` pays with.
const NUMBER: &str = "4242 4242 4242 4242";

fn participants_db(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .flush_every_ms(None)
        .open()
        .unwrap()
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

/// Every file under `dir`, read whole.
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_acknowledged_before_its_authorization_resumes_after_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let (pdir, sdir) = (root.path().join("participants"), root.path().join("sagas"));
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = flight_and_date(&catalog);

    // Before the crash: the booking is accepted; its first step waits.
    let pdb = participants_db(&pdir);
    let services = BookingServices::local_in(&pdb, &pdir, catalog.clone()).unwrap();
    services
        .faults
        .set(BookingStep::ReserveSeat, Fault::Delay { ms: 60_000 })
        .unwrap();
    let engine = Engine::builder(SledStore::open(&sdir).unwrap())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    let id = start_booking(&engine, &services, &request(&flight, date), "restart-1")
        .await
        .unwrap();
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(pdir.join(VAULT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(key_mode & 0o777, 0o600, "the key file is private");
    let (pimg, simg) = (root.path().join("p-img"), root.path().join("s-img"));
    copy_dir(&pdir, &pimg);
    copy_dir(&sdir, &simg);

    // Nothing in clear on disk: no card number, no CVC field.
    for (path, bytes) in files(&pimg).into_iter().chain(files(&simg)) {
        for secret in [NUMBER.as_bytes(), b"4242424242424242", b"\"cvc\""] {
            assert!(
                !contains(&bytes, secret),
                "{path} holds {}",
                String::from_utf8_lossy(secret)
            );
        }
    }

    // After the crash: new participants and a new engine on the images.
    let pdb2 = participants_db(&pimg);
    let services2 = BookingServices::local_in(&pdb2, &pimg, catalog).unwrap();
    let engine2 = Engine::builder(SledStore::open(&simg).unwrap())
        .register(booking_definition(&services2))
        .open()
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), engine2.wait(&id))
        .await
        .expect("the resumed booking ends")
        .unwrap();
    assert_eq!(
        done.status(),
        SagaStatus::Completed,
        "the booking resumed with its card and was confirmed: {:?}",
        done.state
    );
    let payments = services2.payments.all_payments().await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Captured);
    assert_eq!(
        services2.payments.cards_held().await.unwrap(),
        0,
        "the card is forgotten once authorized"
    );
    assert!(check_consistency(&engine2, &services2)
        .await
        .unwrap()
        .is_empty());
    engine2.shutdown(Duration::from_secs(5)).await;
    engine.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_vault_key_of_another_directory_does_not_open_the_cards() {
    let root = tempfile::tempdir().unwrap();
    let pdir = root.path().join("participants");
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = flight_and_date(&catalog);
    let pdb = participants_db(&pdir);
    let services = BookingServices::local_in(&pdb, &pdir, catalog.clone()).unwrap();
    services
        .faults
        .set(BookingStep::ReserveSeat, Fault::Delay { ms: 60_000 })
        .unwrap();
    let engine = Engine::builder(saga_engine::MemoryStore::new())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    let id = start_booking(&engine, &services, &request(&flight, date), "other-key")
        .await
        .unwrap();
    let token = engine
        .status(&id)
        .await
        .unwrap()
        .data_as::<booking_domain::booking_saga::BookingData>()
        .unwrap()
        .card_token;
    assert!(token.starts_with("tok_"), "{token}");
    pdb.flush_async().await.unwrap();
    let img = root.path().join("img");
    copy_dir(&pdir, &img);
    // Another key file: the sealed card does not open; a definite error,
    // never another card, and authorizing by the token is refused.
    std::fs::remove_file(img.join(VAULT_KEY_FILE)).unwrap();
    let pdb2 = participants_db(&img);
    let pay = booking_domain::payments::LocalPayments::open_in(&pdb2, &img).unwrap();
    use booking_domain::payments::{PaymentError, Payments, TokenAuthorizeRequest};
    let e = pay
        .authorize_token(
            "k",
            &TokenAuthorizeRequest {
                customer_email: "ada@example.com".into(),
                token,
                amount: booking_domain::Money::new(100, booking_domain::types::Currency::usd()),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PaymentError::CardUnreadable { reason } if reason.contains("does not open")),
        "{e}"
    );
    assert!(pay.all_payments().await.unwrap().is_empty());
    engine.shutdown(Duration::from_millis(10)).await;
}

/// The payments participant on the engine's own database answers a token
/// once the sealed card is durable, through the engine's group commit (no
/// flush of its own): a crash image taken right after the answer, with no
/// other flush since, holds the card. Under `SAGA_SABOTAGE=vault-no-flush`
/// (or `ack-before-flush`, the engine's flushes not waited for) the image
/// has no card and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_tokenized_on_the_engines_database_is_durable_once_answered() {
    use booking_domain::payments::{LocalPayments, Payments, TokenizeRequest};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = flight_and_date(&catalog);
    let db = participants_db(&dir);
    let store = SledStore::with_db(db.clone()).unwrap();
    let pay = LocalPayments::open_in(&db, &dir)
        .unwrap()
        .covered_by(&store.durability())
        .unwrap();
    let flushes = store.durability().flushes();
    let token = pay
        .tokenize(
            "card:covered-1",
            &TokenizeRequest {
                card: request(&flight, date).card,
            },
        )
        .await
        .unwrap();
    assert!(
        store.durability().flushes() > flushes
            || saga_engine::sabotage::active(saga_engine::sabotage::VAULT_NO_FLUSH)
            || saga_engine::sabotage::active(saga_engine::sabotage::ACK_BEFORE_FLUSH),
        "the token waited for the engine's group commit"
    );
    let img = root.path().join("img");
    copy_dir(&dir, &img);
    let db2 = participants_db(&img);
    let pay2 = LocalPayments::open_in(&db2, &img).unwrap();
    assert_eq!(
        pay2.cards_held().await.unwrap(),
        1,
        "the sealed card {} is in the crash image",
        token.last4
    );
    drop(store);
}

/// A booking on the engine's database whose saga is acknowledged finished
/// has its itinerary in the outbox after a crash: the outbox does not
/// flush the message itself, the engine's flush of `send_itinerary`'s
/// result covers it. The crash image is taken right after `wait` answers
/// (sled's periodic flush off). Under `SAGA_SABOTAGE=ack-before-flush`
/// nothing acknowledged is on disk and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_bookings_itinerary_is_in_the_outbox_after_a_crash_on_the_engines_database() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let catalog = Arc::new(Catalog::default_dataset());
    let (flight, date) = flight_and_date(&catalog);
    let db = participants_db(&dir);
    let store = SledStore::with_db(db.clone()).unwrap();
    let durability = store.durability();
    let services =
        BookingServices::local_on_engine_db(&db, &dir, catalog.clone(), &durability).unwrap();
    let engine = Engine::builder(store)
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    let id = start_booking(&engine, &services, &request(&flight, date), "outbox-1")
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), engine.wait(&id))
        .await
        .expect("the booking ends")
        .unwrap();
    assert_eq!(done.status(), SagaStatus::Completed, "{:?}", done.state);
    let img = root.path().join("img");
    copy_dir(&dir, &img);

    let db2 = participants_db(&img);
    let store2 = SledStore::with_db(db2.clone()).unwrap();
    let durability2 = store2.durability();
    let services2 = BookingServices::local_on_engine_db(&db2, &img, catalog, &durability2).unwrap();
    let engine2 = Engine::builder(store2)
        .register(booking_definition(&services2))
        .open()
        .await
        .unwrap();
    let status = engine2.status(&id).await;
    assert!(
        matches!(&status, Ok(r) if r.status() == SagaStatus::Completed),
        "the acknowledged booking is completed in the image: {status:?}"
    );
    let message = services2.outbox.get(&id).unwrap();
    assert!(
        message.is_some_and(|m| m.saga_id == id),
        "the itinerary is in the image's outbox"
    );
    engine2.shutdown(Duration::from_secs(5)).await;
    engine.shutdown(Duration::from_millis(10)).await;
}
