// SkySaga demo page: a saga's timeline, drawn as SVG from its history.
// One lane per step; a bar per attempt and per compensation on a time
// axis, backoff gaps as thin lines, durable waits hatched, paused spans as
// a band across every lane. Parallel group members have lanes of their
// own, so their bars stand side by side in time. No inline style anywhere
// (the page's CSP forbids it): geometry is in attributes, looks in classes.
// Loaded after /app.js; used by the saga operations view in admin.js.

const TL_SVG = "http://www.w3.org/2000/svg";

function tlNode(tag, attrs, ...children) {
  const node = document.createElementNS(TL_SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

/** The spans of a history: attempts, compensations, backoffs, waits,
 *  skips and pauses, each { kind, step, from, to, open, outcome, attempt }. */
function timelineSpans(events, now) {
  const spans = [];
  const open = {};
  const backoff = {};
  let paused = null;
  const close = (key, t, outcome) => {
    const s = open[key];
    if (!s) return null;
    s.to = t;
    s.outcome = outcome;
    spans.push(s);
    delete open[key];
    return s;
  };
  for (const e of events) {
    const t = e.at_ms;
    switch (e.event) {
      case "step_started":
        if (backoff[e.step]) backoff[e.step].to = Math.min(backoff[e.step].to, t);
        delete backoff[e.step];
        // A sleep ends when the saga moves on.
        for (const k of Object.keys(open)) if (k.startsWith("w:") && open[k].step !== e.step) close(k, t, "done");
        open["f:" + e.step] = { kind: "attempt", step: e.step, attempt: e.attempt, from: t };
        break;
      case "step_succeeded":
        close("f:" + e.step, t, "ok");
        break;
      case "step_failed":
        close("f:" + e.step, t, e.kind === "rejected" ? "rejected" : "failed");
        if (e.retry_at_ms) {
          backoff[e.step] = { kind: "backoff", step: e.step, from: t, to: e.retry_at_ms };
          spans.push(backoff[e.step]);
        }
        break;
      case "compensation_started":
        if (backoff["c:" + e.step]) backoff["c:" + e.step].to = Math.min(backoff["c:" + e.step].to, t);
        open["c:" + e.step] = { kind: "compensation", step: e.step, attempt: e.attempt, from: t };
        break;
      case "step_compensated":
        close("c:" + e.step, t, "ok");
        break;
      case "compensation_failed":
        close("c:" + e.step, t, "failed");
        if (e.retry_at_ms) {
          backoff["c:" + e.step] = { kind: "backoff", step: e.step, from: t, to: e.retry_at_ms };
          spans.push(backoff["c:" + e.step]);
        }
        break;
      case "wait_started":
        open["w:" + e.step] = { kind: "wait", step: e.step, from: t };
        break;
      case "signal_received":
        if (e.step) close("w:" + e.step, t, "ok");
        break;
      case "wait_timed_out":
        close("w:" + e.step, t, "failed");
        break;
      case "step_skipped":
        close("w:" + e.step, t, "skipped");
        spans.push({ kind: "skipped", step: e.step, from: t, to: t, outcome: "skipped" });
        break;
      case "saga_paused":
        paused = { kind: "paused", from: t };
        break;
      case "saga_unpaused":
        if (paused) {
          paused.to = t;
          spans.push(paused);
          paused = null;
        }
        break;
      case "saga_finished":
        for (const k of Object.keys(open)) if (k.startsWith("w:")) close(k, t, "done");
        break;
      default:
        break;
    }
  }
  for (const k of Object.keys(open)) {
    const s = open[k];
    s.to = now;
    s.open = true;
    s.outcome = "running";
    spans.push(s);
  }
  if (paused) {
    paused.to = now;
    paused.open = true;
    spans.push(paused);
  }
  // A backoff still ahead is drawn up to now (its end is the plan, not a fact).
  for (const s of spans) if (s.kind === "backoff" && s.to > now) s.to = now;
  return spans;
}

function tlSeconds(ms) {
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

/** The timeline of `events` over the lanes `steps` (names), as SVG. */
function sagaTimeline(events, steps, now) {
  const spans = timelineSpans(events, now);
  const t0 = events.length ? events[0].at_ms : now;
  const t1 = Math.max(t0 + 1, now, ...spans.map((s) => s.to || s.from));
  const W = 900, label = 150, right = 12, top = 8, lane = 24, axis = 26;
  const H = top + steps.length * lane + axis;
  const x = (t) => label + ((t - t0) * (W - label - right)) / (t1 - t0);
  const laneOf = (step) => Math.max(0, steps.indexOf(step));
  const chart = tlNode("svg", {
    viewBox: "0 0 " + W + " " + H, class: "timeline", role: "img", "data-testid": "saga-timeline",
    "aria-label": "Timeline of the saga: " + spans.filter((s) => s.kind === "attempt").length + " attempts, " +
      spans.filter((s) => s.kind === "compensation").length + " compensations over " + tlSeconds(t1 - t0),
  });
  chart.append(tlNode("defs", {},
    tlNode("pattern", { id: "tl-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      tlNode("rect", { width: 6, height: 6, class: "tl-hatch-bg" }),
      tlNode("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "tl-hatch-line" }))));
  steps.forEach((name, i) => {
    const y = top + i * lane;
    chart.append(tlNode("rect", { x: 0, y, width: W, height: lane, class: "tl-lane " + (i % 2 ? "odd" : "even") }));
    const text = tlNode("text", { x: 6, y: y + lane * 0.68, class: "tl-label" });
    text.textContent = typeof STEP_LABEL !== "undefined" && STEP_LABEL[name] ? STEP_LABEL[name] : name;
    chart.append(text);
  });
  for (const s of spans.filter((s) => s.kind === "paused")) {
    const band = tlNode("rect", { x: x(s.from), y: top, width: Math.max(2, x(s.to) - x(s.from)), height: steps.length * lane,
      class: "tl-paused", "data-testid": "timeline-paused", "data-kind": "paused", "data-open": s.open ? "true" : "false" });
    band.append(tlNode("title", {}, document.createTextNode("paused " + tlSeconds(s.to - s.from) + (s.open ? " (still paused)" : ""))));
    chart.append(band);
  }
  for (const s of spans.filter((s) => s.kind !== "paused")) {
    const y = top + laneOf(s.step) * lane;
    const x0 = x(s.from), w = Math.max(3, x(s.to) - x0);
    const common = { "data-kind": s.kind, "data-step": s.step, "data-outcome": s.outcome || "" };
    let node;
    if (s.kind === "backoff") {
      node = tlNode("line", { x1: x0, y1: y + lane / 2, x2: x0 + w, y2: y + lane / 2, class: "tl-backoff", ...common });
    } else if (s.kind === "skipped") {
      node = tlNode("circle", { cx: x0, cy: y + lane / 2, r: 5, class: "tl-skipped", ...common });
    } else {
      const inner = s.kind === "compensation" ? { y: y + lane * 0.55, h: lane * 0.35 } : { y: y + lane * 0.15, h: lane * (s.kind === "wait" ? 0.7 : 0.4) };
      node = tlNode("rect", { x: x0, y: inner.y, width: w, height: inner.h, rx: 2,
        class: "tl-bar tl-" + s.kind + " tl-" + (s.outcome || "running") + (s.open ? " tl-open" : ""), ...common });
    }
    const what = s.kind === "attempt" ? "attempt " + s.attempt : s.kind === "compensation" ? "compensation " + s.attempt : s.kind;
    node.append(tlNode("title", {}, document.createTextNode(s.step + ": " + what + ", " + tlSeconds(s.to - s.from) + (s.outcome ? " (" + s.outcome + ")" : ""))));
    chart.append(node);
  }
  const base = top + steps.length * lane;
  chart.append(tlNode("line", { x1: label, y1: base, x2: W - right, y2: base, class: "tl-axis" }));
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    chart.append(tlNode("line", { x1: x(t), y1: base, x2: x(t), y2: base + 4, class: "tl-axis" }));
    const tick = tlNode("text", { x: x(t), y: base + 18, class: "tl-tick" + (i === 4 ? " end" : i === 0 ? " start" : "") });
    tick.textContent = "+" + tlSeconds(Math.round(t - t0));
    chart.append(tick);
  }
  return chart;
}
