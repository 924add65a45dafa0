//! Round trips: a booking may carry a return leg (`return_flight_id`,
//! `return_date`), flown from the outbound's destination back to its origin
//! after the outbound arrives. From saga version 4 the seats of both legs
//! are reserved by one parallel group ([`SEAT_GROUP`]): the outbound member
//! keeps the step name `reserve_seat` (so its key `{saga}:reserve_seat`
//! is the one every earlier booking used), the return member is
//! [`RESERVE_RETURN_SEAT_STEP`] under its own key. The return member of a
//! one-way booking does nothing and records so ([`ReturnSeat::OneWay`]).
//!
//! Both legs are priced through [`crate::pricing::price`] and summed
//! ([`crate::pricing::combine`]): one charge covers both; promo codes and
//! miles apply to the sum as for one leg. The pivot confirms both holds;
//! a cancellation releases both and refunds the whole charge; the
//! consistency check looks at both.

use super::*;
use crate::inventory::{HoldLookup, HoldState};

/// The parallel group of the seat reservations (version 4 on).
pub const SEAT_GROUP: &str = "seats";
/// The return leg's member of [`SEAT_GROUP`].
pub const RESERVE_RETURN_SEAT_STEP: &str = "reserve_return_seat";

/// How the return member's errors begin (the rest is the inventory's text).
pub const RETURN_LEG_PREFIX: &str = "return leg: ";
/// The return member's answer when the outbound was refused first (the
/// group is failing): it holds nothing.
pub const OUTBOUND_FAILED: &str = "the outbound leg failed; the return leg was not reserved";

/// The return leg of a round trip, as validated and priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnLeg {
    /// The return flight.
    pub flight_id: FlightId,
    /// Its departure date.
    pub date: NaiveDate,
    /// This leg's own price (included in the booking's price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceBreakdown>,
}

/// What the return member did (the saga's data says it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReturnSeat {
    /// A one-way booking: nothing to reserve.
    OneWay,
    /// Seats held on the return flight.
    Held {
        /// Seats held.
        seats: u32,
    },
}

/// The idempotency key of a saga's return-leg hold.
pub fn return_key(saga: &SagaId) -> String {
    format!("{saga}:{RESERVE_RETURN_SEAT_STEP}")
}

/// Checks the return leg of `req` against the catalog (as of `today`),
/// given the outbound flight (if it was found). Problems go to `err`, one
/// per field; on success, the leg and its fare per passenger.
pub(super) fn check_return(
    catalog: &Catalog,
    req: &BookingRequest,
    outbound: Option<&crate::catalog::Flight>,
    today: NaiveDate,
    err: &mut impl FnMut(&str, String),
) -> Option<(ReturnLeg, Money)> {
    let id = req
        .return_flight_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (id, date) = match (id, req.return_date) {
        (None, None) => return None,
        (Some(_), None) => {
            err(
                "return_date",
                "is required with return_flight_id (the return leg's departure date)".into(),
            );
            return None;
        }
        (None, Some(_)) => {
            err(
                "return_flight_id",
                "is required with return_date (the return leg's flight)".into(),
            );
            return None;
        }
        (Some(id), Some(date)) => (FlightId(id.to_string()), date),
    };
    let Some(back) = catalog.flight(&id) else {
        err(
            "return_flight_id",
            format!("no flight {:?} in the schedule", id.0),
        );
        return None;
    };
    let mut ok = true;
    if date.weekday() != back.weekday {
        ok = false;
        err(
            "return_date",
            format!(
                "flight {} operates on {:?}s, {} is a {:?}",
                back.flight_no,
                back.weekday,
                date,
                date.weekday()
            ),
        );
    }
    if (date - today).num_days() > MAX_DAYS_AHEAD {
        ok = false;
        err(
            "return_date",
            format!("bookings open {MAX_DAYS_AHEAD} days ahead"),
        );
    }
    let fare = back.fare(req.cabin).cloned();
    if fare.is_none() {
        ok = false;
        err(
            "return_flight_id",
            format!("{} is not sold on flight {}", req.cabin, back.flight_no),
        );
    }
    if let Some(out) = outbound {
        if back.origin != out.destination || back.destination != out.origin {
            ok = false;
            err(
                "return_flight_id",
                format!(
                    "the return leg must fly {} \u{2192} {}; flight {} flies {} \u{2192} {}",
                    out.destination, out.origin, back.flight_no, back.origin, back.destination
                ),
            );
        } else {
            // Both times are local to the outbound's destination.
            let lands = out.arrival_date(req.date).and_time(out.arrival);
            let leaves = date.and_time(back.departure);
            if leaves <= lands {
                ok = false;
                err(
                    "return_date",
                    format!(
                        "the return flight leaves {} at {}, before the outbound lands there at {}",
                        back.origin,
                        leaves.format("%Y-%m-%d %H:%M"),
                        lands.format("%Y-%m-%d %H:%M")
                    ),
                );
            }
        }
    }
    let fare = fare?;
    ok.then_some((
        ReturnLeg {
            flight_id: id,
            date,
            price: None,
        },
        fare,
    ))
}

/// The return member of the seat group: holds the return flight's seats
/// under its own key, or, for a one-way booking, does nothing and says so.
pub(super) struct ReserveReturnSeat(pub(super) BookingServices);

#[async_trait::async_trait]
impl Step<BookingData> for ReserveReturnSeat {
    async fn run(&self, ctx: &StepContext, d: &mut BookingData) -> Result<(), StepError> {
        let Some(leg) = d.return_leg.clone() else {
            d.return_seat = Some(ReturnSeat::OneWay);
            return Ok(());
        };
        // The outbound was refused already: no point holding this leg.
        if ctx.is_cancelled() {
            return Err(StepError::rejected(OUTBOUND_FAILED));
        }
        let held = hold_seats(
            &self.0,
            ctx,
            d,
            BookingStep::ReserveReturnSeat,
            leg.flight_id,
            leg.date,
            RETURN_LEG_PREFIX,
        )
        .await?;
        d.return_seat = Some(ReturnSeat::Held { seats: held.seats });
        Ok(())
    }

    async fn compensate(&self, ctx: &StepContext, d: &BookingData) -> Result<(), StepError> {
        if d.return_leg.is_some() {
            self.0
                .inventory
                .release(&ctx.idempotency_key)
                .await
                .map_err(StepError::retryable)?;
        }
        forget_card(&self.0, d).await;
        Ok(())
    }
}

/// Confirms (sells) the return leg's seats at the pivot; nothing for a
/// one-way booking.
pub(super) async fn confirm_return(
    s: &BookingServices,
    ctx: &StepContext,
    d: &BookingData,
) -> Result<(), StepError> {
    if d.return_leg.is_some() {
        s.inventory
            .confirm(&return_key(&ctx.saga_id))
            .await
            .map_err(|e| classify(e.is_retryable(), format!("{RETURN_LEG_PREFIX}{e}")))?;
    }
    Ok(())
}

/// The itinerary's line for the return leg ("Return TT101 BBB -> AAA on
/// DATE"), empty for a one-way booking.
pub(super) fn itinerary_line(d: &BookingData, catalog: &Catalog) -> String {
    let Some(leg) = &d.return_leg else {
        return String::new();
    };
    let route = catalog
        .flight(&leg.flight_id)
        .map(|f| format!("{} {} -> {}", f.flight_no, f.origin, f.destination))
        .unwrap_or_else(|| leg.flight_id.0.clone());
    format!("Return {route} on {}\n", leg.date)
}

/// Adds the seat group (version 4 on) or the single seat step to `b`.
pub(super) fn seat_steps(
    b: saga_engine::SagaDefinitionBuilder<BookingData>,
    services: &BookingServices,
    version: u32,
) -> saga_engine::SagaDefinitionBuilder<BookingData> {
    let outbound = ReserveSeat(services.clone());
    if version < 4 {
        return b.step(BookingStep::ReserveSeat.as_str(), outbound);
    }
    let back = ReserveReturnSeat(services.clone());
    b.group(SEAT_GROUP, |g| {
        g.step(BookingStep::ReserveSeat.as_str(), outbound)
            .step(RESERVE_RETURN_SEAT_STEP, back)
    })
}

/// The consistency check's part for the return leg of a booking saga that
/// ended `status` (`cancelled`: confirmed, then cancelled by a
/// cancellation saga): seats confirmed for a completed round trip,
/// released when cancelled, nothing held when compensated.
pub(super) async fn check_return_leg(
    services: &BookingServices,
    rec: &saga_engine::SagaRecord,
    d: &BookingData,
    cancelled: bool,
) -> Vec<String> {
    use saga_engine::SagaStatus;
    let hold = services.inventory.hold_status(&return_key(&rec.id)).await;
    let seats = d.passengers.len() as u32;
    let released = matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Released);
    let bad = match (rec.status(), &d.return_leg) {
        (SagaStatus::Completed, Some(_)) if cancelled => {
            (!released).then_some("cancelled but its return hold is")
        }
        (SagaStatus::Completed, Some(leg)) => (!matches!(&hold, Ok(HoldLookup::Hold(h))
            if h.state == HoldState::Confirmed && h.seats == seats
                && h.flight == leg.flight_id && h.date == leg.date))
        .then_some("completed but its return hold is"),
        (SagaStatus::Completed, None) => matches!(&hold, Ok(HoldLookup::Hold(_)))
            .then_some("is one way but holds a return seat:"),
        (SagaStatus::Compensated, _) => matches!(&hold, Ok(HoldLookup::Hold(_)) if !released)
            .then_some("compensated but its return hold is"),
        _ => None,
    };
    bad.map(|what| format!("saga {} {what} {hold:?}", rec.id))
        .into_iter()
        .collect()
}
