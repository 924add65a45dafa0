//! The traveller's part of the torture mix: bookings that pay part of the
//! fare with miles, and cancellations (a saga of their own) of confirmed
//! bookings, both under the same SIGKILLs as the bookings.
//!
//! The member starts with miles of its own (an award under a fixed key,
//! made once), so that every redemption has miles to take and the request
//! of a key is the same in every child (its fingerprint must not change).
//! Every cancellation's start is acknowledged in the ack log under its own
//! key, so a cancellation the store lost after it refunded is a violation,
//! not an allowed trace.
//!
//! The invariants ([`totals`], once every saga ended): each completed
//! cancellation refunded exactly what its booking's card was charged (all
//! within 24 hours, so no fee) and the payment is refunded; seats sold are
//! the passengers of the bookings still confirmed; captured money is what
//! those were charged; the member's balance is the seed plus the miles
//! earned minus the miles paid by bookings still confirmed, its qualifying
//! miles the seed plus what those earned; and the run had cancellations
//! and redemptions to check.

use super::child::Child;
use crate::acklog::AckLog;
use crate::kill_loop;
use crate::verdict::Violations;
use booking_domain::booking_saga::{BookingData, BookingRequest, BookingServices, BookingStatus};
use booking_domain::cancellation::{
    start_cancellation, CancelError, CancelRefusal, CancellationData, CANCELLATION_SAGA,
};
use booking_domain::loyalty::{AccountId, EntryLookup};
use booking_domain::payments::{PaymentLookup, PaymentStatus};
use booking_domain::types::{Currency, Money};
use saga_engine::{SagaId, SagaRecord, SagaStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The key of the member's starting miles.
const SEED_KEY: &str = "seed-miles";

/// Gives the member its starting miles (once: the award is idempotent).
pub(super) async fn seed_member(
    services: &BookingServices,
    member: &AccountId,
) -> Result<(), String> {
    services
        .loyalty
        .award(SEED_KEY, member, &Money::new(500_000, Currency::usd()))
        .await
        .map(drop)
        .map_err(|e| format!("seed miles: {e}"))
}

/// Booking `n` pays 100 to 400 miles, one in six (those credit the
/// member and have no fault planted: `child::request`).
pub(super) fn adjust(n: usize, req: &mut BookingRequest) {
    if req.loyalty_id.is_some() && n % 6 == 4 {
        req.redeem_miles = 100 * (1 + (n / 6 % 4) as u64);
    }
}

/// Cancels booking `n` (two in five) once it is confirmed, acknowledging
/// the cancellation's start, and waits for it.
pub(super) async fn after_booking(
    c: &Child,
    n: usize,
    booking: &SagaId,
    acks: Option<&Arc<AckLog>>,
) {
    if !matches!(n % 5, 0 | 3) {
        return;
    }
    let record = match c.services.bookings.by_saga(booking) {
        Ok(Some(r)) => r,
        Ok(None) => return, // not confirmed: nothing to cancel
        Err(e) => return kill_loop::report_error("cancel", format!("b-{n}: {e}")),
    };
    match start_cancellation(&c.engine, &c.services, &record, chrono::Utc::now()).await {
        Ok(id) => {
            if let Some(log) = acks {
                let key = match c.engine.status(&id).await {
                    Ok(r) => r.idempotency_key.unwrap_or_default(),
                    Err(e) => return kill_loop::report_error("cancel", format!("b-{n}: {e}")),
                };
                if let Err(e) = log.ack(&key, id.as_str()) {
                    return kill_loop::report_error(
                        "cancel",
                        format!("{key}: writing the ack log: {e}"),
                    );
                }
            }
            if let Err(e) = c.engine.wait(&id).await {
                kill_loop::report_error("cancel", format!("b-{n} cancellation {id}: {e}"));
            }
        }
        // A repeat of a round whose cancellation already ended.
        Err(CancelError::Refused(CancelRefusal::AlreadyCancelled { .. })) => {}
        Err(e) => kill_loop::report_error("cancel", format!("b-{n}: {e}")),
    }
}

/// The booking sagas a cancellation saga was started for (any status):
/// their participants are the cancellation's to check, not the booking's.
pub(super) fn under_cancellation(sagas: &[SagaRecord]) -> BTreeSet<String> {
    sagas
        .iter()
        .filter(|r| r.definition == CANCELLATION_SAGA)
        .filter_map(|r| r.data_as::<CancellationData>().ok())
        .map(|d| d.booking_saga.to_string())
        .collect()
}

/// The totals of cancellations and miles; see the module documentation.
/// `sagas` are every saga of the store, all ended.
pub(super) async fn totals(c: &Child, sagas: &[SagaRecord], v: &mut Violations) {
    match booking_domain::cancellation::check_cancellations(&c.engine, &c.services).await {
        Ok(found) => found
            .into_iter()
            .for_each(|p| v.push("cancellation mismatch", p)),
        Err(e) => v.push("store read failed", format!("cancellation check: {e}")),
    }
    let bookings: BTreeMap<String, BookingData> = sagas
        .iter()
        .filter(|r| r.definition != CANCELLATION_SAGA && r.status() == SagaStatus::Completed)
        .filter_map(|r| Some((r.id.to_string(), r.data_as::<BookingData>().ok()?)))
        .collect();
    let mut cancelled = BTreeSet::new();
    let (mut refunded, mut charged_cancelled) = (0i64, 0i64);
    for rec in sagas.iter().filter(|r| r.definition == CANCELLATION_SAGA) {
        let Ok(d) = rec.data_as::<CancellationData>() else {
            v.push("saga data unreadable", rec.id.to_string());
            continue;
        };
        if rec.status() != SagaStatus::Completed {
            continue;
        }
        let Some(b) = bookings.get(d.booking_saga.as_str()) else {
            v.push(
                "cancellation mismatch",
                format!("cancellation {} of no completed booking", rec.id),
            );
            continue;
        };
        cancelled.insert(d.booking_saga.to_string());
        let refund = match c
            .services
            .payments
            .get(&format!("{}:refund_payment", rec.id))
            .await
        {
            Ok(PaymentLookup::Refund(r)) => r.amount.minor,
            other => {
                v.push(
                    "refunds",
                    format!("cancellation {} has no refund: {other:?}", rec.id),
                );
                0
            }
        };
        if refund != b.charge().minor || d.fee.minor != 0 {
            v.push(
                "refunds",
                format!(
                    "cancellation {} refunded {refund} (fee {}) of a charge of {}",
                    rec.id,
                    d.fee.minor,
                    b.charge().minor
                ),
            );
        }
        let key = format!("{}:authorize_payment", d.booking_saga);
        if !matches!(c.services.payments.get(&key).await, Ok(PaymentLookup::Payment(p)) if p.status == PaymentStatus::Refunded)
        {
            v.push(
                "refunds",
                format!(
                    "the payment of cancelled booking {} is not refunded",
                    d.booking_saga
                ),
            );
        }
        refunded += refund;
        charged_cancelled += b.charge().minor;
    }
    if refunded != charged_cancelled {
        v.push(
            "refunds",
            format!(
                "refunds total {refunded}, cancelled bookings were charged {charged_cancelled}"
            ),
        );
    }
    // What the bookings still confirmed hold.
    let (mut seats, mut captured, mut earned, mut redeemed) = (0u32, 0i64, 0u64, 0u64);
    for (id, d) in bookings.iter().filter(|(id, _)| !cancelled.contains(*id)) {
        seats += d.passengers.len() as u32 * super::round_trip_mix::legs(d);
        captured += d.charge().minor;
        earned += d.miles_awarded.unwrap_or(0);
        redeemed += d.miles_payment.as_ref().map_or(0, |m| m.miles);
        let _ = id;
    }
    let redemptions = bookings
        .values()
        .filter(|d| d.miles_payment.is_some())
        .count();
    let holds = c.services.inventory.all_holds().await.unwrap_or_default();
    let sold: u32 = holds
        .iter()
        .filter(|h| h.state == booking_domain::inventory::HoldState::Confirmed)
        .map(|h| h.seats)
        .sum();
    if sold != seats {
        v.push(
            "seats",
            format!("{sold} seats sold, bookings still confirmed have {seats} passengers"),
        );
    }
    let payments = c.services.payments.all_payments().await.unwrap_or_default();
    let taken: i64 = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Captured)
        .map(|p| p.amount.minor)
        .sum();
    if taken != captured {
        v.push(
            "totals",
            format!("captured {taken}, bookings still confirmed were charged {captured}"),
        );
    }
    let seed = match c.services.loyalty.entry(SEED_KEY).await {
        Ok(EntryLookup::Entry(e)) => e.miles,
        other => {
            v.push("miles", format!("no seed entry: {other:?}"));
            0
        }
    };
    match c.services.loyalty.account(&c.member).await {
        Ok(a) => {
            if a.balance != seed + earned - redeemed || a.qualifying_miles != seed + earned {
                v.push("miles", format!(
                    "member has {} miles ({} qualifying); seed {seed} + earned {earned} - paid {redeemed} = {} ({} qualifying)",
                    a.balance, a.qualifying_miles, seed + earned - redeemed, seed + earned));
            }
        }
        Err(e) => v.push("participant read failed", format!("member account: {e}")),
    }
    let confirmed = c
        .services
        .bookings
        .all()
        .unwrap_or_default()
        .iter()
        .filter(|b| b.status == BookingStatus::Confirmed)
        .count();
    if confirmed != bookings.len() - cancelled.len() {
        v.push(
            "totals",
            format!(
                "{confirmed} confirmed bookings for {} completed and {} cancelled",
                bookings.len(),
                cancelled.len()
            ),
        );
    }
    eprintln!(
        "torture: {} cancelled (refunded {refunded}), {redemptions} paid with miles ({redeemed} miles still paid), {seats} seats sold, {captured} captured",
        cancelled.len()
    );
    if cancelled.is_empty() || redemptions == 0 {
        v.push(
            "totals",
            "expected cancellations and bookings paid with miles",
        );
    }
}
