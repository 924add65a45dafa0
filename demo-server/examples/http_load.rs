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
//! 4. `engine_alone`: the engine on its own sled store, four trivial steps
//!    a saga, at the same concurrency (what `loadgen` runs), and the ratio
//!    of the bookings' rate to it.
//! 5. `engine_booking_shape`: the engine alone with the booking saga's
//!    shape (its eight steps, two of them waits answered by signals right
//!    after the start, its three search attributes, one booking's data),
//!    every step trivial: what the engine itself spends on a booking.
//!
//! Each prints one JSON line; `cpu_ms_per_booking` and `cpu_ms_per_saga`
//! are the process's CPU time (user and system) over the phase, per item,
//! which a machine shared with other work disturbs less than rates. Run it in release:
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

/// Books once and follows the saga to its end; (latency, final status,
/// saga id).
async fn book_one(
    client: &HttpClient,
    base: &str,
    i: usize,
    flight: &(String, String),
) -> Result<(Duration, String, String), String> {
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
    let id = accepted["booking_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
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
                    let status = e["status"].as_str().unwrap_or("?").to_string();
                    return Ok((elapsed, status, id));
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
    let cpu_before = cpu_time();
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
    let mut sample_id = None;
    for t in tasks {
        for r in t.await.expect("task") {
            match r {
                Ok((lat, status, id)) => {
                    latencies.push(lat.as_micros() as u64);
                    sample_id.get_or_insert(id);
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
    let booking_cpu = cpu_time() - cpu_before;
    latencies.sort_unstable();
    // One booking's saga: its data (the shaped engine run below carries
    // the same) and how many events and bytes of history it wrote.
    let sample = match sample_id.as_deref().and_then(saga_engine::SagaId::parse) {
        Some(id) => Some((
            state.engine.status(&id).await.expect("status").data,
            state.engine.history(&id).await.expect("history"),
        )),
        None => None,
    };
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
            "flushes_per_booking": state.engine.flush_count() as f64 / args.bookings as f64,
            "cpu_ms_per_booking": booking_cpu.as_secs_f64() * 1000.0 / args.bookings as f64,
            "events_per_booking": sample.as_ref().map(|(_, h)| h.len()),
            "data_bytes": sample.as_ref().map(|(d, _)| d.to_string().len()),
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
    let n = args.bookings.max(2000);
    let cpu_before = cpu_time();
    let engine_per_s = engine_alone(n, args.concurrency, None).await;
    let engine_cpu = cpu_time() - cpu_before;
    let http_per_s = completed as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "engine_alone",
            "sagas_per_s": engine_per_s,
            "concurrency": args.concurrency,
            "cpu_ms_per_saga": engine_cpu.as_secs_f64() * 1000.0 / n as f64,
            "http_bookings_over_engine_sagas": http_per_s / engine_per_s,
        })
    );

    // 5. The engine alone with the booking's shape: its eight steps (the
    // two waits answered by signals right after the start, as a booking's
    // are), its search attributes and one booking's data, every step
    // trivial. What the engine itself costs a booking, without HTTP and
    // participants.
    if let Some((data, _)) = sample {
        let cpu_before = cpu_time();
        let shaped_per_s = engine_alone(n, args.concurrency, Some(data)).await;
        let shaped_cpu = cpu_time() - cpu_before;
        println!(
            "{}",
            json!({
                "bench": "engine_booking_shape",
                "sagas_per_s": shaped_per_s,
                "concurrency": args.concurrency,
                "cpu_ms_per_saga": shaped_cpu.as_secs_f64() * 1000.0 / n as f64,
                "over_engine_alone": shaped_per_s / engine_per_s,
                "http_bookings_over_shaped": http_per_s / shaped_per_s,
            })
        );
    }
}

/// CPU time (user and system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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

/// Sagas per second at `concurrency` on sled: four trivial steps, or with
/// `booking` (one booking's data) the booking saga's shape.
async fn engine_alone(n: usize, concurrency: usize, booking: Option<Value>) -> f64 {
    use booking_domain::booking_saga::{AUTO_SIGNAL_ID, CONFIRMATION_SIGNAL, PAYMENT_SIGNAL};
    let dir = tempfile::tempdir().expect("tempdir");
    let def = match &booking {
        None => {
            let mut def = saga_engine::SagaDefinition::<Value>::builder("trivial", 1);
            for step in [
                "reserve_seat",
                "authorize_payment",
                "award_miles",
                "confirm_booking",
            ] {
                def = def.step(step, Trivial);
            }
            def
        }
        Some(_) => {
            let wait = Duration::from_secs(600);
            saga_engine::SagaDefinition::<Value>::builder("trivial", 1)
                .step("reserve_seat", Trivial)
                .wait_for(
                    "await_payment",
                    PAYMENT_SIGNAL,
                    wait,
                    |_: &mut Value, _: Value| {},
                )
                .step("redeem_miles", Trivial)
                .step("authorize_payment", Trivial)
                .wait_for(
                    "await_confirmation",
                    CONFIRMATION_SIGNAL,
                    wait,
                    |_: &mut Value, _: Value| {},
                )
                .step("award_miles", Trivial)
                .step_as("confirm_booking", saga_engine::StepClass::Pivot, Trivial)
                .step_as("send_itinerary", saga_engine::StepClass::Retriable, Trivial)
                .with(|b| {
                    ["booking_ref", "email", "date"]
                        .into_iter()
                        .fold(b, |b, field| {
                            b.search_attribute(field, move |d: &Value| {
                                d.get(field).map(|v| v.to_string())
                            })
                        })
                })
        }
    };
    let engine =
        saga_engine::Engine::builder(saga_engine::SledStore::open(dir.path()).expect("store"))
            .register(def.build().expect("definition"))
            .open()
            .await
            .expect("engine");
    let data = Arc::new(booking.clone().unwrap_or_else(|| json!({})));
    let signals = booking.is_some();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (engine, next, data) = (engine.clone(), next.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let id = engine.start("trivial", &*data, None).await.expect("start");
                if signals {
                    for (signal, payload) in [
                        (
                            PAYMENT_SIGNAL,
                            json!({"card_token": "", "card_brand": "", "card_last4": ""}),
                        ),
                        (CONFIRMATION_SIGNAL, json!({"by_customer": false})),
                    ] {
                        let signal_id = format!("{AUTO_SIGNAL_ID}:{signal}");
                        engine
                            .signal(&id, signal, &signal_id, &payload)
                            .await
                            .expect("signal");
                    }
                }
                // Bounded, so that a saga that never ends (one run hung
                // once in an engine-only phase, every thread idle) fails
                // with its id instead of hanging the benchmark.
                let done = tokio::time::timeout(Duration::from_secs(120), engine.wait(&id))
                    .await
                    .unwrap_or_else(|_| panic!("saga {id} did not end within 120 s"))
                    .expect("wait");
                assert_eq!(done.status(), saga_engine::SagaStatus::Completed);
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
