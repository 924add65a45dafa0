//! The HTTP suites' server: its own state in a temporary directory, served
//! on `127.0.0.1:0`, a hyper client and a raw socket for misbehaving
//! clients, and the helpers the suites share (SSE parsing, booking body,
//! error-body checks).

#![allow(dead_code, unused_imports)]

pub use bytes::Bytes;
pub use demo_server::routes::ROUTES;
pub use demo_server::{AdminToken, AppState, ServerConfig};
pub use http_body_util::{BodyExt, Full};
pub use hyper::header::HeaderMap;
pub use hyper::{Method, Request, StatusCode};
pub use hyper_util::client::legacy::connect::HttpConnector;
pub use hyper_util::client::legacy::Client;
pub use hyper_util::rt::TokioExecutor;
pub use serde_json::{json, Value};
pub use std::net::SocketAddr;
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpListener, TcpStream};
pub use tokio::sync::oneshot;
pub use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub stop: Option<oneshot::Sender<()>>,
    pub served: Option<JoinHandle<()>>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: ServerConfig) -> TestServer {
        // A database just closed may hold its lock a moment longer.
        let deadline = Instant::now() + Duration::from_secs(10);
        let state = loop {
            match AppState::builder(dir.path())
                .admin_token(AdminToken::new(TOKEN).unwrap())
                .config(config.clone())
                .open()
                .await
            {
                Ok((state, _)) => break state,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("open failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open state: {e}"),
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(demo_server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            state,
            stop: Some(stop),
            served: Some(served),
            client: Client::builder(TokioExecutor::new()).build_http(),
            dir,
        }
    }

    /// Stops the server and waits until `serve` returns; gives the
    /// directory back once every handle on the database is gone.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(20), served)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task");
        }
        let TestServer { state, dir, .. } = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = state;
        loop {
            match Arc::try_unwrap(state) {
                Ok(s) => {
                    drop(s);
                    break;
                }
                Err(s) => {
                    assert!(
                        Instant::now() < deadline,
                        "state still shared after shutdown"
                    );
                    state = s;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("reply in time")
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        self.send(Method::GET, path, &[("authorization", &auth)], None)
            .await
    }

    pub async fn admin_send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.send(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            bytes,
        )
        .await
    }

    pub async fn post_json(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        self.send(
            Method::POST,
            path,
            &headers,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// A JFK→LAX economy flight and a date it operates, `offset` days
    /// spread apart so tests do not share seats.
    pub async fn find_flight(&self, offset: u64) -> (String, String) {
        let today = chrono::Utc::now().date_naive();
        for d in 0..14u64 {
            let date = today + chrono::Days::new(20 + offset + d);
            let r = self
                .get(&format!(
                    "/api/flights/search?from=JFK&to=LAX&date={date}&passengers=2"
                ))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            if let Some(first) = r.body["results"].as_array().and_then(|a| a.first()) {
                return (
                    first["flight"]["id"].as_str().unwrap().to_string(),
                    date.to_string(),
                );
            }
        }
        panic!("no JFK-LAX flight in two weeks");
    }

    pub async fn book(&self, key: &str, body: &Value) -> String {
        let r = self.post_json("/api/bookings", Some(key), body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        r.body["booking_id"].as_str().unwrap().to_string()
    }

    pub async fn wait_terminal(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get(&format!("/api/bookings/{id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            if r.body["status"] != "pending" {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "booking {id} never ended: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Reads a whole event stream (until the server ends it); returns
    /// the events (as JSON) and the comments seen.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> (StatusCode, Vec<Value>, Vec<String>) {
        let mut req = Request::builder().uri(self.url(path));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        if status == StatusCode::OK {
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
        }
        let mut body = resp.into_body();
        let mut text = String::new();
        let read_all = async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read_all)
            .await
            .expect("event stream ends");
        let (events, comments) = parse_sse(&text);
        (status, events, comments)
    }
}

/// Splits an SSE text into events (the data, checked against id and event
/// lines) and comments.
pub fn parse_sse(text: &str) -> (Vec<Value>, Vec<String>) {
    let mut events = Vec::new();
    let mut comments = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut id, mut kind, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                comments.push(c.trim().to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse::<u64>().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v).unwrap());
            }
        }
        if let Some(d) = data {
            if let Some(id) = id {
                assert_eq!(d["seq"], id, "SSE id is the seq");
            }
            assert_eq!(Some(d["event"].as_str().unwrap().to_string()), kind);
            events.push(d);
        }
    }
    (events, comments)
}

pub fn booking_body(flight: &str, date: &str, faults: Value) -> Value {
    json!({
        "flight_id": flight,
        "date": date,
        "cabin": "economy",
        "passengers": [
            {"first_name": "Ada", "last_name": "Lovelace"},
            {"first_name": "Charles", "last_name": "Babbage"}
        ],
        "email": "ada@example.com",
        "card": {"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"},
        "faults": faults,
    })
}

pub fn assert_error_body(r: &Reply) {
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error body must be {{\"error\": ...}}, got {:?}",
        r.text
    );
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "error bodies are JSON"
    );
}

pub fn field_names(r: &Reply) -> Vec<String> {
    r.body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {}", r.text))
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect()
}

/// A raw request over TCP; returns what the server sent until it closed
/// or went quiet for `quiet`.
pub async fn raw(addr: SocketAddr, request: &[u8], quiet: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
