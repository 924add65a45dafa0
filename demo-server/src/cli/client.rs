//! The admin API as the command line calls it: JSON requests with the
//! bearer token to a running server, errors turned into what the operator
//! should do next.

use super::CliError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Result<AdminClient, CliError> {
        let base = base.trim_end_matches('/').to_string();
        let ok = base
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !ok || base.parse::<Uri>().is_err() {
            return Err(CliError::Usage(format!(
                "--server {base:?}: expected http://HOST:PORT"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(AdminClient { base, token, http })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, the answer as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, the answer as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| CliError::Usage(format!("bad request to {url}: {e}")))?;
        let resp = match tokio::time::timeout(TIMEOUT, self.http.request(req)).await {
            Err(_) => {
                return Err(CliError::Server(format!(
                    "{url}: no answer within {TIMEOUT:?}"
                )))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(CliError::Unreachable(format!("{}: {e}", self.base)))
            }
            Ok(Err(e)) => return Err(CliError::Server(format!("{url}: {e}"))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| CliError::Server(format!("{url}: the answer stalled")))?
            .map_err(|e| CliError::Server(format!("{url}: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Auth(format!(
                "{}: the admin token was refused ({message}); set {} or check the data directory's {}",
                self.base,
                crate::auth::ADMIN_TOKEN_ENV,
                crate::auth::ADMIN_TOKEN_FILE
            )),
            StatusCode::NOT_FOUND => CliError::NotFound(message),
            _ => CliError::Refused {
                status: status.as_u16(),
                message,
                fields: value.get("fields").cloned(),
            },
        })
    }
}
