//! The CloudEvents 1.0 event that flows from sources through the bus to sensors.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rhai::Dynamic;
use serde_json::{Map, Value};

use crate::script::{CompiledScript, Reads};

mod fired;

pub use fired::FiredEvents;

/// Views of an event computed at most once, however many dependencies, scripts and
/// triggers look at it. A clone starts empty, so a changed copy never sees stale views.
#[derive(Debug, Default)]
pub struct Views {
    json: OnceLock<String>,
    data: OnceLock<Dynamic>,
    context: OnceLock<Dynamic>,
}

impl Clone for Views {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// One event: CloudEvents context attributes plus parsed data and the original bytes.
///
/// `source` is the EventSource name and `subject` the event name within it, so that sensors
/// match dependencies on (`eventSourceName`, `eventName`) without looking into the data.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unique id (UUID unless the producer sent a CloudEvent with its own id).
    pub id: String,
    /// Name of the EventSource that produced the event.
    pub source: String,
    /// Name of the event within its EventSource.
    pub subject: String,
    /// Source kind, e.g. `webhook` or `calendar`.
    pub kind: String,
    /// When the event happened.
    pub time: DateTime<Utc>,
    /// Media type of `raw`.
    pub datacontenttype: String,
    /// Extension attributes (e.g. `traceparent`).
    pub extensions: Map<String, Value>,
    /// Parsed data (JSON where the source has JSON).
    pub data: Value,
    /// The original bytes, kept for signatures and forwarding.
    pub raw: Bytes,
    /// Whether `raw` is exactly the JSON text of `data` (so gjson paths and forwarding can
    /// use it as received), rather than some other original (a webhook's body).
    pub raw_is_data: bool,
    /// Cached views; set `data` and the other fields before the first look.
    pub views: Views,
}

/// The deduplication key of an event (see [`Event::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventIdentity([u8; 32]);

impl std::fmt::Display for EventIdentity {
    /// Lowercase hex, as used in JetStream's `Nats-Msg-Id`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(source: &str, subject: &str, kind: &str, data: Value, raw: Bytes) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            source: source.to_owned(),
            subject: subject.to_owned(),
            kind: kind.to_owned(),
            time: Utc::now(),
            datacontenttype: "application/json".to_owned(),
            extensions: Map::new(),
            data,
            raw,
            raw_is_data: false,
            views: Views::default(),
        }
    }

    /// Who this event is for deduplication: its EventSource, its event name, the
    /// CloudEvent `source` a producer gave (if any) and its id. Scoping the id this way
    /// means no sender can suppress another endpoint's or producer's event by reusing its
    /// id. A SHA-256 digest, so a hostile id of any length costs the dedup window 32 bytes.
    pub fn identity(&self) -> EventIdentity {
        use sha2::Digest;
        let original = self
            .extensions
            .get("originalsource")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut hash = sha2::Sha256::new();
        for part in [self.source.as_str(), &self.subject, original, &self.id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        EventIdentity(hash.finalize().into())
    }

    /// The event data as JSON text, as Argo renders it for gjson paths: the original bytes
    /// when they are the data, else the serialized data; `None` when there is no data.
    /// YAML data (`application/yaml`) is converted to JSON, as Argo does.
    pub fn data_text(&self) -> Option<Cow<'_, str>> {
        if self.raw_is_data {
            if self.raw.is_empty() {
                return None;
            }
            let text = String::from_utf8_lossy(&self.raw);
            if self.datacontenttype.contains("yaml") {
                if let Ok(v) = serde_saphyr::from_str::<Value>(&text) {
                    return Some(Cow::Owned(v.to_string()));
                }
            }
            return Some(text);
        }
        match &self.data {
            Value::Null => None,
            v => Some(Cow::Borrowed(self.views.json.get_or_init(|| v.to_string()))),
        }
    }

    /// The data as a Rhai value, converted from JSON once; each caller gets its own copy
    /// (strings inside are reference-counted), so no script can change what another sees.
    /// Scripts get [`Self::data_for`], which copies only what they read.
    ///
    /// Copies rather than Rhai shared values: reading a property of a shared value takes its
    /// write lock (scripts on other threads would wait, then fail), and a shared value
    /// nested in a map trips Rhai's size checks (an internal panic); see `script::view`.
    pub fn data_view(&self) -> Dynamic {
        self.views
            .data
            .get_or_init(|| crate::script::to_dynamic(&self.data))
            .clone()
    }

    /// The context attributes as a Rhai map, converted once; each caller gets a copy.
    pub fn context_view(&self) -> Dynamic {
        self.context_cached().clone()
    }

    fn context_cached(&self) -> &Dynamic {
        self.views
            .context
            .get_or_init(|| crate::script::to_dynamic(&self.context_json()))
    }

    /// `event` for `script`: a value of its own holding what the script reads of the data
    /// (the paths it reads, all of it, or `()` when it reads none).
    pub fn data_for(&self, script: &CompiledScript) -> Dynamic {
        match script.reads("event") {
            Reads::Nothing => Dynamic::UNIT,
            Reads::Whole => self.data_view(),
            Reads::Paths(paths) => match self.views.data.get() {
                Some(whole) => paths.project(whole),
                None => paths.project_json(&self.data),
            },
        }
    }

    /// `ctx` for `script`: what it reads of the context attributes, as for
    /// [`Self::data_for`].
    pub fn context_for(&self, script: &CompiledScript) -> Dynamic {
        match script.reads("ctx") {
            Reads::Nothing => Dynamic::UNIT,
            reads => reads.project(self.context_cached()),
        }
    }

    /// One context attribute (what `contextKey` reads), without building the whole context.
    pub fn context_attribute(&self, key: &str) -> Option<Value> {
        // Extensions come last in the context, so they win over a same-named attribute.
        if let Some(v) = self.extensions.get(key) {
            return Some(v.clone());
        }
        let text = |s: &str| Some(Value::String(s.to_owned()));
        match key {
            "id" => text(&self.id),
            "source" => text(&self.source),
            "subject" => text(&self.subject),
            "type" => text(&self.kind),
            "specversion" => text("1.0"),
            "time" => Some(Value::String(self.time_string())),
            "datacontenttype" => text(&self.datacontenttype),
            _ => None,
        }
    }

    /// The context attributes as a JSON object (what scripts see as `ctx`).
    pub fn context_json(&self) -> Value {
        let mut ctx = Map::new();
        ctx.insert("id".into(), self.id.clone().into());
        ctx.insert("source".into(), self.source.clone().into());
        ctx.insert("subject".into(), self.subject.clone().into());
        ctx.insert("type".into(), self.kind.clone().into());
        ctx.insert("specversion".into(), "1.0".into());
        ctx.insert("time".into(), self.time_string().into());
        ctx.insert(
            "datacontenttype".into(),
            self.datacontenttype.clone().into(),
        );
        for (k, v) in &self.extensions {
            ctx.insert(k.clone(), v.clone());
        }
        Value::Object(ctx)
    }

    /// The event in CloudEvents structured JSON form (context attributes plus `data`).
    pub fn to_json(&self) -> Value {
        let mut obj = match self.context_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("data".into(), self.data.clone());
        Value::Object(obj)
    }

    /// RFC 3339 timestamp of the event.
    pub fn time_string(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_context_attribute_matches_the_whole_context() {
        let mut e = Event::new("hooks", "push", "webhook", Value::Null, Bytes::new());
        e.extensions.insert("traceparent".into(), "00-abc".into());
        let whole = e.context_json();
        for key in [
            "id",
            "source",
            "subject",
            "type",
            "specversion",
            "time",
            "datacontenttype",
            "traceparent",
            "missing",
        ] {
            assert_eq!(e.context_attribute(key).as_ref(), whole.get(key), "{key}");
        }
    }

    #[test]
    fn identity_is_scoped_to_the_event_and_the_producer() {
        let ev = |source: &str, subject: &str, producer: Option<&str>| {
            let mut e = Event::new(source, subject, "webhook", Value::Null, Bytes::new());
            e.id = "release-42".into();
            if let Some(p) = producer {
                e.extensions.insert("originalsource".into(), p.into());
            }
            e
        };
        let base = ev("hooks", "auth", None).identity();
        assert_eq!(base, ev("hooks", "auth", None).identity());
        assert_ne!(base, ev("hooks", "open", None).identity());
        assert_ne!(base, ev("other", "auth", None).identity());
        assert_ne!(base, ev("hooks", "auth", Some("/ci")).identity());
        // Length prefixes keep the parts apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            ev("ab", "c", None).identity(),
            ev("a", "bc", None).identity()
        );
        assert_eq!(base.to_string().len(), 64);
    }
}
