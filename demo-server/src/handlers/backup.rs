//! `POST /api/admin/backup`: a snapshot of the whole database taken inside
//! the server under the write barrier ([`crate::backup`]), answered as the
//! backup file (`application/octet-stream`), with its counts in headers.

use crate::api::{bytes_response, ApiError};
use crate::backup::{snapshot, BackupError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::{Response, StatusCode};

/// `POST /api/admin/backup`. The request body means nothing, but it is
/// read (within the usual limit) before the snapshot: a body left unread
/// makes the connection close under the client while it still writes, and
/// the client sees a reset instead of its backup (found by the hostile fuzz).
pub async fn backup(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    req.bytes(state).await?;
    let (file, header) = snapshot(state).await.map_err(|e| match e {
        BackupError::Io(m) if m.contains("shared store") => ApiError::Conflict(m),
        other => ApiError::Internal(other.to_string()),
    })?;
    tracing::info!(
        trees = header.trees,
        records = header.records,
        bytes = file.len(),
        "backup taken"
    );
    let mut resp = bytes_response(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::from(file),
    );
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-backup-trees", header.trees.to_string()),
        ("x-backup-records", header.records.to_string()),
        (
            CONTENT_DISPOSITION.as_str(),
            format!(
                "attachment; filename=\"skysaga-{}.backup\"",
                header.created_at.format("%Y%m%dT%H%M%SZ")
            ),
        ),
    ] {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    }
    Ok(resp)
}
