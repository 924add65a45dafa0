//! Load over HTTP: how many bookings per second the whole stack completes,
//! request to terminal state, against what a bare hyper server answers on
//! the same machine.
//!
//! Starts, in this process, the demo server on `127.0.0.1:0` with a
//! temporary data directory (durable sled store, every participant local)
//! and a bare hyper "hello world" server. Then:
//!
//! 1. `bookings`: `--bookings` bookings (default 2000), `--concurrency` at a
//!    time (default 64), each a `POST /api/bookings` with its own
//!    `Idempotency-Key`, followed by reading its event stream
//!    (`GET /api/sagas/{id}/events`) until `saga_finished`. Latency is from
//!    sending the POST to receiving that event.
//! 2. `healthz`: `GET /healthz` on the demo server at the same concurrency.
//! 3. `hello`: `GET /` on the bare hyper server at the same concurrency.
//!
//! Each prints one JSON line. Run it in release:
//!
//! ```text
//! cargo run --release -p demo-server --example http_load -- --bookings 2000 --concurrency 64
//! ```

use bytes::Bytes;
use clap::Parser;
use demo_server::{AdminToken, AppState};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
struct Args {
    /// Bookings to make.
    #[arg(long, default_value_t = 2000)]
    bookings: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// GET requests for each of the two comparison runs.
    #[arg(long, default_value_t = 20_000)]
    gets: usize,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

/// A bare hyper server answering every request with "hello".
async fn hello_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// (flight id, date) pairs to spread bookings over, so no flight sells out.
fn flight_dates(state: &AppState, wanted: usize) -> Vec<(String, String)> {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let mut out = Vec::new();
    for f in state.services.catalog.current().flights() {
        if f.economy.is_none() {
            continue;
        }
        for d in 20..48u64 {
            let date = today + chrono::Days::new(d);
            if date.weekday() == f.weekday {
                out.push((f.id.0.clone(), date.to_string()));
            }
        }
        if out.len() >= wanted {
            break;
        }
    }
    out
}

/// Books once and follows the saga to its end; (latency, final status).
async fn book_one(
    client: &HttpClient,
    base: &str,
    i: usize,
    flight: &(String, String),
) -> Result<(Duration, String), String> {
    let body = json!({
        "flight_id": flight.0,
        "date": flight.1,
        "cabin": "economy",
        "passengers": [{"first_name": "Load", "last_name": "Tester"}],
        "email": format!("load{}@example.com", i % 100),
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Load Tester"},
    });
    let started = Instant::now();
    let req = Request::post(format!("{base}/api/bookings"))
        .header("content-type", "application/json")
        .header("idempotency-key", format!("load-{i}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::ACCEPTED {
        return Err(format!(
            "POST: {status} {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let accepted: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let events_url = accepted["events_url"].as_str().ok_or("no events_url")?;
    let req = Request::get(format!("{base}{events_url}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let mut body = client
        .request(req)
        .await
        .map_err(|e| e.to_string())?
        .into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            if let Some(at) = text.find("event: saga_finished\ndata: ") {
                let rest = &text[at + "event: saga_finished\ndata: ".len()..];
                if let Some(end) = rest.find('\n') {
                    let elapsed = started.elapsed();
                    let e: Value = serde_json::from_str(&rest[..end]).map_err(|e| e.to_string())?;
                    return Ok((elapsed, e["status"].as_str().unwrap_or("?").to_string()));
                }
            }
        }
    }
    Err("event stream ended without saga_finished".into())
}

/// `n` GETs of `url` at `concurrency`; (elapsed, sorted latencies in µs).
async fn gets(
    client: &HttpClient,
    url: &str,
    n: usize,
    concurrency: usize,
) -> (Duration, Vec<u64>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let req = Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let resp = client.request(req).await.expect("GET");
                assert!(resp.status().is_success());
                resp.into_body().collect().await.expect("body");
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    (elapsed, all)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    // One load client from one address stands for many customers behind
    // a balancer: lift the per-address caps (their own tests are in
    // tests/limits.rs), keep every other limit.
    let config = demo_server::ServerConfig {
        rate_per_minute: 1_000_000,
        rate_burst: 1_000_000,
        max_connections_per_client: args.concurrency * 4 + 64,
        max_streams_per_client: args.concurrency * 4 + 64,
        max_connections: (args.concurrency * 4 + 64).max(1024),
        max_streams: (args.concurrency * 4 + 64).max(256),
        ..demo_server::ServerConfig::default()
    };
    let (state, _) = AppState::builder(dir.path())
        .admin_token(AdminToken::generate())
        .config(config)
        .open()
        .await
        .expect("open state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(demo_server::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let hello = hello_server().await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency * 2)
        .build_http();
    let base = format!("http://{addr}");

    // 1. Bookings to their terminal state.
    let flights = Arc::new(flight_dates(&state, args.bookings / 50 + 10));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, next, flights) =
            (client.clone(), base.clone(), next.clone(), flights.clone());
        let n = args.bookings;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push(book_one(&client, &base, i, &flights[i % flights.len()]).await);
            }
            out
        }));
    }
    let mut latencies = Vec::new();
    let (mut completed, mut other, mut errors) = (0usize, 0usize, Vec::new());
    for t in tasks {
        for r in t.await.expect("task") {
            match r {
                Ok((lat, status)) => {
                    latencies.push(lat.as_micros() as u64);
                    if status == "completed" {
                        completed += 1;
                    } else {
                        other += 1;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "{}",
        json!({
            "bench": "bookings",
            "bookings": args.bookings,
            "concurrency": args.concurrency,
            "completed": completed,
            "not_completed": other,
            "errors": errors.len(),
            "first_error": errors.first(),
            "elapsed_s": elapsed.as_secs_f64(),
            "bookings_per_s": completed as f64 / elapsed.as_secs_f64(),
            "p50_ms": percentile(&latencies, 0.50),
            "p99_ms": percentile(&latencies, 0.99),
            "max_ms": percentile(&latencies, 1.0),
            "store_flushes": state.engine.flush_count(),
        })
    );

    // 2 and 3. Plain GETs at the same concurrency.
    for (bench, url) in [
        ("healthz", format!("{base}/healthz")),
        ("hello", format!("http://{hello}/")),
    ] {
        let (elapsed, lat) = gets(&client, &url, args.gets, args.concurrency).await;
        println!(
            "{}",
            json!({
                "bench": bench,
                "requests": lat.len(),
                "concurrency": args.concurrency,
                "elapsed_s": elapsed.as_secs_f64(),
                "requests_per_s": lat.len() as f64 / elapsed.as_secs_f64(),
                "p50_ms": percentile(&lat, 0.50),
                "p99_ms": percentile(&lat, 0.99),
            })
        );
    }

    let _ = stop_tx.send(());
    let _ = served.await;

    // 4. The engine alone, same run, same concurrency: four trivial steps
    // per saga on a durable sled store, as `loadgen` runs them.
    let engine_per_s = engine_alone(args.bookings.max(2000), args.concurrency).await;
    let http_per_s = completed as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "engine_alone",
            "sagas_per_s": engine_per_s,
            "concurrency": args.concurrency,
            "http_bookings_over_engine_sagas": http_per_s / engine_per_s,
        })
    );
}

struct Trivial;

#[saga_engine::async_trait]
impl saga_engine::Step<Value> for Trivial {
    async fn run(
        &self,
        _: &saga_engine::StepContext,
        _: &mut Value,
    ) -> Result<(), saga_engine::StepError> {
        Ok(())
    }
    async fn compensate(
        &self,
        _: &saga_engine::StepContext,
        _: &Value,
    ) -> Result<(), saga_engine::StepError> {
        Ok(())
    }
}

/// Sagas per second of four trivial steps at `concurrency` on sled.
async fn engine_alone(n: usize, concurrency: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut def = saga_engine::SagaDefinition::<Value>::builder("trivial", 1);
    for step in [
        "reserve_seat",
        "authorize_payment",
        "award_miles",
        "confirm_booking",
    ] {
        def = def.step(step, Trivial);
    }
    let engine =
        saga_engine::Engine::builder(saga_engine::SledStore::open(dir.path()).expect("store"))
            .register(def.build().expect("definition"))
            .open()
            .await
            .expect("engine");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let id = engine
                    .start("trivial", &json!({}), None)
                    .await
                    .expect("start");
                engine.wait(&id).await.expect("wait");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    engine.shutdown(Duration::from_secs(5)).await;
    per_s
}
