//! The operator's admin page and the traveller's search results at a
//! desktop width (1280 px) and a phone's (390 px): screenshots of both,
//! the Book button and the prices inside the phone's viewport with no
//! sideways scrolling, the admin page's overview (counts with stuck first,
//! the rate chart drawn as SVG), its filters (status, definition, search
//! attribute) and pages, and no Content Security Policy violation on the
//! way (the loyalty progress bar's width used to be an inline style the
//! page's own CSP blocked).

use super::{find_route, search, Harness, Method, UI_TIMEOUT};
use serde_json::{json, Value};
use std::time::Instant;

/// Records CSP violations on the page (a reload forgets them).
pub(super) const WATCH_CSP_JS: &str = "window.__csp = window.__csp || [];\
    if (!window.__cspWatched) { window.__cspWatched = true;\
      document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + (e.sample || e.blockedURI))); }\
    return true;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_and_the_search_results_fit_a_desktop_and_a_phone() {
    let started = Instant::now();
    let mut h = Harness::start("ops").await;
    let outcome = run(&mut h).await;
    h.finish(outcome, started).await;
}

/// Sets the layout viewport to `width` CSS pixels (the window's frame
/// taken into account).
pub(super) async fn viewport(h: &Harness, width: i64, height: i64) -> Result<(), String> {
    let mut outer = width;
    for _ in 0..3 {
        h.wd.cmd(
            Method::POST,
            "/window/rect",
            Some(json!({"width": outer, "height": height})),
        )
        .await?;
        let inner =
            h.wd.exec("return document.documentElement.clientWidth;", json!([]))
                .await?
                .as_i64()
                .unwrap_or(0);
        if inner == width {
            return Ok(());
        }
        outer += width - inner;
    }
    Err(format!("could not set the viewport to {width} px wide"))
}

/// The first `n` elements matching `css` lie inside the viewport's width,
/// and the page does not scroll sideways.
pub(super) async fn inside_viewport(h: &Harness, css: &str, n: usize) -> Result<(), String> {
    let v = h
        .wd
        .exec(
            "const w = document.documentElement.clientWidth;\
             const els = Array.from(document.querySelectorAll(arguments[0])).slice(0, arguments[1]);\
             const wide = Array.from(document.querySelectorAll('body *')).filter((e) => e.getBoundingClientRect().right > w + 1 && e.offsetParent !== null)               .slice(-5).map((e) => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));             return { w, scroll: document.documentElement.scrollWidth, found: els.length, wide,\
               out: els.map((e) => e.getBoundingClientRect()).filter((r) => r.left < 0 || r.right > w || r.width === 0)\
                 .map((r) => [Math.round(r.left), Math.round(r.right)]) };",
            json!([css, n]),
        )
        .await?;
    ensure!(
        v["found"].as_u64() == Some(n as u64),
        "{css}: expected {n} on the page: {v}"
    );
    ensure!(
        v["out"].as_array().is_some_and(|a| a.is_empty()),
        "{css} outside the viewport: {v}"
    );
    ensure!(
        v["scroll"].as_i64() <= v["w"].as_i64(),
        "the page scrolls sideways: {v}"
    );
    Ok(())
}

pub(super) async fn scroll_to(h: &Harness, css: &str) -> Result<(), String> {
    h.wd.exec(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); return true;",
        json!([css]),
    )
    .await
    .map(drop)
}

pub(super) async fn no_csp_violations(h: &Harness, where_: &str) -> Result<(), String> {
    let v = h.wd.exec("return window.__csp || [];", json!([])).await?;
    ensure!(
        v.as_array().is_some_and(|a| a.is_empty()),
        "Content-Security-Policy violations on {where_}: {v}"
    );
    Ok(())
}

/// A request from the page (same origin, so the CSP's connect-src allows it).
pub(super) async fn fetch(
    h: &Harness,
    method: &str,
    path: &str,
    headers: Value,
    body: Value,
) -> Result<Value, String> {
    h.wd.exec(
        "return fetch(arguments[1], { method: arguments[0], headers: arguments[2],\
           body: arguments[3] === null ? undefined : JSON.stringify(arguments[3]) })\
         .then(async (r) => ({ status: r.status, body: await r.json().catch(() => null) }));",
        json!([method, path, headers, body]),
    )
    .await
}

async fn run(h: &mut Harness) -> Result<(), String> {
    let route = find_route(&h.http, &h.server.base).await?;
    h.wd.goto(&format!("{}/", h.server.base)).await?;
    h.wd.wait_visible("#search-form", UI_TIMEOUT).await?;
    h.wd.exec(WATCH_CSP_JS, json!([])).await?;

    // Search results at 1280 and 390 px.
    h.scenario = "results";
    viewport(h, 1280, 1000).await?;
    search(h, &route, 2).await?;
    inside_viewport(
        h,
        "[data-testid=results-table-outbound] [data-testid=book-button]",
        1,
    )
    .await?;
    scroll_to(h, "[data-testid=results-table-outbound]").await?;
    h.shot("results-1280").await?;
    viewport(h, 390, 844).await?;
    let rows = h
        .wd
        .exec("return Math.min(3, document.querySelectorAll('[data-testid=results-table-outbound] [data-testid=result-row]').length);", json!([]))
        .await?
        .as_u64()
        .unwrap_or(0) as usize;
    ensure!(rows > 0, "no result rows");
    for css in ["book-button", "total", "fare"] {
        inside_viewport(
            h,
            &format!("[data-testid=results-table-outbound] [data-testid={css}]"),
            rows,
        )
        .await?;
    }
    scroll_to(h, "[data-testid=results-table-outbound]").await?;
    h.shot("results-390").await?;

    // Two bookings from the page's own origin: one confirms, one compensates.
    h.scenario = "bookings";
    let flight =
        h.wd.exec(
            "return document.querySelector('[data-testid=result-row]').dataset.flightId;",
            json!([]),
        )
        .await?;
    let mut ids = Vec::new();
    for (i, faults) in [json!({}), json!({"reserve_seat": {"mode": "reject"}})]
        .into_iter()
        .enumerate()
    {
        let body = json!({
            "flight_id": flight, "date": route.date, "cabin": "economy",
            "passengers": [{"first_name": "Ada", "last_name": "Lovelace"}],
            "email": "ada@example.com",
            "card": {"number": super::APPROVING_CARD, "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder_name": "Ada Lovelace"},
            "faults": faults,
        });
        let key = format!("ops-browser-{i}-{}", rand::random::<u32>());
        let r = fetch(
            h,
            "POST",
            "/api/bookings",
            json!({"Content-Type": "application/json", "Idempotency-Key": key}),
            body,
        )
        .await?;
        ensure!(r["status"] == 202, "booking refused: {r}");
        ids.push(
            r["body"]["booking_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }

    // The admin page at 1280 px.
    h.scenario = "admin";
    viewport(h, 1280, 1000).await?;
    h.wd.exec("location.hash = '#/admin'; return true;", json!([]))
        .await?;
    h.wd.wait_visible("#admin-token-form", UI_TIMEOUT).await?;
    h.wd.type_into("#admin-token", &h.server.token).await?;
    h.wd.click("#admin-token-save").await?;
    h.wd.wait_js(
        "both sagas listed, newest first, once finished",
        "const rows = Array.from(document.querySelectorAll('[data-testid=admin-saga-row]'));\
         if (rows.length !== 2 || rows.some((r) => r.dataset.status === 'running')) { document.getElementById('admin-refresh').click(); return null; }\
         return rows.map((r) => [r.dataset.sagaId, r.dataset.status]);",
        json!([]),
        UI_TIMEOUT,
    )
    .await
    .and_then(|v| {
        let want = json!([[ids[1], "compensated"], [ids[0], "completed"]]);
        if v == want { Ok(()) } else { Err(format!("saga rows {v}, expected {want}")) }
    })?;
    let overview = h
        .wd
        .wait_js(
            "the overview: counts, stuck first, and the rate chart",
            "const counts = Array.from(document.querySelectorAll('#admin-counts .count'));\
             const lines = document.querySelectorAll('[data-testid=admin-rate-chart] polyline');\
             if (!counts.length || lines.length !== 3) return null;\
             return { first: counts[0].dataset.status, counts: counts.map((c) => [c.dataset.status, c.querySelector('.n').textContent]),\
               stroke: getComputedStyle(lines[0]).stroke };",
            json!([]),
            UI_TIMEOUT,
        )
        .await?;
    ensure!(overview["first"] == "stuck", "stuck first: {overview}");
    ensure!(
        overview["stroke"]
            .as_str()
            .is_some_and(|s| s.starts_with("rgb(") && s != "rgb(0, 0, 0)"),
        "the chart's colours come from the style sheet: {overview}"
    );
    scroll_to(h, "[data-testid=admin-overview]").await?;
    h.shot("admin-1280").await?;

    // Filters: definition, status; then back to all.
    h.wd.select("#admin-definition", "cancellation").await?;
    h.wd.wait_js(
        "no cancellation sagas",
        "return !document.querySelector('[data-testid=admin-saga-row]') && document.getElementById('admin-sagas').textContent.includes('None') ? true : null;",
        json!([]),
        UI_TIMEOUT,
    )
    .await?;
    h.wd.select("#admin-definition", "").await?;
    h.wd.select("#admin-status", "compensated").await?;
    h.wd.wait_js(
        "only the compensated saga",
        "const rows = Array.from(document.querySelectorAll('[data-testid=admin-saga-row]'));\
         return rows.length === 1 && rows[0].dataset.sagaId === arguments[0] ? true : null;",
        json!([ids[1]]),
        UI_TIMEOUT,
    )
    .await?;
    h.wd.select("#admin-status", "").await?;

    // The attribute filter: the confirmed booking's reference lists exactly
    // its saga; the contact email (hashed by the server) lists both.
    let listed = fetch(
        h,
        "GET",
        "/api/admin/sagas",
        json!({"Authorization": format!("Bearer {}", h.server.token)}),
        Value::Null,
    )
    .await?;
    let reference = listed["body"]["sagas"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == ids[0].as_str()))
        .and_then(|s| s["booking_ref"].as_str())
        .ok_or(format!("no reference for {}: {listed}", ids[0]))?
        .to_string();
    let rows_are = "const rows = Array.from(document.querySelectorAll('[data-testid=admin-saga-row]')).map((r) => r.dataset.sagaId);\
         return JSON.stringify(rows) === JSON.stringify(arguments[0]) ? true : null;";
    h.wd.select("#admin-attr-name", "reference").await?;
    h.wd.type_into("#admin-attr-value", &format!("{reference}\u{E007}"))
        .await?;
    h.wd.wait_js(
        "only the saga of that reference",
        rows_are,
        json!([[ids[0]]]),
        UI_TIMEOUT,
    )
    .await?;
    h.wd.select("#admin-attr-name", "email").await?;
    h.wd.type_into("#admin-attr-value", "Ada@Example.com\u{E007}")
        .await?;
    h.wd.wait_js(
        "both sagas of that contact email",
        rows_are,
        json!([[ids[1], ids[0]]]),
        UI_TIMEOUT,
    )
    .await?;
    h.wd.type_into("#admin-attr-value", "nobody@example.com\u{E007}")
        .await?;
    h.wd.wait_js(
        "no saga of another email",
        "return !document.querySelector('[data-testid=admin-saga-row]') && document.getElementById('admin-sagas').textContent.includes('None') ? true : null;",
        json!([]),
        UI_TIMEOUT,
    )
    .await?;
    h.wd.type_into("#admin-attr-value", "\u{E007}").await?;
    h.wd.wait_js(
        "both sagas again without the filter",
        rows_are,
        json!([[ids[1], ids[0]]]),
        UI_TIMEOUT,
    )
    .await?;

    // The admin page on a phone: nothing pushes the page sideways.
    viewport(h, 390, 844).await?;
    inside_viewport(h, "[data-testid=admin-rate-chart]", 1).await?;
    inside_viewport(h, "#admin-refresh", 1).await?;
    inside_viewport(h, "#admin-attr-value", 1).await?;
    scroll_to(h, "[data-testid=admin-counts]").await?;
    h.shot("admin-390").await?;
    no_csp_violations(h, "the admin page").await?;

    // The loyalty progress bar's width is set (no blocked inline style).
    h.scenario = "loyalty";
    let r = fetch(
        h,
        "POST",
        "/api/loyalty",
        json!({"Content-Type": "application/json", "Idempotency-Key": format!("ops-enroll-{}", rand::random::<u32>())}),
        json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"}),
    )
    .await?;
    let account = r["body"]["account"]["id"]
        .as_str()
        .ok_or(format!("enroll: {r}"))?
        .to_string();
    h.wd.exec("location.hash = '#/loyalty'; return true;", json!([]))
        .await?;
    h.wd.wait_visible("#loyalty-form", UI_TIMEOUT).await?;
    h.wd.type_into("#loyalty-number", &account).await?;
    h.wd.type_into("#loyalty-last-name", "Hopper").await?;
    h.wd.click("#loyalty-submit").await?;
    let bar = h
        .wd
        .wait_js(
            "the loyalty progress bar",
            "const p = document.querySelector('[data-testid=loyalty-progress]');\
             if (!p) return null; const f = p.firstElementChild;\
             return { pct: p.getAttribute('aria-valuenow'), width: f.style.width, px: f.getBoundingClientRect().width };",
            json!([]),
            UI_TIMEOUT,
        )
        .await?;
    ensure!(
        bar["width"].as_str() == Some(&format!("{}%", bar["pct"].as_str().unwrap_or("?"))),
        "the bar's width follows the miles: {bar}"
    );
    ensure!(
        bar["px"].as_f64().is_some_and(|w| w > 0.0),
        "the bar shows: {bar}"
    );
    h.shot("loyalty-390").await?;
    no_csp_violations(h, "the loyalty page").await?;
    Ok(())
}
