//! The admin page's live overview: sagas started, completed and
//! compensated per [`BUCKET_SECS`] over the last [`BUCKETS`] buckets,
//! counted from the engine's event stream.
//!
//! Like the Prometheus counters ([`crate::metrics`]), the rates start at
//! zero with the process: they say what this server saw, not what the
//! store holds. The counts by status ([`status_summary`]) are the store's:
//! its counters ([`Store::status_counts`]), with the newest stuck sagas
//! from its status index and the newest overdue ones from its overdue
//! index, without reading every record.

use saga_engine::store::SagaFilter;
use saga_engine::{Engine, EventKind, SagaEvent, SagaRecord, SagaStatus, Store, StoreError};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// Width of one bucket, seconds.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept (5 minutes).
pub const BUCKETS: usize = 30;

/// Counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, ms since the Unix epoch.
    pub at_ms: u64,
    /// Sagas started.
    pub started: u64,
    /// Sagas completed.
    pub completed: u64,
    /// Sagas compensated.
    pub compensated: u64,
}

/// The rolling buckets. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct Rates {
    buckets: Mutex<VecDeque<Bucket>>,
}

fn bucket_start(ms: u64) -> u64 {
    ms - ms % (BUCKET_SECS * 1000)
}

impl Rates {
    /// No buckets yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn roll(buckets: &mut VecDeque<Bucket>, now_ms: u64) {
        let start = bucket_start(now_ms);
        let width = BUCKET_SECS * 1000;
        match buckets.back().map(|b| b.at_ms) {
            Some(last) if last >= start => {}
            Some(last) => {
                let mut at = last + width;
                // Empty buckets for the quiet gap, at most a window's worth.
                at = at.max(start.saturating_sub(width * BUCKETS as u64));
                while at <= start {
                    buckets.push_back(Bucket {
                        at_ms: at,
                        ..Bucket::default()
                    });
                    at += width;
                }
            }
            None => buckets.push_back(Bucket {
                at_ms: start,
                ..Bucket::default()
            }),
        }
        while buckets.len() > BUCKETS {
            buckets.pop_front();
        }
    }

    /// Counts `event`, seen at `now_ms`.
    pub fn record(&self, event: &SagaEvent, now_ms: u64) {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut b, now_ms);
        let Some(cur) = b.back_mut() else { return };
        match &event.kind {
            EventKind::SagaStarted { .. } => cur.started += 1,
            EventKind::SagaFinished {
                status: SagaStatus::Completed,
                ..
            } => cur.completed += 1,
            EventKind::SagaFinished {
                status: SagaStatus::Compensated,
                ..
            } => cur.compensated += 1,
            _ => {}
        }
    }

    /// The last [`BUCKETS`] buckets up to `now_ms`, oldest first, always
    /// [`BUCKETS`] of them (quiet ones, and those before the process
    /// started, as zeros).
    pub fn snapshot(&self, now_ms: u64) -> Vec<Bucket> {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut b, now_ms);
        let width = BUCKET_SECS * 1000;
        let first = bucket_start(now_ms).saturating_sub(width * (BUCKETS as u64 - 1));
        (0..BUCKETS as u64)
            .map(|i| first + i * width)
            .map(|at| {
                b.iter().find(|x| x.at_ms == at).copied().unwrap_or(Bucket {
                    at_ms: at,
                    ..Bucket::default()
                })
            })
            .collect()
    }
}

/// Statuses listed first on the overview, in this order; any other status
/// the store counts (one added later) follows, by name.
const STATUS_ORDER: [SagaStatus; 5] = [
    SagaStatus::Stuck,
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Completed,
    SagaStatus::Compensated,
];

/// What the overview lists first: the sagas that need an operator.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Counts by status (`{"status", "count"}` objects, stuck first, every
    /// status of [`STATUS_ORDER`] present even at zero).
    pub counts: Vec<serde_json::Value>,
    /// The newest stuck sagas.
    pub stuck: Vec<SagaRecord>,
    /// The newest overdue sagas (past their deadline after the pivot,
    /// still going).
    pub overdue: Vec<SagaRecord>,
}

/// Counts by status, the newest `shown` stuck sagas and the newest `shown`
/// overdue ones, from the store's counters, status index and overdue index.
pub async fn status_summary(store: &dyn Store, shown: usize) -> Result<Summary, StoreError> {
    let mut counts = store.status_counts().await?;
    let mut out: Vec<serde_json::Value> = STATUS_ORDER
        .iter()
        .map(|s| {
            let n = counts.remove(s.as_str()).unwrap_or(0);
            serde_json::json!({ "status": s.as_str(), "count": n })
        })
        .collect();
    out.extend(
        counts
            .into_iter()
            .map(|(s, n)| serde_json::json!({ "status": s, "count": n })),
    );
    let filter = SagaFilter {
        statuses: vec![SagaStatus::Stuck],
        ..SagaFilter::default()
    };
    let stuck = store.list_page(&filter, None, shown).await?.records;
    let filter = SagaFilter {
        overdue: true,
        ..SagaFilter::default()
    };
    let overdue = store.list_page(&filter, None, shown).await?.records;
    Ok(Summary {
        counts: out,
        stuck,
        overdue,
    })
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Feeds `rates` from the engine's events until `stop` turns true.
pub fn spawn_sampler(
    engine: &Engine,
    rates: std::sync::Arc<Rates>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(event) => rates.record(&event, now_ms()),
                    Err(RecvError::Lagged(_)) => {}
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
    fn counts_per_bucket_and_fills_quiet_gaps() {
        let r = Rates::new();
        let started = ev(EventKind::SagaStarted {
            definition: "booking".into(),
            version: 1,
        });
        const T: u64 = 1_700_000_000_000; // a bucket boundary
        r.record(&started, T);
        r.record(&started, T + 5_000);
        r.record(&started, T + 31_000);
        let s = r.snapshot(T + 31_500);
        assert_eq!(s.len(), BUCKETS, "always a full window");
        let counts: Vec<u64> = s[BUCKETS - 4..].iter().map(|b| b.started).collect();
        assert_eq!(counts, [2, 0, 0, 1]);
        assert_eq!(s[BUCKETS - 4].at_ms, T);
        assert!(s[..BUCKETS - 4].iter().all(|b| b.started == 0));
        let later = r.snapshot(T + 10_000_000);
        assert_eq!(later.len(), BUCKETS);
        assert!(later.iter().all(|b| b.started == 0), "old buckets age out");
    }
}
