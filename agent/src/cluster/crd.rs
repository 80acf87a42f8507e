//! The `Sensor` and `EventSource` custom resources of cluster mode (`triggerd.io/v1alpha1`).
//!
//! The CRD schemas are generated from the manifest types (`manifest::SensorSpec`,
//! `manifest::EventSourceSpec`), so the API server checks the same fields file mode loads.
//! The objects themselves keep their spec as raw JSON: the controller runs each one through
//! the manifest loader, which reports every error with its field path, and one broken object
//! never stops the watch of the others.

use std::collections::BTreeMap;

use kube::core::CustomResourceExt;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{EventSourceSpec, SensorSpec};

/// The spec of a `Sensor` object, as the API server stores it.
#[derive(CustomResource, Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "triggerd.io",
    version = "v1alpha1",
    kind = "Sensor",
    root = "SensorResource",
    doc = "A Sensor: dependencies on events and the triggers they fire (triggerd.io/v1alpha1).",
    namespaced,
    status = "ResourceStatus",
    shortname = "sn",
    category = "triggerd",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
pub struct SensorResourceSpec(#[schemars(with = "SensorSpec")] pub Value);

/// The spec of an `EventSource` object, as the API server stores it.
#[derive(CustomResource, Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "triggerd.io",
    version = "v1alpha1",
    kind = "EventSource",
    root = "EventSourceResource",
    doc = "An EventSource: named events of each source kind (triggerd.io/v1alpha1).",
    namespaced,
    status = "ResourceStatus",
    shortname = "es",
    category = "triggerd",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
pub struct EventSourceResourceSpec(#[schemars(with = "EventSourceSpec")] pub Value);

/// What the agent reports on a `Sensor` or `EventSource` (the status subresource).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ScriptsCompiled` and `SourcesRunning`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Trigger outcomes since this generation was loaded, by trigger name (Sensors only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub triggers: BTreeMap<String, TriggerOutcomes>,
}

/// One status condition, as Kubernetes' `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `ScriptsCompiled` or `SourcesRunning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word saying why.
    pub reason: String,
    /// Details; for a manifest error, every error with its field path and position.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Counts of one trigger's final outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerOutcomes {
    /// Executions that succeeded.
    pub succeeded: u64,
    /// Executions that failed and went to the dead letter.
    pub failed: u64,
}

/// Why the CRD YAML could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the CRD as YAML: {0}")]
pub struct RenderError(#[from] serde_saphyr::SerializeError);

/// The committed CRD files: `(file name, YAML)`, as `triggerd crds` writes them.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, RenderError> {
    Ok(vec![
        (
            "sensors.triggerd.io.yaml",
            render(&crd::<SensorResource>())?,
        ),
        (
            "eventsources.triggerd.io.yaml",
            render(&crd::<EventSourceResource>())?,
        ),
    ])
}

/// The CRD of `K` as JSON, its schema made structural where the derived one is not.
fn crd<K: CustomResourceExt>() -> Value {
    let mut crd = serde_json::to_value(K::crd()).unwrap_or_default();
    if let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                make_structural(schema);
            }
        }
    }
    crd
}

/// Kubernetes wants a type on every schema node: free-form JSON fields (`serde_json::Value`,
/// no type) and the recursive `dlqTrigger` (a `$ref`, which CRDs cannot hold) become
/// values kept as they are; the agent checks them at load time.
fn make_structural(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    if node.remove("$ref").is_some() {
        node.insert("type".into(), "object".into());
        node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    }
    let typed = [
        "type",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    ]
    .iter()
    .any(|k| node.contains_key(*k));
    if !typed {
        node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    }
    if let Some(props) = node.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(make_structural);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get_mut(key) {
            make_structural(child);
        }
    }
}

fn render(crd: &Value) -> Result<String, RenderError> {
    let yaml = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated by `triggerd crds -o manifests/crds` from agent/src/manifest; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The YAML under `manifests/crds/` is what the Rust types generate today.
    #[test]
    fn committed_crds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
        for (name, yaml) in crd_files().expect("renders") {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == yaml,
                "manifests/crds/{name} is stale: regenerate it with \
                 `cargo run -p triggerd -- crds -o manifests/crds`"
            );
        }
    }

    #[test]
    fn schemas_are_structural_where_kubernetes_insists() {
        let crd = crd::<SensorResource>();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Reason", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let triggers = &spec["properties"]["triggers"];
        assert_eq!(triggers["type"], "array");
        assert!(spec["properties"]["dependencies"]["items"]["properties"]["filters"].is_object());
        let text = crd.to_string();
        assert!(!text.contains("\"$ref\""), "schemas must be inlined");
        assert!(!text.contains("\"anyOf\""), "{text}");
        let template = &spec["properties"]["template"];
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
        let dlq = &triggers["items"]["properties"]["dlqTrigger"];
        assert_eq!(dlq["type"], "object", "{dlq}");
        let template = &spec["properties"]["template"];
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
        let dlq = &triggers["items"]["properties"]["dlqTrigger"];
        assert_eq!(dlq["type"], "object", "{dlq}");
    }
}
