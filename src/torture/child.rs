//! The torture's child process: opens the participants (on a sled database
//! of their own, flushed by their own group flush) and the engine (on
//! another), checks what the previous child left, then books until killed;
//! or, as the final child, books a last round and checks the totals.
//!
//! The participants are kept apart from the engine's database on purpose:
//! if they shared it, their flushes would also make the engine's writes
//! durable, and a defect in the engine's own flushing would go unseen.
//! [`Layout`] puts them on the engine's database instead, relying on its
//! flushes alone (`tests/booking_crash_shared.rs`).

use super::checks;
use crate::acklog::{self, AckLog};
use crate::kill_loop::{self, InFlight};
use crate::verdict::Violations;
use booking_domain::booking_saga::{
    booking_definition, start_booking, BookingRequest, BookingServices, Passenger,
};
use booking_domain::catalog::{flight_id, Airport, Catalog, Flight, GeoPoint};
use booking_domain::faults::{BookingStep, Fault};
use booking_domain::loyalty::{AccountId, CreateAccount};
use booking_domain::payments::CardDetails;
use booking_domain::types::{Currency, Money};
use booking_domain::{Cabin, FlightId};
use chrono::{Datelike, Days, NaiveDate, NaiveTime, Utc, Weekday};
use saga_engine::{Engine, SagaId, SledStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Sagas started per round (and as many repeated from the round before).
const PER_ROUND: usize = 8;
/// Seats per departure.
pub(super) const CAPACITY: u32 = 300;
/// Weekly departures the bookings spread over, so that seats last.
const DEPARTURES: u64 = 26;
/// The acknowledgement log, in the data directory.
pub(super) const ACKS: &str = "acks.log";

/// An opened child: engine, participants and the fixed booking targets.
pub(super) struct Child {
    pub(super) recovery: Duration,
    pub(super) engine: Engine,
    pub(super) services: BookingServices,
    pub(super) flight: FlightId,
    pub(super) date: NaiveDate,
    pub(super) member: AccountId,
    /// The answers to waiting bookings acknowledged so far
    /// ([`super::waits_mix::LOG`]).
    pub(super) answered: Vec<(String, String)>,
}

/// A catalog of one flight: the built-in dataset takes tens of
/// milliseconds to build in a debug build, in every child, which would
/// leave fewer kills landing on running sagas.
fn one_flight() -> (Arc<Catalog>, Flight) {
    let airport = |code: &str, city: &str, lat: f64, lon: f64| Airport {
        code: code.into(),
        city: city.into(),
        name: format!("{city} Airport"),
        country: "Testland".into(),
        utc_offset_minutes: Some(0),
        location: Some(GeoPoint {
            latitude: lat,
            longitude: lon,
        }),
    };
    let flight = Flight {
        id: flight_id("TT100", "AAA", "BBB", Weekday::Wed, 0),
        flight_no: "TT100".into(),
        airline_code: "TT".into(),
        airline: "Torture Air".into(),
        origin: "AAA".into(),
        destination: "BBB".into(),
        weekday: Weekday::Wed,
        departure: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        arrival: NaiveTime::from_hms_opt(11, 30, 0).unwrap(),
        arrival_weekday: Weekday::Wed,
        duration_minutes: 150,
        economy: Some(Money::new(23_400, Currency::usd())),
        business: None,
        first: None,
    };
    let catalog = Catalog::in_memory(
        vec![
            airport("AAA", "Alpha", 51.47, -0.45),
            airport("BBB", "Beta", 40.64, -73.78),
        ],
        vec![flight.clone(), super::round_trip_mix::return_flight()],
    )
    .expect("a valid one-flight catalog");
    (Arc::new(catalog), flight)
}

/// Where the child keeps the participants (`TORTURE_PARTICIPANTS`, read by
/// the child; the parent's environment passes it on).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// On a database of their own, flushed by their own group flush (the
    /// default: a defect in the engine's flushing cannot hide behind theirs).
    OwnDb,
    /// On the engine's database, their steps' effects made durable by the
    /// engine's flushes (`BookingServices::local_on_engine_db`), as the demo
    /// server runs them.
    EngineDb,
    /// On a database of their own but asking to be covered by the engine's
    /// flushes: refused at open, unless the check is sabotaged
    /// (`cover-foreign-db`), and then their effects are lost.
    OwnDbCovered,
}

impl Layout {
    /// The environment variable that picks the layout.
    pub const VAR: &'static str = "TORTURE_PARTICIPANTS";

    fn from_env() -> Layout {
        match std::env::var(Self::VAR).as_deref() {
            Ok("engine-db") => Layout::EngineDb,
            Ok("own-db-covered") => Layout::OwnDbCovered,
            _ => Layout::OwnDb,
        }
    }
}

async fn open(dir: &Path) -> Result<Child, Violations> {
    let mut v = Violations::new();
    let layout = Layout::from_env();
    // On the engine's database the store opens first: the participants need
    // its group commit.
    let mut early_store = None;
    let pdb = if layout == Layout::EngineDb {
        let opened = std::time::Instant::now();
        match SledStore::open(dir.join("engine")) {
            Ok(s) => {
                let db = s.db().clone();
                early_store = Some((s, opened));
                db
            }
            Err(e) => {
                v.push("store refused to open", e.to_string());
                return Err(v);
            }
        }
    } else {
        match saga_engine::store::open_sled_db(&dir.join("participants")) {
            Ok(db) => db,
            Err(e) => {
                v.push("participants refused to open", e.to_string());
                return Err(v);
            }
        }
    };
    if layout == Layout::OwnDbCovered {
        let opened = std::time::Instant::now();
        match SledStore::open(dir.join("engine")) {
            Ok(s) => early_store = Some((s, opened)),
            Err(e) => {
                v.push("store refused to open", e.to_string());
                return Err(v);
            }
        }
    }
    let (catalog, flight) = one_flight();
    // A fixed date on the flight's weekday, the same in every child.
    let mut date = NaiveDate::from_ymd_opt(Utc::now().year() + 1, 1, 1).unwrap();
    while date.weekday() != flight.weekday {
        date = date + Days::new(1);
    }
    // The card vault's key lives beside the participants' database.
    let pdir = dir.join("participants");
    let opened_services = match &early_store {
        Some((store, _)) => {
            BookingServices::local_on_engine_db(&pdb, &pdir, catalog, &store.durability())
        }
        None => BookingServices::local_in(&pdb, &pdir, catalog),
    };
    let mut services = match opened_services {
        Ok(s) => s,
        Err(e) => {
            v.push("participants refused to open", e.to_string());
            return Err(v);
        }
    };
    services.waits = super::waits_mix::waits();
    for week in 0..DEPARTURES {
        for id in [&flight.id, &super::round_trip_mix::return_flight().id] {
            services
                .inventory
                .set_capacity(id, date + Days::new(7 * week), Cabin::Economy, CAPACITY)
                .await
                .ok(); // refused once seats are booked: fine
        }
    }
    let member = match services
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
    {
        Ok(a) => a.id,
        Err(e) => {
            v.push("participant setup failed", format!("loyalty account: {e}"));
            return Err(v);
        }
    };
    if let Err(e) = super::traveller_mix::seed_member(&services, &member).await {
        v.push("participant setup failed", e);
        return Err(v);
    }
    // Recovery: open the engine's store and resume every saga in flight.
    let (store, opened) = match early_store {
        Some(s) => s,
        None => {
            let opened = std::time::Instant::now();
            match SledStore::open(dir.join("engine")) {
                Ok(s) => (s, opened),
                Err(e) => {
                    v.push("store refused to open", e.to_string());
                    return Err(v);
                }
            }
        }
    };
    let engine = match Engine::builder(store)
        .register(booking_definition(&services))
        .register(booking_domain::cancellation::cancellation_definition(
            &services,
        ))
        .open()
        .await
    {
        Ok(e) => e,
        Err(e) => {
            v.push("store refused to open", format!("engine: {e}"));
            return Err(v);
        }
    };
    // Bookings a kill caught between their start and their automatic
    // wait signals get them now.
    if let Err(e) = booking_domain::booking_saga::resume_waits(&engine).await {
        v.push("store refused to open", format!("resume waits: {e}"));
        return Err(v);
    }
    Ok(Child {
        recovery: opened.elapsed(),
        engine,
        services,
        flight: flight.id,
        date,
        member,
        answered: acklog::read(&dir.join(super::waits_mix::LOG)),
    })
}

fn request(c: &Child, n: usize) -> BookingRequest {
    let mut faults = BTreeMap::new();
    match n % 6 {
        0 => {
            faults.insert(
                super::round_trip_mix::ONE_WAY_STEPS[n / 6 % 4],
                Fault::Reject,
            );
        }
        1 => {
            faults.insert(BookingStep::AuthorizePayment, Fault::LoseReply);
        }
        2 => {
            faults.insert(BookingStep::AwardMiles, Fault::Transient { times: 1 });
            faults.insert(BookingStep::ConfirmBooking, Fault::Delay { ms: 30 });
        }
        // Waits between its start and its authorization, where a kill
        // finds its card only in the payments participant's vault.
        4 => {
            faults.insert(BookingStep::ReserveSeat, Fault::Delay { ms: 40 });
        }
        _ => {}
    }
    let mut req = BookingRequest {
        hold: false,
        flight_id: c.flight.0.clone(),
        date: c.date + Days::new(7 * (n as u64 % DEPARTURES)),
        cabin: Cabin::Economy,
        passengers: (0..1 + n % 3)
            .map(|i| Passenger {
                first_name: format!("P{}", "a".repeat(i + 1)),
                last_name: "Lovelace".into(),
                date_of_birth: None,
            })
            .collect(),
        email: format!("c{}@example.com", n % 4),
        loyalty_id: n.is_multiple_of(2).then(|| c.member.0.clone()),
        phone: None,
        redeem_miles: 0,
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
        return_flight_id: None,
        return_date: None,
    };
    super::traveller_mix::adjust(n, &mut req);
    super::round_trip_mix::adjust(n, &mut req);
    super::waits_mix::adjust(n, &mut req);
    req
}

/// Opens, checks what the last child left, and reports; exits 3 on a
/// violation (the parent stops there).
async fn open_and_check(dir: &Path) -> Arc<Child> {
    let c = match open(dir).await {
        Ok(c) => Arc::new(c),
        Err(v) => {
            v.print_lines();
            std::process::exit(3);
        }
    };
    // One line for the parent: the recovery time.
    println!("recovered_us={}", c.recovery.as_micros());
    let acks = acklog::read(&dir.join(ACKS));
    let problems = checks::after_restart(&c, &acks).await;
    if !problems.is_empty() {
        problems.print_lines();
        std::process::exit(3);
    }
    kill_loop::report_checked(acks.len());
    c
}

/// Starts booking `n` under key `b-N`, acknowledges it in `acks` (when
/// given), answers it if it waits for its customer (logged in `waits`),
/// and waits for its end; reports every failed call.
async fn book(c: Arc<Child>, n: usize, acks: Option<Arc<AckLog>>, waits: Option<Arc<AckLog>>) {
    let key = format!("b-{n}");
    match start_booking(&c.engine, &c.services, &request(&c, n), &key).await {
        Ok(id) => {
            if let Some(log) = &acks {
                if let Err(e) = log.ack(&key, id.as_str()) {
                    kill_loop::report_error("start", format!("{key}: writing the ack log: {e}"));
                    return;
                }
            }
            super::waits_mix::answer(&c, n, &id, waits.as_ref()).await;
            if let Err(e) = c.engine.wait(&id).await {
                wait_again(&c.engine, &key, &id, e).await;
            }
            super::traveller_mix::after_booking(&c, n, &id, acks.as_ref()).await;
        }
        Err(e) => kill_loop::report_error("start", format!("{key}: {e}")),
    }
}

/// `start_booking` may find a saga by its key that another task of this
/// process is still starting: the record is written (and flushed) but its
/// worker not yet registered, and `Engine::wait` then fails with "no worker
/// runs it". That error is explained (and reported as expected) only if
/// a second wait, a moment later, succeeds.
async fn wait_again(engine: &Engine, key: &str, id: &SagaId, first: saga_engine::Error) {
    let raced = matches!(
        &first,
        saga_engine::Error::InvalidState { status: saga_engine::SagaStatus::Running, operation, .. }
            if operation.starts_with("wait")
    );
    if !raced {
        kill_loop::report_error("wait", format!("{key} ({id}): {first}"));
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if engine.wait(id).await.is_ok() {
            kill_loop::report_expected(
                "wait raced its start",
                format!("{key} ({id}): {first}; the worker was not yet registered, a second wait succeeded"),
            );
            return;
        }
    }
    kill_loop::report_error("wait", format!("{key} ({id}): {first}"));
}

async fn run_round(dir: PathBuf, round: usize) {
    let c = open_and_check(&dir).await;
    let acks = match AckLog::open(&dir.join(ACKS)) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            kill_loop::report_error("start", format!("opening the ack log: {e}"));
            std::process::exit(3);
        }
    };
    let waits = match AckLog::open(&dir.join(super::waits_mix::LOG)) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            kill_loop::report_error("start", format!("opening the waits log: {e}"));
            std::process::exit(3);
        }
    };
    let inflight = InFlight::new();
    let mut tasks = Vec::new();
    // This round's bookings and, again, the last round's (same keys: they
    // must map to the sagas already started).
    for r in [round, round.saturating_sub(1)] {
        for i in 0..PER_ROUND {
            let (c, acks, waits, guard) =
                (c.clone(), acks.clone(), waits.clone(), inflight.enter());
            tasks.push(tokio::spawn(async move {
                let _guard = guard;
                book(c, r * PER_ROUND + i, Some(acks), Some(waits)).await;
            }));
        }
    }
    let (engine, count) = (c.engine.clone(), inflight.clone());
    let _beat = kill_loop::heartbeat(move || count.get().max(engine.running_count()));
    for t in tasks {
        if let Err(e) = t.await {
            kill_loop::report_error("wait", format!("a booking task panicked: {e}"));
        }
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// The final child: a last round nobody kills (so that both outcomes are
/// present), every saga finished, then the totals.
async fn finish(dir: PathBuf) -> (Violations, usize) {
    let c = open_and_check(&dir).await;
    let mut tasks = Vec::new();
    for n in 100_000..100_000 + PER_ROUND {
        tasks.push(tokio::spawn(book(c.clone(), n, None, None)));
    }
    for t in tasks {
        if let Err(e) = t.await {
            kill_loop::report_error("wait", format!("a booking task panicked: {e}"));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while c.engine.running_count() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    checks::totals(&c).await
}

/// The child's entry point: `--child ROUND` runs bookings until killed;
/// `--child finish` completes everything and checks the totals.
pub fn child_main(arg: &str) {
    let dir = kill_loop::child_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if arg == "finish" {
        let (problems, sagas) = rt.block_on(finish(dir));
        println!("sagas={sagas}");
        problems.print_lines();
        if !problems.is_empty() {
            std::process::exit(1);
        }
    } else {
        let round = arg.parse().unwrap_or(0);
        rt.block_on(run_round(dir, round));
    }
}
