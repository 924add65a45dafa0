//! The OpenAPI 3 description of every route, served at
//! `GET /api/openapi.json`. Written by hand next to the route table
//! ([`crate::routes::ROUTES`]); a test checks that every route appears here
//! with its method and that nothing here is missing from the router.

use serde_json::{json, Map, Value};
use std::sync::OnceLock;

mod booking;
mod operating;
mod operations;
mod round_trip;
mod traveller;

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(s: Value) -> Value {
    json!({ "application/json": { "schema": s } })
}

fn ok(description: &str, s: Value) -> Value {
    json!({ "description": description, "content": json_content(s) })
}

fn error(description: &str) -> Value {
    ok(description, schema("Error"))
}

fn query(name: &str, required: bool, s: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": required, "schema": s, "description": description })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": description })
}

fn header(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "header", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 200 }, "description": description })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn date() -> Value {
    json!({ "type": "string", "format": "date" })
}

/// An operation with the responses every route may give added.
fn op(tag: &str, summary: &str, mut o: Value, admin: bool) -> Value {
    o["tags"] = json!([tag]);
    o["summary"] = json!(summary);
    let responses = o["responses"].as_object_mut().map(std::mem::take);
    let mut responses: Map<String, Value> = responses.unwrap_or_default();
    responses
        .entry("405")
        .or_insert_with(|| error("Wrong method (see the Allow header)"));
    responses
        .entry("500")
        .or_insert_with(|| error("Internal error (details in the server log)"));
    if admin {
        o["security"] = json!([{ "adminToken": [] }]);
        responses
            .entry("401")
            .or_insert_with(|| error("Missing or wrong admin token"));
    }
    o["responses"] = Value::Object(responses);
    o
}

fn ui(summary: &str, content_type: &str) -> Value {
    op(
        "ui",
        summary,
        json!({ "responses": { "200": { "description": "The file", "content": { content_type: { "schema": string() } } } } }),
        false,
    )
}

/// Every `code` an error body may carry ([`crate::ApiError::code`]).
const ERROR_CODES: [&str; 15] = [
    "bad_request",
    "unauthorized",
    "unauthenticated",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "validation_failed",
    "idempotency_key_reused",
    "unavailable",
    "too_many_requests",
    "internal",
];

/// Paths whose operations never reach the engine, the store or a
/// participant, so never answer `503`.
const NEVER_UNAVAILABLE: [&str; 10] = [
    "/",
    "/app.js",
    "/js/{file}",
    "/style.css",
    "/healthz",
    "/metrics",
    "/api/openapi.json",
    "/api/airports",
    "/api/test-cards",
    "/api/faults",
];

/// Adds what every operation shares: an `operationId` (method and path),
/// `408` (headers or body not received in time), `429` (over the
/// connection cap of the client's address, or a rate limit) and, for the
/// operations that reach the engine or a participant, `503`.
fn finish_operations(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, o) in item.iter_mut() {
            o["operationId"] = json!(operation_id(method, path));
            let Some(responses) = o["responses"].as_object_mut() else {
                continue;
            };
            responses
                .entry("408")
                .or_insert_with(|| error("Request headers or body not received in time"));
            responses.entry("429").or_insert_with(|| {
                json!({ "description": "Over a connection cap or a rate limit; see Retry-After",
                    "headers": { "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait" } },
                    "content": json_content(schema("Error")) })
            });
            if !NEVER_UNAVAILABLE.contains(&path.as_str()) {
                responses.entry("503").or_insert_with(|| {
                    error("Shutting down, storage failing, or a participant cannot be reached")
                });
            }
        }
    }
}

/// `get /api/bookings/{id}` -> `getApiBookingsById`.
fn operation_id(method: &str, path: &str) -> String {
    let mut out = method.to_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let (prefix, name) = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => ("By", p),
            None => ("", seg),
        };
        out.push_str(prefix);
        for word in name.split(|c: char| !c.is_ascii_alphanumeric()) {
            let mut cs = word.chars();
            if let Some(first) = cs.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(cs);
            }
        }
    }
    if path == "/" {
        out.push_str("Index");
    }
    out
}

/// OpenAPI 3.0: `nullable` only counts next to a `type`; a nullable
/// `allOf` of an object schema is typed `object`.
fn type_every_nullable(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&json!(true)) && !m.contains_key("type") {
                m.insert("type".into(), json!("object"));
            }
            for child in m.values_mut() {
                type_every_nullable(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(type_every_nullable),
        _ => {}
    }
}

/// The document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let body_errors = |o: &mut Value| {
        o["responses"]["400"] = error("Malformed JSON or a missing header");
        o["responses"]["413"] = error("Body over 64 KiB");
        o["responses"]["415"] = error("Content-Type is not application/json");
        o["responses"]["422"] = ok(
            "Invalid input, one entry per field",
            schema("ValidationError"),
        );
    };
    let mut create_booking = json!({
        "description": "Validates the request and starts the booking saga. The same Idempotency-Key with the same body names the same booking (202 again); with a different body, 422.",
        "parameters": [header("Idempotency-Key", "A key chosen by the client, unique per booking attempt")],
        "requestBody": { "required": true, "content": json_content(schema("BookingRequest")) },
        "responses": {
            "202": ok("Booking accepted; follow it at status_url or events_url", schema("BookingAccepted")),
            "503": error("Shutting down, or a participant cannot be reached"),
        }
    });
    body_errors(&mut create_booking);
    let mut enroll = json!({
        "parameters": [header("Idempotency-Key", "A key chosen by the client, unique per enrollment")],
        "requestBody": { "required": true, "content": json_content(schema("CreateAccount")) },
        "responses": {
            "201": ok("Account opened", json!({ "type": "object", "properties": { "account": schema("LoyaltyAccount") } })),
            "409": error("This email already has an account"),
        }
    });
    body_errors(&mut enroll);
    let mut put_faults = json!({
        "description": "Replaces every global switch; steps left out are switched off.",
        "requestBody": { "required": true, "content": json_content(schema("Faults")) },
        "responses": { "200": ok("The switches now", schema("Faults")) }
    });
    body_errors(&mut put_faults);
    let mut cancel = json!({
        "parameters": [path_param("id", "Saga id")],
        "requestBody": { "required": false, "content": json_content(json!({ "type": "object", "properties": { "reason": string() } })) },
        "responses": {
            "202": ok("Cancellation recorded; the saga compensates", schema("SagaAction")),
            "404": error("No such saga"),
            "409": error("The saga is not running"),
        }
    });
    body_errors(&mut cancel);
    let sse = |description: &str| json!({ "description": description, "content": { "text/event-stream": { "schema": string() } } });

    let paths = json!({
        "/": { "get": ui("The web page", "text/html") },
        "/app.js": { "get": ui("The web page's script", "application/javascript") },
        "/style.css": { "get": ui("The web page's style sheet", "text/css") },
        "/js/{file}": { "get": ui("One of the web page's view scripts (search.js, booking.js, ...)", "application/javascript") },
        "/healthz": { "get": op("ops", "Liveness", json!({ "responses": { "200": ok("Alive", json!({ "type": "object" })) } }), false) },
        "/readyz": { "get": op("ops", "Readiness: engine open and not shutting down", json!({ "responses": {
            "200": ok("Ready", json!({ "type": "object" })), "503": error("Shutting down") } }), false) },
        "/metrics": { "get": op("ops", "Prometheus metrics", json!({ "responses": { "200": {
            "description": "Text exposition format", "content": { "text/plain": { "schema": string() } } } } }), false) },
        "/api/openapi.json": { "get": op("ops", "This document", json!({ "responses": { "200": ok("OpenAPI 3", json!({ "type": "object" })) } }), false) },
        "/api/airports": { "get": op("catalog", "Airport autocomplete", json!({
            "parameters": [
                query("q", false, json!({ "type": "string", "maxLength": 100 }), "Code, city or name; all airports when absent"),
                query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 50, "default": 10 }), "Most results"),
            ],
            "responses": { "200": ok("Matches, best first", json!({ "type": "object", "properties": { "airports": { "type": "array", "items": schema("Airport") } } })), "422": ok("Bad parameter", schema("ValidationError")) }
        }), false) },
        "/api/flights/search": { "get": op("catalog", "Search flights (one way, or round trip with return_date)", json!({
            "parameters": [
                query("from", true, string(), "Origin airport code"),
                query("to", true, string(), "Destination airport code"),
                query("date", true, date(), "Departure date (not in the past)"),
                query("cabin", false, json!({ "type": "string", "enum": ["economy", "business", "first"], "default": "economy" }), "Cabin"),
                query("passengers", false, json!({ "type": "integer", "minimum": 1, "maximum": 9, "default": 1 }), "Passengers; flights with fewer seats left are left out"),
                query("sort", false, json!({ "type": "string", "enum": ["price", "departure", "duration"], "default": "price" }), "Order"),
                query("max_price", false, json!({ "type": "integer", "minimum": 0 }), "Highest fare per passenger, in minor units (cents)"),
                query("depart_after", false, json!({ "type": "string", "example": "08:00" }), "Earliest local departure, HH:MM"),
                query("depart_before", false, json!({ "type": "string", "example": "18:30" }), "Latest local departure, HH:MM"),
                query("airline", false, string(), "Airline code or name"),
                query("return_date", false, date(), "Return date: makes it a round trip"),
            ],
            "responses": {
                "200": ok("Results: `results` one way; `outbound` and `inbound` for a round trip", schema("SearchResults")),
                "422": ok("Bad parameters", schema("ValidationError")),
                "503": error("Inventory unreachable"),
            }
        }), false) },
        "/api/flights/{id}": { "get": op("catalog", "One flight; with a date, seats left per cabin", json!({
            "parameters": [path_param("id", "Flight id"), query("date", false, date(), "Departure date")],
            "responses": { "200": ok("The flight", json!({ "type": "object", "properties": {
                "flight": schema("Flight"), "origin": schema("Airport"), "destination": schema("Airport"),
                "cabins": { "type": "array", "items": string() },
                "seats_left": { "type": "object", "additionalProperties": { "type": "integer" }, "nullable": true } } })),
                "404": error("No such flight"), "422": ok("Bad parameter", schema("ValidationError")) }
        }), false) },
        "/api/test-cards": { "get": op("payments", "Test card numbers and their outcomes", json!({
            "responses": { "200": ok("Cards", json!({ "type": "object", "properties": { "cards": { "type": "array", "items": schema("TestCard") } } })) }
        }), false) },
        "/api/bookings": { "post": op("bookings", "Start a booking", create_booking, false) },
        "/api/bookings/lookup": { "get": op("bookings", "Find a confirmed booking by reference and a passenger's last name", json!({
            "parameters": [query("reference", true, string(), "Six-character booking reference"), query("last_name", true, string(), "A passenger's last name")],
            "responses": { "200": ok("The booking (email masked; contact_phone with every digit but the last three hidden, when one was given; dates of birth not shown) and its links", json!({ "type": "object" })),
                "404": error("No booking matches (either field may be wrong)"), "422": ok("Missing parameter", schema("ValidationError")) }
        }), false) },
        "/api/bookings/{id}": { "get": op("bookings", "A booking's status by its id (the capability returned at creation)", json!({
            "parameters": [path_param("id", "Booking id")],
            "responses": { "200": ok("Status, steps, reference, total, failure reason", schema("BookingView")), "404": error("No such booking") }
        }), false) },
        "/api/sagas/{id}/events": { "get": op("bookings", "A saga's progress as server-sent events", json!({
            "description": "History first, then live events, each once and in seq order (the SSE id is the seq); ends after saga_finished. Send Last-Event-ID to resume; 204 when nothing follows it. Keep-alive comments every 15 s.",
            "parameters": [path_param("id", "Saga (booking) id")],
            "responses": { "200": sse("Event stream; each data line is a SagaEvent"), "204": { "description": "The saga finished before Last-Event-ID" }, "404": error("No such saga") }
        }), false) },
        "/api/events": { "get": op("admin", "Every saga's events, live (server-sent events)", json!({
            "responses": { "200": sse("Event stream; each data line is a SagaEvent") }
        }), true) },
        "/api/faults": {
            "get": op("faults", "The global failure injection switches", json!({ "responses": { "200": ok("Switches per step", schema("Faults")) } }), false),
            "put": op("faults", "Set the global failure injection switches", put_faults, true),
        },
        "/api/loyalty": { "post": op("loyalty", "Enroll in the loyalty programme", enroll, false) },
        "/api/loyalty/{id}": { "get": op("loyalty", "A loyalty account by number and the member's last name", json!({
            "parameters": [path_param("id", "Account number"), query("last_name", true, string(), "The member's last name")],
            "responses": { "200": ok("Tier, miles and history", json!({ "type": "object", "properties": { "account": schema("LoyaltyAccount"), "history": { "type": "array", "items": { "type": "object" } } } })),
                "404": error("No account matches (either field may be wrong)"), "422": ok("Missing parameter", schema("ValidationError")) }
        }), false) },
        "/api/admin/sagas/{id}/cancel": { "post": op("admin", "Cancel a running saga (it compensates)", cancel, true) },
        "/api/admin/payments": { "get": op("admin", "Payments of one customer (by email), or all; newest first", json!({
            "parameters": [query("email", false, string(), "Customer email"), query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 }), "Most payments")],
            "responses": { "200": ok("Payments", json!({ "type": "object", "properties": { "payments": { "type": "array", "items": { "type": "object" } }, "total": { "type": "integer" } } })),
                "422": ok("Bad parameter", schema("ValidationError")) }
        }), true) },
    });

    let money = json!({ "type": "object", "required": ["minor", "currency"], "properties": {
        "minor": { "type": "integer", "description": "Amount in minor units (cents)" }, "currency": { "type": "string", "example": "USD" } } });
    let fault = json!({ "type": "object", "required": ["mode"], "properties": {
        "mode": { "type": "string", "enum": ["none", "reject", "transient", "delay", "lose_reply"] },
        "times": { "type": "integer", "minimum": 0, "maximum": 100, "description": "transient: failing attempts before success" },
        "ms": { "type": "integer", "minimum": 0, "maximum": 60000, "description": "delay: milliseconds" } } });
    let steps = [
        "reserve_seat",
        "authorize_payment",
        "award_miles",
        "confirm_booking",
    ];
    let mut fault_props = Map::new();
    for s in steps {
        fault_props.insert(s.to_string(), schema("Fault"));
    }
    let step_view = json!({ "type": "object", "properties": {
        "name": { "type": "string", "enum": steps },
        "state": { "type": "string", "enum": ["pending", "running", "retry_wait", "succeeded", "rejected", "in_doubt", "compensating", "compensation_wait", "compensated", "compensation_failed"] },
        "attempts": { "type": "integer" }, "compensation_attempts": { "type": "integer" },
        "in_doubt": { "type": "boolean" }, "last_error": { "type": "string", "nullable": true },
        "wake_at_ms": { "type": "integer", "nullable": true } } });
    let saga_status = json!({ "type": "string", "enum": ["running", "compensating", "completed", "compensated", "stuck", "paused"] });
    let schemas = json!({
        "Error": { "type": "object", "required": ["error", "code"], "properties": { "error": string(),
            "code": { "type": "string", "enum": ERROR_CODES } } },
        "FieldError": { "type": "object", "required": ["field", "message"], "properties": { "field": string(), "message": string() } },
        "ValidationError": { "type": "object", "required": ["error", "code", "fields"], "properties": {
            "error": string(), "code": { "type": "string", "enum": ["validation_failed", "idempotency_key_reused"] },
            "fields": { "type": "array", "minItems": 1, "items": schema("FieldError") } } },
        "Money": money,
        "Airport": { "type": "object", "properties": { "code": string(), "city": string(), "name": string(), "country": string(),
            "utc_offset_minutes": { "type": "integer", "nullable": true }, "location": { "type": "object", "nullable": true } } },
        "Flight": { "type": "object", "properties": { "id": string(), "flight_no": string(), "airline_code": string(), "airline": string(),
            "origin": string(), "destination": string(), "weekday": string(), "departure": string(), "arrival": string(),
            "arrival_weekday": string(), "duration_minutes": { "type": "integer" },
            "economy": { "allOf": [schema("Money")], "nullable": true }, "business": { "allOf": [schema("Money")], "nullable": true },
            "first": { "allOf": [schema("Money")], "nullable": true } } },
        "PriceBreakdown": { "type": "object", "properties": { "base": schema("Money"), "taxes": schema("Money"), "fees": schema("Money"), "total": schema("Money") } },
        "SearchResult": { "type": "object", "properties": { "flight": schema("Flight"), "date": date(), "arrival_date": date(),
            "cabin": string(), "fare": schema("Money"), "seats_left": { "type": "integer" }, "price": schema("PriceBreakdown") } },
        "SearchResults": { "type": "object", "properties": { "query": { "type": "object" },
            "results": { "type": "array", "items": schema("SearchResult") },
            "outbound": { "type": "array", "items": schema("SearchResult") },
            "inbound": { "type": "array", "items": schema("SearchResult") } } },
        "TestCard": { "type": "object", "properties": { "number": string(), "brand": string(), "outcome": string(), "decline": { "type": "string", "nullable": true } } },
        "Passenger": { "type": "object", "required": ["first_name", "last_name"], "properties": { "first_name": string(), "last_name": string(),
            "date_of_birth": { "type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "YYYY-MM-DD: a real day, 1900 or later, not after today (else 422 naming passengers[i].date_of_birth). Optional in this API (the web page requires it). Sealed at rest; never in a response except the e-ticket" } } },
        "CardDetails": { "type": "object", "required": ["number", "exp_month", "exp_year", "cvc", "holder_name"], "properties": {
            "number": string(), "exp_month": { "type": "integer" }, "exp_year": { "type": "integer" }, "cvc": string(), "holder_name": string() } },
        "Fault": fault,
        "Faults": { "type": "object", "properties": fault_props },
        "BookingRequest": { "type": "object", "required": ["flight_id", "date", "cabin", "passengers", "email", "card"], "properties": {
            "flight_id": string(), "date": date(), "cabin": { "type": "string", "enum": ["economy", "business", "first"] },
            "passengers": { "type": "array", "minItems": 1, "maxItems": 9, "items": schema("Passenger") },
            "email": { "type": "string", "format": "email" }, "loyalty_id": { "type": "string", "nullable": true },
            "phone": { "type": "string", "maxLength": 32, "description": "Contact phone: + and the country code, then 8 to 15 digits in all; spaces and dashes allowed and dropped (else 422 naming phone). Optional in this API (the web page requires it). Sealed at rest; the manage-booking lookup shows it masked (contact_phone)" },
            "card": schema("CardDetails"), "faults": schema("Faults"),
            "promo_code": { "type": "string", "nullable": true, "maxLength": 32, "description": "A promo code: its discount comes off the base fare (POST /api/quote shows it)" },
            "redeem_miles": { "type": "integer", "minimum": 0, "description": "Miles paying for part of the base fare (100 miles = 1 USD, at most the base fare; needs loyalty_id); the card pays the rest" } } },
        "BookingAccepted": { "type": "object", "properties": { "booking_id": string(), "status_url": string(), "events_url": string() } },
        "StepView": step_view,
        "BookingView": { "type": "object", "properties": {
            "booking_id": string(), "status": { "type": "string", "enum": ["pending", "confirmed", "compensated", "stuck", "paused"] },
            "saga_status": saga_status.clone(), "steps": { "type": "array", "items": schema("StepView") },
            "booking_ref": { "type": "string", "nullable": true }, "total": schema("Money"), "price": schema("PriceBreakdown"),
            "failure_reason": { "type": "string", "nullable": true }, "flight_id": string(), "date": date(), "cabin": string(),
            "passengers": { "type": "array", "items": schema("Passenger") },
            "card": { "type": "object", "properties": { "brand": string(), "last4": string() } },
            "loyalty_id": { "type": "string", "nullable": true }, "miles_awarded": { "type": "integer", "nullable": true },
            "created_at_ms": { "type": "integer" }, "updated_at_ms": { "type": "integer" }, "status_url": string(), "events_url": string() } },
        "SagaEvent": { "type": "object", "required": ["saga_id", "seq", "at_ms", "event"], "properties": {
            "saga_id": string(), "seq": { "type": "integer" }, "at_ms": { "type": "integer" },
            "event": { "type": "string", "enum": ["saga_started", "step_started", "step_succeeded", "step_failed", "compensation_started", "step_compensated", "compensation_failed", "cancel_requested", "resumed", "operator_retry", "saga_finished"] } },
            "additionalProperties": true },
        "SagaSummary": { "type": "object", "properties": { "id": string(), "definition": string(), "version": { "type": "integer" },
            "status": saga_status.clone(), "failure": { "type": "string", "nullable": true }, "steps": { "type": "array", "items": schema("StepView") },
            "booking_ref": { "type": "string", "nullable": true }, "created_at_ms": { "type": "integer" }, "updated_at_ms": { "type": "integer" } } },
        "SagaAction": { "type": "object", "properties": { "id": string(), "status": saga_status } },
        "CreateAccount": { "type": "object", "required": ["first_name", "last_name", "email"], "properties": {
            "first_name": string(), "last_name": string(), "email": { "type": "string", "format": "email" } } },
        "LoyaltyAccount": { "type": "object", "properties": { "id": string(), "first_name": string(), "last_name": string(),
            "email": { "type": "string", "description": "masked" }, "balance": { "type": "integer" }, "qualifying_miles": { "type": "integer" },
            "tier": string(), "tier_name": string(), "next_tier": { "type": "object", "nullable": true } } },
    });

    let (mut paths, mut schemas) = (paths, schemas);
    if let (Some(p), Some(s)) = (paths.as_object_mut(), schemas.as_object_mut()) {
        p.extend(traveller::paths());
        s.extend(traveller::schemas());
        p.extend(operating::paths());
        s.extend(operating::schemas());
        p.extend(operations::paths());
        s.extend(operations::schemas());
        p.extend(booking::paths());
        s.extend(booking::schemas());
        round_trip::extend(s);
        booking::wait_fields(s);
    }
    finish_operations(&mut paths);
    type_every_nullable(&mut schemas);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Flight booking demo",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Search flights and book them through a durable saga (reserve seat, authorize payment, award miles, confirm), watch it run, fail and compensate live. Every error body is {\"error\": \"...\", \"code\": \"...\"} (code is stable, for programs); validation errors (422) add \"fields\", one entry per field. Bodies are limited to 64 KiB.",
        },
        "servers": [{ "url": "/" }],
        "tags": [
            { "name": "catalog" }, { "name": "bookings" }, { "name": "loyalty" }, { "name": "payments" },
            { "name": "faults" }, { "name": "admin", "description": "Requires Authorization: Bearer <admin token>" },
            { "name": "ops" }, { "name": "ui" }, { "name": "accounts", "description": "A session cookie; state-changing requests with it need X-CSRF-Token" },
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer",
                "description": "DEMO_ADMIN_TOKEN, or the token in <data-dir>/admin_token printed at the first start" } },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    #[test]
    fn documents_exactly_the_routes_of_the_router() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for r in ROUTES {
            let op = &paths
                .get(r.path)
                .unwrap_or_else(|| panic!("{} is not documented", r.path))[r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            assert_eq!(
                op.get("security").is_some(),
                r.admin,
                "{} {}: security must match the route's admin flag",
                r.method,
                r.path
            );
        }
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ROUTES
                        .iter()
                        .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }

    #[test]
    fn every_operation_has_an_id_and_every_nullable_a_type() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, o) in item.as_object().unwrap() {
                let id = o["operationId"].as_str().unwrap_or_default().to_string();
                assert!(!id.is_empty(), "{method} {path} has no operationId");
                assert!(ids.insert(id.clone()), "operationId {id} twice");
                for code in ["408", "429"] {
                    assert!(
                        o["responses"][code].is_object(),
                        "{method} {path}: no {code}"
                    );
                }
            }
        }
        fn walk(v: &Value) {
            match v {
                Value::Object(m) => {
                    if m.contains_key("nullable") {
                        assert!(m.contains_key("type"), "nullable without type: {v}");
                    }
                    m.values().for_each(walk);
                }
                Value::Array(a) => a.iter().for_each(walk),
                _ => {}
            }
        }
        walk(doc);
        assert_eq!(
            operation_id("get", "/api/bookings/{id}"),
            "getApiBookingsById"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let text = serde_json::to_string(document()).unwrap();
        let schemas = document()["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "unresolved $ref {name}");
        }
    }
}
