//! Limits that hold under abuse (issue 13), over real loopback sockets.
//!
//! - One address (127.0.0.1) opens 1,000 event streams on a booking held
//!   open by a delay fault and then 5,000 idle connections; a second
//!   address (127.0.0.2) keeps searching flights, and its searches are all
//!   served. The latencies before and during are printed.
//! - A booking-lookup and a loyalty-lookup enumeration from one address is
//!   cut off with `429` and `Retry-After`, while another address is served.
//! - `Last-Event-ID: u64::MAX` on a finished saga answers `204`, on a
//!   running one a stream that ends with the saga (it overflowed before);
//!   a stream ends after the maximum lifetime.
//! - A booking naming someone else's loyalty account and one naming no
//!   account get the same answer.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::{booking_body, connect_from, find_flight, local, parse, request_from, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Raises this process's open-file limit to its hard limit.
fn raise_fd_limit() -> u64 {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

async fn book(server: &Server, key: &str, body: &Value, from: IpAddr) -> support::Raw {
    let bytes = serde_json::to_vec(body).unwrap();
    request_from(
        from,
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &bytes,
    )
    .await
}

/// Sends a GET on a new connection from `from` and reads the reply head;
/// the connection is returned open (a stream keeps going).
async fn open_get(
    from: IpAddr,
    server: &Server,
    path: &str,
    extra: &str,
) -> Option<(u16, TcpStream)> {
    let mut s = connect_from(from, server.addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n{extra}\r\n");
    // A refused connection may be answered and closed before the request
    // is written: that is fine, its answer is still there to read.
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()??;
    Some((parse(&buf).status, s))
}

async fn search_latency(server: &Server, from: IpAddr, path: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = request_from(from, server.addr, "GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "the second client is served: {}", r.text);
        out.push(t.elapsed());
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_connections_and_streams_does_not_starve_another() {
    let limit = raise_fd_limit();
    assert!(
        limit >= 13_000,
        "this test needs about 13,000 descriptors, the hard limit is {limit}"
    );
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let server = Server::start(config.clone(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let held = book(
        &server,
        "held-open",
        &booking_body(
            &flight,
            &date,
            json!({"reserve_seat": {"mode": "delay", "ms": 60000}}),
        ),
        local(),
    )
    .await;
    assert_eq!(held.status, 202, "{}", held.text);
    let id = held.body["booking_id"].as_str().unwrap().to_string();
    let search = format!("/api/flights/search?from=JFK&to=LAX&date={date}&passengers=2");
    let second = ip("127.0.0.2");
    let before = search_latency(&server, second, &search, 10).await;

    // 1,000 streams on the held booking from one address.
    let events = format!("/api/sagas/{id}/events");
    let mut streams = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..1000 {
        match open_get(local(), &server, &events, "").await {
            Some((status, s)) => {
                *statuses.entry(status).or_default() += 1;
                if status == 200 {
                    streams.push(s);
                }
            }
            None => *statuses.entry(0).or_default() += 1,
        }
    }
    // 5,000 more connections from the same address, held open.
    let mut idle = Vec::new();
    let mut connect_errors = 0;
    for batch in 0..10 {
        let tasks: Vec<_> = (0..500)
            .map(|_| tokio::spawn(connect_from(local(), server.addr)))
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(s) => idle.push(s),
                Err(_) => connect_errors += 1,
            }
        }
        let _ = batch;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = search_latency(&server, second, &search, 10).await;
    let metrics = request_from(second, server.addr, "GET", "/metrics", &[], b"").await;
    let line = |name: &str| {
        metrics
            .text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .to_string()
    };
    println!(
        "abuse: 1000 stream requests from 127.0.0.1 -> statuses {statuses:?} ({} streams open); \
         5000 connections -> {} connected, {connect_errors} connect errors",
        streams.len(),
        idle.len()
    );
    println!(
        "abuse: {}; {}; {}",
        line("http_connections_open"),
        line("http_connections_refused_total"),
        line("sse_streams_open")
    );
    println!(
        "abuse: second client (127.0.0.2) search latency before: median {:?} max {:?}; during: median {:?} max {:?}",
        before[before.len() / 2],
        before[before.len() - 1],
        during[during.len() / 2],
        during[during.len() - 1]
    );
    assert_eq!(
        streams.len(),
        config
            .max_streams_per_saga
            .min(config.max_streams_per_client),
        "streams capped: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        1000 - streams.len(),
        "{statuses:?}"
    );
    // Every refused stream was told when to come back.
    let mut extra = connect_from(local(), server.addr).await.unwrap();
    let r = support::read_reply(&mut extra).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    drop((streams, idle, extra));
    server.stop().await;
}

#[tokio::test]
async fn lookup_enumerations_are_cut_off() {
    let config = ServerConfig::default();
    let server = Server::start(config.clone(), RemoteParticipants::default()).await;
    let attacker = ip("127.0.0.3");
    for (what, path) in [
        (
            "booking lookup",
            "/api/bookings/lookup?reference={}&last_name=Lovelace",
        ),
        ("loyalty lookup", "/api/loyalty/{}?last_name=Lovelace"),
    ] {
        let mut served = 0;
        let mut cut = None;
        for i in 0..200 {
            let guess = format!("{:06}", 100_000 + i);
            let r = request_from(
                attacker,
                server.addr,
                "GET",
                &path.replace("{}", &guess),
                &[],
                b"",
            )
            .await;
            if r.status == 429 {
                cut = Some(r);
                break;
            }
            assert_eq!(r.status, 404, "{what}: {}", r.text);
            served += 1;
        }
        let cut = cut.unwrap_or_else(|| panic!("{what}: 200 guesses were never cut off"));
        println!("abuse: {what} enumeration cut off after {served} guesses");
        assert_eq!(served, config.rate_burst as usize, "{what}");
        assert_eq!(cut.body["code"], "too_many_requests");
        assert!(cut.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
        // Another address is still served.
        let r = request_from(
            ip("127.0.0.4"),
            server.addr,
            "GET",
            &path.replace("{}", "123456"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 404, "{what}, another address: {}", r.text);
    }
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_past_the_end_and_stream_lifetime_end_the_stream() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = Server::start(config.clone(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    // A finished saga: u64::MAX is past its end.
    let r = book(
        &server,
        "lei-1",
        &booking_body(&flight, &date, json!({})),
        local(),
    )
    .await;
    let done = r.body["booking_id"].as_str().unwrap().to_string();
    support::wait_terminal(server.addr, &done).await;
    let max = format!("last-event-id: {}\r\nconnection: close\r\n", u64::MAX);
    let (status, _) = open_get(local(), &server, &format!("/api/sagas/{done}/events"), &max)
        .await
        .unwrap();
    assert_eq!(status, 204);
    // A running saga (1.5 s delay): the stream resumes at the end and ends
    // with the saga.
    let r = book(
        &server,
        "lei-2",
        &booking_body(
            &flight,
            &date,
            json!({"reserve_seat": {"mode": "delay", "ms": 1500}}),
        ),
        local(),
    )
    .await;
    let running = r.body["booking_id"].as_str().unwrap().to_string();
    let raw = request_from(
        local(),
        server.addr,
        "GET",
        &format!("/api/sagas/{running}/events"),
        &[("last-event-id", &u64::MAX.to_string())],
        b"",
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert!(
        raw.text.contains("saga_finished"),
        "ends with the saga: {}",
        raw.text
    );
    server.stop().await;
    // A stream on a saga held for a minute ends after the 1 s lifetime.
    let config = ServerConfig {
        max_stream_lifetime: Duration::from_secs(1),
        ..config
    };
    let server = Server::start(config, RemoteParticipants::default()).await;
    let r = book(
        &server,
        "lei-3",
        &booking_body(
            &flight,
            &date,
            json!({"reserve_seat": {"mode": "delay", "ms": 60000}}),
        ),
        local(),
    )
    .await;
    let held = r.body["booking_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let raw = request_from(
        local(),
        server.addr,
        "GET",
        &format!("/api/sagas/{held}/events"),
        &[],
        b"",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert!(!raw.text.contains("saga_finished"));
    println!(
        "stream with a 1 s lifetime ended after {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_booking_does_not_tell_whether_a_loyalty_account_exists() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let enroll = serde_json::to_vec(
        &json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"}),
    )
    .unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/loyalty",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "enroll-grace"),
        ],
        &enroll,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let account = r.body["account"]["id"].as_str().unwrap().to_string();
    let (flight, date) = find_flight(server.addr).await;
    let mut answers = Vec::new();
    for (key, id) in [("someone-else", account.as_str()), ("nobody", "00000000")] {
        let mut body = booking_body(&flight, &date, json!({}));
        body["loyalty_id"] = json!(id);
        let r = book(&server, key, &body, local()).await;
        assert_eq!(r.status, 422, "{key}: {}", r.text);
        answers.push(r.body);
    }
    assert_eq!(
        answers[0], answers[1],
        "same answer for an existing and a missing account"
    );
    server.stop().await;
}
