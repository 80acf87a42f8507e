//! The `nats` trigger: publishes the payload (JSON) on a subject, as a core message confirmed
//! by a round trip to the server, or through JetStream, confirmed by the stream's
//! acknowledgement.
//!
//! The connection is made at the first attempt and shared by later ones; a server that cannot
//! be reached is a retryable error, so `retryStrategy` and the dead letter apply as for any
//! other target. Secrets are checked when the plan starts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::Client;
use futures::future::BoxFuture;
use rhai::{Dynamic, Map};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::compile::{
    check_parameter_dests, compile_params, parameterized, payload_builder, FixedParts, KindInput,
    KindParts,
};
use super::stub::{status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::TriggerKind;
use super::{BuildError, Call, CompiledParameter, Invocation, KindError, Outcome};
use super::{PrepareContext, PrepareFailure, Reply, ReplyShape, Response, TriggerError};
use super::{Shape, TriggerTarget};
use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{NatsTrigger, ScriptSource};
use crate::nats_client::{auth_problem, tls_problem, NatsConnection, NatsSecrets};
use crate::script::ScriptHost;

/// The spec fields parameters may change (`dest: subject`).
pub const PARAMETER_FIELDS: [&str; 1] = ["subject"];

/// The request of one publish, after parameters were applied.
#[derive(Debug, Clone, Deserialize)]
pub struct NatsRequestSpec {
    /// Subject to publish on.
    pub subject: String,
}

impl NatsRequestSpec {
    /// Why the spec is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        let s = self.subject.trim();
        if s.is_empty() {
            return Some("subject is empty".into());
        }
        if s.contains(['*', '>']) || s.contains(char::is_whitespace) {
            return Some(format!(
                "subject {s:?} cannot contain wildcards or spaces when publishing"
            ));
        }
        None
    }
}

/// Compiles a `nats` spec: the connection (fixed at load), parameters (which may change only
/// `subject`) and payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    n: &NatsTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let (tfield, dependencies) = (input.tfield, input.dependencies);
    let f = format!("{tfield}.nats");
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "nats",
            allowed: &PARAMETER_FIELDS,
            fixed: "url, auth and tls",
        },
        &n.parameters,
        input.template_params,
    );
    if n.url.value.trim().is_empty() {
        ctx.error_with_hint(
            Some(&n.url.referenced),
            format!("{f}.url"),
            "url is empty",
            "e.g. nats://127.0.0.1:4222",
        );
    }
    if let Some(problem) = n.auth.as_ref().and_then(auth_problem) {
        ctx.error(Some(&n.url.referenced), format!("{f}.auth"), problem);
    }
    if let Some((sub, problem, hint)) = n.tls.as_ref().and_then(tls_problem) {
        ctx.error_with_hint(
            Some(&n.url.referenced),
            format!("{f}.tls.{sub}"),
            problem,
            hint,
        );
    }
    let spec = NatsRequestSpec {
        subject: n.subject.clone(),
    };
    let parameterized = !n.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(Some(&n.url.referenced), format!("{f}.subject"), p);
            false
        }
        Some(_) => false,
        None => true,
    };
    let compiled = compile_params(ctx, &format!("{f}.parameters"), &n.parameters, dependencies);
    let payload = payload_builder(
        ctx,
        &f,
        &n.payload,
        ScriptSource::from_fields(&n.payload_script, &n.payload_script_file),
        dependencies,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let target = Arc::new(NatsTarget::new(
        NatsConnection {
            url: n.url.value.trim().to_owned(),
            auth: n.auth.clone(),
            tls: n.tls.clone(),
            // One try per attempt: `retryStrategy` spaces the attempts.
            backoff: Backoff {
                steps: 1,
                ..Backoff::default()
            },
        },
        n.jet_stream,
        format!("{}/{}", input.sensor, input.trigger),
    ));
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(NatsCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Nats(target),
        params: compiled?,
        payload: payload?,
        fixed,
    })
}

/// A NATS server to publish to, with its connection once made.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    connection: NatsConnection,
    jet_stream: bool,
    name: String,
    secrets: Arc<OnceLock<NatsSecrets>>,
    client: Arc<OnceCell<Client>>,
}

impl NatsTarget {
    /// Reads the credentials (a missing one stops the start); connects at the first attempt.
    async fn ready(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareFailure> {
        let secrets = self
            .connection
            .read_secrets(ctx.secrets)
            .await
            .map_err(|e| KindError::boxed("nats", e))?;
        let _ = self.secrets.set(secrets);
        Ok(())
    }

    /// A target for `connection`; `name` (sensor/trigger) names the client on the server.
    pub fn new(connection: NatsConnection, jet_stream: bool, name: String) -> Self {
        Self {
            connection,
            jet_stream,
            name,
            secrets: Arc::new(OnceLock::new()),
            client: Arc::new(OnceCell::new()),
        }
    }

    /// Publishes one payload.
    pub async fn execute(&self, spec: &NatsRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let failed = |e: TriggerError| Response::failed(e, started.elapsed());
        let client = match self
            .client
            .get_or_try_init(|| async {
                let secrets = self.secrets.get().cloned().unwrap_or_default();
                self.connection.connect(&self.name, &secrets).await
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let retryable = e.is_retryable();
                return failed(TriggerError::new(e.to_string(), retryable).caused_by(e));
            }
        };
        let bytes = bytes::Bytes::from(payload.to_string());
        let subject = spec.subject.trim().to_owned();
        let reply = if self.jet_stream {
            let js = async_nats::jetstream::new(client.clone());
            let acked = match js.publish(subject.clone(), bytes).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => NatsReply {
                    subject,
                    stream: Some(ack.stream),
                    sequence: Some(ack.sequence),
                    duplicate: ack.duplicate,
                },
                Err(e) => {
                    // No stream listens on the subject: a configuration error, not a blip.
                    let retryable = !matches!(e.kind(), PublishErrorKind::StreamNotFound);
                    return failed(
                        TriggerError::new(
                            format!("JetStream publish to {subject}: {e}"),
                            retryable,
                        )
                        .caused_by(e),
                    );
                }
            }
        } else {
            let published = match client.publish(subject.clone(), bytes).await {
                Ok(()) => client.flush().await.map_err(|e| {
                    TriggerError::retryable(format!("NATS publish to {subject}: {e}")).caused_by(e)
                }),
                Err(e) => Err(
                    TriggerError::retryable(format!("NATS publish to {subject}: {e}")).caused_by(e),
                ),
            };
            if let Err(e) = published {
                return failed(e);
            }
            NatsReply {
                subject,
                stream: None,
                sequence: None,
                duplicate: false,
            }
        };
        Response::replied(Reply::new(reply), started.elapsed())
    }
}

impl TriggerTarget for NatsTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(self.ready(ctx))
    }

    /// The request of one execution: the template's `nats` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "nats",
            params,
            host,
            events,
            NatsRequestSpec::problem,
        )?;
        Ok(Invocation::new(NatsCall { target: self, spec }))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(NatsStub)
    }
}

/// One publish to make.
#[derive(Debug)]
struct NatsCall {
    target: Arc<NatsTarget>,
    spec: NatsRequestSpec,
}

impl Call for NatsCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: nats, subject}`.
    fn to_json(&self) -> Value {
        json!({ "type": "nats", "subject": self.spec.subject })
    }
}

/// What NATS confirmed; policies see `#{subject, stream, sequence, duplicate, duration_ms}`
/// (`stream` and `sequence` are `()` for a core publish).
#[derive(Debug, Clone, Default)]
pub struct NatsReply {
    /// The subject published on.
    pub subject: String,
    /// The stream that stored the message (JetStream).
    pub stream: Option<String>,
    /// Its sequence in the stream (JetStream).
    pub sequence: Option<u64>,
    /// Whether JetStream recognised the message as a duplicate of one it has.
    pub duplicate: bool,
}

impl ReplyShape for NatsReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("subject".into(), self.subject.clone().into());
        map.insert(
            "stream".into(),
            self.stream.clone().map_or(Dynamic::UNIT, Dynamic::from),
        );
        map.insert(
            "sequence".into(),
            self.sequence.map_or(Dynamic::UNIT, |s| {
                Dynamic::from(i64::try_from(s).unwrap_or(i64::MAX))
            }),
        );
        map.insert("duplicate".into(), self.duplicate.into());
        map.insert(
            "duration_ms".into(),
            i64::try_from(duration.as_millis())
                .unwrap_or(i64::MAX)
                .into(),
        );
        map.into()
    }

    /// The server (or the stream) confirmed the message: success.
    fn default_outcome(&self, _allow: Option<&[u16]>) -> Outcome {
        Outcome::Success
    }

    fn summary(&self) -> String {
        match (&self.stream, self.sequence) {
            (Some(stream), Some(seq)) => format!("stored in {stream} as {seq}"),
            _ => format!("published on {}", self.subject),
        }
    }
}

/// Stubs of nats triggers: `{}` (the broker confirmed) or `{error}`; where the message
/// went is the live broker's to say.
#[derive(Debug, Clone, Copy)]
pub struct NatsStub;

impl StubShape for NatsStub {
    fn name(&self) -> String {
        "nats".into()
    }

    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        if spec.status.is_some()
            || !spec.body.is_null()
            || !spec.headers.is_empty()
            || spec.function_error.is_some()
            || spec.payload.is_some()
        {
            return Err(StubMisuse::new(
                None,
                "a nats trigger's stub is `{}` (published) or `{error}`",
            )
            .hint("status, body, headers, functionError and payload are for http and awsLambda triggers"));
        }
        status_stub(spec, true)
    }

    fn reply(&self, _stub: &StubResponse) -> Reply {
        Reply::new(NatsReply::default())
    }

    fn to_json(&self, _stub: &StubResponse) -> Value {
        json!({})
    }
}
