//! Resource types the test server serves: the built-in ones it starts with and those a
//! `CustomResourceDefinition` registers.

use std::cmp::Ordering;

use serde_json::Value;

/// One served group/version/resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The URL segment (`configmaps`).
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    /// Has a `status` subresource: main-resource writes ignore `.status`, `/status` writes
    /// change only `.status`.
    pub status: bool,
    /// A compiled-in kind: accepts strategic merge patches and unconditional updates.
    pub builtin: bool,
    /// Maintains `metadata.generation`.
    pub generation: bool,
    /// The CRD that registered it, if any.
    pub crd: Option<String>,
}

impl ResourceType {
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        short: &[&str],
        namespaced: bool,
        status: bool,
    ) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced,
            status,
            builtin: true,
            // Of the built-ins here, only the workload kinds track generation.
            generation: status && kind != "Namespace",
            crd: None,
        }
    }

    /// `apiVersion` of objects of this type (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `configmaps` or `workflows.argoproj.io`, as messages name resources.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `ConfigMap` or `Workflow.argoproj.io`, as Invalid messages name kinds.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Where objects live: all versions of a resource share one storage.
    pub fn storage_key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.plural == "namespaces" {
            verbs.retain(|v| *v != "deletecollection");
        }
        verbs
    }
}

/// The kinds the server serves from the start.
pub(crate) fn builtins() -> Vec<ResourceType> {
    let mut types = vec![
        ResourceType::builtin("", "v1", "Namespace", "namespaces", &["ns"], false, true),
        ResourceType::builtin("", "v1", "ConfigMap", "configmaps", &["cm"], true, false),
        ResourceType::builtin("", "v1", "Secret", "secrets", &[], true, false),
        ResourceType::builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            &["sa"],
            true,
            false,
        ),
        ResourceType::builtin("", "v1", "Event", "events", &["ev"], true, false),
        ResourceType::builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            &["deploy"],
            true,
            true,
        ),
        ResourceType::builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            &[],
            true,
            false,
        ),
        // Evaluated for ServiceAccount callers (see `rbac`).
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            &[],
            true,
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            &[],
            true,
            false,
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            &["crd", "crds"],
            false,
            true,
        ),
    ];
    // CRDs are built in, but their generation moves with their spec like any workload's.
    if let Some(crd) = types.last_mut() {
        crd.generation = true;
    }
    types
}

/// The resource types a `CustomResourceDefinition` (already validated) registers: one per
/// served version.
pub(crate) fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let text = |ptr: &str| -> Result<String, String> {
        crd.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "{}: Required value",
                    ptr.trim_start_matches('/').replace('/', ".")
                )
            })
    };
    let name = text("/metadata/name")?;
    let group = text("/spec/group")?;
    let kind = text("/spec/names/kind")?;
    let plural = text("/spec/names/plural")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let singular = crd
        .pointer("/spec/names/singular")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names: Vec<String> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let namespaced = match text("/spec/scope")?.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ))
        }
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let mut types = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name: Required value")?;
        types.push(ResourceType {
            group: group.clone(),
            version: version.to_owned(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            short_names: short_names.clone(),
            namespaced,
            status: v.pointer("/subresources/status").is_some(),
            builtin: false,
            generation: true,
            crd: Some(name.clone()),
        });
    }
    Ok(types)
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, versions
/// that do not look like `vN[alpha|betaM]` last in name order. `Less` means "preferred".
pub(crate) fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        Some((stage, major, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((sa, ma, na)), Some((sb, mb, nb))) => sa.cmp(&sb).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec![
            "v1alpha1", "foo", "v1", "v2beta1", "v2", "v1beta2", "v1beta1",
        ];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }
}
