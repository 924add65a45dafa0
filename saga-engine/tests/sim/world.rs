//! The shared state of one simulated run: the seeded generator every random
//! choice comes from, the trace, the participants' ledger (which lives
//! outside the engine's store and so survives its crashes), the scenario's
//! plan, and the engine currently running (if any).
//!
//! Everything here is ordered (`BTreeMap`, `Vec`) so that iterating it can
//! never depend on a hasher's random state.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use saga_engine::{Engine, SagaId, SagaStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Attempt timeout of every step and compensation: small, so that a
/// participant that "hangs" is abandoned quickly in virtual time.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(50);

/// What the engine's clock reads when a run begins.
pub const BASE_MS: u64 = 1_700_000_000_000;

/// A deliberate defect, switched on only by the test that proves the
/// checks catch real mistakes (`checks_bite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Nothing broken: the real simulation.
    None,
    /// The store's flush silently persists nothing.
    FlushLosesWrites,
    /// The store acknowledges a write before flushing it.
    AckBeforeFlush,
    /// Participants apply an effect again on a repeated key.
    NotIdempotent,
    /// Participants keep no tombstones: a call arriving after its
    /// compensation applies the effect.
    NoTombstones,
    /// The sled store's old defect, in the store's index model: an update
    /// that takes a saga out of a terminal status (an operator retrying a
    /// stuck one, `Stuck` -> `Compensating`) does not put its active index
    /// entry back, so an engine opening after a crash does not resume it.
    StuckLeavesIndex,
    /// While a parallel group runs, the store writes a member that
    /// succeeded as never started (its result acknowledged, not kept).
    GroupMemberForgotten,
    /// A saga entering a durable wait leaves the active (timer) index, so
    /// an engine opening after a crash never wakes it.
    WaitLeavesIndex,
}

impl Sabotage {
    /// Every planted defect.
    pub const ALL: [Sabotage; 7] = [
        Sabotage::GroupMemberForgotten,
        Sabotage::WaitLeavesIndex,
        Sabotage::FlushLosesWrites,
        Sabotage::AckBeforeFlush,
        Sabotage::NotIdempotent,
        Sabotage::NoTombstones,
        Sabotage::StuckLeavesIndex,
    ];

    /// The defect named `name` (its variant name, as `{:?}` prints it).
    pub fn named(name: &str) -> Option<Sabotage> {
        Sabotage::ALL
            .into_iter()
            .find(|s| format!("{s:?}").eq_ignore_ascii_case(name))
    }
}

/// What a participant does with one forward call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Applies the effect and answers.
    Ok,
    /// Answers after a short delay (reorders sagas against each other).
    Slow(u64),
    /// Fails retryably before touching anything.
    RetryBefore,
    /// Never answers; the effect lands (or is refused) this many ms after
    /// the attempt timeout.
    TimeoutBefore(u64),
    /// Applies the effect, then the reply is lost (the engine sees an error).
    LostReply,
    /// The request is delivered twice.
    Duplicate,
    /// Answers, and a copy of the request arrives again after the step's
    /// compensation ran (or after a long while, if it never does).
    LateAfterCompensation,
    /// A business "no".
    Reject,
}

/// How a step's compensation misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompFault {
    /// Works.
    None,
    /// Fails retryably this many times (over the saga's life), then works.
    FailTimes(u32),
    /// The first call hangs past the timeout; its undo lands this many ms
    /// after it.
    TimeoutOnce(u64),
    /// Fails until the operator fixes the participant: the saga must park
    /// as `Stuck`, and finish after an operator retry.
    Forever,
}

/// When a planned cancel reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelWhen {
    /// While the step's first call is under way.
    DuringCall,
    /// While the step waits to retry after its first retryable failure.
    DuringBackoff,
}

/// The plan of one step of one saga.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The participant says no to this step, every time.
    pub reject: bool,
    /// What its compensation does.
    pub comp: CompFault,
}

/// The plan of one saga (one business request).
#[derive(Debug, Clone)]
pub struct SagaPlan {
    /// The request's idempotency key.
    pub key: String,
    /// When the client first sends the start, ms after the run began.
    pub start_at_ms: u64,
    /// The client sends the start twice at once.
    pub dup_start: bool,
    /// The customer cancels this step's saga.
    pub cancel: Option<(usize, CancelWhen)>,
    /// One entry per step.
    pub steps: Vec<StepPlan>,
    /// A chain, a parallel group, or a signal wait.
    pub shape: super::shapes::Shape,
}

/// The state of one effect at a participant, by idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Applied and standing.
    Applied,
    /// Applied, then undone.
    Undone,
    /// Compensated before it was ever applied: a later apply is refused.
    Tombstone,
}

/// What a delivery of a forward request did at the participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Took effect now.
    Now,
    /// Had already taken effect (idempotent replay).
    Already,
    /// Refused: the key was compensated.
    Refused,
    /// A business "no": no effect.
    Rejected,
}

/// Counters summed over many seeds, for the report.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub seeds: u64,
    /// Sum over seeds of a hash of (seed, trace): equal sums from two
    /// sweeps say (with overwhelming odds) that every seed replayed alike.
    pub digest: u64,
    pub sagas: u64,
    pub completed: u64,
    pub compensated: u64,
    pub crashes: u64,
    pub graceful_stops: u64,
    pub crashes_mid_flush: u64,
    pub writes_lost: u64,
    /// Unflushed writes a crash kept (sled's own flush got to them).
    pub writes_kept: u64,
    /// Crashes whose durable state ends in the middle of a store call.
    pub crashes_mid_call: u64,
    /// Crashes with an operator-retried saga not yet finished.
    pub crashes_after_retry: u64,
    /// Index entries (and unacknowledged records) `list_active` repaired.
    pub index_repairs: u64,
    pub unacked_starts_lost: u64,
    pub stuck: u64,
    pub operator_retries: u64,
    pub cancels_acked: u64,
    pub lost_replies: u64,
    pub timeouts: u64,
    pub duplicates: u64,
    pub late_refused: u64,
    pub late_noop: u64,
    pub rejections: u64,
    pub comp_failures: u64,
    /// Sagas with a parallel group, and with a signal wait.
    pub groups: u64,
    pub waits: u64,
    /// Signal answers (accepted, kept, duplicate, refused).
    pub signals: u64,
    /// Signal answers that refused a late signal.
    pub signals_late_refused: u64,
    /// Waits that timed out.
    pub waits_timed_out: u64,
    /// Crashes with a group member under way, and with a saga waiting.
    pub crashes_in_group: u64,
    pub crashes_in_wait: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.digest = self.digest.wrapping_add(o.digest);
        self.sagas += o.sagas;
        self.completed += o.completed;
        self.compensated += o.compensated;
        self.crashes += o.crashes;
        self.graceful_stops += o.graceful_stops;
        self.crashes_mid_flush += o.crashes_mid_flush;
        self.writes_lost += o.writes_lost;
        self.writes_kept += o.writes_kept;
        self.crashes_mid_call += o.crashes_mid_call;
        self.crashes_after_retry += o.crashes_after_retry;
        self.index_repairs += o.index_repairs;
        self.unacked_starts_lost += o.unacked_starts_lost;
        self.stuck += o.stuck;
        self.operator_retries += o.operator_retries;
        self.cancels_acked += o.cancels_acked;
        self.lost_replies += o.lost_replies;
        self.timeouts += o.timeouts;
        self.duplicates += o.duplicates;
        self.late_refused += o.late_refused;
        self.late_noop += o.late_noop;
        self.rejections += o.rejections;
        self.comp_failures += o.comp_failures;
        self.groups += o.groups;
        self.waits += o.waits;
        self.signals += o.signals;
        self.signals_late_refused += o.signals_late_refused;
        self.waits_timed_out += o.waits_timed_out;
        self.crashes_in_group += o.crashes_in_group;
        self.crashes_in_wait += o.crashes_in_wait;
    }
}

/// The participants' side of the world: what took effect, what was undone,
/// and every call in the order it arrived. Survives engine crashes.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Effect state by idempotency key.
    pub effects: BTreeMap<String, Effect>,
    /// Times each key's effect was applied (must never exceed 1).
    pub applied: BTreeMap<String, u32>,
    /// The saga id participants saw for each request.
    pub saga_of: BTreeMap<usize, SagaId>,
    /// Step indices of forward calls, per request, in arrival order.
    pub runs: BTreeMap<usize, Vec<usize>>,
    /// Step indices of compensation calls, per request, in arrival order.
    pub comps: BTreeMap<usize, Vec<usize>>,
    /// Compensation failures injected so far, by key.
    pub comp_failures: BTreeMap<String, u32>,
    /// Keys whose compensation already hung once.
    pub comp_timed_out: BTreeSet<String>,
    /// Requests whose broken compensation the operator fixed.
    pub fixed: BTreeSet<usize>,
    /// Requests whose for-good-broken compensation was called before the fix.
    pub broken_comp_called: BTreeSet<usize>,
    /// Requests whose cancel was sent / acknowledged.
    pub cancel_sent: BTreeSet<usize>,
    pub cancel_acked: BTreeSet<usize>,
    /// The id every acknowledged start of a request returned.
    pub acks: BTreeMap<usize, SagaId>,
    /// The engine's answers to each request's signals, in order.
    pub signal_answers: BTreeMap<usize, Vec<String>>,
    /// What went wrong, as it was seen.
    pub violations: Vec<String>,
    pub stats: Stats,
}

/// One simulated run.
pub struct World {
    pub sabotage: Sabotage,
    rng: Mutex<StdRng>,
    trace: Mutex<Vec<String>>,
    ledger: Mutex<Ledger>,
    pub plans: Vec<SagaPlan>,
    engine: Mutex<Option<Engine>>,
    /// Woken whenever a compensation undoes (or tombstones) a key, for the
    /// late requests waiting to arrive after it.
    pub compensated: tokio::sync::Notify,
    /// Operator retries that the engine accepted so far, for a stop
    /// planned shortly after one.
    pub retries: tokio::sync::watch::Sender<u64>,
    t0: tokio::time::Instant,
    /// Work the participants' side still has in flight (late deliveries):
    /// it outlives engine crashes, as another process would.
    remote: Mutex<Vec<JoinHandle<()>>>,
    /// Client work spawned from inside the engine's process lifetime (a
    /// cancel in flight): it dies with the process.
    clients: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Between a crash and the next engine opening: nothing may call a
    /// participant then.
    down: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    /// A world for `seed`; draws the plan of every saga from its generator.
    /// Call inside the run's (paused) runtime.
    pub fn new(seed: u64, sabotage: Sabotage) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.gen_range(3..=8);
        let plans = (0..n)
            .map(|no| {
                let steps = rng.gen_range(2..=5);
                SagaPlan {
                    key: format!("req-{no}"),
                    start_at_ms: rng.gen_range(0..400),
                    dup_start: rng.gen_bool(0.2),
                    cancel: rng.gen_bool(0.12).then(|| {
                        let when = if rng.gen_bool(0.5) {
                            CancelWhen::DuringCall
                        } else {
                            CancelWhen::DuringBackoff
                        };
                        (rng.gen_range(0..steps), when)
                    }),
                    steps: (0..steps)
                        .map(|_| StepPlan {
                            reject: rng.gen_bool(0.07),
                            comp: match rng.gen_range(0..100) {
                                0..=59 => CompFault::None,
                                60..=79 => CompFault::FailTimes(rng.gen_range(1..=2)),
                                80..=91 => CompFault::TimeoutOnce(rng.gen_range(1..=40)),
                                _ => CompFault::Forever,
                            },
                        })
                        .collect(),
                    shape: {
                        use super::shapes::{Shape, SignalPlan};
                        match rng.gen_range(0..100) {
                            0..=49 => Shape::Chain,
                            50..=74 if steps >= 3 => Shape::Group,
                            50..=74 => Shape::Chain,
                            _ => Shape::Wait(match rng.gen_range(0..5) {
                                0 => SignalPlan::OnTime,
                                1 => SignalPlan::Early,
                                2 => SignalPlan::Duplicate,
                                3 => SignalPlan::Late,
                                _ => SignalPlan::Never,
                            }),
                        }
                    },
                }
            })
            .collect();
        World {
            sabotage,
            rng: Mutex::new(rng),
            trace: Mutex::new(Vec::with_capacity(512)),
            ledger: Mutex::new(Ledger::default()),
            plans,
            engine: Mutex::new(None),
            compensated: tokio::sync::Notify::new(),
            retries: tokio::sync::watch::Sender::new(0),
            t0: tokio::time::Instant::now(),
            remote: Mutex::new(Vec::new()),
            clients: Mutex::new(Vec::new()),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Virtual ms since the run began.
    pub fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// The instant `ms` virtual ms after the run began.
    pub fn at(&self, ms: u64) -> tokio::time::Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Appends a line to the trace, stamped with the virtual time.
    pub fn log(&self, line: String) {
        let t = self.now_ms();
        lock(&self.trace).push(format!("{t:>6} {line}"));
    }

    pub fn trace(&self) -> Vec<String> {
        lock(&self.trace).clone()
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Records a broken invariant, seen as it happened.
    pub fn violation(&self, what: String) {
        self.log(format!("VIOLATION {what}"));
        self.ledger().violations.push(what);
    }

    pub fn rng_u64(&self) -> u64 {
        lock(&self.rng).gen()
    }

    pub fn below(&self, n: u64) -> u64 {
        lock(&self.rng).gen_range(0..n)
    }

    pub fn range(&self, r: std::ops::RangeInclusive<u64>) -> u64 {
        lock(&self.rng).gen_range(r)
    }

    pub fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn set_engine(&self, e: Option<Engine>) {
        *lock(&self.engine) = e;
    }

    pub fn engine(&self) -> Option<Engine> {
        lock(&self.engine).clone()
    }

    /// Runs `work` as the participants' own background work.
    pub fn spawn_remote(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.remote).push(tokio::spawn(work));
    }

    /// Runs `work` as a client of the current engine process.
    pub fn spawn_client<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let h = tokio::spawn(work);
        lock(&self.clients).push(h.abort_handle());
        h
    }

    /// The engine process died (`true`) or a new one opened (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for h in lock(&self.clients).drain(..) {
                h.abort();
            }
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn take_remote(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.remote))
    }

    /// Draws what a participant does with one forward call.
    pub fn draw_fault(&self, reject: bool) -> Fault {
        let r = self.below(100);
        if reject {
            return match r {
                0..=24 => Fault::RetryBefore,
                25..=39 => Fault::TimeoutBefore(self.range(1..=40)),
                _ => Fault::Reject,
            };
        }
        match r {
            0..=44 => Fault::Ok,
            45..=52 => Fault::Slow(self.range(1..=20)),
            53..=62 => Fault::RetryBefore,
            63..=70 => Fault::LostReply,
            71..=77 => Fault::TimeoutBefore(self.range(1..=40)),
            78..=88 => Fault::Duplicate,
            _ => Fault::LateAfterCompensation,
        }
    }

    /// A forward request for `key` arrives at the participant.
    pub fn deliver(&self, no: usize, step: usize, key: &str, via: &str) -> Applied {
        let reject = self.plans[no].steps[step].reject;
        let outcome = {
            let mut l = self.ledger();
            let l = &mut *l;
            let outcome = match l.effects.get(key).copied() {
                Some(Effect::Applied) if self.sabotage == Sabotage::NotIdempotent => {
                    *l.applied.entry(key.to_string()).or_default() += 1;
                    Applied::Now
                }
                Some(Effect::Applied) => Applied::Already,
                Some(Effect::Undone | Effect::Tombstone)
                    if self.sabotage != Sabotage::NoTombstones =>
                {
                    Applied::Refused
                }
                _ if reject => Applied::Rejected,
                _ => {
                    l.effects.insert(key.to_string(), Effect::Applied);
                    *l.applied.entry(key.to_string()).or_default() += 1;
                    Applied::Now
                }
            };
            if via == "late" {
                match outcome {
                    Applied::Refused => l.stats.late_refused += 1,
                    _ => l.stats.late_noop += 1,
                }
            }
            outcome
        };
        self.log(format!("ledger apply {key} via {via}: {outcome:?}"));
        outcome
    }

    /// A compensation for `key` arrives at the participant.
    pub fn undo(&self, key: &str, via: &str) {
        let what = {
            let mut l = self.ledger();
            match l.effects.get(key).copied() {
                Some(Effect::Applied) => {
                    l.effects.insert(key.to_string(), Effect::Undone);
                    "undone"
                }
                None => {
                    l.effects.insert(key.to_string(), Effect::Tombstone);
                    "tombstoned"
                }
                Some(_) => "already undone",
            }
        };
        self.log(format!("ledger undo {key} via {via}: {what}"));
        self.compensated.notify_waiters();
    }

    /// True once `key` was compensated (undone or tombstoned).
    pub fn is_compensated(&self, key: &str) -> bool {
        matches!(
            self.ledger().effects.get(key),
            Some(Effect::Undone | Effect::Tombstone)
        )
    }

    /// Records an acknowledged start; every ack of one request must name
    /// the same saga.
    pub fn ack(&self, no: usize, id: &SagaId) {
        let prev = self.ledger().acks.insert(no, id.clone());
        self.log(format!("client start req-{no} acked: {id}"));
        if let Some(prev) = prev {
            if &prev != id {
                self.violation(format!(
                    "req-{no}: a start was acknowledged with {id}, an earlier one with {prev}"
                ));
            }
        }
    }

    pub fn acked(&self, no: usize) -> Option<SagaId> {
        self.ledger().acks.get(&no).cloned()
    }

    pub fn note_final(&self, no: usize, status: SagaStatus) {
        self.log(format!("client req-{no} saw {status}"));
    }
}
