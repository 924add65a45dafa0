//! Catalog import while the server runs, over loopback: searchers keep
//! searching JFK -> LAX while a schedule that changes every fare is
//! imported through `POST /api/admin/catalog/import`; every answer shows
//! the old fares or the new ones, all of a kind, never a mix and never an
//! empty or failed search; after the import every search shows the new
//! fares, without a restart. (Under `SAGA_SABOTAGE=catalog-clear-then-load`
//! searches during the import come back empty: red.)

mod support;

use booking_domain::catalog::Catalog;
use booking_domain::import::{export_airports, export_flights};
use booking_domain::types::Money;
use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::{find_flight, local, request_from, Server, TOKEN};

/// The fares of one search answer by flight id, or why it is not one.
async fn fares(addr: std::net::SocketAddr, date: &str) -> Result<BTreeMap<String, i64>, String> {
    let r = request_from(
        local(),
        addr,
        "GET",
        &format!("/api/flights/search?from=JFK&to=LAX&date={date}&passengers=1"),
        &[],
        b"",
    )
    .await;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.text));
    }
    Ok(r.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            (
                x["flight"]["id"].as_str().unwrap_or("").to_string(),
                x["fare"]["minor"].as_i64().unwrap_or(-1),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_during_a_live_import_see_the_old_or_the_new_catalog_never_half() {
    let config = ServerConfig {
        rate_per_minute: 1_000_000,
        rate_burst: 100_000,
        ..ServerConfig::default()
    };
    let server = Server::start(config, RemoteParticipants::default()).await;
    let addr = server.addr;
    let (_, date) = find_flight(addr).await;
    let old = fares(addr, &date).await.unwrap();
    assert!(old.len() >= 2, "a route with several flights: {old:?}");

    // The new schedule: the built-in one (what the server was seeded with)
    // with every economy fare 7 units up.
    let base = Catalog::default_dataset();
    let airports: Vec<_> = base.airports().cloned().collect();
    let flights: Vec<_> = base
        .flights()
        .cloned()
        .map(|mut f| {
            if let Some(m) = &f.economy {
                f.economy = Some(Money::new(m.minor + 700, m.currency.clone()));
            }
            f
        })
        .collect();
    let next = Catalog::in_memory(airports, flights).unwrap();
    let (mut a, mut f) = (Vec::new(), Vec::new());
    export_airports(&next, &mut a).unwrap();
    export_flights(&next, &mut f).unwrap();
    let new: BTreeMap<String, i64> = old.iter().map(|(k, v)| (k.clone(), v + 700)).collect();

    let done = Arc::new(AtomicBool::new(false));
    let mut searchers = Vec::new();
    for _ in 0..2 {
        let (done, date, old, new) = (done.clone(), date.clone(), old.clone(), new.clone());
        searchers.push(tokio::spawn(async move {
            let (mut saw_old, mut saw_new, mut bad) = (0u32, 0u32, Vec::new());
            loop {
                let finished = done.load(Ordering::SeqCst);
                match fares(addr, &date).await {
                    Ok(got) if got == old => saw_old += 1,
                    Ok(got) if got == new => saw_new += 1,
                    Ok(got) => bad.push(format!("neither old nor new: {got:?}")),
                    Err(e) => bad.push(e),
                }
                if finished {
                    return (saw_old, saw_new, bad);
                }
            }
        }));
    }
    let body = json!({"currency": "USD", "mode": "reject",
        "airports_csv": String::from_utf8(a).unwrap(), "flights_csv": [String::from_utf8(f).unwrap()]});
    let bearer = format!("Bearer {TOKEN}");
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/admin/catalog/import",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["skipped"], 0, "{}", r.text);
    done.store(true, Ordering::SeqCst);
    let (mut olds, mut news) = (0, 0);
    for s in searchers {
        let (o, n, bad) = s.await.unwrap();
        assert!(
            bad.is_empty(),
            "searches saw a half-imported catalog: {:?}",
            &bad[..bad.len().min(3)]
        );
        olds += o;
        news += n;
    }
    assert!(news >= 2, "each searcher's last search sees the import");
    eprintln!("searches during the import: {olds} saw the old catalog, {news} the new one");
    // No restart needed, and the new fares are what a quote charges.
    assert_eq!(fares(addr, &date).await.unwrap(), new);
    let (flight, _) = find_flight(addr).await;
    let q = request_from(
        local(),
        addr,
        "POST",
        "/api/quote",
        &[("content-type", "application/json")],
        &serde_json::to_vec(
            &json!({"flight_id": flight, "date": date, "cabin": "economy", "passengers": 1}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(q.status, 200, "{}", q.text);
    assert_eq!(
        q.body["price"]["base"]["minor"].as_i64(),
        new.get(&flight).copied(),
        "{}",
        q.text
    );
    // A bad schedule in reject mode changes nothing.
    let bad =
        json!({"currency": "USD", "mode": "reject", "flights_csv": "not,a,schedule\n1,2,3\n"});
    let r = request_from(
        local(),
        addr,
        "POST",
        "/api/admin/catalog/import",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        &serde_json::to_vec(&bad).unwrap(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fares(addr, &date).await.unwrap(), new);
    let _: Value = r.body;
    server.stop().await;
}
