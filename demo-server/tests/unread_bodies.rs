//! A handler that answers without reading its request body (a log out,
//! a refused token, an unknown path) must not cost the client its
//! connection: the router reads what is left of the body (within the usual
//! size limit and deadline) before the answer goes out, so a keep-alive
//! client that pipelines its next request gets both answers.
//!
//! Without that, hyper closes a connection whose request body was left
//! unread, and a client still writing its body sees a reset instead of the
//! answer (what the hostile fuzz once found on `POST /api/admin/backup`).

mod support;

use demo_server::{RemoteParticipants, ServerConfig};
use std::time::Duration;
use support::{Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until `n` complete HTTP replies (with `content-length` bodies)
/// have arrived or the server closes; returns the status of each.
async fn read_replies(s: &mut TcpStream, n: usize) -> Vec<u16> {
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    let mut at = 0;
    loop {
        // Parse what we have.
        while let Some(end) = find(&buf[at..], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[at..at + end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() < at + end + 4 + len {
                break;
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            statuses.push(status);
            at += end + 4 + len;
        }
        if statuses.len() >= n {
            return statuses;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("the server answers or closes within 30 s");
        match read {
            Ok(0) | Err(_) => return statuses,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `first` with a chunked body in two writes (the second written
/// only after the first chunk has gone out), then a pipelined `GET
/// /healthz`, and returns the statuses of the replies that arrived.
async fn pipelined(server: &Server, first: &str, auth: bool) -> Vec<u16> {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let auth = if auth {
        format!("authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "{first} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        server.addr
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(b"2\r\n{}\r\n").await.expect("first chunk");
    s.flush().await.expect("flush");
    // The rest of the body, then the next request on the same connection.
    let rest = format!(
        "0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        server.addr
    );
    // A reset here means the server closed on the unread body; the
    // replies read below then show it.
    let _ = s.write_all(rest.as_bytes()).await;
    read_replies(&mut s, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_does_not_cost_the_connection() {
    let server = Server::start(ServerConfig::default(), RemoteParticipants::default()).await;
    // A handler that ignores its body (log out without a session).
    let statuses = pipelined(&server, "DELETE /api/session", false).await;
    assert_eq!(statuses, [204, 200], "both replies arrive");
    // Refused before any handler runs: no token.
    let statuses = pipelined(&server, "POST /api/admin/sagas/nope/retry", false).await;
    assert_eq!(statuses, [401, 200]);
    // No such route.
    let statuses = pipelined(&server, "POST /api/no-such-route", false).await;
    assert_eq!(statuses, [404, 200]);
    server.stop().await;
}
