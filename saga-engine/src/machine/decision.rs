//! What the runtime should be doing for a saga as it stands (read-only):
//! the decision of a persisted state (a paused saga says `Paused` unless
//! an attempt is under way), the status to show, and when a saga in a
//! durable wait must be woken (for the stores' timer index).

use super::*;

impl SagaState {
    /// What the runtime should be doing in this state (read-only). A
    /// paused saga says [`Decision::Paused`] unless a step is under way
    /// (it finishes, and its result is recorded).
    pub fn decision(&self) -> Decision {
        let d = self.unpaused_decision();
        if self.paused.is_none() {
            return d;
        }
        match d {
            Decision::Run { .. } | Decision::Compensate { .. } | Decision::Finished(_) => d,
            Decision::RunGroup { first, end }
                if self.steps[first..end]
                    .iter()
                    .any(|s| s.state == StepState::Running) =>
            {
                d
            }
            _ => Decision::Paused,
        }
    }

    /// The status to show: [`SagaStatus::Paused`] while paused, else
    /// [`SagaState::status`].
    pub fn visible_status(&self) -> SagaStatus {
        if self.paused.is_some() && !self.status.is_terminal() {
            SagaStatus::Paused
        } else {
            self.status
        }
    }

    pub(super) fn unpaused_decision(&self) -> Decision {
        if self.status.is_terminal() {
            return Decision::Finished(self.status);
        }
        // A deadline still to be watched wakes a waiting saga early.
        let deadline = if self.deadline_passed || self.status != SagaStatus::Running {
            None
        } else {
            self.deadline_ms
        };
        let until = |wake: Option<u64>| {
            let w = wake.unwrap_or(0);
            deadline.map_or(w, |d| d.min(w))
        };
        for (i, s) in self.steps.iter().enumerate() {
            if s.group.is_some() && matches!(s.state, StepState::Running | StepState::RetryWait) {
                let r = self.group_range(i);
                return Decision::RunGroup {
                    first: r.start,
                    end: r.end,
                };
            }
            match s.state {
                StepState::Running => {
                    return Decision::Run {
                        step: i,
                        attempt: s.attempts,
                    }
                }
                StepState::Compensating => {
                    return Decision::Compensate {
                        step: i,
                        attempt: s.compensation_attempts,
                    }
                }
                StepState::RetryWait => {
                    return Decision::Sleep {
                        step: i,
                        until_ms: until(s.wake_at_ms),
                    }
                }
                StepState::CompensationWait => {
                    return Decision::Sleep {
                        step: i,
                        until_ms: s.wake_at_ms.unwrap_or(0),
                    }
                }
                StepState::Waiting => {
                    return Decision::Wait {
                        step: i,
                        until_ms: until(s.wake_at_ms),
                    }
                }
                _ => {}
            }
        }
        Decision::AwaitRunning
    }

    /// When a saga in a durable wait must be woken (its wait's timeout, or
    /// its deadline if sooner); `None` when it is not waiting. Stores use
    /// it to keep a timer index. A paused saga with nothing under way is
    /// parked for good: `Some(u64::MAX)` (only an operator wakes it).
    pub fn parked_until(&self) -> Option<u64> {
        match self.decision() {
            Decision::Wait { until_ms, .. } => Some(until_ms),
            Decision::Paused => Some(u64::MAX),
            _ => None,
        }
    }
}
