//! Round trips in the torture mix: one booking in three also books the
//! return flight (`TT101`, BBB -> AAA the same day, after the outbound
//! lands), its two seat holds reserved by the saga's parallel group under
//! the same SIGKILLs as everything else. Some round trips have their
//! return leg rejected, so that the group's failure path (the outbound
//! released, the payment never captured) runs too.
//!
//! The invariant ([`check`], after every restart and at the end): per
//! booking, seats are held on both legs or on none: a completed round
//! trip not cancelled holds both legs confirmed, one-way bookings hold no
//! return seat, and a compensated or cancelled booking holds no seat on
//! either leg.

use crate::verdict::Violations;
use booking_domain::booking_saga::{return_key, BookingData, BookingRequest, BOOKING_SAGA};
use booking_domain::catalog::{flight_id, Flight};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::inventory::{Hold, HoldState};
use booking_domain::types::{Currency, Money};
use chrono::{NaiveTime, Weekday};
use saga_engine::{SagaRecord, SagaStatus};
use std::collections::{BTreeSet, HashMap};

/// The steps a one-way booking's planted rejection picks from (in saga
/// order, the return leg left out: it does nothing on a one-way booking).
pub(super) const ONE_WAY_STEPS: [BookingStep; 4] = [
    BookingStep::ReserveSeat,
    BookingStep::AuthorizePayment,
    BookingStep::AwardMiles,
    BookingStep::ConfirmBooking,
];

/// The return flight of the torture's one route: BBB -> AAA on the
/// outbound's weekday, leaving after it lands (11:30).
pub(super) fn return_flight() -> Flight {
    Flight {
        id: flight_id("TT101", "BBB", "AAA", Weekday::Wed, 0),
        flight_no: "TT101".into(),
        airline_code: "TT".into(),
        airline: "Torture Air".into(),
        origin: "BBB".into(),
        destination: "AAA".into(),
        weekday: Weekday::Wed,
        departure: NaiveTime::from_hms_opt(15, 0, 0).unwrap(),
        arrival: NaiveTime::from_hms_opt(17, 30, 0).unwrap(),
        arrival_weekday: Weekday::Wed,
        duration_minutes: 150,
        economy: Some(Money::new(19_900, Currency::usd())),
        business: None,
        first: None,
    }
}

/// Booking `n` becomes a round trip one in three (`n % 3 == 2`); one in
/// five of those has its return leg rejected (and one in five a lost reply
/// there: the member is in doubt, retried under its key).
pub(super) fn adjust(n: usize, req: &mut BookingRequest) {
    if n % 3 != 2 {
        return;
    }
    req.return_flight_id = Some(return_flight().id.0);
    req.return_date = Some(req.date);
    match n / 3 % 5 {
        1 => {
            req.faults
                .insert(BookingStep::ReserveReturnSeat, Fault::Reject);
        }
        3 => {
            req.faults
                .insert(BookingStep::ReserveReturnSeat, Fault::LoseReply);
        }
        _ => {}
    }
}

/// How many legs hold seats for `d`: 2 for a round trip, else 1.
pub(super) fn legs(d: &BookingData) -> u32 {
    if d.return_leg.is_some() {
        2
    } else {
        1
    }
}

/// Seats held equal confirmed legs, both or none per booking (see the
/// module documentation). `cancelled` are the bookings a cancellation saga
/// ended; bookings still being cancelled are skipped (in `cancelling`).
pub(super) fn check(
    sagas: &[SagaRecord],
    holds: &[Hold],
    cancelling: &BTreeSet<String>,
    cancelled: &BTreeSet<String>,
    v: &mut Violations,
) -> usize {
    let by_key: HashMap<&str, &Hold> = holds.iter().map(|h| (h.key.as_str(), h)).collect();
    let mut round_trips = 0;
    for rec in sagas.iter().filter(|r| r.definition == BOOKING_SAGA) {
        let status = rec.status();
        let done = cancelled.contains(rec.id.as_str());
        if !matches!(status, SagaStatus::Completed | SagaStatus::Compensated)
            || (cancelling.contains(rec.id.as_str()) && !done)
        {
            continue;
        }
        let Ok(d) = rec.data_as::<BookingData>() else {
            continue;
        };
        let seats = d.passengers.len() as u32;
        let out = by_key.get(format!("{}:reserve_seat", rec.id).as_str());
        let back = by_key.get(return_key(&rec.id).as_str());
        let taken = |h: Option<&&Hold>| h.is_some_and(|h| h.state != HoldState::Released);
        let sold = |h: Option<&&Hold>| {
            h.is_some_and(|h| h.state == HoldState::Confirmed && h.seats == seats)
        };
        let id = &rec.id;
        match (&d.return_leg, status == SagaStatus::Completed && !done) {
            (Some(_), true) => {
                round_trips += 1;
                if !sold(out) || !sold(back) {
                    v.push(
                        "round trip legs",
                        format!(
                            "round trip {id} confirmed but holds outbound {out:?}, return {back:?}"
                        ),
                    );
                }
            }
            (None, _) if back.is_some() => v.push(
                "round trip legs",
                format!("one-way booking {id} holds a return seat: {back:?}"),
            ),
            (_, false) if taken(out) || taken(back) => v.push(
                "round trip legs",
                format!(
                    "booking {id} ({status}{}) still holds outbound {out:?}, return {back:?}",
                    if done { ", cancelled" } else { "" }
                ),
            ),
            _ => {}
        }
    }
    round_trips
}

/// The bookings whose cancellation completed.
fn cancelled_bookings(sagas: &[SagaRecord]) -> BTreeSet<String> {
    sagas
        .iter()
        .filter(|r| {
            r.definition == booking_domain::cancellation::CANCELLATION_SAGA
                && r.status() == SagaStatus::Completed
        })
        .filter_map(|r| {
            r.data_as::<booking_domain::cancellation::CancellationData>()
                .ok()
        })
        .map(|d| d.booking_saga.to_string())
        .collect()
}

/// At the end (every saga ended): [`check`] over every booking, cancelled
/// ones included, and the coverage floors: round trips confirmed, and
/// round trips compensated with their outbound seat released.
pub(super) fn totals(sagas: &[SagaRecord], holds: &[Hold], v: &mut Violations) {
    let cancelled = cancelled_bookings(sagas);
    let confirmed = check(sagas, holds, &cancelled, &cancelled, v);
    let undone = sagas
        .iter()
        .filter(|r| r.definition == BOOKING_SAGA && r.status() == SagaStatus::Compensated)
        .filter(|r| {
            r.data_as::<BookingData>()
                .is_ok_and(|d| d.return_leg.is_some())
        })
        .count();
    eprintln!("torture: round trips: {confirmed} confirmed (not cancelled), {undone} compensated, {} cancelled",
        sagas.iter().filter(|r| cancelled.contains(r.id.as_str()) && r.data_as::<BookingData>().is_ok_and(|d| d.return_leg.is_some())).count());
    if confirmed == 0 || undone == 0 {
        v.push(
            "totals",
            "expected round trips both confirmed and compensated",
        );
    }
}
