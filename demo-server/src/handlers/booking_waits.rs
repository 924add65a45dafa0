//! The booking's durable waits over HTTP: the customer's confirmation of a
//! payment with their bank (`POST /api/bookings/{id}/confirm-payment`) and
//! the payment of a held booking (`POST /api/bookings/{id}/pay` with the
//! card). Both deliver a signal to the waiting saga
//! ([`booking_domain::booking_saga::confirm_booking_payment`],
//! [`booking_domain::booking_saga::pay_held_booking`]); a repeat is
//! answered as the first was (`"outcome": "duplicate"`). Like the status
//! page, the unguessable booking id is the capability.
//!
//! Errors are JSON: `404` no such booking, `409` (`conflict`) when the
//! booking is not waiting for this, `422` (`expired`, or `validation` with
//! `fields` for a bad card) once the wait's window has passed.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::{wipe_card, WaitError};
use booking_domain::payments::CardDetails;
use hyper::{Response, StatusCode};
use saga_engine::{SagaId, SignalOutcome};
use serde_json::{json, Value};

fn booking_id(raw: &str) -> Result<SagaId, ApiError> {
    SagaId::parse(raw).ok_or_else(|| ApiError::NotFound(format!("no booking {raw:?}")))
}

fn outcome_name(o: SignalOutcome) -> &'static str {
    match o {
        SignalOutcome::Delivered => "delivered",
        SignalOutcome::Kept => "kept",
        SignalOutcome::Duplicate => "duplicate",
    }
}

impl From<WaitError> for ApiError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::NotFound(id) => ApiError::NotFound(format!("no booking {id}")),
            e @ WaitError::NotWaiting { .. } => ApiError::Conflict(e.to_string()),
            WaitError::Expired { reason, .. } => ApiError::Validation {
                message: reason.to_string(),
                fields: vec![booking_domain::booking_saga::FieldError {
                    field: "booking_id".into(),
                    message: reason.to_string(),
                }],
            },
            WaitError::Invalid(v) => ApiError::Validation {
                message: "invalid card".into(),
                fields: v.0,
            },
            WaitError::Unavailable(m) => ApiError::unreachable("payments", &m),
            WaitError::Engine(e) => e.into(),
        }
    }
}

fn answer(id: &SagaId, outcome: SignalOutcome) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({
            "booking_id": id.as_str(),
            "outcome": outcome_name(outcome),
            "status_url": format!("/api/bookings/{id}"),
            "events_url": format!("/api/sagas/{id}/events"),
        }),
    )
}

/// `POST /api/bookings/{id}/confirm-payment`: the customer confirmed the
/// payment with their bank. `200` with the signal's outcome.
pub async fn confirm_payment(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let id = booking_id(req.param(0))?;
    // Any body is read (and ignored) so that the connection stays usable.
    let _ = req.bytes(state).await?;
    let outcome = booking_domain::booking_saga::confirm_booking_payment(&state.engine, &id).await?;
    tracing::info!(saga_id = %id, outcome = outcome_name(outcome), "payment confirmation");
    Ok(answer(&id, outcome))
}

/// `POST /api/bookings/{id}/pay` with `{"card": {...}}`: pays a held
/// booking. The card is tokenized at the payments participant; only the
/// token reaches the saga. `200` with the signal's outcome.
pub async fn pay(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let id = booking_id(req.param(0))?;
    let value = req.json_value(state).await?;
    // No such booking is a 404 whatever the body.
    match state.engine.status(&id).await {
        Ok(rec) if rec.definition == booking_domain::booking_saga::BOOKING_SAGA => {}
        Ok(_) | Err(saga_engine::Error::NotFound(_)) => {
            return Err(ApiError::NotFound(format!("no booking {id}")))
        }
        Err(e) => return Err(e.into()),
    }
    let Value::Object(mut obj) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with the card".into(),
        ));
    };
    let mut card: CardDetails = match obj.remove("card") {
        None | Some(Value::Null) => return Err(ApiError::field("card", "is required")),
        // serde's message quotes the value: never a card's number or CVC.
        Some(v) => serde_json::from_value(v).map_err(|_| {
            ApiError::field(
                "card",
                "must be an object with number and cvc as strings, exp_month and exp_year as numbers, and holder_name",
            )
        })?,
    };
    let outcome =
        booking_domain::booking_saga::pay_held_booking(&state.engine, &state.services, &id, &card)
            .await;
    wipe_card(&mut card);
    let outcome = outcome?;
    tracing::info!(saga_id = %id, outcome = outcome_name(outcome), "held booking paid");
    Ok(answer(&id, outcome))
}
