//! `POST /api/admin/catalog/import`: imports a schedule into the running
//! server, no restart: `{currency, mode: "skip"|"reject", airports_csv?,
//! flights_csv: "..." | ["...", ...]}` in the CSV formats of `demo-server
//! import`. The rows go to a private copy of the catalog and the copy is
//! swapped in whole ([`booking_domain::live_catalog`]): a search during
//! the import sees the old catalog or the new one, never half of it. The
//! write to sled passes the backup barrier. Bodies up to
//! [`MAX_IMPORT_BYTES`].

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::FieldError;
use booking_domain::import::{Import, ImportMode};
use booking_domain::live_catalog::LiveImportError;
use booking_domain::types::Currency;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// The largest import body read.
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;

fn field(name: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: name.to_string(),
        message: message.into(),
    }
}

/// `POST /api/admin/catalog/import`.
pub async fn import(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let bytes = req.bytes_up_to(state, MAX_IMPORT_BYTES).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let mut errors = Vec::new();
    let currency = match body.get("currency").and_then(Value::as_str).map(str::trim) {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(Currency(c.to_ascii_uppercase()))
        }
        Some(_) => {
            errors.push(field("currency", "a three-letter ISO 4217 code"));
            None
        }
        None => {
            errors.push(field("currency", "is required"));
            None
        }
    };
    let mode = match body.get("mode").and_then(Value::as_str).unwrap_or("skip") {
        "skip" => ImportMode::Skip,
        "reject" => ImportMode::Reject,
        _ => {
            errors.push(field("mode", "skip or reject"));
            ImportMode::Skip
        }
    };
    let airports = match body.get("airports_csv") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(field("airports_csv", "must be a string"));
            None
        }
    };
    let flights: Vec<String> = match body.get("flights_csv") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            errors.push(field("flights_csv", "a string or an array of strings"));
            Vec::new()
        }
    };
    if airports.is_none() && flights.is_empty() {
        errors.push(field("flights_csv", "nothing to import"));
    }
    ApiError::check("invalid catalog import", errors)?;
    let Some(currency) = currency else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let _write = state.barrier.write().await;
    let live = state.services.catalog.clone();
    let db = state.db.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut import = Import::new(currency, mode);
        if let Some(a) = &airports {
            import = import.airports("airports_csv", a.as_bytes());
        }
        for (i, f) in flights.iter().enumerate() {
            import = import.flights(format!("flights_csv[{i}]"), f.as_bytes());
        }
        live.import(&db, import)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("import task: {e}")))?
    .map_err(|e| match e {
        LiveImportError::Import(e) => ApiError::Validation {
            message: format!("the schedule was not imported: {e}"),
            fields: vec![field("flights_csv", e.to_string())],
        },
        LiveImportError::NotPersistent => ApiError::Conflict(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    })?;
    let catalog = state.services.catalog.current();
    tracing::info!(
        imported = report.imported,
        skipped = report.skipped,
        "catalog imported while running"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "imported": report.imported, "airports": report.airports, "flights": report.flights,
            "replaced": report.replaced, "duplicates": report.duplicates, "skipped": report.skipped,
            "errors": report.errors.iter().take(100).map(|e| e.to_string()).collect::<Vec<_>>(),
            "catalog": { "airports": catalog.airport_count(), "flights": catalog.flight_count() },
        }),
    ))
}
