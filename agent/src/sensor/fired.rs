//! The set of events that satisfied a trigger's dependencies, as triggers and scripts see it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rhai::Dynamic;
use serde_json::Value;

use crate::event::Event;
use crate::script::{CompiledScript, Reads};

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
    /// all of it, or `()` when it reads none), as a value of its own.
    pub fn view_for(&self, script: &CompiledScript) -> Dynamic {
        match script.reads("events") {
            Reads::Nothing => Dynamic::UNIT,
            reads => reads.project(self.cached_view()),
        }
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
