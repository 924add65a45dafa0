//! The HTTP API over real loopback sockets: each test opens its own state in
//! a temporary directory, serves it on `127.0.0.1:0` and talks to it with a
//! hyper client (or a raw TCP socket where a misbehaving client is the
//! point). Covers search, booking (happy path, idempotency, compensation),
//! faults, loyalty, privacy, admin, field errors, and graceful shutdown with
//! resumption. The event streams: `http_streams.rs`; malformed requests,
//! body limits and slow clients: `http_protocol.rs`.

#[path = "http_api_support/mod.rs"]
mod support;
use support::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let r = s.get("/healthz").await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::OK, &json!("ok"))
    );
    let r = s.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book("m-1", &booking_body(&flight, &date, json!({})))
        .await;
    assert_eq!(s.wait_terminal(&id).await["status"], "confirmed");
    let bad = s.get("/api/nope").await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);

    // The counters follow the engine's event stream, which may trail the
    // status a client sees: wait for them, with a generous deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = s.get("/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        if r.text.contains("saga_completed_total 1\n") || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(r.text.contains("saga_started_total 1\n"), "{}", r.text);
    assert!(r.text.contains("saga_completed_total 1\n"), "{}", r.text);
    assert!(r.text.contains("saga_compensated_total 0\n"));
    assert!(r.text.contains("saga_stuck_total 0\n"));
    assert!(r
        .text
        .contains("saga_step_duration_seconds_count{step=\"confirm_booking\"} 1\n"));
    assert!(r
        .text
        .contains("saga_step_duration_seconds_bucket{step=\"reserve_seat\",le=\"+Inf\"} 1\n"));
    assert!(
        r.text.contains("http_requests_total{code=\"202\"} 1\n"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("http_requests_total{code=\"404\"} 1\n"),
        "{}",
        r.text
    );
    s.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_route_of_the_router() {
    let s = TestServer::start().await;
    let r = s.get("/api/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.0.3");
    for route in ROUTES {
        let op = &r.body["paths"][route.path][route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the OpenAPI document",
            route.method,
            route.path
        );
        assert!(op["responses"].is_object());
    }
    s.stop().await;
}

#[tokio::test]
async fn airports_autocomplete_and_flight_details() {
    let s = TestServer::start().await;
    let r = s.get("/api/airports?q=jfk").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["airports"][0]["code"], "JFK");
    let r = s.get("/api/airports?q=new%20york").await;
    assert!(r.body["airports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["code"] == "JFK"));
    let all = s.get("/api/airports").await;
    assert!(all.body["airports"].as_array().unwrap().len() > 10);
    let r = s.get("/api/airports?limit=x").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_names(&r), ["limit"]);

    let (flight, date) = s.find_flight(0).await;
    let r = s.get(&format!("/api/flights/{flight}?date={date}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["flight"]["id"], flight.as_str());
    assert_eq!(r.body["origin"]["code"], "JFK");
    assert_eq!(r.body["operates_on_date"], true);
    assert!(r.body["seats_left"]["economy"].as_u64().unwrap() > 0);
    let r = s.get("/api/flights/NOPE-123").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_error_body(&r);
    let r = s.get("/api/test-cards").await;
    assert!(r.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["number"] == "4000 0000 0000 0002"));
    s.stop().await;
}

#[tokio::test]
async fn search_filters_sorts_and_round_trips_with_seats_from_inventory() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let r = s
        .get(&format!(
            "/api/flights/search?from=jfk&to=lax&date={date}&sort=departure&passengers=2"
        ))
        .await;
    let results = r.body["results"].as_array().unwrap().clone();
    assert!(!results.is_empty());
    let departures: Vec<&str> = results
        .iter()
        .map(|x| x["flight"]["departure"].as_str().unwrap())
        .collect();
    let mut sorted = departures.clone();
    sorted.sort();
    assert_eq!(departures, sorted, "sorted by departure");
    for x in &results {
        assert_eq!(x["seats_left"], 144);
        assert_eq!(
            x["price"]["base"]["minor"],
            x["fare"]["minor"].as_i64().unwrap() * 2
        );
    }
    // A max price below the cheapest fare finds nothing.
    let cheapest = results
        .iter()
        .map(|x| x["fare"]["minor"].as_i64().unwrap())
        .min()
        .unwrap();
    let r = s
        .get(&format!(
            "/api/flights/search?from=JFK&to=LAX&date={date}&max_price={}",
            cheapest - 1
        ))
        .await;
    assert_eq!(r.body["results"], json!([]));
    // A departure window keeps only flights inside it.
    let r = s
        .get(&format!(
            "/api/flights/search?from=JFK&to=LAX&date={date}&depart_after=12:00&depart_before=23:59"
        ))
        .await;
    for x in r.body["results"].as_array().unwrap() {
        assert!(x["flight"]["departure"].as_str().unwrap() >= "12:00");
    }

    // Seats come from the inventory: a booking takes two.
    let id = s
        .book("seats-1", &booking_body(&flight, &date, json!({})))
        .await;
    assert_eq!(s.wait_terminal(&id).await["status"], "confirmed");
    let r = s
        .get(&format!("/api/flights/search?from=JFK&to=LAX&date={date}"))
        .await;
    let mine = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["flight"]["id"] == flight.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["seats_left"], 142);

    let ret = (chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap()
        + chrono::Days::new(7))
    .to_string();
    let r = s
        .get(&format!(
            "/api/flights/search?from=JFK&to=LAX&date={date}&return_date={ret}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.body["outbound"].as_array().unwrap().is_empty());
    let inbound = r.body["inbound"].as_array().unwrap();
    assert!(!inbound.is_empty());
    assert!(inbound.iter().all(|x| x["flight"]["origin"] == "LAX"));

    // Every bad parameter is reported at once.
    let r = s
        .get("/api/flights/search?from=JFK&date=yesterday&cabin=premium&passengers=x&depart_after=25:00")
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error_body(&r);
    assert_eq!(
        field_names(&r),
        ["to", "date", "cabin", "passengers", "depart_after"]
    );
    let r = s
        .get(&format!("/api/flights/search?from=JFK&to=XXX&date={date}"))
        .await;
    assert_eq!(
        (r.status, field_names(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["to".to_string()])
    );
    let r = s
        .get(&format!(
            "/api/flights/search?from=JFK&to=LAX&date={date}&return_date=2000-01-01"
        ))
        .await;
    assert_eq!(field_names(&r), ["return_date"]);
    let r = s
        .get("/api/flights/search?from=JFK&to=LAX&date=2000-01-03")
        .await;
    assert_eq!(field_names(&r), ["date"]);
    s.stop().await;
}

#[tokio::test]
async fn a_booking_confirms_and_is_found_by_reference_and_last_name() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let r = s
        .post_json(
            "/api/bookings",
            Some("happy-1"),
            &booking_body(&flight, &date, json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["status_url"], format!("/api/bookings/{id}"));
    assert_eq!(r.body["events_url"], format!("/api/sagas/{id}/events"));
    assert_eq!(
        r.headers["location"],
        format!("/api/bookings/{id}").as_str()
    );

    let b = s.wait_terminal(&id).await;
    assert_eq!(b["status"], "confirmed");
    assert_eq!(b["saga_status"], "completed");
    let reference = b["booking_ref"].as_str().unwrap().to_string();
    assert_eq!(reference.len(), 6);
    assert!(b["total"]["minor"].as_i64().unwrap() > 0);
    assert_eq!(b["total"], b["price"]["total"]);
    assert_eq!(b["failure_reason"], Value::Null);
    assert_eq!(b["card"]["last4"], "4242");
    assert!(!b.to_string().contains("4242 4242"), "no card number: {b}");
    let steps: Vec<(&str, &str)> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap(), x["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("reserve_seat", "succeeded"),
            ("reserve_return_seat", "succeeded"),
            ("await_payment", "succeeded"),
            ("redeem_miles", "succeeded"),
            ("authorize_payment", "succeeded"),
            ("await_confirmation", "succeeded"),
            ("award_miles", "succeeded"),
            ("confirm_booking", "succeeded"),
            ("send_itinerary", "succeeded")
        ]
    );

    let lookup = |last: &str| {
        format!(
            "/api/bookings/lookup?reference={}&last_name={last}",
            reference.to_lowercase()
        )
    };
    let r = s.get(&lookup("babbage")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["booking"]["reference"], reference.as_str());
    assert_eq!(r.body["booking_id"], id.as_str());
    assert_eq!(r.body["booking"]["email"], "a***@example.com");
    let wrong = s.get(&lookup("Hopper")).await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    let unknown = s
        .get("/api/bookings/lookup?reference=ZZZZZZ&last_name=Lovelace")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        wrong.body, unknown.body,
        "a wrong name and a wrong reference look the same"
    );
    let r = s.get("/api/bookings/lookup?reference=ABC").await;
    assert_eq!(
        (r.status, field_names(&r)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["last_name".to_string()]
        )
    );

    let r = s.get("/api/bookings/0000000000000000000000000000").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_error_body(&r);
    let r = s.get("/api/bookings/not%20an%20id").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_is_required_and_names_one_booking() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let body = booking_body(&flight, &date, json!({}));
    let r = s.post_json("/api/bookings", None, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    let r = s.post_json("/api/bookings", Some(" "), &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let first = s.post_json("/api/bookings", Some("same-key"), &body).await;
    let again = s.post_json("/api/bookings", Some("same-key"), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["booking_id"], again.body["booking_id"]);
    // Keys are scoped by the contact email (tests/idempotency.rs): a
    // different body from the same customer is a reuse.
    let mut other = body.clone();
    other["passengers"][0]["first_name"] = json!("Augusta");
    let r = s.post_json("/api/bookings", Some("same-key"), &other).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(field_names(&r), ["Idempotency-Key"]);
    let first_id = first.body["booking_id"].as_str().unwrap();
    assert!(!r.text.contains(first_id), "the 422 names the booking");

    let id = first.body["booking_id"].as_str().unwrap();
    s.wait_terminal(id).await;
    let again = s.post_json("/api/bookings", Some("same-key"), &body).await;
    assert_eq!(
        again.body["booking_id"], id,
        "still the same after it finished"
    );
    let sagas = s.admin_get("/api/admin/sagas").await;
    assert_eq!(sagas.body["total"], 1, "one saga: {}", sagas.text);
    s.stop().await;
}

#[tokio::test]
async fn a_rejected_step_compensates_and_says_why() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book(
            "reject-1",
            &booking_body(&flight, &date, json!({"award_miles": {"mode": "reject"}})),
        )
        .await;
    let b = s.wait_terminal(&id).await;
    assert_eq!(b["status"], "compensated", "{b}");
    assert!(b["failure_reason"]
        .as_str()
        .unwrap()
        .contains("injected rejection at award_miles"));
    assert_eq!(b["booking_ref"], Value::Null);
    let states: Vec<&str> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "compensated", // reserve_seat
            "compensated", // reserve_return_seat
            "succeeded",   // await_payment (read-only: nothing to undo)
            "compensated", // redeem_miles
            "compensated", // authorize_payment
            "succeeded",   // await_confirmation
            "rejected",    // award_miles
            "pending",
            "pending"
        ]
    );
    // The seats came back.
    let r = s.get(&format!("/api/flights/{flight}?date={date}")).await;
    assert_eq!(r.body["seats_left"]["economy"], 144);

    // A declining test card compensates at the payment step.
    let mut declined = booking_body(&flight, &date, json!({}));
    declined["card"]["number"] = json!("4000 0000 0000 0002");
    let id = s.book("decline-1", &declined).await;
    let b = s.wait_terminal(&id).await;
    assert_eq!(b["status"], "compensated");
    let authorize = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "authorize_payment")
        .unwrap();
    assert_eq!(authorize["state"], "rejected");
    s.stop().await;
}

#[tokio::test]
async fn invalid_bookings_are_refused_field_by_field() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let mut body = booking_body(&flight, &date, json!({}));
    body["date"] = json!("2001-01-01");
    body["email"] = json!("not-an-email");
    body["card"]["number"] = json!("4242 4242 4242 4241");
    body["passengers"][1]["last_name"] = json!("");
    let r = s.post_json("/api/bookings", Some("invalid-1"), &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_error_body(&r);
    let fields = field_names(&r);
    for f in ["date", "email", "card.number", "passengers[1].last_name"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    // Wrong types are named too.
    let r = s
        .post_json(
            "/api/bookings",
            Some("invalid-2"),
            &json!({"flight_id": flight, "date": 5, "cabin": "premium", "passengers": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_names(&r),
        ["date", "cabin", "passengers", "email", "card"]
    );
    // Nothing was started.
    let sagas = s.admin_get("/api/admin/sagas").await;
    assert_eq!(sagas.body["total"], 0);
    s.stop().await;
}

#[tokio::test]
async fn global_faults_need_the_admin_token_and_take_effect() {
    let s = TestServer::start().await;
    let r = s.get("/api/faults").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["reserve_seat"], json!({"mode": "none"}));
    let switches = json!({"authorize_payment": {"mode": "reject"}});
    let r = s
        .send(
            Method::PUT,
            "/api/faults",
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&switches).unwrap()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.get("/api/faults").await.body["authorize_payment"]["mode"],
        "none"
    );

    let r = s
        .admin_send(
            Method::PUT,
            "/api/faults",
            Some(json!({"authorize_payment": {"mode": "explode"}, "nope": {"mode": "none"}, "award_miles": {"mode": "delay", "ms": 999999}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let mut fields = field_names(&r);
    fields.sort();
    assert_eq!(fields, ["authorize_payment", "award_miles", "nope"]);

    let r = s
        .admin_send(Method::PUT, "/api/faults", Some(switches))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["authorize_payment"]["mode"], "reject");
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book("global-1", &booking_body(&flight, &date, json!({})))
        .await;
    assert_eq!(s.wait_terminal(&id).await["status"], "compensated");

    let r = s
        .admin_send(Method::PUT, "/api/faults", Some(json!({})))
        .await;
    assert_eq!(r.body["authorize_payment"]["mode"], "none");
    let id = s
        .book("global-2", &booking_body(&flight, &date, json!({})))
        .await;
    assert_eq!(s.wait_terminal(&id).await["status"], "confirmed");
    s.stop().await;
}

#[tokio::test]
async fn loyalty_accounts_are_private_to_number_plus_last_name() {
    let s = TestServer::start().await;
    let enroll =
        json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"});
    let r = s.post_json("/api/loyalty", None, &enroll).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "key required");
    let r = s.post_json("/api/loyalty", Some("enroll-1"), &enroll).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let account = r.body["account"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["account"]["email"], "g***@example.com");
    let again = s.post_json("/api/loyalty", Some("enroll-1"), &enroll).await;
    assert_eq!(again.body["account"]["id"], account.as_str(), "idempotent");

    let r = s.post_json("/api/loyalty", Some("enroll-2"), &enroll).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        !r.text.contains(&account),
        "the conflict does not reveal the account"
    );
    let r = s
        .post_json(
            "/api/loyalty",
            Some("enroll-3"),
            &json!({"first_name": "G"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_names(&r), ["last_name"]);

    // Book with the account: miles are awarded and shown in the history.
    // The member travels: an account can only be used by one of the
    // passengers (tests/limits.rs checks someone else's number is refused).
    let (flight, date) = s.find_flight(0).await;
    let mut body = booking_body(&flight, &date, json!({}));
    body["passengers"][1] = json!({"first_name": "Grace", "last_name": "Hopper"});
    body["loyalty_id"] = json!(account);
    let id = s.book("loyal-1", &body).await;
    let b = s.wait_terminal(&id).await;
    assert_eq!(b["status"], "confirmed");
    let miles = b["miles_awarded"].as_u64().unwrap();
    assert!(miles > 0);

    let r = s
        .get(&format!("/api/loyalty/{account}?last_name=hopper"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["account"]["balance"], miles);
    assert_eq!(r.body["account"]["tier"], "regular");
    assert!(
        r.body["account"]["next_tier"]["miles_needed"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(r.body["history"].as_array().unwrap().len(), 1);
    let wrong = s
        .get(&format!("/api/loyalty/{account}?last_name=Lovelace"))
        .await;
    let unknown = s.get("/api/loyalty/99999999?last_name=Hopper").await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong.body, unknown.body);

    // An unknown loyalty number on a booking is a validation error.
    body["loyalty_id"] = json!("00000000");
    let r = s.post_json("/api/bookings", Some("loyal-2"), &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_names(&r), ["loyalty_id"]);
    s.stop().await;
}

#[tokio::test]
async fn admin_lists_sagas_reads_payments_and_cancels() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let done = s
        .book("admin-1", &booking_body(&flight, &date, json!({})))
        .await;
    s.wait_terminal(&done).await;
    let failed = s
        .book(
            "admin-2",
            &booking_body(&flight, &date, json!({"reserve_seat": {"mode": "reject"}})),
        )
        .await;
    s.wait_terminal(&failed).await;
    let slow = s
        .book(
            "admin-3",
            &booking_body(
                &flight,
                &date,
                json!({"award_miles": {"mode": "delay", "ms": 1500}}),
            ),
        )
        .await;

    let r = s.admin_get("/api/admin/sagas").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["total"], 3);
    assert_eq!(r.body["sagas"][0]["id"], slow.as_str(), "newest first");
    let r = s.admin_get("/api/admin/sagas?status=compensated").await;
    let ids: Vec<&str> = r.body["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str()]);
    let r = s
        .admin_get("/api/admin/sagas?status=finished&limit=0")
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_names(&r), ["status", "limit"]);

    // Cancel the running one: it compensates.
    let r = s
        .admin_send(
            Method::POST,
            &format!("/api/admin/sagas/{slow}/cancel"),
            Some(json!({"reason": "customer called"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let b = s.wait_terminal(&slow).await;
    assert_eq!(b["status"], "compensated");
    assert!(b["failure_reason"]
        .as_str()
        .unwrap()
        .contains("customer called"));

    // Finished sagas cannot be cancelled or retried; unknown ones are 404.
    let r = s
        .admin_send(
            Method::POST,
            &format!("/api/admin/sagas/{done}/cancel"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let retry = json!({ "operator": "ada", "reason": "test", "operation_id": "r1" });
    let r = s
        .admin_send(
            Method::POST,
            &format!("/api/admin/sagas/{done}/retry"),
            Some(retry.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("stuck"), "{}", r.text);
    // A retry is an operation: who and why are required.
    let r = s
        .admin_send(
            Method::POST,
            &format!("/api/admin/sagas/{done}/retry"),
            Some(json!({ "reason": "test", "operation_id": "r2" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("operator"), "{}", r.text);
    let r = s
        .admin_send(
            Method::POST,
            "/api/admin/sagas/0000000000000000000000000000/retry",
            Some(retry),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .send(
            Method::POST,
            &format!("/api/admin/sagas/{done}/retry"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Payments by customer, for the admin only.
    let r = s.get("/api/admin/payments?email=ada@example.com").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .admin_get("/api/admin/payments?email=ADA@example.com")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let statuses: Vec<&str> = r.body["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"captured"), "{statuses:?}");
    assert!(!r.text.contains("4242 4242"));
    let r = s
        .admin_get("/api/admin/payments?email=nobody@example.com")
        .await;
    assert_eq!(r.body["payments"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn the_web_page_is_served_with_its_script_and_style() {
    let s = TestServer::start().await;
    let r = s.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    for id in [
        "data-testid=\"search-form\"",
        "id=\"booking-form\"",
        "id=\"booking-submit\"",
        "id=\"booking-ref\"",
        "id=\"saga-failure\"",
        "id=\"saga-steps\"",
        "id=\"admin-token\"",
        "id=\"lookup-form\"",
        "id=\"loyalty-form\"",
        "src=\"/app.js\"",
    ] {
        assert!(r.text.contains(id), "page lacks {id}");
    }
    assert!(
        !r.text.contains("http://") && !r.text.contains("https://"),
        "no external resources"
    );
    let js = s.get("/app.js").await;
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    assert!(js.text.contains("registerView"));
    // Every view script the page loads is served as JavaScript, and the
    // live saga view (booking.js) follows a saga with EventSource.
    let mut all = js.text.clone();
    for (name, _) in demo_server::ui::SCRIPTS {
        assert!(
            r.text.contains(&format!("src=\"/js/{name}\"")),
            "page lacks {name}"
        );
        let part = s.get(&format!("/js/{name}")).await;
        assert_eq!(part.status, StatusCode::OK, "/js/{name}");
        assert!(part.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript"));
        all.push_str(&part.text);
    }
    assert!(all.contains("EventSource"));
    assert_eq!(s.get("/js/nope.js").await.status, StatusCode::NOT_FOUND);
    let css = s.get("/style.css").await;
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_is_graceful_and_unfinished_sagas_resume_at_the_next_start() {
    // A grace period shorter than the step: the saga is left unfinished.
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(config.clone()).await;
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book(
            "resume-1",
            &booking_body(
                &flight,
                &date,
                json!({"award_miles": {"mode": "delay", "ms": 1500}}),
            ),
        )
        .await;
    // Let it reach the delayed step, with a stream open.
    let stream_path = format!("/api/sagas/{id}/events");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = s.addr;
    let reader = {
        let url = s.url(&stream_path);
        let client = s.client.clone();
        tokio::spawn(async move {
            let req = Request::builder()
                .uri(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            resp.into_body().collect().await.map(|b| b.to_bytes().len())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let dir = s.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The open stream was ended by the shutdown.
    let streamed = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("stream ends at shutdown")
        .unwrap();
    assert!(streamed.is_ok_and(|n| n > 0));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );

    // Next start on the same directory: the saga resumes and completes.
    let s = TestServer::start_in(dir, config).await;
    let b = s.wait_terminal(&id).await;
    assert_eq!(b["status"], "confirmed", "{b}");
    let (_, events, _) = s.events(&stream_path, None).await;
    assert!(events.iter().any(|e| e["event"] == "resumed"), "{events:?}");
    s.stop().await;
}
