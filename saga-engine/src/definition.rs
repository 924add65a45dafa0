//! How a user declares a saga: a name, a version and ordered steps, each with
//! a compensation and a retry policy.
//!
//! Saga data is a user type `D` (serde): every step reads it and may update
//! it, and the engine persists it after each step, so what one step writes
//! (a hold id, an authorization code) is what the next step and the
//! compensations read.

use crate::machine::StepPolicy;
use crate::retry::RetryPolicy;
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
}

/// Builds a [`SagaDefinition`]. Policy setters apply to the step added last.
pub struct SagaDefinitionBuilder<D> {
    name: String,
    version: u32,
    steps: Vec<StepEntry<D>>,
    default_policy: RetryPolicy,
    default_compensation: RetryPolicy,
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

    /// Appends a step.
    pub fn step(mut self, name: impl Into<String>, step: impl Step<D>) -> Self {
        self.steps.push(StepEntry {
            name: name.into(),
            step: Arc::new(step),
            policy: StepPolicy {
                forward: self.default_policy.clone(),
                compensation: self.default_compensation.clone(),
            },
        });
        self
    }

    /// Appends a step given as an `Arc` (to share one participant between steps).
    pub fn step_arc(mut self, name: impl Into<String>, step: Arc<dyn Step<D>>) -> Self {
        self.steps.push(StepEntry {
            name: name.into(),
            step,
            policy: StepPolicy {
                forward: self.default_policy.clone(),
                compensation: self.default_compensation.clone(),
            },
        });
        self
    }

    /// Sets the forward retry policy of the step added last.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.policy.forward = policy;
        }
        self
    }

    /// Sets the compensation retry policy of the step added last.
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.policy.compensation = policy;
        }
        self
    }

    /// Checks and builds the definition: at least one step, unique non-empty
    /// step names, a non-empty name.
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
        Ok(SagaDefinition {
            name: self.name,
            version: self.version,
            steps: self.steps,
        })
    }
}

/// A definition with its data type erased to JSON, as the registry holds it.
#[async_trait]
pub(crate) trait ErasedDefinition: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    fn step_names(&self) -> Vec<String>;
    fn policies(&self) -> &[StepPolicy];
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
    fn policies(&self) -> &[StepPolicy] {
        &self.policies
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
