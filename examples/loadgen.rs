//! Load generator for performance comparisons.
//!
//! ```text
//! cargo run --release --example loadgen -- --sagas N --concurrency C \
//!     [--fail-at-step K] [--store sled|memory|postgres://...] [--data-dir DIR] \
//!     [--retention-secs S] [--attributes A] [--cache-mb M]
//! ```
//!
//! `--cache-mb M` limits sled's page cache to M MiB (default: the store's
//! own, `saga_engine::store::DEFAULT_CACHE_BYTES`).
//!
//! `--attributes A` declares A search attributes (taken from the data,
//! indexed at create and at the end) on the definition.
//!
//! `--data-dir` reuses an existing store (to measure a store that has run
//! for a long time); `--retention-secs` purges finished sagas older than S
//! seconds in the background. The JSON line also says how long the engine
//! took to open the store (`open_ms`, recovery included), how many sagas the
//! store held then (`store_sagas`), the process's peak memory
//! (`peak_rss_mb`) and the data directory's size after the run (`disk_mb`).
//! On sled, `live_kb_per_saga` is what the engine's tree holds (keys and
//! values) per saga stored, `written_kb_per_saga` what the process had
//! written to storage during the run per saga (`/proc/self/io`), and a
//! line on stderr breaks the live bytes down (record, history, indexes).
//!
//! Runs N four-step sagas (reserve_seat, authorize_payment, award_miles,
//! confirm_booking; each a trivial step) at concurrency C and prints one
//! JSON line. With `--fail-at-step K` step K (1-based) rejects and every saga
//! must compensate. Every saga's outcome is checked before printing; a wrong
//! one exits non-zero.

use saga_engine::{Engine, MemoryStore, SagaDefinition, SagaStatus, SledStore, StepState, Store};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// glibc's malloc under many threads spends its time in arena locks
/// (`__lll_lock_wait_private`, about 10% of samples at concurrency 128);
/// mimalloc's thread-local heaps do not. The library leaves the choice of
/// allocator to the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/trivial_saga.rs"]
mod trivial_saga;
use trivial_saga::{Booking, Trivial, STEPS};

struct Args {
    sagas: usize,
    concurrency: usize,
    fail_at: Option<usize>,
    store: String,
    data_dir: Option<String>,
    retention_secs: Option<u64>,
    attributes: usize,
    cache_mb: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sagas: 10_000,
        concurrency: 32,
        fail_at: None,
        store: "sled".into(),
        data_dir: None,
        retention_secs: None,
        attributes: 0,
        cache_mb: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sagas" => a.sagas = value()?.parse().map_err(|e| format!("--sagas: {e}"))?,
            "--concurrency" => {
                a.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--fail-at-step" => {
                let k: usize = value()?
                    .parse()
                    .map_err(|e| format!("--fail-at-step: {e}"))?;
                if !(1..=STEPS.len()).contains(&k) {
                    return Err(format!("--fail-at-step must be 1 to {}", STEPS.len()));
                }
                a.fail_at = Some(k);
            }
            "--store" => a.store = value()?,
            "--data-dir" => a.data_dir = Some(value()?),
            "--retention-secs" => {
                a.retention_secs = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--retention-secs: {e}"))?,
                )
            }
            "--attributes" => {
                a.attributes = value()?
                    .parse()
                    .map_err(|e| format!("--attributes: {e}"))?
            }
            "--cache-mb" => {
                a.cache_mb = Some(value()?.parse().map_err(|e| format!("--cache-mb: {e}"))?)
            }
            "-h" | "--help" => {
                return Err("usage: loadgen --sagas N --concurrency C [--fail-at-step K] [--store sled|memory|postgres://...] [--data-dir DIR] [--retention-secs S] [--attributes A] [--cache-mb M]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.sagas == 0 || a.concurrency == 0 {
        return Err("--sagas and --concurrency must be positive".into());
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let _tmp;
    let mut dir_used: Option<std::path::PathBuf> = None;
    let mut sled_db: Option<sled::Db> = None;
    // The disk's own floor, measured in the same run beside the store:
    // five sequential 8 KiB write + fdatasync pairs (one per durable write
    // a saga makes).
    let fsync5_ms = (args.store == "sled").then(|| {
        let d = args
            .data_dir
            .clone()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&d).expect("data dir");
        five_fdatasyncs_ms(&d, 200)
    });
    let open_started = Instant::now();
    let store: Arc<dyn Store> = match args.store.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        "sled" => {
            let dir = match &args.data_dir {
                Some(d) => std::path::PathBuf::from(d),
                None => {
                    let t = tempfile::tempdir().expect("temp dir");
                    let p = t.path().to_path_buf();
                    _tmp = t;
                    p
                }
            };
            dir_used = Some(dir.clone());
            let opened = match args.cache_mb {
                Some(mb) => SledStore::open_with_cache(&dir, mb * 1024 * 1024),
                None => SledStore::open(&dir),
            };
            let s = opened.unwrap_or_else(|e| {
                eprintln!("cannot open {}: {e}", dir.display());
                std::process::exit(2)
            });
            sled_db = Some(s.db().clone());
            Arc::new(s)
        }
        #[cfg(feature = "postgres")]
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Arc::new(
            saga_engine::store::PostgresStore::connect(url)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("cannot connect to {url}: {e}");
                    std::process::exit(2)
                }),
        ),
        other => {
            eprintln!(
                "unknown --store {other}: use sled, memory or (with --features postgres) a postgres:// URL"
            );
            std::process::exit(2);
        }
    };
    let mut def = SagaDefinition::<Booking>::builder("loadgen", 1);
    for (i, name) in STEPS.iter().enumerate() {
        def = def.step(
            *name,
            Trivial {
                reject: args.fail_at == Some(i + 1),
            },
        );
    }
    for i in 0..args.attributes {
        def = def.search_attribute_typed(format!("a{i}"), move |b: &Booking| {
            Some(format!("{}-{}", b.n % 1000, i))
        });
    }
    let mut builder =
        Engine::builder_arc(store.clone()).register(def.build().expect("valid definition"));
    if let Some(s) = args.retention_secs {
        builder = builder.retention(saga_engine::Retention::new(Duration::from_secs(s)));
    }
    let engine = builder.open().await.expect("engine opens");
    let open_ms = open_started.elapsed().as_secs_f64() * 1000.0;
    let store_sagas = store.saga_count();

    let next = Arc::new(AtomicUsize::new(0));
    let written_before = written_bytes();
    let flushes_before = engine.flush_count();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.sagas) {
        let engine = engine.clone();
        let next = next.clone();
        let total = args.sagas;
        let fail_at = args.fail_at;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut wrong = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t = Instant::now();
                let id = engine
                    .start(
                        "loadgen",
                        &Booking {
                            n: n as u64,
                            done: 0,
                        },
                        None,
                    )
                    .await
                    .expect("start");
                let rec = engine.wait(&id).await.expect("wait");
                latencies.push(t.elapsed());
                let ok = match fail_at {
                    None => {
                        rec.status() == SagaStatus::Completed
                            && rec.data_as::<Booking>().map(|b| b.done).ok() == Some(4)
                    }
                    Some(k) => {
                        rec.status() == SagaStatus::Compensated
                            && rec.state.steps[..k - 1]
                                .iter()
                                .all(|s| s.state == StepState::Compensated)
                            && rec.state.steps[k - 1].state == StepState::Rejected
                    }
                };
                if !ok {
                    wrong.push(format!("saga {id} ended {:?}", rec.state));
                }
            }
            (latencies, wrong)
        }));
    }
    let mut latencies = Vec::with_capacity(args.sagas);
    let mut wrong = Vec::new();
    for w in workers {
        let (l, bad) = w.await.expect("worker");
        latencies.extend(l);
        wrong.extend(bad);
    }
    let elapsed = started.elapsed();
    let flushes = engine.flush_count() - flushes_before;
    engine.shutdown(Duration::from_secs(5)).await;
    let written = written_bytes()
        .zip(written_before)
        .map(|(a, b)| a.saturating_sub(b));
    if !wrong.is_empty() || latencies.len() != args.sagas {
        eprintln!(
            "{} wrong outcomes of {} sagas; first: {}",
            wrong.len(),
            latencies.len(),
            wrong.first().cloned().unwrap_or_default()
        );
        std::process::exit(1);
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.50);
    let round = |x: f64, places: i32| {
        let f = 10f64.powi(places);
        (x * f).round() / f
    };
    // The first fields keep the order the peer comparison reads them in
    // (the order serde_json's sorted maps gave them before); new fields go
    // after them.
    let fields: Vec<(&str, serde_json::Value)> = vec![
        ("concurrency", args.concurrency.into()),
        ("flushes", flushes.into()),
        ("p50_ms", round(p50, 3).into()),
        ("p99_ms", round(percentile(&latencies, 0.99), 3).into()),
        ("sagas", args.sagas.into()),
        (
            "sagas_per_s",
            (args.sagas as f64 / elapsed.as_secs_f64()).round().into(),
        ),
        (
            "scenario",
            if args.fail_at.is_some() {
                "throughput_compensate"
            } else {
                "throughput"
            }
            .into(),
        ),
        ("store", args.store.clone().into()),
        ("system", "saga-engine".into()),
        (
            "flushes_per_saga",
            round(flushes as f64 / args.sagas as f64, 3).into(),
        ),
        ("open_ms", round(open_ms, 2).into()),
        ("store_sagas", store_sagas.into()),
        ("peak_rss_mb", peak_rss_mb().into()),
        (
            "disk_mb",
            dir_used
                .as_deref()
                .map(|d| round(dir_size(d) as f64 / 1e6, 1))
                .into(),
        ),
        (
            "live_kb_per_saga",
            sled_db
                .as_ref()
                .map(|db| {
                    round(
                        live_bytes(db) as f64
                            / 1e3
                            / (store_sagas.unwrap_or(0) + args.sagas as u64).max(1) as f64,
                        3,
                    )
                })
                .into(),
        ),
        (
            "written_kb_per_saga",
            written
                .map(|w| round(w as f64 / 1e3 / args.sagas as f64, 3))
                .into(),
        ),
        ("fsync5_ms", fsync5_ms.map(|f| round(f, 3)).into()),
        (
            "p50_over_fsync5",
            fsync5_ms.map(|f| round(p50 / f, 2)).into(),
        ),
        ("attributes", args.attributes.into()),
    ];
    let line = format!(
        "{{{}}}",
        fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("{line}");
    if let Some(db) = &sled_db {
        let per_saga = (store_sagas.unwrap_or(0) + args.sagas as u64).max(1) as f64;
        let parts: Vec<String> = live_breakdown(db)
            .iter()
            .map(|(what, b)| format!("{what} {:.0} B", *b as f64 / per_saga))
            .collect();
        eprintln!("live bytes per saga: {}", parts.join(", "));
    }
}

/// The process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Bytes the process has had written to storage (`write_bytes` of
/// `/proc/self/io`): sled's log, its segment cleaning, everything.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// Keys and values the engine's tree holds now (what a saga kept costs
/// before sled's own overhead and superseded versions).
fn live_bytes(db: &sled::Db) -> u64 {
    live_breakdown(db).values().sum()
}

/// The engine tree's bytes by what they are: saga records (`s/` key and
/// value header), their embedded history, and each index by prefix.
fn live_breakdown(db: &sled::Db) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tree) = db.open_tree("saga_engine") else {
        return out;
    };
    for (k, v) in tree.iter().flatten() {
        let prefix = String::from_utf8_lossy(&k[..k.len().min(2)]).into_owned();
        if prefix == "s/" && v.first() == Some(&3) {
            // Format 3: record and history compressed together.
            *out.entry("value (record and history, compressed)".into())
                .or_default() += (k.len() + v.len()) as u64;
        } else if prefix == "s/" && v.len() >= 13 {
            // [format u8][revision u64][record len u32][record][events]
            let rec = u32::from_be_bytes(v[9..13].try_into().expect("4 bytes")) as u64;
            *out.entry("record".into()).or_default() += k.len() as u64 + 13 + rec;
            *out.entry("history".into()).or_default() += v.len() as u64 - 13 - rec;
        } else {
            *out.entry(format!("index {prefix}")).or_default() += (k.len() + v.len()) as u64;
        }
    }
    out
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Mean time of five sequential 8 KiB `pwrite` + `fdatasync` pairs in `dir`,
/// over `n` pairs, in ms.
fn five_fdatasyncs_ms(dir: &std::path::Path, n: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join("loadgen-fsync-probe");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let block = vec![0x5au8; 8192];
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(&block, (i % 64 * 8192) as u64)
            .expect("probe write");
        f.sync_data().expect("probe fdatasync");
    }
    let each = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let _ = std::fs::remove_file(&path);
    5.0 * each
}
