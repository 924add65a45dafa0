//! `demo-server backup --out FILE` and `demo-server restore --from FILE
//! --data-dir DIR`: the backup asks the running server for a snapshot
//! (`POST /api/admin/backup`, admin token from `DEMO_ADMIN_TOKEN` or the
//! data directory's file), checks it whole and writes it through a
//! temporary file, so `FILE` is either the old file or the whole new one;
//! the restore needs no server.

use super::{decode, restore, BackupError, Header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// How long the server may take to answer with the snapshot.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Fetches a snapshot from the server at `server` (`http://HOST:PORT`) and
/// writes it to `out`. Returns its header.
pub async fn backup(
    server: &str,
    token: Option<String>,
    out: &Path,
) -> Result<Header, BackupError> {
    let base = server.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(BackupError::Io(format!(
            "--server {base:?}: expected http://HOST:PORT"
        )));
    }
    let url = format!("{base}/api/admin/backup");
    let mut req = Request::builder().method(Method::POST).uri(&url);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| BackupError::Io(format!("bad request to {url}: {e}")))?;
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(TIMEOUT, http.request(req))
        .await
        .map_err(|_| BackupError::Io(format!("{url}: no answer within {TIMEOUT:?}")))?
        .map_err(|e| BackupError::Io(format!("{url}: {e} (is the server running?)")))?;
    let status = resp.status();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| BackupError::Io(format!("{url}: the answer stalled")))?
        .map_err(|e| BackupError::Io(format!("{url}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let hint = if status == hyper::StatusCode::UNAUTHORIZED {
            " (set DEMO_ADMIN_TOKEN or --data-dir to the server's)"
        } else {
            ""
        };
        return Err(BackupError::Io(format!("{url}: {status}: {msg}{hint}")));
    }
    let (header, _) = decode(&body, &url)?;
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, &body)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| BackupError::Io(format!("writing {}: {e}", out.display())))?;
    Ok(header)
}

/// Restores the backup at `from` into the new or empty `data_dir`.
pub fn restore_file(from: &Path, data_dir: &Path) -> Result<Header, BackupError> {
    let file = std::fs::read(from)
        .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", from.display())))?;
    restore(&file, &from.display().to_string(), data_dir)
}
