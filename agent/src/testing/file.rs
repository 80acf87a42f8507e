//! The test file format (`*.test.yaml`), parsed with located errors, and its resolution
//! against the loaded sensors: every trigger and dependency a test names must exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::input::EventInput;
use crate::backoff::parse_duration;
use crate::manifest::{parse_fragment, ManifestError, Origin, Position};
use crate::plan::Plan;
use crate::trigger::{CompiledTrigger, Shape, StubResponse, StubSpec};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFile {
    /// Manifest files or directories under test, relative to the test file.
    pub sensors: Vec<Spanned<String>>,
    /// Rhai library directories, relative to the test file.
    #[serde(default)]
    pub lib: Option<Vec<Spanned<String>>>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    /// Shown as `PASS name` / `FAIL name`.
    pub name: Spanned<String>,
    /// Wall-clock time when the case starts (RFC 3339).
    #[serde(default)]
    pub clock: Option<Spanned<String>>,
    /// Events, in order.
    #[serde(default)]
    pub events: Vec<EventStep>,
    /// Stubbed responses by trigger: attempt n gets item n, the last repeats.
    #[serde(default)]
    pub responses: HashMap<String, Spanned<Vec<Spanned<StubSpec>>>>,
    /// What must happen.
    #[serde(default)]
    pub expect: Expect,
}

/// One event of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventStep {
    /// A dependency name: the event goes to that dependency's event source and event name.
    #[serde(default)]
    pub dependency: Option<Spanned<String>>,
    /// The sensor whose dependency is meant, when several sensors have one of that name.
    #[serde(default)]
    pub sensor: Option<Spanned<String>>,
    /// EventSource name (with `eventName`), instead of `dependency`.
    #[serde(default)]
    pub event_source: Option<Spanned<String>>,
    /// Event name within the EventSource.
    #[serde(default)]
    pub event_name: Option<Spanned<String>>,
    /// The event data.
    #[serde(default)]
    pub data: Value,
    /// CloudEvent attributes (`id`, `time`, `type`, ...) and extensions.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// How long after the previous event (or the case start) this one arrives (Go duration).
    #[serde(default)]
    pub after: Option<Spanned<String>>,
}

/// Expectations of a case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Triggers that must fire, with what.
    #[serde(default)]
    pub fired: HashMap<String, Spanned<OneOrMany<FiredExpect>>>,
    /// Triggers that must not fire.
    #[serde(default)]
    pub not_fired: Vec<Spanned<String>>,
    /// Exactly the triggers that must end in the dead letter.
    #[serde(default)]
    pub dead_letters: Option<Spanned<Vec<Spanned<String>>>>,
}

/// What the firings of a trigger must look like.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FiredExpect {
    /// How many times it fires (only with a single mapping; default 1).
    #[serde(default)]
    pub times: Option<Spanned<u32>>,
    /// Subset of the payload.
    #[serde(default)]
    pub payload: Option<Spanned<Value>>,
    /// The exact payload.
    #[serde(default)]
    pub payload_exact: Option<Spanned<Value>>,
    /// Subset of the request (`{type, url, method, headers, timeout}`).
    #[serde(default)]
    pub request: Option<Spanned<Value>>,
    /// `success` or `dead-letter`.
    #[serde(default)]
    pub outcome: Option<Spanned<ExpectedOutcome>>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: Option<Spanned<u32>>,
    /// Text the dead-letter reason contains.
    #[serde(default)]
    pub reason: Option<Spanned<String>>,
    /// The `dlqTrigger` execution.
    #[serde(default)]
    pub dead_letter: Option<Spanned<DeadLetterExpect>>,
}

/// What the dead-letter trigger's execution must look like.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeadLetterExpect {
    /// Name of the `dlqTrigger`.
    #[serde(default)]
    pub trigger: Option<Spanned<String>>,
    /// Subset of its payload.
    #[serde(default)]
    pub payload: Option<Spanned<Value>>,
    /// Its exact payload.
    #[serde(default)]
    pub payload_exact: Option<Spanned<Value>>,
    /// Subset of its request.
    #[serde(default)]
    pub request: Option<Spanned<Value>>,
    /// `success` or `failed`.
    #[serde(default)]
    pub outcome: Option<Spanned<DeadLetterOutcome>>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: Option<Spanned<u32>>,
}

/// The final outcome of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedOutcome {
    /// The policy accepted a response.
    Success,
    /// It failed for good and went to the dead letter.
    DeadLetter,
}

/// The final outcome of a dead-letter trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterOutcome {
    /// The dead-letter trigger succeeded.
    Success,
    /// It failed too.
    Failed,
}

/// A mapping or a list of mappings.
#[derive(Debug)]
pub enum OneOrMany<T> {
    /// One mapping.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping, or a list of mappings (one per firing)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                // `promote:` with nothing after it: fired once, nothing else checked.
                T::deserialize(
                    de::value::MapDeserializer::<std::iter::Empty<((), ())>, E>::new(
                        std::iter::empty(),
                    ),
                )
                .map(OneOrMany::One)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses a test file's text; errors carry the file, line, column and field path.
pub fn parse(file: &Path, text: &str) -> Result<(TestFile, Origin), ManifestError> {
    let origin = Origin {
        file: file.to_path_buf(),
        line_offset: 0,
        text: text.into(),
        on_disk: true,
    };
    match parse_fragment::<TestFile>(&origin, text) {
        Ok(t) => Ok((t, origin)),
        Err(mut e) => {
            e.field = strip_spanned(&e.field);
            if e.message.starts_with("unknown field") && e.hint.is_none() {
                e = e.with_hint("check the spelling; field names are case-sensitive (camelCase)");
            }
            Err(e)
        }
    }
}

/// Removes the `value` segments that `Spanned` wrappers add to field paths.
fn strip_spanned(path: &str) -> String {
    const SPANNED: &[&str] = &[
        "name",
        "clock",
        "after",
        "dependency",
        "sensor",
        "eventSource",
        "eventName",
        "times",
        "payload",
        "payloadExact",
        "request",
        "outcome",
        "attempts",
        "reason",
        "deadLetter",
        "deadLetters",
        "trigger",
    ];
    const SPANNED_ITEMS: &[&str] = &["sensors", "lib", "notFired", "deadLetters"];
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('.') {
        let n = out.len();
        let prev = n.checked_sub(1).map_or("", |j| out[j].as_str());
        let before = n.checked_sub(2).map_or("", |j| out[j].as_str());
        let item_of = prev.split('[').next().unwrap_or("");
        let spanned = SPANNED.contains(&prev)
            || (prev.ends_with(']') && SPANNED_ITEMS.contains(&item_of))
            || before == "fired"
            || before == "responses";
        if spanned && seg == "value" {
            continue;
        }
        if let (true, Some(index), Some(last)) =
            (spanned, seg.strip_prefix("value["), out.last_mut())
        {
            last.push('[');
            last.push_str(index);
            continue;
        }
        out.push(seg.to_owned());
    }
    out.join(".")
}

/// A trigger of a loaded sensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerRef {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
}

impl std::fmt::Display for TriggerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.sensor, self.trigger)
    }
}

/// An event ready to publish.
#[derive(Debug, Clone)]
pub struct ResolvedEvent {
    /// EventSource name.
    pub source: String,
    /// Event name.
    pub subject: String,
    /// Source kind (`webhook` unless a loaded EventSource says otherwise).
    pub kind: String,
    /// Data and context.
    pub input: EventInput,
    /// Delay before it arrives.
    pub after: Duration,
    /// Where it is written.
    pub position: Position,
}

/// One firing expectation with where it is written.
#[derive(Debug)]
pub struct Located<T> {
    /// The expectation.
    pub value: T,
    /// Where it is written.
    pub position: Position,
}

/// What a trigger's firings must look like.
#[derive(Debug)]
pub struct FiredCheck {
    /// The trigger.
    pub trigger: TriggerRef,
    /// The key as written (`promote` or `sensor/promote`).
    pub key: String,
    /// Where the key is written.
    pub position: Position,
    /// How many firings.
    pub count: usize,
    /// The expectation of each firing (one repeated for a single mapping).
    pub each: Vec<FiredExpect>,
    /// Whether a single mapping applies to every firing.
    pub repeated: bool,
}

/// A case ready to run.
#[derive(Debug)]
pub struct ResolvedCase {
    /// Its name.
    pub name: String,
    /// Where the name is written.
    pub position: Position,
    /// Virtual wall-clock start.
    pub clock: Option<DateTime<Utc>>,
    /// Events in order.
    pub events: Vec<ResolvedEvent>,
    /// Stubbed responses by (sensor, trigger).
    pub responses: HashMap<(String, String), Vec<StubResponse>>,
    /// Firing expectations, in file order.
    pub fired: Vec<FiredCheck>,
    /// Triggers that must not fire.
    pub not_fired: Vec<Located<TriggerRef>>,
    /// Exactly the triggers that must be dead-lettered.
    pub dead_letters: Option<Located<Vec<TriggerRef>>>,
}

/// Library directories of a test file, when it names any (relative to the file).
pub fn library_dirs(test: &TestFile, origin: &Origin) -> Option<Vec<PathBuf>> {
    test.lib.as_ref().map(|l| {
        l.iter()
            .map(|d| origin.dir().join(&d.value))
            .collect::<Vec<_>>()
    })
}

/// Manifest paths of a test file (relative to the file).
pub fn sensor_paths(test: &TestFile, origin: &Origin) -> Vec<PathBuf> {
    test.sensors
        .iter()
        .map(|s| origin.dir().join(&s.value))
        .collect()
}

/// Resolves every case against the plan; returns every error found.
pub fn resolve(
    test: TestFile,
    origin: &Origin,
    plan: &Plan,
) -> Result<Vec<ResolvedCase>, Vec<ManifestError>> {
    let mut r = Resolver {
        origin,
        plan,
        errors: Vec::new(),
    };
    if test.sensors.is_empty() {
        r.errors.push(origin.error(
            None,
            "sensors",
            "name at least one manifest file or directory",
        ));
    }
    if plan.sensors.is_empty() {
        r.errors.push(
            origin
                .error(None, "sensors", "the manifests hold no Sensor")
                .with_hint("list the sensor's YAML file under `sensors:`"),
        );
    }
    let mut cases = Vec::new();
    for (i, case) in test.cases.into_iter().enumerate() {
        if let Some(c) = r.case(&format!("cases[{i}]"), case) {
            cases.push(c);
        }
    }
    if r.errors.is_empty() {
        Ok(cases)
    } else {
        Err(r.errors)
    }
}

struct Resolver<'a> {
    origin: &'a Origin,
    plan: &'a Plan,
    errors: Vec<ManifestError>,
}

impl Resolver<'_> {
    fn error(&mut self, at: &serde_saphyr::Location, field: &str, message: impl Into<String>) {
        self.errors
            .push(self.origin.error(Some(at), field, message));
    }

    fn error_with_hint(
        &mut self,
        at: &serde_saphyr::Location,
        field: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.errors
            .push(self.origin.error(Some(at), field, message).with_hint(hint));
    }

    fn case(&mut self, field: &str, case: Case) -> Option<ResolvedCase> {
        let before = self.errors.len();
        let clock = case.clock.as_ref().and_then(|c| {
            DateTime::parse_from_rfc3339(&c.value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    self.error_with_hint(
                        &c.referenced,
                        &format!("{field}.clock"),
                        format!("invalid time {:?}: {e}", c.value),
                        "use RFC 3339, e.g. 2026-11-23T10:00:00Z",
                    )
                })
                .ok()
        });
        let mut events = Vec::new();
        for (i, step) in case.events.into_iter().enumerate() {
            if let Some(e) = self.event(&format!("{field}.events[{i}]"), step) {
                events.push(e);
            }
        }
        let mut responses = HashMap::new();
        let mut keys: Vec<_> = case.responses.into_iter().collect();
        keys.sort_by_key(|(_, v)| (v.referenced.line(), v.referenced.column()));
        for (key, list) in keys {
            let f = format!("{field}.responses.{key}");
            let Some(t) = self.trigger(&key, &list.referenced, &f, true) else {
                continue;
            };
            if list.value.is_empty() {
                self.error(&list.referenced, &f, "give at least one response");
            }
            let shape = self.shape_of(&t);
            let stubs: Vec<_> = list
                .value
                .iter()
                .enumerate()
                .filter_map(|(i, s)| self.response(&format!("{f}[{i}]"), s, &shape))
                .collect();
            responses.insert((t.sensor, t.trigger), stubs);
        }
        let mut fired = Vec::new();
        let mut keys: Vec<_> = case.expect.fired.into_iter().collect();
        keys.sort_by_key(|(_, v)| (v.referenced.line(), v.referenced.column()));
        for (key, expect) in keys {
            let f = format!("{field}.expect.fired.{key}");
            let Some(t) = self.trigger(&key, &expect.referenced, &f, false) else {
                continue;
            };
            let position = self.origin.at(&expect.referenced);
            let (count, each, repeated) = match expect.value {
                OneOrMany::One(e) => {
                    let count = e.times.as_ref().map_or(1, |t| t.value as usize);
                    (count, vec![e], true)
                }
                OneOrMany::Many(list) => {
                    for (i, e) in list.iter().enumerate() {
                        if let Some(t) = &e.times {
                            self.error_with_hint(
                                &t.referenced,
                                &format!("{f}[{i}].times"),
                                "`times` goes with a single mapping, not a list",
                                "a list expects one firing per item",
                            );
                        }
                    }
                    (list.len(), list, false)
                }
            };
            for e in &each {
                self.check_fired(&f, e);
            }
            fired.push(FiredCheck {
                trigger: t,
                key,
                position,
                count,
                each,
                repeated,
            });
        }
        let mut not_fired = Vec::new();
        for (i, n) in case.expect.not_fired.iter().enumerate() {
            let f = format!("{field}.expect.notFired[{i}]");
            if let Some(t) = self.trigger(&n.value, &n.referenced, &f, false) {
                not_fired.push(Located {
                    value: t,
                    position: self.origin.at(&n.referenced),
                });
            }
        }
        let dead_letters = case.expect.dead_letters.as_ref().map(|list| {
            let triggers = list
                .value
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let f = format!("{field}.expect.deadLetters[{i}]");
                    self.trigger(&n.value, &n.referenced, &f, false)
                })
                .collect();
            Located {
                value: triggers,
                position: self.origin.at(&list.referenced),
            }
        });
        (self.errors.len() == before).then(|| ResolvedCase {
            name: case.name.value.clone(),
            position: self.origin.at(&case.name.referenced),
            clock,
            events,
            responses,
            fired,
            not_fired,
            dead_letters,
        })
    }

    fn check_fired(&mut self, field: &str, e: &FiredExpect) {
        if let (Some(p), Some(_)) = (&e.payload, &e.payload_exact) {
            self.error(
                &p.referenced,
                &format!("{field}.payload"),
                "set either payload (subset) or payloadExact, not both",
            );
        }
        if let Some(dl) = &e.dead_letter {
            if let (Some(p), Some(_)) = (&dl.value.payload, &dl.value.payload_exact) {
                self.error(
                    &p.referenced,
                    &format!("{field}.deadLetter.payload"),
                    "set either payload (subset) or payloadExact, not both",
                );
            }
            if e.outcome.as_ref().map(|o| o.value) == Some(ExpectedOutcome::Success) {
                self.error(
                    &dl.referenced,
                    &format!("{field}.deadLetter"),
                    "a trigger expected to succeed has no dead letter",
                );
            }
        }
        if let (Some(r), Some(o)) = (&e.reason, &e.outcome) {
            if o.value == ExpectedOutcome::Success {
                self.error(
                    &r.referenced,
                    &format!("{field}.reason"),
                    "`reason` is the dead-letter reason; it needs outcome: dead-letter",
                );
            }
        }
    }

    /// The stub shape of a resolved trigger (or dead-letter trigger).
    fn shape_of(&self, t: &TriggerRef) -> Shape {
        self.plan
            .sensors
            .iter()
            .filter(|s| s.name == t.sensor)
            .flat_map(|s| &s.triggers)
            .flat_map(|g| g.delivery.triggers())
            .find(|c| c.name == t.trigger)
            .map_or_else(Shape::default, CompiledTrigger::stub_shape)
    }

    /// A stub in its trigger's shape; a misuse is an error at the stub (or its field).
    fn response(
        &mut self,
        field: &str,
        s: &Spanned<StubSpec>,
        shape: &Shape,
    ) -> Option<StubResponse> {
        match shape.parse(&s.value) {
            Ok(stub) => Some(stub),
            Err(misuse) => {
                let at = match misuse.field {
                    Some(name) => format!("{field}.{name}"),
                    None => field.to_owned(),
                };
                match misuse.hint {
                    Some(hint) => self.error_with_hint(&s.referenced, &at, misuse.message, hint),
                    None => self.error(&s.referenced, &at, misuse.message),
                }
                None
            }
        }
    }

    fn event(&mut self, field: &str, step: EventStep) -> Option<ResolvedEvent> {
        let input = EventInput {
            data: step.data,
            context: step.context.unwrap_or_default(),
        };
        let after = match &step.after {
            None => Duration::ZERO,
            Some(a) => match parse_duration(&a.value) {
                Ok(d) => d,
                Err(e) => {
                    self.error_with_hint(
                        &a.referenced,
                        &format!("{field}.after"),
                        e,
                        "use a Go duration such as 500ms, 30s, 2h",
                    );
                    return None;
                }
            },
        };
        let (ctx_source, ctx_subject) = input.routing();
        let (ctx_source, ctx_subject) = (
            ctx_source.map(str::to_owned),
            ctx_subject.map(str::to_owned),
        );
        let (source, subject, at) = match (&step.dependency, &step.event_source, &step.event_name) {
            (Some(d), None, None) => {
                let (source, subject) = self.dependency(field, d, step.sensor.as_ref())?;
                (source, subject, d.referenced)
            }
            (None, Some(s), Some(n)) => (s.value.clone(), n.value.clone(), s.referenced),
            (None, None, None) => match (ctx_source, ctx_subject) {
                (Some(s), Some(n)) => (s, n, serde_saphyr::Location::UNKNOWN),
                _ => {
                    self.errors.push(
                        self.origin
                            .error(None, field, "which event is it?")
                            .with_hint("give `dependency: NAME`, or `eventSource` and `eventName`"),
                    );
                    return None;
                }
            },
            (Some(d), _, _) => {
                self.error(
                    &d.referenced,
                    field,
                    "give either `dependency` or `eventSource` and `eventName`, not both",
                );
                return None;
            }
            (None, s, n) => {
                let at = s
                    .as_ref()
                    .or(n.as_ref())
                    .map_or(serde_saphyr::Location::UNKNOWN, |x| x.referenced);
                self.error(&at, field, "`eventSource` and `eventName` go together");
                return None;
            }
        };
        let kind = self
            .plan
            .sources
            .iter()
            .find(|s| s.event_source == source && s.event_name == subject)
            .map_or("webhook", |s| s.kind_name());
        let listened = self.plan.sensors.iter().any(|s| {
            s.subscriptions()
                .any(|(es, en)| es == source && en == subject)
        });
        if !listened {
            self.error_with_hint(
                &at,
                field,
                format!("no sensor under test listens to {source}/{subject}"),
                format!("sensors listen to: {}", self.subscriptions()),
            );
            return None;
        }
        if let Err(e) = input.to_event(&source, &subject, kind, Utc::now()) {
            self.error(&at, &format!("{field}.context"), e);
            return None;
        }
        Some(ResolvedEvent {
            source,
            subject,
            kind: kind.to_owned(),
            input,
            after,
            position: if at.line() == 0 {
                self.origin.start()
            } else {
                self.origin.at(&at)
            },
        })
    }

    fn subscriptions(&self) -> String {
        let mut all: Vec<String> = self
            .plan
            .sensors
            .iter()
            .flat_map(|s| s.subscriptions().map(|(a, b)| format!("{a}/{b}")))
            .collect();
        all.sort();
        all.dedup();
        all.join(", ")
    }

    fn dependency(
        &mut self,
        field: &str,
        d: &Spanned<String>,
        sensor: Option<&Spanned<String>>,
    ) -> Option<(String, String)> {
        let mut found = Vec::new();
        for s in &self.plan.sensors {
            if sensor.is_some_and(|want| want.value != s.name) {
                continue;
            }
            for dep in &s.dependencies {
                if dep.name == d.value {
                    found.push((
                        s.name.clone(),
                        dep.event_source.clone(),
                        dep.event_name.clone(),
                    ));
                }
            }
        }
        // The same dependency name in several sensors is fine when it means the same event.
        found.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
        found.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
        match found.len() {
            1 => {
                let (_, source, name) = found.remove(0);
                Some((source, name))
            }
            0 => {
                let names: Vec<String> = self
                    .plan
                    .sensors
                    .iter()
                    .filter(|s| sensor.is_none_or(|want| want.value == s.name))
                    .flat_map(|s| s.dependencies.iter().map(|d| d.name.clone()))
                    .collect();
                self.error_with_hint(
                    &d.referenced,
                    &format!("{field}.dependency"),
                    format!("unknown dependency {:?}", d.value),
                    format!("dependencies: {}", names.join(", ")),
                );
                None
            }
            _ => {
                let sensors: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
                self.error_with_hint(
                    &d.referenced,
                    &format!("{field}.dependency"),
                    format!(
                        "dependency {:?} means different events in sensors {}",
                        d.value,
                        sensors.join(", ")
                    ),
                    "add `sensor: NAME`, or give eventSource and eventName",
                );
                None
            }
        }
    }

    /// Resolves `name` or `sensor/name`; `with_dlq` also accepts dead-letter triggers.
    fn trigger(
        &mut self,
        key: &str,
        at: &serde_saphyr::Location,
        field: &str,
        with_dlq: bool,
    ) -> Option<TriggerRef> {
        let (sensor, name) = match key.split_once('/') {
            Some((s, n)) => (Some(s), n),
            None => (None, key),
        };
        let mut found = Vec::new();
        let mut known = Vec::new();
        for s in &self.plan.sensors {
            for t in &s.triggers {
                let mut names = vec![t.delivery.trigger.name.as_str()];
                if with_dlq {
                    names.extend(t.delivery.dlq.as_ref().map(|d| d.trigger.name.as_str()));
                }
                for n in names {
                    known.push(n.to_owned());
                    if n == name && sensor.is_none_or(|want| want == s.name) {
                        found.push(TriggerRef {
                            sensor: s.name.clone(),
                            trigger: n.to_owned(),
                        });
                    }
                }
            }
        }
        found.dedup();
        match found.len() {
            1 => found.pop(),
            0 => {
                known.sort();
                known.dedup();
                self.error_with_hint(
                    at,
                    field,
                    format!("unknown trigger {key:?}"),
                    format!("triggers: {}", known.join(", ")),
                );
                None
            }
            _ => {
                let names: Vec<String> = found.iter().map(ToString::to_string).collect();
                self.error_with_hint(
                    at,
                    field,
                    format!("trigger {key:?} is ambiguous"),
                    format!("write one of: {}", names.join(", ")),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanned_wrappers_do_not_show_in_paths() {
        assert_eq!(strip_spanned("cases[0].name.value"), "cases[0].name");
        assert_eq!(
            strip_spanned("cases[0].responses.promote.value[1].value.status"),
            "cases[0].responses.promote[1].status"
        );
        assert_eq!(
            strip_spanned("cases[0].expect.fired.promote.value.outcome.value"),
            "cases[0].expect.fired.promote.outcome"
        );
        assert_eq!(
            strip_spanned("cases[0].expect.deadLetters.value[0].value"),
            "cases[0].expect.deadLetters[0]"
        );
        // A trigger that is itself called `value` keeps its name.
        assert_eq!(
            strip_spanned("cases[0].expect.fired.value.value.times"),
            "cases[0].expect.fired.value.times"
        );
    }

    #[test]
    fn malformed_files_have_positions_and_paths() {
        let text = "sensors: [s.yaml]\ncases:\n  - name: one\n    expect:\n      fired:\n        t:\n          payload: {a: 1}\n          atempts: 2\n";
        let e = parse(Path::new("x.test.yaml"), text).unwrap_err();
        assert_eq!(e.field, "cases[0].expect.fired.t.atempts");
        assert_eq!((e.position.line, e.position.column), (8, 11));
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.hint.is_some());
        let e = parse(
            Path::new("x.test.yaml"),
            "sensors: [s.yaml]\ncases: [{name: a\n",
        )
        .unwrap_err();
        assert!(e.position.line >= 2, "{e}");
    }

    #[test]
    fn fired_takes_a_mapping_a_list_or_nothing() {
        let text = "sensors: [s.yaml]\ncases:\n  - name: one\n    expect:\n      fired:\n        a: {attempts: 2}\n        b:\n          - {attempts: 1}\n          - {attempts: 3}\n        c:\n";
        let (file, _) = parse(Path::new("x.test.yaml"), text).unwrap();
        let fired = &file.cases[0].expect.fired;
        assert!(
            matches!(&fired["a"].value, OneOrMany::One(e) if e.attempts.as_ref().unwrap().value == 2)
        );
        assert!(matches!(&fired["b"].value, OneOrMany::Many(l) if l.len() == 2));
        assert!(matches!(&fired["c"].value, OneOrMany::One(e) if e.payload.is_none()));
        assert_eq!(fired["a"].referenced.line(), 6);
    }
}
