//! `demo-server sagas ...` as an operator runs it, against a real server
//! process on loopback: every subcommand (list with its filters and
//! cursor, show, history, retry, cancel, purge with its dry run, export),
//! `--json`, `--help`, the token taken from the data directory, a wrong
//! token refused; the operator operations (pause, resume, retry-now,
//! skip, cancel with its dry run, rerun, pause of a definition, and the
//! retry of a stuck saga); then reads of a stopped server's directory, and
//! the message when neither the server nor the directory can be reached.

mod support;

#[path = "cli_support/mod.rs"]
mod cli;

use cli::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{find_flight, local, request_from, wait_terminal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = spawn_server(&data, &[]);
    let url = format!("http://{}", srv.addr);
    let (flight, date) = find_flight(srv.addr).await;

    let done = book(srv.addr, &flight, &date, json!({})).await;
    assert_eq!(wait_terminal(srv.addr, &done).await["status"], "confirmed");
    let failed = book(
        srv.addr,
        &flight,
        &date,
        json!({"reserve_seat": {"mode": "reject"}}),
    )
    .await;
    wait_terminal(srv.addr, &failed).await;
    let slow = book(
        srv.addr,
        &flight,
        &date,
        json!({"award_miles": {"mode": "delay", "ms": 3000}}),
    )
    .await;

    // list: a table, newest first, the token read from the data directory.
    let table = ok(&sagas(&data, &url, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(lines[1].starts_with(&slow), "newest first: {table}");
    assert!(
        lines[2].starts_with(&failed) && lines[2].contains("compensated"),
        "{table}"
    );
    assert!(
        lines[3].starts_with(&done) && lines[3].contains("completed"),
        "{table}"
    );

    // Filters.
    let page = json_of(&sagas(
        &data,
        &url,
        &["list", "--json", "--status", "compensated"],
    ));
    assert_eq!(ids(&page), std::slice::from_ref(&failed));
    let page = json_of(&sagas(
        &data,
        &url,
        &["list", "--json", "--definition", "cancellation"],
    ));
    assert!(ids(&page).is_empty(), "{page}");
    let page = json_of(&sagas(
        &data,
        &url,
        &["list", "--json", "--older-than", "1h"],
    ));
    assert!(ids(&page).is_empty(), "{page}");
    let page = json_of(&sagas(
        &data,
        &url,
        &[
            "list",
            "--json",
            "--newer-than",
            "1h",
            "--definition",
            "booking",
        ],
    ));
    assert_eq!(ids(&page), [slow.clone(), failed.clone(), done.clone()]);

    // The cursor walks the pages without repeating or skipping one.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let mut args = vec!["list", "--json", "--limit", "1"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = json_of(&sagas(&data, &url, &args));
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, [slow.clone(), failed.clone(), done.clone()]);
    // A page reads what it shows, not every saga.
    let page = json_of(&sagas(&data, &url, &["list", "--json", "--limit", "1"]));
    assert_eq!(page["scanned"], 1, "{page}");
    assert_eq!(page["total"], 3, "{page}");
    let more = ok(&sagas(&data, &url, &["list", "--limit", "1"]));
    assert!(more.contains(&format!("--cursor {slow}")), "{more}");

    // show and history.
    let shown = ok(&sagas(&data, &url, &["show", &done]));
    assert!(
        shown.contains("status") && shown.contains("completed"),
        "{shown}"
    );
    assert!(
        shown.contains("reserve_seat") && shown.contains("succeeded"),
        "{shown}"
    );
    let h = json_of(&sagas(&data, &url, &["history", &done, "--json"]));
    let events = h["events"].as_array().unwrap();
    assert_eq!(events[0]["event"], "saga_started", "{h}");
    assert_eq!(events.last().unwrap()["event"], "saga_finished", "{h}");
    let table = ok(&sagas(&data, &url, &["history", &done]));
    assert!(table.lines().count() == events.len() + 1, "{table}");
    let missing = sagas(&data, &url, &["show", "0000000000000000000000000000"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // cancel the slow one: it compensates.
    let out = ok(&sagas(
        &data,
        &url,
        &["cancel", &slow, "--reason", "cli test"],
    ));
    assert!(out.contains("cancel applied"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = json_of(&sagas(&data, &url, &["show", &slow, "--json"]));
        if v["saga"]["status"] == "compensated" {
            break;
        }
        assert!(Instant::now() < deadline, "never compensated: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = json_of(&sagas(&data, &url, &["history", &slow, "--json"]));
    assert!(
        h.to_string().contains("cli test"),
        "the reason is in the history: {h}"
    );

    // retry: only a stuck saga; the refusal says why.
    let r = sagas(&data, &url, &["retry", &done]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("409") && err.contains("stuck"), "{err}");

    // export: one saga a line, with its history.
    let file = tmp.path().join("sagas.jsonl");
    ok(&sagas(
        &data,
        &url,
        &["export", "--out", file.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["saga"]["id"], slow.as_str());
    assert!(lines
        .iter()
        .all(|l| l["history"].as_array().is_some_and(|h| h.len() >= 2)));

    // purge: the dry run counts, deletes nothing; the real one deletes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dry = json_of(&sagas(
        &data,
        &url,
        &["purge", "--dry-run", "--older-than", "1s", "--json"],
    ));
    assert_eq!(dry["would_purge"], 3, "{dry}");
    let text = ok(&sagas(&data, &url, &["purge", "--dry-run"]));
    assert!(
        text.contains("dry run: 0 finished sagas"),
        "the 30-day default: {text}"
    );
    assert_eq!(
        ids(&json_of(&sagas(&data, &url, &["list", "--json"]))).len(),
        3
    );
    let out = ok(&sagas(&data, &url, &["purge", "--older-than", "1s"]));
    assert!(out.contains("purged 3 finished sagas"), "{out}");
    assert!(ids(&json_of(&sagas(&data, &url, &["list", "--json"]))).is_empty());

    // A wrong token is refused with what to do.
    let o = Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "sagas",
            "--server",
            &url,
            "list",
        ])
        .env("DEMO_ADMIN_TOKEN", "wrong-token-0123456789abcdef")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("admin token was refused") && err.contains("DEMO_ADMIN_TOKEN"),
        "{err}"
    );

    stop(srv);
}

#[test]
fn help_says_what_each_subcommand_does_with_an_example() {
    for (sub, what) in [
        ("list", "newest first"),
        ("show", "one saga"),
        ("history", "history"),
        ("retry", "stuck"),
        ("cancel", "compensates"),
        ("purge", "retention"),
        ("export", "JSON Lines"),
        ("pause", "no step starts"),
        ("resume", "where it stood"),
        ("retry-now", "backoff"),
        ("skip", "by hand"),
        ("rerun", "new saga"),
    ] {
        let o = Command::new(BIN)
            .args(["sagas", sub, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{sub}: {text}");
        assert!(
            text.contains(what),
            "{sub} --help says what it does: {text}"
        );
        assert!(
            text.contains(&format!("demo-server sagas {sub}")),
            "{sub} --help shows an example: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_stopped_servers_directory_and_says_when_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // Neither a server nor a database.
    let o = sagas(&data, NO_SERVER, &["list"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no server answers at") && err.contains("holds no database"),
        "{err}"
    );

    let srv = spawn_server(&data, &[]);
    let (flight, date) = find_flight(srv.addr).await;
    let id = book(srv.addr, &flight, &date, json!({})).await;
    wait_terminal(srv.addr, &id).await;

    // The server runs but --server points elsewhere: the directory is held.
    let o = sagas(&data, NO_SERVER, &["list"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another process holds it") && err.contains("--server"),
        "{err}"
    );
    stop(srv);

    // Stopped: list, show, history and export read the directory.
    let o = sagas(&data, NO_SERVER, &["list"]);
    let table = ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reading"),
        "says it reads the directory"
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with(&id) && table.contains("completed"),
        "{table}"
    );
    let v = json_of(&sagas(&data, NO_SERVER, &["show", &id, "--json"]));
    assert_eq!(v["saga"]["status"], "completed");
    let h = json_of(&sagas(&data, NO_SERVER, &["history", &id, "--json"]));
    assert_eq!(h["events"][0]["event"], "saga_started");
    let page = json_of(&sagas(
        &data,
        NO_SERVER,
        &["list", "--json", "--status", "stuck"],
    ));
    assert!(ids(&page).is_empty());
    let out = ok(&sagas(&data, NO_SERVER, &["export"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["saga"]["id"], id.as_str());

    // Writes need the server.
    let o = sagas(&data, NO_SERVER, &["cancel", &id]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("need the running server"));

    // Nothing was resumed or changed: the server starts again on it. With
    // --retention 0 nothing is purged unless the operator gives a window.
    let srv = spawn_server(&data, &["--retention", "0"]);
    let url = format!("http://{}", srv.addr);
    let o = sagas(&data, &url, &["purge", "--dry-run"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("422") && err.contains("retention is off"),
        "{err}"
    );
    let page = json_of(&sagas(&data, &url, &["list", "--json"]));
    assert_eq!(ids(&page), std::slice::from_ref(&id));
    stop(srv);
}

/// The admin API's view of one saga (for polling; the CLI is what is tested).
async fn admin_saga(addr: SocketAddr, token: &str, id: &str) -> Value {
    let bearer = format!("Bearer {token}");
    let r = request_from(
        local(),
        addr,
        "GET",
        &format!("/api/admin/sagas/{id}"),
        &[("authorization", bearer.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// Polls saga `id` until `pred` holds (30 s at most).
async fn until_saga(
    addr: SocketAddr,
    token: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = admin_saga(addr, token, id).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_state<'a>(v: &'a Value, step: &str) -> &'a str {
    v["saga"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .and_then(|s| s["state"].as_str())
        .unwrap_or("?")
}

fn refused(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = spawn_server(&data, &[]);
    let url = format!("http://{}", srv.addr);
    let token = std::fs::read_to_string(data.join("admin_token"))
        .unwrap()
        .trim()
        .to_string();
    let (flight, date) = find_flight(srv.addr).await;
    let addr = srv.addr;

    // pause while a step runs (a delay fault): the step finishes, the next
    // one does not start; the booking says paused; resume: confirmed.
    let slow = book(
        addr,
        &flight,
        &date,
        json!({"award_miles": {"mode": "delay", "ms": 1500}}),
    )
    .await;
    until_saga(addr, &token, &slow, "running award_miles", |v| {
        step_state(v, "award_miles") == "running"
    })
    .await;
    let dry = ok(&sagas(&data, &url, &["pause", &slow, "--dry-run"]));
    assert!(
        dry.contains("dry run: pause") && dry.contains("award_miles"),
        "{dry}"
    );
    assert_eq!(
        admin_saga(addr, &token, &slow).await["saga"]["status"],
        "running"
    );
    let args = [
        "pause",
        &slow,
        "--operator",
        "ada",
        "--reason",
        "provider down",
        "--operation-id",
        "op-p1",
        "--json",
    ];
    let first = json_of(&sagas(&data, &url, &args));
    assert_eq!(
        (first["status"].as_str(), first["repeated"].as_bool()),
        (Some("paused"), Some(false)),
        "{first}"
    );
    let again = json_of(&sagas(&data, &url, &args));
    assert_eq!(again["repeated"], true, "{again}");
    let held = until_saga(addr, &token, &slow, "held after award_miles", |v| {
        step_state(v, "award_miles") == "succeeded"
    })
    .await;
    assert_eq!(held["saga"]["status"], "paused", "{held}");
    assert_eq!(step_state(&held, "confirm_booking"), "pending", "{held}");
    assert_eq!(held["paused"]["operator"], "ada", "{held}");
    let public = request_from(
        local(),
        addr,
        "GET",
        &format!("/api/bookings/{slow}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(public.body["status"], "paused", "{}", public.text);
    let out = ok(&sagas(
        &data,
        &url,
        &["resume", &slow, "--reason", "provider back"],
    ));
    assert!(
        out.contains("resume applied") && out.contains("confirm_booking"),
        "{out}"
    );
    assert_eq!(wait_terminal(addr, &slow).await["status"], "confirmed");
    let err = refused(&sagas(&data, &url, &["resume", &slow]));
    assert!(err.contains("409") && err.contains("finished"), "{err}");
    // The same id repeated returns the first result, even now; another
    // operation under it is refused.
    let again = json_of(&sagas(&data, &url, &args));
    assert_eq!(again["repeated"], true, "{again}");
    let err = refused(&sagas(
        &data,
        &url,
        &["resume", &slow, "--operation-id", "op-p1"],
    ));
    assert!(err.contains("409") && err.contains("already used"), "{err}");

    // retry-now wakes a backoff; pause, skip the failing step by hand,
    // resume: confirmed without it.
    let flaky = book(
        addr,
        &flight,
        &date,
        json!({"award_miles": {"mode": "transient", "times": 100}}),
    )
    .await;
    until_saga(addr, &token, &flaky, "failing award_miles", |v| {
        step_state(v, "award_miles") == "retry_wait"
    })
    .await;
    let mut woke = false;
    for _ in 0..50 {
        let o = sagas(&data, &url, &["retry-now", &flaky, "--json"]);
        if o.status.success() {
            let v = json_of(&o);
            assert_eq!(v["plan"]["steps"][0]["step"], "award_miles", "{v}");
            woke = true;
            break;
        }
        // Between a failed attempt and its backoff the step is running.
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("backoff"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(woke, "retry-now never found the saga in backoff");
    ok(&sagas(
        &data,
        &url,
        &["pause", &flaky, "--reason", "miles by hand"],
    ));
    until_saga(addr, &token, &flaky, "held in backoff", |v| {
        v["saga"]["status"] == "paused" && step_state(v, "award_miles") == "retry_wait"
    })
    .await;
    let err = refused(&sagas(&data, &url, &["retry-now", &flaky]));
    assert!(err.contains("409") && err.contains("paused"), "{err}");
    let err = refused(&sagas(
        &data,
        &url,
        &["skip", &flaky, "--step", "reserve_seat"],
    ));
    assert!(
        err.contains("409") && err.contains("already succeeded"),
        "{err}"
    );
    let err = refused(&sagas(
        &data,
        &url,
        &["skip", &flaky, "--step", "award_miles", "--result", "[1]"],
    ));
    assert!(err.contains("422") && err.contains("result"), "{err}");
    let out = ok(&sagas(
        &data,
        &url,
        &[
            "skip",
            &flaky,
            "--step",
            "award_miles",
            "--result",
            "{}",
            "--reason",
            "added by hand",
        ],
    ));
    assert!(
        out.contains("skip applied") && out.contains("paused"),
        "{out}"
    );
    ok(&sagas(&data, &url, &["resume", &flaky]));
    assert_eq!(wait_terminal(addr, &flaky).await["status"], "confirmed");
    let h = json_of(&sagas(&data, &url, &["history", &flaky, "--json"]));
    let kinds: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        kinds.contains(&"step_skipped")
            && kinds.contains(&"saga_paused")
            && kinds.contains(&"saga_unpaused"),
        "{kinds:?}"
    );

    // cancel: the dry run lists what would be undone and changes nothing;
    // the real one compensates.
    let doomed = book(
        addr,
        &flight,
        &date,
        json!({"award_miles": {"mode": "delay", "ms": 3000}}),
    )
    .await;
    until_saga(addr, &token, &doomed, "running award_miles", |v| {
        step_state(v, "award_miles") == "running"
    })
    .await;
    let dry = ok(&sagas(&data, &url, &["cancel", &doomed, "--dry-run"]));
    assert!(
        dry.contains("dry run: cancel")
            && dry.contains("compensate")
            && dry.contains("ends as: compensated"),
        "{dry}"
    );
    assert_eq!(
        admin_saga(addr, &token, &doomed).await["saga"]["status"],
        "running"
    );
    let out = ok(&sagas(
        &data,
        &url,
        &["cancel", &doomed, "--reason", "fare withdrawn"],
    ));
    assert!(out.contains("cancel applied"), "{out}");
    assert_eq!(wait_terminal(addr, &doomed).await["status"], "compensated");

    // rerun the compensated one from a step: a new saga, linked both ways.
    let dry = ok(&sagas(
        &data,
        &url,
        &[
            "rerun",
            &doomed,
            "--from-step",
            "authorize_payment",
            "--dry-run",
        ],
    ));
    assert!(
        dry.contains("dry run: rerun") && dry.contains("authorize_payment"),
        "{dry}"
    );
    let v = json_of(&sagas(
        &data,
        &url,
        &[
            "rerun",
            &doomed,
            "--from-step",
            "authorize_payment",
            "--json",
        ],
    ));
    let new = v["new_saga"].as_str().expect("a new saga").to_string();
    let n = until_saga(addr, &token, &new, "finished", |v| {
        matches!(
            v["saga"]["status"].as_str(),
            Some("completed" | "compensated" | "stuck")
        )
    })
    .await;
    assert_eq!(n["rerun_of"], doomed.as_str(), "{n}");
    // It started at authorize_payment: reserve_seat never ran in it (the
    // card is no longer held, so this booking compensates, as it should).
    let attempts = |step: &str| {
        n["saga"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == step)
            .unwrap()["attempts"]
            .as_u64()
    };
    assert_eq!(attempts("reserve_seat"), Some(0), "{n}");
    assert_eq!(attempts("authorize_payment"), Some(1), "{n}");
    let o = admin_saga(addr, &token, &doomed).await;
    assert_eq!(o["reruns"], json!([new]), "{o}");

    // pause a whole definition (dry run: nothing runs now, nothing to do).
    let v = json_of(&sagas(
        &data,
        &url,
        &["pause", "--definition", "booking", "--dry-run", "--json"],
    ));
    assert_eq!(v["applied"], json!([]), "{v}");
    let err = refused(&sagas(&data, &url, &["pause"]));
    assert!(err.contains("--definition"), "{err}");
    stop(srv);

    // A stuck saga (its compensation marked failed past its policy in the
    // stopped server's store), then a successful retry through the CLI.
    {
        let path = data.join("db");
        let db = saga_engine::store::open_sled_db(&path).unwrap();
        let store = saga_engine::SledStore::with_db_at(db, path).unwrap();
        use saga_engine::Store;
        let id = saga_engine::SagaId::parse(&doomed).unwrap();
        let mut rec = store.get(&id).await.unwrap().unwrap();
        rec.state.status = saga_engine::SagaStatus::Stuck;
        let s = rec
            .state
            .steps
            .iter_mut()
            .find(|s| s.name == "reserve_seat")
            .unwrap();
        s.state = saga_engine::StepState::CompensationFailed;
        rec.revision += 1;
        store.update(&rec, &[]).await.unwrap();
    }
    let srv = spawn_server(&data, &[]);
    let url = format!("http://{}", srv.addr);
    let v = json_of(&sagas(&data, &url, &["show", &doomed, "--json"]));
    assert_eq!(v["saga"]["status"], "stuck", "{v}");
    let out = ok(&sagas(
        &data,
        &url,
        &[
            "retry",
            &doomed,
            "--operator",
            "grace",
            "--reason",
            "seat map fixed",
        ],
    ));
    assert!(out.contains("retry applied"), "{out}");
    until_saga(srv.addr, &token, &doomed, "compensated again", |v| {
        v["saga"]["status"] == "compensated"
    })
    .await;
    // Recorded with who and why.
    let h = json_of(&sagas(&data, &url, &["history", &doomed, "--json"])).to_string();
    assert!(h.contains("seat map fixed") && h.contains("grace"), "{h}");
    stop(srv);
}
