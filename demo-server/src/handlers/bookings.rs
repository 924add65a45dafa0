//! Bookings: start one (`POST /api/bookings`), follow it by its id (an
//! unguessable capability handed to the booker), and find a confirmed one
//! by reference and a passenger's last name, as airlines do.
//!
//! The request body is decoded field by field so that a field of the wrong
//! type is reported by name (`422` with `fields`), like the domain's own
//! validation, instead of as one opaque serde message.

use crate::api::{json_response, ApiError, BookingAccepted, BookingView, FlightSummary};
use crate::body::Body;
use crate::query::Params;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::{
    wipe_card, BookingData, BookingRequest, FieldError, BOOKING_SAGA,
};
use booking_domain::FlightId;
use chrono::NaiveDate;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use saga_engine::SagaId;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// `POST /api/bookings` with an `Idempotency-Key`: validates and starts the
/// booking saga; `202` with the booking's links. The same key (scoped by
/// the contact email, kept [`KEY_TTL`]) with the same body names the same
/// booking, with `Idempotent-Replayed: true`; with another body, `422`
/// without naming the other booking.
pub async fn create(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let key = req.idempotency_key()?;
    let value = req.json_value(state).await?;
    let promo = promo_code_of(&value)?;
    let mut request = parse_booking_request(value)?;
    let result = create_parsed(
        state,
        &request,
        &key,
        req.session.as_ref(),
        promo.as_deref(),
    )
    .await;
    // The vault keeps its own copy (until authorization): zero this one.
    wipe_card(&mut request.card);
    result
}

async fn create_parsed(
    state: &AppState,
    request: &BookingRequest,
    key: &str,
    session: Option<&crate::accounts::Session>,
    promo: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let key = scoped_key(&request.email, key);
    // A key seen before: a replay (same request) or a reuse (another one).
    let replay = match state.engine.find_by_key(&key).await? {
        Some(existing) => {
            let rec = state.engine.status(&existing).await?;
            let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let age_ms = now_ms.saturating_sub(rec.created_at_ms);
            if age_ms > KEY_TTL.as_millis() as u64 {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "expired (keys are kept 24 hours); send the booking with a new key",
                ));
            }
            true
        }
        None => false,
    };
    if !replay {
        check_loyalty_member(state, request).await?;
    }
    // A logged-in booking joins its account's trips before it starts, so a
    // crash cannot leave it out (see `accounts::trips`).
    let linked = match session {
        Some(s) if !replay => {
            let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let linked = state.accounts.trips.record(&s.account_id, &key, now_ms)?;
            state.accounts.flush().await?;
            linked
        }
        _ => false,
    };
    let started = booking_domain::booking_saga::start_booking_with(
        &state.engine,
        &state.services,
        request,
        &key,
        promo,
    )
    .await;
    if started.is_err() && linked {
        state.accounts.trips.forget(&key)?;
    }
    let id = started?;
    tracing::info!(saga_id = %id, replay, "booking accepted");
    let accepted = BookingAccepted::new(id.as_str());
    let mut resp = json_response(StatusCode::ACCEPTED, &accepted);
    if replay {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Ok(v) = HeaderValue::from_str(&accepted.status_url) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// The optional `promo_code` of a booking body: a string of at most 32
/// characters, else `422`.
fn promo_code_of(value: &Value) -> Result<Option<String>, ApiError> {
    match value.get("promo_code") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().chars().count() <= 32 => Ok(Some(s.trim().to_string())),
        Some(_) => Err(ApiError::field(
            "promo_code",
            "must be a string of at most 32 characters",
        )),
    }
}

/// How long an `Idempotency-Key` replays its booking: 24 hours from the
/// booking's start. Later, the same key is refused (`422`), never taken
/// for a new booking.
pub const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The engine's key for a client's `Idempotency-Key`: scoped by the contact
/// email (hashed), so two customers choosing the same key never meet.
fn scoped_key(email: &str, key: &str) -> String {
    let digest =
        crate::service_token::digest(format!("email:{}", email.trim().to_lowercase()).as_bytes());
    let scope: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("booking:{scope}:{key}")
}

/// A `loyalty_id` must name an account whose holder is one of the
/// passengers (by last name). An unknown number and another person's number
/// get the same answer, so that a failed booking cannot tell whether an
/// account exists (the lookup `GET /api/loyalty/{id}` needs the last name
/// too, and both are rate-limited).
async fn check_loyalty_member(state: &AppState, request: &BookingRequest) -> Result<(), ApiError> {
    let Some(id) = request
        .loyalty_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let refused = || {
        ApiError::field(
            "loyalty_id",
            "no loyalty account with this number belongs to a passenger",
        )
    };
    if id.len() > 32 {
        return Err(refused());
    }
    let account = match state
        .services
        .loyalty
        .account(&booking_domain::loyalty::AccountId(id.to_string()))
        .await
    {
        Ok(a) => a,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(_) => return Err(refused()),
    };
    let holder = account.last_name.trim().to_lowercase();
    if request
        .passengers
        .iter()
        .any(|p| p.last_name.trim().to_lowercase() == holder)
    {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Decodes a booking request, naming every field that does not fit.
pub fn parse_booking_request(value: Value) -> Result<BookingRequest, ApiError> {
    let Value::Object(mut obj) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object (a booking request)".into(),
        ));
    };
    let mut errors = Vec::new();
    let flight_id: Option<String> = field(&mut obj, "flight_id", true, &mut errors);
    let date: Option<NaiveDate> = field(&mut obj, "date", true, &mut errors);
    let cabin = field(&mut obj, "cabin", true, &mut errors);
    let passengers = field(&mut obj, "passengers", true, &mut errors);
    let email = field(&mut obj, "email", true, &mut errors);
    let loyalty_id: Option<Option<String>> = field(&mut obj, "loyalty_id", false, &mut errors);
    let hold: Option<bool> = field(&mut obj, "hold", false, &mut errors);
    let hold = hold.unwrap_or(false);
    // A held booking is paid later: no card now.
    let card = if hold {
        field(&mut obj, "card", false, &mut errors).or(Some(Default::default()))
    } else {
        field(&mut obj, "card", true, &mut errors)
    };
    let faults = field(&mut obj, "faults", false, &mut errors);
    let redeem_miles: Option<u64> = field(&mut obj, "redeem_miles", false, &mut errors);
    let phone = field(&mut obj, "phone", false, &mut errors);
    let return_flight_id = field(&mut obj, "return_flight_id", false, &mut errors);
    let return_date = field(&mut obj, "return_date", false, &mut errors);
    match (flight_id, date, cabin, passengers, email, card) {
        (Some(flight_id), Some(date), Some(cabin), Some(passengers), Some(email), Some(card))
            if errors.is_empty() =>
        {
            Ok(BookingRequest {
                flight_id,
                date,
                cabin,
                passengers,
                email,
                loyalty_id: loyalty_id.flatten(),
                phone,
                card,
                hold,
                redeem_miles: redeem_miles.unwrap_or(0),
                faults: faults.unwrap_or_default(),
                return_flight_id,
                return_date,
            })
        }
        _ => Err(ApiError::Validation {
            message: "invalid booking request".into(),
            fields: errors,
        }),
    }
}

/// Takes `name` out of `obj` and decodes it; a problem is pushed to `errors`.
/// An absent or `null` optional field is `None` without error.
fn field<T: DeserializeOwned>(
    obj: &mut Map<String, Value>,
    name: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let mut push = |message: String| {
        errors.push(FieldError {
            field: name.to_string(),
            message,
        })
    };
    match obj.remove(name) {
        None | Some(Value::Null) if required => {
            push("is required".into());
            None
        }
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value(v) {
            Ok(t) => Some(t),
            // serde's message quotes the value: never a card's number or CVC.
            Err(_) if name == "card" => {
                push("must be an object with number and cvc as strings, exp_month and exp_year as numbers, and holder_name".into());
                None
            }
            Err(e) => {
                let msg = e.to_string();
                // serde_json appends a position that means nothing here.
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                push(msg);
                None
            }
        },
    }
}

fn saga_id(raw: &str) -> Result<SagaId, ApiError> {
    SagaId::parse(raw).ok_or_else(|| ApiError::NotFound(format!("no booking {raw:?}")))
}

/// The flight of a booking for display, when the catalog still has it.
pub(crate) fn flight_summary(
    state: &AppState,
    id: &FlightId,
    date: NaiveDate,
) -> Option<FlightSummary> {
    let catalog = state.services.catalog.current();
    let f = catalog.flight(id)?;
    Some(FlightSummary {
        id: f.id.0.clone(),
        flight_no: f.flight_no.clone(),
        airline: f.airline.clone(),
        origin: f.origin.clone(),
        destination: f.destination.clone(),
        departure: f.departure.format("%H:%M").to_string(),
        arrival: f.arrival.format("%H:%M").to_string(),
        arrival_date: f.arrival_date(date),
    })
}

/// `GET /api/bookings/{id}`: status, steps, reference, total, failure reason.
pub async fn get(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let id = saga_id(req.param(0))?;
    let rec = state.engine.status(&id).await.map_err(|e| match e {
        saga_engine::Error::NotFound(_) => ApiError::NotFound(format!("no booking {id}")),
        other => other.into(),
    })?;
    if rec.definition != BOOKING_SAGA {
        return Err(ApiError::NotFound(format!("no booking {id}")));
    }
    let data: BookingData = rec
        .data_as()
        .map_err(|e| ApiError::Internal(format!("booking {id} data does not decode: {e}")))?;
    let flight = flight_summary(state, &data.flight_id, data.date);
    let mut view = BookingView::new(&rec, &data, flight);
    if let (Some(v), Some(leg)) = (view.return_leg.as_mut(), &data.return_leg) {
        v.flight = flight_summary(state, &leg.flight_id, leg.date);
    }
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /api/bookings/lookup?reference=&last_name=`: a confirmed booking by
/// its reference and one passenger's last name. Either wrong gives the same
/// `404`, so the answer does not tell which.
pub fn lookup(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let reference = p.required("reference");
    let last_name = p.required("last_name");
    ApiError::check("invalid lookup", p.errors)?;
    let (Some(reference), Some(last_name)) = (reference, last_name) else {
        return Err(ApiError::Internal("checked parameters missing".into()));
    };
    let not_found = || ApiError::NotFound("no booking matches this reference and last name".into());
    if reference.len() > 16 || last_name.chars().count() > 100 {
        return Err(not_found());
    }
    let record = state
        .services
        .bookings
        .get(&reference, &last_name)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(not_found)?;
    let mut booking = serde_json::to_value(&record)
        .map_err(|e| ApiError::Internal(format!("booking record does not serialize: {e}")))?;
    booking["email"] = json!(super::mask_email(&record.email));
    super::tickets::holder_fields(state, &record, &mut booking);
    let links = BookingAccepted::new(record.saga_id.as_str());
    let body = json!({
        "booking": booking,
        "flight": flight_summary(state, &record.flight_id, record.date),
        "booking_id": links.booking_id,
        "status_url": links.status_url,
        "events_url": links.events_url,
    });
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_bad_field() {
        let err = parse_booking_request(json!({
            "flight_id": 7,
            "date": "2030-02-31",
            "cabin": "premium",
            "passengers": [{"first_name": "Ada"}],
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123", "holder_name": "A"},
            "faults": {"reserve_seat": {"mode": "explode"}},
        }))
        .unwrap_err();
        let ApiError::Validation { fields, .. } = err else {
            panic!("expected a validation error, got {err:?}");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "flight_id",
                "date",
                "cabin",
                "passengers",
                "email",
                "faults"
            ]
        );
        assert!(fields.iter().all(|f| !f.message.contains("at line")));
    }

    #[test]
    fn decodes_a_good_request() {
        let r = parse_booking_request(json!({
            "flight_id": "AA1-JFKLAX-0",
            "date": "2030-01-07",
            "cabin": "economy",
            "passengers": [{"first_name": "Ada", "last_name": "Lovelace"}],
            "email": "ada@example.com",
            "loyalty_id": null,
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123", "holder_name": "A"},
        }))
        .unwrap();
        assert_eq!(r.flight_id, "AA1-JFKLAX-0");
        assert!(r.faults.is_empty());
        assert_eq!(r.loyalty_id, None);
        assert!(matches!(
            parse_booking_request(json!([1])),
            Err(ApiError::BadRequest(_))
        ));
    }
}
