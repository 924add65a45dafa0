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
mod tests;
