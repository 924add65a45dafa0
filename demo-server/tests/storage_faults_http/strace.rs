//! Attaching strace to a running process to make a syscall fail from its
//! N-th call on: `strace -p PID -f -e inject=SYSCALL:error=ERRNO:when=N+`.
//!
//! Attaching after the process reported it is open (rather than starting
//! it under strace) puts the fault after start-up, so the N counts calls
//! made by the workload only; a process that then fails to start is a
//! failed trial, never an expected outcome. strace counts calls per
//! syscall and per thread ("per tracee"). (The same helper as the root
//! package's `tests/storage_faults/strace.rs`: the crates are tested apart.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One fault: which syscall fails, with which errno, from which call.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// The syscall, as strace names it (`pwrite64`, `sync_file_range`).
    pub syscall: &'static str,
    /// The errno it fails with (`EIO`, `ENOSPC`).
    pub errno: &'static str,
    /// From which call (per thread) on it fails.
    pub from: u32,
    /// Only that call fails (a transient fault), not every later one.
    pub once: bool,
    /// Only calls on this file (relative to the store's directory) count
    /// and fail (`strace -P`), e.g. the store's own high-water-mark file.
    pub file: Option<&'static str>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = if self.once {
            "only at call"
        } else {
            "from call"
        };
        write!(f, "{}/{}", self.syscall, self.errno)?;
        if let Some(file) = self.file {
            write!(f, " on {file}")?;
        }
        write!(f, " {when} {}", self.from)
    }
}

/// A running strace attached to every thread of a process.
pub struct Tracer(Child);

impl Tracer {
    /// Attaches to every thread of `pid` (whose store is in `store_dir`)
    /// and returns once each of them is traced (its `TracerPid` is
    /// strace), so that the caller can then let the workload begin.
    pub fn attach(pid: u32, fault: Fault, store_dir: &Path) -> Result<Tracer, String> {
        let inject = format!(
            "inject={}:error={}:when={}{}",
            fault.syscall,
            fault.errno,
            fault.from,
            if fault.once { "" } else { "+" }
        );
        let mut cmd = Command::new("strace");
        if let Some(file) = fault.file {
            cmd.arg("-P").arg(store_dir.join(file));
        }
        let child = cmd
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("trace={}", fault.syscall))
            .args(["-e", &inject, "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!("running strace (Debian package strace; is it installed?): {e}")
            })?;
        let mut tracer = Tracer(child);
        let strace_pid = tracer.0.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = tracer.0.try_wait() {
                return Err(format!("strace exited before attaching to {pid}: {status}"));
            }
            let tracers = tracer_pids(pid);
            if !tracers.is_empty() && tracers.iter().all(|t| *t == strace_pid) {
                // strace seizes a thread before it sets it to stop at every
                // syscall: a moment more, so that no early call slips by.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(tracer);
            }
            if Instant::now() > deadline {
                return Err(format!("strace did not attach to every thread of {pid}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for strace to end (it does once its tracee is dead).
    pub fn wait(mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.0.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                    return Err("strace did not end after its tracee was killed".into());
                }
                Err(e) => return Err(format!("waiting for strace: {e}")),
            }
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `TracerPid` of every thread of `pid`.
fn tracer_pids(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// Fails (never skips) when strace is not installed.
pub fn require_strace() -> Result<(), String> {
    match Command::new("strace").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("strace -V failed: {}", o.status)),
        Err(e) => Err(format!(
            "this test needs strace (Debian package strace): {e}"
        )),
    }
}
