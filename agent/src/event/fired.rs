//! The set of events that satisfied a trigger's dependencies, as triggers and scripts see it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rhai::Dynamic;
use serde_json::Value;

use super::Event;
use crate::script::{CompiledScript, PathTree, Reads};

/// Events by dependency name, with the script view built at most once per firing, and only
/// when a script reads `events`.
#[derive(Debug)]
pub struct FiredEvents {
    /// The (transformed) event of each dependency.
    pub by_dependency: BTreeMap<String, Arc<Event>>,
    script_view: OnceLock<Dynamic>,
}

impl FiredEvents {
    /// Bundles the events of one firing.
    pub fn new(by_dependency: BTreeMap<String, Arc<Event>>) -> Self {
        Self {
            by_dependency,
            script_view: OnceLock::new(),
        }
    }

    /// `events` for `script`: what it reads of [`Self::script_view`] (the paths it reads,
    /// all of it, or `()` when it reads none), as a value of its own. Paths are projected
    /// from each event's JSON, so `events.push.data.body.ref` converts one string rather
    /// than every event's whole data.
    pub fn view_for(&self, script: &CompiledScript) -> Dynamic {
        match script.reads("events") {
            Reads::Nothing => Dynamic::UNIT,
            Reads::Paths(tree) if self.script_view.get().is_none() => {
                let view: rhai::Map = tree
                    .children()
                    .filter_map(|(dep, paths)| {
                        let event = self.by_dependency.get(dep)?;
                        Some((dep.into(), Self::event_view(event, paths)))
                    })
                    .collect();
                Dynamic::from_map(view)
            }
            reads => reads.project(self.cached_view()),
        }
    }

    /// One event's part of `events`: the attributes and data paths in `paths`.
    fn event_view(event: &Event, paths: &PathTree) -> Dynamic {
        if paths.is_whole() {
            let mut whole = event.context_view().clone_cast::<rhai::Map>();
            whole.insert("data".into(), event.data_view());
            return Dynamic::from_map(whole);
        }
        let view: rhai::Map = paths
            .children()
            .filter_map(|(key, sub)| {
                let value = if key == "data" {
                    if sub.is_whole() {
                        event.data_view()
                    } else {
                        sub.project_json(&event.data)
                    }
                } else {
                    sub.project_json(&event.context_attribute(key)?)
                };
                Some((key.into(), value))
            })
            .collect();
        Dynamic::from_map(view)
    }

    /// `events` for scripts: dependency name → CloudEvent attributes with `data`; each
    /// caller gets its own copy.
    pub fn script_view(&self) -> Dynamic {
        self.cached_view().clone()
    }

    fn cached_view(&self) -> &Dynamic {
        self.script_view.get_or_init(|| {
            let view: rhai::Map = self
                .by_dependency
                .iter()
                .map(|(k, e)| {
                    let mut event = e.context_view().clone_cast::<rhai::Map>();
                    event.insert("data".into(), e.data_view());
                    (k.as_str().into(), Dynamic::from_map(event))
                })
                .collect();
            Dynamic::from_map(view)
        })
    }

    /// The events as CloudEvent JSON objects keyed by dependency.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.by_dependency
                .iter()
                .map(|(k, e)| (k.clone(), e.to_json()))
                .collect(),
        )
    }

    /// Event ids, for logs.
    pub fn ids(&self) -> String {
        self.by_dependency
            .values()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Limits, ScriptHost, ScriptKind};
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn projected_events_match_the_whole_view() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let mut push = Event::new(
            "hooks",
            "push",
            "webhook",
            json!({"body": {"ref": "main", "n": 3, "big": [1, 2, 3]}}),
            Bytes::new(),
        );
        push.extensions
            .insert("traceparent".into(), "00-abc".into());
        let tag = Event::new("hooks", "tag", "webhook", json!({"v": "1.2"}), Bytes::new());
        let fired = || {
            FiredEvents::new(BTreeMap::from([
                ("push".to_owned(), Arc::new(push.clone())),
                ("tag".to_owned(), Arc::new(tag.clone())),
            ]))
        };
        for source in [
            "events.push.data.body.ref",
            "events.push.data.body.missing",
            "events.push.id + events.push.traceparent + events.tag.subject",
            "events.tag.data",
            "events.tag",
            "events.nope.data",
            "events.push.data.body.big.len()",
        ] {
            let script = host
                .compile(ScriptKind::Payload, source)
                .unwrap_or_else(|e| panic!("{source}: {e}"));
            let projected = fired().view_for(&script);
            let whole = script.reads("events").project(&fired().script_view());
            assert_eq!(projected.to_string(), whole.to_string(), "{source}");
        }
    }
}
