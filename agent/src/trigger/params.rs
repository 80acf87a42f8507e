//! Trigger parameters: values taken from events (or computed by Rhai) written into a payload
//! or a trigger spec at a `dest` path.

use rhai::Dynamic;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::manifest::{Parameter, ScriptSource};
use crate::plan::CompileContext;
use crate::script::{from_dynamic, CompiledScript, ScriptError, ScriptHost, ScriptKind};
use crate::sensor::FiredEvents;

/// Why a parameter could not be resolved; not retryable (the same events give the same error).
#[derive(Debug, Error)]
pub enum ParamError {
    /// The key is not in the event and there is no default value.
    #[error("parameter {dest:?}: {key:?} not found in event and no default value")]
    MissingKey {
        /// Destination path.
        dest: String,
        /// The data or context key.
        key: String,
    },
    /// The script failed.
    #[error("parameter {dest:?}: {source}")]
    Script {
        /// Destination path.
        dest: String,
        /// Script error.
        source: ScriptError,
    },
    /// The destination path cannot be written.
    #[error("parameter {dest:?}: cannot write destination: {reason}")]
    Dest {
        /// Destination path.
        dest: String,
        /// Why.
        reason: String,
    },
}

/// How the value is combined with what is at `dest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Replace.
    Overwrite,
    /// Existing text followed by the value.
    Append,
    /// The value followed by existing text.
    Prepend,
}

/// A compiled parameter.
#[derive(Debug, Clone)]
pub struct CompiledParameter {
    dependency: Option<String>,
    data_key: Option<String>,
    context_key: Option<String>,
    default: Option<String>,
    raw: bool,
    script: Option<CompiledScript>,
    dest: String,
    operation: Operation,
}

impl CompiledParameter {
    /// Compiles one parameter; `field` is its path, `dependencies` the sensor's names.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        p: &Parameter,
        dependencies: &[String],
    ) -> Option<Self> {
        let src = &p.src;
        let operation = match p.operation.as_deref().unwrap_or("overwrite") {
            "" | "overwrite" => Operation::Overwrite,
            "append" => Operation::Append,
            "prepend" => Operation::Prepend,
            other => {
                ctx.error_with_hint(
                    None,
                    format!("{field}.operation"),
                    format!("unknown operation {other:?}"),
                    "use overwrite, append or prepend",
                );
                return None;
            }
        };
        if let Some(dep) = &src.dependency_name {
            if !dependencies.contains(dep) {
                ctx.error_with_hint(
                    None,
                    format!("{field}.src.dependencyName"),
                    format!("unknown dependency {dep:?}"),
                    format!("dependencies of this sensor: {}", dependencies.join(", ")),
                );
                return None;
            }
        }
        let has_key = src.data_key.is_some() || src.context_key.is_some();
        let script_source = ScriptSource::from_fields(&src.script, &src.script_file);
        if src.dependency_name.is_none()
            && (has_key || script_source.is_some())
            && dependencies.len() != 1
        {
            ctx.error(
                None,
                format!("{field}.src.dependencyName"),
                "required when the sensor has more than one dependency",
            );
            return None;
        }
        if src.dependency_name.is_none()
            && !has_key
            && script_source.is_none()
            && src.value.is_none()
        {
            ctx.error(
                None,
                format!("{field}.src"),
                "set dependencyName, value or script",
            );
            return None;
        }
        if p.dest.is_empty() {
            ctx.error(None, format!("{field}.dest"), "dest must not be empty");
            return None;
        }
        let script = match script_source {
            Some(s) => {
                Some(ctx.script(&format!("{field}.src.script"), ScriptKind::Parameter, &s)?)
            }
            None => None,
        };
        Some(Self {
            dependency: src
                .dependency_name
                .clone()
                .or_else(|| (dependencies.len() == 1).then(|| dependencies[0].clone())),
            data_key: src.data_key.clone(),
            context_key: src.context_key.clone(),
            default: src.value.clone(),
            raw: src.use_raw_data.unwrap_or(false),
            script,
            dest: p.dest.clone(),
            operation,
        })
    }

    /// Resolves the value from the events; `None` when the parameter's dependency has no
    /// event in this firing (a dependency left out under `||`) and there is no default.
    ///
    /// Argo's order: a data key wins over a context key; a key that is missing falls back to
    /// `value`; with no key, `value` is a literal, else the whole event is the value. Values
    /// are text unless `useRawData` keeps the JSON type; scripts return typed values.
    pub fn resolve(
        &self,
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Option<Value>, ParamError> {
        let event = self
            .dependency
            .as_ref()
            .and_then(|d| events.by_dependency.get(d));
        let default = || self.default.clone().map(Value::String);
        let named_but_absent = self.dependency.is_some() && event.is_none();
        if named_but_absent && self.script.is_none() {
            return Ok(default());
        }
        if let Some(script) = &self.script {
            if named_but_absent {
                return Ok(default());
            }
            let view = |name: &str, make: &dyn Fn() -> Dynamic| {
                if script.uses(name) {
                    make()
                } else {
                    Dynamic::UNIT
                }
            };
            let vars = [
                (
                    "event",
                    view("event", &|| event.map_or(Dynamic::UNIT, |e| e.data_view())),
                ),
                (
                    "ctx",
                    view("ctx", &|| event.map_or(Dynamic::UNIT, |e| e.context_view())),
                ),
                ("events", view("events", &|| events.script_view())),
            ];
            return host
                .eval(script, &vars)
                .and_then(|v| from_dynamic(&v))
                .map(Some)
                .map_err(|source| ParamError::Script {
                    dest: self.dest.clone(),
                    source,
                });
        }
        let Some(event) = event else {
            return Ok(default());
        };
        if let Some(key) = &self.data_key {
            let found = event.data_text().map(|text| {
                let r = gjson::get(&text, key);
                r.exists().then(|| {
                    if self.raw && r.kind() != gjson::Kind::String {
                        serde_json::from_str(r.json())
                            .unwrap_or_else(|_| Value::String(r.json().to_owned()))
                    } else {
                        Value::String(r.str().to_owned())
                    }
                })
            });
            return match found.flatten() {
                Some(v) => Ok(Some(v)),
                None => default().map(Some).ok_or_else(|| ParamError::MissingKey {
                    dest: self.dest.clone(),
                    key: key.clone(),
                }),
            };
        }
        if let Some(key) = &self.context_key {
            return match event.context_json().get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(Value::String(s.clone()))),
                Some(v) if !v.is_null() && !v.is_string() => Ok(Some(Value::String(v.to_string()))),
                _ => default().map(Some).ok_or_else(|| ParamError::MissingKey {
                    dest: self.dest.clone(),
                    key: key.clone(),
                }),
            };
        }
        if let Some(v) = default() {
            return Ok(Some(v));
        }
        // No key and no value: the whole event, as CloudEvent JSON.
        Ok(Some(if self.raw {
            event.to_json()
        } else {
            Value::String(event.to_json().to_string())
        }))
    }

    /// Resolves the value and writes it into `target` at `dest` (skipped when unresolved).
    pub fn apply(
        &self,
        host: &ScriptHost,
        events: &FiredEvents,
        target: &mut Value,
    ) -> Result<(), ParamError> {
        let Some(value) = self.resolve(host, events)? else {
            return Ok(());
        };
        set_path(target, &self.dest, value, self.operation).map_err(|reason| ParamError::Dest {
            dest: self.dest.clone(),
            reason,
        })
    }
}

/// A parameter whose value was taken from the events, to be written later into an object
/// that is only known at execution (a ConfigMap's content, a live object).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedParameter {
    dest: String,
    value: Value,
    operation: Operation,
}

impl ResolvedParameter {
    /// Writes the value into `target` at its `dest`.
    pub fn apply(&self, target: &mut Value) -> Result<(), ParamError> {
        set_path(target, &self.dest, self.value.clone(), self.operation).map_err(|reason| {
            ParamError::Dest {
                dest: self.dest.clone(),
                reason,
            }
        })
    }
}

/// Resolves parameters in order (unresolved ones are left out), for [`ResolvedParameter::apply`].
pub fn resolve_all(
    params: &[CompiledParameter],
    host: &ScriptHost,
    events: &FiredEvents,
) -> Result<Vec<ResolvedParameter>, ParamError> {
    let mut out = Vec::with_capacity(params.len());
    for p in params {
        if let Some(value) = p.resolve(host, events)? {
            out.push(ResolvedParameter {
                dest: p.dest.clone(),
                value,
                operation: p.operation,
            });
        }
    }
    Ok(out)
}

/// Applies parameters in order.
pub fn apply_all(
    params: &[CompiledParameter],
    host: &ScriptHost,
    events: &FiredEvents,
    target: &mut Value,
) -> Result<(), ParamError> {
    params
        .iter()
        .try_for_each(|p| p.apply(host, events, target))
}

/// Writes `value` at a dotted path (`a.b.0.c`; `-1` appends to an array), creating objects
/// on the way; `\.` escapes a dot inside a key.
pub fn set_path(target: &mut Value, path: &str, value: Value, op: Operation) -> Result<(), String> {
    let segments = split_path(path);
    let mut cur = target;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if cur.is_null() {
            *cur = if seg.parse::<i64>().is_ok() {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
        }
        let slot: &mut Value = match cur {
            Value::Object(map) => map.entry(seg.clone()).or_insert(Value::Null),
            Value::Array(items) => {
                let index = if seg == "-1" {
                    items.push(Value::Null);
                    items.len() - 1
                } else {
                    let n: usize = seg
                        .parse()
                        .map_err(|_| format!("{seg:?} is not an array index"))?;
                    if n >= items.len() {
                        items.resize(n + 1, Value::Null);
                    }
                    n
                };
                &mut items[index]
            }
            other => return Err(format!("cannot descend into {other} at {seg:?}")),
        };
        if last {
            *slot = combine(std::mem::take(slot), value, op);
            return Ok(());
        }
        cur = slot;
    }
    Err("empty path".into())
}

/// Argo (sjson): appending or prepending to a missing value sets the value as it is;
/// onto an existing value it joins both as text.
fn combine(existing: Value, value: Value, op: Operation) -> Value {
    if existing.is_null() {
        return value;
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match op {
        Operation::Overwrite => value,
        Operation::Append => Value::String(format!("{}{}", text(&existing), text(&value))),
        Operation::Prepend => Value::String(format!("{}{}", text(&value), text(&existing))),
    }
}

fn split_path(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(s)) = (chars.next(), out.last_mut()) {
                    s.push(n);
                }
            }
            '.' => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_nested_objects_and_appends() {
        let mut v = json!({});
        set_path(&mut v, "a.b", json!("x"), Operation::Overwrite).unwrap();
        set_path(&mut v, "a.list.-1", json!(1), Operation::Overwrite).unwrap();
        set_path(&mut v, "a.list.-1", json!(2), Operation::Overwrite).unwrap();
        set_path(&mut v, "a.b", json!("y"), Operation::Append).unwrap();
        set_path(&mut v, "a.b", json!(">"), Operation::Prepend).unwrap();
        set_path(&mut v, "k\\.dot", json!(true), Operation::Overwrite).unwrap();
        assert_eq!(v, json!({"a": {"b": ">xy", "list": [1, 2]}, "k.dot": true}));
    }
}
