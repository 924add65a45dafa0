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
    let paths = json!({
        "/api/cancellations": { "post": op("bookings", "Cancel a confirmed booking, with a refund", cancel, false) },
        "/api/cancellations/{id}": { "get": op("bookings", "A cancellation's status (follow it live at /api/sagas/{id}/events)", get, false) },
        "/api/admin/cancellations": { "get": op("admin", "Every cancellation", list, true) },
    });
    match paths {
        Value::Object(m) => m,
        _ => Map::new(),
    }
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
    match s {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
