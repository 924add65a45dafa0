//! The web page: plain HTML, CSS and JavaScript embedded in the binary with
//! `include_str!` (no build step, no CDN). The page talks only to the JSON
//! API and follows bookings with `EventSource`.
//!
//! The page and its files are served with a Content-Security-Policy that
//! allows only this origin's scripts, styles and connections.

use crate::api::bytes_response;
use crate::body::Body;
use crate::routes::Endpoint;
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");

/// The page's scripts after `/app.js`, by file name under `/js/`, in the
/// order `index.html` loads them. A view is one script here plus one
/// `<section class="view">` in the page; `start.js` comes last.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("search.js", include_str!("ui/js/search.js")),
    ("booking.js", include_str!("ui/js/booking.js")),
    ("round_trip.js", include_str!("ui/js/round_trip.js")),
    ("discounts.js", include_str!("ui/js/discounts.js")),
    ("passenger.js", include_str!("ui/js/passenger.js")),
    ("manage.js", include_str!("ui/js/manage.js")),
    ("loyalty.js", include_str!("ui/js/loyalty.js")),
    ("timeline.js", include_str!("ui/js/timeline.js")),
    ("account.js", include_str!("ui/js/account.js")),
    ("trips.js", include_str!("ui/js/trips.js")),
    ("admin.js", include_str!("ui/js/admin.js")),
    ("start.js", include_str!("ui/js/start.js")),
];
const STYLE_CSS: &str = include_str!("ui/style.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One of the page's [`SCRIPTS`] by file name, or `None`.
pub fn script(name: &str) -> Option<Response<Body>> {
    SCRIPTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| file("application/javascript; charset=utf-8", text))
}

/// The file behind a UI endpoint.
pub fn asset(endpoint: Endpoint) -> Response<Body> {
    match endpoint {
        Endpoint::UiScript => file("application/javascript; charset=utf-8", APP_JS),
        Endpoint::UiStyle => file("text/css; charset=utf-8", STYLE_CSS),
        _ => file("text/html; charset=utf-8", INDEX_HTML),
    }
}

fn file(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut resp = bytes_response(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    );
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}
