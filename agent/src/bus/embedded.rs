//! In-process bus: one bounded queue per sensor, routed by (event source, event name).
//!
//! Publishing is all-or-nothing: capacity is reserved on every subscribed queue before the
//! event is handed to any of them, so a full queue refuses the event (the webhook answers 503)
//! instead of delivering it to some sensors and dropping it for others.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc;

use crate::event::Event;

/// Why the bus did not take an event.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum PublishError {
    /// A subscriber's queue is full; try again later.
    #[error("event bus is full")]
    Full,
    /// The bus is shutting down.
    #[error("event bus is closed")]
    Closed,
}

impl PublishError {
    /// Whether the producer should retry later (both cases are transient for a producer).
    pub fn is_retryable(self) -> bool {
        true
    }
}

/// What a sensor receives from the bus.
pub type Subscription = mpsc::Receiver<Arc<Event>>;

/// Collects subscriptions before the bus starts.
#[derive(Debug)]
pub struct BusBuilder {
    capacity: usize,
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    routes: HashMap<(String, String), Vec<usize>>,
}

impl BusBuilder {
    /// A bus whose per-sensor queues hold `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            queues: Vec::new(),
            routes: HashMap::new(),
        }
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
        rx
    }

    /// Starts the bus.
    pub fn build(self) -> Arc<Bus> {
        Arc::new(Bus {
            queues: self.queues,
            routes: self.routes,
        })
    }
}

/// The running bus; dropping every handle closes the sensors' queues once drained.
#[derive(Debug)]
pub struct Bus {
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    routes: HashMap<(String, String), Vec<usize>>,
}

impl Bus {
    fn targets(&self, event: &Event) -> &[usize] {
        self.routes
            .get(&(event.source.clone(), event.subject.clone()))
            .map_or(&[], Vec::as_slice)
    }

    /// Publishes without waiting: refuses with [`PublishError::Full`] when any subscribed
    /// queue is full, delivering to none.
    pub fn try_publish(&self, event: Event) -> Result<(), PublishError> {
        let targets = self.targets(&event);
        let mut permits = Vec::with_capacity(targets.len());
        for &i in targets {
            match self.queues[i].try_reserve() {
                Ok(p) => permits.push(p),
                Err(mpsc::error::TrySendError::Full(())) => return Err(PublishError::Full),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(PublishError::Closed),
            }
        }
        let event = Arc::new(event);
        for permit in permits {
            permit.send(event.clone());
        }
        Ok(())
    }

    /// Publishes, waiting for room on every subscribed queue (back-pressure for sources
    /// that can wait, such as calendars).
    pub async fn publish(&self, event: Event) -> Result<(), PublishError> {
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
        let event = Arc::new(event);
        for permit in permits {
            permit.send(event.clone());
        }
        Ok(())
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
        bus.try_publish(ev("s", "f")).unwrap();
        // c is full now: the next event for both must reach neither.
        assert_eq!(bus.try_publish(ev("s", "e")), Err(PublishError::Full));
        assert!(a.try_recv().is_err());
        assert_eq!(c.recv().await.unwrap().subject, "f");
        bus.try_publish(ev("s", "e")).unwrap();
        assert_eq!(a.recv().await.unwrap().subject, "e");
        assert_eq!(c.recv().await.unwrap().subject, "e");
    }

    #[tokio::test]
    async fn unrouted_events_are_accepted() {
        let bus = BusBuilder::new(1).build();
        assert!(bus.try_publish(ev("x", "y")).is_ok());
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
