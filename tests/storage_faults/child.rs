//! The engine process of a trial (this test binary run with `--child`).
//!
//! It opens the store, says `READY`, waits for `GO` on stdin (the parent
//! attaches strace in between), then runs [`WORKERS`] tasks that start
//! sagas one after another and report each answer on stdout the moment it
//! arrives:
//!
//! ```text
//! ACK <key> <saga id> <begin> <end>
//! ERR <key> <begin> <end> <store|other> <message>
//! DONE
//! ```
//!
//! `begin`/`end` come from one logical clock shared by the workers, taken
//! just before `start` is called and just after it returns, so the parent
//! can tell which starts began after the first failure had been answered.
//! After `DONE` the child waits to be SIGKILLed: it never shuts down, never
//! drops the store, so nothing that was not flushed reaches the disk.
//!
//! With `--hook N` the fault is the store's flush hook failing from the
//! N-th flush on (`--hook-once N`: the N-th flush only, a disk that fails
//! once and then works again), and sled's own periodic flush is off: a
//! failed flush leaves the writes since the last good one in memory only,
//! where the SIGKILL destroys them.

use saga_engine::{Engine, Error, SagaDefinition, SledStore, Step, StepContext, StepError, Store};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Concurrent starters (so that starts share flushes).
pub const WORKERS: u64 = 4;
/// Starts per worker at most.
pub const STARTS_PER_WORKER: u64 = 100;
/// A worker gives up after this many failed starts in a row.
const GIVE_UP_AFTER: u32 = 5;

/// The saga input.
#[derive(Serialize, Deserialize)]
pub struct D {
    n: u64,
}

struct Noop;
#[saga_engine::async_trait]
impl Step<D> for Noop {
    async fn run(&self, _: &StepContext, _: &mut D) -> Result<(), StepError> {
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &D) -> Result<(), StepError> {
        Ok(())
    }
}

/// The engine on `store`, with the test's three-step definition.
pub async fn engine_on(store: Arc<dyn Store>) -> Result<Engine, Error> {
    let def = SagaDefinition::<D>::builder("faulty", 1)
        .step("a", Noop)
        .step("b", Noop)
        .step("c", Noop)
        .build()?;
    Engine::builder_arc(store).register(def).open().await
}

/// The store as production opens it (sled's periodic flush on).
pub async fn engine(dir: &Path) -> Result<Engine, Error> {
    engine_on(Arc::new(SledStore::open(dir)?)).await
}

/// How the child's store will fail.
pub enum Mode {
    /// strace makes a syscall fail (set up by the parent).
    Strace,
    /// The flush hook fails from the N-th flush on, or (`true`) at the
    /// N-th flush only.
    Hook(u64, bool),
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn open(dir: &Path, mode: &Mode) -> Result<Engine, Error> {
    match mode {
        Mode::Strace => engine(dir).await,
        Mode::Hook(from, once) => {
            let db = sled::Config::new()
                .path(dir)
                .flush_every_ms(None)
                .open()
                .map_err(|e| Error::Store(saga_engine::StoreError::Io(e.to_string())))?;
            let store = Arc::new(SledStore::with_db_at(db, dir)?);
            let (from, once) = (*from, *once);
            let flushes = AtomicU64::new(0);
            store.set_flush_hook(Some(Arc::new(move || {
                let n = flushes.fetch_add(1, Ordering::SeqCst) + 1;
                if n == from || (n > from && !once) {
                    Err(format!("injected failure of flush {n}"))
                } else {
                    Ok(())
                }
            })));
            engine_on(store).await
        }
    }
}

/// Runs the child; never returns normally (it waits to be killed).
pub async fn run(dir: &Path, mode: Mode) {
    let engine = match open(dir, &mode).await {
        Ok(e) => Arc::new(e),
        Err(e) => {
            say(&format!("OPENFAIL {e}"));
            std::process::exit(3);
        }
    };
    say("READY");
    let go = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    if !matches!(go, Ok(Ok(ref l)) if l.trim() == "GO") {
        say("NOGO");
        std::process::exit(4);
    }
    let clock = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let engine = engine.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed_in_a_row = 0;
            for i in 0..STARTS_PER_WORKER {
                let key = format!("w{w}-{i}");
                let n = w * STARTS_PER_WORKER + i;
                let begin = clock.fetch_add(1, Ordering::SeqCst);
                let result = engine.start("faulty", &D { n }, Some(&key)).await;
                let end = clock.fetch_add(1, Ordering::SeqCst);
                match result {
                    Ok(id) => {
                        failed_in_a_row = 0;
                        say(&format!("ACK {key} {id} {begin} {end}"));
                    }
                    Err(e) => {
                        let kind = if matches!(e, Error::Store(_)) {
                            "store"
                        } else {
                            "other"
                        };
                        let msg = e.to_string().replace('\n', " ");
                        say(&format!("ERR {key} {begin} {end} {kind} {msg}"));
                        failed_in_a_row += 1;
                        if failed_in_a_row >= GIVE_UP_AFTER {
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    say("DONE");
    // Keep the engine (and sled) alive until the SIGKILL.
    std::future::pending::<()>().await;
}
