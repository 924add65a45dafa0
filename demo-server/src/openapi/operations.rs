//! The OpenAPI entries of the operator operations on sagas (pause, resume,
//! retry-now, skip, force-compensate, re-run, and pause/resume of a whole
//! definition), each with its dry run; merged into the main document.

use super::{error, ok, op, path_param, schema, string};
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One operation on one saga: `POST /api/admin/sagas/{id}/<verb>`.
fn saga_op(id: &str, body: &str, description: &str) -> Value {
    json!({
        "operationId": id,
        "description": description,
        "parameters": [path_param("id", "Saga id")],
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema(body) } } },
        "responses": {
            "200": ok("What the operation did (or, with dry_run, would do)", schema("OperationOutcome")),
            "400": error("Body is not JSON"),
            "404": error("No such saga"),
            "409": error("Refused: the operation does not apply to the saga as it stands, or the operation id was used for another operation"),
            "415": error("Body is not application/json"),
            "422": ok("A field is missing or wrong (a skip result that does not fit the saga's data, an unknown step)", schema("ValidationError")),
            "503": error("The server is shutting down"),
        }
    })
}

fn definition_op(id: &str, description: &str) -> Value {
    json!({
        "operationId": id,
        "description": description,
        "requestBody": { "required": true, "content": { "application/json": { "schema": schema("DefinitionOperation") } } },
        "responses": {
            "200": ok("The sagas it applied to, and those it did not", schema("BulkOutcome")),
            "400": error("Body is not JSON"),
            "404": error("No such saga definition"),
            "415": error("Body is not application/json"),
            "422": ok("A field is missing or wrong", schema("ValidationError")),
            "503": error("The server is shutting down"),
        }
    })
}

/// Paths of the operation routes.
pub(super) fn paths() -> Map<String, Value> {
    let pause = saga_op("adminPauseSaga", "OperationBody", "Pauses the saga: no step starts and no timer fires until it is resumed; a step under way finishes and its result is recorded. Its status is paused everywhere (the booking's too).");
    let resume = saga_op(
        "adminResumeSaga",
        "OperationBody",
        "Resumes a paused saga where it stood (409 if it is not paused).",
    );
    let retry_now = saga_op("adminRetryNowSaga", "OperationBody", "Wakes a saga waiting in backoff (a forward retry or a compensation retry) at once (409 if nothing waits in backoff).");
    let retry = saga_op("adminRetrySaga", "OperationBody", "Retries a stuck saga: its failed compensation gets a fresh round of attempts, or its stuck forward step (past the pivot) runs again (409 if it is not stuck).");
    let skip = saga_op("adminSkipStep", "SkipBody", "The operator did the step by hand: it counts as succeeded, and result (a JSON object) is merged into the saga's data, which must still decode as the saga's data type. Only for the step the saga stands on, before the pivot, not yet succeeded and not running.");
    let force = saga_op("adminForceCompensate", "OperationBody", "Cancels the saga with the reason and compensates what it did: a running saga before its pivot, or one stuck forward on a pivot that never succeeded.");
    let rerun = saga_op("adminRerunSaga", "RerunBody", "Starts a new saga (new id, linked to this one both ways) at from_step with this saga's data as it last stood; only for a saga that ended compensated or stuck. new_saga names it.");
    let by_def_pause = definition_op("adminPauseDefinition", "Pauses every running or compensating saga of the definition (sagas started later are not paused).");
    let by_def_resume = definition_op(
        "adminResumeDefinition",
        "Resumes every paused saga of the definition.",
    );
    object(json!({
        "/api/admin/sagas/{id}/pause": { "post": op("admin", "Pause a saga (or preview it)", pause, true) },
        "/api/admin/sagas/{id}/resume": { "post": op("admin", "Resume a paused saga (or preview it)", resume, true) },
        "/api/admin/sagas/{id}/retry-now": { "post": op("admin", "Wake a saga waiting in backoff now (or preview it)", retry_now, true) },
        "/api/admin/sagas/{id}/retry": { "post": op("admin", "Retry a stuck saga (or preview it)", retry, true) },
        "/api/admin/sagas/{id}/skip": { "post": op("admin", "Skip a step with a supplied result (or preview it)", skip, true) },
        "/api/admin/sagas/{id}/force-compensate": { "post": op("admin", "Force a saga to compensate (or preview it)", force, true) },
        "/api/admin/sagas/{id}/rerun": { "post": op("admin", "Re-run a finished saga from a step (or preview it)", rerun, true) },
        "/api/admin/definitions/pause": { "post": op("admin", "Pause every saga of a definition (or preview it)", by_def_pause, true) },
        "/api/admin/definitions/resume": { "post": op("admin", "Resume every saga of a definition (or preview it)", by_def_resume, true) },
    }))
}

/// Schemas the operation routes use.
pub(super) fn schemas() -> Map<String, Value> {
    let common = |extra: Value| {
        let mut props = json!({
            "operator": { "type": "string", "maxLength": 500, "description": "Who asks (recorded in the history)" },
            "reason": { "type": "string", "maxLength": 500, "description": "Why (recorded in the history)" },
            "operation_id": { "type": "string", "maxLength": 500, "description": "The caller's id: repeating it returns the first result; another operation under it is refused (409)" },
            "dry_run": { "type": "boolean", "default": false, "description": "Only say what would happen" },
        });
        let mut required = vec![json!("operator"), json!("reason"), json!("operation_id")];
        if let (Some(p), Value::Object(e)) = (props.as_object_mut(), extra) {
            for (k, v) in e {
                required.push(json!(k.clone()));
                p.insert(k, v);
            }
        }
        json!({ "type": "object", "required": required, "properties": props })
    };
    let plan = json!({ "type": "object", "properties": {
        "steps": { "type": "array", "items": { "type": "object", "properties": {
            "index": { "type": "integer" }, "step": string(),
            "action": { "type": "string", "enum": ["finish", "run", "compensate", "wait"] } } } },
        "ends_as": { "type": "string", "nullable": true },
        "held_after": { "type": "integer", "nullable": true, "description": "Paused after this many entries; the rest happens once resumed" } } });
    let outcome = json!({ "type": "object", "properties": {
        "saga_id": string(), "operation_id": string(), "operation": string(),
        "applied": { "type": "boolean", "description": "False for a dry run" },
        "repeated": { "type": "boolean", "description": "The operation id had been used for this operation: nothing was done again" },
        "status": string(), "plan": plan, "new_saga": { "type": "string", "nullable": true } } });
    object(json!({
        "OperationBody": common(json!({})),
        "SkipBody": common(json!({ "step": string(), "result": { "type": "object", "description": "Merged into the saga's data" } })),
        "RerunBody": common(json!({ "from_step": string() })),
        "DefinitionOperation": common(json!({ "definition": string() })),
        "OperationOutcome": outcome,
        "BulkOutcome": { "type": "object", "properties": {
            "definition": string(), "dry_run": { "type": "boolean" },
            "applied": { "type": "array", "items": schema("OperationOutcome") },
            "refused": { "type": "array", "items": { "type": "object", "properties": { "saga_id": string(), "reason": string() } } } } },
    }))
}
