//! `demo-server sagas list --attr name=value` against a real server
//! process on loopback, then offline on its stopped directory: a booking
//! found by its reference, by its contact address (hashed before it leaves
//! the command line) and by its departure date; a malformed `--attr`
//! refused with a usage message.

mod support;

#[path = "cli_support/mod.rs"]
mod cli;

use cli::*;
use serde_json::json;
use support::{find_flight, wait_terminal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_search_attribute_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = spawn_server(data, &[]);
    let url = format!("http://{}", server.addr);
    let (flight, date) = find_flight(server.addr).await;
    let first = book(server.addr, &flight, &date, json!({})).await;
    let second = book(server.addr, &flight, &date, json!({})).await;
    let done = wait_terminal(server.addr, &first).await;
    wait_terminal(server.addr, &second).await;
    let reference = done["booking_ref"].as_str().unwrap().to_string();

    let by_ref = format!("reference={reference}");
    let by_date = format!("departure={date}");
    let page = json_of(&sagas(data, &url, &["list", "--json", "--attr", &by_ref]));
    assert_eq!(ids(&page), vec![first.clone()], "{page}");
    // booking_body's contact address, in another case.
    let page = json_of(&sagas(
        data,
        &url,
        &["list", "--json", "--attr", "email=ADA@example.com"],
    ));
    assert_eq!(ids(&page), [second.clone(), first.clone()], "{page}");
    let table = ok(&sagas(data, &url, &["list", "--attr", &by_date]));
    assert!(table.contains(&first) && table.contains(&second), "{table}");
    let bad = sagas(data, &url, &["list", "--attr", "reference"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--attr"), "{err}");

    stop(server);
    let page = json_of(&sagas(
        data,
        NO_SERVER,
        &["list", "--json", "--attr", &by_ref],
    ));
    assert_eq!(ids(&page), vec![first.clone()], "offline: {page}");
    let page = json_of(&sagas(
        data,
        NO_SERVER,
        &["list", "--json", "--attr", &by_date, "--limit", "1"],
    ));
    assert_eq!(ids(&page), vec![second.clone()], "offline: {page}");
}
