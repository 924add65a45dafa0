//! Bookings that wait, in the torture mix: one booking in ten is held
//! without a card (`"hold": true`, waiting in `await_payment`), one in ten
//! pays with the card that needs the customer's confirmation (waiting in
//! `await_confirmation`). Half of each get their answer (the payment, the
//! confirmation) from the booking task as soon as the booking waits for
//! it; the other half never do, and their window (3 s here) runs out.
//! The waits live through the same SIGKILLs as everything else: a kill
//! may land while a booking waits, between the answer and its wait being
//! taken, or while the timer fires.
//!
//! Each answer the engine accepted is written to [`LOG`] (after the call
//! returned, so a line means the answer was acknowledged). The
//! invariants ([`check`], after every restart and at the end): a booking
//! whose answer was acknowledged never ends by its wait timing out (no
//! timeout after an accepted signal), and a booking never answered never
//! completes (nothing is captured without a payment or a confirmation).
//! At the end, both outcomes must have happened for both kinds of wait.

use super::child::Child;
use crate::acklog::AckLog;
use crate::verdict::Violations;
use booking_domain::booking_saga::{
    confirm_booking_payment, pay_held_booking, wait_failure_reason, BookingData, BookingRequest,
    BookingWaits, WaitError, BOOKING_SAGA,
};
use booking_domain::payments::CardDetails;
use chrono::Datelike;
use saga_engine::{SagaId, SagaRecord, SagaStatus};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The log of acknowledged answers, in the data directory.
pub(super) const LOG: &str = "waits.log";
/// How long a held booking waits for its payment, and an SCA booking for
/// its confirmation.
const WINDOW: Duration = Duration::from_secs(3);
/// The card whose issuer asks the customer to confirm.
const SCA_CARD: &str = "4000000000003220";

/// The windows the torture's booking saga waits with.
pub(super) fn waits() -> BookingWaits {
    BookingWaits {
        confirmation_timeout: WINDOW,
        hold_window: WINDOW,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Hold,
    Sca,
}

fn kind(n: usize) -> Option<Kind> {
    match n % 10 {
        5 => Some(Kind::Hold),
        7 => Some(Kind::Sca),
        _ => None,
    }
}

/// Whether booking `n`'s customer answers (pays, confirms).
fn answers(n: usize) -> bool {
    (n / 10).is_multiple_of(2)
}

fn n_of(s: &SagaRecord) -> Option<usize> {
    s.idempotency_key
        .as_deref()?
        .strip_prefix("b-")?
        .parse()
        .ok()
}

fn paying_card() -> CardDetails {
    CardDetails {
        number: "4242424242424242".into(),
        exp_month: 12,
        exp_year: chrono::Utc::now().year() as u32 + 2,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

/// Makes booking `n` a held or an SCA booking (one-way bookings only, and
/// without planted faults: its outcome is the wait's).
pub(super) fn adjust(n: usize, req: &mut BookingRequest) {
    if req.return_flight_id.is_some() {
        return;
    }
    match kind(n) {
        Some(Kind::Hold) => {
            req.hold = true;
            req.card = CardDetails::default();
            req.faults.clear();
        }
        Some(Kind::Sca) => {
            req.card.number = SCA_CARD.into();
            req.faults.clear();
        }
        None => {}
    }
}

/// After booking `n` was acknowledged: its customer's answer, once the
/// booking waits for it (logged in `log` when the engine accepted it).
pub(super) async fn answer(c: &Child, n: usize, id: &SagaId, log: Option<&Arc<AckLog>>) {
    let Some(kind) = kind(n) else { return };
    if !answers(n) {
        return;
    }
    let deadline = Instant::now() + WINDOW;
    loop {
        let outcome = match kind {
            Kind::Hold => pay_held_booking(&c.engine, &c.services, id, &paying_card()).await,
            Kind::Sca => confirm_booking_payment(&c.engine, id).await,
        };
        match outcome {
            Ok(_) => {
                if let Some(log) = log {
                    let _ = log.ack(&format!("b-{n}"), id.as_str());
                }
                return;
            }
            // Not there yet (the SCA wait comes after the authorization),
            // or a round trip / a booking the mix did not adjust.
            Err(WaitError::NotWaiting { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return,
        }
    }
}

/// The invariants over every saga in the store, `answered` being the log.
/// With `at_end`, also that each kind of wait was seen both answered and
/// timed out.
pub(super) fn check(
    sagas: &[SagaRecord],
    answered: &[(String, String)],
    at_end: bool,
    v: &mut Violations,
) {
    let answered: HashSet<&str> = answered.iter().map(|(_, id)| id.as_str()).collect();
    let mut seen = HashSet::new();
    for s in sagas
        .iter()
        .filter(|s| s.definition == BOOKING_SAGA && s.status().is_terminal())
    {
        let Some(n) = n_of(s) else { continue };
        let Some(kind) = kind(n) else { continue };
        let Ok(d) = s.data_as::<BookingData>() else {
            continue;
        };
        if d.return_leg.is_some() || (kind == Kind::Hold && !d.hold) {
            continue;
        }
        let timed_out = s
            .state
            .failure
            .as_deref()
            .and_then(wait_failure_reason)
            .is_some();
        if answered.contains(s.id.as_str()) && timed_out {
            v.push(
                "answered wait timed out",
                format!("{kind:?} booking {} (b-{n}): its answer was acknowledged, then it ended by its wait timing out", s.id),
            );
        }
        if !answers(n) && s.status() == SagaStatus::Completed {
            v.push(
                "unanswered wait completed",
                format!(
                    "{kind:?} booking {} (b-{n}) completed without a payment or confirmation",
                    s.id
                ),
            );
        }
        seen.insert((kind, s.status() == SagaStatus::Completed, timed_out));
    }
    if at_end {
        for kind in [Kind::Hold, Kind::Sca] {
            if !seen.contains(&(kind, true, false)) {
                v.push(
                    "mix incomplete",
                    format!("no {kind:?} booking completed after its answer"),
                );
            }
            if !seen.contains(&(kind, false, true)) {
                v.push(
                    "mix incomplete",
                    format!("no {kind:?} booking released by its window"),
                );
            }
        }
        eprintln!("torture waits: {seen:?} (kind, completed, timed out) seen");
    }
}
