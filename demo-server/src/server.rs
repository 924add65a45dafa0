//! The main server: the shared accept loop ([`crate::connections`]) with
//! the router behind it, and graceful shutdown.
//!
//! Shutdown, once the `shutdown` future completes: stop accepting (the
//! listener is dropped), mark the state as stopping (readiness fails, event
//! streams end), ask every connection to finish the request under way and
//! close, and let the engine finish the saga steps under way; both for up
//! to the configured grace period, after which what is left is aborted.
//! Unfinished sagas stay in the store and resume at the next start.

use crate::api::ApiError;
use crate::connections::accept_loop;
use crate::routes;
use crate::state::AppState;
use hyper::body::Incoming;
use hyper::Request;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// Serves `state` on `listener` until `shutdown` completes, then shuts
/// down gracefully (see the module documentation) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving");
    let handler = {
        let state = state.clone();
        move |req: Request<Incoming>| respond(state.clone(), req)
    };
    let connections = accept_loop(
        listener,
        state.config.conn_limits(),
        state.connections.clone(),
        handler,
        shutdown,
    )
    .await;
    tracing::info!(
        open_connections = connections.len(),
        running_sagas = state.engine.running_count(),
        "shutting down"
    );
    state.begin_shutdown();
    let grace = state.config.shutdown_grace;
    tokio::join!(connections.drain(grace), state.engine.shutdown(grace));
    // A blocking flush off the runtime: sled 0.34's flush_async can
    // deadlock its own IO pool.
    let db = state.db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
        Err(e) => tracing::error!(error = %e, "final flush did not run"),
    }
    tracing::info!("stopped");
}

/// Runs the router in its own task, so that a panic in a handler becomes a
/// `500` instead of a dropped connection, and counts the response.
async fn respond(state: Arc<AppState>, req: Request<Incoming>) -> hyper::Response<crate::Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match tokio::spawn(routes::dispatch(state.clone(), req)).await {
        Ok(resp) => resp,
        Err(e) => {
            ApiError::Internal(format!("handler for {method} {path} failed: {e}")).into_response()
        }
    };
    let mut resp = resp;
    resp.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    state.metrics.record_response(resp.status().as_u16());
    tracing::debug!(%method, %path, status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}
