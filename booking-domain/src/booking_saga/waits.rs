//! The booking's durable waits (saga version 4): `await_payment` after
//! `reserve_seat` (hold now, pay later) and `await_confirmation` after
//! `authorize_payment` (strong customer authentication). Each is an engine
//! signal wait ([`saga_engine::SagaDefinitionBuilder::wait_for`]): the
//! saga holds no worker while it waits, the wait survives restarts, and
//! when its window passes the step is rejected and the saga compensates
//! (seats released; an authorization voided), with the engine's reason
//! ("step await_payment timed out after … waiting for signal \"payment\"")
//! which [`wait_failure_reason`] puts in a customer's words.
//!
//! Every version-4 booking passes both waits; a booking that needs neither
//! is not made to wait by a signal delivered *before* the wait begins
//! (the engine keeps a signal that arrives early for its wait, and a repeat
//! with the same id is a duplicate): [`start_booking`](super::start_booking)
//! delivers `payment` under the id `auto:payment` ([`AUTO_SIGNAL_ID`]) for
//! a booking paid by card at once, then `payment_confirmation` under
//! `auto:payment_confirmation` when the
//! card's issuer needs no confirmation for it ([`check_card`]'s
//! `needs_confirmation`, known from the card before authorization, as a
//! processor knows a card's SCA enrolment). A held booking gets the same
//! pair from [`pay_held_booking`]. The booking is acknowledged only once
//! those signals are durable; a crash between the start and them leaves
//! an unacknowledged booking waiting, which a retry with the same key
//! signals again (duplicates), or whose window releases its seats.
//!
//! Why not let `authorize_payment` deliver the confirmation itself once it
//! sees the authorization's status? The step would need a handle on the
//! engine that runs it (a reference cycle through the definitions), and a
//! second writer in the middle of a step. Deciding before the saga reaches
//! the wait keeps the signals outside the saga, where the engine's promises
//! about them (kept, idempotent, refused after the timeout) already hold.
//! The participant stays the judge: an automatic confirmation does not
//! confirm anything at the payments participant; only the customer's
//! ([`confirm_booking_payment`]) makes the pivot call
//! `confirm_authorization`, and a capture of an unconfirmed authorization
//! is refused there (the saga then compensates).

use super::{BookingData, BookingServices, FieldError, ValidationErrors, BOOKING_SAGA};
use crate::payments::{check_card, wipe_card, CardDetails, PaymentError, TokenizeRequest};
use saga_engine::{
    Engine, SagaDefinitionBuilder, SagaId, SagaRecord, SagaStatus, SignalOutcome, StepState,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The wait for a held booking's payment.
pub const AWAIT_PAYMENT_STEP: &str = "await_payment";
/// The wait for the customer's confirmation of the authorization.
pub const AWAIT_CONFIRMATION_STEP: &str = "await_confirmation";
/// The signal `await_payment` waits for ([`PaymentSignal`]).
pub const PAYMENT_SIGNAL: &str = "payment";
/// The signal `await_confirmation` waits for ([`ConfirmationSignal`]).
pub const CONFIRMATION_SIGNAL: &str = "payment_confirmation";
/// The id prefix of the signals the booking delivers itself when nobody
/// has to act (paid at booking; a card needing no confirmation): signal
/// ids are unique per saga, so each is `auto:{signal name}`.
pub const AUTO_SIGNAL_ID: &str = "auto";
/// The id of the customer's confirmation (one per booking: a repeat is a
/// duplicate).
pub const CUSTOMER_SIGNAL_ID: &str = "customer";
/// The first version of the booking saga with the waits.
pub const WAITS_VERSION: u32 = 4;
/// What a customer is told when a hold ran out.
pub const HOLD_EXPIRED: &str =
    "hold expired: the booking was not paid within the hold window; the seats were released";
/// What a customer is told when the bank confirmation did not come.
pub const CONFIRMATION_TIMED_OUT: &str =
    "payment not confirmed in time: the seats were released and the card authorization voided";

/// How long the booking waits (the demo server's
/// `--payment-confirmation-timeout-secs` and `--hold-window-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingWaits {
    /// From the authorization that needs the customer's confirmation to
    /// its timeout (the seat-hold window of the confirmation).
    pub confirmation_timeout: Duration,
    /// How long a held booking keeps its seats unpaid.
    pub hold_window: Duration,
}

impl Default for BookingWaits {
    /// 600 s to confirm, 24 h to pay a hold.
    fn default() -> Self {
        BookingWaits {
            confirmation_timeout: Duration::from_secs(600),
            hold_window: Duration::from_secs(86_400),
        }
    }
}

/// The payload of [`PAYMENT_SIGNAL`]: the token of the card that pays (at
/// the payments participant; never the card itself), or empty for the
/// card given at booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSignal {
    /// Card token; empty: the booking's own.
    pub card_token: String,
    /// Card brand, for display.
    pub card_brand: String,
    /// Last four digits, for display.
    pub card_last4: String,
    /// The card's issuer asks the customer to confirm.
    #[serde(default)]
    pub needs_confirmation: bool,
}

/// The payload of [`CONFIRMATION_SIGNAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationSignal {
    /// True when the customer confirmed with their bank; false for the
    /// automatic signal of a card that needs no confirmation.
    pub by_customer: bool,
}

/// Appends `await_payment` (after `reserve_seat`).
pub(super) fn payment_wait(
    b: SagaDefinitionBuilder<BookingData>,
    waits: &BookingWaits,
) -> SagaDefinitionBuilder<BookingData> {
    b.wait_for(
        AWAIT_PAYMENT_STEP,
        PAYMENT_SIGNAL,
        waits.hold_window,
        |d: &mut BookingData, p: PaymentSignal| {
            if !p.card_token.is_empty() {
                d.card_token = p.card_token;
                d.card_brand = p.card_brand;
                d.card_last4 = p.card_last4;
                d.card_needs_confirmation = p.needs_confirmation;
            }
        },
    )
}

/// Appends `await_confirmation` (after `authorize_payment`).
pub(super) fn confirmation_wait(
    b: SagaDefinitionBuilder<BookingData>,
    waits: &BookingWaits,
) -> SagaDefinitionBuilder<BookingData> {
    b.wait_for(
        AWAIT_CONFIRMATION_STEP,
        CONFIRMATION_SIGNAL,
        waits.confirmation_timeout,
        |d: &mut BookingData, c: ConfirmationSignal| d.customer_confirmed = c.by_customer,
    )
}

/// Delivers `signal` under `auto:{signal}` ([`AUTO_SIGNAL_ID`]). A refusal (the saga ended
/// already, e.g. no seats) is no error: nobody waits any more.
async fn auto_signal<P: Serialize>(
    engine: &Engine,
    id: &SagaId,
    signal: &str,
    payload: &P,
) -> Result<(), saga_engine::Error> {
    let signal_id = format!("{AUTO_SIGNAL_ID}:{signal}");
    match engine.signal(id, signal, &signal_id, payload).await {
        Ok(_) | Err(saga_engine::Error::SignalRefused { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The signals of a booking that needs no one to act on one or both waits
/// (see the module's text), durable before this returns. Nothing for a
/// saga of an earlier version.
pub(super) async fn deliver_auto_signals(
    engine: &Engine,
    id: &SagaId,
    hold: bool,
    card: &CardDetails,
) -> Result<(), saga_engine::Error> {
    let rec = engine.status(id).await?;
    if rec.version < WAITS_VERSION || hold {
        return Ok(());
    }
    let own_card = PaymentSignal {
        card_token: String::new(),
        card_brand: String::new(),
        card_last4: String::new(),
        needs_confirmation: false,
    };
    auto_signal(engine, id, PAYMENT_SIGNAL, &own_card).await?;
    if !needs_confirmation(card) {
        auto_confirm(engine, id).await?;
    }
    Ok(())
}

/// Re-sends the automatic signals of running bookings that wait for one
/// nobody else will send (a crash came between a start, or a payment, and
/// its automatic signals): `await_payment` of a booking paid at booking,
/// `await_confirmation` of a card that needs no confirmation. Call it once
/// the engine is open; returns how many signals were sent.
pub async fn resume_waits(engine: &Engine) -> Result<usize, saga_engine::Error> {
    let mut sent = 0;
    for rec in engine.list(Some(SagaStatus::Running), usize::MAX).await? {
        if rec.definition != BOOKING_SAGA || rec.version < WAITS_VERSION {
            continue;
        }
        let Ok(d) = rec.data_as::<BookingData>() else {
            continue;
        };
        let state = |name: &str| {
            rec.state
                .steps
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.state)
        };
        // Not there yet, or waiting, and no signal for it received.
        let open = |step: &str, signal: &str| {
            matches!(state(step), Some(StepState::Pending | StepState::Waiting))
                && !rec.state.signals.iter().any(|g| g.name == signal)
        };
        if open(AWAIT_PAYMENT_STEP, PAYMENT_SIGNAL) && !d.hold {
            let own_card = PaymentSignal {
                card_token: String::new(),
                card_brand: String::new(),
                card_last4: String::new(),
                needs_confirmation: false,
            };
            auto_signal(engine, &rec.id, PAYMENT_SIGNAL, &own_card).await?;
            sent += 1;
        }
        // A held booking's card is known once its payment was taken.
        let card_known = !d.hold || state(AWAIT_PAYMENT_STEP) == Some(StepState::Succeeded);
        if open(AWAIT_CONFIRMATION_STEP, CONFIRMATION_SIGNAL)
            && card_known
            && !d.card_needs_confirmation
        {
            auto_confirm(engine, &rec.id).await?;
            sent += 1;
        }
    }
    if sent > 0 {
        tracing::info!(sent, "automatic wait signals re-sent after a restart");
    }
    Ok(sent)
}

fn needs_confirmation(card: &CardDetails) -> bool {
    check_card(
        &super::prepare::bounded_card(card),
        chrono::Utc::now().date_naive(),
    )
    .is_ok_and(|c| c.needs_confirmation)
}

async fn auto_confirm(engine: &Engine, id: &SagaId) -> Result<(), saga_engine::Error> {
    auto_signal(
        engine,
        id,
        CONFIRMATION_SIGNAL,
        &ConfirmationSignal { by_customer: false },
    )
    .await
}

/// Where a booking's waits stand, as the public sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Held, not paid: the seats are kept until `expires_at_ms`.
    Held {
        /// When the hold runs out, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// The customer must confirm the payment with their bank before
    /// `expires_at_ms`.
    AwaitingConfirmation {
        /// When the wait runs out, ms since the Unix epoch.
        expires_at_ms: u64,
    },
}

/// The wait a running booking saga stands in, if any.
pub fn wait_status(rec: &SagaRecord) -> Option<WaitStatus> {
    if rec.definition != BOOKING_SAGA || rec.status() != SagaStatus::Running {
        return None;
    }
    let waiting = |name: &str| {
        rec.state
            .steps
            .iter()
            .find(|s| s.name == name && s.state == StepState::Waiting)
            .map(|s| s.wake_at_ms.unwrap_or(u64::MAX))
    };
    if let Some(at) = waiting(AWAIT_PAYMENT_STEP) {
        return Some(WaitStatus::Held { expires_at_ms: at });
    }
    waiting(AWAIT_CONFIRMATION_STEP)
        .map(|at| WaitStatus::AwaitingConfirmation { expires_at_ms: at })
}

/// The customer's words for a failure reason the engine wrote for a
/// timed-out wait of the booking; `None` for any other reason.
pub fn wait_failure_reason(reason: &str) -> Option<&'static str> {
    let timed_out = |step: &str| {
        reason
            .strip_prefix("step ")
            .and_then(|r| r.strip_prefix(step))
            .is_some_and(|r| r.starts_with(" timed out after "))
    };
    if timed_out(AWAIT_PAYMENT_STEP) {
        Some(HOLD_EXPIRED)
    } else if timed_out(AWAIT_CONFIRMATION_STEP) {
        Some(CONFIRMATION_TIMED_OUT)
    } else {
        None
    }
}

/// Why a signal to a booking's wait was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No booking with this id.
    #[error("no booking {0}")]
    NotFound(SagaId),
    /// The booking does not wait for this (paid at booking, not held; a
    /// card that needed no confirmation; already past it; ended).
    #[error("booking {id} is not waiting for {what}: {why}")]
    NotWaiting {
        /// The booking.
        id: SagaId,
        /// `payment` or `a payment confirmation`.
        what: &'static str,
        /// Where it stands instead.
        why: String,
    },
    /// The wait's window passed: the booking was released.
    #[error("booking {id}: {reason}")]
    Expired {
        /// The booking.
        id: SagaId,
        /// [`HOLD_EXPIRED`] or [`CONFIRMATION_TIMED_OUT`].
        reason: &'static str,
    },
    /// The card cannot pay (one entry per field, never quoting the card).
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// A participant could not be reached (retry later).
    #[error("could not take the payment now: {0}")]
    Unavailable(String),
    /// The engine refused (shutting down, storage failure).
    #[error(transparent)]
    Engine(saga_engine::Error),
}

async fn booking_record(engine: &Engine, id: &SagaId) -> Result<SagaRecord, WaitError> {
    match engine.status(id).await {
        Ok(rec) if rec.definition == BOOKING_SAGA => Ok(rec),
        Ok(_) | Err(saga_engine::Error::NotFound(_)) => Err(WaitError::NotFound(id.clone())),
        Err(e) => Err(WaitError::Engine(e)),
    }
}

/// Where the wait `step` of `rec` stands when a signal for it cannot be
/// taken: expired, or not waiting (with why).
fn not_taken(rec: &SagaRecord, step: &str, what: &'static str) -> WaitError {
    let s = rec.state.steps.iter().find(|s| s.name == step);
    let timed_out = s.is_some_and(|s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("timed out"))
    });
    if timed_out {
        return WaitError::Expired {
            id: rec.id.clone(),
            reason: if step == AWAIT_PAYMENT_STEP {
                HOLD_EXPIRED
            } else {
                CONFIRMATION_TIMED_OUT
            },
        };
    }
    let why = match (rec.status(), s) {
        (_, None) => "this booking has no such step (booked before it existed)".to_string(),
        (SagaStatus::Completed, _) => "the booking is confirmed".to_string(),
        (SagaStatus::Compensated, _) => "the booking was released".to_string(),
        (SagaStatus::Running, Some(s)) if s.state == StepState::Pending => {
            "the booking has not got there yet".to_string()
        }
        (SagaStatus::Running, Some(_)) => "it was already received".to_string(),
        (status, _) => format!("the booking is {status}"),
    };
    WaitError::NotWaiting {
        id: rec.id.clone(),
        what,
        why,
    }
}

/// Delivers the customer's confirmation of a booking's payment
/// (`POST /api/bookings/{id}/confirm-payment`). A repeat is
/// [`SignalOutcome::Duplicate`]; refused with [`WaitError::NotWaiting`]
/// when the booking is not waiting for it and [`WaitError::Expired`] once
/// its wait timed out.
pub async fn confirm_booking_payment(
    engine: &Engine,
    id: &SagaId,
) -> Result<SignalOutcome, WaitError> {
    let rec = booking_record(engine, id).await?;
    const WHAT: &str = "a payment confirmation";
    if rec.state.signals.iter().any(|g| g.id == CUSTOMER_SIGNAL_ID) {
        return Ok(SignalOutcome::Duplicate);
    }
    if !matches!(
        wait_status(&rec),
        Some(WaitStatus::AwaitingConfirmation { .. })
    ) {
        return Err(not_taken(&rec, AWAIT_CONFIRMATION_STEP, WHAT));
    }
    let signal = ConfirmationSignal { by_customer: true };
    match engine
        .signal(id, CONFIRMATION_SIGNAL, CUSTOMER_SIGNAL_ID, &signal)
        .await
    {
        Ok(o) => Ok(o),
        Err(saga_engine::Error::SignalRefused { .. }) => {
            let rec = booking_record(engine, id).await?;
            Err(not_taken(&rec, AWAIT_CONFIRMATION_STEP, WHAT))
        }
        Err(e) => Err(WaitError::Engine(e)),
    }
}

/// Pays a held booking (`POST /api/bookings/{id}/pay`): the card is
/// checked, tokenized at the payments participant exactly as at booking
/// (the signal carries only the token), and the payment signal delivered
/// under an id derived from the booking and the card, so that paying
/// twice with the same card is a [`SignalOutcome::Duplicate`]; then the
/// confirmation's automatic signal when the card needs none. Refused with
/// [`WaitError::Expired`] once the hold ran out and
/// [`WaitError::NotWaiting`] for a booking that is not held or already
/// paid (with another card).
pub async fn pay_held_booking(
    engine: &Engine,
    services: &BookingServices,
    id: &SagaId,
    card: &CardDetails,
) -> Result<SignalOutcome, WaitError> {
    const WHAT: &str = "payment";
    let rec = booking_record(engine, id).await?;
    let data: BookingData = rec
        .data_as()
        .map_err(|e| WaitError::Unavailable(format!("the booking does not decode: {e}")))?;
    if !data.hold {
        return Err(WaitError::NotWaiting {
            id: id.clone(),
            what: WHAT,
            why: "it was not held (it was paid at booking)".into(),
        });
    }
    let mut bounded = super::prepare::bounded_card(card);
    let checked = check_pay_card(&bounded);
    let checked = match checked {
        Ok(c) => c,
        Err(e) => {
            wipe_card(&mut bounded);
            return Err(e.into());
        }
    };
    let signal_id = pay_signal_id(id, &bounded);
    if rec.state.signals.iter().any(|g| g.id == signal_id) {
        wipe_card(&mut bounded);
        // Paid with this card already: the confirmation's automatic
        // signal may be what a crash left out.
        if !checked.needs_confirmation {
            auto_confirm(engine, id).await.map_err(WaitError::Engine)?;
        }
        return Ok(SignalOutcome::Duplicate);
    }
    if !matches!(wait_status(&rec), Some(WaitStatus::Held { .. })) {
        wipe_card(&mut bounded);
        return Err(not_taken(&rec, AWAIT_PAYMENT_STEP, WHAT));
    }
    let mut request = TokenizeRequest { card: bounded };
    let token = services
        .payments
        .tokenize(&format!("card:{signal_id}"), &request)
        .await;
    wipe_card(&mut request.card);
    let token = match token {
        Ok(t) => t.token,
        Err(PaymentError::InvalidCard { problem }) => {
            return Err(ValidationErrors(vec![FieldError {
                field: "card.number".into(),
                message: problem.to_string(),
            }])
            .into())
        }
        Err(e) => return Err(WaitError::Unavailable(e.to_string())),
    };
    let payload = PaymentSignal {
        card_token: token.clone(),
        card_brand: checked.brand.as_str().to_string(),
        card_last4: checked.last4.clone(),
        needs_confirmation: checked.needs_confirmation,
    };
    let outcome = match engine
        .signal(id, PAYMENT_SIGNAL, &signal_id, &payload)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            if let Err(e) = services.payments.forget_card(&token).await {
                tracing::warn!(error = %e, "could not forget a card; it is purged later");
            }
            return Err(match e {
                saga_engine::Error::SignalRefused { .. } => {
                    let rec = booking_record(engine, id).await?;
                    not_taken(&rec, AWAIT_PAYMENT_STEP, WHAT)
                }
                e => WaitError::Engine(e),
            });
        }
    };
    if !checked.needs_confirmation {
        auto_confirm(engine, id).await.map_err(WaitError::Engine)?;
    }
    Ok(outcome)
}

/// The card's problems as at booking, one per field.
fn check_pay_card(card: &CardDetails) -> Result<crate::payments::CheckedCard, ValidationErrors> {
    let mut errors: Vec<FieldError> = super::prepare::card_bounds_problems(card)
        .into_iter()
        .map(|(field, message)| FieldError {
            field: field.into(),
            message: message.into(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ValidationErrors(errors));
    }
    check_card(card, chrono::Utc::now().date_naive()).map_err(|problem| {
        errors.push(FieldError {
            field: super::prepare::card_problem_field(&problem).into(),
            message: problem.to_string(),
        });
        ValidationErrors(errors)
    })
}

/// The payment signal's id: the booking and the card's SHA-256 (number,
/// expiry, CVC, name), never the card itself.
fn pay_signal_id(id: &SagaId, card: &CardDetails) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(id.as_str().as_bytes());
    for part in [
        card.number.as_str(),
        &card.exp_month.to_string(),
        &card.exp_year.to_string(),
        card.cvc.as_str(),
        card.holder_name.as_str(),
    ] {
        h.update([0]);
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pay:{hex}")
}
