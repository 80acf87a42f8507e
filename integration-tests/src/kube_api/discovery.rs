//! Legacy discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//! `/apis/{group}/{version}`. Aggregated discovery is not served: like a real server, an
//! `Accept` list that also allows plain `application/json` gets the legacy types.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::resource::{version_priority, ResourceType};
use super::status::ApiError;

/// Whether the `Accept` header allows plain JSON (no `as=` type) — else 406.
pub(crate) fn accepts_plain_json(accept: Option<&str>) -> Result<(), ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(());
    };
    let plain = accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let typed =
            parts.any(|p| p.starts_with("as=") || p.starts_with("g=") || p.starts_with("v="));
        !typed && matches!(media, "application/json" | "application/*" | "*/*")
    });
    if plain {
        Ok(())
    } else {
        Err(ApiError::not_acceptable())
    }
}

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-triggerd-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// Versions of `group`, preferred first.
fn group_versions<'a>(types: &'a [ResourceType], group: &str) -> Vec<&'a str> {
    let mut versions: Vec<&str> = types
        .iter()
        .filter(|t| t.group == group)
        .map(|t| t.version.as_str())
        .collect();
    versions.sort_by(|a, b| version_priority(a, b));
    versions.dedup();
    versions
}

fn group_doc(types: &[ResourceType], group: &str) -> Value {
    let versions: Vec<Value> = group_versions(types, group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "preferredVersion": versions.first().cloned().unwrap_or(json!(null)),
        "versions": versions,
    })
}

/// `/apis`.
pub(crate) fn groups(types: &[ResourceType]) -> Value {
    let names: BTreeMap<&str, ()> = types
        .iter()
        .filter(|t| !t.group.is_empty())
        .map(|t| (t.group.as_str(), ()))
        .collect();
    let groups: Vec<Value> = names.keys().map(|g| group_doc(types, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or `None` when no such group is served.
pub(crate) fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    if group.is_empty() || !types.iter().any(|t| t.group == group) {
        return None;
    }
    let mut doc = group_doc(types, group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/{group}/{version}`, or `None` when not served.
pub(crate) fn resources(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in served {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        resources.push(r);
        if t.status {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
