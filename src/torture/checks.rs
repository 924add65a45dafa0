//! The torture's invariants. After every restart: each acknowledged start
//! still names its saga; no participant holds an effect of an acknowledged
//! saga the store has lost; the sagas that ended match the participants
//! (`check_consistency`); no departure is oversold. At the end, the
//! totals: no seat left held, seats sold = passengers of confirmed
//! bookings, captured money = their totals, no open authorization, member
//! miles = miles of confirmed bookings, one booking per completed saga.

use super::child::{Child, CAPACITY};
use crate::acklog;
use crate::verdict::Violations;
use booking_domain::booking_saga::{check_consistency, BookingData, BookingStatus};
use booking_domain::faults::BookingStep;
use booking_domain::inventory::HoldState;
use booking_domain::loyalty::EntryLookup;
use booking_domain::payments::PaymentStatus;
use chrono::NaiveDate;
use saga_engine::SagaStatus;
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
    // Effects whose saga the store does not hold. One of a saga that was
    // never acknowledged may be the trace of a start the kill interrupted;
    // one of an acknowledged saga means the store lost it.
    let mut owners: Vec<(String, String)> = Vec::new();
    match c.services.inventory.all_holds().await {
        Ok(holds) => owners.extend(holds.into_iter().map(|h| ("hold".into(), h.key))),
        Err(e) => v.push("participant read failed", format!("holds: {e}")),
    }
    match c.services.payments.all_payments().await {
        Ok(ps) => owners.extend(ps.into_iter().map(|p| ("payment".into(), p.key))),
        Err(e) => v.push("participant read failed", format!("payments: {e}")),
    }
    match c.services.bookings.all() {
        Ok(bs) => owners.extend(
            bs.into_iter()
                .map(|b| ("booking".into(), b.saga_id.as_str().to_string())),
        ),
        Err(e) => v.push("participant read failed", format!("bookings: {e}")),
    }
    // Loyalty has no listing: look up the entries of the lost acknowledged sagas.
    for id in acked_ids.iter().filter(|id| !in_store.contains(**id)) {
        let key = format!("{id}:{}", BookingStep::AwardMiles.as_str());
        if let Ok(EntryLookup::Entry(_)) = c.services.loyalty.entry(&key).await {
            owners.push(("miles entry".into(), key));
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
    match check_consistency(&c.engine, &c.services).await {
        Ok(found) => {
            for p in found {
                v.push("participant mismatch", p);
            }
        }
        Err(e) => v.push("store read failed", format!("consistency check: {e}")),
    }
    if let Ok(holds) = c.services.inventory.all_holds().await {
        let mut taken: BTreeMap<NaiveDate, u32> = BTreeMap::new();
        for h in holds.iter().filter(|h| h.state != HoldState::Released) {
            *taken.entry(h.date).or_default() += h.seats;
        }
        for (date, n) in taken {
            if n > CAPACITY {
                v.push("oversold", format!("{date}: {n} of {CAPACITY}"));
            }
        }
    }
    v
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
    match check_consistency(&c.engine, &c.services).await {
        Ok(found) => {
            for p in found {
                v.push("participant mismatch", p);
            }
        }
        Err(e) => v.push("store read failed", format!("consistency check: {e}")),
    }
    let (mut seats, mut captured, mut miles, mut completed, mut compensated) =
        (0u32, 0i64, 0u64, 0, 0);
    for s in &sagas {
        let Ok(d) = s.data_as::<BookingData>() else {
            v.push("saga data unreadable", s.id.to_string());
            continue;
        };
        match s.status() {
            SagaStatus::Completed => {
                completed += 1;
                seats += d.passengers.len() as u32;
                captured += d.price.total.minor;
                miles += d.miles_awarded.unwrap_or(0);
            }
            SagaStatus::Compensated => compensated += 1,
            other => v.push("saga not ended", format!("saga {} is {other}", s.id)),
        }
    }
    let holds = c.services.inventory.all_holds().await.unwrap_or_default();
    let sum = |state: HoldState| -> u32 {
        holds
            .iter()
            .filter(|h| h.state == state)
            .map(|h| h.seats)
            .sum()
    };
    let (held, sold) = (sum(HoldState::Held), sum(HoldState::Confirmed));
    if held != 0 {
        v.push(
            "totals",
            format!("{held} seats still held (not confirmed, not released)"),
        );
    }
    if sold != seats {
        v.push(
            "totals",
            format!("{sold} seats sold but completed bookings have {seats} passengers"),
        );
    }
    let mut per_date: BTreeMap<NaiveDate, u32> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.state == HoldState::Confirmed) {
        *per_date.entry(h.date).or_default() += h.seats;
    }
    for (date, n) in per_date {
        if n > CAPACITY {
            v.push("oversold", format!("{date}: {n} of {CAPACITY}"));
        }
    }
    let payments = c.services.payments.all_payments().await.unwrap_or_default();
    let taken: i64 = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Captured)
        .map(|p| p.amount.minor)
        .sum();
    if taken != captured {
        v.push(
            "totals",
            format!("captured {taken} but confirmed bookings total {captured}"),
        );
    }
    let open = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Authorized)
        .count();
    if open > 0 {
        v.push("totals", format!("{open} authorizations left open"));
    }
    match c.services.loyalty.account(&c.member).await {
        Ok(a) if a.balance != miles || a.qualifying_miles != miles => v.push(
            "totals",
            format!(
                "member has {} miles ({} qualifying) but confirmed bookings earned {miles}",
                a.balance, a.qualifying_miles
            ),
        ),
        Ok(_) => {}
        Err(e) => v.push("participant read failed", format!("member account: {e}")),
    }
    let bookings = c.services.bookings.all().unwrap_or_default();
    let confirmed = bookings
        .iter()
        .filter(|b| b.status == BookingStatus::Confirmed)
        .count();
    if confirmed != completed {
        v.push(
            "totals",
            format!("{confirmed} confirmed bookings for {completed} completed sagas"),
        );
    }
    eprintln!(
        "torture: {} sagas: {completed} confirmed, {compensated} compensated; {sold} seats sold, {captured} captured, {miles} miles",
        sagas.len()
    );
    if completed == 0 || compensated == 0 {
        v.push("totals", "expected both confirmed and compensated bookings");
    }
    (v, sagas.len())
}
