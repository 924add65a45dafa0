//! The `demo-server` binary as a user runs it: `import` and `export` of the
//! catalog in the reference CSV format, and the server process itself
//! (prints its URL, keeps a generated admin token off stdout unless given
//! `--print-admin-token`, then prints it once; stops cleanly
//! on SIGTERM).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../booking-domain/tests/fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run demo-server")
}

fn copy_fixtures(to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        std::fs::copy(fixtures().join(n), to.join(n)).unwrap();
    }
}

#[test]
fn import_reports_progress_and_export_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_fixtures(&src, &["airports.csv", "flights_domestic.csv"]);
    let data = tmp.path().join("data");
    let out = run(&[
        "import",
        "--dir",
        src.to_str().unwrap(),
        "--currency",
        "INR",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("checking rows:"),
        "progress shown: {stderr}"
    );
    assert!(stdout.contains("imported"), "{stdout}");

    let exported = tmp.path().join("exported");
    let out = run(&[
        "export",
        "--dir",
        exported.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let airports = std::fs::read_to_string(exported.join("airports.csv")).unwrap();
    let flights = std::fs::read_to_string(exported.join("flights.csv")).unwrap();
    assert!(airports.lines().count() > 1 && flights.lines().count() > 1);

    // The exported files import again to the same catalog.
    let again = tmp.path().join("again");
    let out = run(&[
        "import",
        "--dir",
        exported.to_str().unwrap(),
        "--data-dir",
        again.to_str().unwrap(),
        "--mode",
        "reject",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let twice = tmp.path().join("twice");
    let out = run(&[
        "export",
        "--dir",
        twice.to_str().unwrap(),
        "--data-dir",
        again.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(twice.join("airports.csv")).unwrap(),
        airports
    );
    assert_eq!(
        std::fs::read_to_string(twice.join("flights.csv")).unwrap(),
        flights
    );
}

#[test]
fn a_rejected_import_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_fixtures(&src, &["airports.csv", "flights_malformed.csv"]);
    let data = tmp.path().join("data");
    let out = run(&[
        "import",
        "--dir",
        src.to_str().unwrap(),
        "--mode",
        "reject",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing imported"), "{stderr}");
    assert!(
        !data.join("db").exists(),
        "no empty catalog left for the next start"
    );
    // In skip mode the good rows go in and the bad ones are listed.
    let out = run(&[
        "import",
        "--dir",
        src.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("malformed rows:"), "{stdout}");
    // Bad arguments are refused with a message.
    let out = run(&[
        "import",
        "--dir",
        src.to_str().unwrap(),
        "--currency",
        "DOLLARS",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("currency"));
}

/// Reads the server's stdout until it says where it listens.
fn wait_for_url(child: &mut Child) -> (String, Vec<String>) {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        lines.push(line.clone());
        if let Some(url) = line.split("listening on ").nth(1) {
            return (url.trim().to_string(), lines);
        }
    }
    panic!("the server never printed its URL: {lines:?}");
}

fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "clean exit after SIGTERM: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(data: &Path) -> Child {
    start_with(data, &[])
}

fn start_with(data: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(extra)
        .env_remove("DEMO_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[test]
fn the_server_keeps_a_new_token_off_stdout_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = start(&data);
    let (_, lines) = wait_for_url(&mut child);
    let token = std::fs::read_to_string(data.join("admin_token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 32);
    assert!(
        lines.iter().all(|l| !l.contains(token)),
        "token printed without --print-admin-token: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("admin token generated and kept in")),
        "{lines:?}"
    );
    terminate(&mut child);
}

#[test]
fn the_server_prints_its_url_and_a_new_token_once_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = start_with(&data, &["--print-admin-token"]);
    let (url, lines) = wait_for_url(&mut child);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let token_line = lines
        .iter()
        .find(|l| l.contains("admin token (shown once"))
        .unwrap_or_else(|| panic!("no token line in {lines:?}"));
    let token = token_line.rsplit(' ').next().unwrap();
    assert_eq!(token.len(), 32);
    let file = data.join("admin_token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let reply = get(&url, "/readyz");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let reply = get(&url, "/api/airports?q=JFK");
    assert!(reply.contains("\"JFK\""), "the default catalog is loaded");
    terminate(&mut child);

    // The second start reuses the token and does not print it.
    let mut child = start_with(&data, &["--print-admin-token"]);
    let (_, lines) = wait_for_url(&mut child);
    assert!(
        lines.iter().all(|l| !l.contains(token)),
        "token shown again: {lines:?}"
    );
    terminate(&mut child);
}
