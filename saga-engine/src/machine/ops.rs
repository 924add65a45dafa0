//! Operator operations as transitions of the machine: pause and resume,
//! retry-now, skip a step, force compensation, and starting a fresh saga
//! at a step (a re-run). Each either changes the state and returns what
//! to do next, or is refused with a [`Refusal`] and changes nothing.
//!
//! A pause holds the saga where it stands: a step under way finishes and
//! its result is applied, but nothing new starts (`run` and
//! `compensate_next` return [`Decision::Paused`], leaving the next step
//! pending or the next compensation to be found again) and no timer fires
//! (`decision` says `Paused` for a saga in backoff or in a wait). Resuming
//! picks up from that position.

use super::*;

impl SagaState {
    fn refuse<T>(r: Refusal) -> Result<T, MachineError> {
        Err(MachineError::Refused(r))
    }

    /// The step index where the saga stands going forward: the first step
    /// that has not succeeded.
    fn position(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.state != StepState::Succeeded)
    }

    pub(super) fn pause(&mut self, mark: PauseMark) -> Result<Decision, MachineError> {
        if self.paused.is_some() {
            return Self::refuse(Refusal::AlreadyPaused);
        }
        self.paused = Some(mark);
        Ok(self.decision())
    }

    pub(super) fn unpause(&mut self, p: &[StepPolicy], ctx: Ctx) -> Result<Decision, MachineError> {
        if self.paused.take().is_none() {
            return Self::refuse(Refusal::NotPaused);
        }
        Ok(match self.decision() {
            // Held between steps: pick up from the position.
            Decision::AwaitRunning if self.status == SagaStatus::Compensating => {
                self.compensate_next(self.steps.len(), p)
            }
            Decision::AwaitRunning if self.cancel_requested && !self.forward_only(p) => {
                self.begin_compensation(p)
            }
            Decision::AwaitRunning => match self.position() {
                Some(i) if self.steps[i].state == StepState::Pending => self.run(i, p, ctx),
                Some(_) if self.forward_only(p) => {
                    let i = Self::pivot(p).unwrap_or(0);
                    self.stuck_forward(i)
                }
                Some(_) => self.begin_compensation(p),
                None => {
                    self.status = SagaStatus::Completed;
                    Decision::Finished(SagaStatus::Completed)
                }
            },
            // In backoff or a wait: the timers run again (one already due
            // fires at once).
            d => d,
        })
    }

    pub(super) fn retry_now(&mut self, ctx: Ctx) -> Result<Decision, MachineError> {
        if self.paused.is_some() {
            return Self::refuse(Refusal::Paused);
        }
        let mut woke = false;
        for s in &mut self.steps {
            if matches!(s.state, StepState::RetryWait | StepState::CompensationWait) {
                s.wake_at_ms = Some(ctx.now_ms);
                woke = true;
            }
        }
        if !woke {
            return Self::refuse(Refusal::NotInBackoff);
        }
        // The runtime sleeps until now, then feeds the timer.
        Ok(self.decision())
    }

    pub(super) fn skip(
        &mut self,
        step: usize,
        p: &[StepPolicy],
        ctx: Ctx,
    ) -> Result<Decision, MachineError> {
        let len = self.steps.len();
        let Some(s) = self.steps.get(step) else {
            return Self::refuse(Refusal::NoSuchStep { step, len });
        };
        let name = s.name.clone();
        if self.status == SagaStatus::Compensating {
            return Self::refuse(Refusal::Compensating);
        }
        if let Some(i) = Self::pivot(p) {
            let pivot = self.steps[i].name.clone();
            if self.forward_only(p) {
                return Self::refuse(Refusal::PastPivot { pivot });
            }
            if step >= i {
                return Self::refuse(Refusal::NotBeforePivot { step: name, pivot });
            }
        }
        match s.state {
            StepState::Succeeded => return Self::refuse(Refusal::AlreadySucceeded(name)),
            StepState::Running => return Self::refuse(Refusal::StepRunning(name)),
            StepState::Pending | StepState::RetryWait | StepState::Waiting => {}
            state => return Self::refuse(Refusal::NotSkippable { step: name, state }),
        }
        if self.cancel_requested {
            return Self::refuse(Refusal::Compensating);
        }
        // Only the step the saga stands on (or a member of the group it
        // stands on): a step further on is skipped once the saga is there
        // (pause it first, and it waits before that step).
        let pos = self.position();
        let r = self.group_range(step);
        if !pos.is_some_and(|i| r.contains(&i)) {
            return Self::refuse(Refusal::NotCurrent {
                step: name,
                current: pos.map(|i| self.steps[i].name.clone()),
            });
        }
        let started = self.steps[r.clone()].iter().any(|m| {
            matches!(
                m.state,
                StepState::Running | StepState::RetryWait | StepState::Waiting
            )
        });
        if !started && !self.decision_is_idle() {
            return Err(self.unexpected(&Input::Skip { step }, Some(step)));
        }
        let s = &mut self.steps[step];
        s.state = StepState::Succeeded;
        s.wake_at_ms = None;
        s.last_error = None;
        if s.group.is_none() {
            return Ok(self.advance(step, p, ctx));
        }
        if started {
            return Ok(self.group_progress(r, p, ctx));
        }
        if self.steps[r.clone()]
            .iter()
            .all(|m| m.state == StepState::Succeeded)
        {
            // The group the saga is held on (by a pause), now all done.
            return Ok(self.advance(r.end - 1, p, ctx));
        }
        // Held before the group: the other members run when it starts.
        Ok(self.decision())
    }

    /// True when nothing is under way or waiting: the saga is held between
    /// steps (by a pause).
    fn decision_is_idle(&self) -> bool {
        matches!(
            self.unpaused_decision(),
            Decision::AwaitRunning | Decision::Finished(_)
        )
    }

    pub(super) fn force_compensate(
        &mut self,
        reason: &str,
        p: &[StepPolicy],
        ctx: Ctx,
    ) -> Result<Decision, MachineError> {
        match self.status {
            SagaStatus::Compensating => return Self::refuse(Refusal::Compensating),
            SagaStatus::Stuck => {
                let Some(i) = self
                    .steps
                    .iter()
                    .position(|s| s.state == StepState::StuckForward)
                else {
                    return Self::refuse(Refusal::StuckCompensating);
                };
                if p[i].class != StepClass::Pivot {
                    let pivot =
                        Self::pivot(p).map_or(String::new(), |k| self.steps[k].name.clone());
                    return Self::refuse(Refusal::PastPivot { pivot });
                }
                // The pivot never succeeded and the operator found it took
                // no effect: it counts as rejected, and what came before it
                // is undone.
                let s = &mut self.steps[i];
                s.state = StepState::Rejected;
                s.in_doubt = false;
                self.status = SagaStatus::Running;
                self.failure = Some(format!("compensation forced: {reason}"));
                return Ok(self.begin_compensation(p));
            }
            _ => {}
        }
        if let Some(i) = Self::pivot(p).filter(|_| self.forward_only(p)) {
            return Self::refuse(Refusal::PastPivot {
                pivot: self.steps[i].name.clone(),
            });
        }
        self.failure = Some(format!("compensation forced: {reason}"));
        self.cancel_requested = true;
        Ok(match self.decision() {
            Decision::Run { .. } => Decision::AwaitRunning,
            Decision::RunGroup { first, end } => self.group_progress(first..end, p, ctx),
            // Paused in a group (members waiting to retry, none running):
            // the group stops as it would unpaused, so no member is left
            // waiting to run while the saga compensates (found by the
            // model test: a member retried and succeeded mid-compensation).
            Decision::Paused => match self.unpaused_decision() {
                Decision::RunGroup { first, end } => self.group_progress(first..end, p, ctx),
                _ => self.begin_compensation(p),
            },
            Decision::AwaitRunning => self.begin_compensation(p),
            d => d,
        })
    }

    pub(super) fn start_at(
        &mut self,
        step: usize,
        p: &[StepPolicy],
        ctx: Ctx,
    ) -> Result<Decision, MachineError> {
        let len = self.steps.len();
        if step >= len {
            return Self::refuse(Refusal::NoSuchStep { step, len });
        }
        if self.steps.iter().any(|s| s.state != StepState::Pending) {
            return Err(self.unexpected(&Input::StartAt { step }, None));
        }
        if self.group_range(step).start != step {
            return Self::refuse(Refusal::InsideGroup(self.steps[step].name.clone()));
        }
        for s in &mut self.steps[..step] {
            s.state = StepState::Succeeded;
        }
        Ok(self.run(step, p, ctx))
    }
}
