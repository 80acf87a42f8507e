//! From watched objects to plans: each object rendered as a manifest and compiled alone,
//! the valid ones split into groups that share nothing, each group built into a plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::api::DynamicObject;
use kube::core::ApiResource;
use serde_json::{json, Value};
use serde_saphyr::SerializeError;

use crate::cluster::crd::{EventSourceResource, SensorResource};
use crate::manifest::{load_text, Document, Loaded, ManifestError, Position, API_VERSION};
use crate::plan::{build_plan, Plan};
use crate::script::{Limits, ScriptHost};
use crate::telemetry::Metrics;

/// The two kinds the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    EventSource,
    Sensor,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::EventSource => "EventSource",
            Kind::Sensor => "Sensor",
        }
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::EventSource => "eventsources",
            Kind::Sensor => "sensors",
        }
    }

    pub(super) fn api_resource(self) -> ApiResource {
        match self {
            Kind::EventSource => ApiResource::erase::<EventSourceResource>(&()),
            Kind::Sensor => ApiResource::erase::<SensorResource>(&()),
        }
    }

    pub(super) fn from_plural(plural: &str) -> Option<Kind> {
        [Kind::EventSource, Kind::Sensor]
            .into_iter()
            .find(|k| k.plural() == plural)
    }
}

/// An object: its kind and name.
pub(super) type Key = (Kind, String);

/// The file name errors of an object are reported under: `sensors/NAME`.
fn object_path(key: &Key) -> PathBuf {
    Path::new(key.0.plural()).join(&key.1)
}

fn key_of_path(path: &Path) -> Option<Key> {
    let name = path.file_name()?.to_str()?;
    let kind = Kind::from_plural(path.parent()?.to_str()?)?;
    Some((kind, name.to_owned()))
}

/// One watched object, as the controller needs it.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub(super) key: Key,
    pub(super) uid: Option<String>,
    pub(super) generation: Option<i64>,
    pub(super) spec: Value,
    pub(super) status: Option<Value>,
}

impl Object {
    pub(super) fn from_dynamic(kind: Kind, obj: &DynamicObject) -> Option<Object> {
        let name = obj.metadata.name.clone()?;
        Some(Object {
            key: (kind, name),
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation,
            spec: obj.data.get("spec").cloned().unwrap_or(Value::Null),
            status: obj.data.get("status").cloned(),
        })
    }
}

/// The object as a YAML manifest: keys sorted, as `kubectl get -o yaml` prints them, so
/// error positions point at the lines of that view of the object's spec.
fn render(key: &Key, namespace: &str, spec: &Value) -> Result<String, SerializeError> {
    let doc = json!({
        "apiVersion": API_VERSION,
        "kind": key.0.name(),
        "metadata": {"name": key.1, "namespace": namespace},
        "spec": sorted(spec),
    });
    serde_saphyr::to_string(&doc)
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A part of the namespace that shares nothing with the rest, run as one plan.
pub(super) struct Group {
    /// The spec of each member.
    pub(super) members: BTreeMap<Key, Value>,
    /// Its plan, with the host its scripts were compiled by.
    pub(super) plan: Plan,
    pub(super) host: Arc<ScriptHost>,
}

/// What a compile round produced.
#[derive(Default)]
pub(super) struct Compiled {
    /// The valid objects, in independent groups.
    pub(super) groups: Vec<Group>,
    /// The spec of every valid object.
    pub(super) members: BTreeMap<Key, Value>,
    /// Errors of the objects left out.
    pub(super) errors: BTreeMap<Key, Vec<ManifestError>>,
    /// Per sensor: the EventSources it depends on and its trigger names.
    pub(super) sensors: BTreeMap<String, (BTreeSet<String>, Vec<String>)>,
}

/// What compiling needs: script limits, library directories and the script timings.
pub(super) struct CompileSettings<'a> {
    pub(super) namespace: &'a str,
    pub(super) limits: &'a Limits,
    pub(super) library_dirs: &'a [PathBuf],
    pub(super) metrics: &'a Metrics,
}

pub(super) fn compile(objects: &[Object], settings: &CompileSettings<'_>) -> Compiled {
    let namespace = settings.namespace;
    let lib = settings.library_dirs;
    let host = Arc::new(
        ScriptHost::new(settings.limits.clone(), lib.to_vec())
            .with_timings(settings.metrics.script_seconds.clone()),
    );
    let mut out = Compiled::default();
    let mut loaded: BTreeMap<Key, Vec<Loaded>> = BTreeMap::new();
    for obj in objects {
        let path = object_path(&obj.key);
        let (mut docs, mut errors) = (Vec::new(), Vec::new());
        match render(&obj.key, namespace, &obj.spec) {
            Ok(text) => load_text(&path, &text, &mut docs, &mut errors),
            Err(e) => errors.push(ManifestError::new(
                Position {
                    file: path,
                    ..Position::default()
                },
                "spec",
                format!("cannot render the object as YAML: {e}"),
            )),
        }
        if errors.is_empty() {
            if let Err(more) = build_plan(&docs, &host, lib) {
                errors = more;
            }
        }
        if !errors.is_empty() {
            out.errors.insert(obj.key.clone(), errors);
            continue;
        }
        for doc in &docs {
            if let Document::Sensor(s) = &doc.doc {
                let sources = s
                    .spec
                    .dependencies
                    .iter()
                    .map(|d| d.event_source_name.clone())
                    .collect();
                let triggers = s
                    .spec
                    .triggers
                    .iter()
                    .map(|t| t.template.name.clone())
                    .collect();
                out.sensors.insert(obj.key.1.clone(), (sources, triggers));
            }
        }
        loaded.insert(obj.key.clone(), docs);
        out.members.insert(obj.key.clone(), obj.spec.clone());
    }
    for keys in partition(objects, &out) {
        let mut keys = keys;
        // Valid alone, an object may still clash with another of its group (the same webhook
        // port and endpoint): those are left out too, and the rest is built again.
        loop {
            let docs: Vec<Loaded> = keys
                .iter()
                .flat_map(|k| loaded.get(k).into_iter().flatten().cloned())
                .collect();
            match build_plan(&docs, &host, lib) {
                Ok(plan) => {
                    let members = keys
                        .iter()
                        .filter_map(|k| out.members.get(k).map(|spec| (k.clone(), spec.clone())))
                        .collect();
                    out.groups.push(Group {
                        members,
                        plan,
                        host: host.clone(),
                    });
                    break;
                }
                Err(errors) => {
                    for e in errors {
                        let blamed = key_of_path(&e.position.file)
                            .filter(|k| keys.contains(k))
                            .map(|k| vec![k])
                            .unwrap_or_else(|| keys.clone());
                        for key in blamed {
                            out.errors.entry(key).or_default().push(e.clone());
                        }
                    }
                    keys.retain(|k| !out.errors.contains_key(k));
                    if keys.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    out.members.retain(|k, _| !out.errors.contains_key(k));
    out.sensors
        .retain(|name, _| out.members.contains_key(&(Kind::Sensor, name.clone())));
    out
}

/// Splits the valid objects into groups that share nothing: a Sensor joins the
/// EventSources it depends on, EventSources join those with a webhook on the same port.
fn partition(objects: &[Object], compiled: &Compiled) -> Vec<Vec<Key>> {
    let keys: Vec<&Key> = objects
        .iter()
        .map(|o| &o.key)
        .filter(|k| compiled.members.contains_key(*k))
        .collect();
    let index = |key: &Key| keys.iter().position(|k| *k == key);
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    fn join(parent: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (root(parent, a), root(parent, b));
        parent[ra] = rb;
    }
    let mut by_port: BTreeMap<String, usize> = BTreeMap::new();
    for obj in objects {
        let Some(i) = index(&obj.key) else { continue };
        match obj.key.0 {
            Kind::Sensor => {
                let sources = compiled
                    .sensors
                    .get(&obj.key.1)
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                for source in sources {
                    if let Some(j) = index(&(Kind::EventSource, source)) {
                        join(&mut parent, i, j);
                    }
                }
            }
            Kind::EventSource => {
                let webhooks = obj.spec["webhook"].as_object().cloned().unwrap_or_default();
                for hook in webhooks.values() {
                    let port = match &hook["port"] {
                        Value::String(p) => p.trim().to_owned(),
                        other => other.to_string(),
                    };
                    match by_port.get(&port) {
                        Some(&j) => join(&mut parent, i, j),
                        None => {
                            by_port.insert(port, i);
                        }
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push((*key).clone());
    }
    groups.into_values().collect()
}

/// One error for a status message: field, line and column in the object's YAML, message
/// and hint.
pub(super) fn describe(e: &ManifestError) -> String {
    let p = &e.position;
    let mut s = String::new();
    if !e.field.is_empty() {
        s.push_str(&e.field);
        s.push_str(": ");
    }
    s.push_str(&format!(
        "line {}, column {}: {}",
        p.line, p.column, e.message
    ));
    if let Some(hint) = &e.hint {
        s.push_str(&format!(" (hint: {hint})"));
    }
    s
}

pub(super) fn is_script_error(e: &ManifestError) -> bool {
    e.message.starts_with("Rhai") || e.message.starts_with("Lua") || e.message.contains("script")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_all(objects: &[Object]) -> Compiled {
        let metrics = Metrics::new();
        let settings = CompileSettings {
            namespace: "ns",
            limits: &Limits::default(),
            library_dirs: &[],
            metrics: &metrics,
        };
        compile(objects, &settings)
    }

    fn object(kind: Kind, name: &str, spec: Value) -> Object {
        Object {
            key: (kind, name.to_owned()),
            uid: None,
            generation: Some(1),
            spec,
            status: None,
        }
    }

    fn sensor(script: &str) -> Value {
        json!({
            "dependencies": [{"name": "d", "eventSourceName": "hooks", "eventName": "push",
                              "filters": {"script": script}}],
            "triggers": [{"template": {"name": "t", "log": {}}}],
        })
    }

    #[test]
    fn a_broken_object_is_left_out_with_its_errors_located() {
        let hooks = json!({"webhook": {"push": {"port": "12000", "endpoint": "/push"}}});
        let objects = [
            object(Kind::EventSource, "hooks", hooks),
            object(Kind::Sensor, "broken", sensor("let x = 1;\nx +* 2")),
            object(Kind::Sensor, "good", sensor("true")),
        ];
        let compiled = compile_all(&objects);
        let members: Vec<&str> = compiled.members.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(members, ["hooks", "good"]);
        assert_eq!(
            compiled.groups.len(),
            1,
            "hooks and good depend on each other"
        );
        assert_eq!(compiled.groups[0].plan.sensors.len(), 1);
        let errors = &compiled.errors[&(Kind::Sensor, "broken".to_owned())];
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.field, "spec.dependencies[0].filters.script");
        assert!(is_script_error(e), "{e}");
        // The position is the `*` on the script's second line, in the rendered object.
        let text = render(&objects[1].key, "ns", &objects[1].spec).expect("renders");
        let line = text.lines().nth(e.position.line as usize - 1).unwrap_or("");
        let at = line.get(e.position.column as usize - 1..).unwrap_or("");
        assert!(at.starts_with("*"), "{}: {line:?}\n{text}", describe(e));
        assert!(describe(e).starts_with(&format!(
            "spec.dependencies[0].filters.script: line {}, column {}: Rhai",
            e.position.line, e.position.column
        )));
    }

    #[test]
    fn objects_that_clash_are_left_out() {
        let hooks = json!({"webhook": {"push": {"port": "12000", "endpoint": "/push"}}});
        let objects = [
            object(Kind::EventSource, "a", hooks.clone()),
            object(Kind::EventSource, "b", hooks),
            object(Kind::Sensor, "good", sensor("true")),
        ];
        let compiled = compile_all(&objects);
        let good = (Kind::Sensor, "good".to_owned());
        assert!(compiled.members.contains_key(&good));
        assert!(compiled
            .groups
            .iter()
            .any(|g| g.members.contains_key(&good)));
        let left_out: Vec<&str> = compiled.errors.keys().map(|k| k.1.as_str()).collect();
        assert!(
            !left_out.is_empty() && !left_out.contains(&"good"),
            "{left_out:?}"
        );
    }

    #[test]
    fn groups_share_nothing() {
        let hook = |port: u16, endpoint: &str| json!({"webhook": {"e": {"port": port.to_string(), "endpoint": endpoint}}});
        let on = |source: &str| {
            json!({
                "dependencies": [{"name": "d", "eventSourceName": source, "eventName": "e"}],
                "triggers": [{"template": {"name": "t", "log": {}}}],
            })
        };
        let objects = [
            object(Kind::EventSource, "a", hook(12000, "/a")),
            object(Kind::EventSource, "b", hook(12000, "/b")),
            object(Kind::EventSource, "c", hook(12001, "/c")),
            object(Kind::Sensor, "on-a", on("a")),
            object(Kind::Sensor, "on-c", on("c")),
            object(Kind::Sensor, "on-missing", on("gone")),
        ];
        let compiled = compile_all(&objects);
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        let mut groups: Vec<Vec<&str>> = compiled
            .groups
            .iter()
            .map(|g| g.members.keys().map(|k| k.1.as_str()).collect())
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [
                vec!["a", "b", "on-a"],
                vec!["c", "on-c"],
                vec!["on-missing"]
            ]
        );
    }
}
