//! Operator endpoints (the router has already checked the admin token):
//! list sagas by status, retry a stuck one, cancel a running one, read a
//! customer's payments, and the global fault switches (reading them is
//! public: they are the same for everyone and hold no customer data).

use crate::api::{json_response, ApiError, SagaSummary};
use crate::body::Body;
use crate::query::Params;
use crate::routes::{decode_value, Req};
use crate::saga_pages::PageQuery;
use crate::state::AppState;
use booking_domain::booking_saga::FieldError;
use booking_domain::faults::{BookingStep, Fault};
use hyper::{Response, StatusCode};
use saga_engine::{SagaId, SagaStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Default and largest number of sagas or payments listed.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(crate) fn limit(p: &mut Params) -> usize {
    let n: usize = p.optional("limit", "a number").unwrap_or(DEFAULT_LIMIT);
    if n == 0 || n > MAX_LIMIT {
        p.error("limit", format!("must be 1 to {MAX_LIMIT}"));
    }
    n.clamp(1, MAX_LIMIT)
}

/// `GET /api/admin/sagas?status=&definition=&older_than=&newer_than=&attr=&overdue=&cursor=&limit=`:
/// a page of sagas, newest first (see [`crate::saga_pages`]); `attr=name:value`
/// filters by a search attribute; `overdue=true` lists only overdue sagas
/// (from the store's overdue index); `next_cursor` fetches the next page.
pub async fn sagas(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    if req.query.is_blank("status") {
        p.error("status", "must not be empty (leave it out, or say all)");
    }
    let status = match req.query.get("status") {
        None | Some("all") => None,
        Some(s) => match SagaStatus::parse(s) {
            Some(st) => Some(st),
            None => {
                p.error(
                    "status",
                    "expected running, compensating, completed, compensated, stuck or paused",
                );
                None
            }
        },
    };
    let limit = limit(&mut p);
    let definition = req
        .query
        .get("definition")
        .map(str::trim)
        .filter(|d| !d.is_empty() && *d != "all")
        .map(str::to_string);
    let older_than: Option<u64> = p.optional("older_than", "a number of seconds");
    let newer_than: Option<u64> = p.optional("newer_than", "a number of seconds");
    let cursor = match req.query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match SagaId::parse(c) {
            Some(id) => Some(id),
            None => {
                p.error("cursor", "not a cursor from a previous page");
                None
            }
        },
    };
    let attribute = match req.query.get("attr") {
        None => None,
        Some(raw) => crate::saga_pages::attribute(raw, ':')
            .map_err(|e| p.error("attr", e))
            .ok(),
    };
    let overdue = match req.query.get("overdue") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            p.error("overdue", "expected true or false");
            false
        }
    };
    ApiError::check("invalid saga query", p.errors)?;
    let now = crate::overview::now_ms();
    let secs = |s: u64| s.saturating_mul(1000);
    let filtered = status.is_some()
        || definition.is_some()
        || older_than.is_some()
        || newer_than.is_some()
        || attribute.is_some()
        || overdue;
    let q = PageQuery {
        status,
        definition,
        created_before_ms: older_than.map(|s| now.saturating_sub(secs(s))),
        created_after_ms: newer_than.map(|s| now.saturating_sub(secs(s))),
        attribute,
        overdue,
        cursor,
        limit,
    };
    let page = crate::saga_pages::page(&*state.engine.store(), &q)
        .await
        .map_err(saga_engine::Error::from)?;
    let sagas: Vec<SagaSummary> = page.sagas.iter().map(SagaSummary::from).collect();
    // The total is known without a scan only when nothing is filtered.
    let total = if filtered {
        None
    } else {
        match state.engine.store().saga_count() {
            Some(n) => Some(n),
            None => Some(
                crate::saga_pages::total(&*state.engine.store())
                    .await
                    .map_err(saga_engine::Error::from)?,
            ),
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "sagas": sagas,
            "total": total,
            "next_cursor": page.next_cursor,
            "scanned": page.scanned,
            "partial": page.partial,
            "unregistered": state.engine.unregistered(),
        }),
    ))
}

pub(crate) fn saga_id(raw: &str) -> Result<SagaId, ApiError> {
    SagaId::parse(raw).ok_or_else(|| ApiError::NotFound(format!("saga {raw:?} not found")))
}

#[derive(Debug, Default, Deserialize)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/admin/sagas/{id}/cancel` (optional body `{"reason"}`):
/// asks a running saga to stop and compensate.
pub async fn cancel(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let id = saga_id(req.param(0))?;
    let value = req.json_value(state).await?;
    let body: CancelBody = if value.is_null() {
        CancelBody::default()
    } else {
        decode_value(value)?
    };
    let reason = body
        .reason
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "cancelled by an operator".into());
    state.engine.cancel(&id, &reason).await?;
    tracing::info!(saga_id = %id, %reason, "operator cancel");
    let rec = state.engine.status(&id).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "id": id, "status": rec.status() }),
    ))
}

/// `GET /api/admin/payments?email=&limit=`: one customer's payments, or
/// everyone's without `email`; newest first.
pub async fn payments(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let limit = limit(&mut p);
    ApiError::check("invalid payments query", p.errors)?;
    let payments = &state.services.payments;
    let mut list = match req.query.get("email") {
        Some(email) => payments.history(email).await?,
        None => payments.all_payments().await?,
    };
    list.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    let total = list.len();
    list.truncate(limit);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "payments": list, "total": total }),
    ))
}

/// `GET /api/faults`: every step's global switch.
pub fn get_faults(state: &AppState) -> Response<Body> {
    json_response(StatusCode::OK, &state.services.faults.get_all())
}

/// `PUT /api/faults`: replaces the global switches with the body's
/// (`{"step": {"mode": ...}}`; steps left out are switched off). Every
/// switch is checked before any is applied.
pub async fn put_faults(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let value = req.json_value(state).await?;
    let Value::Object(obj) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object of step name to fault".into(),
        ));
    };
    let mut faults = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, v) in obj {
        let step: BookingStep = match name.parse() {
            Ok(s) => s,
            Err(message) => {
                errors.push(FieldError {
                    field: name,
                    message,
                });
                continue;
            }
        };
        match serde_json::from_value::<Fault>(v)
            .map_err(|e| e.to_string())
            .and_then(|f| f.validate().map(|()| f))
        {
            Ok(f) => {
                faults.insert(step, f);
            }
            Err(message) => errors.push(FieldError {
                field: name,
                message,
            }),
        }
    }
    ApiError::check("invalid fault switches", errors)?;
    state
        .services
        .faults
        .set_all(&faults)
        .map_err(|e| ApiError::field("faults", e))?;
    tracing::warn!(?faults, "global fault switches changed");
    Ok(get_faults(state))
}
