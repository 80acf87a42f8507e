//! The log trigger: writes the events to the agent's log, for debugging.

use std::time::Duration;

use serde_json::Value;

use super::{HttpReply, Reply, Response};

/// Logs the payload.
#[derive(Debug, Clone, Default)]
pub struct LogTarget;

impl LogTarget {
    /// Writes one log line with the payload; always succeeds.
    pub fn execute(&self, sensor: &str, trigger: &str, payload: &Value) -> Response {
        tracing::info!(target: "triggerd::trigger::log", sensor, trigger, payload = %payload, "log trigger");
        Response::replied(Reply::Http(HttpReply::status(200)), Duration::ZERO)
    }
}
