//! Triggers: what a sensor does when its dependencies are met. One file per trigger type,
//! one arm of [`TriggerKind`] each.

mod argo_workflow;
mod http;
mod k8s;
mod k8s_compile;
mod kafka;
mod lambda;
mod log;
mod nats;
pub mod params;
mod response;

use serde_json::Value;

pub use argo_workflow::WorkflowOperation;
pub use http::{HttpReply, HttpRequestSpec, HttpTarget};
pub use k8s::{
    parse_resource, K8sAction, K8sOperation, K8sReply, K8sRequestSpec, K8sTarget, ObjectBase,
    ObjectChanges, PatchStrategy,
};
pub use kafka::{KafkaReply, KafkaRequestSpec, KafkaSettings, KafkaTarget};
pub use lambda::{LambdaReply, LambdaRequestSpec, LambdaSettings, LambdaSetupError, LambdaTarget};
pub use log::LogTarget;
pub use nats::{NatsReply, NatsRequestSpec, NatsTarget};
pub use params::{CompiledParameter, ParamError};
pub use response::{Outcome, Reply, ReplyShape, Response, TriggerError};

use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{ScriptSource, Trigger};
use crate::script::{from_dynamic, CompiledScript, ScriptHost, ScriptKind};

/// The closed set of trigger types.
#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// HTTP request.
    Http(HttpTarget),
    /// AWS Lambda invocation (boxed: its settings and client dwarf the other kinds).
    Lambda(Box<LambdaTarget>),
    /// NATS publish (boxed, like Lambda).
    Nats(Box<NatsTarget>),
    /// Kafka write (boxed, like Lambda).
    Kafka(Box<KafkaTarget>),
    /// A Kubernetes resource or Argo Workflow action (boxed, like Lambda).
    K8s(Box<K8sTarget>),
    /// Log line.
    Log(LogTarget),
}

/// The request of one execution, after parameters were applied.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// An HTTP request.
    Http(HttpRequestSpec),
    /// A Lambda invocation.
    Lambda(LambdaRequestSpec),
    /// A NATS publish.
    Nats(NatsRequestSpec),
    /// A Kafka write.
    Kafka(KafkaRequestSpec),
    /// A Kubernetes action.
    K8s(K8sRequestSpec),
    /// A log line.
    Log,
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
    /// The type and its client.
    pub kind: TriggerKind,
    /// The template as JSON, for template-level parameters.
    template_json: Value,
    /// Template-level parameters (`dest` relative to the template, e.g. `http.url`).
    template_params: Vec<CompiledParameter>,
    /// Type-level parameters (`dest` relative to the type's spec, e.g. `url`).
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
    /// The invocation for these events, applying template- and type-level parameters.
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
        match &self.kind {
            TriggerKind::Http(_) => {
                let mut spec = template.get("http").cloned().unwrap_or(Value::Null);
                params::apply_all(&self.type_params, host, events, &mut spec)?;
                let spec: HttpRequestSpec =
                    serde_json::from_value(spec).map_err(|e| BuildError::Spec(e.to_string()))?;
                if let Some(p) = spec.problem() {
                    return Err(BuildError::Spec(p));
                }
                Ok(Invocation::Http(spec))
            }
            TriggerKind::Lambda(_) => {
                let mut spec = template.get("awsLambda").cloned().unwrap_or(Value::Null);
                params::apply_all(&self.type_params, host, events, &mut spec)?;
                let spec: LambdaRequestSpec =
                    serde_json::from_value(spec).map_err(|e| BuildError::Spec(e.to_string()))?;
                if let Some(p) = spec.problem() {
                    return Err(BuildError::Spec(p));
                }
                Ok(Invocation::Lambda(spec))
            }
            TriggerKind::Nats(_) => {
                let mut spec = template.get("nats").cloned().unwrap_or(Value::Null);
                params::apply_all(&self.type_params, host, events, &mut spec)?;
                let spec: NatsRequestSpec =
                    serde_json::from_value(spec).map_err(|e| BuildError::Spec(e.to_string()))?;
                if let Some(p) = spec.problem() {
                    return Err(BuildError::Spec(p));
                }
                Ok(Invocation::Nats(spec))
            }
            TriggerKind::Kafka(_) => {
                let mut spec = template.get("kafka").cloned().unwrap_or(Value::Null);
                params::apply_all(&self.type_params, host, events, &mut spec)?;
                let spec: KafkaRequestSpec =
                    serde_json::from_value(spec).map_err(|e| BuildError::Spec(e.to_string()))?;
                if let Some(p) = spec.problem() {
                    return Err(BuildError::Spec(p));
                }
                Ok(Invocation::Kafka(spec))
            }
            TriggerKind::K8s(target) => {
                let key = match target.action() {
                    K8sAction::Resource { .. } => "k8s",
                    K8sAction::Workflow(_) => "argoWorkflow",
                };
                let spec = template.get(key).cloned().unwrap_or(Value::Null);
                // An inline resource may have been changed by template-level parameters
                // (`dest: k8s.source.resource.…`); other sources are as compiled.
                let base = match spec.pointer("/source/resource") {
                    Some(resource) => ObjectBase::Object(resource.clone()),
                    None => target.base().clone(),
                };
                Ok(Invocation::K8s(K8sRequestSpec {
                    base,
                    params: params::resolve_all(&self.type_params, host, events)?,
                    json_patch: spec.get("jsonPatch").cloned(),
                }))
            }
            TriggerKind::Log(_) => Ok(Invocation::Log),
        }
    }

    /// Whether the trigger talks to the Kubernetes API.
    pub fn needs_cluster(&self) -> bool {
        matches!(self.kind, TriggerKind::K8s(_))
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

    /// Runs one attempt.
    pub async fn execute(&self, invocation: &Invocation, payload: &Value) -> Response {
        match (&self.kind, invocation) {
            (TriggerKind::Http(target), Invocation::Http(spec)) => {
                target.execute(spec, payload).await
            }
            (TriggerKind::Lambda(target), Invocation::Lambda(spec)) => {
                target.execute(spec, payload).await
            }
            (TriggerKind::Nats(target), Invocation::Nats(spec)) => {
                target.execute(spec, payload).await
            }
            (TriggerKind::Kafka(target), Invocation::Kafka(spec)) => {
                target.execute(spec, payload).await
            }
            (TriggerKind::K8s(target), Invocation::K8s(spec)) => target.execute(spec).await,
            (TriggerKind::Log(target), _) => target.execute(&self.sensor, &self.name, payload),
            (
                TriggerKind::Http(_)
                | TriggerKind::Lambda(_)
                | TriggerKind::Nats(_)
                | TriggerKind::Kafka(_)
                | TriggerKind::K8s(_),
                _,
            ) => Response::failed(
                TriggerError::permanent("internal: invocation does not match trigger type"),
                std::time::Duration::ZERO,
            ),
        }
    }

    /// Readies the trigger's client before the first event: resolves secrets and builds SDK clients. Nothing to do for http, kafka (its producer
    /// is made at the first attempt) and log.
    pub async fn prepare(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareError> {
        let secrets_dir = ctx.secrets_dir;
        let failed = |source| PrepareError {
            sensor: self.sensor.clone(),
            trigger: self.name.clone(),
            source,
        };
        match &self.kind {
            TriggerKind::Lambda(target) => target
                .prepare(secrets_dir)
                .await
                .map_err(|e| failed(PrepareFailure::Lambda(e)))?,
            TriggerKind::Nats(target) => target
                .prepare(secrets_dir)
                .map_err(|e| failed(PrepareFailure::Nats(e)))?,
            TriggerKind::Kafka(target) => target
                .prepare(secrets_dir)
                .map_err(|e| failed(PrepareFailure::Kafka(e)))?,
            TriggerKind::K8s(target) => match ctx.cluster {
                Some(cluster) => target.prepare(cluster),
                None => return Err(failed(PrepareFailure::NoCluster)),
            },
            TriggerKind::Http(_) | TriggerKind::Log(_) => {}
        }
        Ok(())
    }
}

/// What readying a trigger may need.
#[derive(Debug, Clone, Copy)]
pub struct PrepareContext<'a> {
    /// Directory of mounted secrets (`<dir>/<name>/<key>`).
    pub secrets_dir: Option<&'a std::path::Path>,
    /// The Kubernetes API, when the plan has Kubernetes triggers.
    pub cluster: Option<&'a crate::cluster::Cluster>,
}

/// A trigger could not be readied when the plan started (e.g. a missing secret).
#[derive(Debug, thiserror::Error)]
#[error("sensor {sensor}, trigger {trigger}")]
pub struct PrepareError {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
    /// Why.
    pub source: PrepareFailure,
}

/// Why a trigger type could not be readied.
#[derive(Debug, thiserror::Error)]
pub enum PrepareFailure {
    /// The Lambda client could not be built.
    #[error(transparent)]
    Lambda(#[from] LambdaSetupError),
    /// A NATS credential could not be read.
    #[error("nats {0}")]
    Nats(#[from] crate::nats_client::NatsConnectError),
    /// A Kafka TLS file or SASL credential could not be read.
    #[error("kafka {0}")]
    Kafka(#[from] crate::secret::SecretError),
    /// A Kubernetes trigger without a connection to the API server (internal).
    #[error("no Kubernetes API connection was made for this plan")]
    NoCluster,
}

/// Compiles what one trigger of a sensor does (its template and parameters; the delivery
/// compiles policy, retries, rate limit and dead letter); `field` is its path (e.g.
/// `spec.triggers[0]`).
pub fn compile_trigger(
    ctx: &mut CompileContext<'_>,
    sensor: &str,
    field: &str,
    trigger: &Trigger,
    template_json: &Value,
    dependencies: &[String],
) -> Option<CompiledTrigger> {
    let t = &trigger.template;
    let tfield = format!("{field}.template");
    let params = |ctx: &mut CompileContext<'_>, f: &str, list: &[crate::manifest::Parameter]| {
        compile_params(ctx, f, list, dependencies)
    };
    let template_params = params(ctx, &format!("{field}.parameters"), &trigger.parameters);
    let mut template_value = template_json
        .get("template")
        .cloned()
        .unwrap_or(Value::Null);
    // Older Argo manifests call the URL `serverURL`; parameters see it as `url`.
    if let Some(http) = template_value
        .get_mut("http")
        .and_then(Value::as_object_mut)
    {
        if let Some(url) = http.remove("serverURL") {
            http.entry("url").or_insert(url);
        }
    }
    let given: Vec<&str> = [
        t.http.as_ref().map(|_| "http"),
        t.aws_lambda.as_ref().map(|_| "awsLambda"),
        t.nats.as_ref().map(|_| "nats"),
        t.kafka.as_ref().map(|_| "kafka"),
        t.k8s.as_ref().map(|_| "k8s"),
        t.argo_workflow.as_ref().map(|_| "argoWorkflow"),
        t.log.as_ref().map(|_| "log"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        ctx.error(
            None,
            tfield,
            format!(
                "more than one trigger type given ({}); use one per trigger",
                given.join(", ")
            ),
        );
        return None;
    }
    let (kind, type_params, payload, fixed) = if let Some(h) = &t.http {
        let f = format!("{tfield}.http");
        let type_params = params(ctx, &format!("{f}.parameters"), &h.parameters);
        let payload = payload_builder(
            ctx,
            &f,
            &h.payload,
            ScriptSource::from_fields(&h.payload_script, &h.payload_script_file),
            dependencies,
        );
        let target = match HttpTarget::new(h.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)) {
            Ok(t) => t,
            Err(e) => {
                ctx.error(None, f, format!("cannot build HTTP client: {e}"));
                return None;
            }
        };
        let spec = HttpRequestSpec {
            url: h.url.clone(),
            method: h.method.clone(),
            headers: h.headers.clone(),
            timeout: h.timeout,
        };
        let static_ok = match spec.problem() {
            Some(p) if h.parameters.is_empty() && trigger.parameters.is_empty() => {
                ctx.error(None, format!("{f}.url"), p);
                return None;
            }
            Some(_) => false,
            None => true,
        };
        let fixed = (static_ok && h.parameters.is_empty() && trigger.parameters.is_empty())
            .then_some(Invocation::Http(spec));
        (TriggerKind::Http(target), type_params, payload, fixed)
    } else if let Some(l) = &t.aws_lambda {
        let (kind, type_params, payload, fixed) =
            compile_lambda(ctx, &tfield, l, &trigger.parameters, dependencies)?;
        (kind, Some(type_params), payload, fixed)
    } else if let Some(n) = &t.nats {
        let (kind, type_params, payload, fixed) = compile_nats(
            ctx,
            &tfield,
            n,
            &trigger.parameters,
            dependencies,
            format!("{sensor}/{}", t.name),
        )?;
        (kind, Some(type_params), payload, fixed)
    } else if let Some(k) = &t.kafka {
        let (kind, type_params, payload, fixed) = compile_kafka(
            ctx,
            &tfield,
            k,
            &trigger.parameters,
            dependencies,
            format!("triggerd/{sensor}/{}", t.name),
        )?;
        (kind, Some(type_params), payload, fixed)
    } else if let Some(k) = &t.k8s {
        let (kind, type_params, payload, fixed) = k8s_compile::compile_k8s(
            ctx,
            &tfield,
            k,
            sensor,
            &t.name,
            !trigger.parameters.is_empty(),
            dependencies,
        )?;
        (kind, Some(type_params), payload, fixed)
    } else if let Some(w) = &t.argo_workflow {
        let (kind, type_params, payload, fixed) = k8s_compile::compile_argo_workflow(
            ctx,
            &tfield,
            w,
            sensor,
            &t.name,
            !trigger.parameters.is_empty(),
            dependencies,
        )?;
        (kind, Some(type_params), payload, fixed)
    } else if t.log.is_some() {
        (
            TriggerKind::Log(LogTarget),
            Some(Vec::new()),
            Some(PayloadBuilder::Events),
            Some(Invocation::Log),
        )
    } else {
        ctx.error_with_hint(
            None,
            tfield,
            "no trigger type given",
            "add one of: http, awsLambda, nats, kafka, k8s, argoWorkflow, log",
        );
        return None;
    };
    Some(CompiledTrigger {
        sensor: sensor.to_owned(),
        name: t.name.clone(),
        kind,
        template_json: template_value,
        template_params: template_params?,
        type_params: type_params?,
        fixed,
        payload: payload?,
    })
}

/// What compiling a trigger type yields: its kind, type-level parameters, payload builder
/// (`None` after an error) and the invocation when parameters never change it.
pub(crate) type TypeParts = (
    TriggerKind,
    Vec<CompiledParameter>,
    Option<PayloadBuilder>,
    Option<Invocation>,
);

/// Compiles an `awsLambda` spec: its settings (fixed at load), parameters (which may change
/// only `functionName` and `invocationType`) and payload.
fn compile_lambda(
    ctx: &mut CompileContext<'_>,
    tfield: &str,
    l: &crate::manifest::AwsLambdaTrigger,
    template_params: &[crate::manifest::Parameter],
    dependencies: &[String],
) -> Option<TypeParts> {
    let f = format!("{tfield}.awsLambda");
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "awsLambda",
            allowed: &lambda::PARAMETER_FIELDS,
            fixed: "region, credentials and endpoint",
        },
        &l.parameters,
        template_params,
    );
    if l.region.value.trim().is_empty() {
        ctx.error(
            Some(&l.region.referenced),
            format!("{f}.region"),
            "region is empty",
        );
    }
    if let Some(e) = &l.endpoint {
        if let Err(err) = reqwest::Url::parse(&e.value) {
            ctx.error_with_hint(
                Some(&e.referenced),
                format!("{f}.endpoint"),
                format!("invalid endpoint {:?}: {err}", e.value),
                "an absolute URL such as http://127.0.0.1:5000",
            );
        }
    }
    let keys = match (&l.access_key, &l.secret_key) {
        (Some(a), Some(s)) => Some((a.value.clone(), s.value.clone())),
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => {
            let missing = if l.access_key.is_some() {
                "secretKey"
            } else {
                "accessKey"
            };
            ctx.error_with_hint(
                Some(&a.referenced),
                format!("{f}.{missing}"),
                format!("{missing} is missing"),
                "give both accessKey and secretKey, or neither (the default AWS credential chain)",
            );
            None
        }
    };
    let spec = LambdaRequestSpec {
        function_name: l.function_name.clone(),
        invocation_type: l.invocation_type.as_ref().map(|t| t.value.clone()),
    };
    // A literal invocation type must be valid even when a parameter may replace it.
    if let Some(t) = &l.invocation_type {
        if !lambda::INVOCATION_TYPES.contains(&t.value.as_str()) {
            ctx.error_with_hint(
                Some(&t.referenced),
                format!("{f}.invocationType"),
                format!("invalid invocationType {:?}", t.value),
                format!("one of: {}", lambda::INVOCATION_TYPES.join(", ")),
            );
        }
    }
    let parameterized = !l.parameters.is_empty() || !template_params.is_empty();
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
    let target = LambdaTarget::new(LambdaSettings {
        region: l.region.value.clone(),
        endpoint: l.endpoint.as_ref().map(|e| e.value.clone()),
        keys,
        role_arn: l.role_arn.clone(),
    });
    let fixed = (static_ok && !parameterized).then_some(Invocation::Lambda(spec));
    Some((
        TriggerKind::Lambda(Box::new(target)),
        compiled?,
        payload,
        fixed,
    ))
}

/// Compiles a list of parameters at `field` (`...parameters`); every one is checked, so all
/// their errors are reported, and `None` if any failed.
pub(crate) fn compile_params(
    ctx: &mut CompileContext<'_>,
    field: &str,
    list: &[crate::manifest::Parameter],
    dependencies: &[String],
) -> Option<Vec<CompiledParameter>> {
    let compiled: Vec<_> = list
        .iter()
        .enumerate()
        .map(|(i, p)| CompiledParameter::compile(ctx, &format!("{field}[{i}]"), p, dependencies))
        .collect();
    compiled.into_iter().collect()
}

/// What parameters of a trigger type may change, and what is fixed at load.
struct FixedParts<'a> {
    /// The type's key in the template (`awsLambda`).
    type_key: &'a str,
    /// Spec fields parameters may set.
    allowed: &'a [&'a str],
    /// What is fixed, for the hint.
    fixed: &'a str,
}

/// Refuses parameters (type-level, or template-level under `<type_key>.`) that would change a
/// part of the spec fixed at load time (the client and its credentials).
fn check_parameter_dests(
    ctx: &mut CompileContext<'_>,
    tfield: &str,
    parts: FixedParts<'_>,
    own: &[crate::manifest::Parameter],
    template_params: &[crate::manifest::Parameter],
) {
    let FixedParts {
        type_key,
        allowed,
        fixed,
    } = parts;
    let list = allowed.join(", ");
    let changes_fixed = |dest: &str| {
        !allowed
            .iter()
            .any(|p| dest == *p || dest.starts_with(&format!("{p}.")))
    };
    for (i, p) in own.iter().enumerate() {
        if changes_fixed(&p.dest) {
            ctx.error_with_hint(
                None,
                format!("{tfield}.{type_key}.parameters[{i}].dest"),
                format!(
                    "parameters cannot change {:?} of a {type_key} trigger",
                    p.dest
                ),
                format!("parameters may set: {list}; {fixed} are fixed at load"),
            );
        }
    }
    let prefix = format!("{type_key}.");
    for (i, p) in template_params.iter().enumerate() {
        if let Some(dest) = p.dest.strip_prefix(&prefix) {
            if changes_fixed(dest) {
                ctx.error_with_hint(
                    None,
                    format!(
                        "{}.parameters[{i}].dest",
                        tfield.trim_end_matches(".template")
                    ),
                    format!(
                        "parameters cannot change {:?} of a {type_key} trigger",
                        p.dest
                    ),
                    format!("parameters may set {type_key}.{{{list}}}; {fixed} are fixed at load"),
                );
            }
        }
    }
}

/// Compiles a `nats` spec: the connection (fixed at load), parameters (which may change only
/// `subject`) and payload.
fn compile_nats(
    ctx: &mut CompileContext<'_>,
    tfield: &str,
    n: &crate::manifest::NatsTrigger,
    template_params: &[crate::manifest::Parameter],
    dependencies: &[String],
    client_name: String,
) -> Option<TypeParts> {
    let f = format!("{tfield}.nats");
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "nats",
            allowed: &nats::PARAMETER_FIELDS,
            fixed: "url, auth and tls",
        },
        &n.parameters,
        template_params,
    );
    if n.url.value.trim().is_empty() {
        ctx.error_with_hint(
            Some(&n.url.referenced),
            format!("{f}.url"),
            "url is empty",
            "e.g. nats://127.0.0.1:4222",
        );
    }
    if let Some(problem) = n.auth.as_ref().and_then(crate::nats_client::auth_problem) {
        ctx.error(Some(&n.url.referenced), format!("{f}.auth"), problem);
    }
    if let Some((sub, problem, hint)) = n.tls.as_ref().and_then(crate::nats_client::tls_problem) {
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
    let parameterized = !n.parameters.is_empty() || !template_params.is_empty();
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
    let target = NatsTarget::new(
        crate::nats_client::NatsConnection {
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
        client_name,
    );
    let fixed = (static_ok && !parameterized).then_some(Invocation::Nats(spec));
    Some((
        TriggerKind::Nats(Box::new(target)),
        compiled?,
        payload,
        fixed,
    ))
}

/// Compiles a `kafka` spec: the producer settings (fixed at load), parameters (which may
/// change only `topic` and `partitioningKey`) and payload.
fn compile_kafka(
    ctx: &mut CompileContext<'_>,
    tfield: &str,
    k: &crate::manifest::KafkaTrigger,
    template_params: &[crate::manifest::Parameter],
    dependencies: &[String],
    client_id: String,
) -> Option<TypeParts> {
    let f = format!("{tfield}.kafka");
    let at = Some(&k.url.referenced);
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "kafka",
            allowed: &kafka::PARAMETER_FIELDS,
            fixed: "url, headers, requiredAcks, compress, flushFrequency and timeout",
        },
        &k.parameters,
        template_params,
    );
    if k.url.value.trim().is_empty() {
        ctx.error_with_hint(
            at,
            format!("{f}.url"),
            "url is empty",
            "bootstrap servers, e.g. 127.0.0.1:9092",
        );
    }
    let unsupported = [
        (
            "schemaRegistry",
            k.schema_registry.as_ref(),
            "Avro/schema registry encoding is not supported; the payload is written as JSON",
        ),
        (
            "secureHeaders",
            k.secure_headers.as_ref(),
            "not supported yet; use `headers`",
        ),
    ];
    for (name, value, hint) in unsupported {
        if let Some(v) = value {
            ctx.error_with_hint(
                Some(&v.referenced),
                format!("{f}.{name}"),
                format!("{name} is not supported"),
                hint,
            );
        }
    }
    let security =
        crate::kafka_client::KafkaSecurity::compile(ctx, &f, k.tls.as_ref(), k.sasl.as_ref());
    let required_acks = match &k.required_acks {
        None => -1,
        Some(a) if [-1, 0, 1].contains(&a.value) => a.value,
        Some(a) => {
            ctx.error_with_hint(
                Some(&a.referenced),
                format!("{f}.requiredAcks"),
                format!("invalid requiredAcks {}", a.value),
                "-1 (all in-sync replicas, the default), 1 (the leader) or 0 (none)",
            );
            -1
        }
    };
    let linger_ms = match &k.flush_frequency {
        Some(ms) if !(0..=900_000).contains(&ms.value) => {
            ctx.error_with_hint(
                Some(&ms.referenced),
                format!("{f}.flushFrequency"),
                format!("invalid flushFrequency {}", ms.value),
                "milliseconds between 0 and 900000",
            );
            None
        }
        other => other.as_ref().map(|ms| ms.value),
    };
    let timeout = match &k.timeout {
        None => kafka::DEFAULT_TIMEOUT,
        Some(t) => match crate::backoff::parse_duration(&t.value) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                ctx.error_with_hint(
                    Some(&t.referenced),
                    format!("{f}.timeout"),
                    format!("invalid timeout {:?}", t.value),
                    "a Go duration such as 10s or 500ms",
                );
                kafka::DEFAULT_TIMEOUT
            }
        },
    };
    let spec = KafkaRequestSpec {
        topic: k.topic.clone(),
        partitioning_key: k.partitioning_key.clone().map(Value::String),
    };
    let parameterized = !k.parameters.is_empty() || !template_params.is_empty();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(at, format!("{f}.topic"), p);
            false
        }
        Some(_) => false,
        None => true,
    };
    let compiled = compile_params(ctx, &format!("{f}.parameters"), &k.parameters, dependencies);
    let payload = payload_builder(
        ctx,
        &f,
        &k.payload,
        ScriptSource::from_fields(&k.payload_script, &k.payload_script_file),
        dependencies,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let target = KafkaTarget::new(
        KafkaSettings {
            url: k.url.value.trim().to_owned(),
            required_acks,
            compress: k.compress,
            linger_ms,
            timeout,
            headers: k.headers.clone(),
            security,
        },
        client_id,
    );
    let fixed = (static_ok && !parameterized).then_some(Invocation::Kafka(spec));
    Some((
        TriggerKind::Kafka(Box::new(target)),
        compiled?,
        payload,
        fixed,
    ))
}

fn payload_builder(
    ctx: &mut CompileContext<'_>,
    field: &str,
    payload: &[crate::manifest::Parameter],
    script: Option<ScriptSource>,
    dependencies: &[String],
) -> Option<PayloadBuilder> {
    match (payload.is_empty(), script) {
        (true, None) => Some(PayloadBuilder::Events),
        (false, None) => {
            let compiled: Option<Vec<_>> = payload
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    CompiledParameter::compile(
                        ctx,
                        &format!("{field}.payload[{i}]"),
                        p,
                        dependencies,
                    )
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
            compiled.map(PayloadBuilder::Params)
        }
        (true, Some(s)) => ctx
            .script(&format!("{field}.payloadScript"), ScriptKind::Payload, &s)
            .map(PayloadBuilder::Script),
        (false, Some(_)) => {
            ctx.error(
                None,
                format!("{field}.payloadScript"),
                "set either payload or payloadScript, not both",
            );
            None
        }
    }
}
