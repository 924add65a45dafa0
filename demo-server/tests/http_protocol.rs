//! The HTTP protocol over real loopback sockets, apart from what any
//! endpoint means: malformed requests of every kind get a JSON 4xx and
//! never a 5xx, bodies over 64 KiB are refused while they are read, and
//! slow clients are cut off. The endpoints: `http_api.rs`.

#[path = "http_api_support/mod.rs"]
mod support;
use support::*;

/// Method, path, headers, body, expected status.
type Case<'a> = (
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<Vec<u8>>,
    StatusCode,
);

#[tokio::test]
async fn malformed_requests_get_json_errors_and_never_a_5xx() {
    let s = TestServer::start().await;
    let key = [
        ("idempotency-key", "k"),
        ("content-type", "application/json"),
    ];
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/api/bookings",
            key.to_vec(),
            Some(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/bookings",
            key.to_vec(),
            Some(b"[1,2]".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/bookings",
            key.to_vec(),
            Some(b"".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/bookings",
            key.to_vec(),
            Some(vec![0xff, 0xfe]),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/bookings",
            vec![("idempotency-key", "k"), ("content-type", "text/plain")],
            Some(b"{}".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/api/bookings",
            key.to_vec(),
            Some(b"{}".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/api/bookings",
            vec![],
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/api/bookings/abc",
            vec![],
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/api/does-not-exist",
            vec![],
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/sagas/%00/events",
            vec![],
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/loyalty/12345678",
            vec![],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/api/admin/sagas",
            vec![],
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/admin/sagas",
            vec![("authorization", "Bearer wrong")],
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/admin/sagas",
            vec![("authorization", TOKEN)],
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/flights/search?from=%ZZ&to=%&date=%%",
            vec![],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, path, headers, body, expected) in cases {
        let r = s.send(method.clone(), path, &headers, body).await;
        assert_eq!(r.status, expected, "{method} {path}: {}", r.text);
        assert_error_body(&r);
    }
    let r = s.send(Method::PATCH, "/api/faults", &[], None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, PUT, HEAD");
    let r = s.send(Method::POST, "/healthz", &[], None).await;
    assert_eq!(r.headers["allow"], "GET, HEAD");
    let r = s.get("/api/admin/sagas").await;
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let r = s.send(Method::HEAD, "/healthz", &[], None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, ""));
    let r = s.send(Method::OPTIONS, "/api/faults", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["allow"], "GET, PUT, HEAD");
    let metrics = s.get("/metrics").await;
    assert!(
        !metrics.text.contains("code=\"5"),
        "no 5xx: {}",
        metrics.text
    );
    s.stop().await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_while_reading() {
    let s = TestServer::start().await;
    // Declared too large: refused before the body is read.
    let head = format!(
        "POST /api/bookings HTTP/1.1\r\nHost: x\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    let reply = raw(s.addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("{\"error\":"), "{reply}");

    // Chunked, no length given: refused once the limit is crossed.
    let mut req = b"POST /api/bookings HTTP/1.1\r\nHost: x\r\nIdempotency-Key: big2\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(s.addr, &req, Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // Through the client too, with a body just over the limit.
    let mut big = b"{\"x\":\"".to_vec();
    big.extend(vec![b'a'; 64 * 1024]);
    big.extend_from_slice(b"\"}");
    let r = s
        .send(
            Method::PUT,
            "/api/faults",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            Some(big),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_body(&r);
    s.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(config).await;
    // Headers that never end: the connection is closed.
    let started = Instant::now();
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("the server closes a connection whose headers never end");
    assert!(n.is_err() || !String::from_utf8_lossy(&buf).contains("200 OK"));
    assert!(started.elapsed() < Duration::from_secs(4));

    // A body that never arrives: 408.
    let reply = raw(
        s.addr,
        b"PUT /api/faults HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nAuthorization: Bearer test-admin-token-0123456789abcdef\r\n\r\n{\"a\"",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // The server still serves others.
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.stop().await;
}
