//! In-process bus: one bounded queue per sensor, routed by (event source, event name).
//! Nothing survives the process; events need no acknowledgement.
//!
//! Publishing is all-or-nothing: capacity is reserved on every subscribed queue before the
//! event is handed to any of them, so a full queue refuses the event (the webhook answers 503)
//! instead of delivering it to some sensors and dropping it for others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ack::DedupLock;
use super::dedup::Dedup;
use super::{Bus, PublishError, Published, Subscription};
use crate::event::Event;

/// Collects subscriptions before the bus starts.
#[derive(Debug)]
pub struct BusBuilder {
    capacity: usize,
    dedup_window: Duration,
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    routes: HashMap<(String, String), Vec<usize>>,
}

impl BusBuilder {
    /// A bus whose per-sensor queues hold `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            dedup_window: Duration::ZERO,
            queues: Vec::new(),
            routes: HashMap::new(),
        }
    }

    /// Events with an id already accepted from the same source within `window` are not
    /// delivered again; zero disables deduplication.
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// Subscribes one sensor to the given (event source, event name) pairs.
    pub fn subscribe<'a>(
        &mut self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let index = self.queues.len();
        self.queues.push(tx);
        for (source, name) in keys {
            let entry = self
                .routes
                .entry((source.to_owned(), name.to_owned()))
                .or_default();
            if !entry.contains(&index) {
                entry.push(index);
            }
        }
        Subscription::Embedded(rx)
    }

    /// Starts the bus.
    pub fn build(self) -> Arc<Bus> {
        let dedup =
            (!self.dedup_window.is_zero()).then(|| DedupLock::new(Dedup::new(self.dedup_window)));
        Arc::new(Bus::Embedded(EmbeddedBus {
            queues: self.queues,
            routes: self.routes,
            dedup,
        }))
    }
}

/// The running in-process bus; dropping every handle closes the sensors' queues once drained.
#[derive(Debug)]
pub struct EmbeddedBus {
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    routes: HashMap<(String, String), Vec<usize>>,
    dedup: Option<DedupLock>,
}

impl EmbeddedBus {
    fn targets(&self, event: &Event) -> &[usize] {
        self.routes
            .get(&(event.source.clone(), event.subject.clone()))
            .map_or(&[], Vec::as_slice)
    }

    /// Publishes without waiting: refuses with [`PublishError::Full`] when any subscribed
    /// queue is full, delivering to none.
    pub fn try_publish(&self, event: Event) -> Result<Published, PublishError> {
        if self.is_duplicate(&event) {
            return Ok(Published::Duplicate);
        }
        let targets = self.targets(&event);
        let mut permits = Vec::with_capacity(targets.len());
        for &i in targets {
            match self.queues[i].try_reserve() {
                Ok(p) => permits.push(p),
                Err(mpsc::error::TrySendError::Full(())) => return Err(PublishError::Full),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(PublishError::Closed),
            }
        }
        self.remember(&event);
        let event = Arc::new(event);
        for permit in permits {
            permit.send(event.clone());
        }
        Ok(Published::Accepted)
    }

    fn is_duplicate(&self, event: &Event) -> bool {
        self.dedup
            .as_ref()
            .and_then(|d| d.lock().ok())
            .is_some_and(|mut d| d.contains_event(event))
    }

    fn remember(&self, event: &Event) {
        if let Some(mut d) = self.dedup.as_ref().and_then(|d| d.lock().ok()) {
            d.insert(event.identity());
        }
    }

    /// Publishes, waiting for room on every subscribed queue (back-pressure for sources
    /// that can wait, such as calendars).
    pub async fn publish(&self, event: Event) -> Result<Published, PublishError> {
        if self.is_duplicate(&event) {
            return Ok(Published::Duplicate);
        }
        let targets = self.targets(&event);
        let mut permits = Vec::with_capacity(targets.len());
        for &i in targets {
            permits.push(
                self.queues[i]
                    .reserve()
                    .await
                    .map_err(|_| PublishError::Closed)?,
            );
        }
        self.remember(&event);
        let event = Arc::new(event);
        for permit in permits {
            permit.send(event.clone());
        }
        Ok(Published::Accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    fn ev(source: &str, name: &str) -> Event {
        Event::new(source, name, "test", Value::Null, Bytes::new())
    }

    #[tokio::test]
    async fn full_queue_refuses_for_all_subscribers() {
        let mut b = BusBuilder::new(1);
        let mut a = b.subscribe([("s", "e")]);
        let mut c = b.subscribe([("s", "e"), ("s", "f")]);
        let bus = b.build();
        bus.offer(ev("s", "f")).await.unwrap();
        // c is full now: the next event for both must reach neither.
        assert_eq!(bus.offer(ev("s", "e")).await, Err(PublishError::Full));
        assert!(a.try_recv().is_none());
        assert_eq!(c.recv().await.unwrap().event().unwrap().subject, "f");
        bus.offer(ev("s", "e")).await.unwrap();
        assert_eq!(a.recv().await.unwrap().event().unwrap().subject, "e");
        assert_eq!(c.recv().await.unwrap().event().unwrap().subject, "e");
    }

    #[tokio::test]
    async fn duplicate_ids_are_delivered_once() {
        let mut b = BusBuilder::new(4).dedup_window(Duration::from_secs(60));
        let mut a = b.subscribe([("s", "e")]);
        let bus = b.build();
        let mut first = ev("s", "e");
        first.id = "same".into();
        let again = first.clone();
        assert_eq!(bus.offer(first).await, Ok(Published::Accepted));
        assert_eq!(bus.offer(again).await, Ok(Published::Duplicate));
        let mut other_source = ev("t", "e");
        other_source.id = "same".into();
        assert_eq!(bus.offer(other_source).await, Ok(Published::Accepted));
        assert_eq!(a.recv().await.unwrap().event().unwrap().id, "same");
        assert!(a.try_recv().is_none());
    }

    #[tokio::test]
    async fn unrouted_events_are_accepted() {
        let bus = BusBuilder::new(1).build();
        assert!(bus.offer(ev("x", "y")).await.is_ok());
    }

    #[tokio::test]
    async fn dropping_the_bus_closes_queues_after_draining() {
        let mut b = BusBuilder::new(4);
        let mut a = b.subscribe([("s", "e")]);
        let bus = b.build();
        bus.publish(ev("s", "e")).await.unwrap();
        drop(bus);
        assert!(a.recv().await.is_some());
        assert!(a.recv().await.is_none());
    }
}
