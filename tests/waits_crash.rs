//! Crash test of durable waits and parallel groups on sled: a child runs
//! sagas that reserve, run a parallel group of two legs, sleep, wait for a
//! signal (with a timeout) and confirm, against a per-key effect ledger
//! kept outside the engine's store (`support/ledger.rs`); the parent kills
//! it with SIGKILL at random moments (`saga_workspace::kill_loop`), again
//! and again, and each child goes on delivering the signals its sagas are
//! planned to get: some early (before the wait begins), some while the
//! saga waits, some twice with the same id (and once more under another
//! id), some late (after the timeout), across restarts. Then a last child
//! lets every saga end, and the parent checks (`waits_crash/checks.rs`):
//!
//! - every acknowledged saga reaches exactly one terminal state, through
//!   any number of kills during its group, its sleep or its wait (a
//!   waiting saga is neither lost nor resumed as failed);
//! - each effect (group members included) happens once per key; every
//!   member that took effect in a compensated saga is compensated, and a
//!   completed saga has every effect and no compensation;
//! - a signal is applied exactly once: a completed saga's data holds its
//!   payload once; a repeat with the same id changes nothing, a second id
//!   and a late signal are refused; an acknowledged signal is never
//!   followed by a timeout;
//! - timeouts fire, after a restart too: a saga nobody signals ends
//!   compensated, saying it timed out.
//!
//! Coverage floors (run problems, not violations): kills in flight, waits
//! and sleeps that a restart interrupted and that then ended as they
//! should, timeouts that fired in a later process than the one that began
//! the wait, group members run again after a kill.
//!
//! `harness = false`: the binary is parent and child (`--child`).
//! `CRASH_KILLS` sets the kills (default 40, at least 20).

use saga_engine::{Engine, RetryPolicy, SagaDefinition, SagaId, SledStore, StepError, StepState};
use saga_workspace::acklog::{self, AckLog};
use saga_workspace::kill_loop::{self, InFlight, Plan};
use saga_workspace::verdict::{self, Violations};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::ledger::Ledger;

#[path = "waits_crash/checks.rs"]
mod checks;
mod support;

/// Every step with an effect in the ledger, plus the sleep and the wait.
const EFFECTS: [&str; 4] = ["reserve", "leg_out", "leg_back", "confirm"];
const PER_ROUND: usize = 8;
const DEFAULT_KILLS: usize = 40;
const MIN_KILLS: usize = 20;
/// How long the approval wait lasts before it times out.
const WAIT_MS: u64 = 1_000;
/// The sleep between the group and the wait.
const NAP_MS: u64 = 30;
/// The signal the wait takes.
const SIGNAL: &str = "approve";

/// How a saga is signalled, by `n % 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalPlan {
    /// Never: the wait must time out.
    None,
    /// Right after the start, before the wait begins (kept for it).
    Early,
    /// Once the saga waits.
    Normal,
    /// Once it waits, again with the same id, then under a second id.
    Duplicate,
    /// After the saga has ended (timed out): must be refused.
    Late,
}

fn plan_of(n: u64) -> SignalPlan {
    match n % 5 {
        0 => SignalPlan::None,
        1 => SignalPlan::Early,
        2 => SignalPlan::Normal,
        3 => SignalPlan::Duplicate,
        _ => SignalPlan::Late,
    }
}

/// The return leg is refused for these (the group fails, the outbound leg
/// that succeeded must be compensated).
fn leg_rejected(n: u64) -> bool {
    n % 6 == 5
}

fn payload_of(n: u64) -> String {
    format!("approved-{n}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trip {
    n: u64,
    /// Every signal payload the wait delivered (exactly one, or none).
    received: Vec<String>,
}

async fn effect(
    ledger: &Ledger,
    key: &str,
    delay_us: std::ops::Range<u64>,
    reject: bool,
) -> Result<(), StepError> {
    ledger.attempt(key);
    let span = (delay_us.end - delay_us.start).max(1);
    tokio::time::sleep(Duration::from_micros(
        delay_us.start + rand::random::<u64>() % span,
    ))
    .await;
    if reject {
        ledger.answered(key, "no");
        return Err(StepError::rejected("no seat on the return leg"));
    }
    let r = ledger.apply(key);
    ledger.answered(key, if r.is_ok() { "ok" } else { "no" });
    r
}

fn definition(ledger: Arc<Ledger>) -> SagaDefinition<Trip> {
    let undo = |ledger: Arc<Ledger>| {
        move |ctx: saga_engine::StepContext, _t: Trip| {
            let ledger = ledger.clone();
            async move {
                ledger.compensate(&ctx.idempotency_key);
                Ok(())
            }
        }
    };
    let (l1, l2, l3, l4) = (
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
    );
    SagaDefinition::builder("waity", 1)
        .default_retry(
            RetryPolicy::default()
                .max_attempts(50)
                .backoff(Duration::from_millis(1), Duration::from_millis(10)),
        )
        .default_compensation_retry(RetryPolicy::default().max_attempts(1000))
        .action(
            "reserve",
            move |ctx, t: Trip| {
                let l = l1.clone();
                async move {
                    effect(&l, &ctx.idempotency_key, 0..2_000, false).await?;
                    Ok(t)
                }
            },
            undo(ledger.clone()),
        )
        .group("legs", |g| {
            // The return leg is slower, so a kill often lands between the
            // outbound leg's result and the return leg's.
            g.action(
                "leg_out",
                move |ctx, t: Trip| {
                    let l = l2.clone();
                    async move {
                        effect(&l, &ctx.idempotency_key, 0..3_000, false).await?;
                        Ok(t)
                    }
                },
                undo(ledger.clone()),
            )
            .action(
                "leg_back",
                move |ctx, t: Trip| {
                    let l = l3.clone();
                    async move {
                        let reject = leg_rejected(t.n);
                        effect(&l, &ctx.idempotency_key, 5_000..40_000, reject).await?;
                        Ok(t)
                    }
                },
                undo(ledger.clone()),
            )
        })
        .sleep("nap", Duration::from_millis(NAP_MS))
        .wait_for(
            "approval",
            SIGNAL,
            Duration::from_millis(WAIT_MS),
            |t: &mut Trip, p: String| t.received.push(p),
        )
        .action(
            "confirm",
            move |ctx, t: Trip| {
                let l = l4.clone();
                async move {
                    effect(&l, &ctx.idempotency_key, 0..2_000, false).await?;
                    Ok(t)
                }
            },
            undo(ledger),
        )
        .build()
        .expect("the definition is valid")
}

/// The signals sent so far: one synced `KEY SIGNAL_ID OUTCOME` line per
/// answer the engine gave (`delivered`, `kept`, `duplicate`, or
/// `refused REASON`), so that the next child goes on where this one was
/// killed and the parent can judge every answer.
struct SignalLog {
    file: Mutex<std::fs::File>,
}

impl SignalLog {
    fn open(path: &Path) -> std::io::Result<SignalLog> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        acklog::end_torn_line(path, &mut file)?;
        Ok(SignalLog {
            file: Mutex::new(file),
        })
    }

    fn record(&self, key: &str, signal_id: &str, outcome: &str) {
        let mut f = self.file.lock().unwrap();
        f.write_all(format!("{key} {signal_id} {outcome}\n").as_bytes())
            .expect("signal log write");
        f.sync_data().expect("signal log sync");
    }
}

/// One answer from the signal log.
#[derive(Debug, Clone)]
struct Answer {
    signal_id: String,
    outcome: String,
}

/// The whole lines of the signal log, by saga key, in order.
fn read_signals(path: &Path) -> HashMap<String, Vec<Answer>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: HashMap<String, Vec<Answer>> = HashMap::new();
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut parts = line.trim_end().splitn(3, ' ');
        let (Some(key), Some(sid), Some(outcome)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let whole = ["delivered", "kept", "duplicate"].contains(&outcome)
            || outcome.starts_with("refused ");
        if whole && sid.starts_with(key) {
            out.entry(key.to_string()).or_default().push(Answer {
                signal_id: sid.to_string(),
                outcome: outcome.to_string(),
            });
        }
    }
    out
}

/// The signals of a plan, in order: (signal id, when to send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// At once.
    Now,
    /// Once the approval step waits (or the saga has ended).
    Waiting,
    /// Once the saga has ended.
    Ended,
}

fn sends(key: &str, plan: SignalPlan) -> Vec<(String, When)> {
    let first = format!("{key}-s1");
    match plan {
        SignalPlan::None => vec![],
        SignalPlan::Early => vec![(first, When::Now)],
        SignalPlan::Normal => vec![(first, When::Waiting)],
        SignalPlan::Duplicate => vec![
            (first.clone(), When::Waiting),
            (first, When::Now),
            (format!("{key}-s2"), When::Now),
        ],
        SignalPlan::Late => vec![(first, When::Ended)],
    }
}

const APPROVAL: usize = 4;

/// Carries out what is left of saga `n`'s signal plan (`done` sends were
/// answered before), then waits for the saga to end.
async fn drive(
    engine: Engine,
    signals: Arc<SignalLog>,
    key: String,
    id: SagaId,
    n: u64,
    done: usize,
) {
    for (sid, when) in sends(&key, plan_of(n)).into_iter().skip(done) {
        loop {
            let rec = match engine.status(&id).await {
                Ok(r) => r,
                Err(e) => return kill_loop::report_error("wait", format!("{key}: status: {e}")),
            };
            let ended = rec.status().is_terminal();
            let ready = match when {
                When::Now => true,
                When::Waiting => ended || rec.state.steps[APPROVAL].state != StepState::Pending,
                When::Ended => ended,
            };
            if ready {
                if when == When::Waiting && !ended {
                    // Let it wait a while (within its timeout), so that
                    // kills land on waiting sagas.
                    let ms = rand::random::<u64>() % 100;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let outcome = match engine.signal(&id, SIGNAL, &sid, &payload_of(n)).await {
            Ok(o) => format!("{o:?}").to_lowercase(),
            Err(saga_engine::Error::SignalRefused { reason, .. }) => {
                format!("refused {}", reason.replace('\n', " "))
            }
            Err(e) => return kill_loop::report_error("wait", format!("{key}: signal {sid}: {e}")),
        };
        signals.record(&key, &sid, &outcome);
    }
    if let Err(e) = engine.wait(&id).await {
        kill_loop::report_error("wait", format!("{key} ({id}): {e}"));
    }
}

/// Opens the engine on the store and checks that every acknowledged
/// start survived; exits 3 on a violation.
async fn open_and_check(dir: &Path) -> Engine {
    let ledger = Arc::new(Ledger::open(&dir.join("ledger.log"), &EFFECTS).expect("ledger opens"));
    let mut v = Violations::new();
    let store = match SledStore::open(dir.join("engine")) {
        Ok(s) => s,
        Err(e) => {
            v.push("store refused to open", e.to_string());
            v.print_lines();
            std::process::exit(3);
        }
    };
    // When this process began: a wait begun before it and ended after it
    // lived through a restart.
    let opened_ms = saga_engine::Clock::now_ms(&saga_engine::SystemClock);
    let mut opens = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("opens.log"))
        .expect("opens log");
    writeln!(opens, "{opened_ms}").expect("opens log write");
    let engine = match Engine::builder(store)
        .register(definition(ledger))
        .open()
        .await
    {
        Ok(e) => e,
        Err(e) => {
            v.push("store refused to open", format!("engine: {e}"));
            v.print_lines();
            std::process::exit(3);
        }
    };
    let checked = acklog::check_survived(&engine, &dir.join("acks.log"), &mut v).await;
    if !v.is_empty() {
        v.print_lines();
        std::process::exit(3);
    }
    kill_loop::report_checked(checked);
    engine
}

fn key_n(key: &str) -> Option<u64> {
    key.strip_prefix("trip-")?.parse().ok()
}

async fn child(dir: PathBuf, round: Option<usize>) {
    let engine = open_and_check(&dir).await;
    let acks = Arc::new(AckLog::open(&dir.join("acks.log")).expect("ack log opens"));
    let signals = Arc::new(SignalLog::open(&dir.join("signals.log")).expect("signal log opens"));
    let answered = read_signals(&dir.join("signals.log"));
    let inflight = InFlight::new();
    let mut tasks = Vec::new();
    let acked = acklog::read(&dir.join("acks.log"));
    let driven: std::collections::HashSet<String> = acked.iter().map(|(k, _)| k.clone()).collect();
    // Earlier rounds' sagas: go on with their signal plans.
    for (key, id) in acked {
        let Some(n) = key_n(&key) else { continue };
        let done = answered.get(&key).map_or(0, Vec::len);
        let (engine, signals, guard) = (engine.clone(), signals.clone(), inflight.enter());
        let id = SagaId::from_raw(id);
        tasks.push(tokio::spawn(async move {
            let _guard = guard;
            drive(engine, signals, key, id, n, done).await;
        }));
    }
    // This round's sagas, and again the last round's (same keys: the same sagas).
    if let Some(round) = round {
        for r in [round, round.saturating_sub(1)] {
            for i in 0..PER_ROUND {
                let n = (r * PER_ROUND + i) as u64;
                let (engine, acks, signals) = (engine.clone(), acks.clone(), signals.clone());
                let guard = inflight.enter();
                // A saga acknowledged before this process began is driven
                // above; this start only checks that the key finds it.
                let drives = !driven.contains(&format!("trip-{n}"));
                tasks.push(tokio::spawn(async move {
                    let _guard = guard;
                    let key = format!("trip-{n}");
                    let trip = Trip {
                        n,
                        received: Vec::new(),
                    };
                    let id = match engine.start("waity", &trip, Some(&key)).await {
                        Ok(id) => id,
                        Err(e) => return kill_loop::report_error("start", format!("{key}: {e}")),
                    };
                    if let Err(e) = acks.ack(&key, id.as_str()) {
                        return kill_loop::report_error("start", format!("{key}: ack log: {e}"));
                    }
                    if drives {
                        drive(engine, signals, key, id, n, 0).await;
                    }
                }));
            }
        }
    }
    let (e, count) = (engine.clone(), inflight.clone());
    let _beat = kill_loop::heartbeat(move || count.get().max(e.running_count()));
    let all = async {
        for t in tasks {
            if let Err(e) = t.await {
                kill_loop::report_error("wait", format!("a saga task panicked: {e}"));
            }
        }
    };
    if round.is_some() {
        all.await;
        // Idle until killed.
        tokio::time::sleep(Duration::from_secs(60)).await;
    } else if tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .is_err()
    {
        // A saga lost from the timer index never wakes: the parent names
        // each one that did not end.
        kill_loop::report_expected("final child", "gave up waiting after 20 s");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let dir = kill_loop::child_dir();
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("error")
            .init();
        let arg = args.get(1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let round = (arg != "finish").then(|| arg.parse().expect("a round number"));
        rt.block_on(child(dir, round));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("waits_crash: test");
        return;
    }
    let kills = match verdict::knob("CRASH_KILLS", DEFAULT_KILLS, MIN_KILLS) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("waits_crash REFUSED: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let plan = Plan {
        exe: std::env::current_exe().unwrap(),
        dir: dir.clone(),
        kills,
        window_ms: 20..400,
        aimed_ms: 0..300,
        blind_every: 4,
        ack_log: dir.join("acks.log"),
        finish_timeout: Duration::from_secs(60),
    };
    let code = checks::parent(&plan, kills);
    if code == 0 {
        eprintln!("waits_crash ... ok");
    }
    std::process::exit(code);
}
