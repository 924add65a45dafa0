//! Books a flight end to end on the embedded store and prints the saga's
//! history.
//!
//! ```text
//! cargo run --example booking
//! ```
//!
//! Searches the default schedule for a JFK -> LAX flight next week, books
//! two passengers with a loyalty account, and prints every transition of
//! the saga, then books again with a declined test card to show the
//! compensation.

use booking_domain::booking_saga::{
    booking_definition, start_booking, BookingData, BookingRequest, BookingServices, Passenger,
};
use booking_domain::catalog::{Catalog, SearchQuery};
use booking_domain::loyalty::CreateAccount;
use booking_domain::payments::CardDetails;
use booking_domain::Cabin;
use chrono::{Datelike, Days, Utc};
use saga_engine::{Engine, SledStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let catalog = Arc::new(Catalog::open(&db)?);
    let services = BookingServices::local(&db, catalog.clone())?;
    let engine = Engine::builder(SledStore::with_db(db.clone())?)
        .register(booking_definition(&services))
        .open()
        .await?;

    let date = Utc::now().date_naive() + Days::new(7);
    let inventory = services.inventory.clone();
    let seats = |f: &booking_domain::FlightId, d, c| {
        // The example is single-threaded at this point; a real server keeps
        // a cache. Seats left come from the inventory participant.
        block_on(inventory.seats_left(f, d, c)).unwrap_or(0)
    };
    let results = catalog.search(
        &SearchQuery::new("JFK", "LAX", date, Cabin::Economy),
        &seats,
    )?;
    let pick = results.first().ok_or("no JFK -> LAX flight that day")?;
    println!(
        "{} {} {} -> {} departs {} {}, {} per passenger, {} seats left",
        pick.flight.flight_no,
        pick.flight.airline,
        pick.flight.origin,
        pick.flight.destination,
        pick.date,
        pick.flight.departure,
        pick.fare,
        pick.seats_left
    );

    let member = services
        .loyalty
        .create_account(
            "example-member",
            &CreateAccount {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                email: "ada@example.com".into(),
            },
        )
        .await?;
    for (label, number) in [
        ("approved card", "4242 4242 4242 4242"),
        ("declined card", "4000 0000 0000 9995"),
    ] {
        let request = BookingRequest {
            hold: false,
            flight_id: pick.flight.id.0.clone(),
            date: pick.date,
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
            loyalty_id: Some(member.id.0.clone()),
            phone: None,
            card: CardDetails {
                number: number.into(),
                exp_month: 12,
                exp_year: Utc::now().year() as u32 + 2,
                cvc: "123".into(),
                holder_name: "Ada Lovelace".into(),
            },
            redeem_miles: 0,
            faults: Default::default(),
            return_flight_id: None,
            return_date: None,
        };
        let id = start_booking(&engine, &services, &request, label).await?;
        let done = engine.wait(&id).await?;
        let data: BookingData = done.data_as()?;
        println!(
            "\n{label}: saga {id} {} (total {})",
            done.status(),
            data.price.total
        );
        if let Some(r) = &data.booking_ref {
            println!(
                "  booking reference {r}, {} miles",
                data.miles_awarded.unwrap_or(0)
            );
        }
        if let Some(why) = &done.state.failure {
            println!("  reason: {why}");
        }
        for e in engine.history(&id).await? {
            println!("    #{:<2} {}", e.seq, serde_json::to_string(&e.kind)?);
        }
    }
    engine.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

/// Runs a future to completion on the current thread (the search callback
/// is synchronous).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
