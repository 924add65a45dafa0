//! Bodies: the one response body type of the server (whole, or streamed for
//! server-sent events) and the reading of request bodies under a size limit
//! and a deadline.
//!
//! A request body is read through [`http_body_util::Limited`], so a client
//! that sends more than the limit is refused with `413` after at most the
//! limit has been buffered; a declared `Content-Length` over the limit is
//! refused before anything is read. A client that trickles its body is cut
//! off after the read deadline with `408`.

use crate::api::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A response body: a whole buffer, or chunks pushed by a task (SSE).
#[derive(Debug)]
pub enum Body {
    /// The whole body; `None` once sent.
    Full(Option<Bytes>),
    /// Chunks from a channel; the body ends when every sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// A body holding `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(bytes))
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// Reads a whole request body of at most `limit` bytes within `deadline`.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let declared = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::BadRequest("invalid Content-Length header".into()))?;
        if declared > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[test]
    fn full_bodies_report_their_size() {
        assert_eq!(Body::full("abc").size_hint().exact(), Some(3));
        assert!(Body::empty().is_end_stream());
        assert!(Body::full("").is_end_stream());
    }
}
