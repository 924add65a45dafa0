//! The cancellation saga: a confirmed booking is past its point of no
//! return, so undoing it is a saga of its own, not a compensation.
//!
//! `verify_booking -> refund_payment -> release_seats -> reverse_miles ->
//! mark_cancelled`. The refund is the step that can fail for good (the
//! processor refuses); before it nothing has changed, so a refusal ends the
//! cancellation `compensated` with the booking still confirmed. After it the
//! steps only move forward: each is idempotent and retried for long; if one
//! still gives up, the refund's compensation (which cannot take money back)
//! parks the saga `stuck` for an operator instead of leaving a refunded
//! booking looking confirmed.
//!
//! Idempotency: the refund runs under its own key (`"{saga}:refund_payment"`);
//! seats and miles are undone on the keys the booking made them under (a
//! participant undoes the effect *of a key*, and undoing twice is a no-op).
//! A cancellation is started under the engine key `cancel:{REF}:{n}`, so a
//! second request returns the first saga; `n` moves on only when an
//! earlier attempt ended compensated (the customer may try again).

use crate::booking_saga::{BookingRecord, BookingServices, BookingStatus};
use crate::faults::BookingStep;
use crate::payments::{PaymentLookup, RefundRequest};
use crate::pricing::cancellation_refund;
use crate::types::{BookingRef, Money};
use chrono::{DateTime, Utc};
use saga_engine::{
    Engine, RetryPolicy, SagaDefinition, SagaId, SagaStatus, Step, StepContext, StepError,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The saga's definition name.
pub const CANCELLATION_SAGA: &str = "cancellation";
/// The saga's definition version.
pub const CANCELLATION_SAGA_VERSION: u32 = 1;
/// The redemption step's name in the booking saga (miles paid with are
/// credited back on cancellation).
pub const REDEEM_STEP: &str = crate::booking_saga::REDEEM_MILES_STEP;

/// The steps, in order.
pub const CANCELLATION_STEPS: [&str; 5] = [
    "verify_booking",
    "refund_payment",
    "release_seats",
    "reverse_miles",
    "mark_cancelled",
];

/// Why a cancellation is refused before it starts. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CancelRefusal {
    /// The booking is cancelled already.
    #[error("booking {reference} is already cancelled")]
    AlreadyCancelled {
        /// The booking.
        reference: BookingRef,
    },
    /// The booking was never confirmed (still running, or failed).
    #[error("the booking is not confirmed, so there is nothing to cancel")]
    NotConfirmed,
    /// The flight has left.
    #[error("flight {flight_no} departed at {departure}; a flown booking cannot be cancelled")]
    Departed {
        /// The flight number.
        flight_no: String,
        /// When it departed (UTC, as scheduled).
        departure: DateTime<Utc>,
    },
}

/// Why a cancellation could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// A business refusal.
    #[error(transparent)]
    Refused(#[from] CancelRefusal),
    /// The booking store failed.
    #[error(transparent)]
    Store(#[from] crate::booking_saga::BookingStoreError),
    /// The engine refused (shutting down, storage failure).
    #[error(transparent)]
    Engine(#[from] saga_engine::Error),
}

/// The saga's data: which booking, what it gives back, and what each step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationData {
    /// Format version.
    pub v: u32,
    /// The booking's reference.
    pub reference: BookingRef,
    /// The saga that made the booking (its effects are under its keys).
    pub booking_saga: SagaId,
    /// When the customer asked; decides the fee.
    pub requested_at: DateTime<Utc>,
    /// What was charged.
    pub charged: Money,
    /// What is given back: `charged - fee`.
    pub refund: Money,
    /// The fare rule's fee (zero within 24 hours of booking).
    pub fee: Money,
    /// Output of release_seats: seats given back (both legs of a round trip).
    #[serde(default)]
    pub seats_released: Option<u32>,
    /// A round trip's return leg: its seats are released too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_leg: Option<crate::booking_saga::ReturnLeg>,
    /// Output of reverse_miles: award miles taken back.
    #[serde(default)]
    pub miles_reversed: Option<u64>,
    /// Output of reverse_miles: redeemed miles credited back.
    #[serde(default)]
    pub miles_recredited: Option<u64>,
}

/// When `record`'s flight leaves (its schedule's time, read as UTC), if the
/// catalog still has it.
pub fn departure_of(
    services: &BookingServices,
    record: &BookingRecord,
) -> Option<(String, DateTime<Utc>)> {
    let catalog = services.catalog.current();
    let f = catalog.flight(&record.flight_id)?;
    Some((
        f.flight_no.clone(),
        record.date.and_time(f.departure).and_utc(),
    ))
}

/// The refusal, if any, for cancelling `record` at `now`.
pub fn check_cancellable(
    services: &BookingServices,
    record: &BookingRecord,
    now: DateTime<Utc>,
) -> Result<(), CancelRefusal> {
    if record.status == BookingStatus::Cancelled {
        return Err(CancelRefusal::AlreadyCancelled {
            reference: record.reference.clone(),
        });
    }
    if let Some((flight_no, departure)) = departure_of(services, record) {
        if now >= departure {
            return Err(CancelRefusal::Departed {
                flight_no,
                departure,
            });
        }
    }
    Ok(())
}

/// The booking a booking saga made, or [`CancelRefusal::NotConfirmed`].
pub fn record_of_saga(
    services: &BookingServices,
    booking_saga: &SagaId,
) -> Result<BookingRecord, CancelError> {
    services
        .bookings
        .by_saga(booking_saga)?
        .ok_or(CancelError::Refused(CancelRefusal::NotConfirmed))
}

/// Starts (or finds) the cancellation of `record`, asked at `now`. A
/// cancellation already running or done for it is returned as is: asking
/// twice cancels once. Refused with a [`CancelRefusal`] when the booking is
/// cancelled or its flight has left.
pub async fn start_cancellation(
    engine: &Engine,
    services: &BookingServices,
    record: &BookingRecord,
    now: DateTime<Utc>,
) -> Result<SagaId, CancelError> {
    let mut attempt = 1u32;
    loop {
        let key = format!("cancel:{}:{attempt}", record.reference.0);
        match engine.find_by_key(&key).await? {
            Some(id) => {
                if engine.status(&id).await?.status() == SagaStatus::Compensated {
                    attempt += 1;
                    continue;
                }
                engine.durable().await?;
                return Ok(id);
            }
            None => {
                // Re-read: the record may have changed since the caller found it.
                let current = services
                    .bookings
                    .by_saga(&record.saga_id)?
                    .unwrap_or_else(|| record.clone());
                check_cancellable(services, &current, now)?;
                let (refund, fee) =
                    cancellation_refund(&current.total, current.cabin, current.created_at, now);
                let data = CancellationData {
                    v: 1,
                    reference: current.reference.clone(),
                    booking_saga: current.saga_id.clone(),
                    requested_at: now,
                    charged: current.total.clone(),
                    refund,
                    fee,
                    seats_released: None,
                    miles_reversed: None,
                    miles_recredited: None,
                    return_leg: current.return_leg.clone(),
                };
                return match engine.start(CANCELLATION_SAGA, &data, Some(&key)).await {
                    Ok(id) => {
                        tracing::info!(saga_id = %id, reference = %current.reference.0, "cancellation started");
                        Ok(id)
                    }
                    // Raced with another request for the same booking: theirs.
                    Err(saga_engine::Error::IdempotencyConflict { existing, .. }) => Ok(existing),
                    Err(e) => Err(e.into()),
                };
            }
        }
    }
}

fn booking_key(d: &CancellationData, step: &str) -> String {
    format!("{}:{step}", d.booking_saga)
}

fn classify(retryable: bool, message: impl std::fmt::Display) -> StepError {
    if retryable {
        StepError::retryable(message)
    } else {
        StepError::rejected(message)
    }
}

struct VerifyBooking(BookingServices);
struct RefundPayment(BookingServices);
struct ReleaseSeats(BookingServices);
struct ReverseMiles(BookingServices);
struct MarkCancelled(BookingServices);

#[async_trait::async_trait]
impl Step<CancellationData> for VerifyBooking {
    async fn run(&self, _: &StepContext, d: &mut CancellationData) -> Result<(), StepError> {
        let record = self
            .0
            .bookings
            .by_saga(&d.booking_saga)
            .map_err(StepError::retryable)?
            .ok_or_else(|| StepError::rejected(CancelRefusal::NotConfirmed))?;
        check_cancellable(&self.0, &record, d.requested_at).map_err(StepError::rejected)
    }
    async fn compensate(&self, _: &StepContext, _: &CancellationData) -> Result<(), StepError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<CancellationData> for RefundPayment {
    async fn run(&self, ctx: &StepContext, d: &mut CancellationData) -> Result<(), StepError> {
        let request = RefundRequest {
            payment_key: booking_key(d, BookingStep::AuthorizePayment.as_str()),
            amount: d.refund.clone(),
        };
        self.0
            .payments
            .refund(&ctx.idempotency_key, &request)
            .await
            .map_err(|e| classify(e.is_retryable(), format!("refund refused: {e}")))?;
        Ok(())
    }
    /// Before a refund: a tombstone, so a late one is refused. After one:
    /// money given back is not taken again, so this fails and the saga
    /// parks `stuck` for an operator.
    async fn compensate(&self, ctx: &StepContext, _: &CancellationData) -> Result<(), StepError> {
        let p = &self.0.payments;
        match p
            .get(&ctx.idempotency_key)
            .await
            .map_err(StepError::retryable)?
        {
            PaymentLookup::Refund(r) => Err(StepError::retryable(format!(
                "refund of {} was made and cannot be taken back; the booking needs an operator",
                r.amount
            ))),
            PaymentLookup::Unknown => {
                p.void_or_refund(&ctx.idempotency_key)
                    .await
                    .map_err(StepError::retryable)?;
                Ok(())
            }
            PaymentLookup::Tombstone | PaymentLookup::Payment(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Step<CancellationData> for ReleaseSeats {
    async fn run(&self, _: &StepContext, d: &mut CancellationData) -> Result<(), StepError> {
        let inventory = &self.0.inventory;
        let release = |key: String| async move {
            let outcome = inventory
                .release(&key)
                .await
                .map_err(|e| classify(e.is_retryable(), e))?;
            Ok::<_, StepError>(match outcome {
                crate::inventory::ReleaseOutcome::Released(h) => h.seats,
                _ => 0,
            })
        };
        let mut seats = release(booking_key(d, BookingStep::ReserveSeat.as_str())).await?;
        if d.return_leg.is_some() {
            seats += release(crate::booking_saga::return_key(&d.booking_saga)).await?;
        }
        d.seats_released = Some(seats);
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &CancellationData) -> Result<(), StepError> {
        // Seats given back may be sold already; the refund's compensation
        // (newer steps are undone first, so it comes after this) parks the saga.
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<CancellationData> for ReverseMiles {
    async fn run(&self, _: &StepContext, d: &mut CancellationData) -> Result<(), StepError> {
        use crate::loyalty::{EntryLookup, ReverseOutcome};
        let loyalty = &self.0.loyalty;
        let undo = |key: String| async move {
            // Only keys that hold an entry: no tombstones for bookings
            // that earned or spent nothing.
            match loyalty
                .entry(&key)
                .await
                .map_err(|e| classify(e.is_retryable(), e))?
            {
                EntryLookup::Entry(_) => match loyalty
                    .reverse(&key)
                    .await
                    .map_err(|e| classify(e.is_retryable(), e))?
                {
                    ReverseOutcome::Reversed(e) => {
                        Ok::<_, StepError>(Some(e.miles - e.clamped_miles))
                    }
                    ReverseOutcome::NothingToReverse => Ok(Some(0)),
                },
                _ => Ok(None),
            }
        };
        let reversed = undo(booking_key(d, BookingStep::AwardMiles.as_str())).await?;
        let recredited = undo(booking_key(d, REDEEM_STEP)).await?;
        d.miles_reversed = reversed;
        d.miles_recredited = recredited;
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &CancellationData) -> Result<(), StepError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step<CancellationData> for MarkCancelled {
    async fn run(&self, _: &StepContext, d: &mut CancellationData) -> Result<(), StepError> {
        self.0
            .bookings
            .cancel(&d.booking_saga)
            .await
            .map_err(StepError::retryable)?;
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &CancellationData) -> Result<(), StepError> {
        Ok(())
    }
}

/// The cancellation saga over `services`.
pub fn cancellation_definition(services: &BookingServices) -> SagaDefinition<CancellationData> {
    let forward = RetryPolicy::default()
        .max_attempts(6)
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .attempt_timeout(Some(Duration::from_secs(10)));
    // After the refund there is no way back: keep trying for long.
    let onward = RetryPolicy::default()
        .max_attempts(60)
        .backoff(Duration::from_millis(200), Duration::from_secs(30))
        .attempt_timeout(Some(Duration::from_secs(10)));
    let compensation = RetryPolicy::default()
        .max_attempts(20)
        .backoff(Duration::from_millis(200), Duration::from_secs(10))
        .attempt_timeout(Some(Duration::from_secs(10)));
    let park = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(200));
    let [verify, refund, release, reverse, mark] = CANCELLATION_STEPS;
    SagaDefinition::builder(CANCELLATION_SAGA, CANCELLATION_SAGA_VERSION)
        .default_retry(forward)
        .default_compensation_retry(compensation)
        .step(verify, VerifyBooking(services.clone()))
        .step(refund, RefundPayment(services.clone()))
        .compensation_retry(park)
        .step(release, ReleaseSeats(services.clone()))
        .retry(onward.clone())
        .step(reverse, ReverseMiles(services.clone()))
        .retry(onward.clone())
        .step(mark, MarkCancelled(services.clone()))
        .retry(onward)
        .build()
        .expect("the cancellation saga definition is valid")
}

/// Checks every ended cancellation against the participants: a completed
/// one has its refund recorded for exactly `refund`, the booking cancelled
/// and its seats released; a compensated one refunded nothing. Returns the
/// violations found.
pub async fn check_cancellations(
    engine: &Engine,
    services: &BookingServices,
) -> Result<Vec<String>, saga_engine::Error> {
    use crate::inventory::{HoldLookup, HoldState};
    let mut problems = Vec::new();
    for rec in engine.list(None, usize::MAX).await? {
        if rec.definition != CANCELLATION_SAGA {
            continue;
        }
        let Ok(d) = rec.data_as::<CancellationData>() else {
            problems.push(format!("cancellation {}: data does not decode", rec.id));
            continue;
        };
        let refund = services
            .payments
            .get(&format!("{}:{}", rec.id, CANCELLATION_STEPS[1]))
            .await;
        let booking = services.bookings.by_saga(&d.booking_saga).ok().flatten();
        match rec.status() {
            SagaStatus::Completed => {
                if !matches!(&refund, Ok(PaymentLookup::Refund(r)) if r.amount == d.refund) {
                    problems.push(format!(
                        "cancellation {} completed but refund is {refund:?}",
                        rec.id
                    ));
                }
                if !matches!(&booking, Some(b) if b.status == BookingStatus::Cancelled) {
                    problems.push(format!(
                        "cancellation {} completed but booking is {booking:?}",
                        rec.id
                    ));
                }
                let hold = services
                    .inventory
                    .hold_status(&booking_key(&d, BookingStep::ReserveSeat.as_str()))
                    .await;
                if !matches!(&hold, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Released) {
                    problems.push(format!(
                        "cancellation {} completed but hold is {hold:?}",
                        rec.id
                    ));
                }
                if d.return_leg.is_some() {
                    let back = services
                        .inventory
                        .hold_status(&crate::booking_saga::return_key(&d.booking_saga))
                        .await;
                    if !matches!(&back, Ok(HoldLookup::Hold(h)) if h.state == HoldState::Released) {
                        problems.push(format!(
                            "cancellation {} completed but the return hold is {back:?}",
                            rec.id
                        ));
                    }
                }
            }
            SagaStatus::Compensated => {
                if matches!(&refund, Ok(PaymentLookup::Refund(_))) {
                    problems.push(format!(
                        "cancellation {} compensated but a refund was made",
                        rec.id
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(problems)
}
