//! The stub executor of offline tests: answers attempts from canned responses and records
//! every delivery — the request and payload that would have been sent, each attempt with its
//! response and the policy's verdict, the final outcome and the dead letter.

use std::collections::HashMap;
use std::sync::Arc;
// Held only to push or update a record inside synchronous code, never across an await.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

use serde_json::Value;

use crate::event::FiredEvents;
use crate::trigger::Outcome;
use crate::trigger::{CompiledTrigger, Invocation, ObjectChanges, Response, StubResponse};

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The policy accepted a response.
    Success,
    /// It failed for good (for a trigger: it was dead-lettered), with the reason.
    Failed(String),
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    /// The stub response given.
    pub response: StubResponse,
    /// The policy's verdict: `success`, `retry: reason`, `fail: reason`.
    pub verdict: Option<String>,
}

/// One trigger's execution within a delivery (the trigger itself, or its dead letter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionRecord {
    /// Trigger name.
    pub trigger: String,
    /// The request as JSON (`{type, url, method, headers, timeout}` for http).
    pub request: Option<Value>,
    /// The payload that would have been sent.
    pub payload: Option<Value>,
    /// Attempts in order.
    pub attempts: Vec<AttemptRecord>,
    /// `None` while it runs.
    pub ended: Option<Ended>,
}

/// One delivery: a trigger fired for a set of events, to its final outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Sensor name.
    pub sensor: String,
    /// The events that fired it, by dependency (CloudEvent JSON).
    pub events: Value,
    /// The trigger's own execution.
    pub main: ExecutionRecord,
    /// The `dlqTrigger` execution, when the trigger failed and has one.
    pub dead_letter: Option<ExecutionRecord>,
}

/// Canned responses by (sensor, trigger) and the record of every delivery.
#[derive(Debug, Default)]
pub struct Stubs {
    responses: HashMap<(String, String), Vec<StubResponse>>,
    #[allow(clippy::disallowed_types)]
    deliveries: Mutex<Vec<DeliveryRecord>>,
}

impl Stubs {
    /// Stubs answering attempt `n` of a trigger (or dead-letter trigger) named `trigger` of
    /// `sensor` with the `n`th response of its list (the last one repeats); triggers without a
    /// list answer 200.
    pub fn new(responses: HashMap<(String, String), Vec<StubResponse>>) -> Self {
        Self {
            responses,
            deliveries: Default::default(),
        }
    }

    /// Every delivery so far, in the order they started.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().clone()
    }

    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeliveryRecord>> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn response(&self, sensor: &str, trigger: &str, attempt: u32) -> StubResponse {
        self.responses
            .get(&(sensor.to_owned(), trigger.to_owned()))
            .and_then(|list| {
                let i = (attempt.max(1) as usize - 1).min(list.len().saturating_sub(1));
                list.get(i).cloned()
            })
            .unwrap_or_default()
    }

    /// Opens the record of one delivery.
    pub(super) fn start(
        self: &Arc<Self>,
        trigger: &CompiledTrigger,
        events: &FiredEvents,
    ) -> Recording {
        let mut deliveries = self.lock();
        deliveries.push(DeliveryRecord {
            sensor: trigger.sensor.clone(),
            events: events.to_json(),
            main: ExecutionRecord {
                trigger: trigger.name.clone(),
                ..ExecutionRecord::default()
            },
            dead_letter: None,
        });
        Recording {
            stubs: self.clone(),
            index: deliveries.len() - 1,
        }
    }
}

/// The open record of one delivery.
#[derive(Debug)]
pub(super) struct Recording {
    stubs: Arc<Stubs>,
    index: usize,
}

impl Recording {
    fn with(&self, dead_letter: bool, f: impl FnOnce(&mut ExecutionRecord)) {
        let mut deliveries = self.stubs.lock();
        let Some(d) = deliveries.get_mut(self.index) else {
            return;
        };
        let record = if dead_letter {
            d.dead_letter.get_or_insert_with(ExecutionRecord::default)
        } else {
            &mut d.main
        };
        f(record);
    }

    /// Answers one attempt from the stubs and records it.
    pub(super) fn execute(
        &self,
        trigger: &CompiledTrigger,
        invocation: &Invocation,
        payload: &Value,
        attempt: u32,
        dead_letter: bool,
    ) -> Response {
        let mut stub = self.stubs.response(&trigger.sensor, &trigger.name, attempt);
        // Unstubbed attempts answer 200 in the trigger's own shape.
        stub.shape = trigger.stub_shape();
        let response = stub.to_response();
        self.with(dead_letter, |r| {
            r.trigger = trigger.name.clone();
            if r.request.is_none() {
                r.request = Some(invocation.to_json());
                r.payload = Some(payload.clone());
            }
            r.attempts.push(AttemptRecord {
                number: attempt,
                response: stub,
                verdict: None,
            });
        });
        response
    }

    /// Records the policy's verdict on the last attempt.
    pub(super) fn judged(&self, outcome: &Outcome, dead_letter: bool) {
        let verdict = match outcome {
            Outcome::Success => "success".to_owned(),
            Outcome::Retry { reason, .. } => format!("retry: {reason}"),
            Outcome::Fail { reason } => format!("fail: {reason}"),
            Outcome::Wait => "wait".to_owned(),
        };
        self.with(dead_letter, |r| {
            if let Some(a) = r.attempts.last_mut() {
                a.verdict = Some(verdict);
            }
        });
    }

    /// The object states a waiting policy sees after attempt `attempt` (its stub's `objects`).
    pub(super) fn changes(&self, trigger: &CompiledTrigger, attempt: u32) -> ObjectChanges {
        let mut stub = self.stubs.response(&trigger.sensor, &trigger.name, attempt);
        stub.shape = trigger.stub_shape();
        Box::pin(futures::stream::iter(stub.changes()))
    }

    /// Records that the request or payload could not be built, so no attempt was made (the
    /// reason arrives with `finish`).
    pub(super) fn build_failed(&self, trigger: &CompiledTrigger, dead_letter: bool) {
        self.with(dead_letter, |r| r.trigger = trigger.name.clone());
    }

    /// Records the final outcome: `failure` is the reason when it failed for good.
    pub(super) fn finish(&self, failure: Option<&str>, dead_letter: bool) {
        self.with(dead_letter, |r| {
            r.ended = Some(match failure {
                None => Ended::Success,
                Some(reason) => Ended::Failed(reason.to_owned()),
            });
        });
    }
}
