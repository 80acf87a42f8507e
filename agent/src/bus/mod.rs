//! The event bus between sources and sensors: the embedded in-process bus (file mode, the
//! default), or NATS JetStream, which keeps events across crashes and lets replicas share the
//! work (at-least-once delivery, DESIGN section 6).

mod ack;
mod dedup;
mod embedded;
pub mod jetstream;

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc;

pub use ack::Pending;
pub use embedded::{BusBuilder, EmbeddedBus};

use crate::event::Event;

/// What happened to a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Queued for every subscribed sensor.
    Accepted,
    /// The same (source, id) was accepted within the deduplication window; not queued again.
    Duplicate,
}

/// Why the bus did not take an event. Every case is transient for a producer: it may try
/// again later (a webhook answers 503 with `Retry-After`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PublishError {
    /// A subscriber's queue (or the stream) is full; try again later.
    #[error("event bus is full")]
    Full,
    /// The bus is shutting down.
    #[error("event bus is closed")]
    Closed,
    /// The bus cannot be reached (JetStream server down or not answering).
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

impl PublishError {
    /// Seconds a producer should wait before trying again.
    pub fn retry_after_secs(&self) -> u32 {
        match self {
            PublishError::Full => 1,
            PublishError::Closed | PublishError::Unavailable(_) => 5,
        }
    }
}

/// The running bus, as sources see it.
#[derive(Debug)]
pub enum Bus {
    /// In-process queues.
    Embedded(EmbeddedBus),
    /// A JetStream stream.
    JetStream(jetstream::Publisher),
}

impl Bus {
    /// Publishes once, without waiting for room: the answer a webhook gives its caller.
    pub async fn offer(&self, event: Event) -> Result<Published, PublishError> {
        match self {
            Bus::Embedded(b) => b.try_publish(event),
            Bus::JetStream(p) => p.publish(&event).await,
        }
    }

    /// Publishes, waiting for room (and, on JetStream, for the server to come back): back-
    /// pressure for sources that can wait, such as calendars and consumers.
    pub async fn publish(&self, event: Event) -> Result<Published, PublishError> {
        match self {
            Bus::Embedded(b) => b.publish(event).await,
            Bus::JetStream(p) => p.publish_waiting(event).await,
        }
    }
}

/// A dead-lettered trigger execution brought back by `triggerd dlq replay`: run the named
/// trigger again with the same events, skipping filters and conditions.
#[derive(Debug)]
pub struct Replay {
    /// The trigger to run.
    pub trigger: String,
    /// The events it fired with, by dependency name.
    pub events: BTreeMap<String, Arc<Event>>,
}

/// What a bus message carries.
#[derive(Debug)]
pub enum Item {
    /// An event for the sensor's dependencies.
    Event(Arc<Event>),
    /// A dead letter to run again.
    Replay(Replay),
}

/// One message for a sensor, with the obligation to acknowledge it.
#[derive(Debug)]
pub struct Received {
    /// The content.
    pub item: Item,
    /// Finished when everything the message started has finished.
    pub ack: Pending,
}

impl Received {
    /// The event, when the message carries one.
    pub fn event(&self) -> Option<&Arc<Event>> {
        match &self.item {
            Item::Event(e) => Some(e),
            Item::Replay(_) => None,
        }
    }
}

/// What a sensor reads its messages from.
#[derive(Debug)]
pub enum Subscription {
    /// Its in-process queue.
    Embedded(mpsc::Receiver<Arc<Event>>),
    /// Its JetStream durable consumer.
    JetStream(Box<jetstream::SensorConsumer>),
}

impl Subscription {
    /// The next message; `None` once the bus closed (embedded: every source stopped and the
    /// queue is drained; JetStream: the agent is stopping).
    pub async fn recv(&mut self) -> Option<Received> {
        match self {
            Subscription::Embedded(rx) => rx.recv().await.map(|event| Received {
                item: Item::Event(event),
                ack: Pending::none(),
            }),
            Subscription::JetStream(c) => c.recv().await,
        }
    }

    /// A message already waiting, if any (embedded queues only).
    pub fn try_recv(&mut self) -> Option<Received> {
        match self {
            Subscription::Embedded(rx) => rx.try_recv().ok().map(|event| Received {
                item: Item::Event(event),
                ack: Pending::none(),
            }),
            Subscription::JetStream(_) => None,
        }
    }
}
