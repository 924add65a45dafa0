//! Operator operations over HTTP (the router has already checked the admin
//! token): `POST /api/admin/sagas/{id}/{pause|resume|retry-now|retry|skip|
//! force-compensate|rerun}` and `POST /api/admin/definitions/{pause|resume}`.
//!
//! Every body names the operator, the reason and an operation id (the
//! engine makes the operation idempotent by it), and may ask for a dry
//! run; `skip` adds `step` and `result`, `rerun` adds `from_step`, the
//! definition routes add `definition`. A refusal (skip after the pivot,
//! resume of a saga that is not paused, an operation id used for another
//! operation) is a `409` saying why; a malformed body or a result that
//! does not fit the saga's data is a `422` naming the field.

use super::admin::saga_id;
use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::FieldError;
use hyper::{Response, StatusCode};
use saga_engine::machine::Refusal;
use saga_engine::{Error, Operation, OperationRequest};
use serde_json::{json, Value};

/// Which operation a route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `retry-now`.
    RetryNow,
    /// `retry` (of a stuck saga).
    Retry,
    /// `skip`.
    Skip,
    /// `force-compensate`.
    ForceCompensate,
    /// `rerun`.
    Rerun,
}

/// Longest operator name, reason or operation id kept.
const MAX_TEXT: usize = 500;

fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.into(),
        message: message.into(),
    }
}

/// A required non-empty string field of the body.
fn text(body: &Value, name: &str, errors: &mut Vec<FieldError>) -> String {
    match body.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT => {
            s.trim().to_string()
        }
        Some(Value::String(s)) if !s.trim().is_empty() => {
            errors.push(field(name, &format!("at most {MAX_TEXT} characters")));
            String::new()
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            errors.push(field(name, "required"));
            String::new()
        }
        Some(_) => {
            errors.push(field(name, "must be a string"));
            String::new()
        }
    }
}

/// The common part of every body: operator, reason, operation id, dry run.
fn request(body: &Value, errors: &mut Vec<FieldError>) -> OperationRequest {
    if !body.is_object() && !body.is_null() {
        errors.push(field("body", "must be a JSON object"));
    }
    let dry_run = match body.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(field("dry_run", "must be true or false"));
            false
        }
    };
    OperationRequest {
        operator: text(body, "operator", errors),
        reason: text(body, "reason", errors),
        operation_id: text(body, "operation_id", errors),
        dry_run,
    }
}

/// An engine refusal as the caller's answer.
fn refused(e: Error) -> ApiError {
    match &e {
        Error::Refused { refusal, .. } => match refusal {
            Refusal::InvalidResult { .. } => ApiError::Validation {
                message: e.to_string(),
                fields: vec![field("result", &refusal.to_string())],
            },
            Refusal::UnknownStep(_) | Refusal::NoSuchStep { .. } | Refusal::InsideGroup(_) => {
                ApiError::Validation {
                    message: e.to_string(),
                    fields: vec![field("step", &refusal.to_string())],
                }
            }
            _ => ApiError::Conflict(e.to_string()),
        },
        Error::OperationIdReused { .. } => ApiError::Conflict(e.to_string()),
        Error::UnknownDefinition { name, .. } => {
            ApiError::NotFound(format!("no saga definition named {name:?}"))
        }
        _ => e.into(),
    }
}

/// `POST /api/admin/sagas/{id}/<kind>`.
pub async fn saga(state: &AppState, mut req: Req, kind: Kind) -> Result<Response<Body>, ApiError> {
    let id = saga_id(req.param(0))?;
    // An unknown saga is a 404 whatever the body says.
    state.engine.status(&id).await?;
    let body = req.json_value(state).await?;
    let mut errors = Vec::new();
    let r = request(&body, &mut errors);
    let op = match kind {
        Kind::Pause => Operation::Pause,
        Kind::Resume => Operation::Resume,
        Kind::RetryNow => Operation::RetryNow,
        Kind::Retry => Operation::Retry,
        Kind::ForceCompensate => Operation::ForceCompensate,
        Kind::Skip => {
            let step = text(&body, "step", &mut errors);
            let result = match body.get("result") {
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => {
                    errors.push(field(
                        "result",
                        "required: a JSON object merged into the saga's data",
                    ));
                    Value::Null
                }
                Some(_) => {
                    errors.push(field("result", "must be a JSON object"));
                    Value::Null
                }
            };
            Operation::Skip { step, result }
        }
        Kind::Rerun => Operation::Rerun {
            from_step: text(&body, "from_step", &mut errors),
        },
    };
    ApiError::check("invalid operation", errors)?;
    let out = state.engine.operate(&id, op, &r).await.map_err(refused)?;
    tracing::info!(saga_id = %id, operation = out.operation, operator = %r.operator,
        operation_id = %r.operation_id, dry_run = r.dry_run, repeated = out.repeated, "operator operation");
    Ok(json_response(StatusCode::OK, &out))
}

/// `POST /api/admin/definitions/{pause|resume}`: every saga of a definition.
pub async fn definition(
    state: &AppState,
    mut req: Req,
    kind: Kind,
) -> Result<Response<Body>, ApiError> {
    let body = req.json_value(state).await?;
    let mut errors = Vec::new();
    let r = request(&body, &mut errors);
    let name = text(&body, "definition", &mut errors);
    ApiError::check("invalid operation", errors)?;
    let op = match kind {
        Kind::Pause => Operation::Pause,
        _ => Operation::Resume,
    };
    let out = state
        .engine
        .operate_definition(&name, op, &r)
        .await
        .map_err(refused)?;
    tracing::info!(definition = %name, applied = out.applied.len(), refused = out.refused.len(),
        operator = %r.operator, dry_run = r.dry_run, "operator operation on a definition");
    let refused: Vec<Value> = out
        .refused
        .iter()
        .map(|(id, why)| json!({ "saga_id": id, "reason": why }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "definition": name, "dry_run": r.dry_run, "applied": out.applied, "refused": refused }),
    ))
}
