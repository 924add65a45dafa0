//! The mailbox (`GET /api/admin/mailbox`, admin): the booking saga's
//! outbox as a demo shows it, the newest messages first. Each is the
//! itinerary the retriable `send_itinerary` step queued after the pivot.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::query::Params;
use crate::routes::Req;
use crate::state::AppState;
use hyper::{Response, StatusCode};
use serde_json::json;

/// Most messages one answer lists.
pub const MAX_LIMIT: usize = 500;

/// `GET /api/admin/mailbox?limit=`: the newest queued messages.
pub fn list(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let limit: usize = p
        .optional("limit", &format!("a number from 1 to {MAX_LIMIT}"))
        .unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        p.error("limit", format!("must be from 1 to {MAX_LIMIT}"));
    }
    ApiError::check("invalid mailbox query", p.errors)?;
    let outbox = &state.services.outbox;
    let messages = outbox
        .recent(limit)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "messages": messages, "total": outbox.len() }),
    ))
}
