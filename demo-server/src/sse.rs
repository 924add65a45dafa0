//! Server-sent events: a saga's progress, live.
//!
//! `GET /api/sagas/{id}/events` replays the saga's history from the store,
//! then forwards the engine's live events for that saga, and ends after the
//! `saga_finished` event. It subscribes to the saga's live events (through
//! [`crate::sse_hub`], which wakes a stream for its own saga's events only)
//! *before* reading the history, so an event is either in the history read
//! or arrives live (or both); events are sent strictly in `seq` order, each once: one already
//! sent is skipped, and a gap (the subscriber fell behind the broadcast
//! buffer) is filled from the store. Each event carries its `seq` as the SSE
//! `id`, so a browser that reconnects with `Last-Event-ID` resumes after the
//! last event it saw; one that reconnects after the end gets `204`, which
//! tells `EventSource` to stop.
//!
//! A booking's stream shows error texts as [`crate::public_text`] makes
//! them (no internal URLs, paths or storage errors); `GET /api/events`
//! (admin) forwards every saga's events live, with the full texts.
//!
//! Both send a comment every keep-alive interval (15 s by default) so that
//! proxies and clients keep the connection open, and end when the server
//! begins to shut down or after the maximum stream lifetime (30 min by
//! default; a browser reconnects and resumes). Streams are capped in all,
//! per client address and per saga ([`crate::limits`]): over a cap, `429`
//! with `Retry-After`. A `Last-Event-ID` beyond the history (even
//! `u64::MAX`) resumes after the last event there is. Each stream is a task writing into a small channel;
//! when the client goes away the channel closes and the task ends.

use crate::api::ApiError;
use crate::body::Body;
use crate::limits::StreamSlot;
use crate::routes::Req;
use crate::sse_hub::{Live, Subscription};
use crate::state::AppState;
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use saga_engine::{SagaEvent, SagaId};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

/// Chunks buffered per stream before the writer waits for the client.
const STREAM_BUFFER: usize = 64;
/// How long a browser waits before reconnecting, in milliseconds.
const RETRY_MS: u64 = 2000;

/// One event in the SSE wire format: `id` (the seq, when `with_id`),
/// `event` (its kind) and `data` (the event as JSON, on one line).
pub fn frame(event: &SagaEvent, with_id: bool) -> Bytes {
    let json = serde_json::to_value(event).unwrap_or_default();
    let kind = json
        .get("event")
        .and_then(|k| k.as_str())
        .unwrap_or("message");
    let mut out = String::with_capacity(256);
    if with_id {
        out.push_str(&format!("id: {}\n", event.seq));
    }
    out.push_str(&format!("event: {kind}\ndata: {json}\n\n"));
    Bytes::from(out)
}

fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::Stream(rx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `GET /api/sagas/{id}/events`.
pub async fn saga_events(state: &Arc<AppState>, req: &Req) -> Result<Response<Body>, ApiError> {
    let raw = req.param(0);
    let id =
        SagaId::parse(raw).ok_or_else(|| ApiError::NotFound(format!("saga {raw:?} not found")))?;
    let last_seen: Option<u64> = req.header("last-event-id").and_then(|v| v.parse().ok());
    // Subscribe first: whatever is persisted after the history read below
    // is published after this point, so it arrives on `live`.
    let live = state.saga_events.subscribe(&id);
    let history = state.engine.history(&id).await?;
    if let (Some(last), Some(end)) = (last_seen, history.last()) {
        if end.is_terminal() && last >= end.seq {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return Ok(resp);
        }
    }
    let slot = state
        .streams
        .acquire(req.client, Some(id.as_str()))
        .inspect_err(|_| state.metrics.record_limited())?;
    // A `Last-Event-ID` beyond the history (up to `u64::MAX`) resumes after
    // the last event there is, so the stream still ends with the saga.
    let end = history.last().map_or(0, |e| e.seq.saturating_add(1));
    let next = last_seen.map_or(0, |l| l.saturating_add(1).min(end));
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let stream = SagaStream {
        state: state.clone(),
        id,
        next,
        tx,
        _slot: slot,
    };
    tokio::spawn(stream.run(history, live));
    Ok(sse_response(rx))
}

/// The writer of one saga's event stream.
struct SagaStream {
    state: Arc<AppState>,
    id: SagaId,
    /// The seq of the next event to send.
    next: u64,
    tx: mpsc::Sender<Bytes>,
    /// This stream's place under the caps, given back when it ends.
    _slot: StreamSlot,
}

/// Why a stream stops.
enum Stop {
    /// The saga finished and its last event was sent.
    Finished,
    /// The client went away.
    Gone,
}

impl SagaStream {
    async fn send(&self, bytes: Bytes) -> Result<(), Stop> {
        self.tx.send(bytes).await.map_err(|_| Stop::Gone)
    }

    /// Sends the events of `events` not sent yet, in order; `Finished` when
    /// the last one sent ends the saga and nothing follows it.
    async fn send_new(&mut self, events: &[SagaEvent]) -> Result<(), Stop> {
        let mut finished = false;
        let start = self.next;
        for e in events.iter().filter(|e| e.seq >= start) {
            if e.seq != self.next {
                // A hole in what we were given: the store fills it.
                return self.fill_from_store().await;
            }
            self.send(frame(&crate::public_text::event(e), true))
                .await?;
            self.next = e.seq + 1;
            finished = e.is_terminal();
        }
        if finished {
            Err(Stop::Finished)
        } else {
            Ok(())
        }
    }

    /// Sends what the store has beyond what was sent.
    async fn fill_from_store(&mut self) -> Result<(), Stop> {
        let history = match self.state.engine.history(&self.id).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(saga_id = %self.id, error = %e, "event stream: history unreadable");
                return Err(Stop::Gone);
            }
        };
        let mut finished = false;
        let start = self.next;
        for e in history.iter().filter(|e| e.seq >= start) {
            self.send(frame(&crate::public_text::event(e), true))
                .await?;
            self.next = e.seq + 1;
            finished = e.is_terminal();
        }
        if finished {
            Err(Stop::Finished)
        } else {
            Ok(())
        }
    }

    async fn run(mut self, history: Vec<SagaEvent>, mut live: Subscription) {
        let _ = self.stream(history, &mut live).await;
        tracing::debug!(saga_id = %self.id, next = self.next, "event stream closed");
    }

    async fn stream(
        &mut self,
        history: Vec<SagaEvent>,
        live: &mut Subscription,
    ) -> Result<(), Stop> {
        self.send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await?;
        self.send_new(&history).await?;
        let every = self.state.config.sse_keepalive;
        let mut keepalive = interval_at(Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping = self.state.stopping();
        let lifetime = tokio::time::sleep(self.state.config.max_stream_lifetime);
        tokio::pin!(lifetime);
        loop {
            tokio::select! {
                // The client reconnects with Last-Event-ID and resumes.
                () = &mut lifetime => return Err(Stop::Gone),
                r = live.recv() => match r {
                    Live::Event(e) => {
                        if e.seq == self.next {
                            self.send_new(std::slice::from_ref(&e)).await?;
                        } else if e.seq > self.next {
                            self.fill_from_store().await?;
                        }
                    }
                    Live::Missed => self.fill_from_store().await?,
                    Live::Closed => return Err(Stop::Gone),
                },
                _ = keepalive.tick() => self.send(Bytes::from_static(b": keep-alive\n\n")).await?,
                () = stopped(&mut stopping) => return Err(Stop::Gone),
                () = self.tx.closed() => return Err(Stop::Gone),
            }
        }
    }
}

/// Completes when shutdown begins (the guard `wait_for` returns is not
/// `Send`, so it is dropped here, not held in a `select!`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `GET /api/events` (admin): every saga's events from now on.
pub fn all_events(state: &Arc<AppState>, req: &Req) -> Result<Response<Body>, ApiError> {
    let slot = state
        .streams
        .acquire(req.client, None)
        .inspect_err(|_| state.metrics.record_limited())?;
    let lifetime = state.config.max_stream_lifetime;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let mut live = state.engine.subscribe();
    let every = state.config.sse_keepalive;
    let mut stopping = state.stopping();
    tokio::spawn(async move {
        let _slot = slot;
        let lifetime = tokio::time::sleep(lifetime);
        tokio::pin!(lifetime);
        if tx
            .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let mut keepalive = interval_at(Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let chunk = tokio::select! {
                r = live.recv() => match r {
                    Ok(e) => frame(&e, false),
                    Err(RecvError::Lagged(n)) => Bytes::from(format!(": missed {n} events\n\n")),
                    Err(RecvError::Closed) => break,
                },
                _ = keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                () = &mut lifetime => break,
                () = stopped(&mut stopping) => break,
                () = tx.closed() => break,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    Ok(sse_response(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_engine::EventKind;

    #[test]
    fn frames_follow_the_sse_format() {
        let e = SagaEvent {
            saga_id: SagaId::parse("s1").unwrap(),
            seq: 4,
            at_ms: 10,
            kind: EventKind::StepStarted {
                step: "reserve_seat".into(),
                attempt: 2,
            },
        };
        let text = String::from_utf8(frame(&e, true).to_vec()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("id: 4"));
        assert_eq!(lines.next(), Some("event: step_started"));
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["step"], "reserve_seat");
        assert_eq!(v["seq"], 4);
        assert!(text.ends_with("\n\n"));
        assert!(!String::from_utf8(frame(&e, false).to_vec())
            .unwrap()
            .contains("id:"));
    }
}
