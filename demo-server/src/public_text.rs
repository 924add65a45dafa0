//! What the public is told about a failure: step errors and failure
//! reasons as a customer may read them.
//!
//! A participant's error text can carry an internal URL, a file path or a
//! storage error ("POST http://127.0.0.1:7003/payments/authorize failed:
//! connection refused"). The full text stays in the store, the logs and the
//! admin views (`/api/admin/sagas`, the all-sagas stream `/api/events`);
//! the booking status and the booking's own event stream show instead a
//! generic reason per step ("the payment service could not be reached;
//! nothing was charged"). Texts the domain itself writes for customers (a
//! declined card, too few seats, the demo's injected faults, an operator's
//! cancellation) are kept as they are: they are recognised by their exact
//! shape, so anything else, whatever it says, gets the generic reason.

use booking_domain::faults::BookingStep;
use booking_domain::payments::DeclineReason;
use saga_engine::{EventKind, SagaEvent};

/// The generic reason shown for an error of `step`.
pub fn generic_step_error(step: &str) -> String {
    match step.parse::<BookingStep>().ok() {
        Some(BookingStep::ReserveSeat | BookingStep::ReserveReturnSeat) => {
            "the seat inventory service could not be reached; nothing was charged".into()
        }
        Some(BookingStep::AuthorizePayment) => {
            "the payment service could not be reached; nothing was charged".into()
        }
        Some(BookingStep::AwardMiles) => "the loyalty service could not be reached".into(),
        Some(BookingStep::ConfirmBooking) => {
            "the booking could not be confirmed: a service could not be reached".into()
        }
        None => "a service could not be reached".into(),
    }
}

/// The generic reason shown for a failed compensation of `step`.
fn generic_compensation_error(step: &str) -> String {
    let what = match step.parse::<BookingStep>().ok() {
        Some(BookingStep::ReserveSeat | BookingStep::ReserveReturnSeat) => "releasing the seats",
        Some(BookingStep::AuthorizePayment) => "releasing the payment",
        Some(BookingStep::AwardMiles) => "taking back the miles",
        Some(BookingStep::ConfirmBooking) => "withdrawing the booking",
        None => "undoing the step",
    };
    format!("{what} did not go through yet: a service could not be reached; it is retried")
}

/// True for the texts the domain writes for customers.
fn is_customer_text(error: &str) -> bool {
    if error == booking_domain::booking_saga::CARD_NOT_HELD
        || error == booking_domain::booking_saga::OUTBOUND_FAILED
    {
        return true;
    }
    // A round trip's return leg says which leg it was about.
    if let Some(rest) = error.strip_prefix(booking_domain::booking_saga::RETURN_LEG_PREFIX) {
        return is_customer_text(rest);
    }
    if let Some(reason) = error.strip_prefix("payment declined: ") {
        return reason == "declined"
            || [
                DeclineReason::InsufficientFunds,
                DeclineReason::CardDeclined,
                DeclineReason::ExpiredCard,
            ]
            .iter()
            .any(|d| d.message() == reason);
    }
    if let Some(rest) = error.strip_prefix("not enough seats: ") {
        // "{n} requested, {m} available"
        let mut words = rest.split(' ');
        return matches!(
            (words.next(), words.next(), words.next(), words.next(), words.next()),
            (Some(n), Some("requested,"), Some(m), Some("available"), None)
                if is_number(n) && is_number(m)
        );
    }
    if let Some(rest) = error.strip_prefix("injected ") {
        // The demo's own fault injection, e.g. "injected rejection at
        // award_miles": words, digits, step names.
        return rest.len() <= 100
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || " _()".contains(c));
    }
    false
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The public text of an error of `step`.
pub fn step_error(step: &str, error: &str) -> String {
    if is_customer_text(error) {
        error.to_string()
    } else {
        generic_step_error(step)
    }
}

/// The public text of a saga's failure reason, as the engine writes it
/// ("step S rejected: E", "step S gave no clear answer after N attempts:
/// E", "cancelled: R").
pub fn failure_reason(reason: &str) -> String {
    if let Some(text) = booking_domain::booking_saga::wait_failure_reason(reason) {
        // A hold or a confirmation that ran out.
        return text.to_string();
    }
    if reason.starts_with("cancelled: ") {
        // An operator's or the customer's own words.
        return reason.to_string();
    }
    if let Some(rest) = reason.strip_prefix("step ") {
        if let Some((step, error)) = rest.split_once(" rejected: ") {
            if is_step_name(step) {
                return format!("step {step} rejected: {}", step_error(step, error));
            }
        }
        if let Some((step, tail)) = rest.split_once(" gave no clear answer after ") {
            if let Some((attempts, error)) = tail.split_once(" attempts: ") {
                if is_step_name(step) && is_number(attempts) {
                    return format!(
                        "step {step} gave no clear answer after {attempts} attempts: {}",
                        step_error(step, error)
                    );
                }
            }
        }
    }
    "the booking could not be completed; nothing was charged".into()
}

fn is_step_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The event as the public stream shows it: error texts and reasons
/// replaced by their public text, everything else unchanged.
pub fn event(e: &SagaEvent) -> SagaEvent {
    let mut out = e.clone();
    match &mut out.kind {
        EventKind::StepFailed { step, error, .. } => *error = step_error(step, error),
        EventKind::CompensationFailed { step, error, .. } => {
            *error = if is_customer_text(error) {
                error.clone()
            } else {
                generic_compensation_error(step)
            }
        }
        EventKind::SagaFinished {
            reason: Some(reason),
            ..
        } => *reason = failure_reason(reason),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL_ERROR: &str = "payments unavailable: POST http://127.0.0.1:40123/payments/authorize failed: connection refused (os error 111)";

    #[test]
    fn internal_texts_become_the_step_reason() {
        let shown = step_error("authorize_payment", URL_ERROR);
        assert_eq!(
            shown,
            "the payment service could not be reached; nothing was charged"
        );
        let shown = failure_reason(&format!(
            "step authorize_payment gave no clear answer after 6 attempts: {URL_ERROR}"
        ));
        assert!(
            shown.starts_with(
                "step authorize_payment gave no clear answer after 6 attempts: the payment service"
            ),
            "{shown}"
        );
        let shown = failure_reason(
            "step reserve_seat rejected: inventory storage failed: IO error at /var/lib/demo/db: disk full",
        );
        assert!(!shown.contains('/') && !shown.contains("disk"), "{shown}");
        assert!(!failure_reason("something else: http://10.0.0.1/").contains("http"));
    }

    #[test]
    fn customer_texts_are_kept() {
        for t in [
            "payment declined: insufficient funds",
            "not enough seats: 2 requested, 1 available",
            "injected rejection at award_miles",
            "injected transient failure 1 of 2 at reserve_seat",
            "injected lost reply at authorize_payment (the effect was applied)",
        ] {
            assert_eq!(step_error("authorize_payment", t), t);
        }
        assert_eq!(
            failure_reason("cancelled: customer called"),
            "cancelled: customer called"
        );
        assert_ne!(
            step_error("reserve_seat", "injected http://127.0.0.1:1/"),
            "injected http://127.0.0.1:1/"
        );
        assert_ne!(
            step_error("reserve_seat", "not enough seats: 2 requested, at /tmp/x"),
            "not enough seats: 2 requested, at /tmp/x"
        );
        // A round trip's return leg: its customer texts kept, others not.
        let sold_out = "return leg: not enough seats: 2 requested, 1 available";
        assert_eq!(step_error("reserve_return_seat", sold_out), sold_out);
        let outbound = booking_domain::booking_saga::OUTBOUND_FAILED;
        assert_eq!(step_error("reserve_return_seat", outbound), outbound);
        assert_eq!(
            step_error("reserve_return_seat", "return leg: IO error at /var/db"),
            generic_step_error("reserve_return_seat")
        );
    }
}
