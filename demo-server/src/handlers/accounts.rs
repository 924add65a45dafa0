//! Traveller accounts over HTTP: register (`POST /api/accounts`), log in
//! and out (`POST`/`DELETE /api/session`), the logged-in account
//! (`GET /api/account`, which also hands the page its CSRF token), "my
//! trips" (`GET /api/account/trips`, newest first, cursor-paged), linking a
//! loyalty account proven by its number and the member's last name
//! (`POST /api/account/loyalty`), and cancelling one's own booking
//! (`POST /api/account/cancellations`).
//!
//! Bodies are read before the session is checked, so a malformed body is a
//! `422` naming every field whoever sends it; then a missing session is
//! `401`. A wrong email and a wrong password give the same `401`.

use crate::accounts::session::{clear_cookie, set_cookie};
use crate::accounts::{password, Account, AccountError, AccountView, Session};
use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::query::Params;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::{BookingData, FieldError, BOOKING_SAGA};
use booking_domain::cancellation::CancelRefusal;
use booking_domain::loyalty::AccountId;
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::{Response, StatusCode};
use saga_engine::{SagaId, SagaRecord, SagaStatus};
use serde_json::{json, Map, Value};

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::EmailTaken => ApiError::Conflict(e.to_string()),
            AccountError::Store(m) => ApiError::Internal(m),
        }
    }
}

/// The body as an object (an empty body reads as `{}`), else `400`.
async fn object(
    state: &AppState,
    req: &mut Req,
    what: &str,
) -> Result<Map<String, Value>, ApiError> {
    match req.json_value(state).await? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::BadRequest(format!(
            "the body must be a JSON object {what}"
        ))),
    }
}

/// A required string field of at most `max` characters, trimmed unless it
/// is a password; each problem is pushed to `errors` (never quoting it).
fn text(
    obj: &Map<String, Value>,
    name: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let mut err = |m: &str| {
        errors.push(FieldError {
            field: name.to_string(),
            message: m.to_string(),
        })
    };
    match obj.get(name) {
        None | Some(Value::Null) => {
            err("is required");
            None
        }
        Some(Value::String(s)) => {
            let s = if name == "password" {
                s.clone()
            } else {
                s.trim().to_string()
            };
            if s.is_empty() {
                err("must not be empty");
                None
            } else if s.chars().count() > max {
                err(&format!("at most {max} characters"));
                None
            } else if s.chars().any(char::is_control) {
                err("must not contain control characters");
                None
            } else {
                Some(s)
            }
        }
        Some(_) => {
            err("must be a string");
            None
        }
    }
}

fn email_ok(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// The session's account, or `401`.
fn logged_in(state: &AppState, session: Option<&Session>) -> Result<(Session, Account), ApiError> {
    let unauth = || ApiError::Unauthenticated("log in first (POST /api/session)".into());
    let session = session.ok_or_else(unauth)?;
    let account = state
        .accounts
        .get(&session.account_id)?
        .ok_or_else(unauth)?;
    Ok((session.clone(), account))
}

/// The answer to a successful register or login: the account, the CSRF
/// token, and the cookie.
fn logged_in_response(
    state: &AppState,
    status: StatusCode,
    account: &Account,
    token: &str,
    s: &Session,
) -> Response<Body> {
    let mut resp = json_response(
        status,
        &json!({ "account": AccountView::from(account), "csrf_token": s.csrf, "expires_at_ms": s.expires_at_ms }),
    );
    let cookie = set_cookie(
        token,
        state.accounts.sessions.ttl(),
        state.config.secure_cookies || state.config.tls.is_some(),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

/// `POST /api/accounts` `{name, email, password}`: `201`, logged in.
pub async fn register(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req, "{name, email, password}").await?;
    let mut errors = Vec::new();
    let name = text(&obj, "name", 100, &mut errors);
    let email = text(&obj, "email", 254, &mut errors);
    let pw = text(&obj, "password", password::MAX_PASSWORD_CHARS, &mut errors);
    if let Some(e) = &email {
        if !email_ok(e) {
            errors.push(FieldError {
                field: "email".into(),
                message: "not a valid email address".into(),
            });
        }
    }
    if let Some(p) = &pw {
        if p.chars().count() < password::MIN_PASSWORD_CHARS {
            errors.push(FieldError {
                field: "password".into(),
                message: format!("at least {} characters", password::MIN_PASSWORD_CHARS),
            });
        }
    }
    ApiError::check("invalid registration", errors)?;
    let (Some(name), Some(email), Some(pw)) = (name, email, pw) else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    if state.accounts.by_email(&email)?.is_some() {
        return Err(AccountError::EmailTaken.into());
    }
    let hash = password::hash(pw).await.map_err(ApiError::Internal)?;
    // The account trees change together: not while a backup copies them.
    let _write = state.barrier.write().await;
    let account = state.accounts.register(&name, &email, hash).await?;
    let (token, session) = state.accounts.sessions.create(&account.id)?;
    state.accounts.flush().await?;
    tracing::info!(account = %account.id, "traveller account registered");
    Ok(logged_in_response(
        state,
        StatusCode::CREATED,
        &account,
        &token,
        &session,
    ))
}

/// `POST /api/session` `{email, password}`: `200`, logged in; a wrong pair
/// `401`; too many attempts `429`.
pub async fn login(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req, "{email, password}").await?;
    let mut errors = Vec::new();
    let email = text(&obj, "email", 254, &mut errors);
    let pw = text(&obj, "password", password::MAX_PASSWORD_CHARS, &mut errors);
    ApiError::check("invalid login", errors)?;
    let (Some(email), Some(pw)) = (email, pw) else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let email = crate::accounts::normal_email(&email);
    state.accounts.throttle.check(req.client, &email)?;
    let account = state.accounts.by_email(&email)?;
    let ok = password::verify(pw, account.as_ref().map(|a| a.password_hash.clone())).await;
    let Some(account) = account.filter(|_| ok) else {
        state.accounts.throttle.failed(&email);
        tracing::info!(client = ?req.client, "login refused: wrong email or password");
        return Err(ApiError::Unauthenticated(
            "the email or the password is wrong".into(),
        ));
    };
    let _write = state.barrier.write().await;
    let (token, session) = state.accounts.sessions.create(&account.id)?;
    state.accounts.flush().await?;
    tracing::info!(account = %account.id, "logged in");
    Ok(logged_in_response(
        state,
        StatusCode::OK,
        &account,
        &token,
        &session,
    ))
}

/// `DELETE /api/session`: `204`, the cookie cleared (also without a session).
pub async fn logout(state: &AppState, req: Req) -> Result<Response<Body>, ApiError> {
    if let Some(s) = &req.session {
        let _write = state.barrier.write().await;
        state.accounts.sessions.end(s)?;
        state.accounts.flush().await?;
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(
        state.config.secure_cookies || state.config.tls.is_some(),
    )) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}

/// The linked loyalty account as the trips page shows it.
async fn loyalty_of(state: &AppState, account: &Account) -> Result<Value, ApiError> {
    let Some(id) = &account.loyalty_id else {
        return Ok(Value::Null);
    };
    match state.services.loyalty.account(&AccountId(id.clone())).await {
        Ok(a) => Ok(super::loyalty::account_json(&a)),
        Err(e) if e.is_retryable() => Err(e.into()),
        Err(_) => Ok(Value::Null),
    }
}

/// `GET /api/account`: the account, its CSRF token and its loyalty account.
pub async fn me(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let (session, account) = logged_in(state, req.session.as_ref())?;
    let loyalty = loyalty_of(state, &account).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "account": AccountView::from(&account), "csrf_token": session.csrf,
            "expires_at_ms": session.expires_at_ms, "loyalty": loyalty }),
    ))
}

/// Where a booking stands, for its owner.
fn trip_status(state: &AppState, rec: &SagaRecord) -> Result<&'static str, ApiError> {
    Ok(match rec.status() {
        SagaStatus::Completed => match state
            .services
            .bookings
            .by_saga(&rec.id)
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            Some(b) if b.status == booking_domain::booking_saga::BookingStatus::Cancelled => {
                "cancelled"
            }
            _ => "confirmed",
        },
        SagaStatus::Compensated => "failed",
        SagaStatus::Stuck => "needs_attention",
        _ => match booking_domain::booking_saga::wait_status(rec) {
            Some(booking_domain::booking_saga::WaitStatus::Held { .. }) => "held",
            _ => "awaiting_confirmation",
        },
    })
}

fn trip_view(state: &AppState, rec: &SagaRecord) -> Result<Value, ApiError> {
    let d: BookingData = rec
        .data_as()
        .map_err(|e| ApiError::Internal(format!("booking {} data does not decode: {e}", rec.id)))?;
    let status = trip_status(state, rec)?;
    let reference = d.booking_ref.as_ref().map(|r| r.0.clone());
    Ok(json!({
        "booking_id": rec.id.as_str(),
        "status": status,
        "failure_reason": (status == "failed").then(|| rec.state.failure.as_deref().map(crate::public_text::failure_reason)).flatten(),
        "booking_ref": reference,
        "flight": super::bookings::flight_summary(state, &d.flight_id, d.date),
        "flight_id": d.flight_id.0,
        "date": d.date,
        "cabin": d.cabin,
        "passengers": d.passengers,
        "price": d.price,
        "charged": d.charge(),
        "miles_awarded": d.miles_awarded,
        "miles_redeemed": d.miles_payment.as_ref().map(|m| m.miles),
        "created_at_ms": rec.created_at_ms,
        // A held booking's deadline (RFC 3339), as the hold-now-pay-later
        // saga keeps it in its data; the page shows the time left.
        "hold_expires_at": match booking_domain::booking_saga::wait_status(rec) {
            Some(booking_domain::booking_saga::WaitStatus::Held { expires_at_ms }) => {
                crate::api::rfc3339_ms(expires_at_ms)
            }
            _ => None,
        },
        "status_url": format!("/api/bookings/{}", rec.id),
        "events_url": format!("/api/sagas/{}/events", rec.id),
        "ticket_url": (status == "confirmed").then(|| reference.map(|r| format!("/api/tickets/{r}"))).flatten(),
    }))
}

/// `GET /api/account/trips?cursor=&limit=`: the account's bookings, newest
/// first, with `next_cursor` while there may be more, and the linked
/// loyalty account.
pub async fn trips(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let limit: Option<usize> = p.optional("limit", "a number from 1 to 50");
    if matches!(limit, Some(l) if !(1..=crate::accounts::trips::MAX_PAGE).contains(&l)) {
        p.error("limit", "must be from 1 to 50");
    }
    let cursor = req.query.get("cursor").map(str::to_string);
    if matches!(&cursor, Some(c) if c.is_empty() || c.len() > 1024) {
        p.error("cursor", "is not one this listing returned");
    }
    ApiError::check("invalid trips query", p.errors)?;
    let (_, account) = logged_in(state, req.session.as_ref())?;
    let page = state
        .accounts
        .trips
        .page(&account.id, cursor.as_deref(), limit.unwrap_or(10))?
        .map_err(|e| ApiError::field("cursor", e.to_string()))?;
    let mut trips = Vec::new();
    for key in &page.keys {
        // A key whose start was refused or never happened: skipped.
        let Some(id) = state.engine.find_by_key(key).await? else {
            continue;
        };
        let rec = state.engine.status(&id).await?;
        if rec.definition == BOOKING_SAGA {
            trips.push(trip_view(state, &rec)?);
        }
    }
    let loyalty = loyalty_of(state, &account).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "trips": trips, "next_cursor": page.next_cursor, "loyalty": loyalty }),
    ))
}

/// `POST /api/account/loyalty` `{loyalty_id, last_name}`: links the
/// account once the number and the member's last name match (else the same
/// `404` for either).
pub async fn link_loyalty(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req, "{loyalty_id, last_name}").await?;
    let mut errors = Vec::new();
    let id = text(&obj, "loyalty_id", 32, &mut errors);
    let last_name = text(&obj, "last_name", 100, &mut errors);
    ApiError::check("invalid loyalty link", errors)?;
    let (Some(id), Some(last_name)) = (id, last_name) else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let (_, account) = logged_in(state, req.session.as_ref())?;
    let not_found =
        || ApiError::NotFound("no loyalty account matches this number and last name".into());
    let member = match state.services.loyalty.account(&AccountId(id)).await {
        Ok(a) => a,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(_) => return Err(not_found()),
    };
    if member.last_name.trim().to_lowercase() != last_name.to_lowercase() {
        return Err(not_found());
    }
    let _write = state.barrier.write().await;
    let account = state
        .accounts
        .link_loyalty(&account.id, &member.id.0)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("log in first (POST /api/session)".into()))?;
    tracing::info!(account = %account.id, "loyalty account linked");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "account": AccountView::from(&account), "loyalty": super::loyalty::account_json(&member) }),
    ))
}

/// `POST /api/account/cancellations` `{booking_id}`: cancels one of the
/// account's confirmed bookings, as `POST /api/cancellations` does. A
/// booking of another account is the same `404` as an unknown one.
pub async fn cancel_trip(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let obj = object(state, &mut req, "{booking_id}").await?;
    let mut errors = Vec::new();
    let raw = text(&obj, "booking_id", 64, &mut errors);
    ApiError::check("invalid cancellation", errors)?;
    let raw = raw.unwrap_or_default();
    let (_, account) = logged_in(state, req.session.as_ref())?;
    let not_found = || ApiError::NotFound("no booking of this account has this id".into());
    let id = SagaId::parse(&raw).ok_or_else(not_found)?;
    let rec = match state.engine.status(&id).await {
        Ok(r) => r,
        Err(saga_engine::Error::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let owner = match &rec.idempotency_key {
        Some(k) if rec.definition == BOOKING_SAGA => state.accounts.trips.owner(k)?,
        _ => None,
    };
    if owner.as_deref() != Some(account.id.as_str()) {
        return Err(not_found());
    }
    let record = state
        .services
        .bookings
        .by_saga(&id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match record {
        Some(r) => super::cancellations::start_for(state, &r).await,
        None => Ok(super::cancellations::refusal_response(
            &CancelRefusal::NotConfirmed,
        )),
    }
}
