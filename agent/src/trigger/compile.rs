//! Compiling a trigger: the parts every kind shares (template-level parameters, the payload,
//! which spec fields parameters may change) and the dispatch to the kind's own `compile`.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::params::{self, CompiledParameter};
use super::{BuildError, CompiledTrigger, Invocation, PayloadBuilder, TriggerKind};
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{Parameter, ScriptSource, Trigger};
use crate::script::{ScriptHost, ScriptKind};

/// What compiling one kind's section needs besides the compile context.
pub(super) struct KindInput<'a> {
    /// The template's path (`spec.triggers[0].template`).
    pub(super) tfield: &'a str,
    /// Sensor name.
    pub(super) sensor: &'a str,
    /// Trigger name.
    pub(super) trigger: &'a str,
    /// Template-level parameters (their `dest` may reach into the kind's section).
    pub(super) template_params: &'a [Parameter],
    /// The sensor's dependency names, which parameters may read.
    pub(super) dependencies: &'a [String],
}

impl KindInput<'_> {
    /// Whether template-level parameters may change the kind's spec per execution.
    pub(super) fn template_parameterized(&self) -> bool {
        !self.template_params.is_empty()
    }
}

/// Compiles one kind's section (the kind's own `compile`, bound to its manifest section).
type KindCompiler<'a> =
    Box<dyn FnOnce(&mut CompileContext<'_>, &KindInput<'_>) -> Option<KindParts> + 'a>;

/// Boxes a kind's compiler (a closure over its manifest section).
fn compiler<'a>(
    f: impl FnOnce(&mut CompileContext<'_>, &KindInput<'_>) -> Option<KindParts> + 'a,
) -> KindCompiler<'a> {
    Box::new(f)
}

/// What compiling one kind's section yields.
pub(super) struct KindParts {
    /// The kind with its target.
    pub(super) kind: TriggerKind,
    /// Kind-level parameters.
    pub(super) params: Vec<CompiledParameter>,
    /// How the payload is built.
    pub(super) payload: PayloadBuilder,
    /// The invocation when parameters never change it.
    pub(super) fixed: Option<Invocation>,
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
    let template_params = compile_params(
        ctx,
        &format!("{field}.parameters"),
        &trigger.parameters,
        dependencies,
    );
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
    let input = KindInput {
        tfield: &tfield,
        sensor,
        trigger: &t.name,
        template_params: &trigger.parameters,
        dependencies,
    };
    // One entry per kind: its key, and how to compile its section when given.
    let kinds: [(&str, Option<KindCompiler<'_>>); 9] = [
        (
            "http",
            t.http
                .as_ref()
                .map(|h| compiler(move |c, i| super::http::compile(c, h, i))),
        ),
        (
            "awsLambda",
            t.aws_lambda
                .as_ref()
                .map(|l| compiler(move |c, i| super::lambda::compile(c, l, i))),
        ),
        (
            "nats",
            t.nats
                .as_ref()
                .map(|n| compiler(move |c, i| super::nats::compile(c, n, i))),
        ),
        (
            "kafka",
            t.kafka
                .as_ref()
                .map(|k| compiler(move |c, i| super::kafka::compile(c, k, i))),
        ),
        (
            "mqtt",
            t.mqtt
                .as_ref()
                .map(|m| compiler(move |c, i| super::mqtt::compile(c, m, i))),
        ),
        (
            "amqp",
            t.amqp
                .as_ref()
                .map(|a| compiler(move |c, i| super::amqp::compile(c, a, i))),
        ),
        (
            "k8s",
            t.k8s
                .as_ref()
                .map(|k| compiler(move |c, i| super::k8s_compile::compile_k8s(c, k, i))),
        ),
        (
            "argoWorkflow",
            t.argo_workflow
                .as_ref()
                .map(|w| compiler(move |c, i| super::k8s_compile::compile_argo_workflow(c, w, i))),
        ),
        (
            "log",
            t.log
                .as_ref()
                .map(|l| compiler(move |_, i| Some(super::log::compile(l, i)))),
        ),
    ];
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let mut given: Vec<(&str, KindCompiler<'_>)> = kinds
        .into_iter()
        .filter_map(|(name, compile)| compile.map(|c| (name, c)))
        .collect();
    if given.len() > 1 {
        let given: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
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
    let Some((_, compile)) = given.pop() else {
        ctx.error_with_hint(
            None,
            &tfield,
            "no trigger type given",
            format!("add one of: {}", names.join(", ")),
        );
        return None;
    };
    let KindParts {
        kind,
        params,
        payload,
        fixed,
    } = compile(ctx, &input)?;
    Some(CompiledTrigger {
        sensor: sensor.to_owned(),
        name: t.name.clone(),
        kind,
        template_json: template_value,
        template_params: template_params?,
        type_params: params,
        fixed,
        payload,
    })
}

/// A kind's request spec for one execution: its `key` section of the template (after
/// template-level parameters), with kind-level parameters applied, deserialized and checked
/// with `problem`.
pub(super) fn parameterized<S: DeserializeOwned>(
    template: &Value,
    key: &str,
    params: &[CompiledParameter],
    host: &ScriptHost,
    events: &FiredEvents,
    problem: impl Fn(&S) -> Option<String>,
) -> Result<S, BuildError> {
    let mut spec = template.get(key).cloned().unwrap_or(Value::Null);
    params::apply_all(params, host, events, &mut spec)?;
    let spec: S = serde_json::from_value(spec).map_err(|e| BuildError::Spec(e.to_string()))?;
    match problem(&spec) {
        Some(p) => Err(BuildError::Spec(p)),
        None => Ok(spec),
    }
}

/// Compiles a list of parameters at `field` (`...parameters`); every one is checked, so all
/// their errors are reported, and `None` if any failed.
pub(crate) fn compile_params(
    ctx: &mut CompileContext<'_>,
    field: &str,
    list: &[Parameter],
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
pub(super) struct FixedParts<'a> {
    /// The type's key in the template (`awsLambda`).
    pub(super) type_key: &'a str,
    /// Spec fields parameters may set.
    pub(super) allowed: &'a [&'a str],
    /// What is fixed, for the hint.
    pub(super) fixed: &'a str,
}

/// Refuses parameters (type-level, or template-level under `<type_key>.`) that would change a
/// part of the spec fixed at load time (the client and its credentials).
pub(super) fn check_parameter_dests(
    ctx: &mut CompileContext<'_>,
    tfield: &str,
    parts: FixedParts<'_>,
    own: &[Parameter],
    template_params: &[Parameter],
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

/// Compiles the payload: `payload` parameters, a `payloadScript`, or (neither) the events.
pub(super) fn payload_builder(
    ctx: &mut CompileContext<'_>,
    field: &str,
    payload: &[Parameter],
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
