//! Airports, flight search, one flight, and the test cards: the public,
//! read-only part of the API.
//!
//! Search asks the catalog twice: once without seat counts to find the
//! candidate flights, then, after asking the inventory (local or remote,
//! hence async) how many seats each has left, with those counts, so that a
//! flight without enough seats is left out and every result carries its
//! `seats_left`.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::query::Params;
use crate::routes::Req;
use crate::state::AppState;
use booking_domain::catalog::{
    Airport, Flight, RoundTripResults, SearchError, SearchQuery, SearchResult, SortBy,
};
use booking_domain::payments::TEST_CARDS;
use booking_domain::pricing::{price, PriceBreakdown};
use booking_domain::{Cabin, FlightId};
use chrono::{NaiveDate, NaiveTime, Utc};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// Most airports one autocomplete answer lists.
const MAX_AIRPORTS: usize = 50;

/// `GET /api/airports?q=&limit=`: airports matching `q` best first; all of
/// them (by code) when `q` is empty.
pub fn airports(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let limit: usize = p.optional("limit", "a number").unwrap_or(10);
    if !(1..=MAX_AIRPORTS).contains(&limit) {
        p.error("limit", format!("must be 1 to {MAX_AIRPORTS}"));
    }
    if req.query.get("q").is_some_and(|q| q.chars().count() > 100) {
        p.error("q", "at most 100 characters");
    }
    ApiError::check("invalid airport query", p.errors)?;
    let catalog = state.services.catalog.current();
    let found: Vec<&Airport> = match req.query.get("q") {
        Some(q) => catalog.autocomplete(q, limit.clamp(1, MAX_AIRPORTS)),
        None => catalog.airports().collect(),
    };
    Ok(json_response(StatusCode::OK, &json!({ "airports": found })))
}

/// One search result with the price for all passengers.
#[derive(Debug, Serialize)]
struct Offer {
    #[serde(flatten)]
    result: SearchResult,
    /// What the whole party pays.
    price: Option<PriceBreakdown>,
}

fn offers(results: Vec<SearchResult>, passengers: u32) -> Vec<Offer> {
    results
        .into_iter()
        .map(|r| Offer {
            price: price(&r.fare, passengers).ok(),
            result: r,
        })
        .collect()
}

/// An optional `HH:MM` (or `HH:MM:SS`) parameter.
fn time_param(p: &mut Params, req: &Req, name: &str) -> Option<NaiveTime> {
    let raw = req.query.get(name)?;
    let t = NaiveTime::parse_from_str(raw, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(raw, "%H:%M:%S"))
        .ok();
    if t.is_none() {
        p.error(name, format!("expected a time HH:MM, got {raw:?}"));
    }
    t
}

/// `GET /api/flights/search`: one way, or a round trip with `return_date`.
pub async fn search(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let from = p.required("from");
    let to = p.required("to");
    let date: Option<NaiveDate> = p.parsed("date", "a date YYYY-MM-DD");
    let cabin: Cabin = p
        .optional("cabin", "economy, business or first")
        .unwrap_or(Cabin::Economy);
    let passengers: u32 = p.optional("passengers", "a number").unwrap_or(1);
    let sort: SortBy = p
        .optional("sort", "price, departure or duration")
        .unwrap_or_default();
    let max_price: Option<i64> = p.optional("max_price", "an amount in minor units (cents)");
    if max_price.is_some_and(|m| m < 0) {
        p.error("max_price", "must not be negative");
    }
    let depart_after = time_param(&mut p, req, "depart_after");
    let depart_before = time_param(&mut p, req, "depart_before");
    let return_date: Option<NaiveDate> = p.optional("return_date", "a date YYYY-MM-DD");
    let today = Utc::now().date_naive();
    if date.is_some_and(|d| d < today) {
        p.error("date", "is in the past");
    }
    ApiError::check("invalid search", p.errors)?;
    let (Some(from), Some(to), Some(date)) = (from, to, date) else {
        return Err(ApiError::Internal("checked parameters missing".into()));
    };
    let query = SearchQuery {
        from,
        to,
        date,
        cabin,
        passengers,
        sort,
        max_price,
        depart_after,
        depart_before,
        airline: req.query.get("airline").map(str::to_string),
    };
    let catalog = state.services.catalog.current();
    let search_error = |e| search_error(e, &query.from);
    let unlimited = |_: &FlightId, _: NaiveDate, _: Cabin| u32::MAX;
    let candidates = match return_date {
        Some(r) => catalog
            .search_round_trip(&query, r, &unlimited)
            .map(|rt| [rt.outbound, rt.inbound].concat()),
        None => catalog.search(&query, &unlimited),
    }
    .map_err(search_error)?;
    let mut seats = HashMap::new();
    for c in &candidates {
        let key = (c.flight.id.clone(), c.date, c.cabin);
        if let Entry::Vacant(slot) = seats.entry(key) {
            let left = state
                .services
                .inventory
                .seats_left(&c.flight.id, c.date, c.cabin)
                .await?;
            slot.insert(left);
        }
    }
    let seats_left = |id: &FlightId, d: NaiveDate, c: Cabin| {
        seats.get(&(id.clone(), d, c)).copied().unwrap_or(0)
    };
    let echo = json!({
        "from": query.from.to_ascii_uppercase(), "to": query.to.to_ascii_uppercase(),
        "date": date, "return_date": return_date, "cabin": cabin, "passengers": passengers,
        "sort": sort,
    });
    let body = match return_date {
        Some(r) => {
            let RoundTripResults { outbound, inbound } = catalog
                .search_round_trip(&query, r, &seats_left)
                .map_err(search_error)?;
            json!({
                "query": echo,
                "outbound": offers(outbound, passengers),
                "inbound": offers(inbound, passengers),
            })
        }
        None => {
            let results = catalog.search(&query, &seats_left).map_err(search_error)?;
            json!({ "query": echo, "results": offers(results, passengers) })
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// A search error as a `422` naming the parameter at fault.
fn search_error(e: SearchError, from: &str) -> ApiError {
    let field = match &e {
        SearchError::UnknownAirport(code) if *code == from.trim().to_ascii_uppercase() => "from",
        SearchError::UnknownAirport(_) | SearchError::SameAirport(_) => "to",
        SearchError::InvalidPassengers(_) => "passengers",
        SearchError::EmptyTimeWindow { .. } => "depart_after",
        SearchError::ReturnBeforeOutbound { .. } => "return_date",
    };
    ApiError::field(field, e.to_string())
}

/// `GET /api/flights/{id}?date=`: the flight, its airports and fares, and
/// with a date, the seats left in each cabin that day.
pub async fn flight(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let id = FlightId(req.param(0).to_string());
    let catalog = state.services.catalog.current();
    let flight: &Flight = catalog
        .flight(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no flight {}", id.0)))?;
    let mut p = Params::new(&req.query);
    let date: Option<NaiveDate> = p.optional("date", "a date YYYY-MM-DD");
    ApiError::check("invalid flight query", p.errors)?;
    let mut seats = BTreeMap::new();
    if let Some(date) = date {
        for cabin in flight.cabins() {
            let left = state
                .services
                .inventory
                .seats_left(&flight.id, date, cabin)
                .await?;
            seats.insert(cabin, left);
        }
    }
    let body = json!({
        "flight": flight,
        "origin": catalog.airport(&flight.origin),
        "destination": catalog.airport(&flight.destination),
        "cabins": flight.cabins(),
        "date": date,
        "operates_on_date": date.map(|d| chrono::Datelike::weekday(&d) == flight.weekday),
        "arrival_date": date.map(|d| flight.arrival_date(d)),
        "seats_left": date.map(|_| seats),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/test-cards`: card numbers with a known outcome.
pub fn test_cards() -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({
            "cards": TEST_CARDS,
            "note": "any future expiry date and any 3-4 digit CVC; any other valid card number approves",
        }),
    )
}
