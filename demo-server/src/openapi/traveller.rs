//! The OpenAPI entries of the traveller's features (cancellation, and what
//! follows it), kept beside the main document so that both grow without
//! touching each other's lines; the main document merges them in.

use super::{error, ok, op, path_param, schema, string};
use serde_json::{json, Map, Value};

/// Paths of the traveller's routes, each operation with its `operationId`.
pub(super) fn paths() -> Map<String, Value> {
    let cancel = json!({
        "operationId": "createCancellation",
        "description": "Cancels a confirmed booking found by its reference and a passenger's last name: a saga of its own (verify_booking, refund_payment, release_seats, reverse_miles, mark_cancelled). Refunds in full within 24 hours of booking, then minus the fare rule's fee (Economy 20 %, Business 10 %, First 5 %). Asking again returns the same cancellation. Rate-limited like the booking lookup.",
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema("CancelRequest") } } },
        "responses": {
            "202": ok("Cancellation started (or already under way or done)", schema("CancellationAccepted")),
            "400": error("Body is not JSON"),
            "404": error("No booking matches this reference and last name"),
            "409": ok("Refused: already_cancelled, departed or not_confirmed", schema("CancelRefusal")),
            "415": error("Body is not application/json"),
            "422": ok("Body does not fit", schema("ValidationError")),
            "429": error("Too many requests from this address"),
        }
    });
    let get = json!({
        "operationId": "getCancellation",
        "parameters": [path_param("id", "The cancellation id from POST /api/cancellations")],
        "responses": { "200": ok("The cancellation", schema("CancellationView")), "404": error("No such cancellation") }
    });
    let list = json!({
        "operationId": "adminListCancellations",
        "responses": { "200": ok("Cancellations, newest first", json!({ "type": "object", "properties": {
            "total": { "type": "integer" }, "cancellations": { "type": "array", "items": schema("CancellationView") } } })) }
    });
    let mut paths = json!({
        "/api/cancellations": { "post": op("bookings", "Cancel a confirmed booking, with a refund", cancel, false) },
        "/api/cancellations/{id}": { "get": op("bookings", "A cancellation's status (follow it live at /api/sagas/{id}/events)", get, false) },
        "/api/admin/cancellations": { "get": op("admin", "Every cancellation", list, true) },
    });
    if let (Some(p), Value::Object(more)) = (paths.as_object_mut(), account_paths()) {
        p.extend(more);
    }
    match paths {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A JSON request body of schema `name` with the usual body errors.
fn body(o: &mut Value, name: &str) {
    o["requestBody"] =
        json!({ "required": true, "content": { "application/json": { "schema": schema(name) } } });
    o["responses"]["400"] = error("Malformed JSON");
    o["responses"]["413"] = error("Body over 64 KiB");
    o["responses"]["415"] = error("Content-Type is not application/json");
    o["responses"]["422"] = ok(
        "Invalid input, one entry per field",
        schema("ValidationError"),
    );
}

fn session_errors(o: &mut Value) {
    o["responses"]["401"] = error("Not logged in (no valid session cookie)");
    o["responses"]["403"] = error("Session cookie without its X-CSRF-Token");
}

/// Accounts, my trips, the e-ticket.
fn account_paths() -> Value {
    let cookie = "Sets the session cookie `sid` (HttpOnly, SameSite=Strict, Max-Age = the session's lifetime; Secure when the server is configured for TLS).";
    let mut register = json!({
        "description": format!("Registers a traveller (password hashed with Argon2id) and logs in. {cookie}"),
        "responses": { "201": ok("Registered and logged in", schema("LoggedIn")), "409": error("This email is already registered"),
            "429": error("Too many registrations from this address") } });
    body(&mut register, "RegisterRequest");
    let mut login = json!({
        "description": format!("Logs in. A wrong email and a wrong password give the same 401. Throttled per client address and per account (failed attempts). {cookie}"),
        "responses": { "200": ok("Logged in", schema("LoggedIn")), "401": error("The email or the password is wrong"),
            "429": error("Too many attempts from this address, or too many failures for this account; see Retry-After") } });
    body(&mut login, "LoginRequest");
    let mut logout = json!({ "description": "Ends the session (if any) and clears the cookie. Needs X-CSRF-Token with a session.",
        "responses": { "204": { "description": "Logged out" } } });
    logout["responses"]["403"] = error("Session cookie without its X-CSRF-Token");
    let mut me = json!({ "description": "The logged-in account, its CSRF token (send it as X-CSRF-Token on every state-changing request made with the cookie) and its linked loyalty account.",
        "responses": { "200": ok("The account", schema("AccountState")) } });
    session_errors(&mut me);
    me["responses"].as_object_mut().map(|r| r.remove("403"));
    let mut trips = json!({ "description": "The account's bookings, newest first, each with its status (awaiting_confirmation, confirmed, cancelled, failed with failure_reason, needs_attention). Pass next_cursor back as cursor for the next page.",
        "parameters": [
            { "name": "cursor", "in": "query", "required": false, "schema": string(), "description": "next_cursor of the previous page" },
            { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 50, "default": 10 }, "description": "Most trips" },
        ],
        "responses": { "200": ok("One page", schema("TripsPage")), "422": ok("Bad cursor or limit", schema("ValidationError")) } });
    session_errors(&mut trips);
    trips["responses"].as_object_mut().map(|r| r.remove("403"));
    let mut link = json!({ "description": "Links a loyalty account to the logged-in account, proven by its number and the member's last name (either wrong: the same 404). Rate-limited like the booking lookup.",
        "responses": { "200": ok("Linked", json!({ "type": "object", "properties": { "account": schema("Account"), "loyalty": schema("LoyaltyAccount") } })),
            "404": error("No loyalty account matches this number and last name") } });
    body(&mut link, "LinkLoyaltyRequest");
    session_errors(&mut link);
    let mut cancel = json!({ "description": "Cancels one of the logged-in account's confirmed bookings (the cancellation saga of POST /api/cancellations).",
        "responses": { "202": ok("Cancellation started (or already under way or done)", schema("CancellationAccepted")),
            "404": error("No booking of this account has this id"),
            "409": ok("Refused: already_cancelled, departed or not_confirmed", schema("CancelRefusal")) } });
    body(&mut cancel, "CancelTripRequest");
    session_errors(&mut cancel);
    let ticket = json!({ "description": "A printable HTML e-ticket (print style sheet) of a confirmed booking: reference, passengers with their dates of birth, flight, cabin and seats, a boarding code. Authorised by a passenger's last_name (like the manage-booking lookup) or by the session of the account that made the booking; otherwise the same 404. Rate-limited like the booking lookup.",
        "parameters": [path_param("id", "The booking reference"),
            { "name": "last_name", "in": "query", "required": false, "schema": string(), "description": "A passenger's last name (not needed with the owning account's session)" }],
        "responses": { "200": { "description": "The e-ticket", "content": { "text/html": { "schema": string() } } },
            "404": error("No booking matches (reference, last name or owner)"),
            "409": error("The booking is cancelled: no valid ticket") } });
    let pdf = json!({ "description": "The e-ticket of a confirmed booking as a one-page PDF (reference, flight, cabin, passengers with their dates of birth, boarding code and bars), made with pdf-writer. The id is the booking id or its reference; authorised exactly as the HTML ticket. Rate-limited like the booking lookup.",
        "parameters": [path_param("id", "The booking id (or its reference)"),
            { "name": "last_name", "in": "query", "required": false, "schema": string(), "description": "A passenger's last name (not needed with the owning account's session)" }],
        "responses": { "200": { "description": "The PDF", "content": { "application/pdf": { "schema": { "type": "string", "format": "binary" } } } },
            "404": error("No booking matches (id, last name or owner)"),
            "409": error("The booking is cancelled: no valid ticket") } });
    let backup = json!({ "description": "A consistent snapshot of every record of this server (catalog, sagas and histories, bookings, payments, loyalty, accounts, sessions, promo codes), taken under a write barrier: writes under way finish, new ones wait while the trees are copied. The backup file format (version, SHA-256 checksum) is described in demo-server's backup module; `demo-server restore` reads it. Card numbers and CVCs are never stored, so never in a backup; passengers' dates of birth and contact phones are there only sealed (their key file, personal-data.key, is not in the backup). 409 when the sagas are in a shared store.",
        "responses": { "200": { "description": "The backup file", "headers": {
                "x-backup-trees": { "schema": { "type": "integer" } }, "x-backup-records": { "schema": { "type": "integer" } } },
                "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
            "409": error("The sagas are kept in a shared store: back that up with its own tools") } });
    let import = json!({ "description": "Imports a schedule (the CSV formats of `demo-server import`) into the running server, no restart. The rows go to a private copy of the catalog, written to the database in one transaction, and the copy replaces the served catalog whole: a search during the import sees the old catalog or the new one, never part of the import. Bodies up to 32 MiB.",
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["currency"], "properties": {
            "currency": { "type": "string", "description": "ISO 4217 code of the fares" },
            "mode": { "type": "string", "enum": ["skip", "reject"], "default": "skip" },
            "airports_csv": { "type": "string", "nullable": true },
            "flights_csv": { "oneOf": [string(), { "type": "array", "items": string() }] } } } } } },
        "responses": { "200": ok("Imported", json!({ "type": "object", "properties": {
                "imported": { "type": "integer" }, "airports": { "type": "integer" }, "flights": { "type": "integer" },
                "replaced": { "type": "integer" }, "duplicates": { "type": "integer" }, "skipped": { "type": "integer" },
                "errors": { "type": "array", "items": string() },
                "catalog": { "type": "object", "properties": { "airports": { "type": "integer" }, "flights": { "type": "integer" } } } } })),
            "400": error("Malformed JSON"), "413": error("Body over 32 MiB"),
            "422": ok("Invalid request or schedule (mode reject: a bad row); nothing imported", schema("ValidationError")) } });
    let mut quote = json!({ "description": "Prices a booking before it is made, through the same functions the booking uses: the fare's price, the promo code's discount (off the base fare), miles redeemed on what is left, and the charge the card will see.",
        "responses": { "200": ok("The quote", schema("Quote")) } });
    body(&mut quote, "QuoteRequest");
    let mut put_promo = json!({ "description": "Creates or replaces a promo code (its uses so far are kept). The use limit is enforced when a booking takes a use (its redeem_miles step), atomically; a booking that compensates gives its use back.",
        "parameters": [path_param("id", "The code (letters, digits, - and _; stored upper case)")],
        "responses": { "200": ok("The code", schema("PromoCode")) } });
    body(&mut put_promo, "PromoCodeRequest");
    let list_promos = json!({ "responses": { "200": ok("Every code with its uses", json!({ "type": "object", "properties": {
        "total": { "type": "integer" }, "codes": { "type": "array", "items": schema("PromoCode") } } })) } });
    json!({
        "/api/quote": { "post": op("bookings", "Price a booking before making it (promo code, miles)", quote, false) },
        "/api/admin/promo-codes/{id}": { "put": op("admin", "Create or replace a promo code", put_promo, true) },
        "/api/admin/promo-codes": { "get": op("admin", "Every promo code", list_promos, true) },
        "/api/admin/backup": { "post": op("admin", "Take a backup of every record", backup, true) },
        "/api/admin/catalog/import": { "post": op("admin", "Import a schedule into the running server", import, true) },
        "/api/accounts": { "post": op("accounts", "Register a traveller account", register, false) },
        "/api/session": {
            "post": op("accounts", "Log in", login, false),
            "delete": op("accounts", "Log out", logout, false),
        },
        "/api/account": { "get": op("accounts", "The logged-in account and its CSRF token", me, false) },
        "/api/account/trips": { "get": op("accounts", "My trips: the account's bookings, newest first", trips, false) },
        "/api/account/loyalty": { "post": op("accounts", "Link a loyalty account", link, false) },
        "/api/account/cancellations": { "post": op("accounts", "Cancel one of my bookings", cancel, false) },
        "/api/tickets/{id}": { "get": op("bookings", "A confirmed booking's e-ticket (HTML)", ticket, false) },
        "/api/bookings/{id}/ticket.pdf": { "get": op("bookings", "A confirmed booking's e-ticket (PDF)", pdf, false) },
    })
}

/// Schemas the traveller's paths use.
pub(super) fn schemas() -> Map<String, Value> {
    let nullable_int = json!({ "type": "integer", "nullable": true });
    let s = json!({
        "CancelRequest": { "type": "object", "required": ["reference", "last_name"], "additionalProperties": false,
            "properties": { "reference": string(), "last_name": string() } },
        "CancellationAccepted": { "type": "object", "properties": { "cancellation_id": string(), "status_url": string(), "events_url": string() } },
        "CancelRefusal": { "type": "object", "required": ["error", "reason"], "properties": { "error": string(), "code": string(),
            "reason": { "type": "string", "enum": ["already_cancelled", "departed", "not_confirmed"] } } },
        "CancellationView": { "type": "object", "properties": {
            "cancellation_id": string(), "status_url": string(), "events_url": string(),
            "status": { "type": "string", "enum": ["in_progress", "cancelled", "not_cancelled", "needs_operator"] },
            "saga_status": string(), "reference": string(), "requested_at": { "type": "string", "format": "date-time" },
            "charged": schema("Money"), "refund": schema("Money"), "fee": schema("Money"),
            "seats_released": nullable_int.clone(), "miles_reversed": nullable_int.clone(), "miles_recredited": nullable_int,
            "failure_reason": { "type": "string", "nullable": true } } },
    });
    let mut s = s;
    if let (Some(m), Value::Object(more)) = (s.as_object_mut(), account_schemas()) {
        m.extend(more);
    }
    match s {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn account_schemas() -> Value {
    let nullable = |t: &str| json!({ "type": t, "nullable": true });
    json!({
        "RegisterRequest": { "type": "object", "required": ["name", "email", "password"], "properties": {
            "name": { "type": "string", "maxLength": 100 }, "email": { "type": "string", "format": "email" },
            "password": { "type": "string", "minLength": 8, "maxLength": 128, "format": "password" } } },
        "LoginRequest": { "type": "object", "required": ["email", "password"], "properties": {
            "email": { "type": "string", "format": "email" }, "password": { "type": "string", "format": "password" } } },
        "Account": { "type": "object", "properties": { "id": string(), "name": string(), "email": string(),
            "loyalty_id": nullable("string"), "created_at": { "type": "string", "format": "date-time" } } },
        "LoggedIn": { "type": "object", "properties": { "account": schema("Account"), "csrf_token": string(), "expires_at_ms": { "type": "integer" } } },
        "AccountState": { "type": "object", "properties": { "account": schema("Account"), "csrf_token": string(),
            "expires_at_ms": { "type": "integer" }, "loyalty": { "allOf": [schema("LoyaltyAccount")], "nullable": true } } },
        "Trip": { "type": "object", "properties": {
            "booking_id": string(), "status": { "type": "string", "enum": ["held", "awaiting_confirmation", "confirmed", "cancelled", "failed", "needs_attention"] },
            "failure_reason": nullable("string"), "booking_ref": nullable("string"), "flight": { "type": "object", "nullable": true },
            "flight_id": string(), "date": { "type": "string", "format": "date" }, "cabin": string(),
            "passengers": { "type": "array", "items": schema("Passenger") }, "price": schema("PriceBreakdown"), "charged": schema("Money"),
            "miles_awarded": nullable("integer"), "miles_redeemed": nullable("integer"), "created_at_ms": { "type": "integer" },
            "hold_expires_at": { "type": "string", "format": "date-time", "nullable": true, "description": "A held booking's payment deadline" },
            "status_url": string(), "events_url": string(), "ticket_url": nullable("string") } },
        "TripsPage": { "type": "object", "properties": { "trips": { "type": "array", "items": schema("Trip") },
            "next_cursor": nullable("string"), "loyalty": { "allOf": [schema("LoyaltyAccount")], "nullable": true } } },
        "LinkLoyaltyRequest": { "type": "object", "required": ["loyalty_id", "last_name"], "properties": { "loyalty_id": string(), "last_name": string() } },
        "PromoRule": { "type": "object", "required": ["kind"], "properties": {
            "kind": { "type": "string", "enum": ["percent", "fixed"] },
            "percent": { "type": "integer", "minimum": 1, "maximum": 100, "description": "kind percent: percent off the base fare" },
            "amount": { "allOf": [schema("Money")], "nullable": true, "description": "kind fixed: amount off the base fare, in the fare's currency" } } },
        "PromoCodeRequest": { "type": "object", "required": ["rule", "valid_from", "valid_until"], "properties": {
            "rule": schema("PromoRule"), "valid_from": { "type": "string", "format": "date-time" },
            "valid_until": { "type": "string", "format": "date-time" }, "max_uses": { "type": "integer", "minimum": 1, "nullable": true } } },
        "PromoCode": { "type": "object", "properties": { "code": string(), "rule": schema("PromoRule"),
            "valid_from": { "type": "string", "format": "date-time" }, "valid_until": { "type": "string", "format": "date-time" },
            "max_uses": nullable("integer"), "uses": { "type": "integer" } } },
        "QuoteRequest": { "type": "object", "required": ["flight_id", "date", "cabin", "passengers"], "properties": {
            "flight_id": string(), "date": { "type": "string", "format": "date" },
            "cabin": { "type": "string", "enum": ["economy", "business", "first"] },
            "passengers": { "type": "integer", "minimum": 1, "maximum": 9 },
            "promo_code": nullable("string"), "redeem_miles": { "type": "integer", "minimum": 0 } } },
        "Quote": { "type": "object", "properties": { "price": schema("PriceBreakdown"),
            "promo": { "type": "object", "nullable": true, "properties": { "code": string(), "discount": schema("Money") } },
            "miles": { "type": "object", "nullable": true, "properties": { "miles": { "type": "integer" }, "discount": schema("Money"), "charge": schema("Money") } },
            "charge": schema("Money") } },
        "CancelTripRequest": { "type": "object", "required": ["booking_id"], "properties": { "booking_id": string() } },
    })
}
