//! The operation scenarios, each on the store a [`Backend`] opens: pause
//! and resume (one saga and a whole definition, across a restart),
//! retry-now, retry of a stuck saga, skip with a supplied result, force
//! compensation, re-run from a step, dry runs, operation ids, and the
//! audit in the history.

use super::*;
use saga_engine::machine::PlannedAction;
use saga_engine::{Engine, Error, EventKind, ManualClock, Operation, SagaStatus, StepState};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Lease length on a shared store: short, so that a saga resumed or
/// retried by an operator (no lease held) is claimed soon.
const LEASE: Duration = Duration::from_millis(300);

/// Pause while `b` runs: `b` finishes and is recorded, nothing else
/// starts; resume: the saga goes on to the end. The history says who
/// and why.
pub async fn pause_holds_after_the_running_step(b: &Backend) {
    let probe = Arc::new(Probe::default());
    let gate = Arc::new(Semaphore::new(0));
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(
            &probe,
            Some(gate.clone()),
            None,
            Duration::from_millis(1),
        ))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(
        &mut rx,
        &id,
        |k| matches!(k, EventKind::StepStarted { step, .. } if step == "b"),
    )
    .await;

    let preview = engine
        .operate(&id, Operation::Pause, &dry("p1"))
        .await
        .unwrap();
    assert!(!preview.applied);
    assert_eq!(preview.status, SagaStatus::Paused);
    assert_eq!(preview.plan.held_after, Some(1), "{:?}", preview.plan);
    assert_eq!(preview.plan.steps[0].action, PlannedAction::Finish);
    assert_eq!(
        engine.status(&id).await.unwrap().status(),
        SagaStatus::Running
    );

    let out = engine
        .operate(&id, Operation::Pause, &req("p1"))
        .await
        .unwrap();
    assert!(out.applied && !out.repeated);
    assert_eq!(out.status, SagaStatus::Paused);
    gate.add_permits(1);
    until(
        &mut rx,
        &id,
        |k| matches!(k, EventKind::StepSucceeded { step, .. } if step == "b"),
    )
    .await;
    idle(&engine).await;
    let rec = engine.status(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Paused);
    assert_eq!(rec.state.steps[2].state, StepState::Pending);
    assert_eq!(probe.runs("pay"), 0, "a paused saga started a step");
    assert_eq!(
        engine
            .list(Some(SagaStatus::Paused), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let again = engine
        .operate(&id, Operation::Pause, &req("p2"))
        .await
        .unwrap_err();
    assert_eq!(refusal(again), Refusal::AlreadyPaused);

    engine
        .operate(&id, Operation::Resume, &req("r1"))
        .await
        .unwrap();
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    assert_eq!(probe.log(), ["run a", "run b", "run pay", "run ship"]);
    let not = engine
        .operate(&id, Operation::Resume, &req("r2"))
        .await
        .unwrap_err();
    assert_eq!(refusal(not), Refusal::Finished(SagaStatus::Completed));

    let h = engine.history(&id).await.unwrap();
    let ops: Vec<(&str, &str, &str)> = h
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OperationApplied {
                operation_id,
                operation,
                operator,
                ..
            } => Some((operation_id.as_str(), operation.as_str(), operator.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(ops, [("p1", "pause", "ada"), ("r1", "resume", "ada")]);
    assert!(h
        .iter()
        .any(|e| matches!(&e.kind, EventKind::SagaPaused { reason, .. } if reason == "test p1")));
    assert!(h
        .iter()
        .any(|e| matches!(e.kind, EventKind::SagaUnpaused { .. })));
}

/// A saga paused in a durable sleep stays paused across a restart even
/// once its timer is due (it is in no timer index), and resumes after it.
pub async fn a_paused_saga_stays_paused_across_a_restart_and_its_due_timer_does_not_fire(
    b: &Backend,
) {
    let probe = Arc::new(Probe::default());
    let t0 = 1_000_000;
    let nap = Duration::from_secs(3600);
    let id = {
        let engine = Engine::builder_arc(b.store().await)
            .lease_ttl(LEASE)
            .clock(Arc::new(ManualClock::new(t0)))
            .register(definition(
                &probe,
                None,
                Some(nap),
                Duration::from_millis(1),
            ))
            .open()
            .await
            .unwrap();
        let mut rx = engine.subscribe();
        let id = engine.start("ops", &Data::default(), None).await.unwrap();
        until(&mut rx, &id, |k| matches!(k, EventKind::WaitStarted { .. })).await;
        if !b.is_shared() {
            // Parked: the pause is applied without a worker.
            idle(&engine).await;
        }
        engine
            .operate(&id, Operation::Pause, &req("p"))
            .await
            .unwrap();
        idle(&engine).await;
        engine.shutdown(Duration::from_secs(1)).await;
        id
    };
    // Two hours later the nap is long over.
    let later = t0 + 2 * 3_600_000;
    let store = b.store().await;
    let resumable = store.list_resumable().await.unwrap();
    assert_eq!(resumable.now.len(), 0);
    assert_eq!(resumable.parked, vec![(id.clone(), u64::MAX)]);
    let engine = Engine::builder_arc(store)
        .lease_ttl(LEASE)
        .clock(Arc::new(ManualClock::new(later)))
        .register(definition(
            &probe,
            None,
            Some(nap),
            Duration::from_millis(1),
        ))
        .open()
        .await
        .unwrap();
    let rec = engine.status(&id).await.unwrap();
    assert_eq!(
        rec.status(),
        SagaStatus::Paused,
        "the pause did not survive the restart"
    );
    assert_eq!(engine.parked_count(), 0, "a paused saga has a timer");
    assert_eq!(engine.running_count(), 0, "a paused saga got a worker");
    assert_eq!(probe.runs("pay"), 0);

    engine
        .operate(&id, Operation::Resume, &req("r"))
        .await
        .unwrap();
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    assert_eq!(probe.log(), ["run a", "run b", "run pay", "run ship"]);
}

/// A step cut off by a restart while its saga was paused does not run
/// again until the saga is resumed.
pub async fn a_step_interrupted_while_paused_waits_for_the_resume_after_a_restart(b: &Backend) {
    let probe = Arc::new(Probe::default());
    let gate = Arc::new(Semaphore::new(0));
    let id = {
        let engine = Engine::builder_arc(b.store().await)
            .lease_ttl(LEASE)
            .register(definition(
                &probe,
                Some(gate.clone()),
                None,
                Duration::from_millis(1),
            ))
            .open()
            .await
            .unwrap();
        let mut rx = engine.subscribe();
        let id = engine.start("ops", &Data::default(), None).await.unwrap();
        until(
            &mut rx,
            &id,
            |k| matches!(k, EventKind::StepStarted { step, .. } if step == "b"),
        )
        .await;
        engine
            .operate(&id, Operation::Pause, &req("p"))
            .await
            .unwrap();
        // `b` never returns: the grace runs out and the worker is aborted.
        engine.shutdown(Duration::from_millis(20)).await;
        id
    };
    assert_eq!(probe.runs("b"), 1);
    gate.add_permits(10);
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(
            &probe,
            Some(gate.clone()),
            None,
            Duration::from_millis(1),
        ))
        .open()
        .await
        .unwrap();
    idle(&engine).await;
    let rec = engine.status(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Paused);
    assert_eq!(rec.state.steps[1].state, StepState::RetryWait);
    assert_eq!(probe.runs("b"), 1, "b ran again while paused");
    engine
        .operate(&id, Operation::Resume, &req("r"))
        .await
        .unwrap();
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    assert_eq!(probe.runs("b"), 2);
}

/// Retry-now wakes a forward backoff and a compensation backoff at once;
/// with no backoff it is refused.
pub async fn retry_now_wakes_a_backoff_forward_and_compensating(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.b_failures.lock().unwrap() = 1;
    let hour = Duration::from_secs(3600);
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, hour))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(&mut rx, &id, |k| matches!(k, EventKind::StepFailed { .. })).await;
    let out = engine
        .operate(&id, Operation::RetryNow, &req("w"))
        .await
        .unwrap();
    assert_eq!(out.plan.steps[0].step, "b");
    assert_eq!(
        engine.wait(&id).await.unwrap().status(),
        SagaStatus::Completed
    );
    let none = engine
        .operate(&id, Operation::RetryNow, &req("w2"))
        .await
        .unwrap_err();
    assert_eq!(refusal(none), Refusal::Finished(SagaStatus::Completed));

    // Compensating: `pay` declines, undoing `a` fails once, then waits an hour.
    *probe.pay_rejections.lock().unwrap() = 1;
    *probe.undo_a_failures.lock().unwrap() = 1;
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(&mut rx, &id, |k| {
        matches!(k, EventKind::CompensationFailed { .. })
    })
    .await;
    engine
        .operate(&id, Operation::RetryNow, &req("w"))
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status(),
        SagaStatus::Compensated
    );
}

/// Skip: only the step the saga stands on, before the pivot, not yet
/// succeeded; the result is merged and must fit the data type.
pub async fn skip_takes_a_supplied_result_that_fits_the_data_type(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.b_failures.lock().unwrap() = 100;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_secs(3600)))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(&mut rx, &id, |k| matches!(k, EventKind::StepFailed { .. })).await;
    let skip = |step: &str, result: serde_json::Value| Operation::Skip {
        step: step.into(),
        result,
    };
    let r = engine
        .operate(
            &id,
            skip("b", serde_json::json!({"fee": "ten"})),
            &req("s0"),
        )
        .await
        .unwrap_err();
    assert!(matches!(refusal(r), Refusal::InvalidResult { .. }));
    let r = engine
        .operate(&id, skip("b", serde_json::json!([1])), &req("s0"))
        .await
        .unwrap_err();
    assert!(matches!(refusal(r), Refusal::InvalidResult { .. }));
    let r = engine
        .operate(&id, skip("a", serde_json::json!({})), &req("s1"))
        .await
        .unwrap_err();
    assert_eq!(refusal(r), Refusal::AlreadySucceeded("a".into()));
    let r = engine
        .operate(&id, skip("pay", serde_json::json!({})), &req("s1"))
        .await
        .unwrap_err();
    assert!(matches!(refusal(r), Refusal::NotBeforePivot { .. }));
    let r = engine
        .operate(&id, skip("pay", serde_json::json!({})), &req("s2"))
        .await
        .unwrap_err();
    assert!(matches!(refusal(r), Refusal::NotBeforePivot { .. }));
    let r = engine
        .operate(&id, skip("zz", serde_json::json!({})), &req("s3"))
        .await
        .unwrap_err();
    assert_eq!(refusal(r), Refusal::UnknownStep("zz".into()));
    assert_eq!(engine.status(&id).await.unwrap().state.operations.len(), 0);

    let result = serde_json::json!({"note": "done by hand", "fee": 12});
    let preview = engine
        .operate(&id, skip("b", result.clone()), &dry("s4"))
        .await
        .unwrap();
    let names: Vec<&str> = preview.plan.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(names, ["pay", "ship"]);
    engine
        .operate(&id, skip("b", result), &req("s4"))
        .await
        .unwrap();
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    let data: Data = done.data_as().unwrap();
    assert_eq!(data.note.as_deref(), Some("done by hand"));
    assert_eq!(data.fee, 12);
    assert_eq!(data.trail, ["a", "pay", "ship"]);
    assert_eq!(probe.runs("b"), 1, "a skipped step ran");
    let h = engine.history(&id).await.unwrap();
    assert!(h.iter().any(|e| matches!(&e.kind, EventKind::StepSkipped { step, operator } if step == "b" && operator == "ada")));
}

/// Force compensation: the dry run says what would be undone and changes
/// nothing; the real one undoes it. After the pivot it is refused.
pub async fn force_compensation_dry_run_then_for_real(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.b_failures.lock().unwrap() = 100;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_secs(3600)))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(&mut rx, &id, |k| matches!(k, EventKind::StepFailed { .. })).await;
    let preview = engine
        .operate(&id, Operation::ForceCompensate, &dry("f"))
        .await
        .unwrap();
    let plan: Vec<(&str, PlannedAction)> = preview
        .plan
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.action))
        .collect();
    assert_eq!(
        plan,
        [
            ("b", PlannedAction::Compensate),
            ("a", PlannedAction::Compensate)
        ]
    );
    assert_eq!(preview.plan.ends_as, Some(SagaStatus::Compensated));
    assert!(!preview.applied);
    let rec = engine.status(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Running);
    assert!(rec.state.operations.is_empty());
    assert!(probe.log().iter().all(|l| !l.starts_with("undo")));

    engine
        .operate(&id, Operation::ForceCompensate, &req("f"))
        .await
        .unwrap();
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Compensated);
    assert!(done.state.failure.as_deref().unwrap().contains("test f"));
    assert!(probe.log().contains(&"undo a".to_string()));

    // Past the pivot: refused.
    *probe.b_failures.lock().unwrap() = 0;
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    engine.wait(&id).await.unwrap();
    let r = engine
        .operate(&id, Operation::ForceCompensate, &req("f"))
        .await
        .unwrap_err();
    assert_eq!(refusal(r), Refusal::Finished(SagaStatus::Completed));
}

/// An operation id answers its first result when repeated; another
/// operation under it is refused; nothing is applied twice.
pub async fn operation_ids_make_operations_idempotent(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.b_failures.lock().unwrap() = 100;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_secs(3600)))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    until(&mut rx, &id, |k| matches!(k, EventKind::StepFailed { .. })).await;
    let first = engine
        .operate(&id, Operation::Pause, &req("x"))
        .await
        .unwrap();
    let again = engine
        .operate(&id, Operation::Pause, &req("x"))
        .await
        .unwrap();
    assert!(!first.repeated && again.repeated);
    assert_eq!(again.status, SagaStatus::Paused);
    let other = engine
        .operate(&id, Operation::Resume, &req("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(other, Error::OperationIdReused { ref first, .. } if first == "pause"),
        "{other}"
    );
    let h = engine.history(&id).await.unwrap();
    let applied = h
        .iter()
        .filter(|e| matches!(e.kind, EventKind::OperationApplied { .. }))
        .count();
    assert_eq!(applied, 1);
    assert_eq!(engine.status(&id).await.unwrap().state.operations.len(), 1);
}

/// Re-run from a step: a new saga, linked both ways, starting at the step
/// with the original's data; repeating the operation id starts no other.
pub async fn rerun_from_a_step_starts_a_linked_saga_with_the_original_data(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.pay_rejections.lock().unwrap() = 1;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_millis(1)))
        .open()
        .await
        .unwrap();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status(),
        SagaStatus::Compensated
    );
    let op = Operation::Rerun {
        from_step: "pay".into(),
    };
    let preview = engine.operate(&id, op.clone(), &dry("rr")).await.unwrap();
    assert_eq!(preview.new_saga, None);
    let plan: Vec<&str> = preview.plan.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(plan, ["pay", "ship"]);
    let out = engine.operate(&id, op.clone(), &req("rr")).await.unwrap();
    let new = out.new_saga.clone().expect("a new saga");
    assert_ne!(new, id);
    let done = engine.wait(&new).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Completed);
    assert_eq!(done.state.rerun_of.as_deref(), Some(id.as_str()));
    assert_eq!(
        done.data_as::<Data>().unwrap().trail,
        ["a", "b", "pay", "ship"]
    );
    assert_eq!(probe.runs("a"), 1, "the re-run ran a step before its start");
    let orig = engine.status(&id).await.unwrap();
    assert_eq!(orig.state.reruns, vec![new.to_string()]);
    assert_eq!(orig.status(), SagaStatus::Compensated);

    let again = engine.operate(&id, op.clone(), &req("rr")).await.unwrap();
    assert_eq!(again.new_saga, Some(new.clone()));
    assert!(again.repeated);
    assert_eq!(engine.list(None, 100).await.unwrap().len(), 2);
    let h = engine.history(&new).await.unwrap();
    assert!(h
        .iter()
        .any(|e| matches!(&e.kind, EventKind::RerunStarted { original, .. } if original == &id)));
    let r = engine.operate(&new, op, &req("rr2")).await.unwrap_err();
    assert_eq!(refusal(r), Refusal::NotRerunnable(SagaStatus::Completed));
}

/// Pause and resume every saga of a definition.
pub async fn pause_and_resume_a_whole_definition(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.b_failures.lock().unwrap() = 100;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_secs(3600)))
        .open()
        .await
        .unwrap();
    let mut rx = engine.subscribe();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = engine.start("ops", &Data::default(), None).await.unwrap();
        until(&mut rx, &id, |k| matches!(k, EventKind::StepFailed { .. })).await;
        ids.push(id);
    }
    let out = engine
        .operate_definition("ops", Operation::Pause, &req("all"))
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 3);
    for id in &ids {
        assert_eq!(
            engine.status(id).await.unwrap().status(),
            SagaStatus::Paused
        );
    }
    let out = engine
        .operate_definition("ops", Operation::Resume, &req("all2"))
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 3);
    for id in &ids {
        assert_eq!(
            engine.status(id).await.unwrap().status(),
            SagaStatus::Running
        );
    }
    assert!(matches!(
        engine
            .operate_definition("nope", Operation::Pause, &req("x"))
            .await,
        Err(Error::UnknownDefinition { .. })
    ));
}

/// Retry of a stuck saga is an operation: the dry run says what would be
/// compensated and changes nothing; the retry is recorded with who and
/// why; repeating its id retries nothing again; a saga that is not stuck
/// is refused (and [`Engine::retry`], the old call, says so as before).
pub async fn retry_of_a_stuck_saga_is_an_operation(b: &Backend) {
    let probe = Arc::new(Probe::default());
    *probe.pay_rejections.lock().unwrap() = 1;
    *probe.undo_a_failures.lock().unwrap() = 1_000;
    let engine = Engine::builder_arc(b.store().await)
        .lease_ttl(LEASE)
        .register(definition(&probe, None, None, Duration::from_millis(1)))
        .open()
        .await
        .unwrap();
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    assert_eq!(engine.wait(&id).await.unwrap().status(), SagaStatus::Stuck);

    let preview = engine
        .operate(&id, Operation::Retry, &dry("t"))
        .await
        .unwrap();
    assert!(!preview.applied);
    assert_eq!(preview.status, SagaStatus::Compensating);
    let plan: Vec<(&str, PlannedAction)> = preview
        .plan
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.action))
        .collect();
    assert_eq!(plan, [("a", PlannedAction::Compensate)]);
    let rec = engine.status(&id).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Stuck, "a dry run retried");
    assert!(rec.state.operations.is_empty());

    *probe.undo_a_failures.lock().unwrap() = 0;
    let out = engine
        .operate(&id, Operation::Retry, &req("t"))
        .await
        .unwrap();
    assert!(out.applied && !out.repeated);
    let done = engine.wait(&id).await.unwrap();
    assert_eq!(done.status(), SagaStatus::Compensated);
    let again = engine
        .operate(&id, Operation::Retry, &req("t"))
        .await
        .unwrap();
    assert!(again.repeated, "a repeated operation id was not recognised");
    assert_eq!(again.status, SagaStatus::Compensated);
    let undone = probe.log().iter().filter(|l| *l == "undo a").count();
    assert_eq!(undone, 1);

    let r = engine
        .operate(&id, Operation::Retry, &req("t2"))
        .await
        .unwrap_err();
    assert_eq!(refusal(r), Refusal::NotStuck(SagaStatus::Compensated));
    assert!(matches!(
        engine.retry(&id).await,
        Err(Error::InvalidState {
            status: SagaStatus::Compensated,
            ..
        })
    ));
    let h = engine.history(&id).await.unwrap();
    let retries: Vec<(&str, &str)> = h
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OperationApplied {
                operation,
                operator,
                reason,
                ..
            } if operation == "retry" => Some((operator.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [("ada", "test t")]);
    assert!(h.iter().any(|e| matches!(e.kind, EventKind::OperatorRetry)));
}

/// Pausing a definition also holds the sagas started later, across a
/// restart (the flag is in the store); the resume clears it and resumes
/// them; after it, and after another restart, new sagas run.
pub async fn a_definition_pause_holds_sagas_started_later(b: &Backend) {
    let probe = Arc::new(Probe::default());
    let open = || async {
        Engine::builder_arc(b.store().await)
            .lease_ttl(LEASE)
            .register(definition(&probe, None, None, Duration::from_millis(1)))
            .open()
            .await
            .unwrap()
    };
    let engine = open().await;
    let out = engine
        .operate_definition("ops", Operation::Pause, &dry("dp0"))
        .await
        .unwrap();
    assert!(out.applied.is_empty());
    let id = engine.start("ops", &Data::default(), None).await.unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status(),
        SagaStatus::Completed,
        "a dry run paused the definition"
    );
    engine
        .operate_definition("ops", Operation::Pause, &req("dp"))
        .await
        .unwrap();
    let s1 = engine.start("ops", &Data::default(), None).await.unwrap();
    assert_eq!(
        engine.status(&s1).await.unwrap().status(),
        SagaStatus::Paused
    );
    let h = engine.history(&s1).await.unwrap();
    assert!(
        h.iter().any(
            |e| matches!(&e.kind, EventKind::SagaPaused { operator, reason }
            if operator == "ada" && reason.contains("test dp"))
        ),
        "{h:?}"
    );
    engine.shutdown(Duration::from_secs(1)).await;
    drop(engine);

    let engine = open().await;
    let s2 = engine.start("ops", &Data::default(), None).await.unwrap();
    idle(&engine).await;
    for id in [&s1, &s2] {
        assert_eq!(
            engine.status(id).await.unwrap().status(),
            SagaStatus::Paused,
            "the definition's pause did not hold across the restart"
        );
    }
    assert_eq!(probe.runs("a"), 1, "a saga of a paused definition ran");
    let out = engine
        .operate_definition("ops", Operation::Resume, &req("dr"))
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 2, "{out:?}");
    for id in [&s1, &s2] {
        assert_eq!(
            engine.wait(id).await.unwrap().status(),
            SagaStatus::Completed
        );
    }
    engine.shutdown(Duration::from_secs(1)).await;
    drop(engine);

    let engine = open().await;
    let s3 = engine.start("ops", &Data::default(), None).await.unwrap();
    assert_eq!(
        engine.wait(&s3).await.unwrap().status(),
        SagaStatus::Completed,
        "the resume of the definition did not last"
    );
    assert_eq!(probe.runs("a"), 4);
}
