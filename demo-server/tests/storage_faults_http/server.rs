//! The demo server as a real child process on a loopback port, a minimal
//! HTTP/1.1 client for it, and copying a seeded data directory.
//!
//! The server is only ever stopped with SIGKILL: no graceful shutdown,
//! which would flush sled, runs in these tests.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// One answer: status, lower-cased head, JSON body (`Null` if none).
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Status line and headers, lower-cased.
    pub head: String,
    /// The JSON object in the body.
    pub body: Value,
}

/// One HTTP/1.1 exchange with `Connection: close`; `Err` when the server
/// did not answer (connection refused or reset, timeout, no status line).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Idempotency-Key: {k}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    // Bodies may be chunked: take the JSON object inside.
    let body = rest
        .find('{')
        .and_then(|a| rest.rfind('}').map(|b| &rest[a..=b]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    Ok(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body,
    })
}

/// A running server.
pub struct Server {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

/// How a start went.
pub enum Started {
    /// Up and answering `/healthz`.
    Up(Server),
    /// Exited before answering, with its log.
    Exited(String),
}

impl Server {
    /// Starts the server on `dir` and waits (up to 60 s) until `/healthz`
    /// answers 200.
    pub fn start(dir: &Path) -> Result<Started, String> {
        let port = free_port();
        let log = log_path(dir, port);
        let child = Command::new(BIN)
            .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            // One client books as fast as it can: the per-address rate
            // limits have their own test (tests/limits.rs).
            .args(["--rate-per-minute", "1000000", "--rate-burst", "1000000"])
            .env("DEMO_ADMIN_TOKEN", "test-token-0123456789")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .map_err(|e| e.to_string())?,
            )
            .spawn()
            .map_err(|e| format!("starting {BIN}: {e}"))?;
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http(port, "GET", "/healthz", None, None).map(|a| a.status) == Ok(200) {
                return Ok(Started::Up(server));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Ok(Started::Exited(format!("{status}: {log}")));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server on {} did not come up in 60 s",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server, which must come up.
    pub fn must_start(dir: &Path) -> Server {
        match Server::start(dir) {
            Ok(Started::Up(s)) => s,
            Ok(Started::Exited(log)) => panic!("the server did not start: {log}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// The server's pid (to attach strace to).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(mut self) -> Result<ExitStatus, String> {
        self.kill_now()
    }

    fn kill_now(&mut self) -> Result<ExitStatus, String> {
        let _ = self.child.kill(); // SIGKILL
        self.child.wait().map_err(|e| e.to_string())
    }

    /// What the server logged so far.
    pub fn log(&self, dir: &Path) -> String {
        std::fs::read_to_string(log_path(dir, self.port)).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.kill_now();
        }
    }
}

fn log_path(dir: &Path, port: u16) -> PathBuf {
    dir.with_extension(format!("{port}.log"))
}

/// Copies a directory tree (a seeded data directory, for a fresh trial).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), t)?;
        }
    }
    Ok(())
}
