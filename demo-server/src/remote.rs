//! HTTP clients for the booking participants: [`HttpInventory`],
//! [`HttpPayments`] and [`HttpLoyalty`] implement the domain traits against a
//! role server ([`crate::roles`]), so the booking saga runs unchanged across
//! processes.
//!
//! Each call has a deadline ([`DEFAULT_TIMEOUT`] unless changed with
//! `with_timeout`) and sends the saga's idempotency key in the
//! `Idempotency-Key` header, so repeating a call after a timeout or a
//! restart of the participant applies its effect once. Errors come back
//! typed: an error body the participant sent decodes to the same variant (a
//! rejection stays a rejection), while a refused connection, a timeout, a
//! reset, a `5xx` without a readable body or an unreadable success reply
//! becomes the participant's retryable `Unavailable` variant, because the
//! outcome is unknown and a retry with the same key is safe. A `4xx` without
//! a readable body (a wrong URL, a version mismatch) becomes
//! `InvalidRequest`: retrying would not change it.

use crate::roles::{encode_component, AwardBody, CapacityBody, RedeemBody, IDEMPOTENCY_KEY_HEADER};
use crate::service_token::ServiceToken;
use crate::tls::TlsClient;
use async_trait::async_trait;
use booking_domain::inventory::{
    Hold, HoldLookup, HoldRequest, Inventory, InventoryError, ReleaseOutcome, SeatTotals,
};
use booking_domain::loyalty::{
    AccountId, CreateAccount, EntryLookup, Loyalty, LoyaltyAccount, LoyaltyEntry, LoyaltyError,
    ReverseOutcome,
};
use booking_domain::payments::{
    AuthorizeRequest, PaymentError, PaymentLookup, PaymentRecord, Payments, VoidOutcome,
};
use booking_domain::{Cabin, FlightId, Money};
use bytes::Bytes;
use chrono::NaiveDate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// How long one call may take, connection included, unless changed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest reply body a client reads, in bytes (lists of holds or payments
/// can be long; anything beyond this is treated as an unreadable reply).
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A participant base URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid participant URL {url:?}: {reason}")]
pub struct InvalidBaseUrl {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// How a call went wrong, before it is put in the participant's vocabulary.
#[derive(Debug)]
enum CallError<E> {
    /// The participant answered with its own error.
    Domain(E),
    /// No usable answer; the effect may or may not have happened.
    Unavailable(String),
    /// A definite refusal without a readable error body.
    Refused(String),
}

/// The shared HTTP plumbing of the three clients.
#[derive(Clone)]
struct Transport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority[/prefix]`, without a trailing slash.
    base: String,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` on every call.
    token: Option<ServiceToken>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    fn new(base_url: &str, tls: Option<&TlsClient>) -> Result<Self, InvalidBaseUrl> {
        let invalid = |reason: &str| InvalidBaseUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = base_url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") if tls.is_some() => "https",
            Some("https") => {
                return Err(invalid(
                    "https:// needs the certificate to trust (--participant-ca FILE)",
                ))
            }
            Some(_) => return Err(invalid("only http:// and https:// are supported")),
            None => return Err(invalid("missing scheme, e.g. http://127.0.0.1:7001")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("missing host and port"))?;
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query"));
        }
        let base = format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        connector.enforce_http(false);
        let tls = tls.cloned().unwrap_or_else(TlsClient::trusting_nothing);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls.0).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Transport {
            client,
            base,
            timeout: DEFAULT_TIMEOUT,
            token: None,
        })
    }

    /// Sends one call and decodes its reply as `T`, or its error as `E`.
    async fn call<T, E>(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<T, CallError<E>>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let url = format!("{}{path}", self.base);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(key) = key {
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, encode_component(key));
        }
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, token.header_value());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // One booking is one trace across the processes (feature `otlp`).
        if let Some(headers) = builder.headers_mut() {
            crate::trace_context::inject(headers);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::Refused(format!("could not build {method} {url}: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{method} {url} failed: {}", error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{method} {url}: reply body unreadable: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts.status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                tracing::warn!(%method, %url, timeout = ?self.timeout, "participant call timed out");
                return Err(CallError::Unavailable(format!(
                    "{method} {url}: no reply within {:?} (outcome unknown)",
                    self.timeout
                )));
            }
            Ok(Err(message)) => {
                tracing::warn!(%method, %url, error = %message, "participant unreachable");
                return Err(CallError::Unavailable(message));
            }
            Ok(Ok(reply)) => reply,
        };
        tracing::debug!(%method, %url, status = status.as_u16(), "participant replied");
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CallError::Unavailable(format!(
                    "{method} {url}: unreadable {status} reply (outcome unknown): {e}"
                ))
            });
        }
        if let Ok(e) = serde_json::from_slice::<E>(&bytes) {
            return Err(CallError::Domain(e));
        }
        let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let message = format!("{method} {url}: {status} {snippet}");
        if status == StatusCode::UNAUTHORIZED {
            // A configuration error the operator can fix (the token): keep
            // retrying rather than turn it into a rejection.
            tracing::error!(%method, %url, "participant refused our service token");
            return Err(CallError::Unavailable(message));
        }
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(CallError::Unavailable(message))
        } else {
            Err(CallError::Refused(message))
        }
    }

    async fn get<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, CallError<E>> {
        self.call(Method::GET, path, None, None).await
    }

    async fn post<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, CallError<E>> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CallError::Refused(format!("could not encode the request: {e}")))?;
        self.call(Method::POST, path, Some(key), body).await
    }
}

/// `source: source: ...`, because hyper's own message ("client error
/// (Connect)") hides the cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `?flight=..&date=..&cabin=..` for the seat queries.
fn bucket_query(flight: &FlightId, date: NaiveDate, cabin: Cabin) -> String {
    format!(
        "flight={}&date={date}&cabin={}",
        encode_component(&flight.0),
        cabin.as_str()
    )
}

macro_rules! client_type {
    ($(#[$doc:meta])* $name:ident, $err:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            transport: Transport,
        }

        impl $name {
            /// A client of the role server at `base_url`, e.g.
            /// `http://127.0.0.1:7001`. Nothing is contacted until the first
            /// call.
            pub fn new(base_url: &str) -> Result<Self, InvalidBaseUrl> {
                Ok($name {
                    transport: Transport::new(base_url, None)?,
                })
            }

            /// Like `new`, also accepting an `https://` URL whose server
            /// certificate `tls` trusts.
            pub fn with_tls(base_url: &str, tls: &TlsClient) -> Result<Self, InvalidBaseUrl> {
                Ok($name {
                    transport: Transport::new(base_url, Some(tls))?,
                })
            }

            /// Sets how long one call may take, connection included.
            pub fn with_timeout(mut self, timeout: Duration) -> Self {
                self.transport.timeout = timeout;
                self
            }

            /// Sends `token` as `Authorization: Bearer` on every call.
            pub fn with_token(mut self, token: Option<ServiceToken>) -> Self {
                self.transport.token = token;
                self
            }

            /// The base URL calls go to, without a trailing slash.
            pub fn base_url(&self) -> &str {
                &self.transport.base
            }
        }

        impl From<CallError<$err>> for $err {
            fn from(e: CallError<$err>) -> Self {
                match e {
                    CallError::Domain(e) => e,
                    CallError::Unavailable(message) => $err::Unavailable { message },
                    CallError::Refused(reason) => $err::InvalidRequest { reason },
                }
            }
        }
    };
}

client_type!(
    /// [`Inventory`] over HTTP, against a `--role inventory` server.
    HttpInventory,
    InventoryError
);
client_type!(
    /// [`Payments`] over HTTP, against a `--role payments` server.
    HttpPayments,
    PaymentError
);
client_type!(
    /// [`Loyalty`] over HTTP, against a `--role loyalty` server.
    HttpLoyalty,
    LoyaltyError
);

fn path(prefix: &str, component: &str, suffix: &str) -> String {
    format!("{prefix}{}{suffix}", encode_component(component))
}

const NO_BODY: Option<&()> = None;

#[async_trait]
impl Inventory for HttpInventory {
    async fn hold(&self, key: &str, request: &HoldRequest) -> Result<Hold, InventoryError> {
        Ok(self.transport.post("/holds", key, Some(request)).await?)
    }

    async fn confirm(&self, key: &str) -> Result<Hold, InventoryError> {
        Ok(self.transport.post("/holds/confirm", key, NO_BODY).await?)
    }

    async fn release(&self, key: &str) -> Result<ReleaseOutcome, InventoryError> {
        Ok(self.transport.post("/holds/release", key, NO_BODY).await?)
    }

    async fn seats_left(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<u32, InventoryError> {
        let path = format!("/seats/left?{}", bucket_query(flight, date, cabin));
        Ok(self.transport.get(&path).await?)
    }

    async fn totals(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<SeatTotals, InventoryError> {
        let path = format!("/seats?{}", bucket_query(flight, date, cabin));
        Ok(self.transport.get(&path).await?)
    }

    async fn hold_status(&self, key: &str) -> Result<HoldLookup, InventoryError> {
        Ok(self.transport.get(&path("/holds/", key, "")).await?)
    }

    async fn set_capacity(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
        seats: u32,
    ) -> Result<SeatTotals, InventoryError> {
        let body = serde_json::to_vec(&CapacityBody {
            flight: flight.clone(),
            date,
            cabin,
            seats,
        })
        .map_err(|e| InventoryError::InvalidRequest {
            reason: e.to_string(),
        })?;
        Ok(self
            .transport
            .call(Method::PUT, "/seats/capacity", None, Some(body))
            .await?)
    }

    async fn all_holds(&self) -> Result<Vec<Hold>, InventoryError> {
        Ok(self.transport.get("/holds").await?)
    }
}

#[async_trait]
impl Payments for HttpPayments {
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        Ok(self.transport.post("/payments", key, Some(request)).await?)
    }

    async fn capture(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        Ok(self
            .transport
            .post("/payments/capture", key, NO_BODY)
            .await?)
    }

    async fn void_or_refund(&self, key: &str) -> Result<VoidOutcome, PaymentError> {
        Ok(self.transport.post("/payments/void", key, NO_BODY).await?)
    }

    async fn get(&self, key: &str) -> Result<PaymentLookup, PaymentError> {
        Ok(self.transport.get(&path("/payments/", key, "")).await?)
    }

    async fn history(&self, customer_email: &str) -> Result<Vec<PaymentRecord>, PaymentError> {
        let path = path("/customers/", customer_email, "/payments");
        Ok(self.transport.get(&path).await?)
    }

    async fn all_payments(&self) -> Result<Vec<PaymentRecord>, PaymentError> {
        Ok(self.transport.get("/payments").await?)
    }

    async fn refund(
        &self,
        key: &str,
        request: &booking_domain::payments::RefundRequest,
    ) -> Result<booking_domain::payments::RefundRecord, PaymentError> {
        Ok(self
            .transport
            .post("/payments/refund", key, Some(request))
            .await?)
    }

    async fn tokenize(
        &self,
        key: &str,
        request: &booking_domain::payments::TokenizeRequest,
    ) -> Result<booking_domain::payments::CardToken, PaymentError> {
        Ok(self
            .transport
            .post("/payments/tokens", key, Some(request))
            .await?)
    }

    async fn authorize_token(
        &self,
        key: &str,
        request: &booking_domain::payments::TokenAuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        Ok(self
            .transport
            .post("/payments/tokens/authorize", key, Some(request))
            .await?)
    }

    async fn confirm_authorization(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        Ok(self
            .transport
            .post("/payments/confirm", key, NO_BODY)
            .await?)
    }

    async fn forget_card(&self, token: &str) -> Result<(), PaymentError> {
        Ok(self
            .transport
            .post("/payments/tokens/forget", token, NO_BODY)
            .await?)
    }

    async fn cards_held(&self) -> Result<u64, PaymentError> {
        Ok(self.transport.get("/payments/tokens/count").await?)
    }
}

#[async_trait]
impl Loyalty for HttpLoyalty {
    async fn create_account(
        &self,
        key: &str,
        request: &CreateAccount,
    ) -> Result<LoyaltyAccount, LoyaltyError> {
        Ok(self.transport.post("/accounts", key, Some(request)).await?)
    }

    async fn account(&self, id: &AccountId) -> Result<LoyaltyAccount, LoyaltyError> {
        Ok(self.transport.get(&path("/accounts/", &id.0, "")).await?)
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<LoyaltyAccount>, LoyaltyError> {
        Ok(self
            .transport
            .get(&path("/emails/", email, "/account"))
            .await?)
    }

    async fn award(
        &self,
        key: &str,
        account_id: &AccountId,
        amount: &Money,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        let body = AwardBody {
            account_id: account_id.clone(),
            amount: amount.clone(),
        };
        Ok(self
            .transport
            .post("/entries/award", key, Some(&body))
            .await?)
    }

    async fn redeem(
        &self,
        key: &str,
        account_id: &AccountId,
        miles: u64,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        let body = RedeemBody {
            account_id: account_id.clone(),
            miles,
        };
        Ok(self
            .transport
            .post("/entries/redeem", key, Some(&body))
            .await?)
    }

    async fn reverse(&self, key: &str) -> Result<ReverseOutcome, LoyaltyError> {
        Ok(self
            .transport
            .post("/entries/reverse", key, NO_BODY)
            .await?)
    }

    async fn entry(&self, key: &str) -> Result<EntryLookup, LoyaltyError> {
        Ok(self.transport.get(&path("/entries/", key, "")).await?)
    }

    async fn history(&self, account_id: &AccountId) -> Result<Vec<LoyaltyEntry>, LoyaltyError> {
        let path = path("/accounts/", &account_id.0, "/entries");
        Ok(self.transport.get(&path).await?)
    }

    async fn all_accounts(&self) -> Result<Vec<LoyaltyAccount>, LoyaltyError> {
        Ok(self.transport.get("/accounts").await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::{serve_role, Role};
    use booking_domain::inventory::HoldState;
    use booking_domain::loyalty::{EntryKind, EntryState};
    use booking_domain::payments::{CardDetails, DeclineReason, PaymentStatus};
    use booking_domain::Currency;
    use std::net::SocketAddr;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// A role server on an ephemeral loopback port, stopped on drop.
    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<std::io::Result<()>>>,
    }

    impl Server {
        async fn start(role: Role) -> Server {
            let db = sled::Config::new().temporary(true).open().unwrap();
            Self::start_on(role, db).await
        }

        async fn start_on(role: Role, db: sled::Db) -> Server {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_role(role, listener, db, async move {
                let _ = stopped.await;
            }));
            Server {
                addr,
                stop: Some(stop),
                task: Some(task),
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.take().unwrap().await.unwrap().unwrap();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }

    /// A loopback URL nobody listens on.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2030, 5, 17).unwrap()
    }

    fn hold_request(seats: u32) -> HoldRequest {
        HoldRequest {
            flight: FlightId("AA100-3".into()),
            date: date(),
            cabin: Cabin::Economy,
            seats,
        }
    }

    fn card(number: &str) -> CardDetails {
        CardDetails {
            number: number.into(),
            exp_month: 12,
            exp_year: 2030,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        }
    }

    fn authorize_request(number: &str, minor: i64) -> AuthorizeRequest {
        AuthorizeRequest {
            customer_email: "ada@example.com".into(),
            card: card(number),
            amount: Money::new(minor, Currency::usd()),
        }
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(HttpInventory::new("127.0.0.1:1").is_err(), "no scheme");
        assert!(HttpInventory::new("https://127.0.0.1:1").is_err());
        assert!(HttpInventory::new("http://").is_err());
        assert!(HttpInventory::new("http://h:1/?q=1").is_err());
        let c = HttpPayments::new("http://127.0.0.1:7001/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:7001");
        let c = HttpLoyalty::new("http://localhost:7003/svc/").unwrap();
        assert_eq!(c.base_url(), "http://localhost:7003/svc");
    }

    #[tokio::test]
    async fn inventory_round_trips_every_method() {
        let server = Server::start(Role::Inventory).await;
        let inv = HttpInventory::new(&server.url()).unwrap();
        let (flight, cabin) = (FlightId("AA100-3".into()), Cabin::Economy);

        let totals = inv.set_capacity(&flight, date(), cabin, 5).await.unwrap();
        assert_eq!(totals.capacity, 5);
        let key = "saga 1:reserve/seat?&%"; // survives the path and the header
        let hold = inv.hold(key, &hold_request(2)).await.unwrap();
        assert_eq!(
            (hold.key.as_str(), hold.seats, hold.state),
            (key, 2, HoldState::Held)
        );
        assert_eq!(inv.seats_left(&flight, date(), cabin).await.unwrap(), 3);
        assert_eq!(
            inv.hold_status(key).await.unwrap(),
            HoldLookup::Hold(hold.clone())
        );
        let confirmed = inv.confirm(key).await.unwrap();
        assert_eq!(confirmed.state, HoldState::Confirmed);
        let totals = inv.totals(&flight, date(), cabin).await.unwrap();
        assert_eq!((totals.capacity, totals.held, totals.confirmed), (5, 0, 2));
        assert_eq!(inv.all_holds().await.unwrap(), vec![confirmed.clone()]);
        let released = inv.release(key).await.unwrap();
        assert!(matches!(released, ReleaseOutcome::Released(h) if h.state == HoldState::Released));
        assert_eq!(inv.seats_left(&flight, date(), cabin).await.unwrap(), 5);
        assert_eq!(
            inv.release("never").await.unwrap(),
            ReleaseOutcome::NothingHeld
        );
        assert_eq!(
            inv.hold_status("never").await.unwrap(),
            HoldLookup::Tombstone
        );
        assert_eq!(inv.hold_status("other").await.unwrap(), HoldLookup::Unknown);
        server.stop().await;
    }

    #[tokio::test]
    async fn payments_round_trip_every_method() {
        let server = Server::start(Role::Payments).await;
        let pay = HttpPayments::new(&server.url()).unwrap();

        let rec = pay
            .authorize("p1", &authorize_request("4242 4242 4242 4242", 12_345))
            .await
            .unwrap();
        assert_eq!(
            (rec.status, rec.last4.as_str()),
            (PaymentStatus::Authorized, "4242")
        );
        assert_eq!(rec.amount, Money::new(12_345, Currency::usd()));
        assert_eq!(
            pay.get("p1").await.unwrap(),
            PaymentLookup::Payment(rec.clone())
        );
        let captured = pay.capture("p1").await.unwrap();
        assert_eq!(captured.status, PaymentStatus::Captured);
        let history = pay.history("ADA@example.com").await.unwrap();
        assert_eq!(history, vec![captured.clone()]);
        assert_eq!(pay.all_payments().await.unwrap(), vec![captured]);
        let refunded = pay.void_or_refund("p1").await.unwrap();
        assert!(
            matches!(refunded, VoidOutcome::Refunded(r) if r.status == PaymentStatus::Refunded)
        );
        assert_eq!(
            pay.void_or_refund("p2").await.unwrap(),
            VoidOutcome::NothingToUndo
        );
        assert_eq!(pay.get("p2").await.unwrap(), PaymentLookup::Tombstone);
        assert_eq!(pay.get("p3").await.unwrap(), PaymentLookup::Unknown);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_card_is_tokenized_and_authorized_by_token_over_http() {
        use booking_domain::payments::{TokenAuthorizeRequest, TokenizeRequest};
        let server = Server::start(Role::Payments).await;
        let pay = HttpPayments::new(&server.url()).unwrap();
        let request = TokenizeRequest {
            card: card("4242 4242 4242 4242"),
        };
        let token = pay.tokenize("card:1", &request).await.unwrap();
        assert!(token.token.starts_with("tok_"), "{token:?}");
        assert_eq!(token.last4, "4242");
        assert_eq!(pay.tokenize("card:1", &request).await.unwrap(), token);
        assert_eq!(pay.cards_held().await.unwrap(), 1);
        let by_token = TokenAuthorizeRequest {
            customer_email: "ada@example.com".into(),
            token: token.token.clone(),
            amount: Money::new(500, Currency::usd()),
        };
        let rec = pay.authorize_token("t1", &by_token).await.unwrap();
        assert_eq!(rec.status, PaymentStatus::Authorized);
        assert_eq!(pay.cards_held().await.unwrap(), 0, "forgotten once used");
        // A repeat is answered from the record; a new key finds no card.
        assert_eq!(pay.authorize_token("t1", &by_token).await.unwrap(), rec);
        assert_eq!(
            pay.authorize_token("t2", &by_token).await.unwrap_err(),
            PaymentError::UnknownToken
        );
        pay.forget_card("tok_never_issued").await.unwrap();
        server.stop().await;
    }

    #[tokio::test]
    async fn loyalty_round_trips_every_method() {
        let server = Server::start(Role::Loyalty).await;
        let loy = HttpLoyalty::new(&server.url()).unwrap();

        let request = CreateAccount {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada+miles@example.com".into(),
        };
        let acc = loy.create_account("c1", &request).await.unwrap();
        assert_eq!(loy.account(&acc.id).await.unwrap(), acc);
        assert_eq!(
            loy.account_by_email("ada+miles@example.com").await.unwrap(),
            Some(acc.clone())
        );
        assert_eq!(
            loy.account_by_email("nobody@example.com").await.unwrap(),
            None
        );

        let award = loy
            .award("a1", &acc.id, &Money::new(10_000, Currency::usd()))
            .await
            .unwrap();
        assert_eq!((award.miles, award.balance_after), (500, 500));
        let redeemed = loy.redeem("r1", &acc.id, 200).await.unwrap();
        assert_eq!(
            (redeemed.kind, redeemed.balance_after),
            (EntryKind::Redemption, 300)
        );
        assert_eq!(
            loy.entry("a1").await.unwrap(),
            EntryLookup::Entry(award.clone())
        );
        assert_eq!(loy.history(&acc.id).await.unwrap().len(), 2);
        let reversed = loy.reverse("r1").await.unwrap();
        assert!(matches!(reversed, ReverseOutcome::Reversed(e) if e.state == EntryState::Reversed));
        assert_eq!(loy.account(&acc.id).await.unwrap().balance, 500);
        assert_eq!(
            loy.reverse("x").await.unwrap(),
            ReverseOutcome::NothingToReverse
        );
        assert_eq!(loy.entry("x").await.unwrap(), EntryLookup::Tombstone);
        let all = loy.all_accounts().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].balance, all[0].qualifying_miles), (500, 500));
        server.stop().await;
    }

    #[tokio::test]
    async fn the_same_key_twice_is_applied_once() {
        let inv_server = Server::start(Role::Inventory).await;
        let pay_server = Server::start(Role::Payments).await;
        let loy_server = Server::start(Role::Loyalty).await;
        let inv = HttpInventory::new(&inv_server.url()).unwrap();
        let pay = HttpPayments::new(&pay_server.url()).unwrap();
        let loy = HttpLoyalty::new(&loy_server.url()).unwrap();
        let flight = FlightId("AA100-3".into());

        let first = inv.hold("k", &hold_request(3)).await.unwrap();
        // Two clients, as after an orchestrator restart.
        let again = HttpInventory::new(&inv_server.url())
            .unwrap()
            .hold("k", &hold_request(3))
            .await
            .unwrap();
        assert_eq!(first, again);
        let totals = inv.totals(&flight, date(), Cabin::Economy).await.unwrap();
        assert_eq!(totals.held, 3, "seats taken once");

        let a = pay
            .authorize("k", &authorize_request("4242424242424242", 500))
            .await
            .unwrap();
        let b = pay
            .authorize("k", &authorize_request("4242424242424242", 500))
            .await
            .unwrap();
        assert_eq!(a.authorization_id, b.authorization_id);
        assert_eq!(pay.all_payments().await.unwrap().len(), 1);

        let acc = loy
            .create_account(
                "c",
                &CreateAccount {
                    first_name: "Ada".into(),
                    last_name: "L".into(),
                    email: "a@example.com".into(),
                },
            )
            .await
            .unwrap();
        let usd = Money::new(10_000, Currency::usd());
        let e1 = loy.award("k", &acc.id, &usd).await.unwrap();
        let e2 = loy.award("k", &acc.id, &usd).await.unwrap();
        assert_eq!(e1, e2);
        assert_eq!(
            loy.account(&acc.id).await.unwrap().balance,
            500,
            "awarded once"
        );
        inv_server.stop().await;
        pay_server.stop().await;
        loy_server.stop().await;
    }

    #[tokio::test]
    async fn a_rejection_stays_a_rejection() {
        let inv_server = Server::start(Role::Inventory).await;
        let pay_server = Server::start(Role::Payments).await;
        let loy_server = Server::start(Role::Loyalty).await;
        let inv = HttpInventory::new(&inv_server.url()).unwrap();
        let pay = HttpPayments::new(&pay_server.url()).unwrap();
        let loy = HttpLoyalty::new(&loy_server.url()).unwrap();

        inv.set_capacity(&FlightId("AA100-3".into()), date(), Cabin::Economy, 1)
            .await
            .unwrap();
        let e = inv.hold("k", &hold_request(2)).await.unwrap_err();
        assert_eq!(
            e,
            InventoryError::NotEnoughSeats {
                requested: 2,
                available: 1
            }
        );
        assert!(e.is_rejection());
        let e = inv.hold("k2", &hold_request(0)).await.unwrap_err();
        assert_eq!(e, InventoryError::InvalidSeats { seats: 0 });
        let e = inv.confirm("nope").await.unwrap_err();
        assert_eq!(e, InventoryError::UnknownHold { key: "nope".into() });

        let e = pay
            .authorize("d", &authorize_request("4000 0000 0000 0002", 100))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            PaymentError::Declined {
                reason: DeclineReason::CardDeclined
            }
        );
        assert!(e.is_rejection() && e.is_decline());
        let e = pay
            .authorize("bad", &authorize_request("4242 4242 4242 4241", 100))
            .await
            .unwrap_err();
        assert!(matches!(e, PaymentError::InvalidCard { .. }), "{e:?}");

        let e = loy
            .account(&AccountId("00000000".into()))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            LoyaltyError::UnknownAccount {
                account_id: AccountId("00000000".into())
            }
        );
        assert!(e.is_rejection());

        // A client pointed at the wrong participant is refused, not retried.
        let wrong = HttpPayments::new(&inv_server.url()).unwrap();
        let e = wrong.capture("k").await.unwrap_err();
        assert!(
            matches!(&e, PaymentError::InvalidRequest { reason } if reason.contains("no route")),
            "{e:?}"
        );
        assert!(e.is_rejection());
        inv_server.stop().await;
        pay_server.stop().await;
        loy_server.stop().await;
    }

    #[tokio::test]
    async fn a_dead_server_gives_a_retryable_error() {
        let url = dead_url();
        let e = HttpInventory::new(&url)
            .unwrap()
            .confirm("k")
            .await
            .unwrap_err();
        assert!(
            matches!(e, InventoryError::Unavailable { .. }) && e.is_retryable(),
            "{e:?}"
        );
        let e = HttpPayments::new(&url)
            .unwrap()
            .capture("k")
            .await
            .unwrap_err();
        assert!(
            matches!(e, PaymentError::Unavailable { .. }) && e.is_retryable(),
            "{e:?}"
        );
        let e = HttpLoyalty::new(&url)
            .unwrap()
            .reverse("k")
            .await
            .unwrap_err();
        assert!(
            matches!(e, LoyaltyError::Unavailable { .. }) && e.is_retryable(),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_retryably() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold_open = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let inv = HttpInventory::new(&format!("http://{addr}"))
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = inv.release("k").await.unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        hold_open.abort();
    }

    #[tokio::test]
    async fn a_restarted_server_is_reached_again_with_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let server = Server::start_on(Role::Inventory, db).await;
        let addr = server.addr;
        let inv = HttpInventory::new(&server.url()).unwrap();
        inv.hold("k", &hold_request(2)).await.unwrap();
        server.stop().await;

        let e = inv.confirm("k").await.unwrap_err();
        assert!(e.is_retryable(), "down: {e:?}");

        // Same port, same data: the pooled client finds it again.
        let db = sled::open(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_role(Role::Inventory, listener, db, async move {
            let _ = stopped.await;
        }));
        let hold = inv.confirm("k").await.unwrap();
        assert_eq!((hold.seats, hold.state), (2, HoldState::Confirmed));
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}
