//! Canned replies for offline tests (`triggerd test`, `triggerd eval`). A stub is written in
//! the fields of its trigger's kind; each kind's file has a [`StubShape`] saying which fields
//! it takes and what reply they make, so offline tests judge exactly the reply shape the
//! live target would give.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Reply, Response, TriggerError};

/// A stubbed response as written in a test file: the union of every kind's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StubSpec {
    /// Status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body (any JSON).
    #[serde(default)]
    pub body: Value,
    /// A transport error instead of a response.
    #[serde(default)]
    pub error: Option<String>,
    /// Whether the transport error is retryable (default true).
    #[serde(default)]
    pub retryable: Option<bool>,
    /// awsLambda: the function error (`X-Amz-Function-Error`, e.g. `Unhandled`).
    #[serde(default)]
    pub function_error: Option<String>,
    /// awsLambda: what the function returned.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Kubernetes triggers: the live object after the action.
    #[serde(default)]
    pub object: Option<Value>,
    /// Kubernetes triggers: the object's later states.
    #[serde(default)]
    pub objects: Option<Value>,
}

/// Why a stub does not fit its trigger's kind.
#[derive(Debug, Clone, PartialEq)]
pub struct StubMisuse {
    /// The offending field under the stub's path (`payload`), or `None` for the stub itself.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
    /// How to write it instead.
    pub hint: Option<String>,
}

impl StubMisuse {
    pub(super) fn new(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            hint: None,
        }
    }

    pub(super) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// How one trigger kind plays back a canned response.
pub trait StubShape: Debug + Send + Sync {
    /// A name for the shape (reports and comparisons).
    fn name(&self) -> String;
    /// Reads a stub written for this kind; the first misuse found otherwise.
    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse>;
    /// The reply a canned response (without a transport error) makes.
    fn reply(&self, stub: &StubResponse) -> Reply;
    /// The canned response (without a transport error) as JSON for reports.
    fn to_json(&self, stub: &StubResponse) -> Value;
    /// The object's later states, for a policy that answers "wait" (the stub's `objects`).
    fn changes(&self, _stub: &StubResponse) -> Vec<Reply> {
        Vec::new()
    }
}

/// A kind's stub shape, shared by the responses it parsed.
#[derive(Debug, Clone)]
pub struct Shape(Arc<dyn StubShape>);

impl Shape {
    /// Wraps one kind's shape.
    pub fn new(shape: impl StubShape + 'static) -> Self {
        Self(Arc::new(shape))
    }

    /// Reads a stub written for this kind.
    pub fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        let mut stub = self.0.parse(spec)?;
        stub.shape = self.clone();
        Ok(stub)
    }

    /// The shape's name.
    pub fn name(&self) -> String {
        self.0.name()
    }
}

impl Default for Shape {
    /// The http shape: what an unknown trigger's stub is read as.
    fn default() -> Self {
        Self::new(super::http::HttpStub)
    }
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// A canned answer to one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct StubResponse {
    /// The reply shape.
    pub shape: Shape,
    /// Status code (ignored when `error` is set).
    pub status: u16,
    /// Response headers (http).
    pub headers: BTreeMap<String, String>,
    /// Response body (http), the function's payload (awsLambda) or the live object after
    /// the action (k8s).
    pub body: Value,
    /// k8s: the object's later states, one per change a policy that answered "wait" sees.
    pub objects: Vec<Value>,
    /// `X-Amz-Function-Error` (awsLambda): the function ran and failed.
    pub function_error: Option<String>,
    /// A transport error instead of a response (connection refused, timeout, ...).
    pub error: Option<String>,
    /// Whether the transport error may go away on retry (the default policy retries it).
    pub retryable: bool,
}

impl Default for StubResponse {
    /// What an unstubbed trigger answers: status 200, no body.
    fn default() -> Self {
        Self {
            shape: Shape::default(),
            status: 200,
            headers: BTreeMap::new(),
            body: Value::Null,
            objects: Vec::new(),
            function_error: None,
            error: None,
            retryable: true,
        }
    }
}

impl StubResponse {
    /// The response a policy judges.
    pub fn to_response(&self) -> Response {
        if let Some(e) = &self.error {
            return Response::failed(TriggerError::new(e.clone(), self.retryable), Duration::ZERO);
        }
        Response::replied(self.shape.0.reply(self), Duration::ZERO)
    }

    /// The response as JSON, for reports: the kind's fields, or `{error}`.
    pub fn to_json(&self) -> Value {
        match &self.error {
            Some(e) => json!({ "error": e }),
            None => self.shape.0.to_json(self),
        }
    }

    /// The object states a waiting policy sees after this response.
    pub fn changes(&self) -> Vec<Response> {
        self.shape
            .0
            .changes(self)
            .into_iter()
            .map(|reply| Response::replied(reply, Duration::ZERO))
            .collect()
    }
}

/// A stub of a kind that replies with a status (or, with `bare`, an acknowledgement `{}`),
/// once the kind has refused the fields it does not take: `status` or `error` (not both),
/// `retryable` only with `error`, no Kubernetes `object`/`objects`.
pub(super) fn status_stub(spec: &StubSpec, bare: bool) -> Result<StubResponse, StubMisuse> {
    if spec.object.is_some() || spec.objects.is_some() {
        return Err(StubMisuse::new(
            Some("object"),
            "`object` and `objects` are for k8s and argoWorkflow triggers",
        )
        .hint("http and log triggers take status, body, headers or error"));
    }
    match (spec.status, &spec.error) {
        (Some(_), Some(_)) => Err(StubMisuse::new(
            None,
            "set either status (a response) or error (no response), not both",
        )),
        // `{}`: published (nats) or acknowledged (kafka).
        (None, None) if bare => Ok(StubResponse::default()),
        (None, None) => Err(
            StubMisuse::new(None, "a response needs a status or an error")
                .hint("e.g. {status: 503} or {error: \"connection refused\"}"),
        ),
        (_, None) if spec.retryable.is_some() => Err(StubMisuse::new(
            Some("retryable"),
            "`retryable` goes with `error`",
        )),
        (status, error) => Ok(StubResponse {
            status: status.unwrap_or(0),
            headers: spec.headers.clone(),
            body: spec.payload.clone().unwrap_or_else(|| spec.body.clone()),
            objects: Vec::new(),
            function_error: spec.function_error.clone(),
            error: error.clone(),
            retryable: spec.retryable.unwrap_or(true),
            ..StubResponse::default()
        }),
    }
}

/// `{status, <fields>…, <body_key>: body}` for reports, the body only when there is one.
pub(super) fn status_json<'a>(
    stub: &StubResponse,
    fields: impl IntoIterator<Item = (&'a str, Value)>,
    body_key: &str,
) -> Value {
    let mut out = Map::new();
    out.insert("status".into(), stub.status.into());
    out.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
    if !stub.body.is_null() {
        out.insert(body_key.into(), stub.body.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::{HttpStub, K8sStub, LambdaStub};

    fn spec(yaml: &str) -> StubSpec {
        serde_saphyr::from_str(yaml).expect("stub yaml")
    }

    fn misuse(shape: impl StubShape + 'static, yaml: &str) -> (Option<&'static str>, String) {
        let m = Shape::new(shape).parse(&spec(yaml)).expect_err("a misuse");
        (m.field, m.message)
    }

    #[test]
    fn each_kind_refuses_the_fields_of_the_others() {
        assert_eq!(
            misuse(HttpStub, "{status: 200, payload: 1}"),
            (
                Some("payload"),
                "`payload` is for awsLambda triggers".into()
            )
        );
        assert_eq!(
            misuse(LambdaStub, "{status: 200, headers: {a: b}}"),
            (Some("headers"), "`headers` is for http triggers".into())
        );
        assert_eq!(
            misuse(super::super::nats::NatsStub, "{status: 200}"),
            (
                None,
                "a nats trigger's stub is `{}` (published) or `{error}`".into()
            )
        );
        assert_eq!(
            misuse(super::super::kafka::KafkaStub, "{body: x}"),
            (
                None,
                "a kafka trigger's stub is `{}` (acknowledged) or `{error}`".into()
            )
        );
        assert_eq!(
            misuse(
                K8sStub {
                    operation: "create"
                },
                "{body: x}"
            ),
            (
                None,
                "a Kubernetes trigger's stub is {status, object, objects} or {error}".into()
            )
        );
        assert_eq!(
            misuse(HttpStub, "{status: 200, object: {}}"),
            (
                Some("object"),
                "`object` and `objects` are for k8s and argoWorkflow triggers".into()
            )
        );
    }

    #[test]
    fn status_and_error_rules_hold_for_status_kinds() {
        assert_eq!(
            misuse(HttpStub, "{status: 200, error: x}").1,
            "set either status (a response) or error (no response), not both"
        );
        assert_eq!(
            misuse(HttpStub, "{}").1,
            "a response needs a status or an error"
        );
        assert_eq!(
            misuse(HttpStub, "{status: 503, retryable: false}"),
            (Some("retryable"), "`retryable` goes with `error`".into())
        );
        let bare = Shape::new(super::super::nats::NatsStub)
            .parse(&spec("{}"))
            .expect("an acknowledgement");
        assert_eq!(bare.to_json(), json!({}));
        let lambda = Shape::new(LambdaStub)
            .parse(&spec(
                "{status: 200, functionError: Unhandled, payload: {a: 1}}",
            ))
            .expect("a lambda reply");
        assert_eq!(
            lambda.to_json(),
            json!({"status": 200, "functionError": "Unhandled", "payload": {"a": 1}})
        );
    }

    #[test]
    fn kubernetes_stubs_default_to_200_and_carry_later_states() {
        let shape = Shape::new(K8sStub {
            operation: "submit",
        });
        let stub = shape
            .parse(&spec(
                "{object: {status: {phase: Running}}, objects: [{status: {phase: Succeeded}}]}",
            ))
            .expect("a k8s reply");
        assert_eq!(stub.status, 200);
        assert_eq!(stub.changes().len(), 1);
        let reply = stub.to_response().reply.expect("a reply");
        assert_eq!(reply.shape().summary(), "submit ?: 200, phase Running");
        assert_eq!(
            misuse(
                K8sStub {
                    operation: "create"
                },
                "{error: x, status: 500}"
            )
            .1,
            "set either status/object (a reply) or error (no reply), not both"
        );
        assert_eq!(
            misuse(
                K8sStub {
                    operation: "create"
                },
                "{objects: {}}"
            ),
            (Some("objects"), "objects is a list of object states".into())
        );
    }
}
