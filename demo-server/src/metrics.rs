//! Prometheus metrics: saga outcomes and step latencies counted from the
//! engine's event stream, and HTTP responses by status code, rendered in the
//! text exposition format at `GET /metrics`.
//!
//! Counters start at zero with the process, as Prometheus counters do; the
//! durable truth about sagas is the store (`GET /api/admin/sagas`).

use saga_engine::{Engine, EventKind, SagaEvent, SagaStatus};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// Upper bounds of the step latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A cumulative histogram of durations.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`].
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, duration_us: u64) {
        let secs = duration_us as f64 / 1e6;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(duration_us);
    }
}

/// The server's metrics. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    started: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    stuck: AtomicU64,
    step_failures: AtomicU64,
    compensations: AtomicU64,
    events_missed: AtomicU64,
    admin_refused: AtomicU64,
    limited: AtomicU64,
    steps: Mutex<BTreeMap<String, Histogram>>,
    http: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one engine event.
    pub fn record_event(&self, event: &SagaEvent) {
        match &event.kind {
            EventKind::SagaStarted { .. } => {
                self.started.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::StepSucceeded {
                step, duration_us, ..
            } => {
                let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
                match steps.get_mut(step) {
                    Some(h) => h.observe(*duration_us),
                    None => {
                        let mut h = Histogram::default();
                        h.observe(*duration_us);
                        steps.insert(step.clone(), h);
                    }
                }
            }
            EventKind::StepFailed { .. } => {
                self.step_failures.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::StepCompensated { .. } => {
                self.compensations.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::SagaFinished { status, .. } => {
                let counter = match status {
                    SagaStatus::Completed => &self.completed,
                    SagaStatus::Compensated => &self.compensated,
                    SagaStatus::Stuck => &self.stuck,
                    SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Paused => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts one HTTP response.
    pub fn record_response(&self, status: u16) {
        *self
            .http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// Counts a request refused for a missing or wrong admin token.
    pub fn record_admin_refused(&self) {
        self.admin_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by a rate limit or a stream cap.
    pub fn record_limited(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts events a slow collector missed.
    pub fn record_missed(&self, n: u64) {
        self.events_missed.fetch_add(n, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format; `running` is the number
    /// of sagas with a worker now.
    pub fn render(&self, running: usize) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "saga_started_total",
            "Sagas started.",
            &self.started,
        );
        counter(
            &mut out,
            "saga_completed_total",
            "Sagas that completed every step.",
            &self.completed,
        );
        counter(
            &mut out,
            "saga_compensated_total",
            "Sagas that failed and were compensated.",
            &self.compensated,
        );
        counter(
            &mut out,
            "saga_stuck_total",
            "Sagas whose compensation kept failing (parked for an operator).",
            &self.stuck,
        );
        counter(
            &mut out,
            "saga_step_failures_total",
            "Failed step attempts (retried or not).",
            &self.step_failures,
        );
        counter(
            &mut out,
            "saga_step_compensations_total",
            "Steps compensated.",
            &self.compensations,
        );
        counter(
            &mut out,
            "saga_events_missed_total",
            "Engine events the metrics collector fell too far behind to see.",
            &self.events_missed,
        );
        counter(
            &mut out,
            "admin_auth_failures_total",
            "Requests to admin routes refused for a missing or wrong token.",
            &self.admin_refused,
        );
        counter(
            &mut out,
            "http_limited_total",
            "Requests refused with 429 by a rate limit or an event stream cap.",
            &self.limited,
        );
        let _ = writeln!(out, "# HELP saga_running Sagas with a worker now.");
        let _ = writeln!(out, "# TYPE saga_running gauge");
        let _ = writeln!(out, "saga_running {running}");

        let _ = writeln!(
            out,
            "# HELP saga_step_duration_seconds Duration of successful step attempts."
        );
        let _ = writeln!(out, "# TYPE saga_step_duration_seconds histogram");
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (step, h) in &steps {
            let step = escape_label(step);
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "saga_step_duration_seconds_bucket{{step=\"{step}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "saga_step_duration_seconds_bucket{{step=\"{step}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "saga_step_duration_seconds_sum{{step=\"{step}\"}} {}",
                h.sum_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "saga_step_duration_seconds_count{{step=\"{step}\"}} {}",
                h.count
            );
        }

        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP responses sent, by status code."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (code, n) in http {
            let _ = writeln!(out, "http_requests_total{{code=\"{code}\"}} {n}");
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Feeds `engine`'s events into `metrics` until `stop` turns true.
pub fn spawn_collector(
    engine: &Engine,
    metrics: std::sync::Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(event) => metrics.record_event(&event),
                    Err(RecvError::Lagged(n)) => metrics.record_missed(n),
                    Err(RecvError::Closed) => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_engine::SagaId;

    fn ev(kind: EventKind) -> SagaEvent {
        SagaEvent {
            saga_id: SagaId::parse("s").unwrap(),
            seq: 0,
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::new();
        m.record_event(&ev(EventKind::SagaStarted {
            definition: "booking".into(),
            version: 1,
        }));
        for us in [300, 2_000, 2_000_000] {
            m.record_event(&ev(EventKind::StepSucceeded {
                step: "reserve_seat".into(),
                attempt: 1,
                duration_us: us,
            }));
        }
        m.record_event(&ev(EventKind::SagaFinished {
            status: SagaStatus::Compensated,
            reason: None,
        }));
        m.record_response(200);
        m.record_response(200);
        m.record_response(404);
        let text = m.render(3);
        assert!(text.contains("saga_started_total 1\n"));
        assert!(text.contains("saga_compensated_total 1\n"));
        assert!(text.contains("saga_completed_total 0\n"));
        assert!(text.contains("saga_running 3\n"));
        assert!(text.contains(
            "saga_step_duration_seconds_bucket{step=\"reserve_seat\",le=\"0.0005\"} 1\n"
        ));
        assert!(text.contains(
            "saga_step_duration_seconds_bucket{step=\"reserve_seat\",le=\"0.0025\"} 2\n"
        ));
        assert!(text
            .contains("saga_step_duration_seconds_bucket{step=\"reserve_seat\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("saga_step_duration_seconds_count{step=\"reserve_seat\"} 3\n"));
        assert!(text.contains("http_requests_total{code=\"200\"} 2\n"));
        assert!(text.contains("http_requests_total{code=\"404\"} 1\n"));
    }
}
