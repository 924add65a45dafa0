//! Before a booking starts: every field checked (a message per field,
//! nothing started on bad input), the card bounded, the price computed, the
//! request fingerprinted, and the saga's data prepared.

use super::*;
use crate::pricing::price as price_fn;

/// Card input bounds, checked (after trimming) before a card is kept.
pub const MAX_CARD_NUMBER_CHARS: usize = 23;
/// The longest CVC accepted, in characters.
pub const MAX_CVC_CHARS: usize = 4;
/// The longest name on card accepted, in characters.
pub const MAX_HOLDER_NAME_CHARS: usize = 100;

/// The card as it will be kept: number, CVC and holder name trimmed.
pub(super) fn bounded_card(card: &CardDetails) -> CardDetails {
    CardDetails {
        number: card.number.trim().to_string(),
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        cvc: card.cvc.trim().to_string(),
        holder_name: card.holder_name.trim().to_string(),
    }
}

/// The length and character bounds of a trimmed card, one problem per
/// field at most; the messages never quote the value.
pub(super) fn card_bounds_problems(card: &CardDetails) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if card.number.is_empty() || card.number.chars().count() > MAX_CARD_NUMBER_CHARS {
        out.push((
            "card.number",
            "card number must be 12 to 19 digits (at most 23 characters with spaces or dashes)",
        ));
    }
    if card.cvc.chars().count() > MAX_CVC_CHARS {
        out.push(("card.cvc", "security code must be 3 or 4 digits"));
    }
    if card.holder_name.is_empty()
        || card.holder_name.chars().count() > MAX_HOLDER_NAME_CHARS
        || card.holder_name.chars().any(char::is_control)
    {
        out.push((
            "card.holder_name",
            "name on card must be 1 to 100 characters, without control characters",
        ));
    }
    out
}

pub(super) fn name_ok(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && t.chars().count() <= 50
        && t.chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '\'' || c == '.')
}

pub(super) fn email_ok(s: &str) -> bool {
    let s = s.trim();
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// The SHA-256, in hex, of the whole request (keys in a fixed order), the
/// card's number and CVC included: a different card with the same last four
/// digits is a different request. Only the hash is kept.
pub fn request_fingerprint(req: &BookingRequest) -> String {
    use sha2::{Digest, Sha256};
    // Through `Value`, whose maps are sorted, so that the bytes are stable.
    let v = serde_json::to_value(req).unwrap_or_default();
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"booking-request-v2\0");
    h.update(&bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a fingerprint written as text, or as a number by older versions.
pub(super) fn fingerprint_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Number(u64),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Text(t) => t,
        Stored::Number(n) => n.to_string(),
    })
}

/// The request field a card problem belongs to.
pub(super) fn card_problem_field(problem: &crate::payments::CardProblem) -> &'static str {
    match problem {
        crate::payments::CardProblem::ExpiryMonth { .. }
        | crate::payments::CardProblem::ExpiryYear { .. }
        | crate::payments::CardProblem::Expired { .. } => "card.expiry",
        crate::payments::CardProblem::Cvc => "card.cvc",
        crate::payments::CardProblem::HolderName => "card.holder_name",
        _ => "card.number",
    }
}

/// Validates `req` against the catalog and participants (as of `today`) and
/// prices it. Every problem is reported, one per field; on success the
/// saga's data is returned, its `card_token` still empty (the card is
/// tokenized by [`start_booking`] once the idempotency key is checked).
pub async fn prepare(
    services: &BookingServices,
    req: &BookingRequest,
    today: NaiveDate,
) -> Result<BookingData, BookingError> {
    prepare_with(services, req, today, None).await
}

/// [`prepare`] with a promo code: its discount comes off the base fare
/// first, then miles are priced on what is left (field `promo_code` when
/// it cannot be used).
pub async fn prepare_with(
    services: &BookingServices,
    req: &BookingRequest,
    today: NaiveDate,
    promo_code: Option<&str>,
) -> Result<BookingData, BookingError> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    let flight_id = FlightId(req.flight_id.trim().to_string());
    let catalog = services.catalog.current();
    let flight = catalog.flight(&flight_id);
    let mut fare = None;
    match flight {
        None => err(
            "flight_id",
            format!("no flight {:?} in the schedule", req.flight_id),
        ),
        Some(f) => {
            if req.date.weekday() != f.weekday {
                err(
                    "date",
                    format!(
                        "flight {} operates on {:?}s, {} is a {:?}",
                        f.flight_no,
                        f.weekday,
                        req.date,
                        req.date.weekday()
                    ),
                );
            }
            match f.fare(req.cabin) {
                None => err(
                    "cabin",
                    format!("{} is not sold on flight {}", req.cabin, f.flight_no),
                ),
                Some(m) => fare = Some(m.clone()),
            }
        }
    }
    let back = round_trip::check_return(&catalog, req, flight, today, &mut err);
    if req.date < today {
        err("date", format!("{} is in the past", req.date));
    } else if (req.date - today).num_days() > MAX_DAYS_AHEAD {
        err("date", format!("bookings open {MAX_DAYS_AHEAD} days ahead"));
    }
    if req.passengers.is_empty() || req.passengers.len() > MAX_PASSENGERS {
        err(
            "passengers",
            format!(
                "1 to {MAX_PASSENGERS} passengers, got {}",
                req.passengers.len()
            ),
        );
    }
    for (i, p) in req.passengers.iter().enumerate().take(MAX_PASSENGERS) {
        if !name_ok(&p.first_name) {
            err(
                &format!("passengers[{i}].first_name"),
                "1 to 50 letters, spaces, hyphens or apostrophes".into(),
            );
        }
        if !name_ok(&p.last_name) {
            err(
                &format!("passengers[{i}].last_name"),
                "1 to 50 letters, spaces, hyphens or apostrophes".into(),
            );
        }
    }
    // Checked here, sealed below: the messages never quote the value.
    let mut personal = crate::personal::PersonalDetails::default();
    for (i, p) in req.passengers.iter().enumerate().take(MAX_PASSENGERS) {
        let dob = p.date_of_birth.as_ref().map(|t| {
            crate::personal::DateOfBirth::parse(t.as_str(), today).map_err(|e| {
                err(&format!("passengers[{i}].date_of_birth"), e.to_string());
            })
        });
        personal.dates_of_birth.push(dob.and_then(Result::ok));
    }
    if let Some(t) = &req.phone {
        match crate::personal::Phone::parse(t.as_str()) {
            Ok(p) => personal.phone = Some(p),
            Err(e) => err("phone", e.to_string()),
        }
    }
    if !email_ok(&req.email) {
        err("email", "not a valid email address".into());
    }
    // Bounded and trimmed before anything else looks at it; the messages
    // never quote what was sent.
    let held = HeldCard::new(bounded_card(&req.card));
    // A held booking is paid later (`pay_held_booking`): no card now.
    let checked = if req.hold {
        if *held.card() != CardDetails::default() {
            err(
                "card",
                "a held booking takes no card now; pay it later".into(),
            );
        }
        Some(None)
    } else {
        let mut card_ok = true;
        for (field, message) in card_bounds_problems(held.card()) {
            card_ok = false;
            err(field, message.to_string());
        }
        match check_card(held.card(), today) {
            _ if !card_ok => None,
            Ok(c) => Some(Some(c)),
            Err(problem) => {
                err(card_problem_field(&problem), problem.to_string());
                None
            }
        }
    };
    for (step, f) in &req.faults {
        if let Err(e) = f.validate() {
            err(&format!("faults.{step}"), e);
        }
    }
    let mut loyalty_id = None;
    if let Some(id) = req
        .loyalty_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match services.loyalty.account(&AccountId(id.to_string())).await {
            Ok(a) => loyalty_id = Some(a.id),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(_) => err("loyalty_id", format!("no loyalty account {id}")),
        }
    }
    let loyalty_balance = match &loyalty_id {
        Some(id) if req.redeem_miles > 0 => match services.loyalty.account(id).await {
            Ok(a) => Some(a.balance),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(_) => None,
        },
        _ => None,
    };
    if req.redeem_miles > 0 {
        match (&loyalty_id, loyalty_balance) {
            (None, _) => err(
                "redeem_miles",
                "paying with miles needs a loyalty_id".into(),
            ),
            (Some(_), Some(balance)) if balance < req.redeem_miles => err(
                "redeem_miles",
                format!(
                    "the account has {balance} miles, {} asked",
                    req.redeem_miles
                ),
            ),
            _ => {}
        }
    }
    let price = match fare {
        Some(fare) if !req.passengers.is_empty() && req.passengers.len() <= MAX_PASSENGERS => {
            match price(&fare, req.passengers.len() as u32) {
                Ok(p) => Some(p),
                Err(e) => {
                    err("passengers", e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    // A round trip: the return leg priced the same way, the two summed.
    let (price, return_leg) = match (price, back) {
        (Some(p), Some((mut leg, fare))) => {
            match price_fn(&fare, req.passengers.len() as u32)
                .and_then(|b| crate::pricing::combine(&p, &b).map(|both| (b, both)))
            {
                Ok((b, both)) => {
                    leg.price = Some(b);
                    (Some(both), Some(leg))
                }
                Err(e) => {
                    err("return_flight_id", e.to_string());
                    (None, None)
                }
            }
        }
        (p, _) => (p, None),
    };
    let promo = match (&price, promo_code.map(str::trim).filter(|c| !c.is_empty())) {
        (Some(p), Some(code)) => match services.promos.quote(code, p, Utc::now()) {
            Ok(applied) => Some(applied),
            Err(e) if e.is_retryable() => return Err(BookingError::Unavailable(e.to_string())),
            Err(e) => {
                err("promo_code", e.to_string());
                None
            }
        },
        _ => None,
    };
    let after_promo = match (&price, &promo) {
        (Some(p), Some(applied)) => Some(crate::pricing::after_discount(p, &applied.discount)),
        (p, _) => p.clone(),
    };
    let miles_payment = match (&after_promo, req.redeem_miles) {
        (Some(p), miles) if miles > 0 => match crate::pricing::pay_with_miles(p, miles) {
            Ok(m) => Some(m),
            Err(e) => {
                err("redeem_miles", e.to_string());
                None
            }
        },
        _ => None,
    };
    if !errors.is_empty() {
        return Err(ValidationErrors(errors).into());
    }
    let personal = match personal.is_empty() {
        true => None,
        false => Some(
            services
                .bookings
                .seal_personal(&personal)
                .map_err(|e| BookingError::Unavailable(e.to_string()))?,
        ),
    };
    match (price, checked) {
        (Some(price), Some(card)) => Ok(BookingData {
            card_needs_confirmation: card.as_ref().is_some_and(|c| c.needs_confirmation),
            v: 1,
            request_fingerprint: request_fingerprint(req),
            flight_id,
            date: req.date,
            cabin: req.cabin,
            passengers: req
                .passengers
                .iter()
                .map(|p| Passenger {
                    first_name: p.first_name.trim().to_string(),
                    last_name: p.last_name.trim().to_string(),
                    // Only the seal holds it (the sabotage keeps it in clear).
                    date_of_birth: saga_engine::sabotage::active(
                        saga_engine::sabotage::PERSONAL_IN_CLEAR,
                    )
                    .then(|| p.date_of_birth.clone())
                    .flatten(),
                })
                .collect(),
            email: req.email.trim().to_lowercase(),
            loyalty_id,
            card_token: String::new(),
            card_brand: card
                .as_ref()
                .map(|c| c.brand.as_str().to_string())
                .unwrap_or_default(),
            card_last4: card.map(|c| c.last4).unwrap_or_default(),
            price,
            faults: req.faults.clone(),
            authorization_id: None,
            miles_awarded: None,
            booking_ref: None,
            miles_payment,
            promo,
            personal,
            return_leg,
            return_seat: None,
            hold: req.hold,
            customer_confirmed: false,
        }),
        _ => Err(ValidationErrors(errors).into()),
    }
}
