//! End to end across real processes: three participant services
//! (`demo-server --role ...`) and the orchestrator on loopback, one
//! participant SIGKILLed while a booking's saga waits on it, then restarted
//! on the same port and data directory.
//!
//! Each test parks its saga in front of one participant with a per-booking
//! `delay` fault (the fault sleeps before every attempt's call), kills that
//! participant during the sleep so the call meets a dead port, restarts it,
//! and waits for the booking's one terminal state. The participants' own
//! state is then checked through their read endpoints: a confirmed booking
//! has its seats confirmed, its payment captured for the booking's total and
//! its miles awarded once; a compensated one has nothing left standing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-server");
/// How long the saga sleeps before each attempt of the delayed step.
const DELAY_MS: u64 = 1500;
/// When the participant is killed, counted from the booking's acceptance:
/// well inside the first delay, after the earlier steps are done.
const KILL_AT: Duration = Duration::from_millis(300);
/// When it is restarted: after the first attempt's call has met the dead
/// port, long before the step's retries run out.
const RESTART_AT: Duration = Duration::from_millis(DELAY_MS + 600);
const PASSENGERS: usize = 2;
/// The service token every process gets through `DEMO_SERVICE_TOKEN`.
const SERVICE_TOKEN: &str = "e2e-service-token-0123456789";

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One service process and how to start it again.
struct Service {
    name: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl Service {
    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RUST_LOG", "info,demo_server=debug,saga_engine=debug")
            .env("DEMO_SERVICE_TOKEN", SERVICE_TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} ({BIN}): {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Three participants and the orchestrator. Every child is killed on drop,
/// also when a test fails; a failing test prints the services' logs.
struct Cluster {
    _dir: tempfile::TempDir,
    inventory: Service,
    payments: Service,
    loyalty: Service,
    orchestrator: Service,
    http: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Inventory,
    Payments,
    Loyalty,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.services_mut() {
            s.kill();
        }
        if std::thread::panicking() {
            for s in self.services_mut() {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("----- {} log (last lines) -----", s.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let participant = |name: &'static str, dir: &Path| {
            let port = free_port();
            let data = dir.join(name);
            Service {
                name,
                args: vec![
                    "--role".into(),
                    name.into(),
                    "--addr".into(),
                    format!("127.0.0.1:{port}"),
                    "--data-dir".into(),
                    data.display().to_string(),
                ],
                log: dir.join(format!("{name}.log")),
                child: None,
                port,
            }
        };
        let inventory = participant("inventory", dir.path());
        let payments = participant("payments", dir.path());
        let loyalty = participant("loyalty", dir.path());
        let port = free_port();
        let orchestrator = Service {
            name: "orchestrator",
            args: vec![
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--data-dir".into(),
                dir.path().join("orchestrator").display().to_string(),
                "--inventory-url".into(),
                inventory.url(),
                "--payments-url".into(),
                payments.url(),
                "--loyalty-url".into(),
                loyalty.url(),
            ],
            log: dir.path().join("orchestrator.log"),
            child: None,
            port,
        };
        let http = Client::builder(TokioExecutor::new()).build_http();
        let mut cluster = Cluster {
            _dir: dir,
            inventory,
            payments,
            loyalty,
            orchestrator,
            http,
        };
        for s in cluster.services_mut() {
            s.spawn();
        }
        for which in [Which::Inventory, Which::Payments, Which::Loyalty] {
            cluster.wait_healthy(which).await;
        }
        let orchestrator = cluster.orchestrator.url();
        cluster
            .wait_until("the orchestrator to answer", || async {
                cluster
                    .try_request(Method::GET, &format!("{orchestrator}/healthz"), None, None)
                    .await
                    .is_ok()
            })
            .await;
        cluster
    }

    fn services_mut(&mut self) -> [&mut Service; 4] {
        [
            &mut self.orchestrator,
            &mut self.inventory,
            &mut self.payments,
            &mut self.loyalty,
        ]
    }

    fn participant(&mut self, which: Which) -> &mut Service {
        match which {
            Which::Inventory => &mut self.inventory,
            Which::Payments => &mut self.payments,
            Which::Loyalty => &mut self.loyalty,
        }
    }

    fn url(&self, which: Which) -> String {
        match which {
            Which::Inventory => self.inventory.url(),
            Which::Payments => self.payments.url(),
            Which::Loyalty => self.loyalty.url(),
        }
    }

    async fn wait_healthy(&self, which: Which) {
        let url = format!("{}/healthz", self.url(which));
        self.wait_until(&format!("{which:?} to be healthy"), || async {
            matches!(
                self.try_request(Method::GET, &url, None, None).await,
                Ok((StatusCode::OK, _))
            )
        })
        .await;
    }

    async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One HTTP exchange; the body parsed as JSON (`null` when empty).
    async fn try_request(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        // The participants want the service token; the orchestrator's public
        // routes ignore it.
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header("Authorization", format!("Bearer {SERVICE_TOKEN}"));
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                serde_json::to_vec(b).map_err(|e| e.to_string())?
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            Ok((status, value))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("{url}: no reply in 10 s"))?
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.try_request(method.clone(), url, key, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// A GET on a participant that must succeed.
    async fn read(&self, which: Which, path: &str) -> Value {
        let url = format!("{}{path}", self.url(which));
        let (status, body) = self.request(Method::GET, &url, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
        body
    }

    async fn kill(&mut self, which: Which) {
        self.participant(which).kill();
        let url = format!("{}/healthz", self.url(which));
        assert!(
            self.try_request(Method::GET, &url, None, None)
                .await
                .is_err(),
            "{which:?} still answers after SIGKILL"
        );
    }

    async fn restart(&mut self, which: Which) {
        self.participant(which).spawn();
        self.wait_healthy(which).await;
    }

    /// Opens a loyalty account directly on the loyalty service.
    async fn loyalty_account(&self, email: &str) -> String {
        let url = format!("{}/accounts", self.loyalty.url());
        let body = json!({"first_name": "Ada", "last_name": "Lovelace", "email": email});
        let (status, account) = self
            .request(
                Method::POST,
                &url,
                Some(&format!("acct-{email}")),
                Some(&body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create account: {account}");
        account["id"].as_str().expect("account id").to_string()
    }

    /// A JFK→LAX flight and a date it operates on, 20 to 40 days ahead
    /// (`offset` spreads the tests over different dates).
    async fn find_flight(&self, offset: i64) -> (String, String) {
        let today = chrono::Utc::now().date_naive();
        for d in 0..14 {
            let date = today + chrono::Days::new((20 + offset + d) as u64);
            let url = format!(
                "{}/api/flights/search?from=JFK&to=LAX&date={date}",
                self.orchestrator.url()
            );
            let (status, found) = self.request(Method::GET, &url, None, None).await;
            assert_eq!(status, StatusCode::OK, "search: {found}");
            if let Some(id) = first_flight_id(&found) {
                return (id, date.to_string());
            }
        }
        panic!("no JFK-LAX flight in two weeks");
    }

    /// Posts a booking; returns its id once accepted (`202`, or `200` when
    /// the key names a booking that already exists).
    async fn book(&self, key: &str, request: &Value) -> String {
        let url = format!("{}/api/bookings", self.orchestrator.url());
        let (status, body) = self
            .request(Method::POST, &url, Some(key), Some(request))
            .await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "booking refused: {status} {body}"
        );
        body["booking_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no booking_id in {body}"))
            .to_string()
    }

    async fn booking(&self, id: &str) -> Value {
        let url = format!("{}/api/bookings/{id}", self.orchestrator.url());
        let (status, body) = self.request(Method::GET, &url, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET booking: {body}");
        body
    }

    /// Waits for the booking's terminal status, then checks it stays put.
    async fn wait_terminal(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        let done = loop {
            let b = self.booking(id).await;
            match b["status"].as_str() {
                Some("pending") => {}
                Some("confirmed" | "compensated" | "stuck") => break b,
                other => panic!("unexpected booking status {other:?}: {b}"),
            }
            assert!(Instant::now() < deadline, "booking {id} never ended: {b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let again = self.booking(id).await;
            assert_eq!(
                again["status"], done["status"],
                "one terminal state: {again}"
            );
        }
        done
    }
}

/// The id of the first flight in a search answer, whatever its wrapping:
/// `[{"flight": {"id": ..}}]`, `{"results": [..]}`, `[{"flight_id": ..}]`.
fn first_flight_id(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items.iter().find_map(|item| {
            item.get("flight")
                .and_then(|f| f.get("id"))
                .or_else(|| item.get("flight_id"))
                .or_else(|| item.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| first_flight_id(item))
        }),
        Value::Object(map) => map.values().find_map(first_flight_id),
        _ => None,
    }
}

/// The booking total as `(minor, currency)`, found under a `total` key
/// anywhere in the booking answer (`{"total": {"minor", "currency"}}`,
/// or `{"price": {"total": ..}}`).
fn total_of(v: &Value) -> Option<(i64, String)> {
    match v {
        Value::Object(map) => {
            if let Some(t) = map.get("total") {
                if let (Some(minor), Some(cur)) = (t["minor"].as_i64(), t["currency"].as_str()) {
                    return Some((minor, cur.to_string()));
                }
            }
            map.values().find_map(total_of)
        }
        Value::Array(items) => items.iter().find_map(total_of),
        _ => None,
    }
}

fn booking_request(
    flight: &str,
    date: &str,
    email: &str,
    loyalty_id: &str,
    card: &str,
    faults: Value,
) -> Value {
    let passengers: Vec<Value> = ["Ada", "Charles"]
        .iter()
        .take(PASSENGERS)
        .map(|first| json!({"first_name": first, "last_name": "Lovelace"}))
        .collect();
    json!({
        "flight_id": flight,
        "date": date,
        "cabin": "economy",
        "passengers": passengers,
        "email": email,
        "loyalty_id": loyalty_id,
        "card": {
            "number": card,
            "exp_month": 12,
            "exp_year": 2030,
            "cvc": "123",
            "holder_name": "Ada Lovelace"
        },
        "faults": faults,
    })
}

/// What the participants hold for one booking (the only one on its date,
/// paid with its own email, crediting its own account).
struct Observed {
    holds: Vec<Value>,
    totals: Value,
    payments: Vec<Value>,
    entries: Vec<Value>,
    account: Value,
}

async fn observe(c: &Cluster, flight: &str, date: &str, email: &str, account: &str) -> Observed {
    let holds = c.read(Which::Inventory, "/holds").await;
    let holds = holds
        .as_array()
        .expect("holds list")
        .iter()
        .filter(|h| h["flight"] == flight && h["date"] == date)
        .cloned()
        .collect();
    let totals = c
        .read(
            Which::Inventory,
            &format!("/seats?flight={flight}&date={date}&cabin=economy"),
        )
        .await;
    let payments = c
        .read(Which::Payments, &format!("/customers/{email}/payments"))
        .await
        .as_array()
        .expect("payments list")
        .clone();
    let entries = c
        .read(Which::Loyalty, &format!("/accounts/{account}/entries"))
        .await
        .as_array()
        .expect("entries list")
        .clone();
    let account = c
        .read(Which::Loyalty, &format!("/accounts/{account}"))
        .await;
    Observed {
        holds,
        totals,
        payments,
        entries,
        account,
    }
}

/// The booking's own account of a step, from `GET /api/bookings/{id}`:
/// `(attempts, compensation_attempts)`.
fn step_attempts(booking: &Value, step: &str) -> (u64, u64) {
    let s = booking["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step))
        .unwrap_or_else(|| panic!("no step {step} in {booking}"));
    (
        s["attempts"].as_u64().unwrap_or(0),
        s["compensation_attempts"].as_u64().unwrap_or(0),
    )
}

/// A confirmed booking: seats sold once, payment captured for the total,
/// miles awarded once.
fn assert_confirmed(o: &Observed, booking: &Value) {
    assert_eq!(o.holds.len(), 1, "one hold: {:?}", o.holds);
    let hold = &o.holds[0];
    assert_eq!(hold["state"], "confirmed", "{hold}");
    assert_eq!(hold["seats"], PASSENGERS, "{hold}");
    assert_eq!(o.totals["confirmed"], PASSENGERS, "{}", o.totals);
    assert_eq!(o.totals["held"], 0, "{}", o.totals);

    assert_eq!(o.payments.len(), 1, "one payment: {:?}", o.payments);
    let payment = &o.payments[0];
    assert_eq!(payment["status"], "captured", "{payment}");
    let (minor, currency) =
        total_of(booking).unwrap_or_else(|| panic!("no total in the booking: {booking}"));
    assert_eq!(payment["amount"]["minor"], minor, "{payment} vs {booking}");
    assert_eq!(
        payment["amount"]["currency"],
        currency.as_str(),
        "{payment}"
    );

    assert_eq!(o.entries.len(), 1, "one loyalty entry: {:?}", o.entries);
    let entry = &o.entries[0];
    assert_eq!(entry["state"], "applied", "{entry}");
    assert_eq!(entry["kind"]["award"]["amount"]["minor"], minor, "{entry}");
    let miles = entry["miles"].as_u64().expect("miles");
    assert!(miles > 0, "{entry}");
    assert_eq!(o.account["balance"], miles, "awarded once: {}", o.account);
    assert_eq!(o.account["qualifying_miles"], miles, "{}", o.account);
}

/// A compensated booking: no seat, no money and no miles left standing.
fn assert_compensated(o: &Observed) {
    assert!(o.holds.len() <= 1, "{:?}", o.holds);
    for hold in &o.holds {
        assert_eq!(hold["state"], "released", "{hold}");
    }
    assert_eq!(o.totals["held"], 0, "{}", o.totals);
    assert_eq!(o.totals["confirmed"], 0, "{}", o.totals);
    assert!(o.payments.len() <= 1, "{:?}", o.payments);
    for p in &o.payments {
        let status = p["status"].as_str().unwrap_or_default();
        assert!(
            matches!(status, "voided" | "refunded" | "declined"),
            "payment left standing: {p}"
        );
    }
    assert!(o.entries.len() <= 1, "{:?}", o.entries);
    for e in &o.entries {
        assert_eq!(e["state"], "reversed", "{e}");
    }
    assert_eq!(o.account["balance"], 0, "{}", o.account);
    assert_eq!(o.account["qualifying_miles"], 0, "{}", o.account);
}

/// Books with a delay on `step`, SIGKILLs `victim` during the delay,
/// restarts it, and returns the terminal booking and what the participants
/// hold.
async fn kill_during(
    victim: Which,
    step: &str,
    card: &str,
    offset: i64,
) -> (Cluster, Value, Observed) {
    let mut c = Cluster::start().await;
    let email = format!("kill-{}@example.com", step.replace('_', "-"));
    let account = c.loyalty_account(&email).await;
    let (flight, date) = c.find_flight(offset).await;
    let mut faults = serde_json::Map::new();
    faults.insert(step.into(), json!({"mode": "delay", "ms": DELAY_MS}));
    let faults = Value::Object(faults);
    let request = booking_request(&flight, &date, &email, &account, card, faults);

    let key = format!("e2e-{step}");
    let id = c.book(&key, &request).await;
    let accepted = Instant::now();
    tokio::time::sleep(KILL_AT).await;
    assert_eq!(
        c.booking(&id).await["status"],
        "pending",
        "the saga must still wait in front of {victim:?}"
    );
    c.kill(victim).await;
    tokio::time::sleep(RESTART_AT.saturating_sub(accepted.elapsed())).await;
    c.restart(victim).await;

    // Posting the same booking again returns the same booking.
    assert_eq!(c.book(&key, &request).await, id, "idempotent booking");

    let done = c.wait_terminal(&id).await;
    let observed = observe(&c, &flight, &date, &email, &account).await;
    (c, done, observed)
}

/// The killed participant was felt: the delayed step's first attempt met
/// the dead port, a later one got through.
fn assert_retried(booking: &Value, step: &str) {
    let (attempts, _) = step_attempts(booking, step);
    assert!(attempts >= 2, "{step} should have been retried: {booking}");
}

const GOOD_CARD: &str = "4242424242424242";
const DECLINED_CARD: &str = "4000000000000002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_killed_before_confirming_seats() {
    // The hold is placed before the kill and must survive it; confirm_booking
    // meets the dead inventory on its first attempt and retries.
    const STEP: &str = "confirm_booking";
    let (_c, done, o) = kill_during(Which::Inventory, STEP, GOOD_CARD, 0).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_confirmed(&o, &done);
    assert_retried(&done, STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_killed_before_authorizing() {
    const STEP: &str = "authorize_payment";
    let (_c, done, o) = kill_during(Which::Payments, STEP, GOOD_CARD, 7).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_confirmed(&o, &done);
    assert_retried(&done, STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loyalty_killed_before_awarding_miles() {
    const STEP: &str = "award_miles";
    let (_c, done, o) = kill_during(Which::Loyalty, STEP, GOOD_CARD, 14).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_confirmed(&o, &done);
    assert_retried(&done, STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_killed_before_its_compensation() {
    // The card declines after the delay, so the seats must be released while
    // the inventory is dead: the compensation retries until it is back.
    let (_c, done, o) = kill_during(Which::Inventory, "authorize_payment", DECLINED_CARD, 21).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_compensated(&o);
    assert_eq!(o.holds.len(), 1, "the hold was placed, then released");
    assert_eq!(o.payments.len(), 1, "{:?}", o.payments);
    assert_eq!(o.payments[0]["status"], "declined", "{}", o.payments[0]);
    assert!(o.entries.is_empty(), "no miles for a declined booking");
    let (_, compensations) = step_attempts(&done, "reserve_seat");
    assert!(
        compensations >= 2,
        "the release met the dead inventory, then was retried: {done}"
    );
}
