//! The OpenAPI document against the running server (issue 13), over real
//! loopback: for every documented query constraint (required, minimum,
//! maximum, enum, maxLength) a violating request is refused with `422`
//! naming the parameter; every required field of a documented request
//! body, left out, is refused the same way; an unknown id answers the
//! documented `404`, a wrong method `405`, an admin route without the token
//! `401`. Every answer's status is one the document lists for the
//! operation, every error body has a `code`, every `422` has `fields`.
//! (`408`, `413`, `415`, `429` and `503` are driven in `hostile.rs`,
//! `limits.rs` and `public_errors.rs`.)

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use serde_json::{json, Value};
use support::{booking_body, find_flight, local, request_from, Raw, Server, TOKEN};

struct Ctx {
    server: Server,
    doc: Value,
    flight: String,
    date: String,
    booking: String,
    checked: usize,
}

impl Ctx {
    fn op(&self, path: &str, method: &str) -> &Value {
        &self.doc["paths"][path][method]
    }

    fn concrete(&self, path: &str) -> String {
        let id = if path.starts_with("/api/flights/") {
            self.flight.as_str()
        } else if path.starts_with("/api/loyalty/") {
            "LY0000001"
        } else {
            self.booking.as_str()
        };
        path.replace("{id}", id)
    }

    fn baseline(&self, name: &str) -> Option<String> {
        Some(match name {
            "from" => "JFK".into(),
            "to" => "LAX".into(),
            "date" => self.date.clone(),
            "reference" => "ABCDEF".into(),
            "last_name" => "Lovelace".into(),
            _ => return None,
        })
    }

    /// Sends and checks the answer against the operation's documentation.
    async fn send(&mut self, path: &str, method: &str, target: &str, body: Option<&Value>) -> Raw {
        let op = self.op(path, method).clone();
        let bearer = format!("Bearer {TOKEN}");
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("idempotency-key", "conf-1"),
        ];
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let r = request_from(
            local(),
            self.server.addr,
            &method.to_uppercase(),
            target,
            &headers,
            &bytes,
        )
        .await;
        self.check(&op, method, target, &r);
        r
    }

    fn check(&mut self, op: &Value, method: &str, target: &str, r: &Raw) {
        self.checked += 1;
        assert!(
            op["responses"][r.status.to_string()].is_object(),
            "{method} {target}: {} is not documented: {}",
            r.status,
            r.text
        );
        if r.status >= 400 {
            assert!(
                r.body["code"].is_string(),
                "{method} {target}: no code: {}",
                r.text
            );
        }
        if r.status == 422 {
            assert!(
                r.body["fields"].as_array().is_some_and(|f| !f.is_empty()),
                "{method} {target}: 422 without fields: {}",
                r.text
            );
        }
    }
}

fn query_string(params: &[(String, String)]) -> String {
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn names_field(r: &Raw, name: &str) -> bool {
    r.body["fields"]
        .as_array()
        .is_some_and(|f| f.iter().any(|e| e["field"] == name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_enforces_what_its_document_says() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    let (flight, date) = find_flight(server.addr).await;
    let booking = serde_json::to_vec(&booking_body(&flight, &date, json!({}))).unwrap();
    let r = request_from(
        local(),
        server.addr,
        "POST",
        "/api/bookings",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "conf-0"),
        ],
        &booking,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let booking = r.body["booking_id"].as_str().unwrap().to_string();
    let doc = request_from(local(), server.addr, "GET", "/api/openapi.json", &[], b"")
        .await
        .body;
    let mut c = Ctx {
        server,
        doc,
        flight,
        date,
        booking,
        checked: 0,
    };
    let paths: Vec<(String, Vec<String>)> = c.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, item)| {
            (
                p.clone(),
                item.as_object().unwrap().keys().cloned().collect(),
            )
        })
        .collect();
    let mut violations = 0;
    for (path, methods) in &paths {
        for method in methods {
            let op = c.op(path, method).clone();
            let target = c.concrete(path);
            // Query constraints, on GETs that are not event streams.
            let params: Vec<Value> = op["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p["in"] == "query")
                .collect();
            let base: Vec<(String, String)> = params
                .iter()
                .filter(|p| p["required"] == true)
                .filter_map(|p| {
                    let n = p["name"].as_str().unwrap();
                    c.baseline(n).map(|v| (n.to_string(), v))
                })
                .collect();
            let mut bad: Vec<(String, String)> = Vec::new();
            for p in &params {
                let name = p["name"].as_str().unwrap().to_string();
                let s = &p["schema"];
                if p["required"] == true {
                    bad.push((name.clone(), String::new())); // left out
                }
                if let Some(min) = s["minimum"].as_i64() {
                    bad.push((name.clone(), (min - 1).to_string()));
                }
                if let Some(max) = s["maximum"].as_i64() {
                    bad.push((name.clone(), (max + 1).to_string()));
                }
                if s["enum"].is_array() {
                    bad.push((name.clone(), "zzz".into()));
                    bad.push((name.clone(), "%20".into()));
                }
                if let Some(max) = s["maxLength"].as_u64() {
                    bad.push((name.clone(), "a".repeat(max as usize + 1)));
                }
            }
            for (name, value) in bad {
                let mut q: Vec<(String, String)> =
                    base.iter().filter(|(k, _)| *k != name).cloned().collect();
                if !value.is_empty() {
                    q.push((name.clone(), value.clone()));
                }
                let t = format!("{target}{}", query_string(&q));
                let r = c.send(path, method, &t, None).await;
                assert_eq!(
                    r.status, 422,
                    "{method} {t}: {name}={value:?} accepted: {}",
                    r.text
                );
                assert!(
                    names_field(&r, &name),
                    "{method} {t}: {name} not named: {}",
                    r.text
                );
                violations += 1;
            }
            // Required body fields, left out one at a time.
            let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
            if let Some(name) = body_schema["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
            {
                let schema = c.doc["components"]["schemas"][name].clone();
                let valid = match name {
                    "BookingRequest" => booking_body(&c.flight, &c.date, json!({})),
                    "CreateAccount" => {
                        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"})
                    }
                    "CancelRequest" => json!({"reference": "ABC123", "last_name": "Lovelace"}),
                    _ => json!({}),
                };
                for field in schema["required"].as_array().cloned().unwrap_or_default() {
                    let field = field.as_str().unwrap();
                    let mut b = valid.clone();
                    b.as_object_mut().unwrap().remove(field);
                    let r = c.send(path, method, &target, Some(&b)).await;
                    assert_eq!(r.status, 422, "{method} {path} without {field}: {}", r.text);
                    assert!(
                        names_field(&r, field),
                        "{method} {path}: {field} not named: {}",
                        r.text
                    );
                    violations += 1;
                }
                for (prop, s) in schema["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                {
                    for (key, n) in [("minItems", -1i64), ("maxItems", 1)] {
                        if let Some(limit) = s[key].as_i64() {
                            let len = (limit + n).max(0) as usize;
                            let item = valid[&prop][0].clone();
                            let mut b = valid.clone();
                            b[&prop] = Value::Array(vec![item; len]);
                            let r = c.send(path, method, &target, Some(&b)).await;
                            assert_eq!(r.status, 422, "{method} {path} {prop} x{len}: {}", r.text);
                            assert!(names_field(&r, &prop), "{prop} not named: {}", r.text);
                            violations += 1;
                        }
                    }
                }
            }
            // An unknown id: the documented 404.
            if path.contains("{id}") && op["responses"]["404"].is_object() {
                let t = format!(
                    "{}{}",
                    path.replace("{id}", "00000000000000000000nope"),
                    query_string(&base)
                );
                let body = op["requestBody"].is_object().then(|| json!({}));
                let r = c.send(path, method, &t, body.as_ref()).await;
                assert_eq!(r.status, 404, "{method} {t}: {}", r.text);
            }
            // Admin without the token: 401.
            if op["security"].is_array() {
                let r = request_from(
                    local(),
                    c.server.addr,
                    &method.to_uppercase(),
                    &target,
                    &[],
                    b"",
                )
                .await;
                c.check(&op, method, &target, &r);
                assert_eq!(r.status, 401, "{method} {target}: {}", r.text);
            }
        }
        // A method the path does not have: 405.
        if let Some(m) = ["delete", "patch"]
            .iter()
            .find(|m| !methods.contains(&m.to_string()))
        {
            let op = c.op(path, &methods[0]).clone();
            let target = c.concrete(path);
            let r =
                request_from(local(), c.server.addr, &m.to_uppercase(), &target, &[], b"").await;
            c.check(&op, m, &target, &r);
            assert_eq!(r.status, 405, "{m} {target}: {}", r.text);
        }
    }
    println!(
        "openapi conformance: {} operations' documents walked, {violations} documented constraints violated and refused, {} answers checked against the document",
        paths.iter().map(|(_, m)| m.len()).sum::<usize>(),
        c.checked
    );
    c.server.stop().await;
}
