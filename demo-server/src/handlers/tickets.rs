//! The e-ticket: `GET /api/tickets/{reference}` answers a printable HTML
//! page (with a print style sheet) for a confirmed booking: reference,
//! every passenger, the flight, the cabin and the seats, and a barcode-like
//! code drawn from the reference. Authorised like the manage-booking
//! lookup (`?last_name=` of a passenger) or by the session of the account
//! that made the booking; anything else is the same `404`. A cancelled
//! booking's ticket is refused (`409`): it is no longer valid.
//!
//! The passengers' dates of birth are kept sealed ([`booking_domain::personal`]);
//! the ticket is one of the two places that opens them (the other is the
//! holder's manage page, [`holder_fields`], which shows the phone masked).

use crate::api::{bytes_response, ApiError};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::{BookingRecord, BookingStatus};
use booking_domain::personal::PersonalDetails;
use bytes::Bytes;
use hyper::{Response, StatusCode};

/// `&`, `<`, `>`, `"` and `'` as entities.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The bars of `code`, as (x, width) in units, and the total width: drawn
/// from the SHA-256 of the code, a code a gate reader could be given, not
/// a real symbology. The HTML and the PDF ticket draw the same bars.
pub(super) fn bar_layout(code: &str) -> (Vec<(u32, u32)>, u32) {
    let digest = crate::service_token::digest(code.as_bytes());
    let mut x = 0u32;
    let mut bars = Vec::new();
    for byte in digest {
        for bit in 0..8 {
            let wide = (byte >> bit) & 1 == 1;
            let w = if wide { 3 } else { 1 };
            if bit % 2 == 0 {
                bars.push((x, w));
            }
            x += w + 1;
        }
    }
    (bars, x)
}

/// The boarding code printed on a ticket.
pub(super) fn boarding_code(r: &BookingRecord) -> String {
    format!(
        "{}-{}-{}",
        r.reference.0,
        r.flight_id.0,
        r.date.format("%Y%m%d")
    )
}

/// An SVG of the bars of `code`.
fn bars(code: &str) -> String {
    let (layout, x) = bar_layout(code);
    let rects: String = layout
        .iter()
        .map(|(x, w)| format!("<rect x=\"{x}\" y=\"0\" width=\"{w}\" height=\"60\"/>"))
        .collect();
    format!("<svg class=\"bars\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {x} 60\" width=\"{x}\" height=\"60\" role=\"img\" aria-label=\"boarding code {}\">{rects}</svg>", escape(code))
}

/// The booking behind `reference` if the request may see its ticket: a
/// passenger's `?last_name=`, or the session of the account that made it.
pub(super) async fn authorised(
    state: &AppState,
    req: &Req,
    reference: &str,
) -> Result<Option<BookingRecord>, ApiError> {
    let internal =
        |e: booking_domain::booking_saga::BookingStoreError| ApiError::Internal(e.to_string());
    if let Some(last_name) = req.query.get("last_name") {
        if last_name.chars().count() > 100 {
            return Ok(None);
        }
        return state
            .services
            .bookings
            .get(reference, last_name)
            .map_err(internal);
    }
    let Some(session) = &req.session else {
        return Ok(None);
    };
    let Some(record) = state
        .services
        .bookings
        .by_reference(reference)
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let rec = match state.engine.status(&record.saga_id).await {
        Ok(r) => r,
        Err(saga_engine::Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let owner = match &rec.idempotency_key {
        Some(k) => state.accounts.trips.owner(k)?,
        None => None,
    };
    Ok((owner.as_deref() == Some(session.account_id.as_str())).then_some(record))
}

/// `GET /api/tickets/{reference}[?last_name=]`.
pub async fn ticket(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let reference = req.param(0).trim().to_ascii_uppercase();
    let record = valid_ticket(state, req, &reference).await?;
    let flight = super::bookings::flight_summary(state, &record.flight_id, record.date);
    let personal = opened(state, &record)?;
    Ok(bytes_response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(page(&record, flight.as_ref(), &personal)),
    ))
}

/// The booking's sealed details, opened for its ticket (empty when none
/// were given); one that does not open is a `500`, never a ticket without
/// them.
pub(super) fn opened(
    state: &AppState,
    record: &BookingRecord,
) -> Result<PersonalDetails, ApiError> {
    state
        .services
        .bookings
        .personal_of(record)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The `i`th passenger's date of birth as printed, or `-`.
pub(super) fn dob_text(personal: &PersonalDetails, i: usize) -> String {
    personal
        .date_of_birth(i)
        .map(|d| d.iso())
        .unwrap_or_else(|| "-".into())
}

/// What the holder's manage page (`GET /api/bookings/lookup`) shows of the
/// sealed details, set on the booking's JSON `booking`: `contact_phone`,
/// every digit but the last three hidden, when one was given. The sealed
/// form itself is taken out. A record that does not open shows no phone
/// (the failure is logged).
pub(crate) fn holder_fields(
    state: &AppState,
    record: &BookingRecord,
    booking: &mut serde_json::Value,
) {
    if let Some(obj) = booking.as_object_mut() {
        obj.remove("personal");
        let phone = state
            .services
            .bookings
            .personal_of(record)
            .ok()
            .flatten()
            .and_then(|p| p.phone.as_ref().map(|p| p.masked()));
        if let Some(masked) = phone {
            obj.insert("contact_phone".into(), serde_json::Value::String(masked));
        }
    }
}

/// The confirmed booking of `reference` the request may print: `404` when
/// unknown or not authorised (the same answer), `409` once cancelled.
pub(super) async fn valid_ticket(
    state: &AppState,
    req: &Req,
    reference: &str,
) -> Result<BookingRecord, ApiError> {
    let not_found =
        || ApiError::NotFound("no booking matches this reference (and last name)".into());
    if reference.is_empty() || reference.len() > 16 {
        return Err(not_found());
    }
    let record = authorised(state, req, reference)
        .await?
        .ok_or_else(not_found)?;
    if record.status != BookingStatus::Confirmed {
        return Err(ApiError::Conflict(
            format!(
                "booking {reference} is {:?}, not confirmed: it has no valid ticket",
                record.status
            )
            .to_lowercase(),
        ));
    }
    Ok(record)
}

fn page(
    r: &BookingRecord,
    f: Option<&crate::api::FlightSummary>,
    personal: &PersonalDetails,
) -> String {
    let reference = escape(&r.reference.0);
    let passengers: String = r
        .passengers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "<tr><td>{}</td><td class=\"passenger\">{} {}</td><td class=\"dob\">{}</td><td>{}</td></tr>",
                i + 1,
                escape(&p.first_name),
                escape(&p.last_name.to_uppercase()),
                escape(&dob_text(personal, i)),
                escape(r.cabin.as_str())
            )
        })
        .collect();
    let flight = match f {
        Some(f) => format!(
            "<p class=\"route\"><span>{}</span> &rarr; <span>{}</span></p>\
             <dl><dt>Flight</dt><dd id=\"flight-no\">{} {}</dd><dt>Date</dt><dd>{}</dd>\
             <dt>Departs</dt><dd>{}</dd><dt>Arrives</dt><dd>{} ({})</dd>",
            escape(&f.origin),
            escape(&f.destination),
            escape(&f.airline),
            escape(&f.flight_no),
            r.date,
            escape(&f.departure),
            escape(&f.arrival),
            f.arrival_date
        ),
        None => format!(
            "<dl><dt>Flight</dt><dd id=\"flight-no\">{}</dd><dt>Date</dt><dd>{}</dd>",
            escape(&r.flight_id.0),
            r.date
        ),
    };
    let code = boarding_code(r);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>E-ticket {reference}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;color:#111}}\
.ticket{{border:2px solid #111;border-radius:8px;padding:1.5rem}}h1{{margin:0 0 .5rem}}\
.ref{{font:700 2rem monospace;letter-spacing:.2em}}.route{{font-size:1.5rem}}dl{{display:grid;grid-template-columns:8rem 1fr}}\
dt{{font-weight:600}}table{{width:100%;border-collapse:collapse}}td,th{{border-bottom:1px solid #999;padding:.3rem;text-align:left}}\
.code{{font-family:monospace}}.bars rect{{fill:#111}}\
@media print{{.noprint{{display:none}}body{{margin:0;max-width:none}}.ticket{{border:1px solid #000;break-inside:avoid}}}}</style></head>\
<body><main class=\"ticket\" id=\"ticket\"><h1>E-ticket</h1>\
<p>Booking reference <span class=\"ref\" id=\"reference\">{reference}</span> &middot; status: confirmed</p>\
{flight}<dt>Cabin</dt><dd>{cabin}</dd><dt>Seats</dt><dd>{seats} in {cabin} (seat numbers at check-in)</dd></dl>\
<h2>Passengers</h2><table id=\"passengers\"><thead><tr><th>#</th><th>Name</th><th>Date of birth</th><th>Cabin</th></tr></thead><tbody>{passengers}</tbody></table>\
<h2>Boarding code</h2>{bars}<p class=\"code\">{code_text}</p></main>\
<p class=\"noprint\"><button type=\"button\" onclick=\"window.print()\">Print</button></p></body></html>",
        cabin = escape(r.cabin.as_str()),
        seats = r.passengers.len(),
        bars = bars(&code),
        code_text = escape(&code),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
