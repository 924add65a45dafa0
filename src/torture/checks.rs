//! The torture's invariants. After every restart: each acknowledged start
//! still names its saga; no participant holds an effect of an acknowledged
//! saga the store has lost; the sagas that ended match the participants
//! (what `check_consistency` checks, over one scan of each participant);
//! no departure is oversold. At the end, `check_consistency` itself and the
//! totals: no seat left held, seats sold = passengers of confirmed
//! bookings, captured money = their totals, no open authorization, member
//! miles = miles of confirmed bookings, one booking per completed saga.

use super::child::{Child, CAPACITY};
use crate::acklog;
use crate::verdict::Violations;
use booking_domain::booking_saga::{
    check_consistency, BookingData, BookingRecord, BookingStatus, BOOKING_SAGA,
};
use booking_domain::faults::BookingStep;
use booking_domain::inventory::{Hold, HoldState};
use booking_domain::loyalty::{EntryLookup, EntryState};
use booking_domain::payments::{PaymentRecord, PaymentStatus};
use chrono::NaiveDate;
use saga_engine::{SagaRecord, SagaStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The saga id in a step's idempotency key (`SAGA:STEP`).
fn saga_of(key: &str) -> &str {
    key.split_once(':').map_or(key, |(s, _)| s)
}

/// Invariants that hold at any moment, given the acknowledgement log.
pub(super) async fn after_restart(c: &Child, acks: &[(String, String)]) -> Violations {
    let mut v = Violations::new();
    let sagas = match c.engine.list(None, usize::MAX).await {
        Ok(s) => s,
        Err(e) => {
            v.push("store read failed", format!("listing sagas: {e}"));
            return v;
        }
    };
    let in_store: BTreeSet<&str> = sagas.iter().map(|s| s.id.as_str()).collect();
    let by_key: HashMap<&str, &str> = sagas
        .iter()
        .filter_map(|s| Some((s.idempotency_key.as_deref()?, s.id.as_str())))
        .collect();
    let mut acked_ids = BTreeSet::new();
    for (key, id) in acks {
        acked_ids.insert(id.as_str());
        if let Some(d) = acklog::lost(key, id, by_key.get(key.as_str()).copied()) {
            v.push("lost acknowledged start", d);
        }
    }
    let holds = match c.services.inventory.all_holds().await {
        Ok(h) => h,
        Err(e) => {
            v.push("participant read failed", format!("holds: {e}"));
            Vec::new()
        }
    };
    let payments = match c.services.payments.all_payments().await {
        Ok(p) => p,
        Err(e) => {
            v.push("participant read failed", format!("payments: {e}"));
            Vec::new()
        }
    };
    let bookings = match c.services.bookings.all() {
        Ok(b) => b,
        Err(e) => {
            v.push("participant read failed", format!("bookings: {e}"));
            Vec::new()
        }
    };
    // Effects whose saga the store does not hold. One of a saga that was
    // never acknowledged may be the trace of a start the kill interrupted;
    // one of an acknowledged saga means the store lost it.
    let mut owners: Vec<(&str, String)> = Vec::new();
    owners.extend(holds.iter().map(|h| ("hold", h.key.clone())));
    owners.extend(payments.iter().map(|p| ("payment", p.key.clone())));
    owners.extend(bookings.iter().map(|b| ("booking", b.saga_id.to_string())));
    // Loyalty has no listing: look up the entries of the lost acknowledged sagas.
    for id in acked_ids.iter().filter(|id| !in_store.contains(**id)) {
        let key = format!("{id}:{}", BookingStep::AwardMiles.as_str());
        if let Ok(EntryLookup::Entry(_)) = c.services.loyalty.entry(&key).await {
            owners.push(("miles entry", key));
        }
    }
    let mut unacknowledged = 0;
    for (what, key) in &owners {
        let saga = saga_of(key);
        if in_store.contains(saga) {
            continue;
        }
        if acked_ids.contains(saga) {
            v.push(
                "effect without saga",
                format!("{what} {key} of acknowledged saga {saga}, which the store lost"),
            );
        } else {
            unacknowledged += 1;
        }
    }
    if unacknowledged > 0 {
        eprintln!(
            "torture: {unacknowledged} effects of sagas never acknowledged and not in the store (allowed)"
        );
    }
    let ledgers = Ledgers {
        holds: holds.iter().map(|h| (h.key.as_str(), h)).collect(),
        payments: payments.iter().map(|p| (p.key.as_str(), p)).collect(),
        bookings: bookings.iter().map(|b| (b.saga_id.as_str(), b)).collect(),
    };
    let cancelling = super::traveller_mix::under_cancellation(&sagas);
    ended_match(c, &sagas, &cancelling, &ledgers, &mut v).await;
    super::cards::no_card_lost(&sagas, &mut v);
    super::waits_mix::check(&sagas, &c.answered, false, &mut v);
    let mut taken: BTreeMap<(&str, NaiveDate), u32> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.state != HoldState::Released) {
        *taken.entry((h.flight.0.as_str(), h.date)).or_default() += h.seats;
    }
    for ((flight, date), n) in taken {
        if n > CAPACITY {
            v.push("oversold", format!("{flight} {date}: {n} of {CAPACITY}"));
        }
    }
    super::round_trip_mix::check(&sagas, &holds, &cancelling, &BTreeSet::new(), &mut v);
    v
}

/// The participants' records, by key (bookings by saga id).
struct Ledgers<'a> {
    holds: HashMap<&'a str, &'a Hold>,
    payments: HashMap<&'a str, &'a PaymentRecord>,
    bookings: HashMap<&'a str, &'a BookingRecord>,
}

/// What `check_consistency` checks, over records already read (a few
/// scans instead of four lookups per saga, which made each restart's check
/// grow to a tenth of a second in a debug build): each saga that ended
/// matches the participants.
async fn ended_match(
    c: &Child,
    sagas: &[SagaRecord],
    cancelling: &BTreeSet<String>,
    l: &Ledgers<'_>,
    v: &mut Violations,
) {
    for rec in sagas {
        // A cancelled (or cancelling) booking's participants are the
        // cancellation's to check (`traveller_mix`).
        if rec.definition != BOOKING_SAGA || cancelling.contains(rec.id.as_str()) {
            continue;
        }
        let status = rec.status();
        if !matches!(status, SagaStatus::Completed | SagaStatus::Compensated) {
            continue;
        }
        let Ok(d) = rec.data_as::<BookingData>() else {
            v.push("saga data unreadable", rec.id.to_string());
            continue;
        };
        let key = |s: BookingStep| format!("{}:{}", rec.id, s.as_str());
        let hold = l.holds.get(key(BookingStep::ReserveSeat).as_str());
        let pay = l.payments.get(key(BookingStep::AuthorizePayment).as_str());
        let booking = l.bookings.get(rec.id.as_str());
        let miles = if d.loyalty_id.is_some() || status == SagaStatus::Compensated {
            match c
                .services
                .loyalty
                .entry(&key(BookingStep::AwardMiles))
                .await
            {
                Ok(EntryLookup::Entry(e)) => Some(e.state),
                _ => None,
            }
        } else {
            None
        };
        let seats = d.passengers.len() as u32;
        let id = &rec.id;
        if status == SagaStatus::Completed {
            if !matches!(hold, Some(h) if h.state == HoldState::Confirmed && h.seats == seats) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} completed but hold is {hold:?}"),
                );
            }
            if !matches!(pay, Some(p) if p.status == PaymentStatus::Captured && p.amount == d.charge())
            {
                v.push(
                    "participant mismatch",
                    format!("saga {id} completed but payment is {pay:?}"),
                );
            }
            if d.loyalty_id.is_some() && miles != Some(EntryState::Applied) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} completed but miles are {miles:?}"),
                );
            }
            if !matches!(booking, Some(b) if b.status == BookingStatus::Confirmed) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} completed but booking is {booking:?}"),
                );
            }
        } else {
            if matches!(hold, Some(h) if h.state != HoldState::Released) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} compensated but hold is {hold:?}"),
                );
            }
            if matches!(pay, Some(p) if matches!(p.status, PaymentStatus::Authorized | PaymentStatus::Captured))
            {
                v.push(
                    "participant mismatch",
                    format!("saga {id} compensated but payment is {pay:?}"),
                );
            }
            if miles == Some(EntryState::Applied) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} compensated but miles are applied"),
                );
            }
            if matches!(booking, Some(b) if b.status == BookingStatus::Confirmed) {
                v.push(
                    "participant mismatch",
                    format!("saga {id} compensated but booking is confirmed"),
                );
            }
        }
    }
}

/// The totals once every saga has ended; returns the violations and the
/// number of sagas in the store.
pub(super) async fn totals(c: &Child) -> (Violations, usize) {
    let mut v = Violations::new();
    let sagas = match c.engine.list(None, usize::MAX).await {
        Ok(s) => s,
        Err(e) => {
            v.push("store read failed", format!("listing sagas: {e}"));
            return (v, 0);
        }
    };
    super::cards::no_card_lost(&sagas, &mut v);
    super::waits_mix::check(&sagas, &c.answered, true, &mut v);
    match check_consistency(&c.engine, &c.services).await {
        Ok(found) => {
            for p in found {
                v.push("participant mismatch", p);
            }
        }
        Err(e) => v.push("store read failed", format!("consistency check: {e}")),
    }
    let (mut completed, mut compensated) = (0, 0);
    for s in sagas.iter().filter(|s| s.definition == BOOKING_SAGA) {
        if s.data_as::<BookingData>().is_err() {
            v.push("saga data unreadable", s.id.to_string());
            continue;
        }
        match s.status() {
            SagaStatus::Completed => completed += 1,
            SagaStatus::Compensated => compensated += 1,
            other => v.push(
                "saga not ended",
                format!(
                    "saga {} is {other} (v{}): {}",
                    s.id,
                    s.version,
                    s.state.failure.as_deref().unwrap_or("no failure recorded")
                ) + &s
                    .state
                    .steps
                    .iter()
                    .map(|p| {
                        format!(
                            "; {} {:?} x{} {:?}",
                            p.name, p.state, p.attempts, p.last_error
                        )
                    })
                    .collect::<String>(),
            ),
        }
    }
    for s in sagas.iter().filter(|s| s.definition != BOOKING_SAGA) {
        if !s.status().is_terminal() {
            v.push("saga not ended", format!("saga {} is {}", s.id, s.status()));
        }
    }
    let holds = c.services.inventory.all_holds().await.unwrap_or_default();
    let held: u32 = holds
        .iter()
        .filter(|h| h.state == HoldState::Held)
        .map(|h| h.seats)
        .sum();
    if held != 0 {
        v.push(
            "totals",
            format!("{held} seats still held (not confirmed, not released)"),
        );
    }
    let mut per_date: BTreeMap<(&str, NaiveDate), u32> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.state == HoldState::Confirmed) {
        *per_date.entry((h.flight.0.as_str(), h.date)).or_default() += h.seats;
    }
    for ((flight, date), n) in per_date {
        if n > CAPACITY {
            v.push("oversold", format!("{flight} {date}: {n} of {CAPACITY}"));
        }
    }
    super::round_trip_mix::totals(&sagas, &holds, &mut v);
    let payments = c.services.payments.all_payments().await.unwrap_or_default();
    let open = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Authorized)
        .count();
    if open > 0 {
        v.push("totals", format!("{open} authorizations left open"));
    }
    // Seats sold, money captured and refunded, miles, confirmed bookings:
    // with cancellations and miles in the mix.
    super::traveller_mix::totals(c, &sagas, &mut v).await;
    eprintln!(
        "torture: {} sagas: {completed} confirmed, {compensated} compensated",
        sagas.len()
    );
    if completed == 0 || compensated == 0 {
        v.push("totals", "expected both confirmed and compensated bookings");
    }
    (v, sagas.len())
}
