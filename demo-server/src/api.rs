//! The JSON shapes of the API and the one mapping from [`ApiError`] to an
//! HTTP response.
//!
//! Every error body is `{"error": "...", "code": "..."}` (`code` is
//! stable, for programs: [`ApiError::code`]); a validation error adds
//! `"fields": [{"field", "message"}]`. Errors of the layers below (engine,
//! booking, participants) are converted here and nowhere else, so a status
//! code means the same thing on every route: `400` malformed request, `401`
//! missing or wrong admin token, `404` unknown id, `405` wrong method,
//! `408` body too slow, `409` a state that forbids the operation, `413` body
//! too large, `415` not JSON, `422` well-formed but invalid, `429` over a
//! rate limit or a cap (with `Retry-After`), `503` shutting
//! down or a participant unreachable, `500` a bug or a storage failure (the
//! details go to the log, not to the client).

use crate::body::Body;
use booking_domain::booking_saga::{BookingData, BookingError, FieldError, Passenger};
use booking_domain::inventory::InventoryError;
use booking_domain::loyalty::LoyaltyError;
use booking_domain::payments::PaymentError;
use booking_domain::pricing::PriceBreakdown;
use booking_domain::{Cabin, Money};
use bytes::Bytes;
use chrono::NaiveDate;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use saga_engine::machine::StepProgress;
use saga_engine::{SagaRecord, SagaStatus, StepState};
use serde::{Deserialize, Serialize};

/// Why a request failed. Converted to a response by [`ApiError::into_response`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, a missing header, a bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The admin token is missing or wrong.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// Not logged in, or the email and password do not match (`401`).
    #[error("{0}")]
    Unauthenticated(String),
    /// Refused whoever asks: a session cookie without its CSRF token (`403`).
    #[error("{0}")]
    Forbidden(String),
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the path accepts.
        allow: Vec<&'static str>,
    },
    /// The request body did not arrive in time.
    #[error("request body not received in time")]
    RequestTimeout,
    /// The resource's state forbids the operation.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit.
    #[error("request body is over {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but invalid input, one entry per field.
    #[error("{message}")]
    Validation {
        /// Summary.
        message: String,
        /// What is wrong with each field.
        fields: Vec<FieldError>,
    },
    /// Shutting down, or a participant cannot be reached: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// Over a rate limit or a cap: `429` with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// Which limit.
        message: String,
        /// Seconds to wait before trying again.
        retry_after_secs: u64,
    },
    /// A bug or a storage failure. The message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program: a stable code ([`ApiError::code`]).
    pub code: String,
    /// Per-field problems: always present (never empty) on a validation
    /// error, absent on every other error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
}

impl ApiError {
    /// A validation error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::Validation {
            message: format!("{field}: {message}"),
            fields: vec![FieldError {
                field: field.to_string(),
                message,
            }],
        }
    }

    /// A validation error from a list of field errors (`Ok` when empty).
    pub fn check(summary: &str, fields: Vec<FieldError>) -> Result<(), ApiError> {
        if fields.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation {
                message: summary.to_string(),
                fields,
            })
        }
    }

    /// `503` for a participant that cannot be reached: the full error
    /// (which may name an internal URL) is logged, the answer is generic.
    pub fn unreachable(service: &str, e: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(service, error = %e, "participant unavailable: answered 503");
        ApiError::Unavailable(format!(
            "the {service} service could not be reached; retry later"
        ))
    }

    /// The stable machine-readable code of this error, sent as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Validation { fields, .. }
                if fields.iter().any(|f| f.field == "Idempotency-Key") =>
            {
                "idempotency_key_reused"
            }
            ApiError::Validation { .. } => "validation_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response: status, headers and `{"error": ...}` body.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let body = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error answered with 500");
                ErrorBody {
                    error: "internal error; see the server log".into(),
                    code: self.code().into(),
                    fields: None,
                }
            }
            ApiError::Validation { message, fields } => ErrorBody {
                error: message.clone(),
                code: self.code().into(),
                // A validation error always names at least one field.
                fields: Some(if fields.is_empty() {
                    vec![FieldError {
                        field: "body".into(),
                        message: message.clone(),
                    }]
                } else {
                    fields.clone()
                }),
            },
            other => ErrorBody {
                error: other.to_string(),
                code: self.code().into(),
                fields: None,
            },
        };
        let mut resp = json_response(status, &body);
        let headers = resp.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(ALLOW, v);
                }
            }
            ApiError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"demo-server admin\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert("retry-after", HeaderValue::from_static("1"));
            }
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => {
                headers.insert("retry-after", HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

/// A JSON response with `status`. Serialization of our own types cannot
/// fail; if it ever did, the answer is a plain 500.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, "application/json", Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialize");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Bytes::from_static(
                    b"{\"error\":\"internal error; see the server log\",\"code\":\"internal\"}",
                ),
            )
        }
    }
}

/// A response with a body of `content_type`, not cached.
pub fn bytes_response(status: StatusCode, content_type: &str, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl From<saga_engine::Error> for ApiError {
    fn from(e: saga_engine::Error) -> Self {
        use saga_engine::Error as E;
        match e {
            E::NotFound(id) => ApiError::NotFound(format!("saga {id} not found")),
            E::ShuttingDown => ApiError::Unavailable("the server is shutting down".into()),
            // Disk full or a write error: nothing was acknowledged, nothing
            // new starts until the store is healthy again (after a restart).
            E::Store(saga_engine::StoreError::Io(detail)) => {
                tracing::error!(error = %detail, "storage is failing: answered 503");
                ApiError::Unavailable(
                    "storage is failing; no booking was started, retry later".into(),
                )
            }
            E::InvalidState { .. } | E::UnregisteredVersion { .. } => {
                ApiError::Conflict(e.to_string())
            }
            // The engine's message names the other saga: not for the public.
            E::IdempotencyConflict { .. } => ApiError::Validation {
                message: "Idempotency-Key was already used with a different request".into(),
                fields: vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message: "already used with a different request".into(),
                }],
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BookingError> for ApiError {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::Invalid(v) => ApiError::Validation {
                message: "invalid booking request".into(),
                fields: v.0,
            },
            // The other booking's id is its capability: never named here.
            BookingError::KeyReused { .. } => ApiError::Validation {
                message: "Idempotency-Key was already used with a different request".into(),
                fields: vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message: "already used with a different request".into(),
                }],
            },
            BookingError::Unavailable(m) => {
                tracing::warn!(error = %m, "booking not validated: a participant is unavailable");
                ApiError::Unavailable(
                    "cannot validate the booking now: a service could not be reached; retry later"
                        .into(),
                )
            }
            BookingError::Engine(e) => e.into(),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        if e.is_retryable() {
            ApiError::unreachable("inventory", &e)
        } else {
            ApiError::Internal(format!("inventory: {e}"))
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        if e.is_retryable() {
            ApiError::unreachable("payment", &e)
        } else if e.is_rejection() {
            // A definite "no" about the request (an invalid email, an
            // unknown key): the caller's input, so a 422, never a 500.
            ApiError::Validation {
                message: format!("payments: {e}"),
                fields: Vec::new(),
            }
        } else {
            ApiError::Internal(format!("payments: {e}"))
        }
    }
}

impl From<LoyaltyError> for ApiError {
    fn from(e: LoyaltyError) -> Self {
        match e {
            LoyaltyError::UnknownAccount { .. } => {
                ApiError::NotFound("no loyalty account matches".into())
            }
            // The error names the account holding the email: not for the public.
            LoyaltyError::EmailInUse { .. } => {
                ApiError::Conflict("this email already has a loyalty account".into())
            }
            LoyaltyError::InvalidRequest { reason } => ApiError::Validation {
                message: format!("invalid loyalty request: {reason}"),
                fields: Vec::new(),
            },
            LoyaltyError::KeyReused { .. } => ApiError::Validation {
                message: "Idempotency-Key was already used with a different request".into(),
                fields: vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message: "already used with a different request".into(),
                }],
            },
            e if e.is_retryable() => ApiError::unreachable("loyalty", &e),
            e => ApiError::Internal(format!("loyalty: {e}")),
        }
    }
}

/// `202` answer to `POST /api/bookings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingAccepted {
    /// The booking's id (the saga id): an unguessable capability.
    pub booking_id: String,
    /// Where to read its status.
    pub status_url: String,
    /// Where to follow its progress (server-sent events).
    pub events_url: String,
}

impl BookingAccepted {
    /// The links of booking `id`.
    pub fn new(id: &str) -> Self {
        BookingAccepted {
            booking_id: id.to_string(),
            status_url: format!("/api/bookings/{id}"),
            events_url: format!("/api/sagas/{id}/events"),
        }
    }
}

/// Where a booking stands, as a customer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// The saga is running or compensating.
    Pending,
    /// Every step succeeded: the booking has a reference.
    Confirmed,
    /// A step failed and everything was undone.
    Compensated,
    /// Undoing failed; an operator must retry.
    Stuck,
    /// An operator paused the booking's saga; it goes on when resumed.
    Paused,
    /// Held without payment: the seats wait for `POST .../pay` until
    /// `hold_expires_at`.
    Held,
    /// The card's issuer asks the customer to confirm the payment
    /// (`POST .../confirm-payment`) before `confirmation_expires_at`.
    AwaitingConfirmation,
}

impl BookingStatus {
    /// The status of a booking saga's record: its saga's, or the wait it
    /// stands in.
    pub fn of(rec: &SagaRecord) -> BookingStatus {
        use booking_domain::booking_saga::{wait_status, WaitStatus};
        match wait_status(rec) {
            Some(WaitStatus::Held { .. }) => BookingStatus::Held,
            Some(WaitStatus::AwaitingConfirmation { .. }) => BookingStatus::AwaitingConfirmation,
            None => rec.status().into(),
        }
    }
}

/// RFC 3339 (UTC) of ms since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

impl From<SagaStatus> for BookingStatus {
    fn from(s: SagaStatus) -> Self {
        match s {
            SagaStatus::Running | SagaStatus::Compensating => BookingStatus::Pending,
            SagaStatus::Completed => BookingStatus::Confirmed,
            SagaStatus::Compensated => BookingStatus::Compensated,
            SagaStatus::Stuck => BookingStatus::Stuck,
            SagaStatus::Paused => BookingStatus::Paused,
        }
    }
}

/// One step of a saga as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Step name.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Forward attempts started.
    pub attempts: u32,
    /// Compensation attempts started.
    pub compensation_attempts: u32,
    /// True once an attempt ended without a clear answer.
    pub in_doubt: bool,
    /// The last error seen.
    pub last_error: Option<String>,
    /// When a waiting step wakes, ms since the Unix epoch.
    pub wake_at_ms: Option<u64>,
}

impl From<&StepProgress> for StepView {
    fn from(p: &StepProgress) -> Self {
        StepView {
            name: p.name.clone(),
            state: p.state,
            attempts: p.attempts,
            compensation_attempts: p.compensation_attempts,
            in_doubt: p.in_doubt,
            last_error: p.last_error.clone(),
            wake_at_ms: p.wake_at_ms,
        }
    }
}

impl StepView {
    /// The step as the public sees it: its last error in public words
    /// ([`crate::public_text`]).
    pub fn public(p: &StepProgress) -> Self {
        let mut v = StepView::from(p);
        v.last_error = v
            .last_error
            .map(|e| crate::public_text::step_error(&v.name, &e));
        v
    }
}

/// The flight of a booking, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightSummary {
    /// Flight id.
    pub id: String,
    /// Flight number.
    pub flight_no: String,
    /// Airline name.
    pub airline: String,
    /// Origin airport code.
    pub origin: String,
    /// Destination airport code.
    pub destination: String,
    /// Local departure time, `HH:MM`.
    pub departure: String,
    /// Local arrival time, `HH:MM`.
    pub arrival: String,
    /// Local arrival date.
    pub arrival_date: NaiveDate,
}

/// `GET /api/bookings/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingView {
    /// The booking's id (the saga id).
    pub booking_id: String,
    /// pending, held, awaiting_confirmation, confirmed, compensated,
    /// stuck or paused.
    pub status: BookingStatus,
    /// A held booking's deadline to pay (RFC 3339), while held.
    pub hold_expires_at: Option<String>,
    /// The deadline to confirm the payment with the bank (RFC 3339), while
    /// awaiting it.
    pub confirmation_expires_at: Option<String>,
    /// Held at booking, to be paid later (whether paid yet or not).
    pub hold: bool,
    /// The saga's own status (running, compensating, completed, compensated, stuck).
    pub saga_status: SagaStatus,
    /// Each step: state, attempts, last error.
    pub steps: Vec<StepView>,
    /// The six-character reference, once confirmed.
    pub booking_ref: Option<String>,
    /// What is (or was to be) charged.
    pub total: Money,
    /// The price, itemised.
    pub price: PriceBreakdown,
    /// Why it compensated or got stuck, in public words (no internal URLs,
    /// paths or storage errors: those are in the admin view).
    pub failure_reason: Option<String>,
    /// The flight id.
    pub flight_id: String,
    /// The flight, when still in the catalog.
    pub flight: Option<FlightSummary>,
    /// Departure date.
    pub date: NaiveDate,
    /// Cabin.
    pub cabin: Cabin,
    /// Travellers.
    pub passengers: Vec<Passenger>,
    /// Card brand and last four digits.
    pub card: CardSummary,
    /// Loyalty account credited, if any.
    pub loyalty_id: Option<String>,
    /// Miles awarded, once awarded.
    pub miles_awarded: Option<u64>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// This resource.
    pub status_url: String,
    /// Its progress as server-sent events.
    pub events_url: String,
    /// A round trip's return leg (`null` for a one-way booking); its seats
    /// are the step `reserve_return_seat`, beside `reserve_seat`.
    pub return_leg: Option<ReturnLegView>,
}

/// The return leg of a round trip, as shown back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnLegView {
    /// The return flight's id.
    pub flight_id: String,
    /// Its departure date.
    pub date: NaiveDate,
    /// The flight, when still in the catalog.
    pub flight: Option<FlightSummary>,
    /// This leg's part of the price (included in `price`).
    pub price: Option<PriceBreakdown>,
}

/// A card as shown back: never the number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    /// Brand, e.g. `visa`.
    pub brand: String,
    /// Last four digits.
    pub last4: String,
}

impl BookingView {
    /// The view of a booking saga's record and data.
    pub fn new(rec: &SagaRecord, data: &BookingData, flight: Option<FlightSummary>) -> Self {
        use booking_domain::booking_saga::{wait_status, WaitStatus};
        let links = BookingAccepted::new(rec.id.as_str());
        let (hold_expires_at, confirmation_expires_at) = match wait_status(rec) {
            Some(WaitStatus::Held { expires_at_ms }) => (rfc3339_ms(expires_at_ms), None),
            Some(WaitStatus::AwaitingConfirmation { expires_at_ms }) => {
                (None, rfc3339_ms(expires_at_ms))
            }
            None => (None, None),
        };
        BookingView {
            booking_id: rec.id.to_string(),
            status: BookingStatus::of(rec),
            hold_expires_at,
            confirmation_expires_at,
            hold: data.hold,
            saga_status: rec.status(),
            steps: rec.state.steps.iter().map(StepView::public).collect(),
            booking_ref: data.booking_ref.as_ref().map(|r| r.0.clone()),
            total: data.charge(),
            price: data.price.clone(),
            failure_reason: rec
                .state
                .failure
                .as_deref()
                .map(crate::public_text::failure_reason),
            flight_id: data.flight_id.0.clone(),
            flight,
            date: data.date,
            cabin: data.cabin,
            passengers: data.passengers.clone(),
            card: CardSummary {
                brand: data.card_brand.clone(),
                last4: data.card_last4.clone(),
            },
            loyalty_id: data.loyalty_id.as_ref().map(|a| a.0.clone()),
            miles_awarded: data.miles_awarded,
            created_at_ms: rec.created_at_ms,
            updated_at_ms: rec.updated_at_ms,
            status_url: links.status_url,
            events_url: links.events_url,
            return_leg: data.return_leg.as_ref().map(|l| ReturnLegView {
                flight_id: l.flight_id.0.clone(),
                date: l.date,
                flight: None,
                price: l.price.clone(),
            }),
        }
    }
}

/// One saga in the admin list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaSummary {
    /// Saga id.
    pub id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: u32,
    /// Saga status.
    pub status: SagaStatus,
    /// Why it compensated or got stuck.
    pub failure: Option<String>,
    /// Steps.
    pub steps: Vec<StepView>,
    /// Booking reference, for a completed booking.
    pub booking_ref: Option<String>,
    /// For a booking: `held` or `awaiting_confirmation` while it waits
    /// for the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<BookingStatus>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

impl From<&SagaRecord> for SagaSummary {
    fn from(rec: &SagaRecord) -> Self {
        SagaSummary {
            id: rec.id.to_string(),
            definition: rec.definition.clone(),
            version: rec.version,
            status: rec.status(),
            failure: rec.state.failure.clone(),
            steps: rec.state.steps.iter().map(StepView::from).collect(),
            booking_ref: rec
                .data
                .get("booking_ref")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            waiting_for: Some(BookingStatus::of(rec))
                .filter(|s| matches!(s, BookingStatus::Held | BookingStatus::AwaitingConfirmation)),
            created_at_ms: rec.created_at_ms,
            updated_at_ms: rec.updated_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_is_a_503_with_retry_after() {
        let e: ApiError = saga_engine::Error::Store(saga_engine::StoreError::Io(
            "No space left on device".into(),
        ))
        .into();
        let resp = e.into_response();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    }

    #[test]
    fn every_error_has_a_json_body_and_its_status() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Unauthorized, 401),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::MethodNotAllowed { allow: vec!["GET"] }, 405),
            (ApiError::PayloadTooLarge { limit: 1 }, 413),
            (ApiError::field("date", "bad"), 422),
            (ApiError::Internal("secret detail".into()), 500),
        ];
        for (e, code) in cases {
            let resp = e.into_response();
            assert_eq!(resp.status().as_u16(), code);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        }
        let r = ApiError::MethodNotAllowed {
            allow: vec!["GET", "HEAD"],
        }
        .into_response();
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn saga_status_maps_to_booking_status() {
        assert_eq!(
            BookingStatus::from(SagaStatus::Compensating),
            BookingStatus::Pending
        );
        assert_eq!(
            BookingStatus::from(SagaStatus::Completed),
            BookingStatus::Confirmed
        );
        assert_eq!(
            serde_json::to_value(BookingStatus::Stuck).unwrap(),
            serde_json::json!("stuck")
        );
    }
}
