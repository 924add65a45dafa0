//! What several booking-domain tests set up the same way: a flight of the
//! default dataset with an economy cabin and a departure date on its
//! weekday at least a week ahead, and Ada Lovelace's one-passenger booking
//! request for it with a test card that authorizes.
//! Declared with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)]

use booking_domain::booking_saga::{BookingRequest, Passenger};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::payments::CardDetails;
use booking_domain::Cabin;
use chrono::{Datelike, Days, NaiveDate, Utc};
use std::collections::BTreeMap;

/// The first flight of `catalog` with an economy cabin, and its first
/// departure date at least seven days from today.
pub fn economy_flight(catalog: &Catalog) -> (Flight, NaiveDate) {
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
    (flight, date)
}

/// Ada Lovelace in economy on `flight` at `date`, paying with a Visa test
/// card that authorizes.
pub fn ada_request(flight: &Flight, date: NaiveDate) -> BookingRequest {
    BookingRequest {
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
