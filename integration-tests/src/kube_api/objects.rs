//! Object bookkeeping shared by the write paths: metadata the server owns, the status
//! subresource split, generation, and the per-kind rules of the built-in kinds served here.

use serde_json::{json, Map, Value};

use super::resource::{self, ResourceType};
use super::status::ApiError;

/// An object as clients see it through `rt`'s version (`apiVersion` and `kind` set; no
/// conversion between versions, like a CRD with conversion strategy `None`).
pub(crate) fn view(rt: &ResourceType, stored: &Value) -> Value {
    let mut v = stored.clone();
    set_type(rt, &mut v);
    v
}

/// Sets `apiVersion` and `kind`, first in the object as the real server writes them.
pub(crate) fn set_type(rt: &ResourceType, obj: &mut Value) {
    if let Value::Object(map) = obj {
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!(rt.api_version()));
        out.insert("kind".into(), json!(rt.kind));
        for (k, v) in std::mem::take(map) {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, v);
            }
        }
        *map = out;
    }
}

/// The object's `metadata`, created when missing.
pub(crate) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("made an object above")
}

/// `metadata.name` (`""` when missing).
pub(crate) fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`.
pub(crate) fn namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str)
}

/// `metadata.resourceVersion`.
pub(crate) fn resource_version(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// Now, as Kubernetes timestamps read (`2024-05-01T10:00:00Z`).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Object names: RFC 1123 labels for namespaces, subdomains for everything else (422 with
/// the real wording otherwise).
pub(crate) fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let label = rt.plural == "namespaces" && rt.group.is_empty();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = if label {
        part_ok(name)
    } else {
        name.len() <= 253 && name.split('.').all(part_ok)
    };
    if ok {
        return Ok(());
    }
    let what = if label {
        format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    } else {
        format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    };
    Err(ApiError::invalid(rt, name, "metadata.name", &what))
}

/// The object an update stores, from the live one and what the client sent: a `/status`
/// write takes only `.status`; a main-resource write keeps the live `.status` when the type
/// has the status subresource; server-owned metadata always comes from the live object.
pub(crate) fn merge_for_update(
    rt: &ResourceType,
    live: &Value,
    incoming: Value,
    subresource: Option<&str>,
) -> Value {
    let take_status = |target: &mut Value, from: &Value| {
        if let Value::Object(t) = target {
            match from.get("status") {
                Some(s) => t.insert("status".into(), s.clone()),
                None => t.remove("status"),
            };
        }
    };
    let mut new = if subresource == Some("status") {
        let mut n = live.clone();
        take_status(&mut n, &incoming);
        n
    } else {
        let mut n = incoming;
        if rt.status {
            take_status(&mut n, live);
        }
        n
    };
    let live_meta = live
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = metadata_mut(&mut new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "deletionTimestamp",
    ] {
        match live_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("managedFields");
    set_type(rt, &mut new);
    new
}

/// Whether anything but metadata (and `.status`, for types with the status subresource)
/// differs: what moves `metadata.generation`.
pub(crate) fn spec_changed(rt: &ResourceType, live: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("metadata");
            m.remove("apiVersion");
            m.remove("kind");
            if rt.status {
                m.remove("status");
            }
        }
        v
    };
    strip(live) != strip(new)
}

/// Whether an update would store exactly what is there.
pub(crate) fn same_content(rt: &ResourceType, live: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = view(rt, v);
        metadata_mut(&mut v).remove("resourceVersion");
        v
    };
    strip(live) == strip(new)
}

/// Per-kind rules on every write. For a CRD, validates it, fills its status and returns the
/// resource types it registers.
pub(crate) fn on_write(
    rt: &ResourceType,
    obj: &mut Value,
    live: Option<&Value>,
) -> Result<Option<Vec<ResourceType>>, ApiError> {
    if rt.crd.is_some() {
        return Ok(None);
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => {
            secret_string_data(obj);
            Ok(None)
        }
        ("", "namespaces") => {
            let name = name(obj).to_owned();
            let meta = metadata_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if let Value::Object(m) = obj {
                if m.get("spec").is_none() {
                    m.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
                }
                if live.is_none() {
                    m.insert("status".into(), json!({"phase": "Active"}));
                }
            }
            Ok(None)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let types = resource::from_crd(obj).map_err(|e| {
                let (field, what) = e.split_once(": ").unwrap_or(("spec", e.as_str()));
                ApiError::invalid(rt, name(obj), field, what)
            })?;
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            let now = now();
            let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
            if let Value::Object(m) = obj {
                m.insert(
                    "status".into(),
                    json!({
                        "conditions": [
                            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                        ],
                        "acceptedNames": names,
                        "storedVersions": stored,
                    }),
                );
            }
            Ok(Some(types))
        }
        _ => Ok(None),
    }
}

/// A Secret's `stringData` goes into `data`, base64-encoded, as the real server does.
fn secret_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if let Value::Object(data) = data {
        for (k, v) in string_data {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let encoded = serde_json::to_value(k8s_openapi::ByteString(text.into_bytes()))
                .unwrap_or(Value::Null);
            data.insert(k, encoded);
        }
    }
}
