//! The OpenAPI entries of the booking saga's model-v2 endpoints (the
//! itinerary mailbox), kept beside the main document so that both grow
//! without touching each other's lines; the main document merges them in.

use super::{ok, op, query, schema, string};
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
    object(json!({
        "/api/admin/mailbox": { "get": op("admin", "The itinerary outbox, newest first", mailbox, true) },
    }))
}

/// Schemas the booking paths use.
pub(super) fn schemas() -> Map<String, Value> {
    let message = json!({ "type": "object", "required": ["saga_id", "booking_ref", "to", "subject", "body", "queued_at"], "properties": {
        "v": { "type": "integer" }, "saga_id": string(), "booking_ref": string(), "to": string(),
        "subject": string(), "body": string(), "queued_at": { "type": "string", "format": "date-time" } } });
    object(json!({
        "OutboxMessage": message,
        "Mailbox": { "type": "object", "required": ["messages", "total"], "properties": {
            "messages": { "type": "array", "items": schema("OutboxMessage") },
            "total": { "type": "integer" } } },
    }))
}
