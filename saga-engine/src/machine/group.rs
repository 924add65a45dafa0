//! Parallel groups in the pure machine: consecutive steps that share a
//! [`StepProgress::group`] are one position of the saga. Starting the
//! group starts every member at once ([`Decision::RunGroup`]); each
//! member's result is applied on its own; the group succeeds when every
//! member has succeeded. A rejected member (or one in doubt past its
//! policy, or a cancel, or a passed deadline) stops the group going
//! forward: members waiting for a retry are given up as in doubt, members
//! still running are awaited (the runtime tells them to stop), and once
//! none runs, compensation begins with every member that succeeded or is
//! in doubt, newest index first, then the steps before the group.

use super::*;
use std::ops::Range;

impl SagaState {
    /// The group around `step` (just `step..step + 1` for an ungrouped one).
    pub fn group_range(&self, step: usize) -> Range<usize> {
        let Some(g) = self.steps.get(step).and_then(|s| s.group.as_ref()) else {
            return step..step + 1;
        };
        let same = |i: usize| self.steps[i].group.as_ref() == Some(g);
        let mut start = step;
        while start > 0 && same(start - 1) {
            start -= 1;
        }
        let mut end = step + 1;
        while end < self.steps.len() && same(end) {
            end += 1;
        }
        start..end
    }

    /// Starts every member of the group beginning at `first`.
    pub(super) fn run_group(&mut self, first: usize, p: &[StepPolicy], ctx: Ctx) -> Decision {
        let r = self.group_range(first);
        if self.steps[r.clone()]
            .iter()
            .all(|s| s.state == StepState::Succeeded)
        {
            // Every member skipped by an operator.
            return self.advance(r.end - 1, p, ctx);
        }
        for s in &mut self.steps[r.clone()] {
            if s.state == StepState::Succeeded {
                // Skipped by an operator: it does not run.
                continue;
            }
            s.state = StepState::Running;
            s.attempts += 1;
            s.wake_at_ms = None;
        }
        Decision::RunGroup {
            first: r.start,
            end: r.end,
        }
    }

    /// Marks the group as failing: no member goes forward again.
    fn stop_group(&mut self, r: Range<usize>) {
        self.cancel_requested = true;
        for s in &mut self.steps[r] {
            if s.state == StepState::RetryWait {
                // An earlier attempt failed without a clear answer.
                s.state = StepState::InDoubt;
                s.in_doubt = true;
                s.wake_at_ms = None;
            }
        }
    }

    /// What the group does next, after a member's state changed: wait for
    /// the members still running (or waiting to retry), then either move
    /// past the group (all succeeded) or compensate.
    pub(super) fn group_progress(
        &mut self,
        r: Range<usize>,
        p: &[StepPolicy],
        ctx: Ctx,
    ) -> Decision {
        if self.cancel_requested {
            self.stop_group(r.clone());
        }
        let busy = self.steps[r.clone()]
            .iter()
            .any(|s| matches!(s.state, StepState::Running | StepState::RetryWait));
        if busy {
            return Decision::RunGroup {
                first: r.start,
                end: r.end,
            };
        }
        if self.steps[r.clone()]
            .iter()
            .all(|s| s.state == StepState::Succeeded)
        {
            // `advance` compensates instead if a cancel is pending.
            return self.advance(r.end - 1, p, ctx);
        }
        self.begin_compensation(p)
    }

    /// A member succeeded.
    pub(super) fn member_succeeded(&mut self, step: usize, p: &[StepPolicy], ctx: Ctx) -> Decision {
        let s = &mut self.steps[step];
        s.state = StepState::Succeeded;
        s.last_error = None;
        let r = self.group_range(step);
        self.group_progress(r, p, ctx)
    }

    /// A member failed: rejected (the group fails), or without a clear
    /// answer (retried per its policy unless the group is failing; past
    /// its policy it is in doubt and the group fails).
    pub(super) fn member_failed(
        &mut self,
        step: usize,
        kind: FailureKind,
        error: &str,
        p: &[StepPolicy],
        ctx: Ctx,
    ) -> Decision {
        let r = self.group_range(step);
        let policy = &p[step].forward;
        let s = &mut self.steps[step];
        s.last_error = Some(error.to_string());
        match kind {
            FailureKind::Rejected => {
                s.state = StepState::Rejected;
                let name = s.name.clone();
                if self.failure.is_none() {
                    self.failure = Some(format!("step {name} rejected: {error}"));
                }
                self.stop_group(r.clone());
            }
            FailureKind::Retryable | FailureKind::Timeout => {
                s.in_doubt = true;
                if self.cancel_requested {
                    s.state = StepState::InDoubt;
                } else if s.attempts < policy.max_attempts {
                    let wake = ctx
                        .now_ms
                        .saturating_add(policy.delay(s.attempts, ctx.jitter).as_millis() as u64);
                    s.state = StepState::RetryWait;
                    s.wake_at_ms = Some(wake);
                } else {
                    s.state = StepState::InDoubt;
                    let why = format!(
                        "step {} gave no clear answer after {} attempts: {error}",
                        s.name, s.attempts
                    );
                    self.failure.get_or_insert(why);
                    self.stop_group(r.clone());
                }
            }
        }
        self.group_progress(r, p, ctx)
    }

    /// A member's retry wait is over: its next attempt starts.
    pub(super) fn retry_member(&mut self, step: usize) -> Decision {
        let s = &mut self.steps[step];
        s.state = StepState::Running;
        s.attempts += 1;
        s.wake_at_ms = None;
        let r = self.group_range(step);
        Decision::RunGroup {
            first: r.start,
            end: r.end,
        }
    }

    /// After a restart: each member that was running may or may not have
    /// taken effect; it runs again (the same idempotency key) if its policy
    /// allows, and members that had finished are left as they are. A
    /// failing group (or a member past its policy) is not run again.
    pub(super) fn resume_group(&mut self, r: Range<usize>, p: &[StepPolicy], ctx: Ctx) -> Decision {
        let mut exhausted = false;
        for i in r.clone() {
            let s = &mut self.steps[i];
            if s.state != StepState::Running {
                continue;
            }
            s.in_doubt = true;
            if s.last_error.is_none() {
                s.last_error = Some("interrupted by a restart".into());
            }
            if s.attempts >= p[i].forward.max_attempts {
                exhausted = true;
                s.state = StepState::InDoubt;
                let why = format!(
                    "step {} gave no clear answer after {} attempts: interrupted by a restart",
                    s.name, s.attempts
                );
                self.failure.get_or_insert(why);
            }
        }
        if exhausted || self.cancel_requested {
            for s in &mut self.steps[r.clone()] {
                if s.state == StepState::Running {
                    s.state = StepState::InDoubt;
                }
            }
            self.stop_group(r.clone());
        } else if self.paused.is_some() {
            // Paused: each interrupted member waits, due at once, until the
            // saga is resumed.
            for s in &mut self.steps[r.clone()] {
                if s.state == StepState::Running {
                    s.state = StepState::RetryWait;
                    s.wake_at_ms = Some(ctx.now_ms);
                }
            }
        } else {
            for s in &mut self.steps[r.clone()] {
                if s.state == StepState::Running {
                    s.attempts += 1;
                }
            }
        }
        self.group_progress(r, p, ctx)
    }
}
