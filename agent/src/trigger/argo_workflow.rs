//! Argo Workflow operations carried out through the Kubernetes API, with no `argo` CLI or
//! Argo Server. Each operation becomes the write the Workflow controller acts on:
//!
//! | operation     | API call                                                                    |
//! |---------------|-----------------------------------------------------------------------------|
//! | `submit`      | create the Workflow of the source                                           |
//! | `submit-from` | read the WorkflowTemplate or CronWorkflow named by the source, create a     |
//! |               | Workflow from it: `spec.workflowTemplateRef` (plus the source's             |
//! |               | `spec.arguments`) for a template, a copy of `spec.workflowSpec` for a cron  |
//! |               | workflow; labelled `workflows.argoproj.io/workflow-template` or             |
//! |               | `…/cron-workflow` as `argo submit --from` does                              |
//! | `resubmit`    | read the Workflow, create a new one with its spec (`generateName: <name>-`, |
//! |               | label `workflows.argoproj.io/resubmitted-from-workflow`)                    |
//! | `suspend`     | merge patch `spec.suspend: true`                                            |
//! | `resume`      | merge patch `spec.suspend: null` (suspend *template* nodes still need the   |
//! |               | Argo Server or CLI, which edit node status)                                 |
//! | `retry`       | a Failed or Error Workflow: drop its Failed/Error nodes from `status.nodes`, |
//! |               | set `status.phase: Running`, clear `finishedAt` and the `completed` label; |
//! |               | the controller re-runs the dropped steps (pods of failed steps are left to  |
//! |               | the controller's garbage collection)                                        |
//! | `terminate`   | merge patch `spec.shutdown: Terminate`                                      |
//! | `stop`        | merge patch `spec.shutdown: Stop` (exit handlers still run)                 |

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::k8s::{
    add_labels, set_field, to_dynamic, to_value, ActionContext, ActionError, K8sReply, Target,
};
use super::TriggerError;

const WORKFLOW_TEMPLATE_LABEL: &str = "workflows.argoproj.io/workflow-template";
const CRON_WORKFLOW_LABEL: &str = "workflows.argoproj.io/cron-workflow";
const RESUBMITTED_LABEL: &str = "workflows.argoproj.io/resubmitted-from-workflow";
const COMPLETED_LABEL: &str = "workflows.argoproj.io/completed";
const PHASE_LABEL: &str = "workflows.argoproj.io/phase";

/// An `argoWorkflow` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowOperation {
    /// Create the Workflow.
    Submit,
    /// Create a Workflow from a WorkflowTemplate or CronWorkflow.
    SubmitFrom,
    /// Create a copy of an existing Workflow.
    Resubmit,
    /// Pause it.
    Suspend,
    /// Unpause it.
    Resume,
    /// Re-run its failed steps.
    Retry,
    /// Stop it now, without exit handlers.
    Terminate,
    /// Stop it, running exit handlers.
    Stop,
}

impl WorkflowOperation {
    /// The manifest's names, for errors.
    pub const NAMES: [&'static str; 8] = [
        "submit",
        "submit-from",
        "resubmit",
        "suspend",
        "resume",
        "retry",
        "terminate",
        "stop",
    ];

    /// Parses `operation` (default `submit`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "" | "submit" => Self::Submit,
            "submit-from" => Self::SubmitFrom,
            "resubmit" => Self::Resubmit,
            "suspend" => Self::Suspend,
            "resume" => Self::Resume,
            "retry" => Self::Retry,
            "terminate" => Self::Terminate,
            "stop" => Self::Stop,
            _ => return None,
        })
    }

    /// The operation's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::SubmitFrom => "submit-from",
            Self::Resubmit => "resubmit",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Retry => "retry",
            Self::Terminate => "terminate",
            Self::Stop => "stop",
        }
    }
}

/// Carries out `op` on the source `object` (after parameters); `labels` go on created
/// Workflows.
pub(super) async fn execute(
    op: WorkflowOperation,
    ctx: &ActionContext<'_>,
    target: &Target,
    mut object: Value,
) -> Result<K8sReply, ActionError> {
    let labels = &ctx.labels;
    let name = op.name();
    match op {
        WorkflowOperation::Submit => {
            expect_kind(&object, &["Workflow"], op)?;
            add_labels(&mut object, labels)?;
            target.create(name, &object).await
        }
        WorkflowOperation::SubmitFrom => {
            let kind = expect_kind(&object, &["WorkflowTemplate", "CronWorkflow"], op)?;
            let source_name = target.name(&object)?;
            let mut workflow = match kind.as_str() {
                "WorkflowTemplate" => {
                    // Reading it first turns a missing template into a clear 404.
                    target.get(&source_name).await?;
                    from_template(&source_name, object.pointer("/spec/arguments"))
                }
                _ => from_cron(&target.get(&source_name).await?)?,
            };
            set_field(
                &mut workflow,
                "metadata.namespace",
                Value::String(target.namespace.clone()),
            )?;
            add_labels(&mut workflow, labels)?;
            let workflows = Target::of(ctx, &workflow).await?;
            workflows.create(name, &workflow).await
        }
        WorkflowOperation::Resubmit => {
            expect_kind(&object, &["Workflow"], op)?;
            let live = target.get(&target.name(&object)?).await?;
            let mut copy = resubmitted(&live);
            add_labels(&mut copy, labels)?;
            target.create(name, &copy).await
        }
        WorkflowOperation::Suspend => {
            patch_spec(target, &object, op, json!({"suspend": true})).await
        }
        WorkflowOperation::Resume => {
            patch_spec(target, &object, op, json!({"suspend": null})).await
        }
        WorkflowOperation::Terminate => {
            patch_spec(target, &object, op, json!({"shutdown": "Terminate"})).await
        }
        WorkflowOperation::Stop => {
            patch_spec(target, &object, op, json!({"shutdown": "Stop"})).await
        }
        WorkflowOperation::Retry => {
            expect_kind(&object, &["Workflow"], op)?;
            let wf_name = target.name(&object)?;
            let live = target.get(&wf_name).await?;
            let retried = retried(&live)?;
            let pp = PostParams::default();
            let updated = if target.kind.status_subresource {
                // The main resource ignores status and the status subresource ignores the
                // rest: write the label change, then the status.
                let relabelled = target
                    .api
                    .replace(&wf_name, &pp, &to_dynamic(&retried)?)
                    .await?;
                let mut with_status = to_value(relabelled)?;
                with_status["status"] = retried["status"].clone();
                target
                    .api
                    .replace_status(&wf_name, &pp, &to_dynamic(&with_status)?)
                    .await?
            } else {
                target
                    .api
                    .replace(&wf_name, &pp, &to_dynamic(&retried)?)
                    .await?
            };
            Ok(target.reply(name, 200, to_value(updated)?))
        }
    }
}

fn expect_kind(
    object: &Value,
    kinds: &[&str],
    op: WorkflowOperation,
) -> Result<String, ActionError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kinds.contains(&kind) {
        return Ok(kind.to_owned());
    }
    Err(TriggerError::permanent(format!(
        "argoWorkflow {} needs a {} resource, not {kind:?}",
        op.name(),
        kinds.join(" or ")
    ))
    .into())
}

async fn patch_spec(
    target: &Target,
    object: &Value,
    op: WorkflowOperation,
    spec: Value,
) -> Result<K8sReply, ActionError> {
    expect_kind(object, &["Workflow"], op)?;
    let name = target.name(object)?;
    let patched = target
        .api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
    Ok(target.reply(op.name(), 200, to_value(patched)?))
}

/// A Workflow running WorkflowTemplate `name`, with the source's arguments.
fn from_template(name: &str, arguments: Option<&Value>) -> Value {
    let mut spec = json!({"workflowTemplateRef": {"name": name}});
    if let Some(args) = arguments {
        spec["arguments"] = args.clone();
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": {WORKFLOW_TEMPLATE_LABEL: name},
        },
        "spec": spec,
    })
}

/// A Workflow from CronWorkflow `cron`'s `spec.workflowSpec` and `workflowMetadata`.
fn from_cron(cron: &Value) -> Result<Value, ActionError> {
    let name = cron
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("cron");
    let spec = cron.pointer("/spec/workflowSpec").cloned().ok_or_else(|| {
        TriggerError::permanent(format!("CronWorkflow {name} has no spec.workflowSpec"))
    })?;
    let meta = cron.pointer("/spec/workflowMetadata");
    let mut workflow = json!({
        "apiVersion": cron.get("apiVersion").cloned().unwrap_or(json!("argoproj.io/v1alpha1")),
        "kind": "Workflow",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": meta.and_then(|m| m.get("labels")).cloned().unwrap_or(json!({})),
            "annotations": meta.and_then(|m| m.get("annotations")).cloned().unwrap_or(json!({})),
        },
        "spec": spec,
    });
    set_field(
        &mut workflow,
        &format!(
            "metadata.labels.{}",
            CRON_WORKFLOW_LABEL.replace('.', "\\.")
        ),
        Value::String(name.to_owned()),
    )?;
    Ok(workflow)
}

/// A new Workflow with `live`'s spec and labels (less the controller's), as `argo resubmit`.
fn resubmitted(live: &Value) -> Value {
    let name = live
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("workflow");
    let mut labels = live
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(map) = labels.as_object_mut() {
        map.remove(COMPLETED_LABEL);
        map.remove(PHASE_LABEL);
        map.insert(RESUBMITTED_LABEL.into(), Value::String(name.to_owned()));
    }
    json!({
        "apiVersion": live.get("apiVersion").cloned().unwrap_or(json!("argoproj.io/v1alpha1")),
        "kind": "Workflow",
        "metadata": {
            "generateName": format!("{name}-"),
            "namespace": live.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "labels": labels,
        },
        "spec": live.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// `live` prepared for a retry: only Failed or Error workflows; their failed nodes dropped.
fn retried(live: &Value) -> Result<Value, ActionError> {
    let phase = live
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(phase, "Failed" | "Error") {
        let name = live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Err(TriggerError::permanent(format!(
            "workflow {name} is {}; only Failed or Error workflows can be retried",
            if phase.is_empty() {
                "not finished"
            } else {
                phase
            }
        ))
        .into());
    }
    let mut wf = live.clone();
    if let Some(labels) = wf
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.insert(COMPLETED_LABEL.into(), json!("false"));
        labels.remove(PHASE_LABEL);
    }
    if let Some(status) = wf.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("phase".into(), json!("Running"));
        status.remove("finishedAt");
        status.remove("message");
        if let Some(nodes) = status.get_mut("nodes").and_then(Value::as_object_mut) {
            nodes.retain(|_, node| {
                !matches!(
                    node.get("phase").and_then(Value::as_str),
                    Some("Failed" | "Error")
                )
            });
        }
    }
    Ok(wf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for name in WorkflowOperation::NAMES {
            assert_eq!(WorkflowOperation::parse(name).map(|o| o.name()), Some(name));
        }
        assert_eq!(
            WorkflowOperation::parse(""),
            Some(WorkflowOperation::Submit)
        );
        assert_eq!(WorkflowOperation::parse("delete"), None);
    }

    #[test]
    fn a_template_submission_refers_to_the_template_with_the_arguments() {
        let args = json!({"parameters": [{"name": "msg", "value": "hi"}]});
        let wf = from_template("build", Some(&args));
        assert_eq!(wf["spec"]["workflowTemplateRef"]["name"], "build");
        assert_eq!(wf["spec"]["arguments"], args);
        assert_eq!(wf["metadata"]["generateName"], "build-");
        assert_eq!(wf["metadata"]["labels"][WORKFLOW_TEMPLATE_LABEL], "build");
    }

    #[test]
    fn a_cron_submission_copies_the_workflow_spec() {
        let cron = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "CronWorkflow",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 1 * * *", "workflowSpec": {"entrypoint": "main"},
                     "workflowMetadata": {"labels": {"team": "a"}}},
        });
        let wf = from_cron(&cron).unwrap();
        assert_eq!(wf["spec"], json!({"entrypoint": "main"}));
        assert_eq!(wf["metadata"]["labels"]["team"], "a");
        assert_eq!(wf["metadata"]["labels"][CRON_WORKFLOW_LABEL], "nightly");
        assert!(from_cron(&json!({"metadata": {"name": "x"}, "spec": {}})).is_err());
    }

    #[test]
    fn a_resubmission_copies_spec_and_drops_controller_labels() {
        let live = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "w1", "namespace": "ns", "resourceVersion": "9",
                         "labels": {COMPLETED_LABEL: "true", "app": "x"}},
            "spec": {"entrypoint": "main"}, "status": {"phase": "Failed"},
        });
        let copy = resubmitted(&live);
        assert_eq!(copy["metadata"]["generateName"], "w1-");
        assert_eq!(
            copy["metadata"]["labels"],
            json!({"app": "x", RESUBMITTED_LABEL: "w1"})
        );
        assert_eq!(copy["spec"], live["spec"]);
        assert!(copy.get("status").is_none());
        assert!(copy["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn a_retry_drops_failed_nodes_and_runs_again() {
        let live = json!({
            "metadata": {"name": "w1", "labels": {COMPLETED_LABEL: "true"}},
            "status": {"phase": "Failed", "finishedAt": "t", "nodes": {
                "a": {"phase": "Succeeded"}, "b": {"phase": "Failed"}, "c": {"phase": "Error"}}},
        });
        let wf = retried(&live).unwrap();
        assert_eq!(wf["status"]["phase"], "Running");
        assert!(wf["status"].get("finishedAt").is_none());
        assert_eq!(wf["status"]["nodes"], json!({"a": {"phase": "Succeeded"}}));
        assert_eq!(wf["metadata"]["labels"][COMPLETED_LABEL], "false");
        let running = json!({"metadata": {"name": "w2"}, "status": {"phase": "Running"}});
        assert!(retried(&running).is_err());
    }
}
