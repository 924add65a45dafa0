//! The OpenAPI entries of the operator's saga endpoints (list with a
//! cursor, one saga, its history, the overview, a purge with a dry run),
//! kept beside the main document so that both grow without touching each
//! other's lines; the main document merges them in.

use super::{error, ok, op, path_param, query, schema, string};
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Paths of the operator's saga routes, each operation with its `operationId`.
pub(super) fn paths() -> Map<String, Value> {
    let int = |min: u64| json!({ "type": "integer", "minimum": min });
    let list = json!({
        "operationId": "adminListSagas",
        "description": "A page of sagas, newest first, without loading every saga: the store walks its indexes (by creation time, status, search attribute) and reads the page's records only. Pass the answer's next_cursor as cursor for the next page. partial is always false (kept for older clients).",
        "parameters": [
            query("status", false, json!({ "type": "string", "enum": ["all", "running", "compensating", "completed", "compensated", "stuck", "paused"], "default": "all" }), "Only this status"),
            query("definition", false, string(), "Only this saga definition (booking, cancellation)"),
            query("older_than", false, int(0), "Only sagas created at least this many seconds ago"),
            query("newer_than", false, int(0), "Only sagas created at most this many seconds ago"),
            query("attr", false, string(), "Only sagas whose search attribute has this value, as name:value: reference:K7QX2M, departure:2026-12-24, email:ann@example.com (the server hashes an address, as the booking indexes it; a SHA-256 hex is taken as is)"),
            query("overdue", false, json!({ "type": "boolean", "default": false }), "Only overdue sagas: past their deadline after the pivot (they go on, late) and not finished; from the store's overdue index"),
            query("cursor", false, string(), "The previous page's next_cursor"),
            query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 }), "Most sagas"),
        ],
        "responses": { "200": ok("Sagas", schema("SagaPage")), "422": ok("Bad parameter", schema("ValidationError")) }
    });
    let show = json!({
        "operationId": "adminGetSaga",
        "parameters": [path_param("id", "Saga id")],
        "responses": { "200": ok("The saga", schema("SagaDetail")), "404": error("No such saga") }
    });
    let history = json!({
        "operationId": "adminGetSagaHistory",
        "parameters": [path_param("id", "Saga id")],
        "responses": { "200": ok("Every event of the saga, in order", json!({ "type": "object", "properties": {
            "id": string(), "events": { "type": "array", "items": { "type": "object" } } } })), "404": error("No such saga") }
    });
    let overview = json!({
        "operationId": "adminOverview",
        "responses": { "200": ok("Counts by status, the stuck sagas, and recent rates", schema("SagaOverview")) }
    });
    let purge = json!({
        "operationId": "adminPurge",
        "description": "Runs a retention pass now: finished (completed or compensated) sagas that ended longer ago than the window are deleted with their history; stuck and running sagas are never purged. With dry_run nothing is deleted and would_purge says how many would go.",
        "requestBody": { "required": false, "content": { "application/json": { "schema": schema("PurgeRequest") } } },
        "responses": {
            "200": ok("What was (or would be) purged", schema("PurgeResult")),
            "400": error("Body is not JSON"),
            "415": error("Body is not application/json"),
            "422": ok("Bad body, or retention is off and no window was given", schema("ValidationError")),
        }
    });
    object(json!({
        "/api/admin/sagas": { "get": op("admin", "List sagas, newest first, a page at a time", list, true) },
        "/api/admin/sagas/{id}": { "get": op("admin", "One saga: summary, data, idempotency key", show, true) },
        "/api/admin/sagas/{id}/history": { "get": op("admin", "One saga's history", history, true) },
        "/api/admin/overview": { "get": op("admin", "Counts by status and sagas per bucket over the last minutes", overview, true) },
        "/api/admin/purge": { "post": op("admin", "Purge finished sagas past the retention window now (or preview it)", purge, true) },
    }))
}

/// Schemas the operator's paths use.
pub(super) fn schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let bucket = json!({ "type": "object", "properties": { "at_ms": int, "started": int, "completed": int, "compensated": int } });
    object(json!({
        "SagaPage": { "type": "object", "properties": {
            "sagas": { "type": "array", "items": schema("SagaSummary") },
            "total": { "type": "integer", "nullable": true, "description": "All sagas; null when a filter is given (counting would read every record)" },
            "next_cursor": { "type": "string", "nullable": true },
            "scanned": int, "partial": { "type": "boolean" },
            "unregistered": { "type": "array", "items": { "type": "object" } } } },
        "SagaDetail": { "type": "object", "properties": {
            "saga": schema("SagaSummary"), "idempotency_key": { "type": "string", "nullable": true },
            "revision": int, "data": { "type": "object" },
            "paused": { "type": "object", "nullable": true, "description": "Who paused it, why, when (while paused)" },
            "operations": { "type": "array", "description": "Operator operations applied, by operation id", "items": { "type": "object" } },
            "rerun_of": { "type": "string", "nullable": true, "description": "The saga this one re-runs" },
            "reruns": { "type": "array", "items": string(), "description": "Sagas started to re-run this one" } } },
        "SagaOverview": { "type": "object", "properties": {
            "counts": { "type": "array", "description": "Stuck first", "items": { "type": "object", "properties": { "status": string(), "count": int } } },
            "stuck": { "type": "array", "items": schema("SagaSummary") },
            "overdue": { "type": "array", "description": "The newest overdue sagas (past their deadline after the pivot, still going)", "items": schema("SagaSummary") },
            "rates": { "type": "object", "properties": { "bucket_secs": int, "buckets": { "type": "array", "items": bucket } } },
            "retention_days": { "type": "integer", "nullable": true } } },
        "PurgeRequest": { "type": "object", "additionalProperties": false, "properties": {
            "dry_run": { "type": "boolean", "default": false },
            "older_than_secs": { "type": "integer", "minimum": 1, "description": "Window in seconds, instead of the server's --retention" } } },
        "PurgeResult": { "type": "object", "properties": {
            "dry_run": { "type": "boolean" }, "purged": int, "keys_forgotten": int, "would_purge": int,
            "at_least": { "type": "boolean" }, "older_than_secs": int, "finished_before_ms": int } },
    }))
}
