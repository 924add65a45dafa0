//! The operation scenarios of `ops_support/scenarios.rs` on PostgreSQL (a
//! store shared by leases: a paused saga is claimed by no engine, a
//! resumed or retried one by the next claim): pause across a restart,
//! resume, retry-now, retry of a stuck saga, skip, force compensation,
//! re-run, operation ids, pause and resume of a definition (sagas started
//! while it is paused included, across a restart). Each scenario
//! on a fresh database of one server.
//!
//! Run with `cargo test -p saga-engine --features postgres --test operations_pg`.

#![cfg(feature = "postgres")]

mod ops_support;
mod pg_support;

use ops_support::{scenarios, Backend};
use pg_support::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_work_on_postgres() {
    let server = PgServer::start();
    let server = &server;
    let mut n = 0;
    let mut db = || {
        n += 1;
        let name = format!("ops_{n}");
        async move { Backend::Postgres(server.create_database(&name).await) }
    };
    eprintln!("scenario: pause_holds_after_the_running_step");
    scenarios::pause_holds_after_the_running_step(&db().await).await;
    eprintln!(
        "scenario: a_paused_saga_stays_paused_across_a_restart_and_its_due_timer_does_not_fire"
    );
    scenarios::a_paused_saga_stays_paused_across_a_restart_and_its_due_timer_does_not_fire(
        &db().await,
    )
    .await;
    eprintln!("scenario: retry_now_wakes_a_backoff_forward_and_compensating");
    scenarios::retry_now_wakes_a_backoff_forward_and_compensating(&db().await).await;
    eprintln!("scenario: retry_of_a_stuck_saga_is_an_operation");
    scenarios::retry_of_a_stuck_saga_is_an_operation(&db().await).await;
    eprintln!("scenario: skip_takes_a_supplied_result_that_fits_the_data_type");
    scenarios::skip_takes_a_supplied_result_that_fits_the_data_type(&db().await).await;
    eprintln!("scenario: force_compensation_dry_run_then_for_real");
    scenarios::force_compensation_dry_run_then_for_real(&db().await).await;
    eprintln!("scenario: operation_ids_make_operations_idempotent");
    scenarios::operation_ids_make_operations_idempotent(&db().await).await;
    eprintln!("scenario: rerun_from_a_step_starts_a_linked_saga_with_the_original_data");
    scenarios::rerun_from_a_step_starts_a_linked_saga_with_the_original_data(&db().await).await;
    eprintln!("scenario: pause_and_resume_a_whole_definition");
    scenarios::pause_and_resume_a_whole_definition(&db().await).await;
    eprintln!("scenario: a_definition_pause_holds_sagas_started_later");
    scenarios::a_definition_pause_holds_sagas_started_later(&db().await).await;
}
