//! Accounts, my trips, e-tickets and promo codes over loopback HTTP:
//! register (and a duplicate email), log in (and a wrong password), login
//! throttling per address and per account, CSRF refusals, a logged-in
//! booking in "my trips" newest first with a cursor round trip and a
//! failed booking with its reason, loyalty linking, cancelling from my
//! trips, the e-ticket, and a promo code whose quote equals the charge.

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use support::{booking_body, find_flight, local, request_from, wait_terminal, Raw, Server, TOKEN};

/// A logged-in client: its cookie and CSRF token.
#[derive(Clone)]
struct Login {
    cookie: String,
    csrf: String,
}

async fn call(
    addr: SocketAddr,
    from: IpAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Raw {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request_from(from, addr, method, path, &h, &bytes).await
}

/// A call with the session cookie and (when `csrf`) its token.
async fn as_user(
    addr: SocketAddr,
    l: &Login,
    csrf: bool,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> Raw {
    let mut h: Vec<(&str, &str)> = vec![("cookie", l.cookie.as_str())];
    if csrf {
        h.push(("x-csrf-token", l.csrf.as_str()));
    }
    h.extend_from_slice(extra);
    call(addr, local(), method, path, &h, body).await
}

fn login_of(r: &Raw) -> Login {
    let set = r.header("set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(set.contains(attr), "cookie without {attr}: {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: no Secure flag by default"
    );
    Login {
        cookie: set.split(';').next().unwrap().to_string(),
        csrf: r.body["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn register(addr: SocketAddr, name: &str, email: &str) -> Login {
    let r = call(
        addr,
        local(),
        "POST",
        "/api/accounts",
        &[],
        &json!({"name": name, "email": email, "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        !r.text.contains("correct horse") && !r.text.contains("argon2"),
        "{}",
        r.text
    );
    login_of(&r)
}

async fn book(addr: SocketAddr, l: Option<&Login>, key: &str, body: &Value) -> Raw {
    match l {
        Some(l) => {
            as_user(
                addr,
                l,
                true,
                "POST",
                "/api/bookings",
                &[("idempotency-key", key)],
                body,
            )
            .await
        }
        None => {
            call(
                addr,
                local(),
                "POST",
                "/api/bookings",
                &[("idempotency-key", key)],
                body,
            )
            .await
        }
    }
}

async fn wait_cancellation(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(
            addr,
            local(),
            "GET",
            &format!("/api/cancellations/{id}"),
            &[],
            &Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["status"] != "in_progress" {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "cancellation never ended: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_throttle_and_csrf() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = server.addr;
    let ada = register(addr, "Ada Lovelace", "Ada@Example.com").await;
    // Duplicate email (any case): 409.
    let r = call(
        addr,
        local(),
        "POST",
        "/api/accounts",
        &[],
        &json!({"name": "Other", "email": "ada@example.COM", "password": "another password"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("conflict")),
        "{}",
        r.text
    );
    // Bad fields, each named.
    let r = call(
        addr,
        local(),
        "POST",
        "/api/accounts",
        &[],
        &json!({"email": "nope", "password": "short"}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let fields: Vec<&str> = r.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email", "password"]);
    assert!(!r.text.contains("short"), "the password is never quoted");
    // The session works.
    let r = as_user(addr, &ada, false, "GET", "/api/account", &[], &Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["account"]["email"], "ada@example.com");
    assert_eq!(r.body["csrf_token"], ada.csrf.as_str());
    assert_eq!(
        call(addr, local(), "GET", "/api/account", &[], &Value::Null)
            .await
            .status,
        401
    );
    // Log in; a wrong password and an unknown email: the same 401.
    let r = call(
        addr,
        local(),
        "POST",
        "/api/session",
        &[],
        &json!({"email": "ada@example.com", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let again = login_of(&r);
    assert_ne!(again.cookie, ada.cookie, "a new session per login");
    let wrong = call(
        addr,
        local(),
        "POST",
        "/api/session",
        &[],
        &json!({"email": "ada@example.com", "password": "wrong horse battery"}),
    )
    .await;
    let unknown = call(
        addr,
        local(),
        "POST",
        "/api/session",
        &[],
        &json!({"email": "nobody@example.com", "password": "wrong horse battery"}),
    )
    .await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body["error"], unknown.body["error"]);

    // CSRF: a state-changing request with the cookie and without the token
    // (or with another session's) is refused before anything happens.
    let r = as_user(
        addr,
        &ada,
        false,
        "DELETE",
        "/api/session",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("forbidden")),
        "{}",
        r.text
    );
    let forged = Login {
        cookie: ada.cookie.clone(),
        csrf: again.csrf.clone(),
    };
    let (flight, date) = find_flight(addr).await;
    let r = book(
        addr,
        Some(&forged),
        "csrf-1",
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let trips = as_user(
        addr,
        &ada,
        false,
        "GET",
        "/api/account/trips",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(
        trips.body["trips"].as_array().unwrap().len(),
        0,
        "no booking was started"
    );
    // Logging out ends the session.
    let r = as_user(
        addr,
        &ada,
        true,
        "DELETE",
        "/api/session",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        as_user(addr, &ada, false, "GET", "/api/account", &[], &Value::Null)
            .await
            .status,
        401
    );

    // Per account: 5 failures (from several addresses) lock it, even for
    // the right password, with Retry-After.
    register(addr, "Grace Hopper", "grace@example.com").await;
    for i in 0..5u8 {
        let from: IpAddr = format!("127.0.1.{}", i + 1).parse().unwrap();
        let r = call(
            addr,
            from,
            "POST",
            "/api/session",
            &[],
            &json!({"email": "grace@example.com", "password": "not her password"}),
        )
        .await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text);
    }
    let r = call(
        addr,
        "127.0.1.9".parse().unwrap(),
        "POST",
        "/api/session",
        &[],
        &json!({"email": "grace@example.com", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    // Per address: 10 attempts a minute, whatever the accounts.
    let from: IpAddr = "127.0.2.1".parse().unwrap();
    let mut codes = Vec::new();
    for i in 0..11 {
        let r = call(
            addr,
            from,
            "POST",
            "/api/session",
            &[],
            &json!({"email": format!("u{i}@example.com"), "password": "whatever it is"}),
        )
        .await;
        codes.push(r.status);
    }
    assert_eq!(codes[..10], [401; 10]);
    assert_eq!(codes[10], 429, "{codes:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_trips_tickets_loyalty_and_cancellation() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = server.addr;
    let ada = register(addr, "Ada Lovelace", "ada@example.com").await;
    let bob = register(addr, "Bob", "bob@example.com").await;
    let (flight, date) = find_flight(addr).await;
    // Anonymous booking keeps working, and is nobody's trip.
    let r = book(
        addr,
        None,
        "anon-1",
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let anon = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(wait_terminal(addr, &anon).await["status"], "confirmed");
    // Three logged-in bookings: confirmed, failed, confirmed.
    let mut ids = Vec::new();
    for (i, faults) in [
        json!({}),
        json!({"authorize_payment": {"mode": "reject"}}),
        json!({}),
    ]
    .into_iter()
    .enumerate()
    {
        let r = book(
            addr,
            Some(&ada),
            &format!("ada-{i}"),
            &booking_body(&flight, &date, faults),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.body["booking_id"].as_str().unwrap().to_string();
        wait_terminal(addr, &id).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A replay of the same key is the same booking, listed once.
    let r = book(
        addr,
        Some(&ada),
        "ada-0",
        &booking_body(&flight, &date, json!({})),
    )
    .await;
    assert_eq!(r.body["booking_id"], ids[0].as_str());
    // Newest first, two per page, the cursor round trip.
    let mut seen = Vec::new();
    let mut statuses = Vec::new();
    let mut path = "/api/account/trips?limit=2".to_string();
    let mut pages = 0;
    loop {
        let r = as_user(addr, &ada, false, "GET", &path, &[], &Value::Null).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        for t in r.body["trips"].as_array().unwrap() {
            seen.push(t["booking_id"].as_str().unwrap().to_string());
            statuses.push(t["status"].as_str().unwrap().to_string());
            if t["status"] == "failed" {
                assert!(
                    t["failure_reason"]
                        .as_str()
                        .unwrap()
                        .contains("authorize_payment"),
                    "{t}"
                );
                assert!(t["ticket_url"].is_null());
            }
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/account/trips?limit=2&cursor={c}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        seen, newest_first,
        "newest first, each once, none of another's"
    );
    assert_eq!(statuses, ["confirmed", "failed", "confirmed"]);
    assert!(pages >= 2);
    let r = as_user(
        addr,
        &ada,
        false,
        "GET",
        "/api/account/trips?cursor=zz",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = as_user(
        addr,
        &bob,
        false,
        "GET",
        "/api/account/trips",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(r.body["trips"].as_array().unwrap().len(), 0, "bob has none");

    // Link a loyalty account: the wrong last name is refused, the right one links.
    let r = call(
        addr,
        local(),
        "POST",
        "/api/loyalty",
        &[("idempotency-key", "enroll-ada")],
        &json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let member = r.body["account"]["id"].as_str().unwrap().to_string();
    let r = as_user(
        addr,
        &ada,
        true,
        "POST",
        "/api/account/loyalty",
        &[],
        &json!({"loyalty_id": member, "last_name": "Babbage"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = as_user(
        addr,
        &ada,
        true,
        "POST",
        "/api/account/loyalty",
        &[],
        &json!({"loyalty_id": member, "last_name": "lovelace"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = book(
        addr,
        Some(&ada),
        "ada-miles",
        &json!({"loyalty_id": member})
            .as_object()
            .unwrap()
            .iter()
            .fold(booking_body(&flight, &date, json!({})), |mut b, (k, v)| {
                b[k] = v.clone();
                b
            }),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let miles_id = r.body["booking_id"].as_str().unwrap().to_string();
    assert_eq!(wait_terminal(addr, &miles_id).await["status"], "confirmed");
    let r = as_user(
        addr,
        &ada,
        false,
        "GET",
        "/api/account/trips?limit=1",
        &[],
        &Value::Null,
    )
    .await;
    assert!(
        r.body["loyalty"]["balance"].as_u64().unwrap() > 0,
        "miles show on the trips page: {}",
        r.text
    );
    assert_eq!(r.body["trips"][0]["booking_id"], miles_id.as_str());
    assert!(r.body["trips"][0]["miles_awarded"].as_u64().unwrap() > 0);

    // The e-ticket: by last name, by the owner's session; not for others.
    let first = wait_terminal(addr, &ids[0]).await;
    let reference = first["booking_ref"].as_str().unwrap().to_string();
    let ticket = format!("/api/tickets/{reference}");
    let r = call(
        addr,
        local(),
        "GET",
        &format!("{ticket}?last_name=babbage"),
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    for needle in [
        reference.as_str(),
        "Ada",
        "LOVELACE",
        "Charles",
        "BABBAGE",
        "economy",
        "@media print",
        "<svg",
    ] {
        assert!(
            r.text.contains(needle),
            "ticket without {needle}: {}",
            r.text
        );
    }
    assert_eq!(
        as_user(addr, &ada, false, "GET", &ticket, &[], &Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        as_user(addr, &bob, false, "GET", &ticket, &[], &Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        call(addr, local(), "GET", &ticket, &[], &Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        call(
            addr,
            local(),
            "GET",
            &format!("{ticket}?last_name=Hopper"),
            &[],
            &Value::Null
        )
        .await
        .status,
        404
    );

    // Cancel from my trips: not bob's to cancel, not without the CSRF token.
    let body = json!({"booking_id": ids[0]});
    assert_eq!(
        as_user(
            addr,
            &bob,
            true,
            "POST",
            "/api/account/cancellations",
            &[],
            &body
        )
        .await
        .status,
        404
    );
    assert_eq!(
        as_user(
            addr,
            &ada,
            false,
            "POST",
            "/api/account/cancellations",
            &[],
            &body
        )
        .await
        .status,
        403
    );
    let failed = json!({"booking_id": ids[1]});
    let r = as_user(
        addr,
        &ada,
        true,
        "POST",
        "/api/account/cancellations",
        &[],
        &failed,
    )
    .await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (409, Some("not_confirmed")),
        "{}",
        r.text
    );
    let r = as_user(
        addr,
        &ada,
        true,
        "POST",
        "/api/account/cancellations",
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let c = wait_cancellation(addr, r.body["cancellation_id"].as_str().unwrap()).await;
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(
        c["refund"]["minor"], first["total"]["minor"],
        "full refund within 24 h"
    );
    let r = as_user(
        addr,
        &ada,
        false,
        "GET",
        "/api/account/trips",
        &[],
        &Value::Null,
    )
    .await;
    let t = r.body["trips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["booking_id"] == ids[0].as_str())
        .unwrap()
        .clone();
    assert_eq!(t["status"], "cancelled", "{t}");
    // A cancelled booking has no valid ticket.
    let r = call(
        addr,
        local(),
        "GET",
        &format!("{ticket}?last_name=Lovelace"),
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promo_code_quoted_is_what_is_charged_and_a_failure_gives_it_back() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let addr = server.addr;
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let now = chrono::Utc::now();
    let code = json!({"rule": {"kind": "percent", "percent": 20}, "valid_from": now - chrono::Duration::hours(1),
        "valid_until": now + chrono::Duration::days(1), "max_uses": 1});
    assert_eq!(
        call(
            addr,
            local(),
            "PUT",
            "/api/admin/promo-codes/spring20",
            &[],
            &code
        )
        .await
        .status,
        401
    );
    let r = call(
        addr,
        local(),
        "PUT",
        "/api/admin/promo-codes/spring20",
        &auth,
        &code,
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (200, Some("SPRING20")),
        "{}",
        r.text
    );
    let (flight, date) = find_flight(addr).await;
    let q = call(addr, local(), "POST", "/api/quote", &[], &json!({"flight_id": flight, "date": date, "cabin": "economy", "passengers": 2, "promo_code": "spring20"})).await;
    assert_eq!(q.status, 200, "{}", q.text);
    let base = q.body["price"]["base"]["minor"].as_i64().unwrap();
    assert_eq!(
        q.body["promo"]["discount"]["minor"].as_i64().unwrap(),
        base / 5
    );
    let charge = q.body["charge"]["minor"].as_i64().unwrap();
    assert_eq!(
        charge,
        q.body["price"]["total"]["minor"].as_i64().unwrap() - base / 5
    );
    // A booking that fails gives its use back.
    let mut body = booking_body(
        &flight,
        &date,
        json!({"authorize_payment": {"mode": "reject"}}),
    );
    body["promo_code"] = json!("SPRING20");
    let r = book(addr, None, "promo-fail", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        wait_terminal(addr, r.body["booking_id"].as_str().unwrap()).await["status"],
        "compensated"
    );
    let r = call(
        addr,
        local(),
        "GET",
        "/api/admin/promo-codes",
        &auth,
        &Value::Null,
    )
    .await;
    assert_eq!(r.body["codes"][0]["uses"], 0, "{}", r.text);
    // The next one is charged exactly the quote.
    let mut body = booking_body(&flight, &date, json!({}));
    body["promo_code"] = json!("spring20");
    body["email"] = json!("promo@example.com");
    let r = book(addr, None, "promo-ok", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        wait_terminal(addr, r.body["booking_id"].as_str().unwrap()).await["status"],
        "confirmed"
    );
    let p = call(
        addr,
        local(),
        "GET",
        "/api/admin/payments?email=promo@example.com",
        &auth,
        &Value::Null,
    )
    .await;
    assert_eq!(
        p.body["payments"][0]["amount"]["minor"].as_i64(),
        Some(charge),
        "{}",
        p.text
    );
    assert_eq!(p.body["payments"][0]["status"], "captured");
    // Used up: refused before booking, naming the field.
    body["email"] = json!("late@example.com");
    let r = book(addr, None, "promo-late", &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["fields"][0]["field"], "promo_code");
    server.stop().await;
}
