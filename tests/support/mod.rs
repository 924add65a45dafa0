//! Shared by the crash tests: run this test binary as a child again and
//! again, SIGKILL it at random moments, then let a last child finish.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a kill loop did.
pub struct KillLoop {
    /// Children killed while still running.
    pub killed_alive: usize,
}

/// Spawns `exe --child ROUND` (with `CRASH_DIR=dir`) `kills` times, killing
/// each after a random time in `window_ms`; then runs `exe --child finish`
/// to the end.
pub fn kill_loop(
    exe: &Path,
    dir: &Path,
    kills: usize,
    window_ms: std::ops::Range<u64>,
) -> Result<KillLoop, String> {
    let spawn = |arg: String| {
        Command::new(exe)
            .arg("--child")
            .arg(arg)
            .env("CRASH_DIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning the child: {e}"))
    };
    let mut killed_alive = 0;
    for round in 0..kills {
        let mut c = spawn(round.to_string())?;
        let span = window_ms.end.saturating_sub(window_ms.start).max(1);
        std::thread::sleep(Duration::from_millis(
            window_ms.start + rand::random::<u64>() % span,
        ));
        if c.try_wait().map_err(|e| e.to_string())?.is_none() {
            killed_alive += 1;
        }
        c.kill().map_err(|e| e.to_string())?; // SIGKILL
        let status = c.wait().map_err(|e| e.to_string())?;
        if let Some(code) = status.code() {
            return Err(format!(
                "child of round {round} exited by itself with code {code} instead of being killed"
            ));
        }
    }
    let mut last = spawn("finish".into())?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = last.try_wait().map_err(|e| e.to_string())? {
            if !s.success() {
                return Err(format!("final child failed: {s}"));
            }
            break;
        }
        if Instant::now() > deadline {
            let _ = last.kill();
            return Err("final child did not finish within 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if killed_alive < 50.min(kills) {
        return Err(format!(
            "only {killed_alive} of {kills} children were alive when killed"
        ));
    }
    Ok(KillLoop { killed_alive })
}
