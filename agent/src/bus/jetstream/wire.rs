//! Events as JetStream message bodies and stored condition state: every attribute, the parsed
//! data and the original bytes, so a sensor in another process (or after a restart) sees the
//! very event the source built.

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;

/// The serialized form of an [`Event`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WireEvent {
    id: String,
    source: String,
    subject: String,
    #[serde(rename = "type")]
    kind: String,
    time: DateTime<Utc>,
    datacontenttype: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extensions: Map<String, Value>,
    #[serde(default)]
    data: Value,
    /// The original bytes as text, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    /// The original bytes in base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    #[serde(default)]
    raw_is_data: bool,
}

impl From<&Event> for WireEvent {
    fn from(e: &Event) -> Self {
        let (raw, raw_base64) = match std::str::from_utf8(&e.raw) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&e.raw)),
            ),
        };
        Self {
            id: e.id.clone(),
            source: e.source.clone(),
            subject: e.subject.clone(),
            kind: e.kind.clone(),
            time: e.time,
            datacontenttype: e.datacontenttype.clone(),
            extensions: e.extensions.clone(),
            data: e.data.clone(),
            raw,
            raw_base64,
            raw_is_data: e.raw_is_data,
        }
    }
}

impl WireEvent {
    /// The event again.
    pub fn into_event(self) -> Result<Event, base64::DecodeError> {
        let raw = match (self.raw, self.raw_base64) {
            (Some(text), _) => Bytes::from(text),
            (None, Some(b64)) => {
                Bytes::from(base64::engine::general_purpose::STANDARD.decode(b64)?)
            }
            (None, None) => Bytes::new(),
        };
        let mut event = Event::new(&self.source, &self.subject, &self.kind, self.data, raw);
        event.id = self.id;
        event.time = self.time;
        event.datacontenttype = self.datacontenttype;
        event.extensions = self.extensions;
        event.raw_is_data = self.raw_is_data;
        Ok(event)
    }
}

/// Why a stored event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not the JSON this module writes.
    #[error("malformed event: {0}")]
    Json(#[from] serde_json::Error),
    /// `raw_base64` is not base64.
    #[error("malformed event bytes: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// The message body of `event`.
pub fn encode(event: &Event) -> Bytes {
    // Serializing owned strings and JSON values cannot fail.
    Bytes::from(serde_json::to_vec(&WireEvent::from(event)).unwrap_or_default())
}

/// The event in a message body.
pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
    let wire: WireEvent = serde_json::from_slice(body)?;
    Ok(wire.into_event()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_every_attribute_and_the_original_bytes() {
        let mut e = Event::new(
            "hooks",
            "push",
            "webhook",
            json!({"body": {"n": 1}}),
            Bytes::from_static(b"{ \"n\" : 1 }"),
        );
        e.extensions.insert("traceparent".into(), json!("00-abc"));
        let back = decode(&encode(&e)).unwrap();
        assert_eq!(back.id, e.id);
        assert_eq!(back.time, e.time);
        assert_eq!(back.raw, e.raw);
        assert_eq!(back.data, e.data);
        assert_eq!(back.extensions, e.extensions);
        assert!(!back.raw_is_data);

        let binary = Event::new(
            "s",
            "n",
            "k",
            Value::Null,
            Bytes::from_static(&[0xff, 0x00]),
        );
        assert_eq!(decode(&encode(&binary)).unwrap().raw, binary.raw);
    }
}
