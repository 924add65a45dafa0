//! Promo codes over HTTP: the operator creates or replaces a code
//! (`PUT /api/admin/promo-codes/{code}`) and lists them with their uses
//! (`GET /api/admin/promo-codes`); anyone prices a booking before making it
//! (`POST /api/quote`: fare, the code's discount, miles, and what the card
//! will be charged). The quote goes through the same functions as the
//! booking's own pricing (`pricing::price`, `PromoStore::quote`,
//! `pricing::after_discount`, `pricing::pay_with_miles`), so the amount
//! shown is the amount charged.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::FieldError;
use booking_domain::pricing::{after_discount, pay_with_miles, price, PromoRule};
use booking_domain::promo::{PromoCode, PromoError};
use booking_domain::{Cabin, FlightId, Money};
use chrono::{DateTime, NaiveDate, Utc};
use hyper::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// Decodes field `name` of `obj`; a problem (or a missing required field)
/// is pushed to `errors`.
fn field<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    name: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError {
                    field: name.into(),
                    message: "is required".into(),
                });
            }
            None
        }
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                errors.push(FieldError {
                    field: name.into(),
                    message: msg,
                });
                None
            }
        },
    }
}

async fn object(state: &AppState, req: &mut Req) -> Result<Map<String, Value>, ApiError> {
    match req.json_value(state).await? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
    }
}

fn promo_field_error(e: PromoError) -> ApiError {
    match e {
        PromoError::Store(m) => ApiError::Internal(m),
        other => ApiError::field("promo_code", other.to_string()),
    }
}

/// `POST /api/quote` `{flight_id, date, cabin, passengers, promo_code?,
/// redeem_miles?}`: the price, the code's discount, the miles' value and
/// the charge.
pub async fn quote(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req).await?;
    let mut errors = Vec::new();
    let flight_id: Option<String> = field(&obj, "flight_id", true, &mut errors);
    let date: Option<NaiveDate> = field(&obj, "date", true, &mut errors);
    let cabin: Option<Cabin> = field(&obj, "cabin", true, &mut errors);
    let passengers: Option<u32> = field(&obj, "passengers", true, &mut errors);
    let code: Option<String> = field(&obj, "promo_code", false, &mut errors);
    let miles: Option<u64> = field(&obj, "redeem_miles", false, &mut errors);
    ApiError::check("invalid quote", errors)?;
    let (Some(flight_id), Some(_date), Some(cabin), Some(passengers)) =
        (flight_id, date, cabin, passengers)
    else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let catalog = state.services.catalog.current();
    let flight = catalog
        .flight(&FlightId(flight_id.trim().to_string()))
        .ok_or_else(|| ApiError::field("flight_id", "no such flight in the schedule"))?;
    let fare = flight
        .fare(cabin)
        .ok_or_else(|| ApiError::field("cabin", format!("{cabin} is not sold on this flight")))?;
    let base = price(fare, passengers).map_err(|e| ApiError::field("passengers", e.to_string()))?;
    let promo = match code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => Some(
            state
                .services
                .promos
                .quote(c, &base, Utc::now())
                .map_err(promo_field_error)?,
        ),
        None => None,
    };
    let after = match &promo {
        Some(p) => after_discount(&base, &p.discount),
        None => base.clone(),
    };
    let miles = match miles.filter(|m| *m > 0) {
        Some(m) => Some(
            pay_with_miles(&after, m)
                .map_err(|e| ApiError::field("redeem_miles", e.to_string()))?,
        ),
        None => None,
    };
    let charge: Money = match &miles {
        Some(m) => m.charge.clone(),
        None => after.total.clone(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "price": base, "promo": promo, "miles": miles, "charge": charge }),
    ))
}

fn view(state: &AppState, c: &PromoCode) -> Result<Value, ApiError> {
    let uses = state
        .services
        .promos
        .uses(&c.code)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut v = serde_json::to_value(c).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["uses"] = json!(uses);
    Ok(v)
}

/// `PUT /api/admin/promo-codes/{code}` `{rule: {kind: percent, percent} |
/// {kind: fixed, amount: {minor, currency}}, valid_from, valid_until,
/// max_uses?}`: `200` with the code.
pub async fn admin_put(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req).await?;
    let mut errors = Vec::new();
    let rule: Option<PromoRule> = field(&obj, "rule", true, &mut errors);
    let from: Option<DateTime<Utc>> = field(&obj, "valid_from", true, &mut errors);
    let until: Option<DateTime<Utc>> = field(&obj, "valid_until", true, &mut errors);
    let max_uses: Option<u32> = field(&obj, "max_uses", false, &mut errors);
    ApiError::check("invalid promo code", errors)?;
    let (Some(rule), Some(valid_from), Some(valid_until)) = (rule, from, until) else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let code = PromoCode {
        v: 1,
        code: req.param(0).to_string(),
        rule,
        valid_from,
        valid_until,
        max_uses,
    };
    let _write = state.barrier.write().await;
    let saved = state.services.promos.put(code).await.map_err(|e| match e {
        PromoError::Invalid(m) => ApiError::field("code", m),
        other => ApiError::Internal(other.to_string()),
    })?;
    tracing::info!(code = %saved.code, "promo code saved");
    Ok(json_response(StatusCode::OK, &view(state, &saved)?))
}

/// `GET /api/admin/promo-codes`: every code with its uses.
pub async fn admin_list(state: &AppState, _: &Req) -> Result<Response<Body>, ApiError> {
    let all = state
        .services
        .promos
        .all()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let list: Vec<Value> = all
        .iter()
        .map(|c| view(state, c))
        .collect::<Result<_, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total": list.len(), "codes": list }),
    ))
}
