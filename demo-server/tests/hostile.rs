//! Hostile HTTP: the server against clients that mean it harm, over real
//! loopback sockets, with the server running in this process.
//!
//! * `random_and_malformed_requests_never_crash_or_5xx`: a seeded fuzzer
//!   (`HOSTILE_SEED` replays a run, `HOSTILE_CASES` sets its length) sends
//!   well-framed requests with hostile content (methods, paths from the
//!   route table and mutations of them, query strings, headers, bodies) and
//!   malformed HTTP (request lines, headers, framing, random byte
//!   mutations). Nothing may panic, nothing may answer `5xx`, every error
//!   the application answers is `{"error": ...}`, and the server still
//!   answers `/healthz` after.
//! * `adversarial_connections_are_cut_off_while_others_are_served`: a
//!   10 MB body (declared and chunked), never-ending and trickled bodies,
//!   headers a byte at a time, idle connections; each is cut off by the
//!   body limit or a deadline while a normal client keeps being served.
//! * `memory_stays_bounded_after_100k_bad_requests`: 100,000 bad requests
//!   on keep-alive connections, the process's RSS before and after
//!   (`HOSTILE_BAD_REQUESTS` sets the count).
//!
//! The tests of this file run one at a time (they measure time and memory
//! of the whole process), each on its own two-thread runtime. A panic hook
//! counts panics raised outside this file, i.e. in the server, including
//! those a connection task would otherwise swallow.

use demo_server::routes::{Endpoint, Route, ROUTES};
use demo_server::{AdminToken, AppState, ServerConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "hostile-admin-token-0123456789abcdef";
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Test harness: one test at a time, a panic counter, the server in-process.
// ---------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: Once = Once::new();

/// Runs the tests of this file one at a time and counts the panics raised
/// outside it.
fn exclusive() -> MutexGuard<'static, ()> {
    PANIC_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().ends_with("hostile.rs"));
            if !ours {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The resident set size of this process (server and clients), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
    /// Server panics counted before this server started.
    panics_before: usize,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        // These tests hammer the server from one address on purpose; the
        // per-address rate limits have their own test (tests/limits.rs).
        let config = ServerConfig {
            rate_per_minute: 1_000_000,
            rate_burst: 1_000_000,
            ..config
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, _) = AppState::builder(dir.path())
            .admin_token(AdminToken::new(TOKEN).unwrap())
            .config(config)
            .open()
            .await
            .expect("open state");
        let panics_before = SERVER_PANICS.load(Ordering::SeqCst);
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
            panics_before,
            _dir: dir,
        }
    }

    /// The serve task is running, `/healthz` answers `200`, `/metrics`
    /// counts no `5xx`, and nothing in the server panicked.
    async fn assert_healthy(&self, ctx: &str) {
        assert!(
            !self.served.as_ref().unwrap().is_finished(),
            "{ctx}: the serve task ended"
        );
        let r = request(
            self.addr,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: /healthz does not answer: {e}"));
        assert_eq!(r.status, 200, "{ctx}: /healthz: {}", r.text());
        let m = request(
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: /metrics does not answer: {e}"));
        let metrics = m.text_ref();
        let fives: Vec<&str> = metrics.lines().filter(|l| l.contains("code=\"5")).collect();
        assert!(
            fives.is_empty(),
            "{ctx}: the server answered 5xx: {fives:?}"
        );
        assert_eq!(
            SERVER_PANICS.load(Ordering::SeqCst) - self.panics_before,
            0,
            "{ctx}: the server panicked (see the panic messages above)"
        );
        assert!(!self.state.is_stopping());
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(30), served)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task");
        }
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client over raw TCP: we write the bytes, all of them.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        let t: String = t.chars().take(300).collect();
        format!("{} {t}", self.status)
    }

    fn text_ref(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// What is wrong with this answer to a client error, if anything:
    /// a `5xx`, or an error without a `{"error": "..."}` JSON body. A body
    /// that says it is JSON must be JSON, whatever the status.
    fn problem(&self, head: bool) -> Option<String> {
        if self.status >= 500 {
            return Some(format!("5xx answer: {}", self.text()));
        }
        let json_type = self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"));
        if head {
            return None;
        }
        if json_type && serde_json::from_slice::<Value>(&self.body).is_err() {
            return Some(format!(
                "application/json body is not JSON: {}",
                self.text()
            ));
        }
        if self.status >= 400 {
            if !json_type {
                return Some(format!(
                    "error without an application/json body (content-type {:?}): {}",
                    self.header("content-type"),
                    self.text()
                ));
            }
            let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
            match v["error"].as_str() {
                Some(e) if !e.is_empty() => {}
                _ => return Some(format!("error body without \"error\": {}", self.text())),
            }
        }
        None
    }
}

enum Parsed {
    /// A response and the bytes it took.
    Done(Response, usize),
    /// More bytes are needed.
    Partial,
    Invalid(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response from the front of `buf`. `head`: the request was
/// `HEAD` (no body follows); `eof`: no more bytes will come.
fn parse_response(buf: &[u8], head: bool, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 1 << 20 {
            Parsed::Invalid("response head over 1 MiB".into())
        } else {
            Parsed::Partial
        };
    };
    let head_text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = match parts.next().and_then(|s| s.parse().ok()) {
        Some(s) if version.starts_with("HTTP/1.") => s,
        _ => return Parsed::Invalid(format!("bad status line {status_line:?}")),
    };
    let mut headers = Vec::new();
    for line in lines {
        match line.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => return Parsed::Invalid(format!("bad header line {line:?}")),
        }
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let start = end + 4;
    let rest = &buf[start..];
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Parsed::Done(resp, start);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut pos = 0;
        loop {
            let Some(eol) = find(&rest[pos..], b"\r\n") else {
                return Parsed::Partial;
            };
            let size_text = String::from_utf8_lossy(&rest[pos..pos + eol]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Parsed::Invalid(format!("bad chunk size {size_text:?}"));
            };
            pos += eol + 2;
            if size == 0 {
                // Trailers, then an empty line.
                let Some(t) = find(&rest[pos..], b"\r\n") else {
                    return Parsed::Partial;
                };
                if t == 0 {
                    return Parsed::Done(resp, start + pos + 2);
                }
                let Some(t) = find(&rest[pos..], b"\r\n\r\n") else {
                    return Parsed::Partial;
                };
                return Parsed::Done(resp, start + pos + t + 4);
            }
            if rest.len() < pos + size + 2 {
                return Parsed::Partial;
            }
            resp.body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    }
    match resp.header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if rest.len() >= n => {
            resp.body = rest[..n].to_vec();
            Parsed::Done(resp, start + n)
        }
        Some(Ok(_)) => Parsed::Partial,
        Some(Err(_)) => Parsed::Invalid("bad content-length in the response".into()),
        None if eof => {
            resp.body = rest.to_vec();
            Parsed::Done(resp, buf.len())
        }
        None => Parsed::Partial,
    }
}

/// Reads one final response (skipping `1xx`) from `r`, keeping what
/// follows it in `buf`.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head: bool,
) -> io::Result<Response> {
    let mut eof = false;
    loop {
        match parse_response(buf, head, eof) {
            Parsed::Done(resp, used) => {
                buf.drain(..used);
                if (100..200).contains(&resp.status) {
                    continue;
                }
                return Ok(resp);
            }
            Parsed::Invalid(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            Parsed::Partial if eof => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {} bytes of a response", buf.len()),
                ))
            }
            Parsed::Partial => {
                let mut chunk = [0u8; 16 * 1024];
                let n = r.read(&mut chunk).await?;
                eof = n == 0;
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// A keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    async fn roundtrip(&mut self, req: &[u8], head: bool) -> io::Result<Response> {
        let write = self.stream.write_all(req).await;
        let read = read_response(&mut self.stream, &mut self.buf, head).await;
        match (write, read) {
            // An answer before the whole request was taken (413) counts.
            (_, Ok(r)) => Ok(r),
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        }
    }
}

/// One request on a new connection, with a deadline.
async fn request(addr: SocketAddr, req: &[u8], head: bool) -> io::Result<Response> {
    tokio::time::timeout(Duration::from_secs(15), async {
        Conn::open(addr).await?.roundtrip(req, head).await
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 15 s")))
}

/// Writes `req`, closes our sending side, and returns all the server sent
/// until it closed (`Err` if it did not within `limit`).
async fn send_and_drain(addr: SocketAddr, req: &[u8], limit: Duration) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The server may refuse early and close: later writes then fail.
    let _ = s.write_all(req).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(limit, read_all).await {
        Ok(()) => Ok(out),
        Err(_) => Err(format!(
            "the server neither answered and closed within {limit:?}"
        )),
    }
}

/// A readable one-line rendering of a request for failure messages.
fn show(req: &[u8]) -> String {
    let mut s: String = String::from_utf8_lossy(&req[..req.len().min(400)])
        .chars()
        .flat_map(char::escape_default)
        .collect();
    if req.len() > 400 {
        s.push_str(&format!("... ({} bytes)", req.len()));
    }
    s
}

// ---------------------------------------------------------------------------
// 1. The fuzzer.
// ---------------------------------------------------------------------------

/// A real flight and a date it flies, for valid-looking bookings.
#[derive(Clone)]
struct Ctx {
    flight_id: String,
    date: String,
}

async fn find_flight(addr: SocketAddr) -> Ctx {
    let today = chrono::Utc::now().date_naive();
    for d in 0..14u64 {
        let date = today + chrono::Days::new(40 + d);
        let req = format!(
            "GET /api/flights/search?from=JFK&to=LAX&date={date} HTTP/1.1\r\nHost: t\r\n\r\n"
        );
        let r = request(addr, req.as_bytes(), false).await.expect("search");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if let Some(id) = v["results"][0]["flight"]["id"].as_str() {
            return Ctx {
                flight_id: id.to_string(),
                date: date.to_string(),
            };
        }
    }
    panic!("no JFK-LAX flight in two weeks");
}

struct Case {
    bytes: Vec<u8>,
    head: bool,
    /// Over the body limit: closing the connection instead of answering
    /// `413` is fine.
    may_close: bool,
}

const STANDARD_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
];
const WEIRD_METHODS: &[&str] = &[
    "PROPFIND",
    "MKCOL",
    "M-SEARCH",
    "BREW",
    "get",
    "Post",
    "X-CUSTOM",
    "QUERY",
    "PURGE",
    "LINK",
    "A!#$%&'*+-.^_`|~9",
];
const PARAMS: &[&str] = &[
    "from",
    "to",
    "date",
    "cabin",
    "passengers",
    "sort",
    "max_price",
    "depart_after",
    "depart_before",
    "airline",
    "return_date",
    "q",
    "limit",
    "reference",
    "last_name",
    "status",
    "email",
];
/// Path and query characters the HTTP parser lets through unencoded (`"`
/// passes in a path, not in a query).
const SAFE: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@{}[]|";
const PERCENT_JUNK: &[&str] = &[
    "%",
    "%%",
    "%zz",
    "%0",
    "%00",
    "%ff",
    "%FF%FE",
    "%C3%28",
    "%2F",
    "%2f",
    "%25",
    "%E2%82%AC",
    "%F0%9F%92%A9",
    "%ED%A0%80",
    "%u0041",
    "+",
    "%2e%2e",
    "%0d%0a",
    "%5C",
    "%3F",
    "%23",
];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &'a [&'a T]) -> &'a T {
    items.choose(rng).unwrap()
}

fn random_from(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| *alphabet.choose(rng).unwrap() as char)
        .collect()
}

fn alnum(rng: &mut StdRng, len: usize) -> String {
    random_from(
        rng,
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        len,
    )
}

fn percent_junk(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..6);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(pick(rng, PERCENT_JUNK));
        if rng.gen_bool(0.5) {
            s.push_str(&alnum(rng, 2));
        }
    }
    s
}

/// A value for a `{}` capture of a route.
fn gen_id(rng: &mut StdRng, ctx: &Ctx) -> String {
    match rng.gen_range(0..13) {
        0 => {
            let n = rng.gen_range(1..=64);
            alnum(rng, n)
        }
        1 => {
            let n = rng.gen_range(65..300);
            alnum(rng, n)
        }
        2 => ctx.flight_id.clone(),
        3 => pick(rng, &["..", ".", "%2e%2e", "...", "-", "_", "0"]).to_string(),
        4 => "a".repeat(rng.gen_range(1_000..20_000)),
        5 => percent_junk(rng),
        6 => {
            let n = rng.gen_range(1..50);
            random_from(rng, SAFE, n)
        }
        7 => format!("{}x", ctx.flight_id.to_lowercase()),
        8 => pick(
            rng,
            &["%E2%82%AC%F0%9F%92%A9%00", "\"quoted\"", "{\"json\":1}"],
        )
        .to_string(),
        9 => format!("{}%2F..%2F..", alnum(rng, 8)),
        10 => "9".repeat(40),
        11 => "-1".to_string(),
        _ => {
            let n = rng.gen_range(10..40);
            alnum(rng, n)
        }
    }
}

fn fill_pattern(rng: &mut StdRng, pattern: &str, ctx: &Ctx) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                gen_id(rng, ctx)
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn mutate_path(rng: &mut StdRng, path: String, ctx: &Ctx) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    match rng.gen_range(0..12) {
        0 => format!("{path}/"),
        1 => path.replace('/', "//"),
        2 => format!("{path}/.."),
        3 => format!("/./{}", path.trim_start_matches('/')),
        4 => path.to_uppercase(),
        5 => format!("{path}/{}", gen_id(rng, ctx)),
        6 => {
            let keep = rng.gen_range(0..segs.len());
            segs[..keep].join("/")
        }
        7 => format!("/api/api{path}"),
        8 => path
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>(),
        9 => {
            let i = rng.gen_range(1..segs.len().max(2));
            let mut s: Vec<String> = segs.iter().map(|x| x.to_string()).collect();
            if i < s.len() {
                s[i] = "..".into();
            }
            s.join("/")
        }
        10 => format!("/{}", "x".repeat(rng.gen_range(100..30_000))),
        _ => format!("{path}{}", percent_junk(rng)),
    }
}

fn gen_query_value(rng: &mut StdRng, ctx: &Ctx) -> String {
    let today = chrono::Utc::now().date_naive();
    match rng.gen_range(0..14) {
        0 => pick(
            rng,
            &[
                "99999999999999999999999999",
                "18446744073709551616",
                "18446744073709551615",
                "9223372036854775808",
                "-9223372036854775809",
                "4294967296",
                "4294967295",
                "2147483648",
                "1e400",
                "-1e400",
                "NaN",
                "inf",
                "0x10",
                "1_000",
                "+5",
                "%205",
                "5%00",
                "1.5",
            ],
        )
        .to_string(),
        1 => pick(
            rng,
            &["-1", "0", "10", "9", "1", "-0", "-2147483648", "00001"],
        )
        .to_string(),
        2 => ctx.date.clone(),
        3 => pick(
            rng,
            &[
                "2024-02-30",
                "2030-13-01",
                "0000-00-00",
                "+262143-12-31",
                "262143-12-31",
                "-262144-01-01",
                "9999-12-31",
                "1970-01-01",
                "2030-1-1",
                "20300101",
                "2030-01-01T00:00:00Z",
                "yesterday",
                "2030-02-29",
            ],
        )
        .to_string(),
        4 => {
            let d = rng.gen_range(-400i64..800);
            (today + chrono::Duration::days(d)).to_string()
        }
        5 => pick(
            rng,
            &[
                "25:00", "23:59:60", "-1:00", "12:00", "24:00", "00:00", "12:60", "1200",
            ],
        )
        .to_string(),
        6 => pick(
            rng,
            &[
                "JFK",
                "LAX",
                "jfk",
                "XXX",
                "J%00K",
                "%4A%46%4B",
                "JFK%20",
                "SFO",
            ],
        )
        .to_string(),
        7 => "A".repeat(rng.gen_range(100..8_000)),
        8 => pick(
            rng,
            &[
                "economy",
                "first",
                "business",
                "premium",
                "ECONOMY",
                "price",
                "departure",
                "duration",
                "nope",
                "stuck",
                "all",
                "running",
                "completed",
            ],
        )
        .to_string(),
        9 => percent_junk(rng),
        10 => {
            let n = rng.gen_range(0..60);
            random_from(rng, SAFE, n)
        }
        11 => String::new(),
        12 => "a@b".repeat(rng.gen_range(1..100)),
        _ => {
            let n = rng.gen_range(1..20);
            alnum(rng, n)
        }
    }
}

fn gen_query(rng: &mut StdRng, ctx: &Ctx) -> String {
    match rng.gen_range(0..12) {
        0 => return "?".into(),
        1 => return pick(rng, &["?&&&", "?=", "?==", "?a=b=c", "?&=&", "?%", "?%%3D"]).into(),
        _ => {}
    }
    let n = if rng.gen_bool(0.1) {
        rng.gen_range(50..90)
    } else {
        rng.gen_range(1..10)
    };
    let mut pairs = Vec::new();
    for _ in 0..n {
        let key = if rng.gen_bool(0.85) {
            pick(rng, PARAMS).to_string()
        } else {
            let n = rng.gen_range(0..10);
            random_from(rng, SAFE, n).replace(['&', '='], "")
        };
        let value = gen_query_value(rng, ctx).replace('&', "%26");
        match rng.gen_range(0..20) {
            0 => pairs.push(key),
            1 => pairs.push(format!("{key}={value}={value}")),
            _ => pairs.push(format!("{key}={value}")),
        }
    }
    format!("?{}", pairs.join("&"))
}

/// Raw JSON text of a number no field can hold.
fn weird_number(rng: &mut StdRng) -> String {
    match rng.gen_range(0..3) {
        0 => "9".repeat(rng.gen_range(30..5_000)),
        1 => format!("0.{}1", "0".repeat(rng.gen_range(10..2_000))),
        _ => pick(
            rng,
            &[
                "1e400",
                "-1e400",
                "1e-400",
                "1180591620717411303424",
                "18446744073709551616",
                "-9223372036854775809",
                "1.7976931348623157e309",
                "4294967296",
                "-1",
                "-0",
                "0",
                "-2147483649",
                "123456789012345678901234567890.5",
                "1e19",
                "1.5",
            ],
        )
        .to_string(),
    }
}

/// Raw JSON text (sometimes not valid JSON) for any value.
fn weird_value(rng: &mut StdRng) -> String {
    match rng.gen_range(0..8) {
        0 | 1 => weird_number(rng),
        2 => pick(
            rng,
            &[
                "\"\"",
                "\"\\ud800\"",
                "\"\\udc00\\ud800\"",
                "\"\\u0000\"",
                "\"\\x41\"",
                "\"é漢字🙂\"",
                "\"\t\"",
                "\"a\\nb\"",
                "\"12\"",
                "\"-1\"",
                "\"1e400\"",
                "\"null\"",
            ],
        )
        .to_string(),
        3 => format!("\"{}\"", "x".repeat(rng.gen_range(1_000..30_000))),
        4 => pick(
            rng,
            &[
                "true",
                "false",
                "null",
                "[]",
                "{}",
                "[null]",
                "[[]]",
                "{\"\":{}}",
                "NaN",
                "Infinity",
                "-Infinity",
                "01",
                "1.",
                ".5",
                "+1",
                "0x1F",
                "undefined",
                "'a'",
            ],
        )
        .to_string(),
        5 => nested(rng.gen_range(1..300), rng.gen_bool(0.5), true),
        6 => "[".repeat(rng.gen_range(1..50)),
        _ => format!("[{}]", vec!["1"; rng.gen_range(1..5_000)].join(",")),
    }
}

/// `depth` nested arrays or objects; `closed: false` leaves them open.
fn nested(depth: usize, arrays: bool, closed: bool) -> String {
    let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
    let mut s = open.repeat(depth);
    s.push('1');
    if closed {
        s.push_str(&close.repeat(depth));
    }
    s
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn render_object(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn valid_card() -> Vec<(String, String)> {
    vec![
        ("number".into(), "\"4242 4242 4242 4242\"".into()),
        ("exp_month".into(), "12".into()),
        ("exp_year".into(), "2035".into()),
        ("cvc".into(), "\"123\"".into()),
        ("holder_name".into(), "\"Ada Lovelace\"".into()),
    ]
}

fn valid_booking(ctx: &Ctx) -> Vec<(String, String)> {
    vec![
        ("flight_id".into(), json_str(&ctx.flight_id)),
        ("date".into(), json_str(&ctx.date)),
        ("cabin".into(), "\"economy\"".into()),
        (
            "passengers".into(),
            r#"[{"first_name":"Ada","last_name":"Lovelace"}]"#.into(),
        ),
        ("email".into(), "\"ada@example.com\"".into()),
        ("card".into(), render_object(&valid_card())),
    ]
}

fn broken_card(rng: &mut StdRng) -> String {
    let mut card = valid_card();
    let i = rng.gen_range(0..card.len());
    match rng.gen_range(0..8) {
        0 => {
            card.remove(i);
        }
        1 => card.push(("extra".into(), weird_value(rng))),
        _ => {
            let v = match card[i].0.as_str() {
                "number" => pick(
                    rng,
                    &[
                        "\"4000 0000 0000 0002\"",
                        "\"4242 4242 4242 4241\"",
                        "\"1234\"",
                        "\"abcd efgh ijkl mnop\"",
                        "4242424242424242",
                        "\"\"",
                        "\"4242-4242-4242-4242-4242-4242\"",
                    ],
                )
                .to_string(),
                "exp_month" => pick(
                    rng,
                    &[
                        "13",
                        "0",
                        "-1",
                        "1e400",
                        "\"12\"",
                        "1180591620717411303424",
                        "12.5",
                    ],
                )
                .to_string(),
                "exp_year" => pick(
                    rng,
                    &[
                        "1999",
                        "99999",
                        "-2030",
                        "18446744073709551616",
                        "\"2030\"",
                        "65536",
                        "4294967295",
                    ],
                )
                .to_string(),
                "cvc" => pick(rng, &["\"1\"", "\"12345\"", "123", "\"\"", "\"abc\""]).to_string(),
                _ => pick(rng, &["\"\"", "null", "42", "\"\\u0000\""]).to_string(),
            };
            if rng.gen_bool(0.7) {
                card[i].1 = v;
            } else {
                card[i].1 = weird_value(rng);
            }
        }
    }
    render_object(&card)
}

fn broken_field(rng: &mut StdRng, name: &str, ctx: &Ctx) -> String {
    if rng.gen_bool(0.25) {
        return weird_value(rng);
    }
    let today = chrono::Utc::now().date_naive();
    match name {
        "flight_id" => match rng.gen_range(0..5) {
            0 => json_str(&format!("NOPE-{}", alnum(rng, 8))),
            1 => json_str(&ctx.flight_id.to_lowercase()),
            2 => json_str(&"F".repeat(rng.gen_range(100..20_000))),
            3 => "\"\"".into(),
            _ => "42".into(),
        },
        "date" => match rng.gen_range(0..6) {
            0 => "\"2024-02-30\"".into(),
            1 => json_str(&(today - chrono::Days::new(3)).to_string()),
            2 => json_str(&(today + chrono::Days::new(3_000)).to_string()),
            3 => pick(
                rng,
                &["\"+262143-12-31\"", "\"-262144-01-01\"", "\"9999-12-31\""],
            )
            .into(),
            4 => {
                let d: chrono::NaiveDate = ctx.date.parse().unwrap();
                json_str(&(d + chrono::Days::new(1)).to_string())
            }
            _ => "20300101".into(),
        },
        "cabin" => pick(
            rng,
            &["\"premium\"", "\"\"", "\"ECONOMY\"", "1", "[\"economy\"]"],
        )
        .into(),
        "passengers" => match rng.gen_range(0..9) {
            0 => "[]".into(),
            1 => format!(
                "[{}]",
                [r#"{"first_name":"A","last_name":"B"}"#; 10].join(",")
            ),
            2 => format!(
                "[{}]",
                vec![r#"{"first_name":"A","last_name":"B"}"#; rng.gen_range(100..1_000)].join(",")
            ),
            3 => r#"[{"first_name":"Ada"}]"#.into(),
            4 => r#"[{"first_name":"","last_name":""}]"#.into(),
            5 => format!(
                r#"[{{"first_name":"{}","last_name":"B"}}]"#,
                "x".repeat(rng.gen_range(1_000..30_000))
            ),
            6 => r#"[{"first_name":"\u0000\n\r","last_name":"\u202e"}]"#.into(),
            7 => pick(
                rng,
                &[
                    "[null]",
                    "[1]",
                    "{\"first_name\":\"A\",\"last_name\":\"B\"}",
                ],
            )
            .into(),
            _ => nested(rng.gen_range(2..200), true, true),
        },
        "email" => match rng.gen_range(0..4) {
            0 => "\"not-an-email\"".into(),
            1 => "\"\"".into(),
            2 => json_str(&format!(
                "{}@example.com",
                "a".repeat(rng.gen_range(300..20_000))
            )),
            _ => "\"a@b\"".into(),
        },
        "card" => match rng.gen_range(0..5) {
            0 => "\"4242424242424242\"".into(),
            1 => "[]".into(),
            _ => broken_card(rng),
        },
        "loyalty_id" => pick(rng, &["\"nope\"", "12345", "\"\"", "[]", "\"SK00000000\""]).into(),
        "faults" => pick(
            rng,
            &[
                r#"{"reserve_seat":{"mode":"explode"}}"#,
                r#"{"reserve_seat":{"mode":"transient","times":4294967296}}"#,
                r#"{"reserve_seat":{"mode":"transient","times":-1}}"#,
                r#"{"reserve_seat":{"mode":"transient","times":1000}}"#,
                r#"{"award_miles":{"mode":"delay","ms":18446744073709551616}}"#,
                r#"{"award_miles":{"mode":"delay","ms":60001}}"#,
                r#"{"nope":{"mode":"reject"}}"#,
                r#"{"reserve_seat":"reject"}"#,
                r#"{"reserve_seat":{}}"#,
                "[]",
            ],
        )
        .into(),
        _ => weird_value(rng),
    }
}

/// A booking request with one (sometimes a few) things wrong.
fn broken_booking(rng: &mut StdRng, ctx: &Ctx) -> String {
    let mut fields = valid_booking(ctx);
    if rng.gen_bool(0.3) {
        fields.push(("loyalty_id".into(), "null".into()));
    }
    if rng.gen_bool(0.3) {
        fields.push(("faults".into(), "{}".into()));
    }
    let breaks = if rng.gen_bool(0.8) {
        1
    } else {
        rng.gen_range(2..4)
    };
    for _ in 0..breaks {
        let i = rng.gen_range(0..fields.len());
        match rng.gen_range(0..10) {
            0 => {
                fields.remove(i);
            }
            1 => {
                let name = fields[i].0.clone();
                let v = broken_field(rng, &name, ctx);
                fields.push((name, v));
            }
            2 => fields.push((alnum(rng, 6), weird_value(rng))),
            3 => {
                let name = pick(rng, &["loyalty_id", "faults"]).to_string();
                let v = broken_field(rng, &name, ctx);
                fields.push((name, v));
            }
            _ => {
                let name = fields[i].0.clone();
                fields[i].1 = broken_field(rng, &name, ctx);
            }
        }
    }
    render_object(&fields)
}

fn broken_enroll(rng: &mut StdRng) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("first_name".into(), "\"Ada\"".into()),
        ("last_name".into(), "\"Lovelace\"".into()),
        (
            "email".into(),
            json_str(&format!("{}@example.com", alnum(rng, 10))),
        ),
    ];
    let i = rng.gen_range(0..fields.len());
    match rng.gen_range(0..4) {
        0 => {
            fields.remove(i);
        }
        1 => fields.push((alnum(rng, 5), weird_value(rng))),
        _ => fields[i].1 = weird_value(rng),
    }
    render_object(&fields)
}

fn broken_faults(rng: &mut StdRng) -> String {
    let steps = [
        "reserve_seat",
        "authorize_payment",
        "award_miles",
        "confirm_booking",
        "nope",
        "",
    ];
    let modes = [
        "none",
        "reject",
        "transient",
        "delay",
        "lose_reply",
        "explode",
        "",
    ];
    let mut fields = Vec::new();
    for _ in 0..rng.gen_range(1..5) {
        let step = pick(rng, &steps).to_string();
        let mut fault = vec![("mode".to_string(), json_str(pick(rng, &modes)))];
        match rng.gen_range(0..4) {
            0 => fault.push(("times".into(), weird_number(rng))),
            1 => fault.push(("ms".into(), weird_number(rng))),
            2 => fault.push(("times".into(), weird_value(rng))),
            _ => {}
        }
        let v = if rng.gen_bool(0.15) {
            weird_value(rng)
        } else {
            render_object(&fault)
        };
        fields.push((step, v));
    }
    render_object(&fields)
}

fn junk_json(rng: &mut StdRng, ctx: &Ctx) -> Vec<u8> {
    match rng.gen_range(0..12) {
        0 => pick(
            rng,
            &[
                "{",
                "}",
                "{not json",
                "[1,2",
                "\"abc",
                "nul",
                "tru",
                "{\"a\":}",
                "{\"a\":1,}",
                "{'a':1}",
                "{\"a\" 1}",
                "// c\n{}",
                "{}{}",
                "[]",
                "0",
                "\"str\"",
                "null",
                "   ",
                "",
                "1e400",
                "{\"a\":1e400}",
                "\u{feff}{}",
                "{\"flight_id\":\"x\",\"flight_id\":1}",
            ],
        )
        .as_bytes()
        .to_vec(),
        1 => vec![0xff, 0xfe, 0xfd, b'{', b'}'],
        2 => b"{\"flight_id\":\"\xff\xfe\"}".to_vec(),
        3 => b"{\"a\":\"\x00\"}\x00".to_vec(),
        4 => {
            let n = rng.gen_range(1..4_000);
            (0..n).map(|_| rng.gen::<u8>()).collect()
        }
        5 => {
            let n = rng.gen_range(1..4_000);
            random_from(rng, SAFE, n).into_bytes()
        }
        6 => {
            let keys: Vec<String> = (0..rng.gen_range(100..4_000))
                .map(|i| format!("\"k{i}\":{i}"))
                .collect();
            format!("{{{}}}", keys.join(",")).into_bytes()
        }
        7 => {
            // A valid booking cut short.
            let full = render_object(&valid_booking(ctx));
            let cut = rng.gen_range(0..full.len());
            full.as_bytes()[..cut].to_vec()
        }
        8 => {
            let depth = *[64usize, 127, 128, 129, 200, 1_000, 10_000, 30_000]
                .choose(rng)
                .unwrap();
            nested(depth, rng.gen_bool(0.5), rng.gen_bool(0.8)).into_bytes()
        }
        9 => format!(
            "{{\"flight_id\":{}}}",
            nested(rng.gen_range(100..5_000), true, true)
        )
        .into_bytes(),
        10 => weird_value(rng).into_bytes(),
        _ => weird_number(rng).into_bytes(),
    }
}

fn gen_body(rng: &mut StdRng, ctx: &Ctx, endpoint: Endpoint) -> Vec<u8> {
    if rng.gen_bool(0.3) {
        return junk_json(rng, ctx);
    }
    match endpoint {
        Endpoint::Enroll => broken_enroll(rng).into_bytes(),
        Endpoint::PutFaults => broken_faults(rng).into_bytes(),
        Endpoint::AdminCancel => format!("{{\"reason\":{}}}", weird_value(rng)).into_bytes(),
        _ => broken_booking(rng, ctx).into_bytes(),
    }
}

fn header_value(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if rng.gen_bool(0.1) {
                rng.gen_range(0x80..=0xffu8)
            } else {
                rng.gen_range(0x20..=0x7eu8)
            }
        })
        .collect()
}

/// A well-framed HTTP/1.1 request with hostile content.
fn gen_wellformed(rng: &mut StdRng, ctx: &Ctx) -> Case {
    let route: &Route = ROUTES.choose(rng).unwrap();
    let method = match rng.gen_range(0..100) {
        0..=69 => route.method,
        70..=84 => pick(rng, STANDARD_METHODS),
        _ => pick(rng, WEIRD_METHODS),
    };
    let head = method == "HEAD";
    let mut path = fill_pattern(rng, route.path, ctx);
    if rng.gen_bool(0.3) {
        path = mutate_path(rng, path, ctx);
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if rng.gen_bool(0.5) {
        path.push_str(&gen_query(rng, ctx));
    }
    // hyper answers a target over 64 KiB itself (414, empty body); the
    // malformed cases cover that.
    path.truncate(60_000);
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    if rng.gen_bool(0.9) {
        headers.push(("Host".into(), b"127.0.0.1".to_vec()));
    }
    match rng.gen_range(0..10) {
        0 | 1 => {}
        2 => headers.push(("Idempotency-Key".into(), Vec::new())),
        3 => headers.push(("Idempotency-Key".into(), "k".repeat(201).into_bytes())),
        4 => headers.push(("Idempotency-Key".into(), "k".repeat(200).into_bytes())),
        5 => headers.push(("Idempotency-Key".into(), b"caf\xc3\xa9 \xff".to_vec())),
        6 => headers.push(("Idempotency-Key".into(), b"a b c".to_vec())),
        _ => headers.push((
            "Idempotency-Key".into(),
            format!("fuzz-{}", alnum(rng, 12)).into_bytes(),
        )),
    }
    let content_type = pick(
        rng,
        &[
            "",
            "application/json",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/vnd.foo+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "json",
            ";",
            "application/json;;;;",
        ],
    );
    if !content_type.is_empty() {
        headers.push(("Content-Type".into(), content_type.as_bytes().to_vec()));
    }
    let good_auth = format!("Bearer {TOKEN}");
    let auth: Option<String> = match rng.gen_range(0..9) {
        0..=2 => None,
        3 => Some("Bearer wrong".into()),
        4 => Some("Bearer".into()),
        5 => Some("Basic YWRtaW46YWRtaW4=".into()),
        6 => Some(format!("Bearer {}", "t".repeat(rng.gen_range(100..10_000)))),
        7 => Some(TOKEN.into()),
        // The right token (odd spacing and case included), except on the
        // endless stream of every saga's events, and on the one saga's
        // events route a byte mutation may turn into it.
        _ if matches!(route.endpoint, Endpoint::AllEvents | Endpoint::SagaEvents) => {
            Some("Bearer nope".into())
        }
        _ => Some(if rng.gen_bool(0.5) {
            good_auth
        } else {
            format!("  bEaReR   {TOKEN}  ")
        }),
    };
    if let Some(a) = auth {
        headers.push(("Authorization".into(), a.into_bytes()));
    }
    for _ in 0..rng.gen_range(0..6) {
        let n = rng.gen_range(1..20);
        let name = format!("X-{}", alnum(rng, n));
        let len = rng.gen_range(0..200);
        headers.push((name, header_value(rng, len)));
    }
    if rng.gen_bool(0.05) {
        let len = rng.gen_range(8_000..100_000);
        headers.push(("X-Huge".into(), header_value(rng, len)));
    }
    if rng.gen_bool(0.1) {
        let v = pick(
            rng,
            &["-1", "abc", "99999999999999999999999", "1e3", "0", ""],
        );
        headers.push(("Last-Event-ID".into(), v.as_bytes().to_vec()));
    }
    if rng.gen_bool(0.05) {
        headers.push(("Expect".into(), b"100-continue".to_vec()));
    }
    if rng.gen_bool(0.05) {
        headers.push(("Connection".into(), b"Upgrade, HTTP2-Settings".to_vec()));
        headers.push(("Upgrade".into(), b"h2c".to_vec()));
        headers.push((
            "HTTP2-Settings".into(),
            b"AAMAAABkAARAAAAAAAIAAAAA".to_vec(),
        ));
    }
    for (name, values) in [
        (
            "Accept",
            &["*/*", "text/html", "application/xml", "\u{0}"][..],
        ),
        (
            "Accept-Encoding",
            &["gzip", "br, deflate", "identity;q=0"][..],
        ),
        (
            "Range",
            &["bytes=0-10", "bytes=-1", "bytes=999999999999-"][..],
        ),
    ] {
        if rng.gen_bool(0.05) {
            let v = values.choose(rng).unwrap().replace('\u{0}', "");
            headers.push((name.into(), v.into_bytes()));
        }
    }
    let with_body = matches!(method, "POST" | "PUT" | "PATCH") || rng.gen_bool(0.15);
    let mut may_close = false;
    let mut body = if with_body {
        gen_body(rng, ctx, route.endpoint)
    } else {
        Vec::new()
    };
    if with_body && rng.gen_bool(0.03) {
        // Over the 64 KiB limit.
        let n = rng.gen_range(64 * 1024 + 1..200_000);
        body = format!("\"{}\"", "z".repeat(n)).into_bytes();
        may_close = true;
    }
    let chunked = !body.is_empty() && rng.gen_bool(0.15);
    if chunked {
        headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
    } else if !body.is_empty() || rng.gen_bool(0.3) {
        headers.push(("Content-Length".into(), body.len().to_string().into_bytes()));
    }
    if rng.gen_bool(0.05) {
        headers.push(("Connection".into(), b"close".to_vec()));
    }
    headers.shuffle(rng);
    let mut bytes = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (k, v) in &headers {
        bytes.extend_from_slice(k.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(v);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    if chunked {
        let mut rest = &body[..];
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(20_000));
            bytes.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            bytes.extend_from_slice(&rest[..n]);
            bytes.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&body);
    }
    Case {
        bytes,
        head,
        may_close,
    }
}

/// Requests that break HTTP itself: the request line, header syntax,
/// framing, sizes, other protocols.
fn malformed_fixed() -> Vec<Vec<u8>> {
    let post = "POST /api/bookings HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Type: application/json\r\n";
    let mut cases: Vec<Vec<u8>> = [
        "GE T /healthz HTTP/1.1\r\n\r\n",
        "G\x01T /healthz HTTP/1.1\r\n\r\n",
        " GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1 extra\r\n\r\n",
        "GET /healthz\r\n\r\n",
        "GET\r\n\r\n",
        "GET  /healthz HTTP/1.1\r\n\r\n",
        "/healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/9.9\r\n\r\n",
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /healthz HTTP/2.0\r\n\r\n",
        "GET /healthz HTTP/0.9\r\n\r\n",
        "GET /healthz FTP/1.1\r\n\r\n",
        "GET http://example.com/healthz HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET http://example.com HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "GET healthz HTTP/1.1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET /<script> HTTP/1.1\r\n\r\n",
        "GET /\x00 HTTP/1.1\r\n\r\n",
        "GET /healthz#frag HTTP/1.1\r\n\r\n",
        "GET /api/bookings/x`y HTTP/1.1\r\n\r\n",
        "GET /api/flights/search?from=JFK#x HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
        "CONNECT /api/bookings HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n: empty-name\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX-A\x01: b\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX-A: b\x00c\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX-A: b\x7fc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX-A: b\rc\r\n\r\n",
        "GET /healthz HTTP/1.1\nHost: x\n\n",
        "GET /healthz HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
        "\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET /api/bookings/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "Content-Length: 2, 3\r\n\r\n{}",
        "Content-Length: 2, 2\r\n\r\n{}",
        "Content-Length: -1\r\n\r\n{}",
        "Content-Length: abc\r\n\r\n{}",
        "Content-Length: 1e3\r\n\r\n{}",
        "Content-Length: +2\r\n\r\n{}",
        "Content-Length:  2 \r\n\r\n{}",
        "Content-Length: 18446744073709551616\r\n\r\n{}",
        "Content-Length: 0x10\r\n\r\n{}",
        "Content-Length: \r\n\r\n{}",
        "Content-Length: 100\r\n\r\n{}",
        "Transfer-Encoding: gzip\r\n\r\n{}",
        "Transfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n-1\r\n{}\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}X0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n10\r\n{}\r\n",
        "Transfer-Encoding: chunked\r\n\r\n2;a=b;c\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n",
        "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        "Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
        "Content-Length: 0\r\n\r\nGET /api/admin/sagas HTTP/1.1\r\n\r\n",
        "Content-Length: 0\r\n\r\nGARBAGE\r\n\r\n",
    ] {
        cases.push(format!("{post}{framing}").into_bytes());
    }
    // A huge chunk extension; a head over hyper's buffer; 101 headers; a
    // URI over 64 KiB; 50 pipelined requests; a TLS ClientHello; bare
    // bytes after a request line.
    cases.push(
        format!(
            "{post}Transfer-Encoding: chunked\r\n\r\n2;{}\r\n{{}}\r\n0\r\n\r\n",
            "e".repeat(100_000)
        )
        .into_bytes(),
    );
    cases.push(
        format!(
            "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(500_000)
        )
        .into_bytes(),
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    cases.push(many.into_bytes());
    cases.push(format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(70_000)).into_bytes());
    cases.push(
        format!(
            "GET /api/airports?q={} HTTP/1.1\r\n\r\n",
            "q".repeat(66_000)
        )
        .into_bytes(),
    );
    cases.push(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50));
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ];
    hello.extend((0..160u32).map(|i| (i * 7) as u8));
    cases.push(hello);
    let mut bin = b"POST /api/bookings HTTP/1.1\r\n".to_vec();
    bin.extend((0..=255u8).cycle().take(3_000));
    cases.push(bin);
    cases
}

/// A well-formed request with random bytes flipped, inserted, deleted,
/// duplicated or cut.
fn mutate_bytes(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(1..6) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..6) {
            0 => bytes[i] = rng.gen(),
            1 => bytes.insert(i, rng.gen()),
            2 => {
                let j = (i + rng.gen_range(1..20)).min(bytes.len());
                bytes.drain(i..j);
            }
            3 => {
                let j = (i + rng.gen_range(1..40)).min(bytes.len());
                let dup = bytes[i..j].to_vec();
                bytes.splice(i..i, dup);
            }
            4 => bytes.truncate(i),
            _ => bytes.insert(i, *b"\r\n :\0".choose(rng).unwrap()),
        }
    }
    bytes
}

#[derive(Default)]
struct FuzzReport {
    sent: usize,
    malformed: usize,
    by_status: BTreeMap<u16, usize>,
    closed_without_answer: usize,
    retries: usize,
    failures: Vec<String>,
}

impl FuzzReport {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }
}

/// Sends a well-formed case on the worker's keep-alive connection (a new
/// one when the server closed it).
async fn run_wellformed(
    addr: SocketAddr,
    conn: &mut Option<Conn>,
    case: &Case,
    report: &mut FuzzReport,
    tag: &str,
) {
    let mut outcome = Err(io::Error::other("not sent"));
    // A kept-alive connection the server had just closed fails without
    // meaning anything, and so, on a loaded machine, may a new one; a
    // request that breaks connections fails every attempt.
    for attempt in 0..3 {
        let fresh = conn.is_none();
        if fresh {
            match Conn::open(addr).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    report.fail(format!("{tag}: cannot connect: {e}"));
                    return;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        outcome = match tokio::time::timeout(
            Duration::from_secs(15),
            c.roundtrip(&case.bytes, case.head),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 15 s")),
        };
        match &outcome {
            Ok(_) => break,
            Err(e) if e.kind() != io::ErrorKind::TimedOut && !case.may_close => {
                if !fresh || attempt > 0 {
                    report.retries += 1;
                }
                *conn = None;
            }
            Err(_) => break,
        }
    }
    match outcome {
        Ok(resp) => {
            *report.by_status.entry(resp.status).or_default() += 1;
            if let Some(p) = resp.problem(case.head) {
                report.fail(format!("{tag}: {p}\n    request: {}", show(&case.bytes)));
            }
            if case.may_close
                || resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                *conn = None;
            }
        }
        Err(e) if case.may_close => {
            report.closed_without_answer += 1;
            let _ = e;
            *conn = None;
        }
        Err(e) => {
            report.fail(format!(
                "{tag}: no answer to a well-formed request: {e}\n    request: {}",
                show(&case.bytes)
            ));
            *conn = None;
        }
    }
}

/// Sends malformed bytes on a new connection, half-closes it and checks
/// whatever came back.
async fn run_malformed(addr: SocketAddr, bytes: &[u8], report: &mut FuzzReport, tag: &str) {
    report.malformed += 1;
    let out = match send_and_drain(addr, bytes, Duration::from_secs(15)).await {
        Ok(out) => out,
        Err(e) => {
            report.fail(format!("{tag}: {e}\n    request: {}", show(bytes)));
            return;
        }
    };
    if out.is_empty() {
        report.closed_without_answer += 1;
        return;
    }
    let mut rest = &out[..];
    let mut head = bytes.starts_with(b"HEAD ");
    let mut parsed = 0;
    while !rest.is_empty() {
        match parse_response(rest, head, true) {
            Parsed::Done(resp, used) => {
                parsed += 1;
                *report.by_status.entry(resp.status).or_default() += 1;
                // hyper's own answers to unparseable requests (400, 414,
                // 431) have an empty body; the application's must be JSON.
                let hyper_own = resp.body.is_empty() && resp.header("content-type").is_none();
                if resp.status >= 500 || !hyper_own {
                    if let Some(p) = resp.problem(head) {
                        report.fail(format!("{tag}: {p}\n    request: {}", show(bytes)));
                    }
                }
                rest = &rest[used..];
                head = false;
            }
            Parsed::Partial | Parsed::Invalid(_) if parsed > 0 => break,
            Parsed::Partial | Parsed::Invalid(_) => {
                report.fail(format!(
                    "{tag}: unparseable answer {:?}\n    request: {}",
                    show(rest),
                    show(bytes)
                ));
                break;
            }
        }
    }
}

fn fuzz_seed() -> u64 {
    match std::env::var("HOSTILE_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HOSTILE_SEED must be a u64, got {s:?}")),
        Err(_) => rand::random(),
    }
}

/// A count from the environment, `default` when unset. A count below a
/// tenth of the default is refused: a knob may make a run longer, never
/// shrink it to a test that proves nothing.
fn env_count(name: &str, default: usize) -> usize {
    let floor = default / 10;
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= floor => n,
            _ => panic!("{name}={v:?}: must be a count of at least {floor}"),
        },
    }
}

#[test]
fn random_and_malformed_requests_never_crash_or_5xx() {
    let _serial = exclusive();
    let seed = fuzz_seed();
    let cases = env_count("HOSTILE_CASES", 3_000);
    const WORKERS: usize = 4;
    eprintln!("hostile fuzz: HOSTILE_SEED={seed} HOSTILE_CASES={cases}");
    runtime().block_on(async move {
        // Default deadlines: a loaded machine must not turn a slow
        // worker into a timeout (the deadlines are the next test's).
        let config = ServerConfig {
            shutdown_grace: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        let s = Server::start(config).await;
        let addr = s.addr;
        let ctx = find_flight(addr).await;
        let started = Instant::now();

        // The fixed malformed requests first, then the random mix.
        let mut report = FuzzReport::default();
        for (i, bytes) in malformed_fixed().iter().enumerate() {
            run_malformed(addr, bytes, &mut report, &format!("fixed case {i}")).await;
        }
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let ctx = ctx.clone();
            let n = cases / WORKERS + usize::from(w < cases % WORKERS);
            workers.push(tokio::spawn(async move {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut report = FuzzReport::default();
                let mut conn: Option<Conn> = None;
                for i in 0..n {
                    let tag = format!("seed {seed} worker {w} case {i}");
                    let case = gen_wellformed(&mut rng, &ctx);
                    report.sent += 1;
                    if rng.gen_bool(0.1) {
                        let bytes = mutate_bytes(&mut rng, case.bytes);
                        run_malformed(addr, &bytes, &mut report, &tag).await;
                    } else {
                        run_wellformed(addr, &mut conn, &case, &mut report, &tag).await;
                    }
                }
                report
            }));
        }
        for w in workers {
            let r = w.await.expect("fuzz worker");
            report.sent += r.sent;
            report.malformed += r.malformed;
            report.closed_without_answer += r.closed_without_answer;
            report.retries += r.retries;
            for (k, v) in r.by_status {
                *report.by_status.entry(k).or_default() += v;
            }
            for f in r.failures {
                report.fail(f);
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "hostile fuzz: {} random cases ({} malformed on the wire, incl. the fixed ones) in {:.1?}; \
             closed without an answer: {}; retried on a new connection: {}; statuses: {:?}",
            report.sent,
            report.malformed,
            elapsed,
            report.closed_without_answer,
            report.retries,
            report.by_status
        );
        assert!(
            report.failures.is_empty(),
            "HOSTILE_SEED={seed}: {} problem(s):\n{}",
            report.failures.len(),
            report.failures.join("\n")
        );
        s.assert_healthy(&format!("HOSTILE_SEED={seed}")).await;
        s.stop().await;
    });
}

/// Found by the fuzzer: an invalid `email` filter on the operators' payment
/// list is the client's mistake, yet the payments participant's
/// `InvalidRequest` error was mapped to `500`.
#[test]
fn admin_payments_with_an_invalid_email_is_a_client_error() {
    let _serial = exclusive();
    runtime().block_on(async {
        let s = Server::start(ServerConfig::default()).await;
        for email in ["x", "%00", "a%20b"] {
            let req = format!(
                "GET /api/admin/payments?email={email} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            );
            let r = request(s.addr, req.as_bytes(), false).await.unwrap();
            assert!(
                (400..500).contains(&r.status) && r.problem(false).is_none(),
                "GET /api/admin/payments?email={email}: {}",
                r.text()
            );
        }
        s.stop().await;
    });
}

// ---------------------------------------------------------------------------
// 2. Adversarial connections.
// ---------------------------------------------------------------------------

/// GETs `/healthz` on a new connection every 20 ms until `stop`; the
/// latencies (a failure counts as 10 s).
async fn probe_latency(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let ok = matches!(
            request(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", false).await,
            Ok(r) if r.status == 200
        );
        out.push(if ok {
            t.elapsed()
        } else {
            Duration::from_secs(10)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// Samples the RSS every 5 ms until `stop`; the largest seen.
async fn sample_rss(stop: Arc<AtomicBool>) -> u64 {
    let mut max = rss();
    while !stop.load(Ordering::SeqCst) {
        max = max.max(rss());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    max.max(rss())
}

const TEN_MB: usize = 10 * 1024 * 1024;

#[derive(Debug)]
struct BigBody {
    answer: Result<Response, String>,
    answered_after: Duration,
    written: usize,
    writer_cut_off: bool,
}

/// One way to send a 10 MB body: the request line and headers, chunked or
/// not, and the status it must get (unless the connection is reset first).
struct BigCase {
    name: &'static str,
    head: &'static str,
    chunked: bool,
    status: u16,
}

const BIG_CASES: &[BigCase] = &[
    BigCase {
        name: "booking, Content-Length",
        head: "POST /api/bookings HTTP/1.1\r\nHost: t\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\n",
        chunked: false,
        status: 413,
    },
    BigCase {
        name: "booking, chunked",
        head: "POST /api/bookings HTTP/1.1\r\nHost: t\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\n",
        chunked: true,
        status: 413,
    },
    BigCase {
        name: "faults (admin), chunked",
        head: "PUT /api/faults HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer hostile-admin-token-0123456789abcdef\r\nContent-Type: application/json\r\n",
        chunked: true,
        status: 413,
    },
    BigCase {
        name: "loyalty, Content-Length",
        head: "POST /api/loyalty HTTP/1.1\r\nHost: t\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\n",
        chunked: false,
        status: 413,
    },
    // A route that never reads a body: answered, then the connection must
    // be closed rather than the 10 MB read and thrown away.
    BigCase {
        name: "healthz, Content-Length",
        head: "GET /healthz HTTP/1.1\r\nHost: t\r\n",
        chunked: false,
        status: 200,
    },
];

/// Sends a 10 MB body as `case` says while reading the answer.
async fn big_body(addr: SocketAddr, case: &BigCase) -> BigBody {
    let chunked = case.chunked;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {TEN_MB}")
    };
    let head = format!("{}{framing}\r\n\r\n", case.head);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];
        if wr.write_all(head.as_bytes()).await.is_err() {
            return (0, true);
        }
        let mut written = 0;
        while written < TEN_MB {
            let r = if chunked {
                let mut r = wr
                    .write_all(format!("{:x}\r\n", CHUNK.len()).as_bytes())
                    .await;
                if r.is_ok() {
                    r = wr.write_all(&CHUNK).await;
                }
                if r.is_ok() {
                    r = wr.write_all(b"\r\n").await;
                }
                r
            } else {
                wr.write_all(&CHUNK).await
            };
            if r.is_err() {
                return (written, true);
            }
            written += CHUNK.len();
        }
        if chunked && wr.write_all(b"0\r\n\r\n").await.is_err() {
            return (written, true);
        }
        (written, false)
    });
    let mut buf = Vec::new();
    let answer = match tokio::time::timeout(
        Duration::from_secs(10),
        read_response(&mut rd, &mut buf, false),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("connection ended without an answer: {e}")),
        Err(_) => Err("no answer within 10 s".into()),
    };
    let answered_after = started.elapsed();
    // Stop reading: the writer must be cut off by the server closing.
    drop(rd);
    let (written, writer_cut_off) =
        match tokio::time::timeout(Duration::from_secs(10), writer).await {
            Ok(r) => r.unwrap(),
            Err(_) => (usize::MAX, false),
        };
    BigBody {
        answer,
        answered_after,
        written,
        writer_cut_off,
    }
}

/// Sends `head`, then `piece` every `every`, forever; returns the answer
/// (or how the connection ended) and when, and when the connection closed.
async fn trickle(
    addr: SocketAddr,
    head: &'static [u8],
    piece: &'static [u8],
    every: Duration,
) -> (Result<Response, String>, Duration, Option<Duration>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        if wr.write_all(head).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            if wr.write_all(piece).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let answer = match tokio::time::timeout(
        Duration::from_secs(10),
        read_response(&mut rd, &mut buf, false),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("closed: {e}")),
        Err(_) => Err("still open after 10 s".into()),
    };
    let answered = started.elapsed();
    // After the answer the server must close the connection.
    let closed = match &answer {
        Err(e) if e.starts_with("closed") => Some(answered),
        Err(_) => None,
        Ok(_) => {
            let mut chunk = [0u8; 1024];
            let end = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            end.ok().map(|()| started.elapsed())
        }
    };
    writer.abort();
    (answer, answered, closed)
}

/// Connects, optionally sends one request and reads its answer, then
/// waits for the server to close the idle connection.
async fn idle(addr: SocketAddr, first: Option<&[u8]>) -> Option<Duration> {
    let mut c = Conn::open(addr).await.unwrap();
    if let Some(req) = first {
        let r = c.roundtrip(req, false).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
fn adversarial_connections_are_cut_off_while_others_are_served() {
    let _serial = exclusive();
    runtime().block_on(async {
        let timeout = Duration::from_secs(1);
        let config = ServerConfig {
            header_read_timeout: timeout,
            body_read_timeout: timeout,
            shutdown_grace: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let s = Server::start(config).await;
        let addr = s.addr;
        let started = Instant::now();

        // (a) 10 MB bodies, one after the other for a second, while the
        // RSS is sampled and a normal client is served.
        let stop = Arc::new(AtomicBool::new(false));
        let prober = tokio::spawn(probe_latency(addr, stop.clone()));
        let rss_stop = Arc::new(AtomicBool::new(false));
        let rss_before_big = rss();
        let sampler = tokio::spawn(sample_rss(rss_stop.clone()));
        let mut big = Vec::new();
        let big_started = Instant::now();
        while big.len() < 2 * BIG_CASES.len() || big_started.elapsed() < Duration::from_secs(1) {
            let case = &BIG_CASES[big.len() % BIG_CASES.len()];
            big.push((case, big_body(addr, case).await));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rss_stop.store(true, Ordering::SeqCst);
        let rss_peak_big = sampler.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let lat_big = prober.await.unwrap();

        // (b), (c): never-ending and trickled bodies, headers a byte at a
        // time, idle connections, many of each at once.
        let stop = Arc::new(AtomicBool::new(false));
        let prober = tokio::spawn(probe_latency(addr, stop.clone()));
        const CHUNKED_HEAD: &[u8] = b"POST /api/bookings HTTP/1.1\r\nHost: t\r\nIdempotency-Key: slow\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        const LENGTH_HEAD: &[u8] = b"POST /api/bookings HTTP/1.1\r\nHost: t\r\nIdempotency-Key: slow2\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
        const HEADERS_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        const CROWD: usize = 32;
        let mut crowd = Vec::new();
        for i in 0..CROWD {
            let (head, piece, every): (&'static [u8], &'static [u8], u64) = match i % 4 {
                0 => (CHUNKED_HEAD, b"1\r\n \r\n", 100),
                1 => (LENGTH_HEAD, b" ", 100),
                2 => (HEADERS_HEAD, b"a", 1_000),
                _ => (HEADERS_HEAD, b"a", 200),
            };
            crowd.push(tokio::spawn(trickle(
                addr,
                head,
                piece,
                Duration::from_millis(every),
            )));
        }
        let idle_new = tokio::spawn(idle(addr, None));
        let idle_kept = tokio::spawn(idle(
            addr,
            Some(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"),
        ));
        let mut slow = Vec::new();
        for c in crowd {
            slow.push(c.await.unwrap());
        }
        let idle_new = idle_new.await.unwrap();
        let idle_kept = idle_kept.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let lat_slow = prober.await.unwrap();
        let total = started.elapsed();

        // Figures first, then the verdicts.
        for (case, o) in big.iter().take(BIG_CASES.len()) {
            eprintln!(
                "10 MB body ({}): answer {:?} after {:.0?}; client wrote {:.2} MiB before being cut off ({})",
                case.name,
                o.answer.as_ref().map(|r| r.status),
                o.answered_after,
                o.written as f64 / MIB as f64,
                o.writer_cut_off,
            );
        }
        let most_written = big.iter().map(|(_, o)| o.written).max().unwrap_or(0);
        eprintln!(
            "{} 10 MB bodies in {:.1?}: at most {:.2} MiB written before the cut; RSS {:.1} MiB before, peak {:.1} MiB (+{:.2} MiB)",
            big.len(),
            big_started.elapsed(),
            most_written as f64 / MIB as f64,
            mib(rss_before_big),
            mib(rss_peak_big),
            mib(rss_peak_big.saturating_sub(rss_before_big))
        );
        let mut kinds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, (answer, answered, closed)) in slow.iter().enumerate() {
            let kind = ["endless chunked body", "trickled body (Content-Length)", "headers 1 byte/s", "headers 5 bytes/s"][i % 4];
            kinds.entry(kind).or_default().push(format!(
                "{} at {:.2?}, closed at {:?}",
                match answer {
                    Ok(r) => r.status.to_string(),
                    Err(e) => e.clone(),
                },
                answered,
                closed
            ));
        }
        for (k, v) in &kinds {
            eprintln!("{k}: {}", v[0]);
        }
        eprintln!("idle new connection closed after {idle_new:?}; idle kept-alive connection closed after {idle_kept:?}");
        for (what, lat) in [("10 MB bodies", &lat_big), ("slow clients", &lat_slow)] {
            let mut l = lat.clone();
            l.sort();
            eprintln!(
                "normal GET /healthz during {what}: {} probes, median {:.2?}, p99 {:.2?}, max {:.2?}",
                l.len(),
                percentile(&l, 0.5),
                percentile(&l, 0.99),
                l.last().copied().unwrap_or_default()
            );
        }
        eprintln!("adversarial connections: {total:.1?} in all");

        for (case, o) in &big {
            let what = case.name;
            match &o.answer {
                Ok(r) => {
                    assert_eq!(r.status, case.status, "10 MB body ({what}): {}", r.text());
                    assert!(r.problem(false).is_none(), "{}", r.text());
                }
                // A reset before the answer was read also stops it.
                Err(e) => eprintln!("10 MB body ({what}): no answer ({e}), connection closed"),
            }
            assert!(
                o.answered_after < Duration::from_secs(3),
                "10 MB body ({what}): answered after {:?}",
                o.answered_after
            );
            assert!(
                o.writer_cut_off && o.written < TEN_MB,
                "10 MB body ({what}): the server took all of it ({} bytes written, cut off: {})",
                o.written,
                o.writer_cut_off
            );
        }
        assert!(
            rss_peak_big.saturating_sub(rss_before_big) < 5 * MIB,
            "RSS grew by {:.1} MiB while 10 MB bodies were sent",
            mib(rss_peak_big.saturating_sub(rss_before_big))
        );
        let slack = Duration::from_secs(2);
        for (i, (answer, answered, closed)) in slow.iter().enumerate() {
            match i % 4 {
                0 | 1 => {
                    let r = answer
                        .as_ref()
                        .unwrap_or_else(|e| panic!("slow body {i}: no 408: {e}"));
                    assert_eq!(r.status, 408, "slow body {i}: {}", r.text());
                    assert!(r.problem(false).is_none(), "{}", r.text());
                    assert!(
                        *answered >= timeout - Duration::from_millis(50)
                            && *answered < timeout + slack,
                        "slow body {i}: 408 after {answered:?}"
                    );
                    assert!(
                        closed.is_some_and(|c| c < timeout + slack * 2),
                        "slow body {i}: connection still open after the 408 ({closed:?})"
                    );
                }
                _ => {
                    assert!(
                        !matches!(answer, Ok(r) if r.status < 400),
                        "slow headers {i}: served: {answer:?}"
                    );
                    assert!(
                        closed.is_some_and(|c| c >= timeout - Duration::from_millis(50)
                            && c < timeout + slack),
                        "slow headers {i}: closed at {closed:?} (answer {answer:?})"
                    );
                }
            }
        }
        for (what, closed) in [("new", idle_new), ("kept-alive", idle_kept)] {
            assert!(
                closed.is_some_and(|c| c < timeout + slack),
                "idle {what} connection: closed at {closed:?}"
            );
        }
        for (what, lat) in [("10 MB bodies", &lat_big), ("slow clients", &lat_slow)] {
            assert!(lat.len() >= 3, "too few probes during {what}");
            let max = lat.iter().max().unwrap();
            assert!(
                *max < Duration::from_millis(500),
                "a normal GET took {max:?} during {what}: {lat:?}"
            );
        }
        s.assert_healthy("adversarial connections").await;
        s.stop().await;
    });
}

// ---------------------------------------------------------------------------
// 3. Memory after 100,000 bad requests.
// ---------------------------------------------------------------------------

/// The `i`th bad request of the mix, and the status it must get.
fn bad_request(i: usize) -> (Vec<u8>, u16) {
    let id = format!("nosuch{i:08x}");
    let key = format!("mem-{i}");
    let post = |path: &str, key: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (req, status) = match i % 12 {
        0 => (post("/api/bookings", &key, "{\"flight_id\":"), 400),
        1 => (
            post(
                "/api/bookings",
                &key,
                &format!(
                    r#"{{"flight_id":"NOPE-{i}","date":"2020-01-01","cabin":"economy","passengers":[],"email":"x","card":{{"number":"1","exp_month":12,"exp_year":2035,"cvc":"123","holder_name":"A"}}}}"#
                ),
            ),
            422,
        ),
        2 => (get(&format!("/api/bookings/{id}")), 404),
        3 => (get(&format!("/api/flights/NOPE-{i}?date=2030-01-07")), 404),
        4 => (
            format!("DELETE /api/bookings/{id} HTTP/1.1\r\nHost: t\r\n\r\n"),
            405,
        ),
        5 => (get(&format!("/api/loyalty/{id}?last_name=x{i}")), 404),
        6 => (post("/api/loyalty", &key, "[1,2"), 400),
        7 => (get(&format!("/api/no/such/{id}?junk={i}")), 404),
        8 => (
            format!("PUT /api/faults HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong-{i}\r\n\r\n"),
            401,
        ),
        9 => (
            get(&format!(
                "/api/flights/search?from=JFK&to=LAX&date=bad{i}&passengers=-1"
            )),
            422,
        ),
        10 => (get(&format!("/api/sagas/{id}/events")), 404),
        _ => (
            format!(
                "POST /api/admin/sagas/{id}/cancel HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer no-{i}\r\n\r\n"
            ),
            401,
        ),
    };
    (req.into_bytes(), status)
}

#[derive(Default)]
struct LoadStats {
    by_status: BTreeMap<u16, usize>,
    reconnects: usize,
    failures: Vec<String>,
}

/// Sends bad requests `offset..offset + total` over `concurrency`
/// keep-alive connections.
async fn bad_load(addr: SocketAddr, offset: usize, total: usize, concurrency: usize) -> LoadStats {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut stats = LoadStats::default();
            let mut conn = Conn::open(addr).await.expect("connect");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (req, want) = bad_request(offset + i);
                let mut resp = conn.roundtrip(&req, false).await;
                if resp.is_err() {
                    // The server may close a kept-alive connection; once.
                    stats.reconnects += 1;
                    conn = Conn::open(addr).await.expect("reconnect");
                    resp = conn.roundtrip(&req, false).await;
                }
                match resp {
                    Ok(r) => {
                        *stats.by_status.entry(r.status).or_default() += 1;
                        if r.status != want && stats.failures.len() < 10 {
                            stats.failures.push(format!(
                                "request {}: wanted {want}, got {}\n    request: {}",
                                offset + i,
                                r.text(),
                                show(&req)
                            ));
                        }
                    }
                    Err(e) => {
                        if stats.failures.len() < 10 {
                            stats
                                .failures
                                .push(format!("request {}: no answer: {e}", offset + i));
                        }
                        conn = Conn::open(addr).await.expect("reconnect");
                    }
                }
            }
            stats
        }));
    }
    let mut all = LoadStats::default();
    for w in workers {
        let s = w.await.expect("load worker");
        all.reconnects += s.reconnects;
        for (k, v) in s.by_status {
            *all.by_status.entry(k).or_default() += v;
        }
        all.failures.extend(s.failures);
    }
    all
}

#[test]
fn memory_stays_bounded_after_100k_bad_requests() {
    let _serial = exclusive();
    let total = env_count("HOSTILE_BAD_REQUESTS", 100_000);
    const WARM_UP: usize = 5_000;
    const CONCURRENCY: usize = 16;
    runtime().block_on(async move {
        let rss_start = rss();
        let s = Server::start(ServerConfig {
            shutdown_grace: Duration::from_secs(2),
            ..ServerConfig::default()
        })
        .await;
        let warm = bad_load(s.addr, 0, WARM_UP, CONCURRENCY).await;
        assert!(warm.failures.is_empty(), "{}", warm.failures.join("\n"));
        let rss_before = rss();
        let started = Instant::now();
        let stats = bad_load(s.addr, WARM_UP, total, CONCURRENCY).await;
        let elapsed = started.elapsed();
        let rss_after = rss();
        let growth = rss_after.saturating_sub(rss_before);
        eprintln!(
            "{total} bad requests at concurrency {CONCURRENCY} in {elapsed:.1?} ({:.0} requests/s), {} reconnects; statuses {:?}",
            total as f64 / elapsed.as_secs_f64(),
            stats.reconnects,
            stats.by_status
        );
        eprintln!(
            "RSS: {:.1} MiB before the server, {:.1} MiB after {WARM_UP} warm-up requests, {:.1} MiB after {total} more (+{:.1} MiB)",
            mib(rss_start),
            mib(rss_before),
            mib(rss_after),
            mib(growth)
        );
        assert!(
            stats.failures.is_empty(),
            "{} wrong answers, the first:\n{}",
            stats.failures.len(),
            stats.failures.join("\n")
        );
        assert_eq!(stats.by_status.values().sum::<usize>(), total);
        assert!(
            growth < 64 * MIB,
            "RSS grew by {:.1} MiB over {total} bad requests",
            mib(growth)
        );
        s.assert_healthy("after the bad requests").await;
        s.stop().await;
    });
}
