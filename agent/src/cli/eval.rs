//! `triggerd eval`: one script, or one dependency of a sensor, against one event; nothing is
//! sent anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use clap::{ArgGroup, Args, ValueEnum};
use rhai::Dynamic;
use serde_json::{json, Value};

use crate::event::Event;
use crate::event::FiredEvents;
use crate::manifest::load_paths;
use crate::plan::{build_plan, Plan};
use crate::policy::{outcome_from_script, Outcome};
use crate::script::{from_dynamic, Limits, ScriptError, ScriptHost, ScriptKind};
use crate::sensor::{CompiledSensor, Condition, Explanation, Logic};
use crate::testing::matcher::render;
use crate::testing::{read_document, EventInput};
use crate::trigger::{
    HttpStub, K8sOperation, K8sStub, LambdaStub, Shape, StubResponse, WorkflowOperation,
};

const LONG_ABOUT: &str = "\
Evaluates one script, or one dependency of a sensor, against one event, and prints the
result. Nothing is sent anywhere: triggers are not executed.

Script mode (--script FILE) runs a bare Rhai script with the variables of --kind in scope
and prints its result as JSON:
  filter, transform   event (the data), ctx (the CloudEvent context)
  parameter           event, ctx, events (the event under --dependency, default `event`)
  payload             events
  policy              response (from --response), attempt, max_attempts, events;
                      prints the outcome; also the raw result when it is written
                      another way (`true`, the bare text retry)

Sensor mode (-f SENSOR.yaml --dependency NAME, or the path without -f) runs the dependency's transform and filters
exactly as the agent does and prints the transformed data, whether each filter kind passes
(and why not), and for every trigger whose condition holds with this event alone the
request and the payload it would send.

The event file (--event, `-` for stdin) is JSON or YAML: either the data itself, or
`{data: ..., context: {...}}` with CloudEvent attributes (id, time, type, datacontenttype)
and extensions. A webhook's data is `{header: {...}, body: ...}`.";

const AFTER_LONG_HELP: &str = "\
EXAMPLES:
  triggerd eval -f manifests/examples/promotion.yaml --dependency report-passed --event report.json
  echo '{body: {status: failed, app: shop}}' | triggerd eval -f sensors/ --dependency report-failed --event - --json
  triggerd eval --script scripts/check.rhai --kind filter --event push.yaml
  triggerd eval --script policies/retry-on-5xx.rhai --kind policy --response '503.json' --attempt 2

A response file is {status, headers, body}, an awsLambda reply {status, functionError,
payload}, or {error: \"connection refused\"}.
Exit code: 0 when the evaluation ran (whatever the verdict), 1 on load or script errors.";

/// The scope of a bare script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `filters.script`: event, ctx; returns a bool.
    Filter,
    /// `transform.script`: event, ctx; returns the new data.
    Transform,
    /// Parameter `src.script`: event, ctx, events; returns the value.
    Parameter,
    /// `payloadScript`: events; returns the payload.
    Payload,
    /// `policy.script`: response, attempt, max_attempts, events; returns the outcome.
    Policy,
}

impl Kind {
    fn script_kind(self) -> ScriptKind {
        match self {
            Kind::Filter => ScriptKind::Filter,
            Kind::Transform => ScriptKind::Transform,
            Kind::Parameter => ScriptKind::Parameter,
            Kind::Payload => ScriptKind::Payload,
            Kind::Policy => ScriptKind::Policy,
        }
    }
}

/// Arguments of `eval`.
#[derive(Debug, Args)]
#[command(
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    group(ArgGroup::new("mode").required(true).multiple(true).args(["script", "files", "paths"]))
)]
pub struct EvalArgs {
    /// A bare Rhai script to evaluate.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// The script's scope (script mode).
    #[arg(long, value_enum, default_value_t = Kind::Transform, requires = "script")]
    kind: Kind,
    /// Manifest file or directory holding the sensor (sensor mode); repeatable.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        requires = "dependency",
        conflicts_with = "script"
    )]
    files: Vec<PathBuf>,
    /// The same as -f: manifest files or directories given without the flag.
    #[arg(
        value_name = "PATH",
        requires = "dependency",
        conflicts_with = "script"
    )]
    paths: Vec<PathBuf>,
    /// The dependency to evaluate (sensor mode); in script mode, the name of the event
    /// in `events` (default `event`).
    #[arg(long, value_name = "NAME")]
    dependency: Option<String>,
    /// The sensor, when several loaded sensors have that dependency.
    #[arg(long, value_name = "NAME")]
    sensor: Option<String>,
    /// The event: JSON or YAML file, `-` for stdin.
    #[arg(long, value_name = "FILE")]
    event: Option<PathBuf>,
    /// The response a policy judges: JSON or YAML file, `-` for stdin.
    #[arg(long, value_name = "FILE")]
    response: Option<PathBuf>,
    /// `attempt` for a policy.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// `max_attempts` for a policy.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Rhai library directory for `import` and `scriptFile`; repeatable.
    /// Default: ./scripts and ./policies when they exist.
    #[arg(long = "lib", value_name = "DIR")]
    lib: Vec<PathBuf>,
    /// Print JSON instead of text (sensor mode; script mode always prints JSON).
    #[arg(long)]
    json: bool,
}

/// Runs `eval`.
pub fn eval(args: EvalArgs) -> ExitCode {
    let lib = super::SourceArgs {
        files: Vec::new(),
        paths: Vec::new(),
        lib: args.lib.clone(),
    }
    .library_dirs();
    let result = match &args.script {
        Some(script) => eval_script(&args, script, lib),
        None => eval_sensor(&args, lib),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn read_event(path: Option<&Path>) -> Result<Option<EventInput>, String> {
    path.map(|p| read_document(p).and_then(EventInput::from_document))
        .transpose()
}

/// The event as a source would publish it; routing from the context when given.
fn event_of(input: &EventInput, source: &str, subject: &str, kind: &str) -> Result<Event, String> {
    input
        .to_event(source, subject, kind, Utc::now())
        .map_err(|e| format!("event: {e}"))
}

fn eval_script(args: &EvalArgs, path: &Path, lib: Vec<PathBuf>) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let host = ScriptHost::new(Limits::default(), lib);
    let kind = args.kind.script_kind();
    let script = host.compile(kind, &text).map_err(|e| {
        let (line, column) = match &e {
            ScriptError::Compile { line, column, .. }
            | ScriptError::Runtime { line, column, .. } => (*line, *column),
            _ => (1, 1),
        };
        let message = match &e {
            ScriptError::Compile { message, .. } | ScriptError::Runtime { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        };
        format!(
            "{}:{line}:{column}: Rhai: {message}\n  hint: variables in scope for --kind {}: {}",
            path.display(),
            kind.name(),
            kind.variables().join(", ")
        )
    })?;
    let input = read_event(args.event.as_deref())?;
    let needs_event = matches!(args.kind, Kind::Filter | Kind::Transform | Kind::Parameter);
    if needs_event && input.is_none() {
        return Err(format!("--event is required for --kind {}", kind.name()));
    }
    let event = input
        .map(|i| {
            let (source, subject) = i.routing();
            let (source, subject) = (
                source.unwrap_or("eval").to_owned(),
                subject.unwrap_or("event").to_owned(),
            );
            event_of(&i, &source, &subject, "webhook").map(Arc::new)
        })
        .transpose()?;
    let name = args.dependency.clone().unwrap_or_else(|| "event".into());
    let events = FiredEvents::new(
        event
            .iter()
            .map(|e| (name.clone(), e.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    let mut vars: Vec<(&str, Dynamic)> = Vec::new();
    if let Some(e) = &event {
        if matches!(args.kind, Kind::Filter | Kind::Transform | Kind::Parameter) {
            vars.push(("event", e.data_view()));
            vars.push(("ctx", e.context_view()));
        }
    }
    if matches!(args.kind, Kind::Parameter | Kind::Payload | Kind::Policy) {
        vars.push(("events", events.script_view()));
    }
    if args.kind == Kind::Policy {
        let Some(path) = &args.response else {
            return Err("--response is required for --kind policy".into());
        };
        let response = response_of(read_document(path)?)?;
        vars.push(("response", response.to_response().to_dynamic()));
        vars.push(("attempt", Dynamic::from(i64::from(args.attempt))));
        vars.push(("max_attempts", Dynamic::from(i64::from(args.max_attempts))));
    }
    let value = host
        .eval(&script, vars)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let output = match args.kind {
        Kind::Filter => {
            let pass = value.as_bool().map_err(|t| {
                format!(
                    "{}: a filter returns a bool; this one returned {t}",
                    path.display()
                )
            })?;
            Value::Bool(pass)
        }
        Kind::Policy => {
            let raw = from_dynamic(&value).unwrap_or_else(|_| json!(value.to_string()));
            let outcome = outcome_from_script(&value, "policy")
                .map_err(|e| format!("{}: not a policy result: {e}", path.display()))?;
            let outcome = outcome_json(&outcome);
            if raw == outcome {
                outcome
            } else {
                json!({ "result": raw, "outcome": outcome })
            }
        }
        _ => from_dynamic(&value).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    outln!(
        "{}",
        serde_json::to_string_pretty(&output).unwrap_or_default()
    );
    Ok(())
}

fn outcome_json(o: &Outcome) -> Value {
    match o {
        Outcome::Success => json!({ "outcome": "success" }),
        Outcome::Retry { reason, after } => {
            let mut v = json!({ "outcome": "retry", "reason": reason });
            if let Some(after) = after {
                v["afterMs"] = json!(after.as_millis() as u64);
            }
            v
        }
        Outcome::Fail { reason } => json!({ "outcome": "fail", "reason": reason }),
        Outcome::Wait => json!({ "outcome": "wait" }),
    }
}

fn response_of(doc: Value) -> Result<StubResponse, String> {
    let obj = doc
        .as_object()
        .ok_or("a response is a mapping: {status, headers, body} or {error}")?;
    if let Some(k) = obj.keys().find(|k| {
        ![
            "status",
            "headers",
            "body",
            "functionError",
            "payload",
            "error",
            "retryable",
            "operation",
            "object",
        ]
        .contains(&k.as_str())
    }) {
        return Err(format!(
            "response: unknown field {k:?} (fields: status, headers, body, error, retryable; \
             awsLambda: status, functionError, payload; k8s: operation, status, object)"
        ));
    }
    // `object` makes it a Kubernetes reply.
    if let Some(object) = obj.get("object") {
        let operation = obj
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("create");
        let operation = K8sOperation::NAMES
            .iter()
            .chain(WorkflowOperation::NAMES.iter())
            .find(|n| **n == operation)
            .ok_or_else(|| format!("response.operation: unknown operation {operation:?}"))?;
        let status = match obj.get("status") {
            None => 200,
            Some(s) => s
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or("response.status must be a number")?,
        };
        return Ok(StubResponse {
            shape: Shape::new(K8sStub { operation }),
            status,
            body: object.clone(),
            ..StubResponse::default()
        });
    }
    // `functionError` or `payload` make it an awsLambda reply.
    let lambda = obj.contains_key("functionError") || obj.contains_key("payload");
    if lambda && (obj.contains_key("body") || obj.contains_key("headers")) {
        return Err(
            "response: body and headers are http fields; an awsLambda reply has payload".into(),
        );
    }
    let function_error = match obj.get("functionError") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("response.functionError must be a string".into()),
    };
    let headers: BTreeMap<String, String> = match obj.get("headers") {
        None => BTreeMap::new(),
        Some(h) => serde_json::from_value(h.clone())
            .map_err(|e| format!("response.headers: {e} (a mapping of strings)"))?,
    };
    let error = obj.get("error").map(|e| match e {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let status = match obj.get("status") {
        None if error.is_some() => 0,
        None => return Err("response: give a status or an error".into()),
        Some(s) => s
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or("response.status must be a number")?,
    };
    let body = obj.get(if lambda { "payload" } else { "body" });
    Ok(StubResponse {
        shape: if lambda {
            Shape::new(LambdaStub)
        } else {
            Shape::new(HttpStub)
        },
        status,
        headers,
        body: body.cloned().unwrap_or(Value::Null),
        objects: Vec::new(),
        function_error,
        error,
        retryable: obj
            .get("retryable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

fn eval_sensor(args: &EvalArgs, lib: Vec<PathBuf>) -> Result<(), String> {
    let dependency = args.dependency.as_deref().unwrap_or_default();
    let paths: Vec<PathBuf> = args.files.iter().chain(&args.paths).cloned().collect();
    let (docs, mut errors) = load_paths(&paths);
    let host = ScriptHost::new(Limits::default(), lib.clone());
    let plan = match build_plan(&docs, &host, &lib) {
        Ok(plan) if errors.is_empty() => plan,
        Ok(_) => return Err(join_errors(&errors)),
        Err(mut more) => {
            errors.append(&mut more);
            return Err(join_errors(&errors));
        }
    };
    let sensor = pick_sensor(&plan, args.sensor.as_deref(), dependency)?;
    let Some(input) = read_event(args.event.as_deref())? else {
        return Err("--event is required: the event to evaluate".into());
    };
    let (index, dep) = sensor
        .dependencies
        .iter()
        .enumerate()
        .find(|(_, d)| d.name == dependency)
        .ok_or_else(|| format!("sensor {} has no dependency {dependency:?}", sensor.name))?;
    let source = plan
        .sources
        .iter()
        .find(|s| s.event_source == dep.event_source && s.event_name == dep.event_name);
    let kind = source.map_or("webhook", |s| s.kind_name());
    let mut event = event_of(&input, &dep.event_source, &dep.event_name, kind)?;
    if let Some(source) = source {
        source.add_extensions(&mut event);
    }
    let source_filter =
        source
            .and_then(|s| s.filter())
            .map(|f| match f.evaluate(&host, &event.data) {
                Ok(pass) => json!({ "pass": pass }),
                Err(e) => json!({ "pass": false, "error": e }),
            });
    let event = Arc::new(event);

    // The very acceptance the agent runs, asked to explain each step.
    let mut explained = Explanation::default();
    let accepted = dep.accept(&host, &event, Some(&mut explained));
    let transform = explained.transform.as_ref().map(|t| match t {
        Ok(data) => json!({ "data": data }),
        Err(e) => json!({ "error": e }),
    });
    let kinds: Vec<Value> = explained
        .kinds
        .iter()
        .map(|(kind, v)| json!({ "kind": kind, "pass": v.pass && v.error.is_none(), "error": v.error }))
        .collect();
    let verdict = match &accepted {
        Ok(_) => json!({ "pass": true }),
        Err(v) => json!({ "pass": false, "error": v.error }),
    };
    let names: Vec<String> = sensor.dependencies.iter().map(|d| d.name.clone()).collect();
    let mut present = vec![false; names.len()];
    present[index] = true;
    let triggers: Vec<Value> = sensor
        .triggers
        .iter()
        .map(|t| {
            let mut out = json!({
                "name": t.delivery.trigger.name,
                "condition": condition_text(&t.condition, &names),
            });
            let fires = accepted.is_ok() && t.condition.holds(&present);
            out["fires"] = json!(fires);
            if !t.mentions.contains(&index) {
                out["note"] = json!("does not depend on this dependency");
            } else if !t.condition.holds(&present) {
                out["note"] = json!("needs other dependencies too");
            } else if accepted.is_err() {
                out["note"] = json!("the event is rejected");
            }
            if let (true, Ok(e)) = (fires, &accepted) {
                let fired = FiredEvents::new(BTreeMap::from([(dep.name.clone(), e.clone())]));
                match t.delivery.trigger.invocation(&host, &fired) {
                    Ok(inv) => out["request"] = inv.to_json(),
                    Err(e) => out["error"] = json!(e.to_string()),
                }
                match t.delivery.trigger.build_payload(&host, &fired, None) {
                    Ok(p) => out["payload"] = p,
                    Err(e) => out["error"] = json!(e.to_string()),
                }
            }
            out
        })
        .collect();
    let logic = match dep.filters.logic() {
        Logic::And => "and",
        Logic::Or => "or",
    };
    let report = json!({
        "sensor": sensor.name,
        "dependency": dep.name,
        "eventSource": dep.event_source,
        "eventName": dep.event_name,
        "sourceFilter": source_filter,
        "transform": transform,
        "filters": {
            "logic": logic,
            "pass": verdict["pass"],
            "error": verdict.get("error").cloned().unwrap_or(Value::Null),
            "kinds": kinds,
        },
        "accepted": accepted.is_ok(),
        "triggers": triggers,
    });
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        out!("{}", text_report(&report));
    }
    Ok(())
}

fn join_errors(errors: &[crate::manifest::ManifestError]) -> String {
    let mut out: Vec<String> = errors.iter().map(ToString::to_string).collect();
    out.push(format!("{} error(s)", errors.len()));
    out.join("\n")
}

fn pick_sensor<'a>(
    plan: &'a Plan,
    name: Option<&str>,
    dependency: &str,
) -> Result<&'a CompiledSensor, String> {
    if let Some(name) = name {
        return plan
            .sensors
            .iter()
            .find(|s| s.name == name)
            .map(|s| &**s)
            .ok_or_else(|| {
                let names: Vec<&str> = plan.sensors.iter().map(|s| s.name.as_str()).collect();
                format!("no sensor {name:?} (sensors: {})", names.join(", "))
            });
    }
    let with: Vec<&CompiledSensor> = plan
        .sensors
        .iter()
        .filter(|s| s.dependencies.iter().any(|d| d.name == dependency))
        .map(|s| &**s)
        .collect();
    match with.as_slice() {
        [one] => Ok(one),
        [] => {
            let all: Vec<String> = plan
                .sensors
                .iter()
                .flat_map(|s| {
                    s.dependencies
                        .iter()
                        .map(move |d| format!("{}/{}", s.name, d.name))
                })
                .collect();
            Err(format!(
                "no sensor has a dependency {dependency:?} (dependencies: {})",
                all.join(", ")
            ))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
            Err(format!(
                "several sensors have a dependency {dependency:?}: {}; pick one with --sensor",
                names.join(", ")
            ))
        }
    }
}

/// A condition as written: `a && (b || c)`.
pub fn condition_text(c: &Condition, names: &[String]) -> String {
    fn go(c: &Condition, names: &[String], parent_and: bool) -> String {
        match c {
            Condition::Dep(i) => names.get(*i).cloned().unwrap_or_default(),
            Condition::And(all) => all
                .iter()
                .map(|c| go(c, names, true))
                .collect::<Vec<_>>()
                .join(" && "),
            Condition::Or(any) => {
                let s = any
                    .iter()
                    .map(|c| go(c, names, false))
                    .collect::<Vec<_>>()
                    .join(" || ");
                if parent_and {
                    format!("({s})")
                } else {
                    s
                }
            }
        }
    }
    go(c, names, false)
}

fn text_report(r: &Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sensor {}, dependency {} ({}/{})",
        s(&r["sensor"]),
        s(&r["dependency"]),
        s(&r["eventSource"]),
        s(&r["eventName"])
    );
    if let Some(f) = r.get("sourceFilter").filter(|f| !f.is_null()) {
        let _ = writeln!(out, "eventSource filter: {}", pass_text(f));
    }
    match r.get("transform").filter(|t| !t.is_null()) {
        None => {
            let _ = writeln!(out, "transform: none");
        }
        Some(t) => match t.get("data") {
            Some(data) => {
                let _ = writeln!(out, "transform: ok, data:\n{}", render(data, "  "));
            }
            None => {
                let _ = writeln!(out, "transform: FAILED: {}", s(&t["error"]));
            }
        },
    }
    let f = &r["filters"];
    let kinds = f["kinds"].as_array().cloned().unwrap_or_default();
    if kinds.is_empty() && f["pass"] == json!(true) {
        let _ = writeln!(out, "filters: none");
    } else {
        let _ = writeln!(out, "filters ({}): {}", s(&f["logic"]), pass_text(f));
        for k in &kinds {
            let _ = writeln!(out, "  {:<8} {}", s(&k["kind"]), pass_text(k));
        }
    }
    let _ = writeln!(out, "triggers:");
    for t in r["triggers"].as_array().into_iter().flatten() {
        let name = s(&t["name"]);
        if t["fires"] != json!(true) {
            let _ = writeln!(
                out,
                "  {name}: does not fire ({}; condition: {})",
                s(&t["note"]),
                s(&t["condition"])
            );
            continue;
        }
        let _ = writeln!(out, "  {name}: fires");
        if let Some(req) = t.get("request") {
            match s(&req["type"]).as_str() {
                "http" => {
                    let _ = writeln!(out, "    request: {} {}", s(&req["method"]), s(&req["url"]));
                    if let Some(h) = req["headers"].as_object().filter(|h| !h.is_empty()) {
                        for (k, v) in h {
                            let _ = writeln!(out, "      {k}: {}", v.as_str().unwrap_or(""));
                        }
                    }
                }
                other => {
                    let _ = writeln!(out, "    request: {other}");
                }
            }
        }
        if let Some(p) = t.get("payload") {
            let _ = writeln!(out, "    payload:\n{}", render(p, "      "));
        }
        if let Some(e) = t.get("error") {
            let _ = writeln!(out, "    ERROR: {}", s(e));
        }
    }
    out
}

fn pass_text(v: &Value) -> String {
    match (v["pass"].as_bool(), v.get("error").and_then(Value::as_str)) {
        (Some(true), None) => "pass".into(),
        (Some(true), Some(e)) => format!("pass (errors: {e})"),
        (_, Some(e)) => format!("FAIL: {e}"),
        (_, None) => "FAIL: does not match".into(),
    }
}
