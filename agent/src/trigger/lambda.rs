//! The `awsLambda` trigger: invokes an AWS Lambda function with the payload as its event.
//!
//! The client is built when the agent starts a plan (`prepare`): secrets are
//! resolved then, so a missing key stops the start like a missing webhook token does. The
//! SDK's own retries are off: `retryStrategy` and the policy decide, as for every trigger.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use futures::future::BoxFuture;
use rhai::{Dynamic, Map};
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use super::compile::{
    check_parameter_dests, compile_params, parameterized, payload_builder, FixedParts, KindInput,
    KindParts,
};
use super::response::status_outcome;
use super::stub::{status_json, status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::{BuildError, Call, CompiledParameter, Invocation, Outcome, PrepareContext};
use super::{PrepareFailure, Reply, ReplyShape, Response, TriggerError, TriggerKind};
use super::{Shape, TriggerTarget};
use crate::aws_client::{AwsFields, AwsSettings};
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{AwsLambdaTrigger, ScriptSource};
use crate::script::{to_dynamic, ScriptHost};
use crate::secret::{FieldSecretError, SecretStore};

/// How long one invocation may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The invocation types Lambda knows.
pub const INVOCATION_TYPES: [&str; 3] = ["RequestResponse", "Event", "DryRun"];

/// The spec fields parameters may change (`dest: functionName`, `invocationType`).
pub const PARAMETER_FIELDS: [&str; 2] = ["functionName", "invocationType"];

/// The request fields of one invocation, after parameters were applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaRequestSpec {
    /// Function name, ARN or partial ARN.
    pub function_name: String,
    /// `RequestResponse` (default), `Event` or `DryRun`.
    #[serde(default)]
    pub invocation_type: Option<String>,
}

impl LambdaRequestSpec {
    /// Checks the spec and returns why it is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.function_name.trim().is_empty() {
            return Some("functionName is empty".into());
        }
        match &self.invocation_type {
            Some(t) if !INVOCATION_TYPES.contains(&t.as_str()) => Some(format!(
                "invalid invocationType {t:?} (one of: {})",
                INVOCATION_TYPES.join(", ")
            )),
            _ => None,
        }
    }

    /// The invocation type, `RequestResponse` when none is given.
    pub fn invocation_type(&self) -> &str {
        self.invocation_type.as_deref().unwrap_or("RequestResponse")
    }
}

/// Compiles an `awsLambda` spec: its settings (fixed at load), parameters (which may change
/// only `functionName` and `invocationType`) and payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    l: &AwsLambdaTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let (tfield, dependencies) = (input.tfield, input.dependencies);
    let f = format!("{tfield}.awsLambda");
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "awsLambda",
            allowed: &PARAMETER_FIELDS,
            fixed: "region, credentials and endpoint",
        },
        &l.parameters,
        input.template_params,
    );
    let settings = AwsSettings::compile(
        ctx,
        &f,
        AwsFields {
            region: &l.region,
            endpoint: l.endpoint.as_ref(),
            access_key: l.access_key.as_ref(),
            secret_key: l.secret_key.as_ref(),
            session_token: None,
            role_arn: l.role_arn.as_ref(),
        },
    );
    let spec = LambdaRequestSpec {
        function_name: l.function_name.clone(),
        invocation_type: l.invocation_type.as_ref().map(|t| t.value.clone()),
    };
    // A literal invocation type must be valid even when a parameter may replace it.
    if let Some(t) = &l.invocation_type {
        if !INVOCATION_TYPES.contains(&t.value.as_str()) {
            ctx.error_with_hint(
                Some(&t.referenced),
                format!("{f}.invocationType"),
                format!("invalid invocationType {:?}", t.value),
                format!("one of: {}", INVOCATION_TYPES.join(", ")),
            );
        }
    }
    let parameterized = !l.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            if spec.function_name.trim().is_empty() {
                ctx.error(None, format!("{f}.functionName"), p);
            }
            false
        }
        Some(_) => false,
        None => true,
    };
    let compiled = compile_params(ctx, &format!("{f}.parameters"), &l.parameters, dependencies);
    let payload = payload_builder(
        ctx,
        &f,
        &l.payload,
        ScriptSource::from_fields(&l.payload_script, &l.payload_script_file),
        dependencies,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let target = Arc::new(LambdaTarget::new(settings?));
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(LambdaCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Lambda(target),
        params: compiled?,
        payload: payload?,
        fixed,
    })
}

/// Where the Lambda client connects and with which credentials (fixed at load time).
pub type LambdaSettings = AwsSettings;

/// Why the Lambda client could not be set up.
#[derive(Debug, Error)]
pub enum LambdaSetupError {
    /// A credential secret could not be read.
    #[error("awsLambda {0}")]
    Secret(#[from] FieldSecretError),
}

/// A Lambda trigger with its client (built when its plan starts).
#[derive(Debug, Clone)]
pub struct LambdaTarget {
    settings: LambdaSettings,
    client: OnceLock<aws_sdk_lambda::Client>,
}

impl LambdaTarget {
    /// A target whose client is built later, when its plan starts.
    pub fn new(settings: LambdaSettings) -> Self {
        Self {
            settings,
            client: OnceLock::new(),
        }
    }

    /// Resolves the credentials and builds the client; no network traffic yet (credentials
    /// of the default chain and assumed roles are fetched at the first invocation).
    async fn build_client(&self, store: &SecretStore) -> Result<(), LambdaSetupError> {
        if self.client.get().is_some() {
            return Ok(());
        }
        let config = self.settings.sdk_config(store, DEFAULT_TIMEOUT).await?;
        let client = aws_sdk_lambda::Client::new(&config);
        // A concurrent prepare of the same target built an equal client; either will do.
        let _ = self.client.set(client);
        Ok(())
    }

    /// Invokes the function once.
    pub async fn execute(&self, spec: &LambdaRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let Some(client) = self.client.get() else {
            return Response::failed(
                TriggerError::permanent("internal: awsLambda client was not prepared"),
                started.elapsed(),
            );
        };
        let body = match serde_json::to_vec(payload) {
            Ok(b) => b,
            Err(e) => {
                return Response::failed(
                    TriggerError::permanent(format!("payload: {e}")),
                    started.elapsed(),
                )
            }
        };
        let sent = client
            .invoke()
            .function_name(&spec.function_name)
            .invocation_type(InvocationType::from(spec.invocation_type()))
            .payload(Blob::new(body))
            .send()
            .await;
        let reply = match sent {
            Ok(out) => LambdaReply {
                status: u16::try_from(out.status_code()).unwrap_or(0),
                function_error: out.function_error().map(str::to_owned),
                payload: parse_payload(out.payload().map(Blob::as_ref)),
                error: None,
            },
            Err(SdkError::ServiceError(e)) => {
                let raw = e.raw();
                let code = e.err().code().unwrap_or("error");
                let error = match e.err().message() {
                    Some(m) => format!("{code}: {m}"),
                    None => code.to_owned(),
                };
                LambdaReply {
                    status: raw.status().as_u16(),
                    function_error: None,
                    payload: parse_payload(raw.body().bytes()),
                    error: Some(error),
                }
            }
            Err(e) => {
                // No reply: construction failures and bad endpoints cannot get better on
                // retry; timeouts, refused connections and cut-off replies may.
                let retryable = match &e {
                    SdkError::ConstructionFailure(_) => false,
                    SdkError::DispatchFailure(d) => !d.is_user(),
                    _ => true,
                };
                return Response::failed(
                    TriggerError::new(DisplayErrorContext(&e).to_string(), retryable).caused_by(e),
                    started.elapsed(),
                );
            }
        };
        Response::replied(Reply::new(reply), started.elapsed())
    }
}

impl TriggerTarget for LambdaTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(async move { Ok(self.build_client(ctx.secrets).await?) })
    }

    /// The request of one execution: the template's `awsLambda` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "awsLambda",
            params,
            host,
            events,
            LambdaRequestSpec::problem,
        )?;
        Ok(Invocation::new(LambdaCall { target: self, spec }))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(LambdaStub)
    }
}

/// One invocation to make.
#[derive(Debug)]
struct LambdaCall {
    target: Arc<LambdaTarget>,
    spec: LambdaRequestSpec,
}

impl Call for LambdaCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: awsLambda, functionName, invocationType}`.
    fn to_json(&self) -> Value {
        json!({
            "type": "awsLambda",
            "functionName": self.spec.function_name,
            "invocationType": self.spec.invocation_type(),
        })
    }
}

/// The function's result as JSON when it is JSON, else as text; nothing is `null`.
fn parse_payload(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None | Some([]) => Value::Null,
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

/// What Lambda answered; policies see `#{status, function_error, payload}`.
#[derive(Debug, Clone, Default)]
pub struct LambdaReply {
    /// HTTP status of the Invoke call: 200 (RequestResponse), 202 (Event), 204 (DryRun),
    /// or the status of an API error (429 throttled, 5xx, ...).
    pub status: u16,
    /// `X-Amz-Function-Error` (`Unhandled`, `Handled`): the function ran and failed.
    pub function_error: Option<String>,
    /// What the function returned (its error document on a function error, the API's error
    /// document on an API error), parsed as JSON when it is JSON.
    pub payload: Value,
    /// The API error (`TooManyRequestsException: Rate exceeded`), for logs and reasons.
    pub error: Option<String>,
}

impl ReplyShape for LambdaReply {
    fn to_dynamic(&self, _duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("status".into(), i64::from(self.status).into());
        map.insert(
            "function_error".into(),
            self.function_error
                .clone()
                .map_or(Dynamic::UNIT, Dynamic::from),
        );
        map.insert("payload".into(), to_dynamic(&self.payload));
        map.into()
    }

    /// A function error fails (the function ran; running it again is the policy's call);
    /// otherwise the status decides as for http: `allow` or 2xx succeeds, 5xx and 429
    /// (throttling) retry, other 4xx fail.
    fn default_outcome(&self, allow: Option<&[u16]>) -> Outcome {
        if let Some(kind) = &self.function_error {
            return Outcome::Fail {
                reason: self.function_error_reason(kind),
            };
        }
        status_outcome(
            self.status,
            allow,
            self.error.as_deref().unwrap_or(""),
            None,
        )
    }

    fn summary(&self) -> String {
        match (&self.function_error, &self.error) {
            (Some(kind), _) => self.function_error_reason(kind),
            (None, Some(e)) => format!("status {}: {e}", self.status),
            (None, None) => format!("status {}", self.status),
        }
    }
}

impl LambdaReply {
    fn function_error_reason(&self, kind: &str) -> String {
        match self.payload.get("errorMessage").and_then(Value::as_str) {
            Some(m) => format!("function error ({kind}): {m}"),
            None => format!("function error ({kind})"),
        }
    }
}

/// Stubs of awsLambda triggers: `{status, functionError?, payload?}` or `{error}`.
#[derive(Debug, Clone, Copy)]
pub struct LambdaStub;

impl StubShape for LambdaStub {
    fn name(&self) -> String {
        "awsLambda".into()
    }

    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        if !spec.body.is_null() || !spec.headers.is_empty() {
            let name = if spec.body.is_null() {
                "headers"
            } else {
                "body"
            };
            return Err(
                StubMisuse::new(Some(name), format!("`{name}` is for http triggers"))
                    .hint("awsLambda triggers take status, functionError, payload or error"),
            );
        }
        status_stub(spec, false)
    }

    fn reply(&self, stub: &StubResponse) -> Reply {
        Reply::new(LambdaReply {
            status: stub.status,
            function_error: stub.function_error.clone(),
            payload: stub.body.clone(),
            error: None,
        })
    }

    fn to_json(&self, stub: &StubResponse) -> Value {
        let function_error = stub
            .function_error
            .clone()
            .map(|f| ("functionError", Value::String(f)));
        status_json(stub, function_error, "payload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, function_error: Option<&str>) -> LambdaReply {
        LambdaReply {
            status,
            function_error: function_error.map(str::to_owned),
            payload: serde_json::json!({"errorMessage": "boom"}),
            error: None,
        }
    }

    #[test]
    fn defaults_follow_the_design() {
        assert_eq!(reply(200, None).default_outcome(None), Outcome::Success);
        assert_eq!(reply(202, None).default_outcome(None), Outcome::Success);
        let failed = reply(200, Some("Unhandled")).default_outcome(None);
        assert_eq!(
            failed,
            Outcome::Fail {
                reason: "function error (Unhandled): boom".into()
            }
        );
        assert!(matches!(
            reply(200, Some("Handled")).default_outcome(Some(&[200])),
            Outcome::Fail { .. }
        ));
        assert!(matches!(
            reply(429, None).default_outcome(None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            reply(502, None).default_outcome(None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            reply(404, None).default_outcome(None),
            Outcome::Fail { .. }
        ));
    }

    #[test]
    fn policies_see_status_function_error_and_payload() {
        let map = reply(200, Some("Unhandled"))
            .to_dynamic(Duration::ZERO)
            .cast::<Map>();
        let keys: Vec<_> = map.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["function_error", "payload", "status"]);
        assert_eq!(map["function_error"].clone().cast::<String>(), "Unhandled");
        let ok = reply(200, None).to_dynamic(Duration::ZERO).cast::<Map>();
        assert!(ok["function_error"].is_unit());
    }

    #[test]
    fn specs_are_checked() {
        let spec = |name: &str, t: Option<&str>| LambdaRequestSpec {
            function_name: name.into(),
            invocation_type: t.map(str::to_owned),
        };
        assert!(spec("f", None).problem().is_none());
        assert!(spec("f", Some("Event")).problem().is_none());
        assert!(spec("", None).problem().is_some());
        assert!(spec("f", Some("event")).problem().is_some());
    }
}
