//! Operator operations through the public API, on sled (across restarts)
//! and in memory: the scenarios of `ops_support/scenarios.rs` (pause and
//! resume, retry-now, retry of a stuck saga, skip, force compensation,
//! re-run, dry runs, operation ids, the audit in the history).
//! `operations_pg.rs` runs them on PostgreSQL.

mod ops_support;

use ops_support::{scenarios, Backend};

fn sled() -> (tempfile::TempDir, Backend) {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::Sled(dir.path().to_path_buf());
    (dir, b)
}

#[tokio::test]
async fn pause_holds_after_the_running_step_in_memory() {
    scenarios::pause_holds_after_the_running_step(&Backend::memory()).await;
}

#[tokio::test]
async fn pause_holds_after_the_running_step_on_sled() {
    let (_d, b) = sled();
    scenarios::pause_holds_after_the_running_step(&b).await;
}

#[tokio::test]
async fn a_paused_saga_stays_paused_across_a_restart_and_its_due_timer_does_not_fire() {
    let (_d, b) = sled();
    scenarios::a_paused_saga_stays_paused_across_a_restart_and_its_due_timer_does_not_fire(&b)
        .await;
}

#[tokio::test]
async fn a_step_interrupted_while_paused_waits_for_the_resume_after_a_restart() {
    let (_d, b) = sled();
    scenarios::a_step_interrupted_while_paused_waits_for_the_resume_after_a_restart(&b).await;
}

#[tokio::test]
async fn retry_now_wakes_a_backoff_forward_and_compensating() {
    scenarios::retry_now_wakes_a_backoff_forward_and_compensating(&Backend::memory()).await;
}

#[tokio::test]
async fn retry_of_a_stuck_saga_is_an_operation_in_memory() {
    scenarios::retry_of_a_stuck_saga_is_an_operation(&Backend::memory()).await;
}

#[tokio::test]
async fn retry_of_a_stuck_saga_is_an_operation_on_sled() {
    let (_d, b) = sled();
    scenarios::retry_of_a_stuck_saga_is_an_operation(&b).await;
}

#[tokio::test]
async fn skip_takes_a_supplied_result_that_fits_the_data_type() {
    scenarios::skip_takes_a_supplied_result_that_fits_the_data_type(&Backend::memory()).await;
}

#[tokio::test]
async fn force_compensation_dry_run_then_for_real() {
    scenarios::force_compensation_dry_run_then_for_real(&Backend::memory()).await;
}

#[tokio::test]
async fn operation_ids_make_operations_idempotent() {
    let (_d, b) = sled();
    scenarios::operation_ids_make_operations_idempotent(&b).await;
}

#[tokio::test]
async fn rerun_from_a_step_starts_a_linked_saga_with_the_original_data() {
    let (_d, b) = sled();
    scenarios::rerun_from_a_step_starts_a_linked_saga_with_the_original_data(&b).await;
}

#[tokio::test]
async fn pause_and_resume_a_whole_definition() {
    scenarios::pause_and_resume_a_whole_definition(&Backend::memory()).await;
}

#[tokio::test]
async fn a_definition_pause_holds_sagas_started_later_in_memory() {
    scenarios::a_definition_pause_holds_sagas_started_later(&Backend::memory()).await;
}

#[tokio::test]
async fn a_definition_pause_holds_sagas_started_later_on_sled() {
    let (_d, b) = sled();
    scenarios::a_definition_pause_holds_sagas_started_later(&b).await;
}
