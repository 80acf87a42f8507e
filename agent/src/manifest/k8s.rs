//! Manifest types of the Kubernetes triggers (`k8s`, `argoWorkflow`) and policy
//! (`policy.k8s`), field-compatible with Argo Events' `StandardK8STrigger`,
//! `ArgoWorkflowTrigger` and `K8SResourcePolicy`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::sensor::{Backoff, Parameter};

/// Creates, updates, patches or deletes any Kubernetes resource.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sTrigger {
    /// Where the resource comes from.
    #[schemars(with = "ArtifactLocation")]
    pub source: Spanned<ArtifactLocation>,
    /// `create` (default), `update`, `patch` or `delete`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub operation: Option<Spanned<String>>,
    /// Parameters applied to the resource (`dest` relative to it, e.g. `metadata.name`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The patch content type (default `application/merge-patch+json`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub patch_strategy: Option<Spanned<String>>,
    /// For `update`: parameterize the live object instead of the source (Argo's meaning).
    #[serde(default)]
    pub live_object: bool,
    /// For `application/json-patch+json`: the RFC 6902 operations (triggerd only; Argo's
    /// resource cannot hold a JSON array). Template-level parameters may set values in it
    /// (`dest: k8s.jsonPatch.0.value`).
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub json_patch: Option<Spanned<Value>>,
}

/// Acts on an Argo Workflow through the Kubernetes API (no `argo` CLI or server).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoWorkflowTrigger {
    /// The Workflow (or, for `submit-from`, the WorkflowTemplate or CronWorkflow).
    #[schemars(with = "ArtifactLocation")]
    pub source: Spanned<ArtifactLocation>,
    /// `submit` (default), `submit-from`, `resubmit`, `suspend`, `resume`, `retry`,
    /// `terminate` or `stop`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub operation: Option<Spanned<String>>,
    /// Parameters applied to the resource.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rejected: extra `argo` CLI arguments have no API equivalent.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub args: Option<Spanned<Value>>,
}

/// Where a trigger's resource comes from (Argo's `ArtifactLocation`, the parts that make
/// sense for one namespace-scoped agent).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactLocation {
    /// The object itself.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub resource: Option<Spanned<Value>>,
    /// The object as a YAML or JSON string.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub inline: Option<Spanned<String>>,
    /// A YAML or JSON file, relative to the manifest's directory; read at each execution.
    #[serde(default)]
    pub file: Option<FileArtifact>,
    /// A key of a ConfigMap in the agent's namespace; read at each execution.
    #[serde(default)]
    pub configmap: Option<ConfigMapKey>,
    /// Rejected: not supported.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub url: Option<Spanned<Value>>,
    /// Rejected: not supported.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub s3: Option<Spanned<Value>>,
    /// Rejected: not supported.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub git: Option<Spanned<Value>>,
}

/// A file artifact.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileArtifact {
    /// Path, relative to the manifest's directory.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
}

/// A ConfigMap key (Kubernetes' `ConfigMapKeySelector`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapKey {
    /// ConfigMap name.
    pub name: String,
    /// Key holding the resource.
    pub key: String,
    /// Namespace of the ConfigMap (default: the agent's; another one must be allowed).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Accepted for compatibility; a missing ConfigMap always fails the attempt.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// Argo's resource-label policy: the trigger succeeds once the live object carries these
/// labels; it is watched until then, for as long as `backoff` would have polled.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sPolicy {
    /// Labels the live object must have.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How long to wait: the total of its delays (Argo polls on it).
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Whether running out of time is a failure (otherwise it counts as success, as in Argo).
    #[serde(default)]
    pub error_on_backoff_timeout: bool,
}
