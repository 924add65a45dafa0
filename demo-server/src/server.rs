//! The accept loop: one task per connection, HTTP/1.1 with keep-alive, a
//! deadline on request headers, and graceful shutdown.
//!
//! Shutdown, once the `shutdown` future completes: stop accepting (the
//! listener is dropped), mark the state as stopping (readiness fails, event
//! streams end), ask every connection to finish the request under way and
//! close, and let the engine finish the saga steps under way; both for up
//! to the configured grace period, after which what is left is aborted.
//! Unfinished sagas stay in the store and resume at the next start.

use crate::api::ApiError;
use crate::routes;
use crate::state::AppState;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Serves `state` on `listener` until `shutdown` completes, then shuts
/// down gracefully (see the module documentation) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr().ok(), "serving");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(state.clone(), stream, peer, stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        open_connections = connections.len(),
        running_sagas = state.engine.running_count(),
        "shutting down"
    );
    state.begin_shutdown();
    let _ = stop_tx.send(true);
    let grace = state.config.shutdown_grace;
    let drain = async {
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the grace period; closing them"
            );
            connections.abort_all();
        }
    };
    tokio::join!(drain, state.engine.shutdown(grace));
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

async fn connection(
    state: Arc<AppState>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let header_timeout = state.config.header_read_timeout;
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
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
