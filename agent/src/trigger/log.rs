//! The log trigger: writes the events to the agent's log, for debugging.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::compile::{KindInput, KindParts};
use super::{Call, HttpReply, Invocation, PayloadBuilder, Reply, Response, TriggerKind};
use crate::manifest::LogTrigger;

/// Compiles a `log` spec: nothing to check, the payload is the events.
pub(super) fn compile(_log: &LogTrigger, input: &KindInput<'_>) -> KindParts {
    let target = Arc::new(LogTarget {
        sensor: input.sensor.to_owned(),
        trigger: input.trigger.to_owned(),
    });
    KindParts {
        fixed: Some(target.invocation()),
        kind: TriggerKind::Log(target),
        params: Vec::new(),
        payload: PayloadBuilder::Events,
    }
}

/// Logs the payload under the sensor's and trigger's names.
#[derive(Debug, Clone, Default)]
pub struct LogTarget {
    sensor: String,
    trigger: String,
}

impl LogTarget {
    /// Every execution is the same log line.
    pub(super) fn invocation(self: &Arc<Self>) -> Invocation {
        Invocation::new(LogCall(self.clone()))
    }

    /// Writes one log line with the payload; always succeeds.
    pub fn execute(&self, payload: &Value) -> Response {
        tracing::info!(target: "triggerd::trigger::log", sensor = %self.sensor, trigger = %self.trigger, payload = %payload, "log trigger");
        Response::replied(Reply::new(HttpReply::status(200)), Duration::ZERO)
    }
}

/// One log line to write.
#[derive(Debug)]
struct LogCall(Arc<LogTarget>);

impl Call for LogCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(std::future::ready(self.0.execute(payload)))
    }

    /// `{type: log}`.
    fn to_json(&self) -> Value {
        json!({ "type": "log" })
    }
}
