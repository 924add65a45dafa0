//! How long opening the three local participants takes, and what it costs in
//! memory, on a database that holds many finished bookings' effects.
//!
//! ```text
//! cargo run -p booking-domain --example participants_open -- fill DIR 100000
//! cargo run -p booking-domain --example participants_open -- open DIR
//! ```
//!
//! `fill` books N flights through the participants' public API (a hold that
//! is confirmed, a payment that is captured, an award of miles), 256 at a
//! time. `open` opens the database and the three participants in a fresh
//! process and prints one JSON line: the participants' open time, the
//! resident memory it added and the process's peak.

use booking_domain::inventory::{HoldRequest, Inventory, LocalInventory};
use booking_domain::loyalty::{CreateAccount, LocalLoyalty, Loyalty};
use booking_domain::payments::{AuthorizeRequest, CardDetails, LocalPayments, Payments};
use booking_domain::{Cabin, Currency, FlightId, Money};
use chrono::NaiveDate;
use std::sync::Arc;
use std::time::Instant;

const ACCOUNTS: usize = 1_000;
const DEPARTURES: usize = 2_000;
const CONCURRENCY: usize = 256;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn card() -> CardDetails {
    CardDetails {
        number: "4242 4242 4242 4242".into(),
        exp_month: 12,
        exp_year: 2099,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

async fn fill(dir: &str, n: usize) {
    let db = sled::open(dir).expect("open db");
    let inv = LocalInventory::open(&db).expect("inventory");
    let pay = LocalPayments::open(&db).expect("payments");
    let loy = LocalLoyalty::open(&db).expect("loyalty");
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for a in 0..ACCOUNTS {
        let req = CreateAccount {
            first_name: "Ada".into(),
            last_name: format!("L{a}"),
            email: format!("member{a}@example.com"),
        };
        accounts.push(
            loy.create_account(&format!("acct-{a}"), &req)
                .await
                .unwrap(),
        );
    }
    let accounts = Arc::new(accounts);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (inv, pay, loy, accounts, next) = (
                inv.clone(),
                pay.clone(),
                loy.clone(),
                accounts.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let d = i % DEPARTURES;
                    let key = format!("booking-{i:08}");
                    let hold = HoldRequest {
                        flight: FlightId(format!("XX{}", d % 100)),
                        date: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()
                            + chrono::Duration::days((d / 100) as i64),
                        cabin: Cabin::Economy,
                        seats: 1,
                    };
                    inv.hold(&key, &hold).await.unwrap();
                    inv.confirm(&key).await.unwrap();
                    let acc = &accounts[i % ACCOUNTS];
                    let amount = Money::new(12_345, Currency::usd());
                    let auth = AuthorizeRequest {
                        customer_email: acc.email.clone(),
                        card: card(),
                        amount: amount.clone(),
                    };
                    pay.authorize(&key, &auth).await.unwrap();
                    pay.capture(&key).await.unwrap();
                    loy.award(&key, &acc.id, &amount).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    db.flush().unwrap();
    println!(
        "{{\"filled\":{n},\"secs\":{:.1},\"disk_mb\":{:.1}}}",
        started.elapsed().as_secs_f64(),
        db.size_on_disk().unwrap_or(0) as f64 / 1e6
    );
}

fn open(dir: &str) {
    let rss0 = status_kb("VmRSS:");
    let t0 = Instant::now();
    let db = sled::open(dir).expect("open db");
    let db_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss1 = status_kb("VmRSS:");
    let t1 = Instant::now();
    let inv = LocalInventory::open(&db).expect("inventory");
    let pay = LocalPayments::open(&db).expect("payments");
    let loy = LocalLoyalty::open(&db).expect("loyalty");
    let open_ms = t1.elapsed().as_secs_f64() * 1e3;
    let rss2 = status_kb("VmRSS:");
    println!(
        "{{\"sled_open_ms\":{db_ms:.1},\"participants_open_ms\":{open_ms:.1},\"sled_rss_mb\":{:.1},\"participants_rss_mb\":{:.1},\"peak_rss_mb\":{:.1}}}",
        rss1.saturating_sub(rss0) as f64 / 1024.0,
        rss2.saturating_sub(rss1) as f64 / 1024.0,
        status_kb("VmHWM:") as f64 / 1024.0
    );
    drop((inv, pay, loy));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("fill"), Some(dir)) => {
            let n = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fill(dir, n));
        }
        (Some("open"), Some(dir)) => open(dir),
        _ => eprintln!("usage: participants_open fill DIR [N] | open DIR"),
    }
}
