//! Publishing events to the sensors' subjects, acknowledged by the server.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::HeaderMap;

use super::{wire, JetStreamBus};
use crate::bus::{PublishError, Published};
use crate::event::Event;

/// First and longest wait between attempts of a publish that waits for the server.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One sensor an event goes to.
#[derive(Debug)]
struct Target {
    subject: String,
    token: String,
}

/// Publishes events to the subjects of the sensors that listen to them.
#[derive(Debug)]
pub struct Publisher {
    bus: JetStreamBus,
    routes: HashMap<(String, String), Vec<Target>>,
}

impl Publisher {
    pub(super) fn new<'a>(
        bus: JetStreamBus,
        routes: impl IntoIterator<Item = ((&'a str, &'a str), &'a str)>,
    ) -> Self {
        let mut map: HashMap<(String, String), Vec<Target>> = HashMap::new();
        for ((source, name), sensor) in routes {
            let targets = map.entry((source.to_owned(), name.to_owned())).or_default();
            let subject = bus.names().sensor_subject(sensor);
            if !targets.iter().any(|t| t.subject == subject) {
                targets.push(Target {
                    subject,
                    token: super::token(sensor),
                });
            }
        }
        Self { bus, routes: map }
    }

    /// Publishes `event` to every subscribed sensor and waits for the server's
    /// acknowledgements; refused at once when the connection is down.
    pub async fn publish(&self, event: &Event) -> Result<Published, PublishError> {
        let Some(targets) = self
            .routes
            .get(&(event.source.clone(), event.subject.clone()))
        else {
            return Ok(Published::Accepted);
        };
        if !self.bus.is_connected() {
            return Err(PublishError::Unavailable("not connected to NATS".into()));
        }
        let body = wire::encode(event);
        let identity = event.identity();
        let js = self.bus.js();
        let mut acks = Vec::with_capacity(targets.len());
        for t in targets {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}/{identity}", t.token).as_str(),
            );
            let ack = js
                .publish_with_headers(t.subject.clone(), headers, body.clone())
                .await
                .map_err(refusal)?;
            acks.push(ack);
        }
        let mut duplicates = 0;
        for ack in acks {
            if ack.await.map_err(refusal)?.duplicate {
                duplicates += 1;
            }
        }
        Ok(if duplicates == targets.len() {
            Published::Duplicate
        } else {
            Published::Accepted
        })
    }

    /// Publishes, trying again (with growing pauses) while the server is unreachable or the
    /// stream is full. The caller gives up by dropping the future (shutdown).
    pub async fn publish_waiting(&self, event: Event) -> Result<Published, PublishError> {
        let mut delay = RETRY_FIRST;
        let mut warned = false;
        loop {
            match self.publish(&event).await {
                Err(PublishError::Closed) => return Err(PublishError::Closed),
                Err(e) => {
                    if !warned {
                        tracing::warn!(event_source = %event.source, event_name = %event.subject, event_id = %event.id, error = %e, "bus refused the event; trying again until it takes it");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                ok => return ok,
            }
        }
    }
}

/// A refused publish as the bus reports it: no answer is "unavailable", a server refusal
/// (limits reached with the discard-new policy) is "full".
fn refusal(e: async_nats::jetstream::context::PublishError) -> PublishError {
    match e.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            PublishError::Unavailable(e.to_string())
        }
        PublishErrorKind::StreamNotFound => {
            PublishError::Unavailable(format!("{e} (was the events stream deleted?)"))
        }
        _ => {
            tracing::debug!(error = %e, "JetStream refused a publish");
            PublishError::Full
        }
    }
}
