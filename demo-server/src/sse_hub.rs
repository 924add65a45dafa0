//! One saga's live events, handed to that saga's event streams only.
//!
//! The engine publishes every saga's events on one broadcast channel. An
//! event stream that subscribed to it directly was woken, and handed a copy
//! of, every event of every saga, to keep one saga's: with 64 bookings
//! followed at once, 64 wake-ups and copies per event, where one is
//! needed. The hub is the one subscriber: a task that receives each event
//! once and forwards it to the streams registered for its saga.
//!
//! What a stream relies on stays true: an event published after
//! [`SagaEventHub::subscribe`] returned reaches the subscription (the task
//! forwards in publication order and sees the registration before any
//! later event); and when the task fell behind the broadcast buffer
//! ([`Live::Missed`]), or the engine went away ([`Live::Closed`]), every
//! subscription is told, so that a stream fills the gap from the store.

use saga_engine::{Engine, SagaEvent, SagaId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum Live {
    /// An event of the subscribed saga, in publication order.
    Event(SagaEvent),
    /// Events were lost to a full broadcast buffer: read the store.
    Missed,
    /// The engine's channel closed: nothing more comes.
    Closed,
}

type Subscribers = HashMap<SagaId, Vec<(u64, mpsc::UnboundedSender<Live>)>>;

/// Forwards the engine's events to the subscriptions of their saga.
pub struct SagaEventHub {
    subscribers: Mutex<Subscribers>,
    next_key: AtomicU64,
}

impl std::fmt::Debug for SagaEventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaEventHub").finish_non_exhaustive()
    }
}

/// One stream's registration for one saga's events; unregistered when
/// dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<SagaEventHub>,
    id: SagaId,
    key: u64,
    rx: mpsc::UnboundedReceiver<Live>,
}

impl Subscription {
    /// The next event for this saga (or why there is none).
    pub async fn recv(&mut self) -> Live {
        self.rx.recv().await.unwrap_or(Live::Closed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.hub.lock();
        if let Some(list) = subs.get_mut(&self.id) {
            list.retain(|(k, _)| *k != self.key);
            if list.is_empty() {
                subs.remove(&self.id);
            }
        }
    }
}

impl SagaEventHub {
    /// Subscribes to `engine`'s events and starts the forwarding task (it
    /// ends when the hub is dropped and the next event arrives, or when the
    /// engine's channel closes). Call it inside a tokio runtime.
    pub fn start(engine: &Engine) -> Arc<SagaEventHub> {
        Self::forwarding(engine.subscribe())
    }

    /// The hub over any receiver of saga events.
    fn forwarding(rx: tokio::sync::broadcast::Receiver<SagaEvent>) -> Arc<SagaEventHub> {
        let hub = Arc::new(SagaEventHub {
            subscribers: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
        });
        tokio::spawn(forward(Arc::downgrade(&hub), rx));
        hub
    }

    /// Registers for the events of saga `id` published from now on.
    pub fn subscribe(self: &Arc<Self>, id: &SagaId) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(id.clone()).or_default().push((key, tx));
        Subscription {
            hub: self.clone(),
            id: id.clone(),
            key,
            rx,
        }
    }

    /// Sagas with at least one subscription (for tests and metrics).
    pub fn sagas_followed(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell_everyone(&self, what: Live) {
        for list in self.lock().values() {
            for (_, tx) in list {
                let _ = tx.send(what.clone());
            }
        }
    }
}

async fn forward(hub: Weak<SagaEventHub>, mut rx: tokio::sync::broadcast::Receiver<SagaEvent>) {
    loop {
        let received = rx.recv().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match received {
            Ok(e) => {
                let subs = hub.lock();
                if let Some(list) = subs.get(&e.saga_id) {
                    for (_, tx) in list {
                        let _ = tx.send(Live::Event(e.clone()));
                    }
                }
            }
            Err(RecvError::Lagged(_)) => hub.tell_everyone(Live::Missed),
            Err(RecvError::Closed) => {
                hub.tell_everyone(Live::Closed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_engine::EventKind;
    use tokio::sync::broadcast;

    fn event(saga: &str, seq: u64) -> SagaEvent {
        SagaEvent {
            saga_id: SagaId::parse(saga).unwrap(),
            seq,
            at_ms: 0,
            kind: EventKind::StepStarted {
                step: "s".into(),
                attempt: 1,
            },
        }
    }

    fn seq_of(live: Live) -> Option<(String, u64)> {
        match live {
            Live::Event(e) => Some((e.saga_id.as_str().to_string(), e.seq)),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_gets_its_own_sagas_events_in_order_and_leaves_when_dropped() {
        let (tx, rx) = broadcast::channel(64);
        let hub = SagaEventHub::forwarding(rx);
        let a = SagaId::parse("saga-a").unwrap();
        let mut sub = hub.subscribe(&a);
        let mut twice = hub.subscribe(&a);
        assert_eq!(hub.sagas_followed(), 1);
        for seq in 0..5 {
            tx.send(event("saga-b", seq)).unwrap();
            tx.send(event("saga-a", seq)).unwrap();
        }
        for s in [&mut sub, &mut twice] {
            for seq in 0..5 {
                assert_eq!(seq_of(s.recv().await), Some(("saga-a".into(), seq)));
            }
        }
        drop(sub);
        assert_eq!(hub.sagas_followed(), 1, "the other stream still follows");
        drop(twice);
        assert_eq!(hub.sagas_followed(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lagging_hub_tells_every_subscription_and_a_closed_engine_ends_them() {
        let (tx, rx) = broadcast::channel(2);
        // On this one thread the forwarding task runs only when the test
        // waits: the five events below overrun the buffer of two first.
        let hub = SagaEventHub::forwarding(rx);
        let mut sub = hub.subscribe(&SagaId::parse("saga-a").unwrap());
        for seq in 0..5 {
            tx.send(event("saga-a", seq)).unwrap();
        }
        assert!(matches!(sub.recv().await, Live::Missed));
        assert_eq!(seq_of(sub.recv().await), Some(("saga-a".into(), 3)));
        assert_eq!(seq_of(sub.recv().await), Some(("saga-a".into(), 4)));
        drop(tx);
        assert!(matches!(sub.recv().await, Live::Closed));
    }
}
