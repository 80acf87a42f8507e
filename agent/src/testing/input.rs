//! Events given in files: JSON or YAML data with optional CloudEvent attributes, turned into
//! the [`Event`] a source would have put on the bus.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::event::Event;

/// An event as written by a user: its data and optional context attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventInput {
    /// The event data (for a webhook: `{header, body}`).
    pub data: Value,
    /// CloudEvent attributes: `id`, `time`, `type`, `datacontenttype`, `source`,
    /// `subject`; any other key is an extension (e.g. `traceparent`).
    pub context: Map<String, Value>,
}

impl EventInput {
    /// Reads a parsed file: `{data: ..., context: {...}}` (an object whose keys are `data` and
    /// optionally `context`) is an envelope; anything else is the data itself.
    pub fn from_document(doc: Value) -> Result<Self, String> {
        match doc {
            Value::Object(mut map)
                if map.contains_key("data")
                    && map.keys().all(|k| k == "data" || k == "context") =>
            {
                let data = map.remove("data").unwrap_or(Value::Null);
                let context = match map.remove("context") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(c)) => c,
                    Some(other) => {
                        return Err(format!("`context` must be a mapping, not {other}"));
                    }
                };
                Ok(Self { data, context })
            }
            data => Ok(Self {
                data,
                context: Map::new(),
            }),
        }
    }

    /// The `source` and `subject` attributes, when given.
    pub fn routing(&self) -> (Option<&str>, Option<&str>) {
        let get = |k: &str| self.context.get(k).and_then(Value::as_str);
        (get("source"), get("subject"))
    }

    /// The event a source would publish: `source` is the EventSource name, `subject` the
    /// event name and `kind` the source kind; `now` is its time unless `context.time` says
    /// otherwise.
    pub fn to_event(
        &self,
        source: &str,
        subject: &str,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Event, String> {
        let mut event = Event::new(source, subject, kind, self.data.clone(), Bytes::new());
        event.time = now;
        for (key, value) in &self.context {
            let text = || {
                value
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("context.{key} must be a string, not {value}"))
            };
            match key.as_str() {
                "id" => event.id = text()?,
                "type" => event.kind = text()?,
                "datacontenttype" => event.datacontenttype = text()?,
                "time" => {
                    let t = text()?;
                    event.time = DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| {
                            format!(
                                "context.time {t:?}: {e} (use RFC 3339, e.g. 2026-11-23T10:00:00Z)"
                            )
                        })?
                        .with_timezone(&Utc);
                }
                "source" if value.as_str() != Some(source) => {
                    return Err(format!(
                        "context.source {value} differs from the event source {source:?}"
                    ))
                }
                "subject" if value.as_str() != Some(subject) => {
                    return Err(format!(
                        "context.subject {value} differs from the event name {subject:?}"
                    ))
                }
                "source" | "subject" | "specversion" => {}
                _ => {
                    event.extensions.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(event)
    }
}

/// Reads a JSON or YAML document from `path` (`-` for stdin); errors name the file and, for
/// syntax errors, the line and column.
pub fn read_document(path: &Path) -> Result<Value, String> {
    let (name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("<stdin>: {e}"))?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        (path.display().to_string(), text)
    };
    parse_document(&name, &text)
}

/// Parses JSON or YAML (JSON first, so JSON-only escapes and big numbers keep their meaning).
pub fn parse_document(name: &str, text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let message = e.without_snippet().to_string();
        let message = message.lines().next().unwrap_or("").to_owned();
        match e.location() {
            Some(l) => format!("{name}:{}:{}: {message}", l.line(), l.column()),
            None => format!("{name}: {message}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_and_bare_data() {
        let bare = EventInput::from_document(json!({"body": {"a": 1}})).unwrap();
        assert_eq!(bare.data, json!({"body": {"a": 1}}));
        let env = EventInput::from_document(
            json!({"data": {"a": 1}, "context": {"id": "x", "traceparent": "00-1"}}),
        )
        .unwrap();
        assert_eq!(env.data, json!({"a": 1}));
        let e = env.to_event("ci", "report", "webhook", Utc::now()).unwrap();
        assert_eq!(e.id, "x");
        assert_eq!(e.extensions["traceparent"], "00-1");
        // A data object that merely has a `data` key among others stays data.
        let data = EventInput::from_document(json!({"data": 1, "other": 2})).unwrap();
        assert_eq!(data.data, json!({"data": 1, "other": 2}));
    }

    #[test]
    fn context_is_checked() {
        let input = EventInput::from_document(json!({"data": {}, "context": {"time": "noon"}}));
        assert!(input
            .unwrap()
            .to_event("s", "e", "webhook", Utc::now())
            .unwrap_err()
            .contains("RFC 3339"));
        let input = EventInput::from_document(json!({"data": {}, "context": {"source": "x"}}));
        assert!(input
            .unwrap()
            .to_event("s", "e", "webhook", Utc::now())
            .is_err());
    }

    #[test]
    fn json_and_yaml_documents() {
        assert_eq!(
            parse_document("a.json", "{\"a\": [1, 2]}").unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(
            parse_document("a.yaml", "a:\n  - 1\n  - x\n").unwrap(),
            json!({"a": [1, "x"]})
        );
        let err = parse_document("a.yaml", "a: [1\nb: 2\n").unwrap_err();
        assert!(err.starts_with("a.yaml:"), "{err}");
    }
}
