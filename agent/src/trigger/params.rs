//! Trigger parameters: values taken from events (or computed by Rhai) written into a payload
//! or a trigger spec at a `dest` path.

use rhai::Dynamic;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{Parameter, ScriptSource};
use crate::script::{from_dynamic, CompiledScript, ScriptError, ScriptHost, ScriptKind};

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
    /// `data_key` split into plain keys, when it uses no gjson syntax beyond dots.
    plain_key: Option<Vec<String>>,
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
            plain_key: src.data_key.as_deref().and_then(plain_path),
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
            let vars = [
                ("event", event.map_or(Dynamic::UNIT, |e| e.data_for(script))),
                (
                    "ctx",
                    event.map_or(Dynamic::UNIT, |e| e.context_for(script)),
                ),
                ("events", events.view_for(script)),
            ];
            return host
                .eval(script, vars)
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
            let fast = match &self.plain_key {
                // The text gjson would read is the serialised data: look in the data itself.
                Some(keys) if !event.raw_is_data => {
                    lookup(&event.data, keys).map(|v| Some(gjson_value_of(v, self.raw)))
                }
                _ => None,
            };
            // Not found (or not a plain path): ask gjson, so every miss and every other
            // path means exactly what it means to gjson.
            let found = fast.or_else(|| {
                event.data_text().map(|text| {
                    let r = gjson::get(&text, key);
                    r.exists().then(|| gjson_result_value(&r, self.raw))
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
            return match event.context_attribute(key).as_ref() {
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

/// The parameter value of a gjson result: text, or with `useRawData` the JSON value of
/// anything but a string.
fn gjson_result_value(r: &gjson::Value<'_>, raw: bool) -> Value {
    if raw && r.kind() != gjson::Kind::String {
        serde_json::from_str(r.json()).unwrap_or_else(|_| Value::String(r.json().to_owned()))
    } else {
        Value::String(r.str().to_owned())
    }
}

/// What [`gjson_result_value`] gives for `value` found in the data, where the text gjson
/// reads is the data serialised by serde_json (the text of `value` is then its own
/// serialisation).
fn gjson_value_of(value: &Value, raw: bool) -> Value {
    match value {
        // gjson unescapes the string serde_json escaped: the same string.
        Value::String(s) => Value::String(s.clone()),
        // Parsing the serialisation of a JSON value gives the value back.
        other if raw => other.clone(),
        // gjson's text of numbers, booleans, null, objects and arrays, from the same text.
        other => {
            let text = other.to_string();
            Value::String(gjson::parse(&text).str().to_owned())
        }
    }
}

/// Splits a gjson path into keys when it is only keys of ASCII letters, digits, `_` and `-`
/// joined by single dots: no wildcards, escapes, `#`, queries, modifiers, pipes or
/// multipaths, whose meaning is left to gjson.
fn plain_path(path: &str) -> Option<Vec<String>> {
    path.split('.')
        .map(|k| {
            let plain = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            plain.then(|| k.to_owned())
        })
        .collect()
}

/// Follows plain keys through the data as gjson does: a key names an object member, or an
/// element of an array when it is all digits. `None` when not found (or when the path asks
/// an array for something other than an index, which gjson decides).
fn lookup<'a>(mut value: &'a Value, keys: &[String]) -> Option<&'a Value> {
    for key in keys {
        value = match value {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) if key.bytes().all(|b| b.is_ascii_digit()) => {
                items.get(key.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(value)
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
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::compile::compile_standalone;
    use crate::event::Event;
    use crate::manifest::Filters;
    use crate::script::Limits;
    use crate::sensor::{CompiledFilters, Logic};

    /// The 1 KB GitHub push event of the benchmarks, plus a few values of every JSON kind.
    fn push_event() -> Event {
        let body = json!({
            "ref": "refs/heads/main",
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
            "created": false, "deleted": false, "forced": false,
            "repository": {"id": 186853002, "name": "triggerd", "full_name": "example/triggerd",
                "private": false, "owner": {"login": "example", "id": 21031067}, "default_branch": "main"},
            "pusher": {"name": "octocat", "email": "octocat@example.com"},
            "sender": {"login": "octocat", "id": 583231, "type": "User"},
            "head_commit": {"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build",
                "timestamp": "2026-11-22T10:00:00Z", "author": {"name": "Octo Cat", "email": "octocat@example.com"},
                "added": [], "removed": [], "modified": ["README.md", "agent/src/lib.rs"]},
            "commits": [{"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build", "distinct": true},
                        {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Add tests", "distinct": true}],
            "extra": {"float": 2.50, "exp": 1e21, "neg": -7, "big": 18446744073709551615u64, "nil": null,
                "quote": "say \"hi\"\n\ttab \u{e9} \u{2028} \\ /", "0": "zero key", "a-b": "dash",
                "under_score": 1, "nested": {"a": {"a": {"c": 1}}}, "empty": "", "list": [[1, 2], {"k": "v"}]}
        });
        let data = json!({"header": {"Content-Type": ["application/json"], "X-Github-Event": ["push"],
            "User-Agent": ["GitHub-Hookshot/abc"]}, "body": body});
        Event::new("github", "push", "webhook", data, bytes::Bytes::new())
    }

    /// What gjson alone makes of `key` (the resolution before the fast path).
    fn by_gjson(event: &Event, key: &str, raw: bool) -> Option<Value> {
        let text = event.data_text()?;
        let r = gjson::get(&text, key);
        r.exists().then(|| gjson_result_value(&r, raw))
    }

    fn parameter(key: &str, raw: bool) -> CompiledParameter {
        CompiledParameter {
            dependency: Some("push".into()),
            data_key: Some(key.into()),
            plain_key: plain_path(key),
            context_key: None,
            default: None,
            raw,
            script: None,
            dest: "x".into(),
            operation: Operation::Overwrite,
        }
    }

    #[test]
    fn data_keys_resolve_as_gjson_resolves_them() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let event = Arc::new(push_event());
        assert!(event.data_text().unwrap().len() > 1000);
        let events = FiredEvents::new(BTreeMap::from([("push".to_owned(), event.clone())]));
        let plain = [
            "body.ref",
            "body.after",
            "body.deleted",
            "body.created",
            "body.repository.id",
            "body.repository.full_name",
            "body.repository",
            "body.repository.owner",
            "body.head_commit.added",
            "body.head_commit.modified",
            "body.head_commit.modified.1",
            "body.commits",
            "body.commits.0",
            "body.commits.1.id",
            "body.commits.00.id",
            "body.commits.2",
            "body.commits.99999999999999999999",
            "body.commits.id",
            "header.Content-Type",
            "header.Content-Type.0",
            "header.X-Github-Event.0",
            "body.extra.float",
            "body.extra.exp",
            "body.extra.neg",
            "body.extra.big",
            "body.extra.nil",
            "body.extra.quote",
            "body.extra.0",
            "body.extra.a-b",
            "body.extra.under_score",
            "body.extra.empty",
            "body.extra.list.0",
            "body.extra.list.0.1",
            "body.extra.list.1.k",
            "body.extra.nested.a.c",
            "body.extra.nested.a.a.c",
            "body",
            "header",
            "body.missing",
            "body.ref.deeper",
            "body.deleted.x",
            "missing.key",
            "body.Ref",
            "0",
            "body.commits.-1",
        ];
        let gjson_only = [
            "body.commits.#",
            "body.commits.#.id",
            "body.commits.#(distinct==true).id",
            "body.commits.#(message%\"Add*\").id",
            "body.commits.#(id==\"x\")#",
            "body.re*",
            "body.re?",
            "body.head_commit.*",
            "header.Content\\-Type",
            "body.extra.a\\-b",
            "body.commits|@reverse|0.id",
            "@this.body.ref",
            "body.commits.@reverse",
            "body|ref",
            "{body.ref,body.after}",
            "[body.ref,body.deleted]",
            "body.head_commit.modified.#",
            "..0",
            "body..ref",
            "body.",
            ".body",
            "",
            "!true",
            "body.extra.quote|@pretty",
            "body.commits.#.message|0",
            "body.ref\\.x",
        ];
        for key in plain {
            assert!(plain_path(key).is_some(), "{key} should take the fast path");
        }
        for key in gjson_only {
            assert!(plain_path(key).is_none(), "{key} must be left to gjson");
        }
        for key in plain.iter().chain(&gjson_only) {
            for raw in [false, true] {
                let want = by_gjson(&event, key, raw);
                let p = parameter(key, raw);
                let got = p.resolve(&host, &events);
                match (&want, got) {
                    (Some(w), Ok(Some(g))) => assert_eq!(&g, w, "{key} (raw {raw})"),
                    (None, Err(ParamError::MissingKey { .. })) => {}
                    (w, g) => panic!("{key} (raw {raw}): gjson {w:?}, resolved {g:?}"),
                }
                if let (Some(keys), Some(w)) = (&p.plain_key, &want) {
                    // Where the fast path answers, it answers as gjson does.
                    if let Some(v) = lookup(&event.data, keys) {
                        assert_eq!(&gjson_value_of(v, raw), w, "{key} (raw {raw}), fast path");
                    }
                }
            }
        }
        // Everything above was decided on the serialised data; a body kept as received
        // (`raw_is_data`) is read by gjson as received.
        let mut raw_event = push_event();
        raw_event.raw = bytes::Bytes::from("{\"body\": {\"n\": 1.50}}");
        raw_event.raw_is_data = true;
        let raw_events =
            FiredEvents::new(BTreeMap::from([("push".to_owned(), Arc::new(raw_event))]));
        assert_eq!(
            parameter("body.n", false)
                .resolve(&host, &raw_events)
                .unwrap(),
            Some(json!("1.50"))
        );
    }

    /// A filter script that tries to change the event changes nothing that later filters,
    /// parameters or scripts see.
    #[test]
    fn scripts_cannot_change_the_event_others_see() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let event = Arc::new(push_event());
        let filter = |src: &str| {
            compile_standalone(
                &host,
                &[],
                &format!("script: '{src}'\n"),
                |ctx, f: &Filters| Some(CompiledFilters::compile(ctx, "filters", f, Logic::And)),
            )
            .expect("filter compiles")
        };
        let check = filter("event.body.ref == \"refs/heads/main\" && event.body.commits[0].message == \"Fix the build\" && event.body.repository.owner.login == \"example\"");
        let params: Vec<CompiledParameter> = ["body.ref", "body.commits.0.message"]
            .iter()
            .map(|k| parameter(k, false))
            .chain(
                ["event.body.ref", "events.push.data.body.ref", "event"]
                    .iter()
                    .map(|src| {
                        let mut p = parameter("", false);
                        p.data_key = None;
                        p.plain_key = None;
                        p.script = Some(host.compile(ScriptKind::Parameter, src).unwrap());
                        p
                    }),
            )
            .collect();
        let seen = |events: &FiredEvents| -> Vec<Value> {
            params
                .iter()
                .map(|p| p.resolve(&host, events).unwrap().unwrap())
                .collect()
        };
        let fresh = FiredEvents::new(BTreeMap::from([("push".to_owned(), event.clone())]));
        let before = seen(&fresh);
        assert_eq!(before[0], json!("refs/heads/main"));
        assert_eq!(before[2], json!("refs/heads/main"));
        for src in [
            "event.body.ref = \"x\"; true",
            "event.body.ref += \"x\"; true",
            "event.body = #{}; true",
            "event.body.commits[0].message = \"x\"; true",
            "event.body.commits.clear(); true",
            "event.body.repository.owner.login = \"x\"; true",
            "let e = event; e.body.ref = \"x\"; e.body.commits.clear(); true",
            "let b = event.body; b.ref = \"x\"; true",
            "let f = |v| { event.body.ref = v; true }; f.call(\"x\")",
            "ctx.id = \"x\"; true",
        ] {
            let mutate = filter(src);
            for ctx in [None, Some(event.context_view())] {
                let _ = mutate.evaluate(&host, Some(&event), ctx);
            }
            assert!(
                check.evaluate(&host, Some(&event), None).pass,
                "after {src}, the next filter sees a changed event"
            );
            // Within one firing (its `events` view is built once and shared) and in a new one.
            assert_eq!(seen(&fresh), before, "after {src}");
            let again = FiredEvents::new(BTreeMap::from([("push".to_owned(), event.clone())]));
            assert_eq!(seen(&again), before, "after {src}");
        }
        // Parameter scripts may not change it either.
        let mut p = parameter("", false);
        p.data_key = None;
        p.plain_key = None;
        p.script = Some(
            host.compile(
                ScriptKind::Parameter,
                "let e = events; e.push.data.body.ref = \"x\"; event.body.ref = \"y\"; 1",
            )
            .unwrap(),
        );
        let _ = p.resolve(&host, &fresh);
        assert_eq!(seen(&fresh), before);
    }

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
