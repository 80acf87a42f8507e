//! What a trigger attempt returns, as policies see it.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Dynamic, Map};
use serde_json::Value;
use thiserror::Error;

use crate::script::to_dynamic;

/// A failure to get any response (connection refused, timeout, bad URL).
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct TriggerError {
    /// What happened.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// The result of one attempt.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code, absent on transport failure.
    pub status: Option<u16>,
    /// Response headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// Body, parsed as JSON when it is JSON, else a string.
    pub body: Value,
    /// How long the attempt took.
    pub duration: Duration,
    /// Set when there was no response at all.
    pub error: Option<TriggerError>,
}

impl Response {
    /// A transport failure.
    pub fn failed(error: TriggerError, duration: Duration) -> Self {
        Self {
            error: Some(error),
            duration,
            ..Self::default()
        }
    }

    /// `response` for policy scripts: `#{status, headers, body, duration_ms}` or `#{error}`.
    pub fn to_dynamic(&self) -> Dynamic {
        let mut map = Map::new();
        if let Some(e) = &self.error {
            map.insert("error".into(), e.message.clone().into());
            map.insert(
                "duration_ms".into(),
                (self.duration.as_millis() as i64).into(),
            );
            return map.into();
        }
        map.insert("status".into(), i64::from(self.status.unwrap_or(0)).into());
        let headers: Map = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.clone().into()))
            .collect();
        map.insert("headers".into(), headers.into());
        map.insert("body".into(), to_dynamic(&self.body));
        map.insert(
            "duration_ms".into(),
            (self.duration.as_millis() as i64).into(),
        );
        map.into()
    }

    /// A short description for logs and dead letters.
    pub fn summary(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.message.clone(),
            (None, Some(s)) => format!("status {s}"),
            (None, None) => "no response".into(),
        }
    }
}
