//! `demo-server backup --out FILE` and `demo-server restore --from FILE
//! --data-dir DIR`: the backup asks the running server for a snapshot
//! (`POST /api/admin/backup`, admin token from `DEMO_ADMIN_TOKEN` or the
//! data directory's file), checks it whole and writes it through a
//! temporary file, so `FILE` is either the old file or the whole new one;
//! the restore needs no server. [`admin_post`] also carries `demo-server
//! import --server`'s schedule to a running server.

use super::{decode, restore, BackupError, Header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// How long the server may take to answer with the snapshot.
const TIMEOUT: Duration = Duration::from_secs(300);

/// `POST {server}{path}` with the admin token and `body` (JSON when
/// given): the answer's bytes, or an error naming what to do. Shared by
/// `demo-server backup` and `demo-server import --server`.
pub async fn admin_post(
    server: &str,
    token: Option<String>,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, BackupError> {
    let base = server.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(BackupError::Io(format!(
            "--server {base:?}: expected http://HOST:PORT"
        )));
    }
    let url = format!("{base}{path}");
    let mut req = Request::builder().method(Method::POST).uri(&url);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
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
            .map(|v| {
                let mut m = v["error"].as_str().unwrap_or_default().to_string();
                for f in v["fields"].as_array().into_iter().flatten() {
                    m.push_str(&format!(
                        "; {}: {}",
                        f["field"].as_str().unwrap_or(""),
                        f["message"].as_str().unwrap_or("")
                    ));
                }
                m
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let hint = if status == hyper::StatusCode::UNAUTHORIZED {
            " (set DEMO_ADMIN_TOKEN or --data-dir to the server's)"
        } else {
            ""
        };
        return Err(BackupError::Io(format!("{url}: {status}: {msg}{hint}")));
    }
    Ok(body)
}

/// Fetches a snapshot from the server at `server` (`http://HOST:PORT`) and
/// writes it to `out`. Returns its header.
pub async fn backup(
    server: &str,
    token: Option<String>,
    out: &Path,
) -> Result<Header, BackupError> {
    let body = admin_post(server, token, "/api/admin/backup", None).await?;
    let (header, _) = decode(&body, server)?;
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
