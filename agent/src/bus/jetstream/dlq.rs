//! Dead letters on JetStream: a trigger execution that failed for good is stored with its
//! events and last error, listed by `triggerd dlq list`, and run again by `triggerd dlq
//! replay`, which hands it back to the sensor's consumer (so the replay is itself durable).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use async_nats::jetstream::Context;

use super::{BusError, Names, WireEvent};
use crate::event::Event;

/// Header naming the trigger a replayed dead letter is for.
pub(super) const REPLAY_HEADER: &str = "Triggerd-Replay-Trigger";

/// One dead-lettered execution.
#[derive(Debug)]
pub struct DeadLetterRecord {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
    /// The last error.
    pub error: String,
    /// When it failed.
    pub time: DateTime<Utc>,
    /// The replica that ran it.
    pub replica: String,
    /// The events it fired with, by dependency name.
    pub events: BTreeMap<String, Arc<Event>>,
}

#[derive(Serialize, Deserialize)]
struct RecordWire {
    sensor: String,
    trigger: String,
    error: String,
    time: DateTime<Utc>,
    replica: String,
    events: BTreeMap<String, WireEvent>,
}

impl DeadLetterRecord {
    fn encode(&self) -> Bytes {
        let wire = RecordWire {
            sensor: self.sensor.clone(),
            trigger: self.trigger.clone(),
            error: self.error.clone(),
            time: self.time,
            replica: self.replica.clone(),
            events: self
                .events
                .iter()
                .map(|(k, e)| (k.clone(), WireEvent::from(e.as_ref())))
                .collect(),
        };
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a stored record.
    pub fn decode(body: &[u8]) -> Result<Self, super::DecodeError> {
        let wire: RecordWire = serde_json::from_slice(body)?;
        let mut events = BTreeMap::new();
        for (k, e) in wire.events {
            events.insert(k, Arc::new(e.into_event()?));
        }
        Ok(Self {
            sensor: wire.sensor,
            trigger: wire.trigger,
            error: wire.error,
            time: wire.time,
            replica: wire.replica,
            events,
        })
    }
}

/// A stored dead letter and its place in the stream.
#[derive(Debug)]
pub struct DeadLetterEntry {
    /// Stream sequence (what `replay --seq` takes).
    pub seq: u64,
    /// The record.
    pub record: DeadLetterRecord,
}

impl DeadLetterEntry {
    /// The entry as one JSON object (`dlq list --output json`): events as CloudEvents.
    pub fn to_json(&self) -> Value {
        let r = &self.record;
        let events: serde_json::Map<String, Value> = r
            .events
            .iter()
            .map(|(k, e)| (k.clone(), e.to_json()))
            .collect();
        json!({
            "seq": self.seq,
            "sensor": r.sensor,
            "trigger": r.trigger,
            "error": r.error,
            "time": r.time,
            "replica": r.replica,
            "events": events,
        })
    }
}

/// The namespace's dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: Context,
    names: Names,
}

impl DeadLetters {
    pub(super) fn new(js: Context, names: Names) -> Self {
        Self { js, names }
    }

    /// Connects to the dead letters of `namespace` without touching the bus's streams or
    /// buckets (what `triggerd dlq` uses).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("triggerd dlq")
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self::new(
            async_nats::jetstream::new(client),
            Names::new(namespace),
        ))
    }

    /// Stores a dead letter, waiting for the server's acknowledgement.
    pub async fn record(&self, record: &DeadLetterRecord) -> Result<(), BusError> {
        let subject = self.names.dlq_subject(&record.sensor, &record.trigger);
        let what = format!("dead letter on {subject}");
        self.js
            .publish(subject, record.encode())
            .await
            .map_err(|e| BusError::setup(&what, e))?
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        Ok(())
    }

    /// Every stored dead letter, oldest first (unreadable ones are reported and skipped).
    pub async fn list(&self) -> Result<Vec<DeadLetterEntry>, BusError> {
        let name = self.names.dlq_stream();
        let what = format!("stream {name}");
        let mut stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        let state = stream
            .info()
            .await
            .map_err(|e| BusError::setup(&what, e))?
            .state
            .clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            // Replayed entries leave gaps: a missing sequence is not an error.
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            match DeadLetterRecord::decode(&message.payload) {
                Ok(record) => out.push(DeadLetterEntry { seq, record }),
                Err(e) => tracing::warn!(seq, error = %e, "unreadable dead letter skipped"),
            }
        }
        Ok(out)
    }

    /// Hands one dead letter back to its sensor (through the events stream) and removes it.
    pub async fn replay(&self, entry: &DeadLetterEntry) -> Result<(), BusError> {
        let names = &self.names;
        let subject = names.sensor_subject(&entry.record.sensor);
        let what = format!("replay of dead letter {}", entry.seq);
        let mut headers = HeaderMap::new();
        headers.insert(REPLAY_HEADER, entry.record.trigger.as_str());
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("replay/{}/{}", names.dlq_stream(), entry.seq).as_str(),
        );
        self.js
            .publish_with_headers(subject, headers, entry.record.encode())
            .await
            .map_err(|e| BusError::setup(&what, e))?
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        let stream = self
            .js
            .get_stream(names.dlq_stream())
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        stream
            .delete_message(entry.seq)
            .await
            .map_err(|e| BusError::setup(&what, e))?;
        Ok(())
    }
}
