//! The consistency check: every ended booking saga against what the
//! participants hold (seats, payments, miles, promo uses, cancellations).

use super::*;

/// Checks the participants against the sagas that ended: for each, seats,
/// payment and miles must match its outcome. Returns the violations found.
pub async fn check_consistency(
    engine: &Engine,
    services: &BookingServices,
) -> Result<Vec<String>, BookingError> {
    use crate::inventory::{HoldLookup, HoldState};
    use crate::loyalty::{EntryLookup, EntryState};
    use crate::payments::{PaymentLookup, PaymentStatus};
    use saga_engine::SagaStatus;
    let mut problems = Vec::new();
    for rec in engine.list(None, usize::MAX).await? {
        if rec.definition != BOOKING_SAGA {
            continue;
        }
        let Ok(d) = rec.data_as::<BookingData>() else {
            problems.push(format!("saga {}: data does not decode", rec.id));
            continue;
        };
        let key = |s: BookingStep| format!("{}:{}", rec.id, s.as_str());
        let hold = services
            .inventory
            .hold_status(&key(BookingStep::ReserveSeat))
            .await;
        let pay = services
            .payments
            .get(&key(BookingStep::AuthorizePayment))
            .await;
        let booking = services.bookings.by_saga(&rec.id).ok().flatten();
        let cancelled = matches!(&booking, Some(b) if b.status == BookingStatus::Cancelled);
        let miles = services.loyalty.entry(&key(BookingStep::AwardMiles)).await;
        let redeemed = services
            .loyalty
            .entry(&format!("{}:{REDEEM_MILES_STEP}", rec.id))
            .await;
        let redeemed_applied =
            matches!(&redeemed, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied);
        let wants_redemption = d.miles_payment.is_some();
        let promo_applied = services
            .promos
            .applied(&format!("{}:{REDEEM_MILES_STEP}:promo", rec.id))
            .unwrap_or(false);
        if rec.status() == SagaStatus::Completed && d.promo.is_some() != promo_applied {
            problems.push(format!(
                "saga {} completed but its promo use is {promo_applied}",
                rec.id
            ));
        }
        if rec.status() == SagaStatus::Compensated && promo_applied {
            problems.push(format!(
                "saga {} compensated but its promo code use was not released",
                rec.id
            ));
        }
        if rec.status() == SagaStatus::Completed
            && !cancelled
            && wants_redemption != redeemed_applied
        {
            problems.push(format!(
                "saga {} completed but redemption is {redeemed:?}",
                rec.id
            ));
        }
        if (rec.status() == SagaStatus::Compensated
            || (rec.status() == SagaStatus::Completed && cancelled))
            && redeemed_applied
        {
            problems.push(format!(
                "saga {} undone but its miles were not credited back",
                rec.id
            ));
        }
        problems.extend(round_trip::check_return_leg(services, &rec, &d, cancelled).await);
        let seats = d.passengers.len() as u32;
        match rec.status() {
            // Cancelled after confirmation by a cancellation saga: seats
            // back, the payment refunded (the refund's amount is checked by
            // `check_cancellations`), miles reversed.
            SagaStatus::Completed if cancelled => {
                if !matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Released) {
                    problems.push(format!("saga {} cancelled but hold is {hold:?}", rec.id));
                }
                if !matches!(&pay, Ok(PaymentLookup::Payment(p)) if p.status == PaymentStatus::Refunded)
                {
                    problems.push(format!("saga {} cancelled but payment is {pay:?}", rec.id));
                }
                if matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied) {
                    problems.push(format!("saga {} cancelled but miles are {miles:?}", rec.id));
                }
            }
            SagaStatus::Completed => {
                if !matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Confirmed && h.seats == seats)
                {
                    problems.push(format!("saga {} completed but hold is {hold:?}", rec.id));
                }
                if !matches!(&pay, Ok(PaymentLookup::Payment(p)) if p.status == PaymentStatus::Captured && p.amount == d.charge())
                {
                    problems.push(format!("saga {} completed but payment is {pay:?}", rec.id));
                }
                if d.loyalty_id.is_some()
                    && !matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied)
                {
                    problems.push(format!("saga {} completed but miles are {miles:?}", rec.id));
                }
                if !matches!(&booking, Some(b) if b.status == BookingStatus::Confirmed) {
                    problems.push(format!(
                        "saga {} completed but booking is {booking:?}",
                        rec.id
                    ));
                }
                let queued = services.outbox.get(&rec.id).ok().flatten();
                if rec.version >= 3
                    && !matches!(&queued, Some(m) if Some(&m.booking_ref) == d.booking_ref.as_ref())
                {
                    problems.push(format!(
                        "saga {} completed but its itinerary is {queued:?}",
                        rec.id
                    ));
                }
            }
            SagaStatus::Compensated => {
                if matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state != HoldState::Released) {
                    problems.push(format!("saga {} compensated but hold is {hold:?}", rec.id));
                }
                if matches!(&pay, Ok(PaymentLookup::Payment(p)) if matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured))
                {
                    problems.push(format!(
                        "saga {} compensated but payment is {pay:?}",
                        rec.id
                    ));
                }
                if matches!(&miles, Ok(EntryLookup::Entry(e)) if e.state == EntryState::Applied) {
                    problems.push(format!(
                        "saga {} compensated but miles are {miles:?}",
                        rec.id
                    ));
                }
                if matches!(&booking, Some(b) if b.status == BookingStatus::Confirmed) {
                    problems.push(format!(
                        "saga {} compensated but booking is confirmed",
                        rec.id
                    ));
                }
                if services.outbox.get(&rec.id).ok().flatten().is_some() {
                    problems.push(format!(
                        "saga {} compensated but an itinerary was queued",
                        rec.id
                    ));
                }
            }
            _ => {}
        }
    }
    problems.extend(crate::cancellation::check_cancellations(engine, services).await?);
    Ok(problems)
}
