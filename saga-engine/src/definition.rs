//! How a user declares a saga: a name, a version and ordered steps, each
//! with its class (compensatable, read-only, pivot, retriable), its kind
//! (an action, a wait for a signal, a sleep) and its retry policies.
//!
//! The builder enforces the model: at most one pivot; before it only
//! compensatable or read-only steps (and waits), after it only retriable
//! steps and sleeps. A wrong order is refused with [`crate::Error::StepOrder`].
//!
//! Saga data is a user type `D` (serde): every step reads it and may update
//! it, and the engine persists it after each step, so what one step writes
//! (a hold id, an authorization code) is what the next step and the
//! compensations read.

use crate::machine::{StepClass, StepKind, StepPolicy};
use crate::retry::RetryPolicy;
use crate::step_fn::{FnStep, SignalSink, Waiting};
use crate::SagaId;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// What a step (or compensation) is told about the call it is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// The saga.
    pub saga_id: SagaId,
    /// The step's name.
    pub step: String,
    /// 1-based attempt number of this call (forward or compensation).
    pub attempt: u32,
    /// Stable across every attempt and the compensation of this step:
    /// `"{saga_id}:{step}"`. Participants use it to apply an effect once and
    /// to find the effect to undo.
    pub idempotency_key: String,
    /// The lease generation the engine holds the saga under, in a store
    /// shared by several engine processes (0 otherwise). A participant that
    /// remembers the highest token seen per key can refuse a call from a
    /// stale owner.
    pub fencing_token: u64,
}

/// How a step or compensation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Transient (network, timeout, busy): retried per the policy; the call
    /// is in doubt, so if the saga compensates, this step is compensated too.
    #[error("retryable: {0}")]
    Retryable(String),
    /// A business "no" (card declined, no seats): the step took no effect
    /// and the saga compensates at once.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl StepError {
    /// A transient failure.
    pub fn retryable(msg: impl fmt::Display) -> Self {
        StepError::Retryable(msg.to_string())
    }
    /// A business rejection.
    pub fn rejected(msg: impl fmt::Display) -> Self {
        StepError::Rejected(msg.to_string())
    }
}

/// One step of a saga over data `D`.
///
/// `run` may be called more than once for one saga (after a timeout or a
/// crash) and `compensate` may be called for a step whose `run` never
/// arrived: both must be idempotent under [`StepContext::idempotency_key`].
#[async_trait]
pub trait Step<D>: Send + Sync + 'static {
    /// Does the step's work; may update `data` for later steps.
    async fn run(&self, ctx: &StepContext, data: &mut D) -> Result<(), StepError>;

    /// Undoes the step's work. A compensation that finds nothing to undo
    /// succeeds. Only `Retryable` matters here: any error is retried per the
    /// compensation policy, and past it the saga is parked as `Stuck`.
    async fn compensate(&self, ctx: &StepContext, data: &D) -> Result<(), StepError>;
}

pub(crate) struct StepEntry<D> {
    pub(crate) name: String,
    pub(crate) step: Arc<dyn Step<D>>,
    pub(crate) policy: StepPolicy,
    /// For a signal wait: how its payload reaches the data.
    pub(crate) sink: Option<SignalSink<D>>,
    /// The parallel group the step belongs to.
    pub(crate) group: Option<String>,
    /// For a sleep until a time: the instant, from the data.
    pub(crate) wake: Option<WakeAt<D>>,
}

/// When a [`SagaDefinitionBuilder::sleep_until`] step wakes, from the data.
pub(crate) type WakeAt<D> = Arc<dyn Fn(&D) -> std::time::SystemTime + Send + Sync>;

/// Milliseconds since the Unix epoch (0 before it).
fn epoch_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What is wrong with the order or the classes of a definition's steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepOrderProblem {
    /// A second pivot (a saga has at most one point of no return).
    #[error("a second pivot (the first is {first:?})")]
    SecondPivot {
        /// The first pivot's name.
        first: String,
    },
    /// A compensatable or read-only step after the pivot: nothing after the
    /// pivot is ever compensated, so it must be declared retriable.
    #[error("a compensatable or read-only step after the pivot (declare it retriable)")]
    CompensatableAfterPivot,
    /// A retriable step without a pivot before it.
    #[error("a retriable step before any pivot (retriable steps follow the pivot)")]
    RetriableBeforePivot,
    /// A signal wait after the pivot: its timeout could not be undone.
    #[error("a signal wait after the pivot (a timeout there could not be compensated)")]
    WaitAfterPivot,
    /// The pivot inside a parallel group: the point of no return must be
    /// one step, not one of several running at once.
    #[error("the pivot is inside the parallel group {group:?}")]
    PivotInGroup {
        /// The group.
        group: String,
    },
    /// A wait, a sleep or a retriable step inside a parallel group: members
    /// are actions before the pivot (compensatable or read-only).
    #[error("a {what} inside the parallel group {group:?} (members are compensatable or read-only actions)")]
    NotAGroupMember {
        /// The group.
        group: String,
        /// What the step is.
        what: &'static str,
    },
    /// A parallel group after the pivot.
    #[error("the parallel group {group:?} comes after the pivot")]
    GroupAfterPivot {
        /// The group.
        group: String,
    },
    /// A parallel group without members, or one whose name is used twice.
    #[error("the parallel group {group:?} is empty or its name is used twice")]
    BadGroup {
        /// The group.
        group: String,
    },
    /// A policy setter called before any step (it would apply to nothing).
    #[error("{setter}() called before any step")]
    PolicyBeforeAnyStep {
        /// The setter.
        setter: &'static str,
    },
}

/// A saga: name, version and ordered steps. Build it with [`SagaDefinition::builder`].
///
/// ```
/// use saga_engine::{SagaDefinition, Step, StepContext, StepError, RetryPolicy};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { paid: bool }
///
/// struct Pay;
/// #[saga_engine::async_trait]
/// impl Step<Order> for Pay {
///     async fn run(&self, _ctx: &StepContext, o: &mut Order) -> Result<(), StepError> {
///         o.paid = true;
///         Ok(())
///     }
///     async fn compensate(&self, _ctx: &StepContext, _o: &Order) -> Result<(), StepError> {
///         Ok(())
///     }
/// }
///
/// let def = SagaDefinition::<Order>::builder("order", 1)
///     .step("pay", Pay)
///     .retry(RetryPolicy::default().max_attempts(3))
///     .build()
///     .unwrap();
/// assert_eq!(def.step_names(), vec!["pay"]);
/// ```
pub struct SagaDefinition<D> {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) steps: Vec<StepEntry<D>>,
    pub(crate) deadline: Option<std::time::Duration>,
    /// Search attributes, computed at create (see `search.rs`).
    pub(crate) attributes: Vec<crate::search::SearchAttribute<D>>,
}

impl<D> fmt::Debug for SagaDefinition<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "steps",
                &self
                    .steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<D: Send + Sync + 'static> SagaDefinition<D> {
    /// Starts a definition named `name` at `version`.
    pub fn builder(name: impl Into<String>, version: u32) -> SagaDefinitionBuilder<D> {
        SagaDefinitionBuilder {
            name: name.into(),
            version,
            steps: Vec::new(),
            default_policy: RetryPolicy::default(),
            default_compensation: RetryPolicy::default().max_attempts(10),
            deadline: None,
            misuse: None,
            bad_group: None,
            attributes: Vec::new(),
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Step names in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    /// Each step's class, in order.
    pub fn step_classes(&self) -> Vec<StepClass> {
        self.steps.iter().map(|s| s.policy.class).collect()
    }

    /// The overall deadline each saga of this definition gets, counted
    /// from its start.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.deadline
    }

    /// Names of the declared search attributes, in declaration order.
    pub fn search_attribute_names(&self) -> Vec<&str> {
        self.attributes.iter().map(|a| a.name.as_str()).collect()
    }
}

/// Builds a [`SagaDefinition`]. Policy setters apply to the step added last.
pub struct SagaDefinitionBuilder<D> {
    name: String,
    version: u32,
    steps: Vec<StepEntry<D>>,
    default_policy: RetryPolicy,
    default_compensation: RetryPolicy,
    deadline: Option<std::time::Duration>,
    misuse: Option<&'static str>,
    /// An empty group, refused by `build`.
    bad_group: Option<String>,
    pub(crate) attributes: Vec<crate::search::SearchAttribute<D>>,
}

impl<D: Send + Sync + 'static> SagaDefinitionBuilder<D> {
    /// Policy given to steps added after this call (default: [`RetryPolicy::default`]).
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// Compensation policy given to steps added after this call
    /// (default: 10 attempts, otherwise [`RetryPolicy::default`]).
    pub fn default_compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_compensation = policy;
        self
    }

    /// Gives every saga of this definition an overall deadline, counted
    /// from its start. Passed before the pivot, the saga compensates with a
    /// reason that says so; passed after it, the saga goes on and is
    /// flagged overdue.
    pub fn deadline(mut self, within: std::time::Duration) -> Self {
        self.deadline = Some(within);
        self
    }

    fn push(
        mut self,
        name: String,
        step: Arc<dyn Step<D>>,
        class: StepClass,
        kind: StepKind,
    ) -> Self {
        self.steps.push(StepEntry {
            name,
            step,
            policy: StepPolicy {
                forward: self.default_policy.clone(),
                compensation: self.default_compensation.clone(),
                class,
                kind,
            },
            sink: None,
            group: None,
            wake: None,
        });
        self
    }

    /// Appends a compensatable step.
    pub fn step(self, name: impl Into<String>, step: impl Step<D>) -> Self {
        self.push(
            name.into(),
            Arc::new(step),
            StepClass::Compensatable,
            StepKind::Action,
        )
    }

    /// Appends a compensatable step given as an `Arc` (to share one participant between steps).
    pub fn step_arc(self, name: impl Into<String>, step: Arc<dyn Step<D>>) -> Self {
        self.push(
            name.into(),
            step,
            StepClass::Compensatable,
            StepKind::Action,
        )
    }

    /// Appends a step of the given class (a trait step whose compensation
    /// is never called unless it is [`StepClass::Compensatable`]).
    pub fn step_as(self, name: impl Into<String>, class: StepClass, step: impl Step<D>) -> Self {
        self.push(name.into(), Arc::new(step), class, StepKind::Action)
    }

    /// Appends a compensatable step from two closures over the owned data:
    /// `run` returns the (updated) data, `compensate` undoes the effect.
    ///
    /// ```
    /// # use saga_engine::{SagaDefinition, StepError};
    /// let def = SagaDefinition::<u32>::builder("count", 1)
    ///     .action("add", |_ctx, n| async move { Ok(n + 1) }, |_ctx, _n| async move { Ok(()) })
    ///     .build()
    ///     .unwrap();
    /// # let _ = def;
    /// ```
    pub fn action<R, RF, C, CF>(self, name: impl Into<String>, run: R, compensate: C) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: std::future::Future<Output = Result<D, StepError>> + Send + 'static,
        C: Fn(StepContext, D) -> CF + Send + Sync + 'static,
        CF: std::future::Future<Output = Result<(), StepError>> + Send + 'static,
        D: Clone,
    {
        let step = FnStep::new(run, Some(compensate));
        self.push(
            name.into(),
            Arc::new(step),
            StepClass::Compensatable,
            StepKind::Action,
        )
    }

    /// Appends a step with nothing to undo before the pivot (a read, a
    /// check), from a closure.
    pub fn read_only<R, RF>(self, name: impl Into<String>, run: R) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: std::future::Future<Output = Result<D, StepError>> + Send + 'static,
        D: Clone,
    {
        self.push(
            name.into(),
            Arc::new(FnStep::run_only(run)),
            StepClass::ReadOnly,
            StepKind::Action,
        )
    }

    /// Appends the pivot, from a closure: once it has succeeded the saga
    /// only moves forward; if it is rejected, the steps before it are
    /// compensated; in doubt past its policy, the saga is parked stuck
    /// forward (an operator retry runs it again with the same key).
    pub fn pivot<R, RF>(self, name: impl Into<String>, run: R) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: std::future::Future<Output = Result<D, StepError>> + Send + 'static,
        D: Clone,
    {
        self.push(
            name.into(),
            Arc::new(FnStep::run_only(run)),
            StepClass::Pivot,
            StepKind::Action,
        )
    }

    /// Appends a retriable step after the pivot, from a closure: retried
    /// until it succeeds, parked stuck forward past its policy, never
    /// compensated.
    pub fn retriable<R, RF>(self, name: impl Into<String>, run: R) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: std::future::Future<Output = Result<D, StepError>> + Send + 'static,
        D: Clone,
    {
        self.push(
            name.into(),
            Arc::new(FnStep::run_only(run)),
            StepClass::Retriable,
            StepKind::Action,
        )
    }

    /// Appends a durable wait for the signal `signal` (see
    /// [`crate::Engine::signal`]): the saga holds no worker while it waits;
    /// `deliver` moves the signal's payload `P` into the data. Not
    /// signalled within `timeout`, the step is rejected (timed out) and the
    /// saga compensates. A signal that arrives before the wait begins is
    /// kept for it.
    pub fn wait_for<P, F>(
        mut self,
        name: impl Into<String>,
        signal: impl Into<String>,
        timeout: std::time::Duration,
        deliver: F,
    ) -> Self
    where
        P: serde::de::DeserializeOwned + 'static,
        F: Fn(&mut D, P) + Send + Sync + 'static,
    {
        let kind = StepKind::Signal {
            name: signal.into(),
            timeout_ms: timeout.as_millis() as u64,
        };
        self = self.push(name.into(), Arc::new(Waiting), StepClass::ReadOnly, kind);
        if let Some(last) = self.steps.last_mut() {
            last.sink = Some(SignalSink::new(deliver));
        }
        self
    }

    /// Appends a durable sleep of `duration` (the saga holds no worker
    /// meanwhile). Allowed anywhere, the pivot's far side included.
    pub fn sleep(self, name: impl Into<String>, duration: std::time::Duration) -> Self {
        let after_pivot = self
            .steps
            .iter()
            .any(|s| s.policy.class == StepClass::Pivot);
        let class = if after_pivot {
            StepClass::Retriable
        } else {
            StepClass::ReadOnly
        };
        let kind = StepKind::Sleep {
            for_ms: duration.as_millis() as u64,
        };
        self.push(name.into(), Arc::new(Waiting), class, kind)
    }

    /// Appends a durable sleep until a wall-clock instant that `at`
    /// computes from the saga's data (a departure time, a hold's expiry),
    /// as [`SagaDefinitionBuilder::sleep`] does for a duration: the saga
    /// holds no worker meanwhile, and the wake time, fixed when the sleep
    /// begins, survives restarts. An instant already past wakes at once.
    /// Allowed anywhere, the pivot's far side included.
    ///
    /// ```
    /// # use saga_engine::SagaDefinition;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct Hold { expires_at_ms: u64 }
    /// let def = SagaDefinition::<Hold>::builder("hold", 1)
    ///     .sleep_until("until_expiry", |h: &Hold| {
    ///         UNIX_EPOCH + Duration::from_millis(h.expires_at_ms)
    ///     })
    ///     .read_only("expire", |_c, h| async move { Ok(h) })
    ///     .build()
    ///     .unwrap();
    /// # let _ = def;
    /// ```
    pub fn sleep_until<F>(self, name: impl Into<String>, at: F) -> Self
    where
        F: Fn(&D) -> std::time::SystemTime + Send + Sync + 'static,
    {
        let after_pivot = self
            .steps
            .iter()
            .any(|s| s.policy.class == StepClass::Pivot);
        let class = if after_pivot {
            StepClass::Retriable
        } else {
            StepClass::ReadOnly
        };
        let mut b = self.push(
            name.into(),
            Arc::new(Waiting),
            class,
            StepKind::SleepUntil { at_ms: 0 },
        );
        if let Some(last) = b.steps.last_mut() {
            last.wake = Some(Arc::new(at));
        }
        b
    }

    /// Appends a parallel group: the steps `members` adds run concurrently
    /// as one position of the saga, and the group succeeds when all of
    /// them do. When one is rejected (or in doubt past its policy), the
    /// members still running are told so ([`StepContext::is_cancelled`]),
    /// and once none runs, every member that succeeded or is in doubt is
    /// compensated, then the steps before the group, newest first. Each
    /// member has its own idempotency key (`{saga}:{member}`); after a
    /// crash only the members that had not finished run again. Members
    /// are compensatable or read-only actions before the pivot (`build`
    /// refuses anything else with [`crate::Error::StepOrder`]).
    ///
    /// ```
    /// # use saga_engine::SagaDefinition;
    /// let def = SagaDefinition::<u32>::builder("trip", 1)
    ///     .group("legs", |g| {
    ///         g.action("outbound", |_c, n| async move { Ok(n) }, |_c, _n| async move { Ok(()) })
    ///             .action("return", |_c, n| async move { Ok(n) }, |_c, _n| async move { Ok(()) })
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = def;
    /// ```
    pub fn group(
        mut self,
        name: impl Into<String>,
        members: impl FnOnce(SagaDefinitionBuilder<D>) -> SagaDefinitionBuilder<D>,
    ) -> Self {
        let name = name.into();
        let inner = members(SagaDefinitionBuilder {
            name: self.name.clone(),
            version: self.version,
            steps: Vec::new(),
            default_policy: self.default_policy.clone(),
            default_compensation: self.default_compensation.clone(),
            deadline: None,
            misuse: None,
            bad_group: None,
            attributes: Vec::new(),
        });
        self.misuse = self.misuse.or(inner.misuse);
        if inner.steps.is_empty() {
            self.bad_group = self.bad_group.take().or(Some(name.clone()));
        }
        for mut s in inner.steps {
            s.group = Some(name.clone());
            self.steps.push(s);
        }
        self
    }

    /// Sets the forward retry policy of the step added last (refused by
    /// `build` if there is none yet).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        match self.steps.last_mut() {
            Some(s) => s.policy.forward = policy,
            None => self.misuse = self.misuse.or(Some("retry")),
        }
        self
    }

    /// Sets the compensation retry policy of the step added last (refused
    /// by `build` if there is none yet).
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        match self.steps.last_mut() {
            Some(s) => s.policy.compensation = policy,
            None => self.misuse = self.misuse.or(Some("compensation_retry")),
        }
        self
    }

    /// Checks and builds the definition: a non-empty name, at least one
    /// step, unique non-empty step names, and the step order of the model
    /// (see the module docs).
    pub fn build(self) -> Result<SagaDefinition<D>, crate::Error> {
        let invalid = |reason: String| crate::Error::InvalidDefinition {
            name: self.name.clone(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        if self.steps.is_empty() {
            return Err(invalid("a saga needs at least one step".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.steps {
            if s.name.trim().is_empty() {
                return Err(invalid("a step name is empty".into()));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(invalid(format!("step name {:?} is used twice", s.name)));
            }
        }
        let order = |step: &str, problem: StepOrderProblem| crate::Error::StepOrder {
            name: self.name.clone(),
            step: step.to_string(),
            problem,
        };
        if let Some(setter) = self.misuse {
            let first = self.steps[0].name.clone();
            return Err(order(
                &first,
                StepOrderProblem::PolicyBeforeAnyStep { setter },
            ));
        }
        if let Some(group) = self.bad_group.clone() {
            let first = self.steps[0].name.clone();
            return Err(order(&first, StepOrderProblem::BadGroup { group }));
        }
        let mut pivot: Option<&str> = None;
        let mut groups_done: Vec<&str> = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let Some(group) = s.group.as_deref() else {
                continue;
            };
            let g = || group.to_string();
            let starts = i == 0 || self.steps[i - 1].group.as_deref() != Some(group);
            if starts {
                if groups_done.contains(&group) {
                    return Err(order(&s.name, StepOrderProblem::BadGroup { group: g() }));
                }
                groups_done.push(group);
            }
            if self.steps[..i]
                .iter()
                .any(|x| x.policy.class == StepClass::Pivot)
            {
                return Err(order(
                    &s.name,
                    StepOrderProblem::GroupAfterPivot { group: g() },
                ));
            }
            let what = match (s.policy.class, &s.policy.kind) {
                (StepClass::Pivot, _) => {
                    return Err(order(
                        &s.name,
                        StepOrderProblem::PivotInGroup { group: g() },
                    ))
                }
                (_, StepKind::Signal { .. }) => Some("signal wait"),
                (_, StepKind::Sleep { .. } | StepKind::SleepUntil { .. }) => Some("sleep"),
                (StepClass::Retriable, _) => Some("retriable step"),
                _ => None,
            };
            if let Some(what) = what {
                return Err(order(
                    &s.name,
                    StepOrderProblem::NotAGroupMember { group: g(), what },
                ));
            }
        }
        for s in &self.steps {
            let class = s.policy.class;
            match (pivot, class) {
                (Some(first), StepClass::Pivot) => {
                    return Err(order(
                        &s.name,
                        StepOrderProblem::SecondPivot {
                            first: first.into(),
                        },
                    ))
                }
                (None, StepClass::Pivot) => pivot = Some(&s.name),
                (None, StepClass::Retriable)
                    if !matches!(
                        s.policy.kind,
                        StepKind::Sleep { .. } | StepKind::SleepUntil { .. }
                    ) =>
                {
                    return Err(order(&s.name, StepOrderProblem::RetriableBeforePivot))
                }
                (Some(_), _) if matches!(s.policy.kind, StepKind::Signal { .. }) => {
                    return Err(order(&s.name, StepOrderProblem::WaitAfterPivot))
                }
                (Some(_), StepClass::Compensatable | StepClass::ReadOnly) => {
                    return Err(order(&s.name, StepOrderProblem::CompensatableAfterPivot))
                }
                _ => {}
            }
        }
        Ok(SagaDefinition {
            name: self.name,
            version: self.version,
            steps: self.steps,
            deadline: self.deadline,
            attributes: self.attributes,
        })
    }

    /// Builds without checking the step order (for tests that must plant a
    /// malformed saga, e.g. the simulation's own defect checks).
    #[doc(hidden)]
    pub fn build_unchecked(self) -> SagaDefinition<D> {
        SagaDefinition {
            name: self.name,
            version: self.version,
            steps: self.steps,
            deadline: self.deadline,
            attributes: self.attributes,
        }
    }
}

/// A definition with its data type erased to JSON, as the registry holds it.
#[async_trait]
pub(crate) trait ErasedDefinition: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    fn step_names(&self) -> Vec<String>;
    /// Each step's parallel group, in step order.
    fn groups(&self) -> Vec<Option<String>>;
    fn policies(&self) -> &[StepPolicy];
    /// The policies as they stand for `data`: those of
    /// [`SagaDefinitionBuilder::sleep_until`] steps carry the instant
    /// computed from it (the others are [`ErasedDefinition::policies`]).
    fn policies_for(&self, data: &serde_json::Value) -> std::borrow::Cow<'_, [StepPolicy]>;
    fn deadline(&self) -> Option<std::time::Duration>;
    /// The search attributes of a new saga's data.
    fn search_attributes(
        &self,
        data: &serde_json::Value,
    ) -> std::collections::BTreeMap<String, String>;
    /// Checks that `payload` fits the signal wait `step` (so a bad payload
    /// is refused at delivery, not found later).
    fn check_signal(&self, step: usize, payload: &serde_json::Value) -> Result<(), String>;
    /// Checks that `data` decodes as the definition's data type (an
    /// operator's skip result, merged into the data, must).
    fn check_data(&self, data: &serde_json::Value) -> Result<(), String>;
    /// Moves a signal's payload into the data.
    fn deliver(
        &self,
        step: usize,
        data: &mut serde_json::Value,
        payload: serde_json::Value,
    ) -> Result<(), String>;
    async fn run(
        &self,
        step: usize,
        ctx: &StepContext,
        data: &mut serde_json::Value,
    ) -> Result<(), StepError>;
    async fn compensate(
        &self,
        step: usize,
        ctx: &StepContext,
        data: &serde_json::Value,
    ) -> Result<(), StepError>;
}

pub(crate) struct Erased<D> {
    def: SagaDefinition<D>,
    policies: Vec<StepPolicy>,
}

impl<D> Erased<D> {
    pub(crate) fn new(def: SagaDefinition<D>) -> Self {
        let policies = def.steps.iter().map(|s| s.policy.clone()).collect();
        Erased { def, policies }
    }
}

fn decode<D: DeserializeOwned>(data: &serde_json::Value) -> Result<D, StepError> {
    // A record that no longer fits the type is not going to fit on retry
    // either, but it must not be mistaken for a business rejection: report it
    // as retryable so the operator sees the saga stuck rather than undone.
    D::deserialize(data)
        .map_err(|e| StepError::Retryable(format!("saga data does not decode: {e}")))
}

#[async_trait]
impl<D> ErasedDefinition for Erased<D>
where
    D: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.def.name
    }
    fn version(&self) -> u32 {
        self.def.version
    }
    fn step_names(&self) -> Vec<String> {
        self.def.steps.iter().map(|s| s.name.clone()).collect()
    }
    fn groups(&self) -> Vec<Option<String>> {
        self.def.steps.iter().map(|s| s.group.clone()).collect()
    }
    fn policies(&self) -> &[StepPolicy] {
        &self.policies
    }
    fn policies_for(&self, data: &serde_json::Value) -> std::borrow::Cow<'_, [StepPolicy]> {
        if self.def.steps.iter().all(|s| s.wake.is_none()) {
            return std::borrow::Cow::Borrowed(&self.policies);
        }
        let typed: Option<D> = D::deserialize(data).ok();
        let mut out = self.policies.clone();
        for (p, s) in out.iter_mut().zip(&self.def.steps) {
            if let (Some(wake), StepKind::SleepUntil { at_ms }) = (&s.wake, &mut p.kind) {
                // Data that does not decode cannot say when: wake at once
                // (the next step reports the decode error).
                *at_ms = typed.as_ref().map_or(0, |d| epoch_ms(wake(d)));
            }
        }
        std::borrow::Cow::Owned(out)
    }
    fn deadline(&self) -> Option<std::time::Duration> {
        self.def.deadline
    }
    fn search_attributes(
        &self,
        data: &serde_json::Value,
    ) -> std::collections::BTreeMap<String, String> {
        crate::search::compute(&self.def.attributes, data)
    }
    fn check_signal(&self, step: usize, payload: &serde_json::Value) -> Result<(), String> {
        match self.def.steps.get(step).and_then(|s| s.sink.as_ref()) {
            Some(sink) => sink.check(payload),
            None => Ok(()),
        }
    }
    fn check_data(&self, data: &serde_json::Value) -> Result<(), String> {
        D::deserialize(data).map(drop).map_err(|e| e.to_string())
    }
    fn deliver(
        &self,
        step: usize,
        data: &mut serde_json::Value,
        payload: serde_json::Value,
    ) -> Result<(), String> {
        let Some(sink) = self.def.steps.get(step).and_then(|s| s.sink.as_ref()) else {
            return Ok(());
        };
        let mut typed: D =
            D::deserialize(&*data).map_err(|e| format!("saga data does not decode: {e}"))?;
        sink.deliver(&mut typed, payload)?;
        *data =
            serde_json::to_value(&typed).map_err(|e| format!("saga data does not encode: {e}"))?;
        Ok(())
    }
    async fn run(
        &self,
        step: usize,
        ctx: &StepContext,
        data: &mut serde_json::Value,
    ) -> Result<(), StepError> {
        let mut typed: D = decode(data)?;
        self.def.steps[step].step.run(ctx, &mut typed).await?;
        *data = serde_json::to_value(&typed)
            .map_err(|e| StepError::Retryable(format!("saga data does not encode: {e}")))?;
        Ok(())
    }
    async fn compensate(
        &self,
        step: usize,
        ctx: &StepContext,
        data: &serde_json::Value,
    ) -> Result<(), StepError> {
        let typed: D = decode(data)?;
        self.def.steps[step].step.compensate(ctx, &typed).await
    }
}
