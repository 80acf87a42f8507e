//! The set of events that satisfied a trigger's dependencies, as triggers and scripts see it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::Dynamic;
use serde_json::Value;

use crate::event::Event;
use crate::script::to_dynamic;

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
        let json = Value::Object(
            by_dependency
                .iter()
                .map(|(k, e)| (k.clone(), e.to_json()))
                .collect(),
        );
        Self {
            script_view: to_dynamic(&json),
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
