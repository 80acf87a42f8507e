//! Load-time checks of the `k8s` and `argoWorkflow` triggers: operation, patch strategy,
//! where the resource comes from (an `inline` string or a `file` is parsed now, so a typo is
//! a load error), and the fields that only make sense together.

use serde_json::Value;

use std::sync::Arc;

use super::compile::{compile_params, KindInput, KindParts};
use super::k8s::{K8sAction, K8sOperation, K8sTarget, PatchStrategy};
use super::{
    parse_resource, CompiledParameter, K8sRequestSpec, ObjectBase, PayloadBuilder, TriggerKind,
    WorkflowOperation,
};
use crate::compile::CompileContext;
use crate::manifest::{ArgoWorkflowTrigger, ArtifactLocation, K8sTrigger, Spanned};

/// Compiles a `k8s` trigger.
pub(super) fn compile_k8s(
    ctx: &mut CompileContext<'_>,
    k: &K8sTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let f = format!("{}.k8s", input.tfield);
    let dependencies = input.dependencies;
    let before = ctx.errors.len();
    let operation = parse_choice(
        ctx,
        &f,
        "operation",
        k.operation.as_ref(),
        K8sOperation::parse,
        &K8sOperation::NAMES,
    );
    let patch = parse_choice(
        ctx,
        &f,
        "patchStrategy",
        k.patch_strategy.as_ref(),
        PatchStrategy::parse,
        &PatchStrategy::NAMES,
    );
    if let (Some(op), Some(p)) = (operation, patch) {
        if p == PatchStrategy::Json && op == K8sOperation::Patch {
            match &k.json_patch {
                Some(ops) if ops.value.is_array() => {}
                Some(ops) => ctx.error(
                    Some(&ops.referenced),
                    format!("{f}.jsonPatch"),
                    "jsonPatch must be a list of RFC 6902 operations",
                ),
                None => ctx.error_with_hint(
                    None,
                    format!("{f}.jsonPatch"),
                    "patchStrategy application/json-patch+json needs jsonPatch",
                    "e.g. jsonPatch: [{op: replace, path: /spec/replicas, value: 3}]; the source resource names the object",
                ),
            }
        } else if let Some(ops) = &k.json_patch {
            ctx.error(
                Some(&ops.referenced),
                format!("{f}.jsonPatch"),
                "jsonPatch is only used by operation patch with patchStrategy application/json-patch+json",
            );
        }
        if k.live_object && op != K8sOperation::Update {
            ctx.error(
                None,
                format!("{f}.liveObject"),
                "liveObject is only valid for operation update",
            );
        }
    }
    let base = source(ctx, &f, &k.source);
    let params = compile_params(ctx, &format!("{f}.parameters"), &k.parameters, dependencies);
    if ctx.errors.len() > before {
        return None;
    }
    let action = K8sAction::Resource {
        operation: operation?,
        patch: patch?,
        live_object: k.live_object,
    };
    let json_patch = k.json_patch.as_ref().map(|p| p.value.clone());
    parts(action, input, base?, params?, json_patch)
}

/// Compiles an `argoWorkflow` trigger.
pub(super) fn compile_argo_workflow(
    ctx: &mut CompileContext<'_>,
    w: &ArgoWorkflowTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let f = format!("{}.argoWorkflow", input.tfield);
    let dependencies = input.dependencies;
    let before = ctx.errors.len();
    let operation = parse_choice(
        ctx,
        &f,
        "operation",
        w.operation.as_ref(),
        WorkflowOperation::parse,
        &WorkflowOperation::NAMES,
    );
    if let Some(args) = &w.args {
        ctx.error_with_hint(
            Some(&args.referenced),
            format!("{f}.args"),
            "args is not supported: triggerd talks to the Kubernetes API, not the argo CLI, so there are no CLI arguments",
            "set the equivalent fields in the Workflow itself, e.g. spec.arguments.parameters",
        );
    }
    let base = source(ctx, &f, &w.source);
    let params = compile_params(ctx, &format!("{f}.parameters"), &w.parameters, dependencies);
    if ctx.errors.len() > before {
        return None;
    }
    parts(K8sAction::Workflow(operation?), input, base?, params?, None)
}

fn parts(
    action: K8sAction,
    input: &KindInput<'_>,
    base: ObjectBase,
    params: Vec<CompiledParameter>,
    json_patch: Option<Value>,
) -> Option<KindParts> {
    let target =
        Arc::new(K8sTarget::new(action, input.sensor, input.trigger).with_base(base.clone()));
    // Parameters (the trigger's or the template's) make each invocation different.
    let fixed = (params.is_empty() && !input.template_parameterized()).then(|| {
        target.call(K8sRequestSpec {
            base,
            params: Vec::new(),
            json_patch,
        })
    });
    // A Kubernetes trigger sends its resource, not a payload.
    Some(KindParts {
        kind: TriggerKind::K8s(target),
        params,
        payload: PayloadBuilder::Events,
        fixed,
    })
}

fn parse_choice<T>(
    ctx: &mut CompileContext<'_>,
    f: &str,
    name: &str,
    given: Option<&Spanned<String>>,
    parse: fn(&str) -> Option<T>,
    names: &[&str],
) -> Option<T> {
    let text = given.map_or("", |g| g.value.as_str());
    let parsed = parse(text);
    if parsed.is_none() {
        ctx.error_with_hint(
            given.map(|g| &g.referenced),
            format!("{f}.{name}"),
            format!("unknown {name} {text:?}"),
            format!("one of: {}", names.join(", ")),
        );
    }
    parsed
}

/// The resource: given (`resource`), parsed now (`inline`, `file`), or read at execution
/// (`configmap`). Exactly one must be set.
fn source(
    ctx: &mut CompileContext<'_>,
    f: &str,
    s: &Spanned<ArtifactLocation>,
) -> Option<ObjectBase> {
    let at = Some(&s.referenced);
    let field = format!("{f}.source");
    let loc = &s.value;
    for (name, given) in [("url", &loc.url), ("s3", &loc.s3), ("git", &loc.git)] {
        if given.is_some() {
            ctx.error_with_hint(
                at,
                format!("{field}.{name}"),
                format!("source.{name} is not supported"),
                "give the resource inline (resource or inline), as a file next to the manifest, or in a ConfigMap",
            );
            return None;
        }
    }
    let given = [
        loc.resource.is_some(),
        loc.inline.is_some(),
        loc.file.is_some(),
        loc.configmap.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        ctx.error_with_hint(
            at,
            field,
            if given == 0 {
                "no resource given"
            } else {
                "more than one resource given"
            },
            "set exactly one of source.resource, source.inline, source.file, source.configmap",
        );
        return None;
    }
    let parsed = if let Some(r) = &loc.resource {
        if r.value.is_object() {
            Ok(r.value.clone())
        } else {
            Err((
                Some(&r.referenced),
                "resource",
                "the resource is not a mapping".to_owned(),
            ))
        }
    } else if let Some(text) = &loc.inline {
        parse_resource(&text.value).map_err(|e| (Some(&text.referenced), "inline", e))
    } else if let Some(file) = &loc.file {
        // Read at each execution, as Argo does (the file may be a volume mounted later);
        // one that is there now must parse. Only inside the manifest's directory or a
        // library directory (`--lib`, which may name the mounted volume).
        let roots = ctx.origin.file_roots(ctx.library_dirs);
        let confined = match roots.future(&file.path.value, crate::files::RESOURCE) {
            Ok(c) => c,
            Err(e) => {
                let hint = e.hint();
                ctx.error_with_hint(
                    Some(&file.path.referenced),
                    format!("{field}.file.path"),
                    e.to_string(),
                    hint,
                );
                return None;
            }
        };
        let path = confined.path();
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Err(e) = parse_resource(&text) {
                ctx.error(
                    Some(&file.path.referenced),
                    format!("{field}.file.path"),
                    format!("{}: {e}", path.display()),
                );
                return None;
            }
        }
        return Some(ObjectBase::File(confined));
    } else if let Some(cm) = &loc.configmap {
        return Some(ObjectBase::ConfigMap {
            name: cm.name.clone(),
            key: cm.key.clone(),
            namespace: cm.namespace.clone(),
        });
    } else {
        return None;
    };
    match parsed {
        Ok(object) => Some(ObjectBase::Object(object)),
        Err((loc, name, message)) => {
            ctx.error(loc, format!("{field}.{name}"), message);
            None
        }
    }
}
