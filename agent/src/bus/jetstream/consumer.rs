//! A sensor's durable pull consumer: messages fetched in batches, each handed to the sensor
//! with its acknowledgement obligation. Replicas reading the same durable consumer share its
//! messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::dlq::REPLAY_HEADER;
use super::{wire, BusError, DeadLetterRecord, JetStreamBus};
use crate::bus::ack::{Completed, DedupLock};
use crate::bus::dedup::Dedup;
use crate::bus::{Item, Pending, Received, Replay};

/// How long one pull request waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Pause after a failed pull (server down), so the loop does not spin.
const PULL_RETRY: Duration = Duration::from_millis(500);

/// The messages of one sensor.
pub struct SensorConsumer {
    sensor: String,
    consumer: PullConsumer,
    batch_size: usize,
    batch: Option<pull::Batch>,
    stop: CancellationToken,
    ack_wait: Duration,
    completed: Option<Arc<DedupLock>>,
    failing: bool,
}

impl std::fmt::Debug for SensorConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorConsumer")
            .field("sensor", &self.sensor)
            .field("batch_size", &self.batch_size)
            .field("fetching", &self.batch.is_some())
            .finish_non_exhaustive()
    }
}

impl SensorConsumer {
    pub(super) async fn open(
        bus: JetStreamBus,
        sensor: &str,
        batch_size: usize,
        stop: CancellationToken,
    ) -> Result<Self, BusError> {
        let names = bus.names();
        let options = bus.options();
        let durable = names.consumer(sensor);
        let what = format!("consumer {durable} of sensor {sensor:?}");
        let stream = bus
            .js()
            .get_stream(names.events_stream())
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("triggerd sensor {sensor}")),
            filter_subject: names.sensor_subject(sensor),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: i64::try_from(batch_size.max(1) * 4).unwrap_or(i64::MAX),
            ..Default::default()
        };
        // The durable create call also updates an existing consumer's editable settings
        // (ack wait, max ack pending) on 2.9 servers.
        let consumer: PullConsumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        let completed = (!options.dedup_window.is_zero())
            .then(|| Arc::new(DedupLock::new(Dedup::new(options.dedup_window))));
        Ok(Self {
            sensor: sensor.to_owned(),
            consumer,
            batch_size: batch_size.max(1),
            batch: None,
            stop,
            ack_wait: options.ack_wait,
            completed,
            failing: false,
        })
    }

    /// The next message for the sensor; `None` once the agent stops (messages fetched but
    /// not handed out are given back for immediate redelivery).
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            if self.stop.is_cancelled() {
                self.give_back().await;
                return None;
            }
            let Some(batch) = self.batch.as_mut() else {
                let request = self
                    .consumer
                    .batch()
                    .max_messages(self.batch_size)
                    .expires(PULL_EXPIRES)
                    .messages();
                match request.await {
                    Ok(b) => {
                        if self.failing {
                            tracing::info!(sensor = %self.sensor, "JetStream consumer fetching again");
                            self.failing = false;
                        }
                        self.batch = Some(b);
                    }
                    Err(e) => {
                        if !self.failing {
                            tracing::warn!(sensor = %self.sensor, error = %e, "JetStream fetch failed; retrying");
                            self.failing = true;
                        }
                        tokio::select! {
                            () = self.stop.cancelled() => {}
                            () = tokio::time::sleep(PULL_RETRY) => {}
                        }
                    }
                }
                continue;
            };
            let next = tokio::select! {
                () = self.stop.cancelled() => continue,
                m = batch.next() => m,
            };
            match next {
                None => self.batch = None,
                Some(Err(e)) => {
                    tracing::debug!(sensor = %self.sensor, error = %e, "JetStream pull ended");
                    self.batch = None;
                }
                Some(Ok(message)) => {
                    if let Some(r) = self.receive(message).await {
                        return Some(r);
                    }
                }
            }
        }
    }

    /// Turns a message into what the sensor handles; `None` when it needs no handling (a
    /// redelivery of an event already handled here, or a body that cannot be read).
    async fn receive(&self, message: Message) -> Option<Received> {
        let replay = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLAY_HEADER))
            .map(|v| v.as_str().to_owned());
        if let Some(trigger) = replay {
            return match DeadLetterRecord::decode(&message.payload) {
                Ok(record) => Some(Received {
                    item: Item::Replay(Replay {
                        trigger,
                        events: record.events,
                    }),
                    ack: Pending::tracked(message, self.ack_wait, None),
                }),
                Err(e) => {
                    self.discard(&message, &format!("unreadable replay: {e}"))
                        .await;
                    None
                }
            };
        }
        let event = match wire::decode(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                self.discard(&message, &e.to_string()).await;
                return None;
            }
        };
        // Asked for every message, not only those the server counts as redelivered: a
        // server that crashed before writing its consumer state delivers messages this
        // replica already finished as first deliveries (delivery count 1).
        let identity = event.identity();
        let handled = self
            .completed
            .as_ref()
            .and_then(|c| c.lock().ok().map(|mut set| set.contains(identity)))
            .unwrap_or(false);
        if handled {
            tracing::debug!(sensor = %self.sensor, event_id = %event.id, "event already handled here delivered again; acknowledged again");
            if let Err(e) = message.ack().await {
                tracing::debug!(error = %e, "acknowledgement failed");
            }
            return None;
        }
        let completed = self.completed.as_ref().map(|set| Completed {
            set: set.clone(),
            identity,
        });
        Some(Received {
            item: Item::Event(Arc::new(event)),
            ack: Pending::tracked(message, self.ack_wait, completed),
        })
    }

    /// Terminates a message no sensor can read (it would only be delivered again forever).
    async fn discard(&self, message: &Message, why: &str) {
        tracing::error!(sensor = %self.sensor, error = %why, "unreadable bus message discarded");
        if let Err(e) = message.ack_with(AckKind::Term).await {
            tracing::debug!(error = %e, "termination failed");
        }
    }

    async fn give_back(&mut self) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        while let Some(Some(Ok(m))) = batch.next().now_or_never() {
            if let Err(e) = m.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(error = %e, "negative acknowledgement failed");
            }
        }
    }
}
