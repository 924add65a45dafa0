//! Measures what durable waits cost: starts N sagas (default 100,000) that
//! each wait for a signal, in one process on a sled store, then reopens the
//! store in a fresh process and reports open time and memory.
//!
//! `cargo run -p saga-engine --example park_100k -- [N] [DIR]`

use saga_engine::{Engine, SagaDefinition, SledStore};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Serialize, Deserialize)]
struct Data {
    n: u64,
    code: Option<String>,
}

fn def() -> SagaDefinition<Data> {
    SagaDefinition::<Data>::builder("parked", 1)
        .wait_for(
            "confirm",
            "confirmed",
            Duration::from_secs(3600),
            |d: &mut Data, c: String| d.code = Some(c),
        )
        .read_only("done", |_ctx, d| async move { Ok(d) })
        .build()
        .expect("valid")
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reopen") {
        let dir = &args[2];
        let before = rss_mib();
        let t = Instant::now();
        let engine = Engine::builder(SledStore::open(dir).expect("open"))
            .register(def())
            .open()
            .await
            .expect("engine");
        let took = t.elapsed();
        println!(
            "reopen: {:?} to open, {} parked, {} workers, RSS {:.1} MiB (before open {:.1} MiB)",
            took,
            engine.parked_count(),
            engine.running_count(),
            rss_mib(),
            before
        );
        return;
    }
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| tmp.path().display().to_string());
    {
        let engine = Engine::builder(SledStore::open(&dir).expect("open"))
            .register(def())
            .open()
            .await
            .expect("engine");
        let base = rss_mib();
        let t = Instant::now();
        let mut next = 0u64;
        while next < n {
            let batch: Vec<_> = (next..(next + 512).min(n))
                .map(|i| {
                    let e = engine.clone();
                    tokio::spawn(async move {
                        e.start("parked", &Data { n: i, code: None }, None).await
                    })
                })
                .collect();
            for h in batch {
                h.await.expect("join").expect("start");
            }
            next = (next + 512).min(n);
        }
        while (engine.parked_count() as u64) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "started {n} waiting sagas in {:?}: {} parked, {} workers, tokio tasks alive {}, RSS {:.1} MiB (engine open {:.1} MiB)",
            t.elapsed(),
            engine.parked_count(),
            engine.running_count(),
            tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            rss_mib(),
            base
        );
        engine.shutdown(Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--reopen", &dir])
        .output()
        .expect("child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}
