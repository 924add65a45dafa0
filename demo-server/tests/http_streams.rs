//! The event streams over real loopback sockets: one saga's history then
//! its live events without gaps, keep-alives and many readers agreeing, and
//! the all-sagas stream for an admin.

#[path = "http_api_support/mod.rs"]
mod support;
use support::*;

#[tokio::test]
async fn the_event_stream_replays_history_then_follows_live_without_gaps() {
    let s = TestServer::start().await;
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book(
            "sse-1",
            &booking_body(
                &flight,
                &date,
                json!({"authorize_payment": {"mode": "delay", "ms": 400}, "award_miles": {"mode": "transient", "times": 2}}),
            ),
        )
        .await;
    let path = format!("/api/sagas/{id}/events");
    // Connect while the saga is running: part history, part live.
    let (status, events, _) = s.events(&path, None).await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(events.iter().all(|e| e["saga_id"] == id.as_str()));
    assert_eq!(events[0]["event"], "saga_started");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "saga_finished");
    assert_eq!(last["status"], "completed");
    let failures = events
        .iter()
        .filter(|e| e["event"] == "step_failed" && e["step"] == "award_miles")
        .count();
    assert_eq!(failures, 2, "the retries are visible");

    // After the end: the whole history again, then the stream ends.
    let (_, again, _) = s.events(&path, None).await;
    assert_eq!(again, events);
    // Resuming from the middle sends only what follows.
    let (_, rest, _) = s.events(&path, Some(5)).await;
    assert_eq!(rest, events[6..].to_vec());
    // Resuming after the end: 204 tells EventSource to stop.
    let (status, none, _) = s.events(&path, Some(seqs.len() as u64 - 1)).await;
    assert_eq!((status, none.len()), (StatusCode::NO_CONTENT, 0));

    let r = s
        .get("/api/sagas/0000000000000000000000000000/events")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn event_streams_send_keep_alives_and_many_readers_agree() {
    let config = ServerConfig {
        sse_keepalive: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let s = Arc::new(TestServer::start_with(config).await);
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book(
            "sse-ka",
            &booking_body(
                &flight,
                &date,
                json!({"reserve_seat": {"mode": "delay", "ms": 500}}),
            ),
        )
        .await;
    let path = format!("/api/sagas/{id}/events");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let path = path.clone();
            tokio::spawn(async move { s.events(&path, None).await })
        })
        .collect();
    let mut all = Vec::new();
    for r in readers {
        let (status, events, comments) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(comments.iter().any(|c| c == "keep-alive"), "{comments:?}");
        all.push(events);
    }
    assert!(
        all.windows(2).all(|w| w[0] == w[1]),
        "every reader sees the same events"
    );
    assert_eq!(all[0].last().unwrap()["event"], "saga_finished");

    // The all-sagas stream is for operators only.
    let r = s.get("/api/events").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let s = Arc::try_unwrap(s).ok().expect("one owner");
    s.stop().await;
}

#[tokio::test]
async fn the_all_sagas_stream_shows_live_events_to_an_admin() {
    let s = TestServer::start().await;
    let req = Request::builder()
        .uri(s.url("/api/events"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (flight, date) = s.find_flight(0).await;
    let id = s
        .book("all-1", &booking_body(&flight, &date, json!({})))
        .await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("\"saga_finished\"") {
        assert!(Instant::now() < deadline, "no saga_finished in {text}");
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    assert!(text.contains(&id));
    assert!(text.contains("event: step_succeeded"));
    drop(body);
    s.stop().await;
}
