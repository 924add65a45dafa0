//! The card invariant of the booking torture (issue 11): cards survive
//! restarts. A booking the kill interrupted between its start and its
//! authorization resumes with its token, so no saga may end with the
//! payment step refused because the card was no longer held. Checked after
//! every restart and at the end.

use crate::verdict::Violations;
use booking_domain::booking_saga::CARD_NOT_HELD;
use saga_engine::SagaRecord;

/// A violation for each saga that lost its card at a restart.
pub(super) fn no_card_lost(sagas: &[SagaRecord], v: &mut Violations) {
    for rec in sagas {
        let lost = rec
            .state
            .steps
            .iter()
            .any(|s| s.last_error.as_deref() == Some(CARD_NOT_HELD));
        if lost {
            v.push(
                "card lost at a restart",
                format!("saga {} compensated: {CARD_NOT_HELD}", rec.id),
            );
        }
    }
}
