//! The e-ticket as a PDF: `GET /api/bookings/{id}/ticket.pdf`, where `id`
//! is the booking id or its reference, authorised exactly as the HTML
//! ticket ([`super::tickets`]: a passenger's `?last_name=` or the owning
//! account's session; else the same `404`; `409` once cancelled).
//!
//! One A4 page written with `pdf-writer`: the reference, the flight, the
//! cabin, every passenger, the boarding code as text and as the same bars
//! as the HTML ticket; each passenger with the date of birth (opened from
//! its seal for this page only, `-` when none was given). Text uses the standard Helvetica font in
//! WinAnsiEncoding, so no font is embedded; a character that encoding lacks
//! prints as `?`.

use super::tickets::{bar_layout, boarding_code, dob_text, opened, valid_ticket};
use crate::api::{bytes_response, ApiError, FlightSummary};
use crate::body::Body;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::booking_saga::BookingRecord;
use booking_domain::personal::PersonalDetails;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::{Response, StatusCode};
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
use saga_engine::SagaId;

/// `GET /api/bookings/{id}/ticket.pdf[?last_name=]`.
pub async fn ticket_pdf(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let raw = req.param(0).trim();
    // A booking id names its booking; anything else is read as a reference.
    let by_id = match SagaId::parse(raw) {
        Some(id) => state
            .services
            .bookings
            .by_saga(&id)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        None => None,
    };
    let reference = match by_id {
        Some(b) => b.reference.0,
        None => raw.to_ascii_uppercase(),
    };
    let record = valid_ticket(state, req, &reference).await?;
    let flight = super::bookings::flight_summary(state, &record.flight_id, record.date);
    let mut resp = bytes_response(
        StatusCode::OK,
        "application/pdf",
        Bytes::from(render(&record, flight.as_ref(), &opened(state, &record)?)),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "inline; filename=\"ticket-{}.pdf\"",
        record.reference.0
    )) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `text` in WinAnsiEncoding (Windows-1252): ASCII and Latin-1 as they
/// are, anything else `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// Lines of text, top down, each with its font size.
struct Lines {
    content: Content,
    y: f32,
}

impl Lines {
    const LEFT: f32 = 56.0;

    fn line(&mut self, size: f32, text: &str) {
        self.y -= size * 1.5;
        let bytes = win_ansi(text);
        self.content
            .begin_text()
            .set_font(Name(b"F1"), size)
            .next_line(Self::LEFT, self.y)
            .show(Str(&bytes))
            .end_text();
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }
}

/// The ticket of a confirmed booking as PDF bytes, each passenger with the
/// date of birth `personal` holds for them.
pub fn render(r: &BookingRecord, f: Option<&FlightSummary>, personal: &PersonalDetails) -> Vec<u8> {
    const PAGE: (f32, f32) = (595.0, 842.0); // A4 in points
    let (catalog, tree, page, font, contents) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
    );
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    {
        let mut p = pdf.page(page);
        p.media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1))
            .parent(tree)
            .contents(contents);
        p.resources().fonts().pair(Name(b"F1"), font);
    }
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    let mut l = Lines {
        content: Content::new(),
        y: PAGE.1 - 40.0,
    };
    l.line(22.0, "E-ticket");
    l.line(14.0, &format!("Booking reference {}", r.reference.0));
    l.line(11.0, "Status: confirmed");
    l.gap(8.0);
    match f {
        Some(f) => {
            l.line(16.0, &format!("{} to {}", f.origin, f.destination));
            l.line(11.0, &format!("Flight {} {}", f.airline, f.flight_no));
            l.line(11.0, &format!("Date {}", r.date));
            l.line(11.0, &format!("Departs {}", f.departure));
            l.line(11.0, &format!("Arrives {} ({})", f.arrival, f.arrival_date));
        }
        None => {
            l.line(11.0, &format!("Flight {}", r.flight_id.0));
            l.line(11.0, &format!("Date {}", r.date));
        }
    }
    l.line(
        11.0,
        &format!(
            "Cabin {}: {} seat(s), seat numbers at check-in",
            r.cabin.as_str(),
            r.passengers.len()
        ),
    );
    l.gap(8.0);
    l.line(14.0, "Passengers");
    for (i, p) in r.passengers.iter().enumerate() {
        l.line(
            11.0,
            &format!(
                "{}. {} {}, born {}",
                i + 1,
                p.first_name,
                p.last_name.to_uppercase(),
                dob_text(personal, i)
            ),
        );
    }
    l.gap(8.0);
    l.line(14.0, "Boarding code");
    let code = boarding_code(r);
    let (bars, width) = bar_layout(&code);
    let scale = ((PAGE.0 - 2.0 * Lines::LEFT) / width as f32).min(1.5);
    let top = l.y - 8.0;
    l.content.set_fill_gray(0.0);
    for (x, w) in bars {
        l.content.rect(
            Lines::LEFT + x as f32 * scale,
            top - 60.0,
            w as f32 * scale,
            60.0,
        );
    }
    l.content.fill_nonzero();
    l.y = top - 60.0;
    l.line(11.0, &code);
    let stream = l.content.finish();
    pdf.stream(contents, &stream);
    pdf.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_outside_win_ansi_prints_as_question_marks() {
        assert_eq!(super::win_ansi("Zoë Łukasz"), b"Zo\xeb ?ukasz".to_vec());
    }
}
