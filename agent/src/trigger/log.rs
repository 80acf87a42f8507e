//! The log trigger: writes the events to the agent's log, for debugging.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::compile::{KindInput, KindParts};
use super::{BuildError, Call, CompiledParameter, HttpReply, HttpStub, Invocation};
use super::{PayloadBuilder, Reply, Response, Shape, TriggerKind, TriggerTarget};
use crate::event::FiredEvents;
use crate::manifest::LogTrigger;
use crate::script::ScriptHost;

/// Compiles a `log` spec: nothing to check, the payload is the events.
pub(super) fn compile(_log: &LogTrigger, input: &KindInput<'_>) -> KindParts {
    let target = Arc::new(LogTarget {
        sensor: input.sensor.to_owned(),
        trigger: input.trigger.to_owned(),
    });
    KindParts {
        fixed: Some(Invocation::new(LogCall(target.clone()))),
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
    /// Writes one log line with the payload; always succeeds.
    pub fn execute(&self, payload: &Value) -> Response {
        tracing::info!(target: "triggerd::trigger::log", sensor = %self.sensor, trigger = %self.trigger, payload = %payload, "log trigger");
        Response::replied(Reply::new(HttpReply::status(200)), Duration::ZERO)
    }
}

impl TriggerTarget for LogTarget {
    /// Every execution is the same log line.
    fn invocation(
        self: Arc<Self>,
        _template: &Value,
        _params: &[CompiledParameter],
        _host: &ScriptHost,
        _events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        Ok(Invocation::new(LogCall(self)))
    }

    /// Log triggers stub like http ones (their live reply is a 200).
    fn stub_shape(&self) -> Shape {
        Shape::new(HttpStub)
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
