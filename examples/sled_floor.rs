//! What sled alone costs for the engine's writes: the bound under
//! `loadgen`'s figure at high concurrency.
//!
//! ```text
//! cargo run --release --example sled_floor -- [--sagas N] [--concurrency C]
//! ```
//!
//! 1. Runs N of `loadgen`'s four-step trivial sagas at concurrency C through
//!    the engine on a fresh `SledStore`, with a sled watcher on the engine's
//!    tree recording every insert and remove the engine made, in order (the
//!    watcher slows this run; it is not timed).
//! 2. Times the same engine run again on another fresh store, unwatched.
//! 3. Replays the recorded operations on a fresh sled database with no
//!    engine: the same keys and values, spread round-robin over C tasks on
//!    the same runtime, while one thread flushes the database whenever
//!    something was written since its last flush (as the group commit
//!    does under load). Its rate, in sagas/s, is what
//!    sled alone allows for those writes on this machine: the engine on
//!    sled cannot pass it, whatever it does between them.
//! 4. Times the same engine run on the memory store.
//!
//! Prints one JSON line: the operations per saga by key prefix, the three
//! rates and their ratios. All four phases run in the same process, so the
//! ratios hold on a noisy machine.

use saga_engine::{Engine, MemoryStore, SagaDefinition, SagaStatus, SledStore, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The same allocator as `loadgen`, so that the rates compare with its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/trivial_saga.rs"]
mod trivial_saga;
use trivial_saga::{Booking, Trivial, STEPS};

/// The engine's tree in the sled database (`SledStore`'s own name).
const TREE: &str = "saga_engine";
/// Written after the recorded run: the recorder stops at it.
const END: &[u8] = b"~sled_floor/end";

/// One write the engine made to its tree.
enum Op {
    Insert(sled::IVec, sled::IVec),
    Remove(sled::IVec),
}

fn parse_args() -> Result<(usize, usize), String> {
    let (mut sagas, mut concurrency) = (20_000usize, 128usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--sagas" => sagas = value()?,
            "--concurrency" => concurrency = value()?,
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: sled_floor [--sagas N] [--concurrency C]"
                ))
            }
        }
    }
    if sagas == 0 || concurrency == 0 {
        return Err("--sagas and --concurrency must be positive".into());
    }
    Ok((sagas, concurrency))
}

/// Runs `sagas` trivial sagas at `concurrency` on `store`; sagas/s.
async fn run_engine(store: Arc<dyn Store>, sagas: usize, concurrency: usize) -> f64 {
    let mut def = SagaDefinition::<Booking>::builder("loadgen", 1);
    for name in STEPS {
        def = def.step(name, Trivial { reject: false });
    }
    let engine = Engine::builder_arc(store)
        .register(def.build().expect("valid definition"))
        .open()
        .await
        .expect("engine opens");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(sagas))
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < sagas {
                    let id = engine
                        .start("loadgen", &Booking { n: 0, done: 0 }, None)
                        .await
                        .expect("start");
                    let rec = engine.wait(&id).await.expect("wait");
                    assert_eq!(rec.status(), SagaStatus::Completed, "saga {id}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let rate = sagas as f64 / started.elapsed().as_secs_f64();
    engine.shutdown(Duration::from_secs(5)).await;
    rate
}

/// The key's prefix up to and including its first `/` (or its first two
/// bytes), as `loadgen`'s live-bytes line names them.
fn prefix(key: &[u8]) -> String {
    let end = key
        .iter()
        .position(|&b| b == b'/')
        .map_or(key.len().min(2), |i| i + 1);
    String::from_utf8_lossy(&key[..end]).into_owned()
}

#[tokio::main]
async fn main() {
    let (sagas, concurrency) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let scratch = tempfile::tempdir().expect("temp dir");

    // 1. The engine's writes, recorded.
    let store = SledStore::open(scratch.path().join("recorded")).expect("store opens");
    let tree = store.db().open_tree(TREE).expect("engine tree");
    let subscriber = tree.watch_prefix(Vec::new());
    let recorder = std::thread::spawn(move || {
        let mut ops = Vec::new();
        for event in subscriber {
            match event {
                sled::Event::Insert { key, .. } if key.as_ref() == END => return ops,
                sled::Event::Insert { key, value } => ops.push(Op::Insert(key, value)),
                sled::Event::Remove { key } => ops.push(Op::Remove(key)),
            }
        }
        ops
    });
    run_engine(Arc::new(store), sagas, concurrency).await;
    tree.insert(END, b"").expect("end marker");
    let ops = recorder.join().expect("recorder");
    let mut per_prefix: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut bytes = 0u64;
    for op in &ops {
        let (key, is_insert) = match op {
            Op::Insert(k, v) => {
                bytes += (k.len() + v.len()) as u64;
                (k, true)
            }
            Op::Remove(k) => (k, false),
        };
        let e = per_prefix.entry(prefix(key)).or_default();
        if is_insert {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    // 2. The engine on sled, unwatched.
    let store = SledStore::open(scratch.path().join("engine")).expect("store opens");
    let engine_sled = run_engine(Arc::new(store), sagas, concurrency).await;

    // 3. sled alone, the same writes.
    // Opened as the store opens its own (cache, background tick).
    let db = saga_engine::store::open_sled_db(&scratch.path().join("replay")).expect("sled opens");
    let tree = db.open_tree(TREE).expect("tree");
    let ops = Arc::new(ops);
    let stop = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicUsize::new(0));
    let flusher = {
        let (db, stop, applied) = (db.clone(), stop.clone(), applied.clone());
        tokio::task::spawn_blocking(move || {
            let (mut flushes, mut flushed) = (0u64, 0usize);
            while !stop.load(Ordering::Acquire) {
                let now = applied.load(Ordering::Acquire);
                if now == flushed {
                    // Nothing new: a flush of nothing would only spin.
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                db.flush().expect("flush");
                (flushes, flushed) = (flushes + 1, now);
            }
            flushes
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (tree, ops, applied) = (tree.clone(), ops.clone(), applied.clone());
            tokio::spawn(async move {
                for op in ops.iter().skip(t).step_by(concurrency) {
                    match op {
                        Op::Insert(k, v) => {
                            tree.insert(k, v.clone()).expect("insert");
                        }
                        Op::Remove(k) => {
                            tree.remove(k).expect("remove");
                        }
                    }
                    applied.fetch_add(1, Ordering::Release);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("replay task");
    }
    db.flush().expect("final flush");
    let sled_alone = sagas as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let replay_flushes = flusher.await.expect("flusher");
    drop((tree, db));

    // 4. The memory store.
    let memory = run_engine(Arc::new(MemoryStore::new()), sagas, concurrency).await;

    let round = |x: f64, places: i32| {
        let f = 10f64.powi(places);
        (x * f).round() / f
    };
    let per_saga: serde_json::Map<String, serde_json::Value> = per_prefix
        .iter()
        .map(|(p, (ins, rem))| {
            (
                p.clone(),
                serde_json::json!({
                    "inserts": round(*ins as f64 / sagas as f64, 2),
                    "removes": round(*rem as f64 / sagas as f64, 2),
                }),
            )
        })
        .collect();
    let line = serde_json::json!({
        "sagas": sagas,
        "concurrency": concurrency,
        "ops_per_saga": round(ops.len() as f64 / sagas as f64, 2),
        "written_bytes_per_saga": round(bytes as f64 / sagas as f64, 0),
        "by_prefix": per_saga,
        "engine_sled_per_s": engine_sled.round(),
        "sled_alone_per_s": sled_alone.round(),
        "sled_alone_flushes": replay_flushes,
        "memory_store_per_s": memory.round(),
        "engine_sled_over_sled_alone": round(engine_sled / sled_alone, 3),
        "sled_alone_over_memory_store": round(sled_alone / memory, 3),
        "engine_sled_over_memory_store": round(engine_sled / memory, 3),
    });
    println!("{line}");
}
