//! The router: one table, [`ROUTES`], of method, path pattern and endpoint,
//! and the dispatch of a request to its handler.
//!
//! Patterns are literal segments and `{name}` captures of one segment.
//! Routes are tried in table order, so a literal path (`/api/bookings/lookup`)
//! listed before a pattern (`/api/bookings/{id}`) wins. A path that matches
//! with another method answers `405` with an `Allow` header; `HEAD` is served
//! as `GET` (hyper sends no body). Admin routes check the bearer token before
//! anything else, the body included, is read. The OpenAPI document
//! ([`crate::openapi`]) describes every route of this table; a test checks it.

use crate::api::ApiError;
use crate::body::{read_limited, Body};
use crate::connections::ClientAddr;
use crate::handlers;
pub use crate::handlers::operate::Kind as OperationKind;
use crate::limits::RateKind;
use crate::query::Query;
use crate::state::AppState;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::Arc;
use OperationKind as Kind;

/// What a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The web page.
    UiIndex,
    /// The page's script.
    UiScript,
    /// The page's style sheet.
    UiStyle,
    /// One of the page's view scripts (`/js/{file}`).
    UiViewScript,
    /// Liveness.
    Healthz,
    /// Readiness.
    Readyz,
    /// Prometheus metrics.
    Metrics,
    /// The OpenAPI document.
    OpenApi,
    /// Airport autocomplete.
    Airports,
    /// Flight search.
    FlightSearch,
    /// One flight.
    Flight,
    /// Test card numbers.
    TestCards,
    /// Start a booking.
    CreateBooking,
    /// Find a booking by reference and last name.
    BookingLookup,
    /// A booking's status by id.
    GetBooking,
    /// One saga's events (SSE).
    SagaEvents,
    /// Every saga's events (SSE, admin).
    AllEvents,
    /// Read the global fault switches.
    GetFaults,
    /// Set the global fault switches (admin).
    PutFaults,
    /// Enroll in the loyalty programme.
    Enroll,
    /// A loyalty account by number and last name.
    LoyaltyAccount,
    /// List sagas (admin).
    AdminSagas,
    /// Retry a stuck saga (admin).
    AdminRetry,
    /// Cancel a running saga (admin).
    AdminCancel,
    /// Payment history (admin).
    AdminPayments,
    /// The itinerary outbox, newest first (admin).
    AdminMailbox,
    /// Cancel a confirmed booking (reference + last name).
    CreateCancellation,
    /// A cancellation's status by id.
    GetCancellation,
    /// Every cancellation (admin).
    AdminCancellations,
    /// Register a traveller account (and log in).
    Register,
    /// Log in.
    Login,
    /// Log out.
    Logout,
    /// The logged-in account.
    MyAccount,
    /// The logged-in account's bookings.
    MyTrips,
    /// Link a loyalty account to the logged-in account.
    LinkLoyalty,
    /// Cancel one of the logged-in account's bookings.
    CancelMyTrip,
    /// A confirmed booking's printable e-ticket.
    Ticket,
    /// A confirmed booking's e-ticket as a PDF.
    TicketPdf,
    /// The customer's confirmation of a booking's payment (SCA).
    ConfirmPayment,
    /// Pay a held booking.
    PayBooking,
    /// A consistent snapshot of every record (admin).
    AdminBackup,
    /// Import a schedule into the running server (admin).
    AdminCatalogImport,
    /// The price of a booking before it is made (promo code, miles).
    Quote,
    /// Create or replace a promo code (admin).
    AdminPutPromo,
    /// Every promo code (admin).
    AdminPromos,
    /// One saga's record (admin).
    AdminSaga,
    /// One saga's history (admin).
    AdminSagaHistory,
    /// Counts by status and recent rates (admin).
    AdminOverview,
    /// A retention pass now, or its preview (admin).
    AdminPurge,
    /// An operator operation on one saga, or its dry run (admin).
    AdminOperate(OperationKind),
    /// Pause or resume every saga of a definition (admin).
    AdminOperateDefinition(OperationKind),
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern, e.g. `/api/bookings/{id}`.
    pub path: &'static str,
    /// The handler.
    pub endpoint: Endpoint,
    /// True when the admin token is required.
    pub admin: bool,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
        admin: false,
    }
}

const fn admin(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
        admin: true,
    }
}

/// Every route of the server, in matching order.
pub const ROUTES: &[Route] = &[
    route("GET", "/", Endpoint::UiIndex),
    route("GET", "/app.js", Endpoint::UiScript),
    route("GET", "/style.css", Endpoint::UiStyle),
    route("GET", "/js/{file}", Endpoint::UiViewScript),
    route("GET", "/healthz", Endpoint::Healthz),
    route("GET", "/readyz", Endpoint::Readyz),
    route("GET", "/metrics", Endpoint::Metrics),
    route("GET", "/api/openapi.json", Endpoint::OpenApi),
    route("GET", "/api/airports", Endpoint::Airports),
    route("GET", "/api/flights/search", Endpoint::FlightSearch),
    route("GET", "/api/flights/{id}", Endpoint::Flight),
    route("GET", "/api/test-cards", Endpoint::TestCards),
    route("POST", "/api/bookings", Endpoint::CreateBooking),
    route("GET", "/api/bookings/lookup", Endpoint::BookingLookup),
    route("GET", "/api/bookings/{id}", Endpoint::GetBooking),
    route("GET", "/api/bookings/{id}/ticket.pdf", Endpoint::TicketPdf),
    route(
        "POST",
        "/api/bookings/{id}/confirm-payment",
        Endpoint::ConfirmPayment,
    ),
    route("POST", "/api/bookings/{id}/pay", Endpoint::PayBooking),
    route("GET", "/api/sagas/{id}/events", Endpoint::SagaEvents),
    admin("GET", "/api/events", Endpoint::AllEvents),
    route("GET", "/api/faults", Endpoint::GetFaults),
    admin("PUT", "/api/faults", Endpoint::PutFaults),
    route("POST", "/api/loyalty", Endpoint::Enroll),
    route("GET", "/api/loyalty/{id}", Endpoint::LoyaltyAccount),
    admin("GET", "/api/admin/sagas", Endpoint::AdminSagas),
    admin("GET", "/api/admin/sagas/{id}", Endpoint::AdminSaga),
    admin(
        "GET",
        "/api/admin/sagas/{id}/history",
        Endpoint::AdminSagaHistory,
    ),
    admin("GET", "/api/admin/overview", Endpoint::AdminOverview),
    admin("POST", "/api/admin/purge", Endpoint::AdminPurge),
    admin("POST", "/api/admin/sagas/{id}/retry", Endpoint::AdminRetry),
    admin(
        "POST",
        "/api/admin/sagas/{id}/cancel",
        Endpoint::AdminCancel,
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/pause",
        Endpoint::AdminOperate(Kind::Pause),
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/resume",
        Endpoint::AdminOperate(Kind::Resume),
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/retry-now",
        Endpoint::AdminOperate(Kind::RetryNow),
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/skip",
        Endpoint::AdminOperate(Kind::Skip),
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/force-compensate",
        Endpoint::AdminOperate(Kind::ForceCompensate),
    ),
    admin(
        "POST",
        "/api/admin/sagas/{id}/rerun",
        Endpoint::AdminOperate(Kind::Rerun),
    ),
    admin(
        "POST",
        "/api/admin/definitions/pause",
        Endpoint::AdminOperateDefinition(Kind::Pause),
    ),
    admin(
        "POST",
        "/api/admin/definitions/resume",
        Endpoint::AdminOperateDefinition(Kind::Resume),
    ),
    admin("GET", "/api/admin/payments", Endpoint::AdminPayments),
    admin("GET", "/api/admin/mailbox", Endpoint::AdminMailbox),
    route("POST", "/api/cancellations", Endpoint::CreateCancellation),
    route("GET", "/api/cancellations/{id}", Endpoint::GetCancellation),
    admin(
        "GET",
        "/api/admin/cancellations",
        Endpoint::AdminCancellations,
    ),
    route("POST", "/api/accounts", Endpoint::Register),
    route("POST", "/api/session", Endpoint::Login),
    route("DELETE", "/api/session", Endpoint::Logout),
    route("GET", "/api/account", Endpoint::MyAccount),
    route("GET", "/api/account/trips", Endpoint::MyTrips),
    route("POST", "/api/account/loyalty", Endpoint::LinkLoyalty),
    route("POST", "/api/account/cancellations", Endpoint::CancelMyTrip),
    route("GET", "/api/tickets/{id}", Endpoint::Ticket),
    route("POST", "/api/quote", Endpoint::Quote),
    admin(
        "PUT",
        "/api/admin/promo-codes/{id}",
        Endpoint::AdminPutPromo,
    ),
    admin("GET", "/api/admin/promo-codes", Endpoint::AdminPromos),
    admin("POST", "/api/admin/backup", Endpoint::AdminBackup),
    admin(
        "POST",
        "/api/admin/catalog/import",
        Endpoint::AdminCatalogImport,
    ),
];

/// Matches `path` against `pattern`; the captured segments on success.
fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                params.push(crate::query::decode(g));
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

/// The route for `method` and `path` and its captures, or why none fits
/// (`404`, or `405` with the methods the path accepts).
pub fn resolve(method: &Method, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut allow: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if let Some(params) = matches(r.path, path) {
            if r.method == method {
                return Ok((r, params));
            }
            if !allow.contains(&r.method) {
                allow.push(r.method);
            }
        }
    }
    if allow.is_empty() {
        return Err(ApiError::NotFound(format!("no route for {path}")));
    }
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    Err(ApiError::MethodNotAllowed { allow })
}

/// The methods `path` accepts, for `OPTIONS`.
fn allowed(path: &str) -> Option<String> {
    match resolve(&Method::OPTIONS, path) {
        Err(ApiError::MethodNotAllowed { allow }) => Some(allow.join(", ")),
        _ => None,
    }
}

/// A request as handlers see it.
#[derive(Debug)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Query parameters.
    pub query: Query,
    /// The route's `{}` captures, in order.
    pub params: Vec<String>,
    /// The client's address (from the accept loop; `None` when the
    /// request did not come through it).
    pub client: Option<IpAddr>,
    /// The valid session of the request's cookie, if any (its CSRF token
    /// already checked on a state-changing request).
    pub session: Option<crate::accounts::Session>,
    body: BodySlot,
}

/// The request body, shared between the handler (which may take it) and
/// the router (which reads what the handler left, see [`dispatch`]).
#[derive(Debug, Clone)]
struct BodySlot(Arc<std::sync::Mutex<Option<Incoming>>>);

impl BodySlot {
    fn new(body: Incoming) -> BodySlot {
        BodySlot(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<Incoming> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Reads and drops what is left of a body its handler did not read,
    /// within the server's size limit and deadline. Left unread, hyper
    /// would close the connection after the answer, and a client still
    /// writing its body would see a reset instead of the answer (and a
    /// keep-alive client would lose the connection). A client that asked
    /// `Expect: 100-continue` has sent nothing yet and is left alone.
    async fn drain(&self, state: &AppState, headers: &HeaderMap) {
        use hyper::body::Body as _;
        let Some(body) = self.take() else { return };
        if body.is_end_stream() || headers.contains_key(hyper::header::EXPECT) {
            return;
        }
        // Too large or too slow: the connection closes, as it would have.
        let _ = read_limited(
            headers,
            body,
            state.config.max_body_bytes,
            state.config.body_read_timeout,
        )
        .await;
    }
}

impl Req {
    /// The `i`th capture of the path.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// A header as text, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The body, read within the server's size limit and deadline.
    pub async fn bytes(&mut self, state: &AppState) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        read_limited(
            &self.headers,
            body,
            state.config.max_body_bytes,
            state.config.body_read_timeout,
        )
        .await
    }

    /// The body, read within `limit` bytes (a route that takes more than
    /// the server's usual limit) and the usual deadline.
    pub async fn bytes_up_to(&mut self, state: &AppState, limit: usize) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        read_limited(&self.headers, body, limit, state.config.body_read_timeout).await
    }

    /// The body as JSON: `415` if it says it is something else, `400` if it
    /// is not JSON. An empty body reads as `null`.
    pub async fn json_value(&mut self, state: &AppState) -> Result<serde_json::Value, ApiError> {
        if let Some(ct) = self.header(CONTENT_TYPE.as_str()) {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got {ct:?}"
                )));
            }
        }
        let bytes = self.bytes(state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }

    /// The body as a `T`: `400` if it is not JSON, `422` if it does not fit.
    pub async fn json<T: DeserializeOwned>(&mut self, state: &AppState) -> Result<T, ApiError> {
        let value = self.json_value(state).await?;
        decode_value(value)
    }

    /// The `Idempotency-Key` header: required, 1 to 200 visible ASCII characters.
    pub fn idempotency_key(&self) -> Result<String, ApiError> {
        let raw = self
            .headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::BadRequest("the Idempotency-Key header is required".into()))?;
        let key = raw
            .to_str()
            .map(str::trim)
            .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 200 visible ASCII characters".into(),
            ));
        }
        Ok(key.to_string())
    }
}

/// Decodes JSON into `T`; a mismatch is a `422` naming the field when serde does.
pub fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or("body")
            .to_string();
        ApiError::Validation {
            message: format!("invalid request body: {msg}"),
            fields: vec![booking_domain::booking_saga::FieldError {
                field,
                message: msg,
            }],
        }
    })
}

/// Answers one request. Never fails: every error becomes its response.
///
/// Whatever the answer (a handler's, or a refusal before any handler ran),
/// the part of the request body nobody read is read and dropped before the
/// answer goes out ([`BodySlot::drain`]).
pub async fn dispatch(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let slot = BodySlot::new(body);
    // What the drain needs of the headers (not a copy of them all).
    let mut framing = HeaderMap::new();
    for name in [hyper::header::CONTENT_LENGTH, hyper::header::EXPECT] {
        if let Some(v) = parts.headers.get(&name) {
            framing.insert(name, v.clone());
        }
    }
    let resp = answer(&state, parts, slot.clone()).await;
    slot.drain(&state, &framing).await;
    resp
}

async fn answer(
    state: &Arc<AppState>,
    parts: hyper::http::request::Parts,
    body: BodySlot,
) -> Response<Body> {
    let path = parts.uri.path().to_string();
    if parts.method == Method::OPTIONS {
        return match allowed(&path) {
            Some(allow) => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(ALLOW, v);
                }
                resp
            }
            None => ApiError::NotFound(format!("no route for {path}")).into_response(),
        };
    }
    let (route, params) = match resolve(&parts.method, &path) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    if route.admin {
        if let Err(e) = state.admin_token.authorize(&parts.headers) {
            // Counted and logged, never with what was presented.
            state.metrics.record_admin_refused();
            tracing::warn!(client = ?client, %path, "admin route refused: missing or wrong token");
            return e.into_response();
        }
    }
    let rate = match route.endpoint {
        Endpoint::CreateBooking | Endpoint::PayBooking => Some(RateKind::CreateBooking),
        Endpoint::BookingLookup | Endpoint::CreateCancellation => Some(RateKind::BookingLookup),
        Endpoint::LoyaltyAccount => Some(RateKind::LoyaltyLookup),
        Endpoint::Enroll | Endpoint::Register => Some(RateKind::Enroll),
        Endpoint::Ticket | Endpoint::TicketPdf | Endpoint::LinkLoyalty => {
            Some(RateKind::BookingLookup)
        }
        _ => None,
    };
    if let (Some(kind), Some(ip)) = (rate, client) {
        if let Err(e) = state.rates.check(ip, kind) {
            state.metrics.record_limited();
            tracing::info!(%ip, ?kind, "rate limit reached");
            return e.into_response();
        }
    }
    let session = match session_of(state, route, &parts.method, &parts.headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let req = Req {
        method: parts.method,
        path,
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        params,
        client,
        session,
        body,
    };
    match handlers::handle(route.endpoint, state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// The request's valid session, if its cookie names one. A state-changing
/// request (anything but `GET`/`HEAD`) that carries a session must carry
/// its CSRF token too, or it is refused (`403`) before its handler runs;
/// registering and logging in do not use the session and are exempt.
fn session_of(
    state: &AppState,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<crate::accounts::Session>, ApiError> {
    let session = state
        .accounts
        .sessions
        .from_headers(headers)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(session) = session else {
        return Ok(None);
    };
    let safe = *method == Method::GET || *method == Method::HEAD;
    let exempt = matches!(route.endpoint, Endpoint::Register | Endpoint::Login);
    if !safe && !exempt && !session.csrf_ok(headers) {
        tracing::warn!(
            path = route.path,
            "session cookie without its CSRF token: refused"
        );
        return Err(ApiError::Forbidden(
            "missing or wrong X-CSRF-Token for this session (GET /api/account gives it)".into(),
        ));
    }
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_routes_win_over_captures() {
        let (r, p) = resolve(&Method::GET, "/api/bookings/lookup").unwrap();
        assert_eq!(r.endpoint, Endpoint::BookingLookup);
        assert!(p.is_empty());
        let (r, p) = resolve(&Method::GET, "/api/bookings/abc").unwrap();
        assert_eq!(r.endpoint, Endpoint::GetBooking);
        assert_eq!(p, ["abc"]);
        let (r, p) = resolve(&Method::POST, "/api/admin/sagas/s1/retry").unwrap();
        assert_eq!((r.endpoint, r.admin), (Endpoint::AdminRetry, true));
        assert_eq!(p, ["s1"]);
    }

    #[test]
    fn wrong_method_lists_the_allowed_ones() {
        assert_eq!(
            resolve(&Method::DELETE, "/api/faults").unwrap_err(),
            ApiError::MethodNotAllowed {
                allow: vec!["GET", "PUT", "HEAD"]
            }
        );
        assert_eq!(
            resolve(&Method::GET, "/api/bookings").unwrap_err(),
            ApiError::MethodNotAllowed {
                allow: vec!["POST"]
            }
        );
        assert!(matches!(
            resolve(&Method::GET, "/api/nope"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&Method::GET, "/api/bookings/"),
            Err(ApiError::NotFound(_))
        ));
        assert_eq!(
            resolve(&Method::HEAD, "/healthz").unwrap().0.endpoint,
            Endpoint::Healthz
        );
    }
}
