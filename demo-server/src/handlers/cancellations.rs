//! Cancellations: start one for a confirmed booking (`POST
//! /api/cancellations`, authorised like the manage-booking lookup, by the
//! reference and a passenger's last name), read its status by its id (an
//! unguessable capability, like a booking's id), and list them (admin).
//! Its progress streams live at `/api/sagas/{id}/events`, like a booking's.
//!
//! A refusal (already cancelled, departed) is `409` with a stable `reason`
//! beside the usual `error` and `code`.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::BookingRecord;
use booking_domain::cancellation::{
    start_cancellation, CancelError, CancelRefusal, CancellationData, CANCELLATION_SAGA,
};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use saga_engine::{SagaId, SagaRecord, SagaStatus};
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of `POST /api/cancellations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reference: String,
    last_name: String,
}

/// The links of cancellation `id`.
fn links(id: &SagaId) -> Value {
    json!({
        "cancellation_id": id.as_str(),
        "status_url": format!("/api/cancellations/{id}"),
        "events_url": format!("/api/sagas/{id}/events"),
    })
}

/// A refusal as its response: `409` with `reason` (or `404` when the
/// booking is not one the caller may cancel).
pub(crate) fn refusal_response(r: &CancelRefusal) -> Response<Body> {
    let (status, code) = match r {
        CancelRefusal::NotConfirmed => (StatusCode::CONFLICT, "not_confirmed"),
        CancelRefusal::AlreadyCancelled { .. } => (StatusCode::CONFLICT, "already_cancelled"),
        CancelRefusal::Departed { .. } => (StatusCode::CONFLICT, "departed"),
    };
    json_response(
        status,
        &json!({ "error": r.to_string(), "code": "conflict", "reason": code }),
    )
}

/// Starts the cancellation of `record` (already authorised by the caller):
/// `202` with its links, the same for a repeated request.
pub(crate) async fn start_for(
    state: &AppState,
    record: &BookingRecord,
) -> Result<Response<Body>, ApiError> {
    let now = chrono::Utc::now();
    match start_cancellation(&state.engine, &state.services, record, now).await {
        Ok(id) => {
            let body = links(&id);
            let mut resp = json_response(StatusCode::ACCEPTED, &body);
            if let Ok(v) = HeaderValue::from_str(&format!("/api/cancellations/{id}")) {
                resp.headers_mut().insert(LOCATION, v);
            }
            Ok(resp)
        }
        Err(CancelError::Refused(r)) => Ok(refusal_response(&r)),
        Err(CancelError::Store(e)) => Err(ApiError::Internal(e.to_string())),
        Err(CancelError::Engine(e)) => Err(e.into()),
    }
}

/// `POST /api/cancellations` with `{reference, last_name}`.
pub async fn create(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let body: CancelBody = req.json(state).await?;
    let not_found = || ApiError::NotFound("no booking matches this reference and last name".into());
    if body.reference.len() > 16 || body.last_name.chars().count() > 100 {
        return Err(not_found());
    }
    let record = state
        .services
        .bookings
        .get(&body.reference, &body.last_name)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(not_found)?;
    start_for(state, &record).await
}

fn status_name(s: SagaStatus) -> &'static str {
    match s {
        SagaStatus::Completed => "cancelled",
        SagaStatus::Compensated => "not_cancelled",
        SagaStatus::Stuck => "needs_operator",
        _ => "in_progress",
    }
}

/// What a customer (or the admin list) sees of one cancellation.
fn view(rec: &SagaRecord) -> Result<Value, ApiError> {
    let d: CancellationData = rec
        .data_as()
        .map_err(|e| ApiError::Internal(format!("cancellation data does not decode: {e}")))?;
    let mut v = links(&rec.id);
    v["status"] = json!(status_name(rec.status()));
    v["saga_status"] = json!(rec.status());
    v["reference"] = json!(d.reference);
    v["requested_at"] = json!(d.requested_at);
    v["charged"] = json!(d.charged);
    v["refund"] = json!(d.refund);
    v["fee"] = json!(d.fee);
    v["seats_released"] = json!(d.seats_released);
    v["miles_reversed"] = json!(d.miles_reversed);
    v["miles_recredited"] = json!(d.miles_recredited);
    v["failure_reason"] = json!(rec.state.failure);
    Ok(v)
}

/// `GET /api/cancellations/{id}`.
pub async fn get(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let raw = req.param(0);
    let not_found = || ApiError::NotFound(format!("no cancellation {raw:?}"));
    let id = SagaId::parse(raw).ok_or_else(not_found)?;
    let rec = state.engine.status(&id).await.map_err(|e| match e {
        saga_engine::Error::NotFound(_) => not_found(),
        other => other.into(),
    })?;
    if rec.definition != CANCELLATION_SAGA {
        return Err(not_found());
    }
    Ok(json_response(StatusCode::OK, &view(&rec)?))
}

/// `GET /api/admin/cancellations`: every cancellation, newest first.
pub async fn admin_list(state: &AppState, _: &Req) -> Result<Response<Body>, ApiError> {
    let all = state.engine.list(None, usize::MAX).await?;
    let list: Vec<Value> = all
        .iter()
        .rev()
        .filter(|r| r.definition == CANCELLATION_SAGA)
        .map(view)
        .collect::<Result<_, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total": list.len(), "cancellations": list }),
    ))
}
