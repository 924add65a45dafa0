//! Round trips over real loopback: a search with a return date, a booking
//! of both legs (`return_flight_id`, `return_date`) whose status shows both
//! seat steps and the return leg, one charge for both, seats taken on both
//! flights; and a bad return leg refused with a 422 naming the field.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use support::{booking_body, local, request_from, wait_terminal, Raw, Server};

async fn get(server: &Server, path: &str) -> Raw {
    request_from(local(), server.addr, "GET", path, &[], b"").await
}

async fn book(server: &Server, key: &str, body: &Value) -> Raw {
    let bytes = serde_json::to_vec(body).unwrap();
    request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        &bytes,
    )
    .await
}

/// A JFK -> LAX offer and a LAX -> JFK offer some days later, for two.
async fn round_trip_offers(server: &Server) -> (Value, Value) {
    let today = chrono::Utc::now().date_naive();
    for d in 0..14u64 {
        let date = today + chrono::Days::new(20 + d);
        let back = date + chrono::Days::new(3);
        let r = get(
            server,
            &format!(
                "/api/flights/search?from=JFK&to=LAX&date={date}&return_date={back}&passengers=2"
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let (Some(out), Some(ret)) = (
            r.body["outbound"].as_array().and_then(|a| a.first()),
            r.body["inbound"].as_array().and_then(|a| a.first()),
        ) {
            return (out.clone(), ret.clone());
        }
    }
    panic!("no JFK-LAX round trip in two weeks");
}

async fn seats_left(server: &Server, offer: &Value) -> u64 {
    let r = get(
        server,
        &format!(
            "/api/flights/{}?date={}",
            offer["flight"]["id"].as_str().unwrap(),
            offer["date"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["seats_left"]["economy"].as_u64().unwrap()
}

fn with_return(out: &Value, flight: &Value, date: &Value) -> Value {
    let mut body = booking_body(
        out["flight"]["id"].as_str().unwrap(),
        out["date"].as_str().unwrap(),
        json!({}),
    );
    body["return_flight_id"] = flight.clone();
    body["return_date"] = date.clone();
    body
}

fn refused_fields(r: &Raw) -> Vec<(String, String)> {
    r.body["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["field"].as_str().unwrap_or_default().to_string(),
                        f["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_round_trip_books_both_legs_and_a_bad_return_leg_is_a_422() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (out, ret) = round_trip_offers(&server).await;
    let (out_before, ret_before) = (
        seats_left(&server, &out).await,
        seats_left(&server, &ret).await,
    );
    let body = with_return(&out, &ret["flight"]["id"], &ret["date"]);
    let r = book(&server, "rt-http-1", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    let done = wait_terminal(server.addr, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    let state = |name: &str| {
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].clone())
    };
    assert_eq!(state("reserve_seat"), Some(json!("succeeded")), "{done}");
    assert_eq!(
        state("reserve_return_seat"),
        Some(json!("succeeded")),
        "{done}"
    );
    assert_eq!(
        done["return_leg"]["flight_id"], ret["flight"]["id"],
        "{done}"
    );
    assert_eq!(done["return_leg"]["date"], ret["date"], "{done}");
    assert_eq!(
        done["return_leg"]["flight"]["origin"], "LAX",
        "the return leg's flight for display: {done}"
    );
    // One charge: both legs as the search priced each.
    let both = out["price"]["total"]["minor"].as_i64().unwrap()
        + ret["price"]["total"]["minor"].as_i64().unwrap();
    assert_eq!(done["price"]["total"]["minor"], both, "{done}");
    assert_eq!(done["total"]["minor"], both, "{done}");
    assert_eq!(done["return_leg"]["price"], ret["price"], "{done}");
    assert_eq!(seats_left(&server, &out).await, out_before - 2);
    assert_eq!(seats_left(&server, &ret).await, ret_before - 2);

    // A one-way booking shows no return leg.
    let r = book(
        &server,
        "rt-http-ow",
        &booking_body(
            out["flight"]["id"].as_str().unwrap(),
            out["date"].as_str().unwrap(),
            json!({}),
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let one = wait_terminal(server.addr, r.body["booking_id"].as_str().unwrap()).await;
    assert_eq!(one["status"], "confirmed", "{one}");
    assert!(one["return_leg"].is_null(), "{one}");

    // Bad return legs: each refused with a 422 naming the field, no booking.
    let out_date =
        chrono::NaiveDate::parse_from_str(out["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let ret_date =
        chrono::NaiveDate::parse_from_str(ret["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let mut early = ret_date;
    while early >= out_date {
        early = early - chrono::Days::new(7);
    }
    let cases = [
        (
            with_return(&out, &out["flight"]["id"], &ret["date"]),
            "return_flight_id",
            "must fly LAX",
        ),
        (
            with_return(&out, &ret["flight"]["id"], &json!(early.to_string())),
            "return_date",
            "before the outbound lands",
        ),
        (
            with_return(&out, &ret["flight"]["id"], &Value::Null),
            "return_date",
            "is required",
        ),
        (
            with_return(&out, &json!("NO-SUCH-FLIGHT"), &ret["date"]),
            "return_flight_id",
            "no flight",
        ),
        (
            with_return(&out, &ret["flight"]["id"], &json!("soon")),
            "return_date",
            "",
        ),
        (
            with_return(&out, &json!(7), &ret["date"]),
            "return_flight_id",
            "",
        ),
    ];
    for (i, (body, field, says)) in cases.iter().enumerate() {
        let r = book(&server, &format!("rt-http-bad-{i}"), body).await;
        assert_eq!(r.status, 422, "case {i}: {}", r.text);
        let fields = refused_fields(&r);
        assert!(
            fields.iter().any(|(f, m)| f == field && m.contains(says)),
            "case {i}: expected {field} ({says}), got {fields:?}"
        );
    }
    assert_eq!(
        seats_left(&server, &ret).await,
        ret_before - 2,
        "no bad leg held a seat"
    );
    server.stop().await;
}
