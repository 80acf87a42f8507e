//! Triggers: what a sensor does when its dependencies are met. One file per trigger kind,
//! one arm of [`TriggerKind`] each: the file compiles the kind's manifest section, builds
//! the request of one execution after parameters ([`Invocation`]), carries it out and says
//! what the reply looks like to policies ([`ReplyShape`]). This module holds the enum, the
//! shared parameter and payload code (`compile`, `params`) and the dispatch.

mod amqp;
mod argo_workflow;
mod compile;
mod http;
mod http_credentials;
mod k8s;
mod k8s_compile;
mod kafka;
mod lambda;
mod log;
mod mqtt;
mod nats;
pub mod params;
mod prepare;
mod response;
mod stub;

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

pub use amqp::{AmqpReply, AmqpRequestSpec, AmqpStub, AmqpTarget};
pub use argo_workflow::WorkflowOperation;
pub use compile::compile_trigger;
pub use http::{HttpReply, HttpRequestSpec, HttpStub, HttpTarget};
pub use http_credentials::CredentialError;
pub use k8s::{
    parse_resource, K8sAction, K8sOperation, K8sReply, K8sRequestSpec, K8sStub, K8sTarget,
    ObjectBase, PatchStrategy,
};
pub use kafka::{KafkaReply, KafkaRequestSpec, KafkaSettings, KafkaTarget};
pub use lambda::{
    LambdaReply, LambdaRequestSpec, LambdaSettings, LambdaSetupError, LambdaStub, LambdaTarget,
};
pub use log::LogTarget;
pub use mqtt::{MqttReply, MqttRequestSpec, MqttStub, MqttTarget};
pub use nats::{NatsReply, NatsRequestSpec, NatsTarget};
pub use params::{CompiledParameter, ParamError};
use prepare::KindError;
pub use prepare::{PrepareContext, PrepareError, PrepareFailure};
pub use response::{ObjectChanges, Outcome, Reply, ReplyShape, Response, TriggerError};
pub use stub::{Shape, StubMisuse, StubResponse, StubShape, StubSpec};

use crate::event::FiredEvents;
use crate::script::{from_dynamic, CompiledScript, ScriptHost};

/// The closed set of trigger kinds, each with its target (shared with the invocations
/// built for it, so readying the target once readies them all).
#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// HTTP request.
    Http(Arc<HttpTarget>),
    /// AWS Lambda invocation.
    Lambda(Arc<LambdaTarget>),
    /// NATS publish.
    Nats(Arc<NatsTarget>),
    /// Kafka write.
    Kafka(Arc<KafkaTarget>),
    /// MQTT publish.
    Mqtt(Arc<MqttTarget>),
    /// AMQP publish.
    Amqp(Arc<AmqpTarget>),
    /// A Kubernetes resource or Argo Workflow action.
    K8s(Arc<K8sTarget>),
    /// Log line.
    Log(Arc<LogTarget>),
}

impl TriggerKind {
    /// The kind's target, through which every kind is built, readied and stubbed.
    fn target(&self) -> Arc<dyn TriggerTarget> {
        match self {
            TriggerKind::Http(t) => t.clone(),
            TriggerKind::Lambda(t) => t.clone(),
            TriggerKind::Nats(t) => t.clone(),
            TriggerKind::Kafka(t) => t.clone(),
            TriggerKind::Mqtt(t) => t.clone(),
            TriggerKind::Amqp(t) => t.clone(),
            TriggerKind::K8s(t) => t.clone(),
            TriggerKind::Log(t) => t.clone(),
        }
    }
}

/// What every trigger kind's target does, implemented in the kind's own file.
trait TriggerTarget: Send + Sync {
    /// The request of one execution: the kind's section of `template` (after template-level
    /// parameters) with the kind-level `params` applied.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError>;

    /// Readies the target when its plan starts (secrets, SDK clients, the cluster); most
    /// kinds have nothing to do.
    fn prepare<'a>(
        &'a self,
        _ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// How offline tests stub the kind's replies.
    fn stub_shape(&self) -> Shape;

    /// Whether the kind talks to the Kubernetes API.
    fn needs_cluster(&self) -> bool {
        false
    }
}

/// One kind's request of one execution, bound to its target: what an attempt sends.
pub trait Call: Debug + Send + Sync {
    /// Carries out one attempt with `payload`.
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response>;
    /// The request as JSON for offline test reports (`{type, …}`).
    fn to_json(&self) -> Value;
}

/// The request of one execution, after parameters were applied.
#[derive(Debug, Clone)]
pub struct Invocation(Arc<dyn Call>);

impl Invocation {
    /// Wraps one kind's call.
    pub fn new(call: impl Call + 'static) -> Self {
        Self(Arc::new(call))
    }

    /// Carries out one attempt.
    pub async fn attempt(&self, payload: &Value) -> Response {
        self.0.attempt(payload).await
    }

    /// The request as JSON: `{type: http, url, method, headers, timeout?}`, `{type:
    /// awsLambda, functionName, invocationType}`, `{type: nats, subject}`, `{type: kafka,
    /// topic, partitioningKey}`, `{type: k8s, resource | configmap | file, jsonPatch?}` or
    /// `{type: log}`.
    pub fn to_json(&self) -> Value {
        self.0.to_json()
    }
}

/// How the payload is built.
#[derive(Debug, Clone)]
pub enum PayloadBuilder {
    /// From `payload` parameters into `{}`.
    Params(Vec<CompiledParameter>),
    /// From `payloadScript`.
    Script(CompiledScript),
    /// Nothing given: the event itself (or, for a dead letter, the dead-letter envelope).
    Events,
}

/// Context of a dead-letter execution, included in its default payload.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Trigger that failed.
    pub trigger: String,
    /// Last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

/// A trigger compiled from its manifest, ready to execute.
#[derive(Debug)]
pub struct CompiledTrigger {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub name: String,
    /// The kind and its target.
    pub kind: TriggerKind,
    /// The template as JSON, for template-level parameters.
    template_json: Value,
    /// Template-level parameters (`dest` relative to the template, e.g. `http.url`).
    template_params: Vec<CompiledParameter>,
    /// Kind-level parameters (`dest` relative to the kind's spec, e.g. `url`).
    type_params: Vec<CompiledParameter>,
    /// The invocation when no parameters change it.
    fixed: Option<Invocation>,
    /// How the payload is built.
    pub payload: PayloadBuilder,
}

/// Why an execution could not even be attempted (not retryable: same events, same error).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A parameter failed.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The payload script failed.
    #[error("payload script: {0}")]
    Script(#[from] crate::script::ScriptError),
    /// Parameters produced an unusable spec.
    #[error("trigger spec after parameters: {0}")]
    Spec(String),
}

impl BuildError {
    /// Whether a script (parameter or payload) failed, as opposed to missing data.
    pub fn is_script_error(&self) -> bool {
        matches!(
            self,
            BuildError::Script(_) | BuildError::Param(ParamError::Script { .. })
        )
    }
}

impl CompiledTrigger {
    /// The invocation for these events, applying template- and kind-level parameters.
    pub fn invocation(
        &self,
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let mut template = self.template_json.clone();
        params::apply_all(&self.template_params, host, events, &mut template)?;
        self.kind
            .target()
            .invocation(&template, &self.type_params, host, events)
    }

    /// How offline tests stub this trigger's replies.
    pub fn stub_shape(&self) -> Shape {
        self.kind.target().stub_shape()
    }

    /// Whether the trigger talks to the Kubernetes API.
    pub fn needs_cluster(&self) -> bool {
        self.kind.target().needs_cluster()
    }

    /// The payload for these events.
    pub fn build_payload(
        &self,
        host: &ScriptHost,
        events: &FiredEvents,
        dead_letter: Option<&DeadLetter>,
    ) -> Result<Value, BuildError> {
        match &self.payload {
            PayloadBuilder::Params(params) => {
                let mut payload = Value::Object(Default::default());
                params::apply_all(params, host, events, &mut payload)?;
                Ok(payload)
            }
            PayloadBuilder::Script(script) => {
                let value = host.eval(script, [("events", events.view_for(script))])?;
                Ok(from_dynamic(&value)?)
            }
            PayloadBuilder::Events => Ok(match dead_letter {
                Some(dl) => serde_json::json!({
                    "sensor": self.sensor,
                    "trigger": dl.trigger,
                    "error": dl.error,
                    "attempts": dl.attempts,
                    "events": events.to_json(),
                }),
                None if events.by_dependency.len() == 1 => events
                    .by_dependency
                    .values()
                    .next()
                    .map(|e| e.to_json())
                    .unwrap_or(Value::Null),
                None => events.to_json(),
            }),
        }
    }

    /// Readies the trigger's target before the first event: resolves secrets and builds SDK
    /// clients (kinds that need neither have nothing to do).
    pub async fn prepare(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareError> {
        let target = self.kind.target();
        target.prepare(ctx).await.map_err(|source| PrepareError {
            sensor: self.sensor.clone(),
            trigger: self.name.clone(),
            source,
        })
    }
}
