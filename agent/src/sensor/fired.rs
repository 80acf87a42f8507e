//! The set of events that satisfied a trigger's dependencies, as triggers and scripts see it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::Dynamic;
use serde_json::Value;

use crate::event::Event;

/// Events by dependency name, with script views computed once per firing.
#[derive(Debug)]
pub struct FiredEvents {
    /// The (transformed) event of each dependency.
    pub by_dependency: BTreeMap<String, Arc<Event>>,
    /// `events` for scripts: dependency name → CloudEvent JSON with `data`.
    pub script_view: Dynamic,
}

impl FiredEvents {
    /// Bundles the events of one firing.
    pub fn new(by_dependency: BTreeMap<String, Arc<Event>>) -> Self {
        let view: rhai::Map = by_dependency
            .iter()
            .map(|(k, e)| {
                let mut event = e.context_view().clone_cast::<rhai::Map>();
                event.insert("data".into(), e.data_view());
                (k.as_str().into(), Dynamic::from_map(event))
            })
            .collect();
        Self {
            script_view: Dynamic::from_map(view),
            by_dependency,
        }
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
