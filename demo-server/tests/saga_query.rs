//! The admin saga list over real loopback HTTP, answered from the store's
//! indexes: filtering by a search attribute (`attr=name:value`; an e-mail
//! address hashed by the server), paging with the cursor, a bad `attr`
//! refused with a 422 naming the field, and the overview's counts from the
//! store's counters.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Server, TOKEN};

async fn admin_get(server: &Server, path: &str) -> support::Raw {
    let auth = format!("Bearer {TOKEN}");
    request_from(
        local(),
        server.addr,
        "GET",
        path,
        &[("authorization", &auth)],
        b"",
    )
    .await
}

async fn book(
    server: &Server,
    flight: &str,
    date: &str,
    key: &str,
    email: &str,
    faults: Value,
) -> String {
    let mut body = booking_body(flight, date, faults);
    body["email"] = json!(email);
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["booking_id"].as_str().unwrap().to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_list_filters_by_search_attribute_and_pages_with_its_cursor() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let ann = book(&server, &flight, &date, "q-1", "Ann@Example.com", json!({})).await;
    let bob = book(&server, &flight, &date, "q-2", "bob@example.com", json!({})).await;
    let ann2 = book(
        &server,
        &flight,
        &date,
        "q-3",
        "ann@example.com",
        json!({"authorize_payment": {"mode": "reject"}}),
    )
    .await;
    let done = wait_terminal(server.addr, &ann).await;
    wait_terminal(server.addr, &bob).await;
    wait_terminal(server.addr, &ann2).await;
    let reference = done["booking_ref"]
        .as_str()
        .expect("a confirmed booking")
        .to_string();

    let r = admin_get(
        &server,
        &format!("/api/admin/sagas?attr=reference:{reference}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.body), vec![ann.clone()], "{}", r.text);
    // The address, in any case, is hashed by the server; both of Ann's
    // bookings, newest first.
    let r = admin_get(&server, "/api/admin/sagas?attr=email:ANN%40example.com").await;
    assert_eq!(ids(&r.body), [ann2.clone(), ann.clone()], "{}", r.text);
    let r = admin_get(
        &server,
        "/api/admin/sagas?attr=email:ann%40example.com&status=compensated",
    )
    .await;
    assert_eq!(ids(&r.body), vec![ann2.clone()], "{}", r.text);
    let r = admin_get(
        &server,
        &format!("/api/admin/sagas?attr=departure:{date}&limit=2"),
    )
    .await;
    assert_eq!(ids(&r.body), [ann2.clone(), bob.clone()], "{}", r.text);
    let cursor = r.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let r = admin_get(
        &server,
        &format!("/api/admin/sagas?attr=departure:{date}&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&r.body), vec![ann.clone()], "{}", r.text);
    assert!(r.body["next_cursor"].is_null(), "{}", r.text);
    let r = admin_get(&server, "/api/admin/sagas?attr=reference:NOPE00").await;
    assert_eq!(ids(&r.body), Vec::<String>::new(), "{}", r.text);

    // A malformed attribute: 422, saying which field and why.
    for bad in ["reference", "reference:", ":ABC"] {
        let r = admin_get(&server, &format!("/api/admin/sagas?attr={bad}")).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert!(r.text.contains("attr"), "{bad}: {}", r.text);
    }

    // The overview's counts come from the store's counters.
    let r = admin_get(&server, "/api/admin/overview").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let count = |status: &str| {
        r.body["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["status"] == status)
            .map(|c| c["count"].as_u64().unwrap())
    };
    assert_eq!(count("completed"), Some(2), "{}", r.text);
    assert_eq!(count("compensated"), Some(1), "{}", r.text);
    assert_eq!(count("stuck"), Some(0), "{}", r.text);
    assert_eq!(
        r.body["counts"][0]["status"], "stuck",
        "stuck first: {}",
        r.text
    );
    let r = admin_get(&server, "/api/admin/sagas?limit=1").await;
    assert_eq!(r.body["total"], 3, "{}", r.text);
    server.stop().await;
}
