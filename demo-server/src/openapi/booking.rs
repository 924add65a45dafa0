//! The OpenAPI entries of the booking saga's model-v2 endpoints (the
//! itinerary mailbox), kept beside the main document so that both grow
//! without touching each other's lines; the main document merges them in.

use super::{error, ok, op, path_param, query, schema, string};
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Paths of the booking routes added with model v2.
pub(super) fn paths() -> Map<String, Value> {
    let mailbox = json!({
        "operationId": "adminMailbox",
        "description": "The itinerary outbox: after the pivot (capture and ticket) the retriable send_itinerary step queues one message per booking, durably; newest first.",
        "parameters": [
            query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50 }), "Most messages"),
        ],
        "responses": { "200": ok("Messages", schema("Mailbox")), "422": ok("Bad parameter", schema("ValidationError")) }
    });
    let confirm = json!({
        "operationId": "confirmPayment",
        "description": "The customer confirmed the payment with their bank (strong customer authentication): delivers the signal the booking waits for in status awaiting_confirmation; the saga goes on (the pivot confirms the authorization, then captures). Asking again answers outcome duplicate. Unconfirmed within --payment-confirmation-timeout-secs (default 600) the seats are released and the authorization voided. Any body is ignored.",
        "parameters": [path_param("id", "The booking id")],
        "responses": {
            "200": ok("Delivered (or a duplicate)", schema("WaitSignalAnswer")),
            "404": error("No such booking"),
            "409": error("The booking is not waiting for a confirmation (needed none, not got there yet, already confirmed or released)"),
            "422": ok("The confirmation's window has passed: the booking was released", schema("ValidationError")),
        }
    });
    let pay = json!({
        "operationId": "payHeldBooking",
        "description": "Pays a booking held with \"hold\": true, in status held: the card is checked and tokenized at the payments participant as at booking (the saga keeps only the token), then the booking goes on (redeem miles, authorize, maybe awaiting_confirmation, capture). Paying again with the same card answers outcome duplicate. Rate-limited like a booking.",
        "parameters": [path_param("id", "The booking id")],
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema("PayRequest") } } },
        "responses": {
            "200": ok("Delivered (or a duplicate)", schema("WaitSignalAnswer")),
            "400": error("Body is not a JSON object"),
            "404": error("No such booking"),
            "409": error("The booking is not held, or already paid with another card"),
            "415": error("Body is not application/json"),
            "422": ok("A bad card (fields), or the hold has expired (the seats were released)", schema("ValidationError")),
            "429": error("Too many requests from this address"),
        }
    });
    object(json!({
        "/api/admin/mailbox": { "get": op("admin", "The itinerary outbox, newest first", mailbox, true) },
        "/api/bookings/{id}/confirm-payment": { "post": op("bookings", "Confirm a booking's payment with the bank", confirm, false) },
        "/api/bookings/{id}/pay": { "post": op("bookings", "Pay a held booking", pay, false) },
    }))
}

/// The booking waits' fields in the main document's `BookingRequest`
/// (`hold`; `card` required only without it) and `BookingView` (the
/// `held` and `awaiting_confirmation` statuses, their deadlines).
pub(super) fn wait_fields(s: &mut Map<String, Value>) {
    if let Some(req) = s.get_mut("BookingRequest") {
        if let Some(Value::Array(required)) = req.get_mut("required") {
            required.retain(|f| f != "card");
        }
        req["description"] = json!("card is required unless hold is true (then it must be absent: the booking is paid later with POST /api/bookings/{id}/pay)");
        req["properties"]["hold"] = json!({ "type": "boolean", "default": false,
            "description": "Hold the seats now and pay later, within the server's hold window (--hold-window-secs, default 24 h)" });
    }
    if let Some(view) = s.get_mut("BookingView") {
        let p = &mut view["properties"];
        p["status"] = json!({ "type": "string", "enum": ["pending", "held", "awaiting_confirmation", "confirmed", "compensated", "stuck", "paused"] });
        p["hold"] = json!({ "type": "boolean", "description": "Held at booking, paid later" });
        p["hold_expires_at"] = json!({ "type": "string", "format": "date-time", "nullable": true, "description": "While held: the payment deadline" });
        p["confirmation_expires_at"] = json!({ "type": "string", "format": "date-time", "nullable": true,
            "description": "While awaiting_confirmation: the deadline to confirm with the bank" });
    }
}

/// Schemas the booking paths use.
pub(super) fn schemas() -> Map<String, Value> {
    let message = json!({ "type": "object", "required": ["saga_id", "booking_ref", "to", "subject", "body", "queued_at"], "properties": {
        "v": { "type": "integer" }, "saga_id": string(), "booking_ref": string(), "to": string(),
        "subject": string(), "body": string(), "queued_at": { "type": "string", "format": "date-time" } } });
    object(json!({
        "OutboxMessage": message,
        "PayRequest": { "type": "object", "required": ["card"], "properties": { "card": schema("CardDetails") } },
        "WaitSignalAnswer": { "type": "object", "required": ["booking_id", "outcome"], "properties": {
            "booking_id": string(), "outcome": { "type": "string", "enum": ["delivered", "kept", "duplicate"] },
            "status_url": string(), "events_url": string() } },
        "Mailbox": { "type": "object", "required": ["messages", "total"], "properties": {
            "messages": { "type": "array", "items": schema("OutboxMessage") },
            "total": { "type": "integer" } } },
    }))
}
