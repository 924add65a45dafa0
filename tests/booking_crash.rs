//! Booking crash test: bookings run in a child process that is killed with
//! SIGKILL at random points (60 times by default, `CRASH_KILLS`), then a
//! final child finishes every saga and checks, for every saga that ended:
//! seats held = confirmed bookings' passengers, captured payments =
//! confirmed bookings' totals, net miles = miles of confirmed bookings, and
//! no booking both confirmed and compensated.
//!
//! `harness = false`: this binary is the parent and, with `--child`, the child.

mod support;

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
use std::sync::Arc;
use std::time::Duration;

const PER_ROUND: usize = 8;
const CAPACITY: u32 = 300;

struct Child {
    engine: Engine,
    services: BookingServices,
    flight: FlightId,
    date: NaiveDate,
    member: AccountId,
}

async fn open(dir: &Path) -> Child {
    let db = sled::open(dir.join("db")).expect("db opens after a crash");
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
    services
        .inventory
        .set_capacity(&flight.id, date, Cabin::Economy, CAPACITY)
        .await
        .ok(); // refused once seats are booked: fine
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
    let engine = Engine::builder(SledStore::with_db(db).unwrap())
        .register(booking_definition(&services))
        .open()
        .await
        .unwrap();
    Child {
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
        date: c.date,
        cabin: Cabin::Economy,
        passengers: (0..1 + n % 3)
            .map(|i| Passenger {
                first_name: format!("P{}", "a".repeat(i + 1)),
                last_name: "Lovelace".into(),
            })
            .collect(),
        email: format!("c{}@example.com", n % 4),
        loyalty_id: (n % 2 == 0).then(|| c.member.0.clone()),
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
        faults,
    }
}

async fn run_round(dir: PathBuf, round: usize) {
    let c = Arc::new(open(&dir).await);
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

/// Finishes every saga and checks the booking invariants; returns problems.
async fn finish(dir: PathBuf) -> Vec<String> {
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
    if sold > CAPACITY {
        problems.push(format!("oversold: {sold} of {CAPACITY}"));
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
        "booking_crash: {} sagas: {completed} confirmed, {compensated} compensated; {sold} seats sold, {captured} captured, {miles} miles",
        sagas.len()
    );
    if completed == 0 || compensated == 0 {
        problems.push("expected both confirmed and compensated bookings".into());
    }
    problems
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    if args.first().map(String::as_str) == Some("--child") {
        let dir = PathBuf::from(std::env::var("CRASH_DIR").unwrap());
        match args.get(1).map(String::as_str) {
            Some("finish") => {
                let problems = rt().block_on(finish(dir));
                if !problems.is_empty() {
                    for p in problems.iter().take(20) {
                        eprintln!("violation: {p}");
                    }
                    std::process::exit(1);
                }
            }
            Some(round) => rt().block_on(run_round(dir, round.parse().unwrap())),
            None => std::process::exit(2),
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("booking_crash: test");
        return;
    }
    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    match support::kill_loop(&exe, tmp.path(), kills, 60..300) {
        Ok(k) => eprintln!(
            "booking_crash ... ok ({kills} kills, {} mid-run)",
            k.killed_alive
        ),
        Err(e) => {
            eprintln!("booking_crash FAILED: {e}");
            std::process::exit(1);
        }
    }
}
