//! The SIGKILL loop both crash tests share, and the line protocol between
//! the parent and its children.
//!
//! The parent runs its own binary as `--child ROUND` again and again and
//! kills each child with SIGKILL: one round in [`Plan::blind_every`] at a
//! random time after the spawn (which often lands while the store opens and
//! recovers), the others at a random time after the child's first heartbeat
//! (so that they land on running sagas). It reads what the child printed
//! before it died:
//!
//! | line | meaning |
//! | --- | --- |
//! | `checked acked=N` | the restart check ran to the end over N acknowledged starts |
//! | `violation: KIND: detail` | a broken promise the child found |
//! | `error: start: detail` / `error: wait: detail` | an engine call failed, unexplained |
//! | `expected: WHAT: detail` | an error with an explanation (counted, shown) |
//! | `hb running=N` | heartbeat, every 5 ms: N sagas are running |
//! | `idle` | every saga of this child has ended |
//! | `recovered_us=N` | the engine opened and resumed in N µs |
//!
//! From the last heartbeat the parent tells a kill that landed while sagas
//! were in flight from one that hit an idle child or one still recovering.
//! After each kill it counts the acknowledgement log, and requires the next
//! child's check to cover at least that many starts. A round with a
//! violation ends the loop early; a last child (`--child finish`) then runs
//! everything to the end without being killed.

use crate::acklog;
use crate::verdict::Violations;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The binary that is both parent and child.
    pub exe: PathBuf,
    /// The data directory (passed as `CRASH_DIR`).
    pub dir: PathBuf,
    /// SIGKILLs to send.
    pub kills: usize,
    /// Blind rounds kill after a random time in this range (ms from spawn).
    pub window_ms: Range<u64>,
    /// Aimed rounds kill after a random time in this range (ms from the
    /// child's first heartbeat).
    pub aimed_ms: Range<u64>,
    /// Every this many rounds, one is blind (1: all blind).
    pub blind_every: usize,
    /// The children's acknowledgement log.
    pub ack_log: PathBuf,
    /// How long the final child may take.
    pub finish_timeout: Duration,
}

/// What the loop saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// SIGKILLs sent.
    pub kills: usize,
    /// Kills that landed while the last heartbeat showed running sagas.
    pub in_flight: usize,
    /// Kills that landed before the child's first heartbeat (opening the
    /// store, recovering, checking).
    pub recovering: usize,
    /// Kills that landed on a child whose sagas had all ended.
    pub idle: usize,
    /// Children that were no longer running when the kill came.
    pub exited: usize,
    /// Restart checks completed (`checked` lines), the final child's included.
    pub checks: usize,
    /// `error: start` lines.
    pub start_errors: usize,
    /// `error: wait` lines.
    pub wait_errors: usize,
    /// `expected:` lines: errors with an explanation.
    pub expected: Vec<String>,
    /// Recovery times the children reported, µs.
    pub recoveries_us: Vec<u64>,
    /// Violations the children reported, and the loop's own findings.
    pub violations: Violations,
    /// The round after which the loop stopped because of a violation.
    pub stopped_early: Option<usize>,
    /// The final child's stdout, for test-specific figures.
    pub finish_lines: Vec<String>,
    /// Aimed rounds: time from the spawn to the first heartbeat, ms.
    pub startup_ms: Vec<u64>,
    /// Time spent in the kill rounds.
    pub loop_time: Duration,
    /// Time the final child took.
    pub finish_time: Duration,
}

type Lines = (std::sync::mpsc::Receiver<String>, JoinHandle<()>);

fn spawn(plan: &Plan, arg: &str) -> Result<(std::process::Child, Lines), String> {
    let mut child = Command::new(&plan.exe)
        .arg("--child")
        .arg(arg)
        .env("CRASH_DIR", &plan.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    // Read as the child writes, so that a chatty child never blocks on a
    // full pipe, and so that the parent sees the first heartbeat at once.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, (rx, reader)))
}

/// Waits (up to 10 s) for the child's first heartbeat or its exit, keeping
/// the lines read meanwhile; returns whether a heartbeat came.
fn await_beat(rx: &std::sync::mpsc::Receiver<String>, lines: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let beat = l.starts_with("hb ") || l == "idle";
                lines.push(l);
                if beat {
                    return true;
                }
            }
            Err(_) => return false, // exited (pipe closed) or too slow: kill now
        }
    }
    false
}

fn random_in(r: &Range<u64>) -> Duration {
    let span = r.end.saturating_sub(r.start).max(1);
    Duration::from_millis(r.start + rand::random::<u64>() % span)
}

/// What one child's lines said.
#[derive(Default)]
struct Said {
    checked: Option<usize>,
    /// Last heartbeat: `Some(n)` running, `Some(0)` idle.
    last_beat: Option<usize>,
    violations: Violations,
}

fn parse(lines: &[String], out: &mut Outcome) -> Said {
    let mut said = Said::default();
    for l in lines {
        if let Some(v) = Violations::parse_line(l) {
            said.violations.push(&v.kind, v.detail);
        } else if let Some(n) = l.strip_prefix("checked acked=") {
            said.checked = n.trim().parse().ok();
        } else if let Some(d) = l.strip_prefix("error: start: ") {
            out.start_errors += 1;
            said.violations.push("start error", d);
        } else if let Some(d) = l.strip_prefix("expected: ") {
            out.expected.push(d.to_string());
        } else if let Some(d) = l.strip_prefix("error: wait: ") {
            out.wait_errors += 1;
            said.violations.push("wait error", d);
        } else if let Some(n) = l.strip_prefix("hb running=") {
            said.last_beat = n.trim().parse().ok();
        } else if l == "idle" {
            said.last_beat = Some(0);
        } else if let Some(us) = l.strip_prefix("recovered_us=") {
            if let Ok(us) = us.split(' ').next().unwrap_or("").parse() {
                out.recoveries_us.push(us);
            }
        }
    }
    said
}

/// Runs the plan. `Err` only when the harness itself cannot go on (the
/// child cannot be spawned); every broken promise is in the outcome.
pub fn run(plan: &Plan) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let started = Instant::now();
    for round in 0..plan.kills {
        let acked_before = acklog::read(&plan.ack_log).len();
        let (mut c, (rx, reader)) = spawn(plan, &round.to_string())?;
        let mut lines = Vec::new();
        if round % plan.blind_every.max(1) == 0 {
            std::thread::sleep(random_in(&plan.window_ms));
        } else {
            let spawned = Instant::now();
            if await_beat(&rx, &mut lines) {
                out.startup_ms.push(spawned.elapsed().as_millis() as u64);
            }
            std::thread::sleep(random_in(&plan.aimed_ms));
        }
        let alive = c.try_wait().map_err(|e| e.to_string())?.is_none();
        c.kill().map_err(|e| e.to_string())?; // SIGKILL
        let status = c.wait().map_err(|e| e.to_string())?;
        out.kills += 1;
        let _ = reader.join();
        lines.extend(rx.try_iter());
        let mut said = parse(&lines, &mut out);
        if let Some(n) = said.checked {
            out.checks += 1;
            if n < acked_before {
                said.violations.push(
                    "restart check incomplete",
                    format!("round {round}: the child checked {n} acknowledged starts, the log held {acked_before}"),
                );
            }
        }
        if alive {
            match said.last_beat {
                Some(n) if n > 0 => out.in_flight += 1,
                Some(_) => out.idle += 1,
                None => out.recovering += 1,
            }
        } else {
            out.exited += 1;
        }
        // A child that found a violation exits by itself (code 3).
        if !alive && said.violations.is_empty() {
            said.violations.push(
                "child exited by itself",
                format!("round {round}: {status} before the kill"),
            );
        }
        let failed = !said.violations.is_empty();
        out.violations.extend(said.violations);
        if failed {
            out.stopped_early = Some(round);
            break;
        }
    }
    out.loop_time = started.elapsed();
    let started = Instant::now();
    let acked_before = acklog::read(&plan.ack_log).len();
    let (mut last, (rx, reader)) = spawn(plan, "finish")?;
    let deadline = Instant::now() + plan.finish_timeout;
    let status = loop {
        if let Some(s) = last.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = last.kill();
            let _ = last.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let lines: Vec<String> = rx.try_iter().collect();
    let mut said = parse(&lines, &mut out);
    match said.checked {
        Some(n) => {
            out.checks += 1;
            if n < acked_before {
                said.violations.push(
                    "restart check incomplete",
                    format!(
                        "final child checked {n} acknowledged starts, the log held {acked_before}"
                    ),
                );
            }
        }
        // A final child that found violations stops there without a check.
        None if !said.violations.is_empty() => {}
        None => said.violations.push(
            "restart check incomplete",
            "the final child reported no check",
        ),
    }
    match status {
        None => said.violations.push(
            "final child hung",
            format!("not done within {:?}", plan.finish_timeout),
        ),
        Some(s) if !s.success() && said.violations.is_empty() => said.violations.push(
            "final child failed",
            format!("{s} without naming a violation"),
        ),
        Some(_) => {}
    }
    out.violations.extend(said.violations);
    out.finish_lines = lines;
    out.finish_time = started.elapsed();
    Ok(out)
}

/// Child side: prints `hb running=N` every 5 ms while `running()` is above
/// zero and `idle` once when it drops to zero. Run inside a tokio runtime.
pub fn heartbeat(running: impl Fn() -> usize + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut was_idle = false;
        loop {
            let n = running();
            if n > 0 {
                println!("hb running={n}");
                was_idle = false;
            } else if !was_idle {
                println!("idle");
                was_idle = true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Child side: a count of tasks in flight, for [`heartbeat`].
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// A new counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more task; it counts until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    /// Tasks in flight now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Holds one count of an [`InFlight`].
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Child side: reports that the restart check covered `acked` starts.
pub fn report_checked(acked: usize) {
    println!("checked acked={acked}");
}

/// Child side: reports an error that has an explanation (`what` names it,
/// `detail` says why it is harmless). The parent counts and shows them.
pub fn report_expected(what: &str, detail: impl std::fmt::Display) {
    println!("expected: {what}: {detail}");
}

/// Child side: reports a failed engine call (`op` is `start` or `wait`).
pub fn report_error(op: &str, detail: impl std::fmt::Display) {
    println!("error: {op}: {detail}");
}

/// Reads `CRASH_DIR`, which the parent sets for its children.
pub fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var("CRASH_DIR").expect("CRASH_DIR is set by the parent"))
}
