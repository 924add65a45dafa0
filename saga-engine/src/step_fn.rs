//! Steps declared with closures instead of a struct and a trait impl, the
//! placeholder step behind waits and sleeps, and the sink that moves a
//! signal's payload into the saga's data.
//!
//! A closure step takes the data by value and returns it, which is what an
//! `async move` block can do without naming lifetimes.

use crate::definition::{Step, StepContext, StepError};
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type RunFn<D> = Arc<dyn Fn(StepContext, D) -> BoxFut<Result<D, StepError>> + Send + Sync>;
type CompFn<D> = Arc<dyn Fn(StepContext, D) -> BoxFut<Result<(), StepError>> + Send + Sync>;

/// A step made of a `run` closure and an optional `compensate` closure.
pub(crate) struct FnStep<D> {
    run: RunFn<D>,
    compensate: Option<CompFn<D>>,
}

impl<D: Send + 'static> FnStep<D> {
    pub(crate) fn new<R, RF, C, CF>(run: R, compensate: Option<C>) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: Future<Output = Result<D, StepError>> + Send + 'static,
        C: Fn(StepContext, D) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        FnStep {
            run: Arc::new(move |c, d| Box::pin(run(c, d))),
            compensate: compensate.map(|c| {
                let c: CompFn<D> = Arc::new(move |x, d| Box::pin(c(x, d)));
                c
            }),
        }
    }

    pub(crate) fn run_only<R, RF>(run: R) -> Self
    where
        R: Fn(StepContext, D) -> RF + Send + Sync + 'static,
        RF: Future<Output = Result<D, StepError>> + Send + 'static,
    {
        FnStep {
            run: Arc::new(move |c, d| Box::pin(run(c, d))),
            compensate: None,
        }
    }
}

#[async_trait]
impl<D: Clone + Send + Sync + 'static> Step<D> for FnStep<D> {
    async fn run(&self, ctx: &StepContext, data: &mut D) -> Result<(), StepError> {
        *data = (self.run)(ctx.clone(), data.clone()).await?;
        Ok(())
    }

    async fn compensate(&self, ctx: &StepContext, data: &D) -> Result<(), StepError> {
        match &self.compensate {
            Some(c) => c(ctx.clone(), data.clone()).await,
            None => Ok(()),
        }
    }
}

/// The step behind a wait or a sleep: the machine never asks the runtime
/// to run it (a wait is a state, not a call).
pub(crate) struct Waiting;

#[async_trait]
impl<D: Send + Sync + 'static> Step<D> for Waiting {
    async fn run(&self, _ctx: &StepContext, _data: &mut D) -> Result<(), StepError> {
        Ok(())
    }
    async fn compensate(&self, _ctx: &StepContext, _data: &D) -> Result<(), StepError> {
        Ok(())
    }
}

type Deliver<D> = Arc<dyn Fn(&mut D, serde_json::Value) -> Result<(), String> + Send + Sync>;
type Check = Arc<dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync>;

/// Decodes a signal's payload as the wait's type `P` and hands it to the
/// user's closure.
pub(crate) struct SignalSink<D> {
    deliver: Deliver<D>,
    check: Check,
}

impl<D: 'static> SignalSink<D> {
    pub(crate) fn new<P, F>(f: F) -> Self
    where
        P: serde::de::DeserializeOwned + 'static,
        F: Fn(&mut D, P) + Send + Sync + 'static,
    {
        SignalSink {
            deliver: Arc::new(move |d, v| {
                let p = P::deserialize(v)
                    .map_err(|e| format!("signal payload does not decode: {e}"))?;
                f(d, p);
                Ok(())
            }),
            check: Arc::new(|v| {
                P::deserialize(v)
                    .map(|_| ())
                    .map_err(|e| format!("signal payload does not decode: {e}"))
            }),
        }
    }

    pub(crate) fn check(&self, v: &serde_json::Value) -> Result<(), String> {
        (self.check)(v)
    }

    pub(crate) fn deliver(&self, d: &mut D, v: serde_json::Value) -> Result<(), String> {
        (self.deliver)(d, v)
    }
}
