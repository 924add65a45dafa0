//! Request handlers, one file per area of the API. Each takes the shared
//! state and the request and returns a response or an [`ApiError`]; the
//! router ([`crate::routes`]) picks the handler and turns errors into
//! responses.

mod accounts;
mod admin;
mod backup;
mod booking_waits;
mod bookings;
mod cancellations;
mod catalog;
mod catalog_import;
mod loyalty;
mod mailbox;
pub mod operate;
mod ops;
mod promo;
mod saga_ops;
mod ticket_pdf;
mod tickets;

use crate::api::ApiError;
use crate::body::Body;
use crate::routes::{Endpoint, Req};
use crate::state::AppState;
use hyper::Response;
use std::sync::Arc;

/// Runs the handler of `endpoint`.
pub async fn handle(
    endpoint: Endpoint,
    state: &Arc<AppState>,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    match endpoint {
        Endpoint::UiIndex | Endpoint::UiScript | Endpoint::UiStyle => {
            Ok(crate::ui::asset(endpoint))
        }
        Endpoint::UiViewScript => crate::ui::script(req.param(0))
            .ok_or_else(|| ApiError::NotFound(format!("no script {}", req.param(0)))),
        Endpoint::Healthz => Ok(ops::healthz()),
        Endpoint::Readyz => Ok(ops::readyz(state)),
        Endpoint::Metrics => Ok(ops::metrics(state).await),
        Endpoint::OpenApi => Ok(ops::openapi()),
        Endpoint::Airports => catalog::airports(state, &req),
        Endpoint::FlightSearch => catalog::search(state, &req).await,
        Endpoint::Flight => catalog::flight(state, &req).await,
        Endpoint::TestCards => Ok(catalog::test_cards()),
        Endpoint::CreateBooking => bookings::create(state, req).await,
        Endpoint::BookingLookup => bookings::lookup(state, &req),
        Endpoint::GetBooking => bookings::get(state, &req).await,
        Endpoint::SagaEvents => crate::sse::saga_events(state, &req).await,
        Endpoint::AllEvents => crate::sse::all_events(state, &req),
        Endpoint::GetFaults => Ok(admin::get_faults(state)),
        Endpoint::PutFaults => admin::put_faults(state, req).await,
        Endpoint::Enroll => loyalty::enroll(state, req).await,
        Endpoint::LoyaltyAccount => loyalty::account(state, &req).await,
        Endpoint::AdminSagas => admin::sagas(state, &req).await,
        Endpoint::AdminRetry => operate::saga(state, req, operate::Kind::Retry).await,
        Endpoint::AdminCancel => admin::cancel(state, req).await,
        Endpoint::AdminPayments => admin::payments(state, &req).await,
        Endpoint::AdminMailbox => mailbox::list(state, &req),
        Endpoint::CreateCancellation => cancellations::create(state, req).await,
        Endpoint::GetCancellation => cancellations::get(state, &req).await,
        Endpoint::AdminCancellations => cancellations::admin_list(state, &req).await,
        Endpoint::Register => accounts::register(state, req).await,
        Endpoint::Login => accounts::login(state, req).await,
        Endpoint::Logout => accounts::logout(state, req).await,
        Endpoint::MyAccount => accounts::me(state, &req).await,
        Endpoint::MyTrips => accounts::trips(state, &req).await,
        Endpoint::LinkLoyalty => accounts::link_loyalty(state, req).await,
        Endpoint::CancelMyTrip => accounts::cancel_trip(state, req).await,
        Endpoint::Ticket => tickets::ticket(state, &req).await,
        Endpoint::TicketPdf => ticket_pdf::ticket_pdf(state, &req).await,
        Endpoint::ConfirmPayment => booking_waits::confirm_payment(state, req).await,
        Endpoint::PayBooking => booking_waits::pay(state, req).await,
        Endpoint::AdminBackup => backup::backup(state, req).await,
        Endpoint::AdminCatalogImport => catalog_import::import(state, req).await,
        Endpoint::Quote => promo::quote(state, req).await,
        Endpoint::AdminPutPromo => promo::admin_put(state, req).await,
        Endpoint::AdminPromos => promo::admin_list(state, &req).await,
        Endpoint::AdminSaga => saga_ops::show(state, &req).await,
        Endpoint::AdminSagaHistory => saga_ops::history(state, &req).await,
        Endpoint::AdminOverview => saga_ops::overview(state).await,
        Endpoint::AdminPurge => saga_ops::purge(state, req).await,
        Endpoint::AdminOperate(kind) => operate::saga(state, req, kind).await,
        Endpoint::AdminOperateDefinition(kind) => operate::definition(state, req, kind).await,
    }
}

/// `a***@example.com`: enough for its owner to recognise, not to reuse.
pub(crate) fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_emails() {
        assert_eq!(super::mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(super::mask_email("nope"), "***");
    }
}
