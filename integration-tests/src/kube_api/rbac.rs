//! RBAC for ServiceAccount callers, as Kubernetes' RBAC authorizer decides namespaced
//! requests: a request is allowed when a RoleBinding of the request's namespace binds the
//! ServiceAccount to a Role of that namespace with a rule matching the verb, API group,
//! resource (`plural` or `plural/subresource`) and, when the rule lists `resourceNames`,
//! the object's name. `*` matches any verb, group or resource. RoleBindings to ClusterRoles
//! and cluster-scoped requests (ClusterRoleBindings) are not modelled: they are denied.

use serde_json::Value;

use super::control::Access;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Selection, Store};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Whether ServiceAccount `sa_namespace/sa_name` may make the request.
pub(crate) fn allows(
    store: &Store,
    sa_namespace: &str,
    sa_name: &str,
    access: &Access<'_>,
) -> bool {
    let Some(namespace) = access.namespace.filter(|_| access.rt.namespaced) else {
        return false;
    };
    let (Some(bindings_rt), Some(roles_rt)) = (
        store.find(RBAC_GROUP, "v1", "rolebindings"),
        store.find(RBAC_GROUP, "v1", "roles"),
    ) else {
        return false;
    };
    let selection = Selection {
        namespace: Some(namespace.to_owned()),
        labels: LabelSelector::default(),
        fields: FieldSelector::default(),
    };
    let Ok(bindings) = store.list(bindings_rt, &selection, None, None) else {
        return false;
    };
    let items = bindings["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|b| binds(b, sa_namespace, sa_name))
        .filter(|b| b["roleRef"]["kind"] == "Role" && b["roleRef"]["apiGroup"] == RBAC_GROUP)
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .filter_map(|role| store.get(roles_rt, Some(namespace), role).ok())
        .any(|role| {
            role["rules"]
                .as_array()
                .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, access)))
        })
}

fn binds(binding: &Value, sa_namespace: &str, sa_name: &str) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa_name && s["namespace"] == sa_namespace
        })
    })
}

fn rule_allows(rule: &Value, access: &Access<'_>) -> bool {
    let listed = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == "*" || x == want))
    };
    let resource = match access.subresource {
        Some(sub) => format!("{}/{sub}", access.rt.plural),
        None => access.rt.plural.clone(),
    };
    let resource_ok = listed("resources", &resource)
        || access
            .subresource
            .is_some_and(|sub| listed("resources", &format!("*/{sub}")));
    let names_ok = match rule["resourceNames"].as_array().filter(|n| !n.is_empty()) {
        None => true,
        Some(names) => access
            .name
            .is_some_and(|name| names.iter().any(|n| n == name)),
    };
    listed("verbs", access.verb) && listed("apiGroups", &access.rt.group) && resource_ok && names_ok
}
