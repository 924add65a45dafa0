//! Storage faults, injected with strace: from the N-th `sync_file_range`
//! (sled's flush) or `pwrite64` (sled's writes) of a child process, the
//! call fails with EIO or ENOSPC. The engine must answer every start after
//! that with a typed storage error (no panic), start nothing new, and lose
//! nothing it acknowledged: reopened without the fault, every acknowledged
//! saga is there and runs to its end.
//!
//! Needs strace: `cargo test --features strace --test storage_faults`
//! (fails, not skips, when strace is missing). `harness = false`: the
//! binary is the parent and, with `--child`, the child.

use saga_engine::{Engine, SagaDefinition, SagaStatus, SledStore, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct D {
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

async fn engine(dir: &Path) -> Result<Engine, String> {
    let def = SagaDefinition::<D>::builder("faulty", 1)
        .step("a", Noop)
        .step("b", Noop)
        .step("c", Noop)
        .build()
        .map_err(|e| e.to_string())?;
    let store = SledStore::open(dir).map_err(|e| e.to_string())?;
    Engine::builder(store)
        .register(def)
        .open()
        .await
        .map_err(|e| e.to_string())
}

/// Starts sagas one after another, reporting each on stdout, until five
/// starts in a row fail.
async fn child(dir: &Path) {
    let out = std::io::stdout();
    let engine = match engine(dir).await {
        Ok(e) => e,
        Err(e) => {
            writeln!(out.lock(), "OPENFAIL {e}").ok();
            return;
        }
    };
    let mut failures = 0;
    for n in 0..400u64 {
        let key = format!("s{n}");
        match engine.start("faulty", &D { n }, Some(&key)).await {
            Ok(id) => {
                failures = 0;
                writeln!(out.lock(), "ACK {key} {id}").ok();
            }
            Err(e) => {
                failures += 1;
                writeln!(out.lock(), "ERR {key} {e}").ok();
                if failures >= 5 {
                    break;
                }
            }
        }
        out.lock().flush().ok();
    }
    engine.shutdown(Duration::from_millis(200)).await;
}

fn trial(exe: &Path, syscall: &str, errno: &str, nth: u32) -> Result<(usize, bool), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let inject = format!("inject={syscall}:error={errno}:when={nth}+");
    let output = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            &format!("trace={syscall}"),
            "-e",
            &inject,
        ])
        .arg(exe)
        .arg("--child")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running strace (is it installed?): {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("panicked") {
        return Err(format!(
            "{syscall}/{errno} from call {nth}: the child panicked:\n{stderr}"
        ));
    }
    let mut acked = BTreeMap::new();
    let mut saw_error = false;
    for line in output.stdout.lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ACK"), Some(key), Some(id)) => {
                acked.insert(key.to_string(), id.to_string());
            }
            (Some("ERR"), Some(_), Some(msg)) => {
                saw_error = true;
                if !msg.contains("storage") {
                    return Err(format!("a start failed without a storage error: {msg}"));
                }
            }
            (Some("OPENFAIL"), _, _) => saw_error = true,
            _ => {}
        }
    }
    // Reopen without the fault: everything acknowledged is there and ends.
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let engine = engine(dir.path()).await?;
        for (key, id) in &acked {
            let found = engine
                .find_by_key(key)
                .await
                .map_err(|e| e.to_string())?;
            if found.as_ref().map(|f| f.as_str()) != Some(id.as_str()) {
                return Err(format!(
                    "{syscall}/{errno} from call {nth}: acknowledged {key} -> {id} lost (found {found:?})"
                ));
            }
            let rec = tokio::time::timeout(
                Duration::from_secs(20),
                engine.wait(&found.expect("checked above")),
            )
            .await
            .map_err(|_| format!("{key} did not finish after the restart"))?
            .map_err(|e| e.to_string())?;
            if rec.status() != SagaStatus::Completed {
                return Err(format!("{key} ended {}", rec.status()));
            }
        }
        engine.shutdown(Duration::from_secs(1)).await;
        Ok::<_, String>(())
    })?;
    Ok((acked.len(), saw_error))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let dir = std::path::PathBuf::from(&args[1]);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(child(&dir));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("storage_faults: test");
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut trials = 0;
    let mut faulted = 0;
    let mut acked_total = 0;
    let mut failures = Vec::new();
    for (syscall, errno) in [
        ("sync_file_range", "EIO"),
        ("pwrite64", "ENOSPC"),
        ("sync_file_range", "ENOSPC"),
        ("pwrite64", "EIO"),
    ] {
        for nth in [1u32, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233] {
            trials += 1;
            match trial(&exe, syscall, errno, nth) {
                Ok((acked, saw_error)) => {
                    acked_total += acked;
                    if saw_error {
                        faulted += 1;
                    }
                }
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "storage_faults: {trials} injection points, {faulted} hit the fault, {acked_total} acknowledged sagas all recovered"
    );
    if faulted < trials / 2 {
        failures.push(format!(
            "only {faulted} of {trials} trials reached the fault"
        ));
    }
    if failures.is_empty() {
        eprintln!("storage_faults ... ok");
    } else {
        eprintln!("storage_faults FAILED:\n{}", failures.join("\n"));
        std::process::exit(1);
    }
}
