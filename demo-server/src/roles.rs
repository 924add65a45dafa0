//! One booking participant (inventory, payments or loyalty) served alone over
//! JSON HTTP, so the booking saga can cross real process boundaries.
//!
//! [`serve_role`] opens the participant's local sled implementation and
//! exposes its trait, one route per method; [`crate::remote`] holds the
//! matching clients. Every route but `GET /healthz` needs the service's
//! bearer token ([`crate::service_token`]) when one is configured, and a
//! role server without one serves only on loopback; the listings of every
//! hold, payment and account are thus reachable only by the orchestrator,
//! which shows them only behind its admin token. The server runs on the
//! accept loop of the main server ([`crate::connections`]), with its limits:
//! connection caps, header and body deadlines, body size, write timeout. Every mutating call carries the saga's idempotency key
//! in the `Idempotency-Key` header (percent-encoded, so any key survives the
//! trip); the participant applies the effect once however often it is
//! repeated. Errors travel as the participant's own error enum in JSON, so a
//! rejection stays a rejection on the other side: `409`/`422` for a definite
//! "no", `503` for a retryable failure, `400` for a malformed request, `404`
//! for an unknown route, `413` for a body over [`MAX_BODY_BYTES`].
//!
//! Routes (keys, emails and account ids in paths are percent-encoded):
//!
//! | role | method and path | trait method |
//! | --- | --- | --- |
//! | all | `GET /healthz` | (liveness) |
//! | inventory | `POST /holds` + key, body `HoldRequest` | `hold` |
//! | inventory | `POST /holds/confirm` + key | `confirm` |
//! | inventory | `POST /holds/release` + key | `release` |
//! | inventory | `GET /holds` | `all_holds` |
//! | inventory | `GET /holds/{key}` | `hold_status` |
//! | inventory | `GET /seats?flight=&date=&cabin=` | `totals` |
//! | inventory | `GET /seats/left?flight=&date=&cabin=` | `seats_left` |
//! | inventory | `PUT /seats/capacity`, body `{flight,date,cabin,seats}` | `set_capacity` |
//! | payments | `POST /payments` + key, body `AuthorizeRequest` | `authorize` |
//! | payments | `POST /payments/capture` + key | `capture` |
//! | payments | `POST /payments/void` + key | `void_or_refund` |
//! | payments | `POST /payments/refund` + key, body `RefundRequest` | `refund` |
//! | payments | `GET /payments` | `all_payments` |
//! | payments | `GET /payments/{key}` | `get` |
//! | payments | `GET /customers/{email}/payments` | `history` |
//! | payments | `POST /payments/confirm` + key | `confirm_authorization` |
//! | payments | `POST /payments/tokens` + key, body `TokenizeRequest` | `tokenize` |
//! | payments | `POST /payments/tokens/authorize` + key, body `TokenAuthorizeRequest` | `authorize_token` |
//! | payments | `POST /payments/tokens/forget` + key (the token) | `forget_card` |
//! | payments | `GET /payments/tokens/count` | `cards_held` |
//! | loyalty | `POST /accounts` + key, body `CreateAccount` | `create_account` |
//! | loyalty | `GET /accounts` | `all_accounts` |
//! | loyalty | `GET /accounts/{id}` | `account` |
//! | loyalty | `GET /accounts/{id}/entries` | `history` |
//! | loyalty | `GET /emails/{email}/account` | `account_by_email` |
//! | loyalty | `POST /entries/award` + key, body `{account_id, amount}` | `award` |
//! | loyalty | `POST /entries/redeem` + key, body `{account_id, miles}` | `redeem` |
//! | loyalty | `POST /entries/reverse` + key | `reverse` |
//! | loyalty | `GET /entries/{key}` | `entry` |

use crate::api::ApiError;
use crate::body::{read_limited, Body};
use crate::connections::{accept_loop, ConnLimits, ConnTracker};
use crate::service_token::ServiceToken;
use crate::state::ServerConfig;
use booking_domain::inventory::{Inventory, InventoryError, LocalInventory};
use booking_domain::loyalty::{AccountId, LocalLoyalty, Loyalty, LoyaltyError};
use booking_domain::payments::{LocalPayments, PaymentError, Payments};
use booking_domain::{Cabin, FlightId, Money};
use bytes::Bytes;
use chrono::NaiveDate;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument as _;

/// Largest request body a role server reads, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header that carries the idempotency key of a mutating call.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How a role server runs: its role, its credential and its limits (by
/// default the main server's: [`ServerConfig::default`]).
#[derive(Debug, Clone)]
pub struct RoleConfig {
    /// The participant served.
    pub role: Role,
    /// The bearer token every call but `GET /healthz` must carry; `None`
    /// only on a loopback address.
    pub token: Option<ServiceToken>,
    /// Connection caps, header deadline and write timeout.
    pub limits: ConnLimits,
    /// Largest request body read, in bytes.
    pub max_body_bytes: usize,
    /// How long a client may take to send its request body.
    pub body_read_timeout: Duration,
    /// How long a graceful shutdown waits for open connections.
    pub drain: Duration,
    /// The participant's data directory: the payments participant keeps
    /// its card vault key there (`None`: a key of this process only, for
    /// databases that do not outlive it).
    pub data_dir: Option<std::path::PathBuf>,
}

impl RoleConfig {
    /// `role` with no token and the main server's default limits.
    pub fn new(role: Role) -> RoleConfig {
        let main = ServerConfig::default();
        RoleConfig {
            role,
            token: None,
            limits: main.conn_limits(),
            max_body_bytes: MAX_BODY_BYTES.min(main.max_body_bytes),
            body_read_timeout: main.body_read_timeout,
            drain: main.shutdown_grace,
            data_dir: None,
        }
    }

    /// Keeps the card vault key in `dir` (the payments role).
    pub fn with_data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> RoleConfig {
        self.data_dir = Some(dir.into());
        self
    }

    /// Requires `token` on every call.
    pub fn with_token(mut self, token: Option<ServiceToken>) -> RoleConfig {
        self.token = token;
        self
    }
}

/// Which participant a process serves.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Seats: holds, confirmations, releases.
    Inventory,
    /// Card payments: authorize, capture, void or refund.
    Payments,
    /// Loyalty accounts and miles.
    Loyalty,
}

impl Role {
    /// The role's lowercase name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Inventory => "inventory",
            Role::Payments => "payments",
            Role::Loyalty => "loyalty",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serves `role`'s participant with no credential and the default limits:
/// [`serve_role_with`] with [`RoleConfig::new`], so only on loopback.
pub async fn serve_role(
    role: Role,
    listener: TcpListener,
    db: sled::Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_role_with(RoleConfig::new(role), listener, db, shutdown).await
}

/// Serves the participant of `config.role`, backed by its local sled
/// implementation on `db`, on `listener` until `shutdown` completes; then
/// stops accepting, lets open connections finish their current request (up
/// to `config.drain`) and returns.
///
/// Fails when the participant cannot be opened on `db`, or when `listener`
/// is not on a loopback address and `config.token` is `None`: a participant
/// reachable from other machines must authenticate its callers.
pub async fn serve_role_with(
    config: RoleConfig,
    listener: TcpListener,
    db: sled::Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let role = config.role;
    let addr = listener.local_addr()?;
    if config.token.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve the {role} participant on {addr} without a service token \
                 (set {} or pass --service-token-file), or listen on a loopback address",
                crate::service_token::SERVICE_TOKEN_ENV
            ),
        ));
    }
    if config.token.is_none() {
        tracing::warn!(role = %role, %addr, "participant serving without a service token (loopback only)");
    }
    let participant = match role {
        Role::Inventory => Participant::Inventory(Arc::new(
            LocalInventory::open(&db).map_err(std::io::Error::other)?,
        )),
        Role::Payments => Participant::Payments(Arc::new(
            match &config.data_dir {
                Some(dir) => LocalPayments::open_in(&db, dir),
                None => LocalPayments::open(&db),
            }
            .map_err(std::io::Error::other)?,
        )),
        Role::Loyalty => Participant::Loyalty(Arc::new(
            LocalLoyalty::open(&db).map_err(std::io::Error::other)?,
        )),
    };
    tracing::info!(role = %role, %addr, "participant serving");
    let server = Arc::new(RoleServer {
        participant,
        token: config.token.clone(),
        max_body_bytes: config.max_body_bytes,
        body_read_timeout: config.body_read_timeout,
    });
    let handler = move |req: Request<Incoming>| handle(server.clone(), req);
    let tracker = Arc::new(ConnTracker::default());
    let connections = accept_loop(listener, config.limits, tracker, handler, shutdown).await;
    connections.drain(config.drain).await;
    tracing::info!(role = %role, "participant stopped");
    Ok(())
}

/// What a role server's handler shares.
struct RoleServer {
    participant: Participant,
    token: Option<ServiceToken>,
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

/// The participant behind a role server.
enum Participant {
    Inventory(Arc<dyn Inventory>),
    Payments(Arc<dyn Payments>),
    Loyalty(Arc<dyn Loyalty>),
}

impl Participant {
    fn role(&self) -> Role {
        match self {
            Participant::Inventory(_) => Role::Inventory,
            Participant::Payments(_) => Role::Payments,
            Participant::Loyalty(_) => Role::Loyalty,
        }
    }

    /// A malformed-request reply in this participant's error vocabulary.
    fn refuse(&self, status: StatusCode, reason: String) -> Response<Body> {
        match self {
            Participant::Inventory(_) => {
                json_response(status, &InventoryError::InvalidRequest { reason })
            }
            Participant::Payments(_) => {
                json_response(status, &PaymentError::InvalidRequest { reason })
            }
            Participant::Loyalty(_) => {
                json_response(status, &LoyaltyError::InvalidRequest { reason })
            }
        }
    }
}

/// `401` with a JSON body outside every participant's error vocabulary,
/// so that a client never takes it for a domain answer.
fn unauthorized() -> Response<Body> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "this call needs the service's bearer token",
            "code": "unauthorized",
        }),
    );
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn handle(server: Arc<RoleServer>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let role = server.participant.role();
    let health = parts.method == Method::GET && parts.uri.path() == "/healthz";
    if let Some(token) = &server.token {
        if !health && !token.verify(&parts.headers) {
            tracing::warn!(%role, method = %parts.method, path = parts.uri.path(),
                "participant call refused: missing or wrong service token");
            return unauthorized();
        }
    }
    let body = match read_limited(
        &parts.headers,
        body,
        server.max_body_bytes,
        server.body_read_timeout,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(e) => {
            let status = match e {
                ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            };
            return server.participant.refuse(status, e.to_string());
        }
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    // The call's span: a child of the caller's (its `traceparent`, feature
    // `otlp`), so one booking is one trace across the processes. Only the
    // path's first segment: later ones carry keys and card tokens.
    let span = tracing::info_span!(
        "participant_call",
        role = %role,
        method = %method,
        resource = path.split('/').nth(1).unwrap_or(""),
    );
    crate::trace_context::adopt(&span, &parts.headers);
    // A task of its own, so that a client hanging up mid-call cannot cancel a
    // participant call halfway between its transaction and its flush.
    let task = tokio::spawn(
        async move {
            let participant = &server.participant;
            let call = match Call::parse(&parts, body) {
                Ok(call) => call,
                Err(reason) => return participant.refuse(StatusCode::BAD_REQUEST, reason),
            };
            let result = match participant {
                Participant::Inventory(p) => reply(inventory(&**p, &call).await),
                Participant::Payments(p) => reply(payments(&**p, &call).await),
                Participant::Loyalty(p) => reply(loyalty(&**p, &call).await),
            };
            match result {
                Some(resp) => resp,
                None if call.method == Method::GET && call.segments == ["healthz"] => {
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({"status": "ok", "role": role.as_str()}),
                    )
                }
                None => participant.refuse(
                    StatusCode::NOT_FOUND,
                    format!("no route for {} {}", call.method, call.path),
                ),
            }
        }
        .instrument(span),
    );
    let resp = match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(%role, error = %e, "participant call panicked");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "internal error"}),
            )
        }
    };
    tracing::debug!(%role, %method, %path, status = resp.status().as_u16(), "participant call");
    resp
}

/// A request, decoded: method, path segments, query pairs, key and body.
struct Call {
    method: Method,
    path: String,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    key: Option<String>,
    body: Bytes,
}

impl Call {
    fn parse(parts: &Parts, body: Bytes) -> Result<Call, String> {
        let path = parts.uri.path().to_string();
        let segments = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| decode_component(s).ok_or_else(|| format!("bad percent-encoding in {s:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut query = Vec::new();
        for pair in parts.uri.query().unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || format!("bad percent-encoding in query {pair:?}");
            query.push((
                decode_component(k).ok_or_else(bad)?,
                decode_component(v).ok_or_else(bad)?,
            ));
        }
        let key = match parts.headers.get(IDEMPOTENCY_KEY_HEADER) {
            None => None,
            Some(raw) => {
                let text = raw
                    .to_str()
                    .map_err(|_| "Idempotency-Key must be visible ASCII".to_string())?;
                Some(
                    decode_component(text)
                        .ok_or_else(|| "Idempotency-Key has a bad percent-encoding".to_string())?,
                )
            }
        };
        Ok(Call {
            method: parts.method.clone(),
            path,
            segments,
            query,
            key,
            body,
        })
    }

    fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    fn key(&self) -> Result<&str, String> {
        match self.key.as_deref() {
            Some(k) if !k.is_empty() => Ok(k),
            _ => Err("this call needs an Idempotency-Key header".into()),
        }
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("bad JSON body: {e}"))
    }

    fn param(&self, name: &str) -> Result<&str, String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("missing query parameter {name:?}"))
    }

    /// The `flight`, `date` and `cabin` query parameters.
    fn bucket(&self) -> Result<(FlightId, NaiveDate, Cabin), String> {
        let flight = FlightId(self.param("flight")?.to_string());
        let date = self
            .param("date")?
            .parse::<NaiveDate>()
            .map_err(|e| format!("bad date (want YYYY-MM-DD): {e}"))?;
        let cabin = self
            .param("cabin")?
            .parse::<Cabin>()
            .map_err(|e| e.to_string())?;
        Ok((flight, date, cabin))
    }
}

/// Why a call produced no success reply.
enum Fail<E> {
    /// Malformed request: `400` with the participant's `InvalidRequest`.
    BadRequest(String),
    /// The participant's own answer.
    Domain(E),
}

impl<E> From<E> for Fail<E> {
    fn from(e: E) -> Self {
        Fail::Domain(e)
    }
}

/// Turns a routing result into a response: `None` when no route matched.
fn reply<E: WireError>(result: Option<Result<Response<Body>, Fail<E>>>) -> Option<Response<Body>> {
    Some(match result? {
        Ok(resp) => resp,
        Err(Fail::BadRequest(reason)) => {
            json_response(StatusCode::BAD_REQUEST, &E::invalid(reason))
        }
        Err(Fail::Domain(e)) => {
            if e.retryable() {
                tracing::warn!(error = %e, "participant call failed retryably");
            }
            json_response(e.status(), &e)
        }
    })
}

/// What a role server needs from a participant's error enum.
trait WireError: Serialize + std::fmt::Display + Sized {
    fn status(&self) -> StatusCode;
    fn retryable(&self) -> bool;
    fn invalid(reason: String) -> Self;
}

impl WireError for InventoryError {
    fn status(&self) -> StatusCode {
        use InventoryError as E;
        match self {
            E::Storage { .. } | E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::InvalidSeats { .. } | E::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::NotEnoughSeats { .. }
            | E::UnknownHold { .. }
            | E::AlreadyCompensated { .. }
            | E::KeyReused { .. }
            | E::CapacityBelowBooked { .. } => StatusCode::CONFLICT,
        }
    }
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn invalid(reason: String) -> Self {
        InventoryError::InvalidRequest { reason }
    }
}

impl WireError for PaymentError {
    fn status(&self) -> StatusCode {
        use PaymentError as E;
        match self {
            E::Storage { .. } | E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::Declined { .. } | E::InvalidCard { .. } | E::InvalidRequest { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::UnknownPayment { .. }
            | E::AlreadyCompensated { .. }
            | E::KeyReused { .. }
            | E::UnknownToken
            | E::CardUnreadable { .. } => StatusCode::CONFLICT,
        }
    }
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn invalid(reason: String) -> Self {
        PaymentError::InvalidRequest { reason }
    }
}

impl WireError for LoyaltyError {
    fn status(&self) -> StatusCode {
        use LoyaltyError as E;
        match self {
            E::Storage { .. } | E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::InvalidAmount { .. } | E::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::UnknownAccount { .. }
            | E::InsufficientMiles { .. }
            | E::EmailInUse { .. }
            | E::AlreadyCompensated { .. }
            | E::KeyReused { .. } => StatusCode::CONFLICT,
        }
    }
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn invalid(reason: String) -> Self {
        LoyaltyError::InvalidRequest { reason }
    }
}

type Routed<E> = Option<Result<Response<Body>, Fail<E>>>;

fn ok<T: Serialize, E>(value: &T) -> Result<Response<Body>, Fail<E>> {
    Ok(json_response(StatusCode::OK, value))
}

/// Runs `f` as a routed call, turning a malformed-request string into
/// [`Fail::BadRequest`].
macro_rules! bad {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reason) => return Some(Err(Fail::BadRequest(reason))),
        }
    };
}

/// Runs a participant call and answers with its value.
macro_rules! answer {
    ($e:expr) => {
        Some(match $e.await {
            Ok(v) => ok(&v),
            Err(e) => Err(Fail::Domain(e)),
        })
    };
}

/// Body of `PUT /seats/capacity`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CapacityBody {
    pub(crate) flight: FlightId,
    pub(crate) date: NaiveDate,
    pub(crate) cabin: Cabin,
    pub(crate) seats: u32,
}

/// Body of `POST /entries/award`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AwardBody {
    pub(crate) account_id: AccountId,
    pub(crate) amount: Money,
}

/// Body of `POST /entries/redeem`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RedeemBody {
    pub(crate) account_id: AccountId,
    pub(crate) miles: u64,
}

async fn inventory(p: &dyn Inventory, call: &Call) -> Routed<InventoryError> {
    match (&call.method, call.segments().as_slice()) {
        (&Method::POST, ["holds"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.hold(key, &request))
        }
        (&Method::POST, ["holds", "confirm"]) => answer!(p.confirm(bad!(call.key()))),
        (&Method::POST, ["holds", "release"]) => answer!(p.release(bad!(call.key()))),
        (&Method::GET, ["holds"]) => answer!(p.all_holds()),
        (&Method::GET, ["holds", key]) => answer!(p.hold_status(key)),
        (&Method::GET, ["seats"]) => {
            let (flight, date, cabin) = bad!(call.bucket());
            answer!(p.totals(&flight, date, cabin))
        }
        (&Method::GET, ["seats", "left"]) => {
            let (flight, date, cabin) = bad!(call.bucket());
            answer!(p.seats_left(&flight, date, cabin))
        }
        (&Method::PUT, ["seats", "capacity"]) => {
            let body: CapacityBody = bad!(call.json());
            answer!(p.set_capacity(&body.flight, body.date, body.cabin, body.seats))
        }
        _ => None,
    }
}

async fn payments(p: &dyn Payments, call: &Call) -> Routed<PaymentError> {
    match (&call.method, call.segments().as_slice()) {
        (&Method::POST, ["payments"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.authorize(key, &request))
        }
        (&Method::POST, ["payments", "capture"]) => answer!(p.capture(bad!(call.key()))),
        (&Method::POST, ["payments", "confirm"]) => {
            answer!(p.confirm_authorization(bad!(call.key())))
        }
        (&Method::POST, ["payments", "void"]) => answer!(p.void_or_refund(bad!(call.key()))),
        (&Method::POST, ["payments", "refund"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.refund(key, &request))
        }
        (&Method::GET, ["payments"]) => answer!(p.all_payments()),
        (&Method::GET, ["payments", key]) => answer!(p.get(key)),
        (&Method::GET, ["customers", email, "payments"]) => answer!(p.history(email)),
        (&Method::POST, ["payments", "tokens"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.tokenize(key, &request))
        }
        (&Method::POST, ["payments", "tokens", "authorize"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.authorize_token(key, &request))
        }
        (&Method::POST, ["payments", "tokens", "forget"]) => {
            answer!(p.forget_card(bad!(call.key())))
        }
        (&Method::GET, ["payments", "tokens", "count"]) => answer!(p.cards_held()),
        _ => None,
    }
}

async fn loyalty(p: &dyn Loyalty, call: &Call) -> Routed<LoyaltyError> {
    match (&call.method, call.segments().as_slice()) {
        (&Method::POST, ["accounts"]) => {
            let key = bad!(call.key());
            let request = bad!(call.json());
            answer!(p.create_account(key, &request))
        }
        (&Method::GET, ["accounts"]) => answer!(p.all_accounts()),
        (&Method::GET, ["accounts", id]) => answer!(p.account(&AccountId(id.to_string()))),
        (&Method::GET, ["accounts", id, "entries"]) => {
            answer!(p.history(&AccountId(id.to_string())))
        }
        (&Method::GET, ["emails", email, "account"]) => answer!(p.account_by_email(email)),
        (&Method::POST, ["entries", "award"]) => {
            let key = bad!(call.key());
            let body: AwardBody = bad!(call.json());
            answer!(p.award(key, &body.account_id, &body.amount))
        }
        (&Method::POST, ["entries", "redeem"]) => {
            let key = bad!(call.key());
            let body: RedeemBody = bad!(call.json());
            answer!(p.redeem(key, &body.account_id, body.miles))
        }
        (&Method::POST, ["entries", "reverse"]) => answer!(p.reverse(bad!(call.key()))),
        (&Method::GET, ["entries", key]) => answer!(p.entry(key)),
        _ => None,
    }
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a reply");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"could not serialize the reply"}"#.to_vec(),
            )
        }
    };
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Percent-encodes `text` for a path segment, query value or header: every
/// byte but ASCII letters, digits and `-._~:@!$'()*,;` becomes `%XX`.
pub(crate) fn encode_component(text: &str) -> String {
    const KEEP: &[u8] = b"-._~:@!$'()*,;";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || KEEP.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_component`] (any `%XX` is decoded; `+` stays `+`).
/// `None` for a bad escape or a result that is not UTF-8.
pub(crate) fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn components_round_trip() {
        for text in [
            "abc",
            "0192:reserve_seat",
            "a b/c?d=e&f%g+h",
            "ünï/cödé",
            "",
            "ada+tag@example.com",
        ] {
            let enc = encode_component(text);
            assert!(enc.bytes().all(|b| b.is_ascii_graphic()), "{enc}");
            assert!(!enc.contains('/') && !enc.contains('?') && !enc.contains('&'));
            assert_eq!(decode_component(&enc).as_deref(), Some(text));
        }
        assert_eq!(encode_component("s1:reserve_seat"), "s1:reserve_seat");
        assert_eq!(decode_component("%zz"), None);
        assert_eq!(decode_component("%4"), None);
        assert_eq!(decode_component("%FF"), None, "not UTF-8");
    }

    #[test]
    fn statuses_follow_rejection_and_retry() {
        let retryable = [
            InventoryError::Storage {
                message: "x".into(),
            }
            .status(),
            PaymentError::Unavailable {
                message: "x".into(),
            }
            .status(),
            LoyaltyError::Storage {
                message: "x".into(),
            }
            .status(),
        ];
        assert!(retryable
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
        let rejections = [
            InventoryError::NotEnoughSeats {
                requested: 2,
                available: 1,
            }
            .status(),
            InventoryError::InvalidSeats { seats: 0 }.status(),
            PaymentError::Declined {
                reason: booking_domain::payments::DeclineReason::CardDeclined,
            }
            .status(),
            LoyaltyError::InsufficientMiles {
                balance: 0,
                requested: 1,
            }
            .status(),
        ];
        assert!(rejections
            .iter()
            .all(|s| *s == StatusCode::CONFLICT || *s == StatusCode::UNPROCESSABLE_ENTITY));
    }

    /// Starts `role` on an ephemeral loopback port; returns its address, the
    /// stop switch and the server task.
    async fn start(
        role: Role,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_role(role, listener, db, async move {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    /// Sends one raw request; returns the status and the JSON body.
    async fn send(
        addr: std::net::SocketAddr,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, serde_json::Value) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(key) = key {
            req = req.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        assert_eq!(
            resp.headers().get(CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn health_routes_and_bad_requests() {
        let (addr, stop, task) = start(Role::Inventory).await;
        let (status, body) = send(addr, Method::GET, "/healthz", None, b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "role": "inventory"})
        );

        let (status, body) = send(addr, Method::GET, "/nowhere", None, b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["invalid_request"]["reason"]
            .as_str()
            .unwrap()
            .contains("no route for GET /nowhere"));
        // A route of another role is unknown here.
        let (status, _) = send(addr, Method::GET, "/payments", None, b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let hold = br#"{"flight":"AA1-1","date":"2030-01-02","cabin":"economy","seats":1}"#;
        let (status, body) = send(addr, Method::POST, "/holds", None, hold).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "no key: {body}");
        assert!(body["invalid_request"]["reason"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
        let (status, _) = send(addr, Method::POST, "/holds", Some("k"), b"{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = send(addr, Method::GET, "/holds/%zz", None, b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = send(
            addr,
            Method::GET,
            "/seats?flight=AA1-1&date=tomorrow&cabin=economy",
            None,
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = send(addr, Method::POST, "/holds", Some("k"), &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        // Domain answers carry the enum and the documented status.
        let (status, body) = send(addr, Method::POST, "/holds", Some("k%201"), hold).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["key"], "k 1", "the header key is percent-decoded");
        assert_eq!(body["state"], "held");
        let (status, body) = send(addr, Method::POST, "/holds/confirm", Some("none"), b"").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body, serde_json::json!({"unknown_hold": {"key": "none"}}));
        let zero = br#"{"flight":"AA1-1","date":"2030-01-02","cabin":"economy","seats":0}"#;
        let (status, body) = send(addr, Method::POST, "/holds", Some("z"), zero).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, serde_json::json!({"invalid_seats": {"seats": 0}}));

        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        for role in [Role::Inventory, Role::Payments, Role::Loyalty] {
            let (addr, stop, task) = start(role).await;
            let (status, body) = send(addr, Method::GET, "/healthz", None, b"").await;
            assert_eq!(
                (status, body["role"].as_str()),
                (StatusCode::OK, Some(role.as_str()))
            );
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("server stops promptly")
                .unwrap()
                .unwrap();
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "{role}: listener closed"
            );
        }
    }
}
