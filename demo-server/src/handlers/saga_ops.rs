//! Operator endpoints for reading and keeping sagas (the router has
//! already checked the admin token): one saga's record and history, the
//! live overview of the admin page, and a retention pass on demand with a
//! dry-run preview. What changes a saga (retry, cancel) is in `admin`.

use super::admin::saga_id;
use crate::api::{json_response, ApiError, SagaSummary};
use crate::body::Body;
use crate::routes::{decode_value, Req};
use crate::state::AppState;
use hyper::{Response, StatusCode};
use saga_engine::Retention;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// Stuck (and, apart, overdue) sagas listed first on the overview, at most.
const STUCK_SHOWN: usize = 20;
/// Finished sagas counted at most by a purge preview.
const PREVIEW_MAX: usize = 100_000;

/// `GET /api/admin/sagas/{id}`: the saga's summary, its data and its
/// idempotency key.
pub async fn show(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let id = saga_id(req.param(0))?;
    let rec = state.engine.status(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "saga": SagaSummary::from(&rec),
            "idempotency_key": rec.idempotency_key,
            "revision": rec.revision,
            "data": rec.data,
            "paused": rec.state.paused,
            "operations": rec.state.operations,
            "rerun_of": rec.state.rerun_of,
            "reruns": rec.state.reruns,
        }),
    ))
}

/// `GET /api/admin/sagas/{id}/history`: every event of the saga, in order.
pub async fn history(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let id = saga_id(req.param(0))?;
    let events = state.engine.history(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": id, "events": events }),
    ))
}

/// `GET /api/admin/overview`: counts by status, the stuck and the overdue
/// sagas, and
/// sagas started/completed/compensated per bucket over the last minutes.
///
/// The counts come from the store's counters (see [`crate::overview`]).
pub async fn overview(state: &AppState) -> Result<Response<Body>, ApiError> {
    let summary = crate::overview::status_summary(&*state.engine.store(), STUCK_SHOWN)
        .await
        .map_err(saga_engine::Error::from)?;
    let stuck: Vec<SagaSummary> = summary.stuck.iter().map(SagaSummary::from).collect();
    let overdue: Vec<SagaSummary> = summary.overdue.iter().map(SagaSummary::from).collect();
    let counts = summary.counts;
    let now = crate::overview::now_ms();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "counts": counts,
            "stuck": stuck,
            "overdue": overdue,
            "rates": {
                "bucket_secs": crate::overview::BUCKET_SECS,
                "buckets": state.saga_rates.snapshot(now),
            },
            "retention_days": state.retention.as_ref().map(|r| r.sagas.as_secs() / 86_400),
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// Count what would go, purge nothing.
    #[serde(default)]
    dry_run: bool,
    /// Use this window (seconds) instead of the server's `--retention`.
    #[serde(default)]
    older_than_secs: Option<u64>,
}

/// `POST /api/admin/purge` (body `{"dry_run", "older_than_secs"}`, both
/// optional): runs a retention pass now (finished sagas past the window go,
/// stuck and running ones never), or with `dry_run` counts what would go.
pub async fn purge(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let value = req.json_value(state).await?;
    let body: PurgeBody = if value.is_null() {
        PurgeBody::default()
    } else {
        decode_value(value)?
    };
    let policy = match (body.older_than_secs, &state.retention) {
        (Some(0), _) => {
            return Err(ApiError::field(
                "older_than_secs",
                "must be at least 1 (0 would purge every finished saga)",
            ))
        }
        (Some(s), _) => Retention::new(Duration::from_secs(s)),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(ApiError::field(
                "older_than_secs",
                "retention is off on this server (--retention 0): give older_than_secs",
            ))
        }
    };
    let secs = policy.sagas.as_secs();
    let cutoff = crate::overview::now_ms().saturating_sub(policy.sagas.as_millis() as u64);
    if body.dry_run {
        let would = state
            .engine
            .store()
            .finished_before(cutoff, PREVIEW_MAX)
            .await
            .map_err(saga_engine::Error::from)?
            .len();
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "dry_run": true,
                "would_purge": would,
                "at_least": would >= PREVIEW_MAX,
                "older_than_secs": secs,
                "finished_before_ms": cutoff,
            }),
        ));
    }
    let report = state.engine.purge_finished(Some(&policy)).await?;
    tracing::warn!(
        purged = report.purged,
        keys_forgotten = report.keys_forgotten,
        older_than_secs = secs,
        "operator purge"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "dry_run": false,
            "purged": report.purged,
            "keys_forgotten": report.keys_forgotten,
            "older_than_secs": secs,
            "finished_before_ms": cutoff,
        }),
    ))
}
