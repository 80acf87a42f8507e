//! Strategic merge patch, as far as the built-in kinds served here need it: maps merge, `null`
//! deletes a key, lists are replaced except the known merge lists (merged by their merge key,
//! e.g. `containers` by `name`, `ports` by `containerPort`) and `finalizers` (set union), and
//! the `$patch: delete|replace|merge` and `$deleteFromPrimitiveList/<field>` directives.
//! `$setElementOrder/<field>` and `$retainKeys` are accepted and ignored.
//!
//! The merge key is chosen by field name alone (the real server reads it from the Go type of
//! the field); that is exact for the kinds served here.

use serde_json::{Map, Value};

/// How a list field merges.
enum ListStrategy {
    /// Elements are maps identified by this key.
    ByKey(&'static str),
    /// A list of scalars merged as a set.
    Primitive,
}

fn list_strategy(field: &str) -> Option<ListStrategy> {
    use ListStrategy::*;
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ByKey("name"),
        "volumeMounts" => ByKey("mountPath"),
        "ports" => ByKey("containerPort"),
        "conditions" => ByKey("type"),
        "ownerReferences" => ByKey("uid"),
        "hostAliases" => ByKey("ip"),
        "finalizers" => Primitive,
        _ => return None,
    })
}

/// Applies `patch` to `target` (both objects). Errors are 400-class messages.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let patch = patch
        .as_object()
        .ok_or("strategic merge patch must be a JSON object")?;
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        merge_map(t, patch)?;
    }
    Ok(())
}

fn directive(map: &Map<String, Value>) -> Option<&str> {
    map.get("$patch").and_then(Value::as_str)
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    match directive(patch) {
        Some("replace") => {
            *target = strip(patch);
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other} in map: {patch:?}")),
    }
    for (key, pv) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match pv {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(pm) => {
                if directive(pm) == Some("delete") {
                    target.remove(key);
                } else if let Some(Value::Object(tm)) = target.get_mut(key) {
                    merge_map(tm, pm)?;
                } else {
                    let mut fresh = Map::new();
                    merge_map(&mut fresh, pm)?;
                    target.insert(key.clone(), Value::Object(fresh));
                }
            }
            Value::Array(items) => {
                let merged = match (list_strategy(key), target.get_mut(key)) {
                    (Some(strategy), Some(Value::Array(existing))) => {
                        merge_list(existing, items, &strategy)?;
                        None
                    }
                    _ => Some(replacement_list(items)?),
                };
                if let Some(list) = merged {
                    target.insert(key.clone(), Value::Array(list));
                }
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
    Ok(())
}

/// A list that replaces (or creates) the target list: directives removed.
fn replacement_list(items: &[Value]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Object(m) if directive(m).is_some() && m.len() == 1 => {}
            Value::Object(m) if directive(m) == Some("delete") => {}
            Value::Object(m) => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, m)?;
                out.push(Value::Object(fresh));
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn merge_list(
    target: &mut Vec<Value>,
    patch: &[Value],
    strategy: &ListStrategy,
) -> Result<(), String> {
    let replace = patch.iter().any(|v| {
        v.as_object()
            .is_some_and(|m| directive(m) == Some("replace"))
    });
    if replace {
        *target = replacement_list(patch)?;
        return Ok(());
    }
    match strategy {
        ListStrategy::Primitive => {
            for item in patch {
                if !target.contains(item) {
                    target.push(item.clone());
                }
            }
        }
        ListStrategy::ByKey(merge_key) => {
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(format!(
                        "list element {item} is not a map with merge key {merge_key}"
                    ));
                };
                let id = pm.get(*merge_key).ok_or_else(|| {
                    format!("map: {pm:?} does not contain declared merge key: {merge_key}")
                })?;
                let position = target.iter().position(|t| t.get(*merge_key) == Some(id));
                match (directive(pm), position) {
                    (Some("delete"), Some(i)) => {
                        target.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        if let Value::Object(tm) = &mut target[i] {
                            merge_map(tm, pm)?;
                        }
                    }
                    (_, None) => {
                        let mut fresh = Map::new();
                        merge_map(&mut fresh, pm)?;
                        target.push(Value::Object(fresh));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A map with the `$patch` directive (and nested directives) removed.
fn strip(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    // merge_map into an empty map drops directives and nulls; a replace has no nested errors
    // worth reporting here, so fall back to a plain copy without `$patch` if it fails.
    let mut copy = map.clone();
    copy.remove("$patch");
    if merge_map(&mut out, &copy).is_err() {
        return copy;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> Value {
        let mut t = target;
        strategic_merge(&mut t, &patch).expect("patch applies");
        t
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let t = json!({"data": {"a": "1", "b": "2"}});
        assert_eq!(
            patched(t, json!({"data": {"b": null, "c": "3"}})),
            json!({"data": {"a": "1", "c": "3"}})
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let t =
            json!({"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]});
        let p =
            json!({"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]});
        assert_eq!(
            patched(t, p),
            json!({"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]})
        );
    }

    #[test]
    fn directives() {
        let t = json!({"containers": [{"name": "a"}, {"name": "b"}], "args": ["x"], "m": {"k": 1, "j": 2}});
        let p = json!({
            "containers": [{"name": "a", "$patch": "delete"}],
            "args": ["y"],
            "m": {"$patch": "replace", "z": 3}
        });
        assert_eq!(
            patched(t, p),
            json!({"containers": [{"name": "b"}], "args": ["y"], "m": {"z": 3}})
        );
        let t = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let p = json!({"containers": [{"$patch": "replace"}, {"name": "c"}]});
        assert_eq!(patched(t, p), json!({"containers": [{"name": "c"}]}));
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let t = json!({"finalizers": ["a", "b"]});
        assert_eq!(
            patched(t.clone(), json!({"finalizers": ["c"]})),
            json!({"finalizers": ["a", "b", "c"]})
        );
        assert_eq!(
            patched(t, json!({"$deleteFromPrimitiveList/finalizers": ["a"]})),
            json!({"finalizers": ["b"]})
        );
    }
}
