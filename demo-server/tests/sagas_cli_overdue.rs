//! Overdue sagas (past their deadline after the pivot, still going)
//! listed beside the stuck ones, from the store's overdue index: the
//! admin overview's `overdue`, `GET /api/admin/sagas?overdue=true`,
//! `demo-server sagas list --overdue` against a real server on loopback
//! and offline on its stopped directory; a bad `overdue` value is a 422
//! naming the field.

mod support;

#[path = "cli_support/mod.rs"]
mod cli;

use cli::*;
use saga_engine::machine::PauseMark;
use saga_engine::store::conformance::sample_record;
use saga_engine::{SagaStatus, Store};
use support::{local, request_from};

/// Writes four sagas of an unregistered definition (the server lists them
/// and runs none): overdue and running, overdue and paused, overdue and
/// completed, running on time.
async fn seed(data: &std::path::Path) {
    let path = data.join("db");
    std::fs::create_dir_all(&path).unwrap();
    let db = saga_engine::store::open_sled_db(&path).unwrap();
    let store = saga_engine::SledStore::with_db_at(db, &path).unwrap();
    for (i, name) in ["late-running", "late-paused", "late-done", "on-time"]
        .into_iter()
        .enumerate()
    {
        let mut r = sample_record(name, Some(name));
        r.created_at_ms = 1_000 + i as u64;
        store.create(&r, &[]).await.unwrap();
        r.revision += 1;
        r.state.overdue = name.starts_with("late");
        match name {
            "late-paused" => {
                r.state.paused = Some(PauseMark {
                    operator: "ops".into(),
                    reason: "look".into(),
                    at_ms: 5,
                })
            }
            "late-done" => r.state.status = SagaStatus::Completed,
            _ => {}
        }
        store.update(&r, &[]).await.unwrap();
    }
}

async fn admin_get(addr: std::net::SocketAddr, token: &str, path: &str) -> support::Raw {
    let bearer = format!("Bearer {token}");
    request_from(
        local(),
        addr,
        "GET",
        path,
        &[("authorization", bearer.as_str())],
        b"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_sagas_are_listed_beside_the_stuck_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data).await;
    let srv = spawn_server(data, &[]);
    let url = format!("http://{}", srv.addr);
    let token = std::fs::read_to_string(data.join("admin_token"))
        .unwrap()
        .trim()
        .to_string();
    let late = vec!["late-paused".to_string(), "late-running".to_string()];

    let o = admin_get(srv.addr, &token, "/api/admin/overview").await;
    assert_eq!(o.status, 200, "{}", o.text);
    let overdue: Vec<&str> = o.body["overdue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(overdue, late, "{}", o.text);
    assert_eq!(o.body["stuck"], serde_json::json!([]));

    let page = admin_get(srv.addr, &token, "/api/admin/sagas?overdue=true").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(ids(&page.body), late);
    let bad = admin_get(srv.addr, &token, "/api/admin/sagas?overdue=maybe").await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("overdue"), "{}", bad.text);

    let page = json_of(&sagas(data, &url, &["list", "--json", "--overdue"]));
    assert_eq!(ids(&page), late, "{page}");
    let page = json_of(&sagas(
        data,
        &url,
        &["list", "--json", "--overdue", "--status", "paused"],
    ));
    assert_eq!(ids(&page), vec!["late-paused".to_string()], "{page}");
    let table = ok(&sagas(data, &url, &["list", "--overdue"]));
    assert!(
        table.contains("late-running") && !table.contains("on-time"),
        "{table}"
    );

    stop(srv);
    let page = json_of(&sagas(data, NO_SERVER, &["list", "--json", "--overdue"]));
    assert_eq!(ids(&page), late, "offline: {page}");
}
