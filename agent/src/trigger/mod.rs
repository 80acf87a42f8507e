//! Triggers: what a sensor does when its dependencies are met. One file per trigger type,
//! one arm of [`TriggerKind`] each.

mod http;
mod log;
pub mod params;
mod rate_limit;
mod response;

use std::sync::Arc;

use serde_json::Value;

pub use http::{HttpRequestSpec, HttpTarget};
pub use log::LogTarget;
pub use params::{CompiledParameter, ParamError};
pub use rate_limit::Limiter;
pub use response::{Response, TriggerError};

use crate::delivery::Backoff;
use crate::manifest::{ScriptSource, Trigger};
use crate::plan::CompileContext;
use crate::policy::CompiledPolicy;
use crate::script::{from_dynamic, CompiledScript, ScriptHost, ScriptKind};
use crate::sensor::FiredEvents;

/// The closed set of trigger types.
#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// HTTP request.
    Http(HttpTarget),
    /// Log line.
    Log(LogTarget),
}

/// The request of one execution, after parameters were applied.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// An HTTP request.
    Http(HttpRequestSpec),
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
    /// How responses are judged.
    pub policy: CompiledPolicy,
    /// Attempts and delays.
    pub backoff: Backoff,
    /// Spacing of executions (attempts included), when `rateLimit` is set.
    pub rate_limit: Option<Limiter>,
    /// Run with the failed events after the last failed attempt.
    pub dlq: Option<Arc<CompiledTrigger>>,
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
            TriggerKind::Log(_) => Ok(Invocation::Log),
        }
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
                let value = host.eval(script, &[("events", events.script_view.clone())])?;
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
            (TriggerKind::Log(target), _) => target.execute(&self.sensor, &self.name, payload),
            (TriggerKind::Http(_), Invocation::Log) => Response::failed(
                TriggerError {
                    message: "internal: invocation does not match trigger type".into(),
                    retryable: false,
                },
                std::time::Duration::ZERO,
            ),
        }
    }
}

/// Compiles one trigger of a sensor; `field` is its path (e.g. `spec.triggers[0]`).
pub fn compile_trigger(
    ctx: &mut CompileContext<'_>,
    sensor: &str,
    field: &str,
    trigger: &Trigger,
    template_json: Value,
    dependencies: &[String],
) -> Option<CompiledTrigger> {
    let t = &trigger.template;
    let tfield = format!("{field}.template");
    let params = |ctx: &mut CompileContext<'_>,
                  f: &str,
                  list: &[crate::manifest::Parameter]|
     -> Option<Vec<CompiledParameter>> {
        let compiled: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, p)| CompiledParameter::compile(ctx, &format!("{f}[{i}]"), p, dependencies))
            .collect();
        compiled.into_iter().collect()
    };
    let template_params = params(ctx, &format!("{field}.parameters"), &trigger.parameters);
    let policy = match (&trigger.policy, &t.policy) {
        (Some(_), Some(_)) => {
            ctx.error(
                None,
                format!("{tfield}.policy"),
                "policy is set both on the trigger and in its template; keep one",
            );
            None
        }
        (Some(p), None) => CompiledPolicy::compile(ctx, &format!("{field}.policy"), Some(p)),
        (None, p) => CompiledPolicy::compile(ctx, &format!("{tfield}.policy"), p.as_ref()),
    };
    let backoff = Backoff::compile(
        ctx,
        &format!("{field}.retryStrategy"),
        trigger.retry_strategy.as_ref(),
    );
    let rate_limit = match &trigger.rate_limit {
        Some(r) => Limiter::compile(ctx, &format!("{field}.rateLimit"), r).map(Some),
        None => Some(None),
    };
    let dlq = trigger.dlq_trigger.as_ref().and_then(|d| {
        let json = template_json
            .get("dlqTrigger")
            .cloned()
            .unwrap_or(Value::Null);
        compile_trigger(
            ctx,
            sensor,
            &format!("{field}.dlqTrigger"),
            d,
            json,
            dependencies,
        )
        .map(Arc::new)
    });
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
    let (kind, type_params, payload, fixed) = match (&t.http, &t.log) {
        (Some(h), None) => {
            let f = format!("{tfield}.http");
            let type_params = params(ctx, &format!("{f}.parameters"), &h.parameters);
            let payload = payload_builder(
                ctx,
                &f,
                &h.payload,
                ScriptSource::from_fields(&h.payload_script, &h.payload_script_file),
                dependencies,
            );
            let target =
                match HttpTarget::new(h.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)) {
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
        }
        (None, Some(_)) => (
            TriggerKind::Log(LogTarget),
            Some(Vec::new()),
            Some(PayloadBuilder::Events),
            Some(Invocation::Log),
        ),
        (None, None) => {
            ctx.error_with_hint(
                None,
                tfield,
                "no trigger type given",
                "add one of: http, log",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            ctx.error(
                None,
                tfield,
                "more than one trigger type given; use one per trigger",
            );
            return None;
        }
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
        policy: policy?,
        backoff: backoff?,
        rate_limit: rate_limit?,
        dlq,
    })
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
