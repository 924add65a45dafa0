//! One trial: run the child until its store has failed, SIGKILL it, reopen
//! its directory in this (the parent) process, and judge.
//!
//! The acknowledgement log is what the parent read from the child's stdout
//! as each answer arrived; a line on the pipe was given to the "client"
//! before the kill, so it is an acknowledgement the store must keep.

use super::child;
use super::strace::{Fault, Tracer};
use saga_engine::{Error, SagaStatus, StoreError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What makes the store fail.
#[derive(Clone, Copy, Debug)]
pub enum Injection {
    /// A syscall fails (strace attached after the store is open).
    Syscall(Fault),
    /// The store's flush hook fails from the N-th flush on, or (`once`)
    /// at the N-th flush only.
    Hook {
        /// The first failing flush.
        from: u64,
        /// Whether only that flush fails.
        once: bool,
    },
}

impl std::fmt::Display for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injection::Syscall(fault) => write!(f, "{fault}"),
            Injection::Hook { from, once: false } => write!(f, "flush hook from flush {from}"),
            Injection::Hook { from, once: true } => write!(f, "flush hook only at flush {from}"),
        }
    }
}

/// How the reopened store answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Reopen {
    /// Opened; every acknowledged saga was checked.
    Fine,
    /// Refused with `StoreError::Damaged` (allowed: not a silent loss).
    Damaged,
}

/// What a trial that ran saw.
#[derive(Debug)]
pub struct Outcome {
    /// Starts acknowledged by the child.
    pub acked: usize,
    /// Whether a start failed (the fault reached the store).
    pub reached: bool,
    /// Starts begun after the first failed start had been answered.
    pub after_failure: usize,
    /// Of those, how many were acknowledged (each one a violation).
    pub acked_after_failure: usize,
    /// How the store reopened.
    pub reopen: Reopen,
    /// Acknowledged sagas found after the restart and completed.
    pub recovered: usize,
    /// Broken promises: each one fails the test.
    pub violations: Vec<String>,
}

struct Ack {
    key: String,
    id: String,
    begin: u64,
}

/// Runs one trial. `Err` is a failed trial (the child did not start, did
/// not finish, panicked, or strace failed): it fails the test too.
pub fn run(exe: &Path, injection: Injection) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stderr_path = dir.path().with_extension("stderr");
    let mut cmd = Command::new(exe);
    cmd.arg("--child").arg(dir.path());
    if let Injection::Hook { from, once } = injection {
        cmd.arg(if once { "--hook-once" } else { "--hook" })
            .arg(from.to_string());
    }
    let mut proc = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(&stderr_path)
                .map(Stdio::from)
                .map_err(|e| e.to_string())?,
        )
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let stdout = proc.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    };
    let kill = |proc: &mut std::process::Child| {
        let _ = proc.kill(); // SIGKILL
        proc.wait().map_err(|e| e.to_string())
    };
    // 1. The child opens its store without any fault.
    match next(&rx) {
        Some(l) if l == "READY" => {}
        other => {
            let _ = kill(&mut proc);
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let _ = std::fs::remove_file(&stderr_path);
            return Err(format!(
                "{injection}: the child failed to start ({other:?}):\n{err}"
            ));
        }
    }
    // 2. The fault is armed, then the workload begins.
    let tracer = match injection {
        Injection::Syscall(fault) => match Tracer::attach(proc.id(), fault, dir.path()) {
            Ok(t) => Some(t),
            Err(e) => {
                let _ = kill(&mut proc);
                return Err(format!("{injection}: {e}"));
            }
        },
        Injection::Hook { .. } => None,
    };
    let mut stdin = proc.stdin.take().expect("piped");
    writeln!(stdin, "GO").map_err(|e| e.to_string())?;
    // 3. The acknowledgement log, as answers arrive; SIGKILL at DONE.
    let mut log = Vec::new();
    let mut done = false;
    while let Some(line) = next(&rx) {
        if line == "DONE" {
            done = true;
            break;
        }
        log.push(line);
    }
    let status = kill(&mut proc)?;
    if let Some(t) = tracer {
        t.wait().map_err(|e| format!("{injection}: {e}"))?;
    }
    // Lines already in the pipe when the child died were answers given.
    log.extend(rx.iter().filter(|l| l != "DONE"));
    let _ = reader.join();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    if err.contains("panicked") {
        return Err(format!("{injection}: the child panicked:\n{err}"));
    }
    if !done {
        return Err(format!(
            "{injection}: the child did not finish its starts within 60 s ({} answers seen, status {status}):\n{err}",
            log.len()
        ));
    }
    if status.signal() != Some(SIGKILL) {
        return Err(format!(
            "{injection}: the child ended by itself ({status}), not by the SIGKILL:\n{err}"
        ));
    }
    judge(dir.path(), injection, &log)
}

/// The signal number of SIGKILL on Linux.
const SIGKILL: i32 = 9;

/// Checks the log, then reopens the directory and checks the store.
fn judge(dir: &Path, injection: Injection, log: &[String]) -> Result<Outcome, String> {
    let mut violations = Vec::new();
    let mut acks = Vec::new();
    let mut first_failure: Option<u64> = None;
    for line in log {
        let parts: Vec<&str> = line.splitn(6, ' ').collect();
        match parts.as_slice() {
            ["ACK", key, id, begin, _end] => acks.push(Ack {
                key: key.to_string(),
                id: id.to_string(),
                begin: begin.parse().map_err(|_| format!("bad line {line:?}"))?,
            }),
            ["ERR", key, _begin, end, kind, msg] => {
                let end: u64 = end.parse().map_err(|_| format!("bad line {line:?}"))?;
                first_failure = Some(first_failure.map_or(end, |f| f.min(end)));
                if *kind != "store" {
                    violations.push(format!(
                        "{injection}: start {key} failed without a storage error: {msg}"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{injection}: unexpected line from the child: {line:?}"
                ))
            }
        }
    }
    let (mut after_failure, mut acked_after_failure) = (0, 0);
    if let Some(f) = first_failure {
        after_failure = log
            .iter()
            .filter_map(|l| l.split(' ').nth(if l.starts_with("ACK") { 3 } else { 2 }))
            .filter_map(|b| b.parse::<u64>().ok())
            .filter(|b| *b > f)
            .count();
        for a in acks.iter().filter(|a| a.begin > f) {
            acked_after_failure += 1;
            violations.push(format!(
                "{injection}: {} ({}) was acknowledged although it began after the first failed start",
                a.key, a.id
            ));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut recovered = 0;
    let reopen = rt.block_on(async {
        let engine = match child::engine(dir).await {
            Ok(e) => e,
            Err(Error::Store(StoreError::Damaged { .. })) => return Ok(Reopen::Damaged),
            Err(e) => {
                return Err(format!(
                    "{injection}: the store neither opened nor reported damage: {e}"
                ))
            }
        };
        for a in &acks {
            let found = engine
                .find_by_key(&a.key)
                .await
                .map_err(|e| e.to_string())?;
            let Some(id) = found.filter(|f| f.as_str() == a.id) else {
                violations.push(format!(
                    "{injection}: acknowledged {} ({}) lost after the SIGKILL",
                    a.key, a.id
                ));
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(30), engine.wait(&id)).await {
                Ok(Ok(rec)) if rec.status() == SagaStatus::Completed => recovered += 1,
                Ok(Ok(rec)) => violations.push(format!(
                    "{injection}: {} ended {} after the restart",
                    a.key,
                    rec.status()
                )),
                Ok(Err(e)) => violations.push(format!("{injection}: waiting for {}: {e}", a.key)),
                Err(_) => violations.push(format!(
                    "{injection}: {} did not finish within 30 s of the restart",
                    a.key
                )),
            }
        }
        engine.shutdown(Duration::from_secs(1)).await;
        Ok(Reopen::Fine)
    })?;
    Ok(Outcome {
        acked: acks.len(),
        reached: first_failure.is_some(),
        after_failure,
        acked_after_failure,
        reopen,
        recovered,
        violations,
    })
}
