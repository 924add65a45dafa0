//! Helpers shared by the security tests: a server on loopback, raw
//! requests from a chosen local address, and the booking body.

#![allow(dead_code)]

use demo_server::{AdminToken, AppState, RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token of every test server.
pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A main server on `127.0.0.1:0`.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(config: ServerConfig, remote: RemoteParticipants) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(dir.path(), config, remote).await;
        server._dir = Some(dir);
        server
    }

    /// A server on the data directory `dir` (kept by the caller, so that
    /// a second server can be started on it after this one stops).
    pub async fn start_in(
        dir: &std::path::Path,
        config: ServerConfig,
        remote: RemoteParticipants,
    ) -> Server {
        let (state, _) = AppState::builder(dir)
            .admin_token(AdminToken::new(TOKEN).unwrap())
            .remote(remote)
            .config(config)
            .open()
            .await
            .expect("open state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(demo_server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            state,
            stop: Some(stop),
            served: Some(served),
            _dir: None,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let served = self.served.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.served.take() {
            s.abort();
        }
    }
}

/// A reply read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: Value,
    pub text: String,
}

impl Raw {
    /// The value of header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A connection to `addr` from local address `from` (any port).
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Sends one request (`Connection: close`) from `from` and reads the reply.
pub async fn request_from(
    from: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let mut s = connect_from(from, addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    read_reply(&mut s).await
}

/// Reads a whole reply (until the server closes).
pub async fn read_reply(s: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    parse(&buf)
}

/// Parses a raw reply (a chunked body is decoded).
pub fn parse(buf: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Raw {
        status,
        head: head.to_string(),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        text: body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A JFK-LAX flight some weeks out with seats for two: (id, date).
pub async fn find_flight(addr: SocketAddr) -> (String, String) {
    let today = chrono::Utc::now().date_naive();
    for d in 0..14u64 {
        let date = today + chrono::Days::new(20 + d);
        let r = request_from(
            local(),
            addr,
            "GET",
            &format!("/api/flights/search?from=JFK&to=LAX&date={date}&passengers=2"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let Some(first) = r.body["results"].as_array().and_then(|a| a.first()) {
            return (
                first["flight"]["id"].as_str().unwrap().to_string(),
                date.to_string(),
            );
        }
    }
    panic!("no JFK-LAX flight in two weeks");
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

/// Polls a booking until it leaves `pending` (30 s deadline).
pub async fn wait_terminal(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request_from(
            local(),
            addr,
            "GET",
            &format!("/api/bookings/{id}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] != "pending" {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "booking {id} never ended: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
