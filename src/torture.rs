//! The booking torture: bookings run in a child process that is killed
//! with SIGKILL at random moments and restarted, again and again. Each
//! restart checks the invariants of every saga that has ended and times
//! the recovery; a last child finishes every saga and checks the totals:
//! no seat left held, seats sold = passengers of confirmed bookings (never
//! over capacity), captured money = their totals, no open authorization,
//! member miles = miles of confirmed bookings, one booking per completed
//! saga, none both confirmed and compensated.
//!
//! Used by `tests/booking_crash.rs` (100 kills) and `examples/torture.rs`
//! (any number). The same binary is parent and child (`--child`).

use booking_domain::booking_saga::{
    booking_definition, check_consistency, start_booking, BookingData, BookingRequest,
    BookingServices, BookingStatus, Passenger,
};
use booking_domain::catalog::Catalog;
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::inventory::HoldState;
use booking_domain::loyalty::{AccountId, CreateAccount};
use booking_domain::payments::{CardDetails, PaymentStatus};
use booking_domain::{Cabin, FlightId};
use chrono::{Datelike, Days, NaiveDate, Utc};
use saga_engine::{Engine, SagaStatus, SledStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const PER_ROUND: usize = 8;
/// Seats per departure.
const CAPACITY: u32 = 300;
/// Weekly departures the bookings spread over, so that seats last.
const DEPARTURES: u64 = 26;

struct Child {
    recovery: Duration,
    engine: Engine,
    services: BookingServices,
    flight: FlightId,
    date: NaiveDate,
    member: AccountId,
}

async fn open(dir: &Path) -> Child {
    let db = saga_engine::store::open_sled_db(&dir.join("db")).expect("db opens after a crash");
    let catalog = Arc::new(Catalog::default_dataset());
    let flight = catalog
        .flights()
        .into_iter()
        .find(|f| f.economy.is_some())
        .expect("a flight")
        .clone();
    // A fixed date on the flight's weekday, the same in every child.
    let mut date = NaiveDate::from_ymd_opt(Utc::now().year() + 1, 1, 1).unwrap();
    while date.weekday() != flight.weekday {
        date = date + Days::new(1);
    }
    let services = BookingServices::local(&db, catalog).unwrap();
    for week in 0..DEPARTURES {
        services
            .inventory
            .set_capacity(
                &flight.id,
                date + Days::new(7 * week),
                Cabin::Economy,
                CAPACITY,
            )
            .await
            .ok(); // refused once seats are booked: fine
    }
    let member = services
        .loyalty
        .create_account(
            "crash-member",
            &CreateAccount {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                email: "ada@example.com".into(),
            },
        )
        .await
        .unwrap()
        .id;
    // Recovery: open the engine's store and resume every saga in flight.
    let opened = std::time::Instant::now();
    let engine = Engine::builder(SledStore::with_db_at(db, dir.join("db")).unwrap())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    let recovery = opened.elapsed();
    Child {
        recovery,
        engine,
        services,
        flight: flight.id,
        date,
        member,
    }
}

fn request(c: &Child, n: usize) -> BookingRequest {
    let mut faults = BTreeMap::new();
    match n % 6 {
        0 => {
            faults.insert(BookingStep::ALL[n / 6 % 4], Fault::Reject);
        }
        1 => {
            faults.insert(BookingStep::AuthorizePayment, Fault::LoseReply);
        }
        2 => {
            faults.insert(BookingStep::AwardMiles, Fault::Transient { times: 1 });
            faults.insert(BookingStep::ConfirmBooking, Fault::Delay { ms: 30 });
        }
        _ => {}
    }
    BookingRequest {
        flight_id: c.flight.0.clone(),
        date: c.date + Days::new(7 * (n as u64 % DEPARTURES)),
        cabin: Cabin::Economy,
        passengers: (0..1 + n % 3)
            .map(|i| Passenger {
                first_name: format!("P{}", "a".repeat(i + 1)),
                last_name: "Lovelace".into(),
            })
            .collect(),
        email: format!("c{}@example.com", n % 4),
        loyalty_id: n.is_multiple_of(2).then(|| c.member.0.clone()),
        card: CardDetails {
            number: if n % 7 == 3 {
                "4000000000009995".into()
            } else {
                "4242424242424242".into()
            },
            exp_month: 12,
            exp_year: Utc::now().year() as u32 + 2,
            cvc: "123".into(),
            holder_name: "Ada Lovelace".into(),
        },
        redeem_miles: 0,
        faults,
    }
}

async fn run_round(dir: PathBuf, round: usize) {
    let c = Arc::new(open(&dir).await);
    let recovery_us = c.recovery.as_micros();
    let problems = check_ended(&c).await;
    // One line for the parent: the recovery time and what was found.
    println!("recovered_us={recovery_us} violations={}", problems.len());
    for p in &problems {
        eprintln!("violation: {p}");
    }
    if !problems.is_empty() {
        std::process::exit(3);
    }
    let mut tasks = Vec::new();
    for r in [round, round.saturating_sub(1)] {
        for i in 0..PER_ROUND {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let n = r * PER_ROUND + i;
                let req = request(&c, n);
                if let Ok(id) = start_booking(&c.engine, &c.services, &req, &format!("b-{n}")).await
                {
                    let _ = c.engine.wait(&id).await;
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Invariants that hold at any moment, for the sagas that have ended.
async fn check_ended(c: &Child) -> Vec<String> {
    let mut problems = check_consistency(&c.engine, &c.services)
        .await
        .unwrap_or_else(|e| vec![format!("consistency check failed: {e}")]);
    if let Ok(holds) = c.services.inventory.all_holds().await {
        let mut taken: BTreeMap<NaiveDate, u32> = BTreeMap::new();
        for h in holds.iter().filter(|h| h.state != HoldState::Released) {
            *taken.entry(h.date).or_default() += h.seats;
        }
        for (date, n) in taken {
            if n > CAPACITY {
                problems.push(format!("oversold on {date}: {n} of {CAPACITY}"));
            }
        }
    }
    problems
}

/// Finishes every saga and checks the booking invariants; returns problems.
async fn finish(dir: PathBuf) -> (Vec<String>, usize) {
    let c = Arc::new(open(&dir).await);
    // A last round that nobody kills, so that both outcomes are present.
    let mut tasks = Vec::new();
    for n in 100_000..100_000 + PER_ROUND {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let id = start_booking(&c.engine, &c.services, &request(&c, n), &format!("b-{n}"))
                .await
                .unwrap();
            c.engine.wait(&id).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    while c.engine.running_count() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut problems = check_consistency(&c.engine, &c.services).await.unwrap();
    let sagas = c.engine.list(None, usize::MAX).await.unwrap();
    let (mut seats, mut captured, mut miles, mut completed, mut compensated) =
        (0u32, 0i64, 0u64, 0, 0);
    for s in &sagas {
        let d: BookingData = s.data_as().unwrap();
        match s.status() {
            SagaStatus::Completed => {
                completed += 1;
                seats += d.passengers.len() as u32;
                captured += d.price.total.minor;
                miles += d.miles_awarded.unwrap_or(0);
            }
            SagaStatus::Compensated => compensated += 1,
            other => problems.push(format!("saga {} ended {other}", s.id)),
        }
    }
    let holds = c.services.inventory.all_holds().await.unwrap();
    let held: u32 = holds
        .iter()
        .filter(|h| h.state == HoldState::Held)
        .map(|h| h.seats)
        .sum();
    let sold: u32 = holds
        .iter()
        .filter(|h| h.state == HoldState::Confirmed)
        .map(|h| h.seats)
        .sum();
    if held != 0 {
        problems.push(format!(
            "{held} seats still held (not confirmed, not released)"
        ));
    }
    if sold != seats {
        problems.push(format!(
            "{sold} seats sold but completed bookings have {seats} passengers"
        ));
    }
    let mut per_date: BTreeMap<NaiveDate, u32> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.state == HoldState::Confirmed) {
        *per_date.entry(h.date).or_default() += h.seats;
    }
    for (date, n) in per_date {
        if n > CAPACITY {
            problems.push(format!("oversold on {date}: {n} of {CAPACITY}"));
        }
    }
    let payments = c.services.payments.all_payments().await.unwrap();
    let taken: i64 = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Captured)
        .map(|p| p.amount.minor)
        .sum();
    if taken != captured {
        problems.push(format!(
            "captured {taken} but confirmed bookings total {captured}"
        ));
    }
    if payments
        .iter()
        .any(|p| p.status == PaymentStatus::Authorized)
    {
        problems.push("an authorization was left open".into());
    }
    let account = c.services.loyalty.account(&c.member).await.unwrap();
    if account.balance != miles || account.qualifying_miles != miles {
        problems.push(format!(
            "member has {} miles ({} qualifying) but confirmed bookings earned {miles}",
            account.balance, account.qualifying_miles
        ));
    }
    let bookings = c.services.bookings.all().unwrap();
    let confirmed = bookings
        .iter()
        .filter(|b| b.status == BookingStatus::Confirmed)
        .count();
    if confirmed != completed {
        problems.push(format!(
            "{confirmed} confirmed bookings for {completed} completed sagas"
        ));
    }
    eprintln!(
        "torture: {} sagas: {completed} confirmed, {compensated} compensated; {sold} seats sold, {captured} captured, {miles} miles",
        sagas.len()
    );
    if completed == 0 || compensated == 0 {
        problems.push("expected both confirmed and compensated bookings".into());
    }
    (problems, sagas.len())
}

/// What a torture run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Children killed with SIGKILL.
    pub kills: usize,
    /// Of those, killed while still running.
    pub killed_alive: usize,
    /// Restarts that reported their recovery.
    pub recoveries: usize,
    /// Slowest and median recovery (engine open and resume), microseconds.
    pub recovery_max_us: u64,
    /// Median recovery.
    pub recovery_p50_us: u64,
    /// Sagas in the store at the end.
    pub sagas: usize,
}

fn spawn_child(exe: &Path, dir: &Path, arg: &str) -> Result<std::process::Child, String> {
    Command::new(exe)
        .arg("--child")
        .arg(arg)
        .env("CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))
}

/// Runs `kills` rounds of spawn / random wait in `window_ms` / SIGKILL,
/// then the finishing child. Fails on any violation a child reports.
pub fn run(
    exe: &Path,
    dir: &Path,
    kills: usize,
    window_ms: std::ops::Range<u64>,
) -> Result<Report, String> {
    use std::io::Read;
    let mut report = Report {
        kills,
        ..Report::default()
    };
    let mut recoveries = Vec::new();
    for round in 0..kills {
        let mut c = spawn_child(exe, dir, &round.to_string())?;
        let span = window_ms.end.saturating_sub(window_ms.start).max(1);
        std::thread::sleep(Duration::from_millis(
            window_ms.start + rand::random::<u64>() % span,
        ));
        if c.try_wait().map_err(|e| e.to_string())?.is_none() {
            report.killed_alive += 1;
        }
        c.kill().map_err(|e| e.to_string())?; // SIGKILL
        let status = c.wait().map_err(|e| e.to_string())?;
        let mut out = String::new();
        if let Some(mut o) = c.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(line) = out.lines().find(|l| l.starts_with("recovered_us=")) {
            let us = line["recovered_us=".len()..]
                .split(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            recoveries.push(us);
        }
        if let Some(code) = status.code() {
            return Err(format!(
                "child of round {round} exited by itself with code {code} (3 = invariant violated after restart)"
            ));
        }
    }
    let last = spawn_child(exe, dir, "finish")?;
    let output = last
        .wait_with_output()
        .map_err(|e| format!("waiting for the final child: {e}"))?;
    if !output.status.success() {
        return Err(format!("final child failed: {}", output.status));
    }
    let out = String::from_utf8_lossy(&output.stdout);
    report.sagas = out
        .lines()
        .find_map(|l| l.strip_prefix("sagas="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if report.killed_alive < 50.min(kills) {
        return Err(format!(
            "only {} of {kills} children were alive when killed",
            report.killed_alive
        ));
    }
    recoveries.sort_unstable();
    report.recoveries = recoveries.len();
    report.recovery_max_us = recoveries.last().copied().unwrap_or(0);
    report.recovery_p50_us = recoveries.get(recoveries.len() / 2).copied().unwrap_or(0);
    Ok(report)
}

/// The child's entry point: `--child ROUND` runs bookings until killed;
/// `--child finish` completes everything and checks the totals.
pub fn child_main(arg: &str) {
    let dir = PathBuf::from(std::env::var("CRASH_DIR").expect("CRASH_DIR is set by the parent"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if arg == "finish" {
        let (problems, sagas) = rt.block_on(finish(dir));
        println!("sagas={sagas}");
        if !problems.is_empty() {
            for p in problems.iter().take(20) {
                eprintln!("violation: {p}");
            }
            std::process::exit(1);
        }
    } else {
        let round = arg.parse().unwrap_or(0);
        rt.block_on(run_round(dir, round));
    }
}
