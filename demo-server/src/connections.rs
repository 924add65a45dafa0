//! The accept loop shared by the main server and the participant servers:
//! a cap on open connections (in all, and per client address), a deadline
//! on request headers, a write timeout for clients that stop reading, and
//! graceful shutdown.
//!
//! A connection over a cap is answered at once with `429 Too Many
//! Requests`, a `Retry-After` header and a JSON body, then closed, without
//! a task of the server's being tied to it; the connections already open,
//! and every other client address, keep being served. A connection whose
//! writes make no progress for the write timeout (a client that stopped
//! reading an event stream, say) is closed, which ends the stream's task.
//!
//! Each request carries the client's address as a [`ClientAddr`] extension,
//! for the per-client limits further in.

use crate::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The connection limits of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a write may make no progress before the connection closes.
    pub write_timeout: Duration,
    /// With a certificate: HTTPS only (the handshake is bounded by the
    /// header deadline).
    pub tls: Option<crate::tls::TlsServer>,
}

/// The address of the client that sent a request (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// Open connections, per client address and in all, and the count of
/// connections refused.
#[derive(Debug, Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    refused: AtomicU64,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnTracker {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused so far because a cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Takes a slot for a connection from `ip`, or `None` over a cap.
    fn acquire(self: &Arc<Self>, ip: IpAddr, limits: &ConnLimits) -> Option<ConnSlot> {
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.get(&ip).copied().unwrap_or(0);
        if mine >= limits.max_per_client || self.open() >= limits.max_connections {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        map.insert(ip, mine + 1);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnSlot {
            tracker: self.clone(),
            ip,
        })
    }
}

/// One open connection's place under the caps; given back on drop.
struct ConnSlot {
    tracker: Arc<ConnTracker>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self
            .tracker
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.tracker.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections a loop accepted, to drain at shutdown.
pub(crate) struct Connections {
    set: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Connections {
    /// Connections still open.
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Asks every connection to finish the request under way and close;
    /// waits up to `grace`, then aborts what is left.
    pub(crate) async fn drain(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = self.set.len(),
                "connections still open after the grace period; closing them"
            );
            self.set.abort_all();
        }
    }
}

/// Accepts connections on `listener` and serves each with `handler` until
/// `shutdown` completes; returns the open connections (the listener is
/// dropped, so nothing new is accepted).
pub(crate) async fn accept_loop<H, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    tracker: Arc<ConnTracker>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Connections
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (stop, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    tokio::pin!(shutdown);
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
                let Some(slot) = tracker.acquire(peer.ip(), &limits) else {
                    tracing::debug!(%peer, "connection refused: over the connection cap");
                    tokio::spawn(refuse(stream));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                set.spawn(connection(
                    stream,
                    peer,
                    slot,
                    limits.clone(),
                    handler.clone(),
                    stop_rx.clone(),
                ));
            }
            Some(_) = set.join_next(), if !set.is_empty() => {}
        }
    }
    drop(listener);
    Connections { set, stop }
}

/// Answers a connection over a cap with `429` and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = format!(
        r#"{{"error":"too many open connections from this address; retry after {RETRY_AFTER_SECS} s","code":"too_many_connections"}}"#
    );
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: {RETRY_AFTER_SECS}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, so that the close is
        // not a reset that could discard the answer on its side.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

async fn connection<H, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    limits: ConnLimits,
    handler: H,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let client = ClientAddr(peer.ip());
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(client);
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let io = TimedIo::new(stream, limits.write_timeout);
    match &limits.tls {
        None => serve_io(TokioIo::new(io), peer, &limits, service, stop).await,
        Some(tls) => {
            // The handshake gets the header deadline: a client that opens
            // a connection and says nothing is cut off as on plain HTTP.
            match tokio::time::timeout(limits.header_read_timeout, tls.0.accept(io)).await {
                Ok(Ok(stream)) => {
                    serve_io(TokioIo::new(stream), peer, &limits, service, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
    drop(slot);
}

/// Serves HTTP/1 on one connection until it ends or the server stops.
async fn serve_io<I, S>(
    io: I,
    peer: SocketAddr,
    limits: &ConnLimits,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service);
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

/// A stream whose writes fail with `TimedOut` once they have made no
/// progress for the timeout.
struct TimedIo<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        TimedIo {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a write-side poll: clears the timer on progress, arms it on
    /// `Pending`, and turns an expired timer into an error.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> ConnLimits {
        ConnLimits {
            max_connections: total,
            max_per_client: per_client,
            header_read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    #[test]
    fn slots_are_capped_per_client_and_in_all_and_given_back() {
        let t = Arc::new(ConnTracker::default());
        let l = limits(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = t.acquire(a, &l).unwrap();
        let _a2 = t.acquire(a, &l).unwrap();
        assert!(t.acquire(a, &l).is_none(), "per client");
        let _b1 = t.acquire(b, &l).unwrap();
        assert!(t.acquire(b, &l).is_none(), "in all");
        assert_eq!((t.open(), t.refused()), (3, 2));
        drop(a1);
        assert!(
            t.acquire(b, &l).is_some(),
            "a slot given back is free again"
        );
    }

    #[tokio::test]
    async fn a_write_that_makes_no_progress_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Duration::from_millis(100));
        let big = vec![b'x'; 1024];
        let e = io.write_all(&big).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(client);
    }
}
