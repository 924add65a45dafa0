//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI
//! document.

use crate::api::{bytes_response, json_response, ApiError};
use crate::body::Body;
use crate::state::AppState;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::json;

/// `GET /healthz`: the process answers.
pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz`: `200` while the engine is open and the server is not
/// shutting down, `503` after.
pub fn readyz(state: &AppState) -> Response<Body> {
    if state.is_stopping() {
        ApiError::Unavailable("shutting down".into()).into_response()
    } else {
        json_response(
            StatusCode::OK,
            &json!({ "status": "ready", "running_sagas": state.engine.running_count() }),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: &AppState) -> Response<Body> {
    // The payments participant's vault (remote in services mode); -1 when
    // it cannot be asked now.
    let cards_held = match state.services.payments.cards_held().await {
        Ok(n) => n as i64,
        Err(_) => -1,
    };
    bytes_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(format!(
            "{}# HELP http_connections_open Connections open now.\n# TYPE http_connections_open gauge\nhttp_connections_open {}\n# HELP http_connections_refused_total Connections refused over a cap.\n# TYPE http_connections_refused_total counter\nhttp_connections_refused_total {}\n# HELP sse_streams_open Event streams open now.\n# TYPE sse_streams_open gauge\nsse_streams_open {}\n# HELP cards_held Tokenized cards the payments participant holds (sealed), waiting for their authorization.\n# TYPE cards_held gauge\ncards_held {}\n",
            state.metrics.render(state.engine.running_count()),
            state.connections.open(),
            state.connections.refused(),
            state.streams.open(),
            cards_held,
        )),
    )
}

/// `GET /api/openapi.json`.
pub fn openapi() -> Response<Body> {
    json_response(StatusCode::OK, crate::openapi::document())
}
