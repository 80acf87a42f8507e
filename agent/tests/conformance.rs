//! Conformance runner: checks triggerd's own filters, transforms, parameters, policies and
//! source helpers against the cases taken from Argo Events' unit tests.
//!
//! Reads every `*.yaml` in `CONFORMANCE_DIR` (default `/work/shared/conformance`, i.e.
//! `<agent>/../../shared/conformance`), runs each case, and prints one line per failing
//! (`FAIL`), skipped (`SKIP`) and deliberately different (`DEVIATION`) case, then
//! `conformance: N passed, M failed, K skipped`. Only cases that need Lua or Go templates
//! may be skipped; a case the runner cannot map fails. Deliberate differences from Argo are
//! listed in `tests/conformance-deviations.yaml`; a listed case that matches Argo fails, so
//! the list cannot go stale. Set `CONFORMANCE_VERBOSE=1` to also print passing cases.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use triggerd::compile::{compile_standalone, CompileContext};
use triggerd::event::Event;
use triggerd::event::FiredEvents;
use triggerd::manifest::{Filters, Parameter, Policy, SourceFilter, Spanned, Transform};
use triggerd::policy::{labels_satisfied, CompiledPolicy, Outcome};
use triggerd::script::{to_dynamic, Limits, ScriptHost};
use triggerd::sensor::{CompiledFilters, CompiledTransform, Logic};
use triggerd::source::{expand, request_body, EventSourceFilter};
use triggerd::trigger::params::{apply_all, CompiledParameter};
use triggerd::trigger::{HttpReply, HttpRequestSpec, K8sReply, Reply, Response};

#[test]
fn argo_conformance_cases() {
    let dir = std::env::var_os("CONFORMANCE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
        PathBuf::from,
    );
    if !dir.is_dir() && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipped: the conformance cases are not at {} (they live in ../shared beside the \
             repository; set CONFORMANCE_DIR, or CI=true to make their absence fail)",
            dir.display()
        );
        return;
    }
    let verbose = std::env::var("CONFORMANCE_VERBOSE").is_ok_and(|v| !v.is_empty() && v != "0");
    let deviations = load_deviations(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-deviations.yaml"),
    );
    let files = case_files(&dir);
    assert!(
        !files.is_empty(),
        "no *.yaml case files in {}",
        dir.display()
    );

    let mut tally = Tally::default();
    let mut seen = HashSet::new();
    let runner = Runner::new();
    for file in &files {
        let cases = match read_cases(file) {
            Ok(c) => c,
            Err(e) => {
                tally.fail(&file.display().to_string(), &e);
                continue;
            }
        };
        for case in cases {
            if !seen.insert(case.id.clone()) {
                tally.fail(&case.id, "duplicate case id");
                continue;
            }
            let outcome = runner.run(&case);
            tally.record(&case.id, outcome, deviations.get(&case.id), verbose);
        }
    }
    for (id, reason) in &deviations {
        if !seen.contains(id) {
            tally.fail(
                id,
                &format!("listed in deviations ({reason}) but no such case"),
            );
        }
    }
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    assert_eq!(tally.failed, 0, "{} conformance cases failed", tally.failed);
}

// ---------------------------------------------------------------------------------------
// Cases, files and bookkeeping
// ---------------------------------------------------------------------------------------

/// One case with placeholders substituted and back-references (`<same as previous case>`,
/// `<other four params unchanged>`) resolved.
struct Case {
    id: String,
    /// The Go function as written (`filterData(filters, dataLogicalOperator, event)`).
    function: String,
    raw: Value,
    /// Why the case could not even be prepared (a dangling back-reference).
    problem: Option<String>,
}

impl Case {
    /// The function name without its argument list (`filterData`, `webhook HandleRoute`).
    fn name(&self) -> &str {
        self.function.split('(').next().unwrap_or_default().trim()
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    fn require(&self, key: &str) -> Result<&Value, String> {
        self.get(key)
            .ok_or_else(|| format!("case has no `{key}` to run"))
    }

    fn spec(&self) -> Result<&Value, String> {
        self.require("spec")
    }

    fn spec_field(&self, key: &str) -> Result<&Value, String> {
        self.spec()?
            .get(key)
            .ok_or_else(|| format!("spec has no `{key}`"))
    }

    fn expect(&self) -> Result<&Value, String> {
        self.require("expect")
    }

    /// The expectations, refusing keys this function family does not check (so nothing an
    /// Argo test asserts is silently ignored).
    fn expect_only(&self, known: &[&str]) -> Result<&Value, String> {
        let expect = self.expect()?;
        let map = expect
            .as_object()
            .ok_or("`expect` is not a map for this function")?;
        match map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!("runner does not know how to check expect.{k}")),
            None => Ok(expect),
        }
    }
}

/// Events and payload parameters of the previous case, for back-references.
#[derive(Default)]
struct Previous {
    events: Option<Value>,
    payload: Option<Vec<Value>>,
}

/// How a case ended, before deviations are taken into account.
enum CaseOutcome {
    /// Same result as Argo.
    Matched,
    /// Argo reports an error at run time; triggerd refuses the spec at load time.
    RejectedAtLoad(String),
    /// Different from Argo, or the case could not be run: what differed.
    Differs(String),
    /// Not applicable to triggerd (Lua, Go templates).
    Skipped(&'static str),
}

/// What a family runner returns: `Err` is what differed.
type Checked = Result<CaseOutcome, String>;

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn fail(&mut self, id: &str, why: &str) {
        println!("FAIL {id}: {why}");
        self.failed += 1;
    }

    fn record(
        &mut self,
        id: &str,
        outcome: CaseOutcome,
        deviation: Option<&String>,
        verbose: bool,
    ) {
        match (outcome, deviation) {
            (CaseOutcome::Skipped(reason), None) => {
                println!("SKIP {id}: {reason}");
                self.skipped += 1;
            }
            (CaseOutcome::Skipped(reason), Some(_)) => {
                self.fail(id, &format!("listed in deviations but {reason}"));
            }
            (CaseOutcome::Differs(what), None) => self.fail(id, &what),
            (CaseOutcome::Differs(what), Some(reason)) => {
                println!("DEVIATION {id}: {reason}");
                if verbose {
                    println!("  differs: {what}");
                }
                self.passed += 1;
            }
            (CaseOutcome::Matched | CaseOutcome::RejectedAtLoad(_), Some(_)) => {
                self.fail(id, "deviation no longer needed: triggerd matches Argo");
            }
            (CaseOutcome::Matched, None) => {
                if verbose {
                    println!("PASS {id}");
                }
                self.passed += 1;
            }
            (CaseOutcome::RejectedAtLoad(why), None) => {
                if verbose {
                    println!("PASS {id} (rejected at load: {why})");
                }
                self.passed += 1;
            }
        }
    }
}

fn case_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read CONFORMANCE_DIR {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
        .collect();
    files.sort();
    files
}

fn load_deviations(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Deviation {
        id: String,
        reason: String,
    }
    let list: Option<Vec<Deviation>> = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: expected a list of {{id, reason}}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for d in list.unwrap_or_default() {
        assert!(
            out.insert(d.id.clone(), d.reason).is_none(),
            "{}: {} listed twice",
            path.display(),
            d.id
        );
    }
    out
}

/// Reads one case file into prepared cases, in file order.
fn read_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("not valid YAML: {e}"))?;
    let categories = doc
        .get("cases")
        .and_then(Value::as_object)
        .ok_or("no `cases:` map of category -> list")?;
    let now = Utc::now();
    let mut previous = Previous::default();
    let mut out = Vec::new();
    for (category, list) in categories {
        let Some(list) = list.as_array() else {
            return Err(format!("cases.{category} is not a list"));
        };
        for (i, raw) in list.iter().enumerate() {
            out.push(prepare(
                raw,
                &format!("{category}[{i}]"),
                now,
                &mut previous,
            ));
        }
    }
    Ok(out)
}

/// Substitutes placeholders and resolves back-references to the previous case.
fn prepare(raw: &Value, fallback_id: &str, now: DateTime<Utc>, previous: &mut Previous) -> Case {
    let mut raw = raw.clone();
    substitute_placeholders(&mut raw, now);
    let id = raw
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(fallback_id)
        .to_owned();
    let function = raw
        .get("function")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut problem = None;
    if let Some(events) = raw.get_mut("events") {
        if events.as_str() == Some("<same as previous case>") {
            match &previous.events {
                Some(prev) => *events = prev.clone(),
                None => problem = Some("`<same as previous case>` but no previous events".into()),
            }
        }
        if events.is_object() {
            previous.events = Some(events.clone());
        }
    }
    if let Some(Value::Array(payload)) = raw.get_mut("spec").and_then(|s| s.get_mut("payload")) {
        let marker = payload.iter().position(|p| {
            p.as_str()
                .is_some_and(|s| s.starts_with("<other") && s.ends_with("unchanged>"))
        });
        if let Some(at) = marker {
            payload.truncate(at);
            match &previous.payload {
                Some(prev) if prev.len() >= at => payload.extend(prev[at..].iter().cloned()),
                _ => {
                    problem = Some(
                        "payload refers to the previous case's params, which has too few".into(),
                    )
                }
            }
        }
        previous.payload = Some(payload.clone());
    }
    if function.is_empty() && problem.is_none() {
        problem = Some("case has no `function`".into());
    }
    Case {
        id,
        function,
        raw,
        problem,
    }
}

/// `<now>` → current UTC time (RFC 3339); `<today>` → today's UTC date.
fn substitute_placeholders(v: &mut Value, now: DateTime<Utc>) {
    match v {
        Value::String(s) if s.contains("<now>") || s.contains("<today>") => {
            *s = s
                .replace("<now>", &now.to_rfc3339_opts(SecondsFormat::Secs, true))
                .replace("<today>", &now.format("%Y-%m-%d").to_string());
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| substitute_placeholders(i, now)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|i| substitute_placeholders(i, now)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------

struct Runner {
    host: ScriptHost,
}

impl Runner {
    fn new() -> Self {
        Self {
            host: ScriptHost::new(Limits::default(), vec![]),
        }
    }

    /// Runs one case; a panic inside triggerd (or the runner) is a failure of that case.
    fn run(&self, case: &Case) -> CaseOutcome {
        if let Some(problem) = &case.problem {
            return CaseOutcome::Differs(problem.clone());
        }
        if let Some(reason) = not_applicable(case) {
            return CaseOutcome::Skipped(reason);
        }
        match catch_unwind(AssertUnwindSafe(|| self.dispatch(case))) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(what)) => CaseOutcome::Differs(what),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                CaseOutcome::Differs(format!("panicked: {msg}"))
            }
        }
    }

    fn dispatch(&self, case: &Case) -> Checked {
        match case.name() {
            "filterData" | "filterExpr" | "filterContext" | "filterTime" => {
                self.filters(case, false)
            }
            "filterEvent" | "Filter" => self.filters(case, true),
            "applyJQTransform" | "applyScriptTransform" => self.transform(case),
            "ResolveParamValue" => self.resolve_param_value(case),
            "ConstructPayload" => self.construct_payload(case),
            "ApplyParams" => self.apply_params(case),
            "ApplyResourceParameters" => self.apply_resource_parameters(case),
            "HTTPTrigger.ApplyResourceParameters" => self.http_apply_parameters(case),
            "renderEventDataAsJSON" => self.render_event_data(case),
            "getValueByKey" => self.get_value_by_key(case),
            "StatusPolicy.ApplyPolicy" => self.status_policy(case),
            "ResourceLabels.ApplyPolicy" => self.resource_labels_policy(case),
            "EvalBool" => self.eval_bool(case),
            "Expand" => self.expand(case),
            "webhook HandleRoute" => self.webhook_route(case),
            other => Err(format!("runner has no mapping for function {other:?}")),
        }
    }
}

/// Cases that need Lua or Go templates, which triggerd replaces with Rhai by design.
fn not_applicable(case: &Case) -> Option<&'static str> {
    let f = case.function.to_ascii_lowercase();
    if f.contains("lua") || f.contains("filterscript") {
        return Some("not applicable: Lua");
    }
    let spec = case.get("spec")?;
    if any_entry(spec, &|k, v| {
        matches!(k, "dataTemplate" | "contextTemplate") || (k == "template" && v.is_string())
    }) {
        return Some("not applicable: Go template");
    }
    if any_entry(spec, &|k, v| {
        k == "script" && v.as_str().is_some_and(looks_like_lua)
    }) {
        return Some("not applicable: Lua");
    }
    None
}

/// Whether any map entry, at any depth, satisfies `pred`.
fn any_entry(v: &Value, pred: &dyn Fn(&str, &Value) -> bool) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| pred(k, v) || any_entry(v, pred)),
        Value::Array(items) => items.iter().any(|i| any_entry(i, pred)),
        _ => false,
    }
}

fn looks_like_lua(source: &str) -> bool {
    let words: Vec<&str> = source
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .collect();
    (words.contains(&"then") && words.contains(&"end"))
        || source.contains("~=")
        || source.contains("local ")
        || source.contains("setmetatable")
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

/// `Filter` / `filterEvent`: a dependency's filters and how they combine.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilterEventSpec {
    #[serde(default)]
    filters: Filters,
    #[serde(default)]
    filters_logical_operator: Option<Spanned<String>>,
}

impl Runner {
    /// `filterData`, `filterExpr`, `filterContext`, `filterTime` (`combined` false: the spec
    /// is one kind of `filters`) and `filterEvent`/`Filter` (the spec has `filters` and
    /// `filtersLogicalOperator`).
    fn filters(&self, case: &Case, combined: bool) -> Checked {
        let expect = case.expect_only(&["pass", "error", "pass_per_event_time"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let spec = case.spec()?;
        let compiled = if combined {
            compile::<FilterEventSpec, _>(&self.host, spec, |ctx, s| {
                let logic =
                    Logic::compile(ctx, "filtersLogicalOperator", &s.filters_logical_operator);
                Some(CompiledFilters::compile(ctx, "filters", &s.filters, logic))
            })
        } else {
            compile::<Filters, _>(&self.host, spec, |ctx, f| {
                Some(CompiledFilters::compile(ctx, "filters", f, Logic::And))
            })
        };
        let filters = match compiled {
            Ok(f) => f,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        if let Some(times) = case.get("event_times_utc_today") {
            return self.time_table(&filters, times, expect, &errors);
        }
        let event = build_event(case.require("event")?)?;
        let verdict = filters.evaluate(&self.host, event.as_ref(), None);
        let mut diffs = Vec::new();
        match expect.get("pass") {
            Some(Value::Bool(want)) => {
                diffs.extend(check_pass(*want, verdict.pass, &verdict.error))
            }
            Some(other) => return Err(format!("expect.pass is not a bool: {other}")),
            None if expect.get("error").is_none() => return Err("no expectation to check".into()),
            None => {}
        }
        diffs.extend(errors.check(verdict.error.as_deref()));
        verdict_of(diffs)
    }

    /// Time filters run once per event time of today (UTC).
    fn time_table(
        &self,
        filters: &CompiledFilters,
        times: &Value,
        expect: &Value,
        errors: &ErrorExpect,
    ) -> Checked {
        let times = times
            .as_array()
            .ok_or("event_times_utc_today is not a list")?;
        let wants = expect
            .get("pass_per_event_time")
            .and_then(Value::as_array)
            .ok_or("event_times_utc_today needs expect.pass_per_event_time")?;
        if times.len() != wants.len() {
            return Err("event_times_utc_today and pass_per_event_time differ in length".into());
        }
        let today = Utc::now().format("%Y-%m-%d");
        let mut diffs = Vec::new();
        for (t, want) in times.iter().zip(wants) {
            let t = scalar_text(t);
            let want = want
                .as_bool()
                .ok_or("pass_per_event_time holds a non-bool")?;
            let event = build_event(&json!({"context": {"time": format!("{today}T{t}Z")}}))?;
            let verdict = filters.evaluate(&self.host, event.as_ref(), None);
            for d in check_pass(want, verdict.pass, &verdict.error)
                .into_iter()
                .chain(errors.check(verdict.error.as_deref()))
            {
                diffs.push(format!("at {t}: {d}"));
            }
        }
        verdict_of(diffs)
    }

    // -----------------------------------------------------------------------------------
    // Transforms
    // -----------------------------------------------------------------------------------

    /// `applyJQTransform` / `applyScriptTransform` (non-Lua): the new event data.
    fn transform(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error", "data", "data_subset"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let compiled =
            compile::<Transform, _>(&self.host, case.spec_field("transform")?, |ctx, t| {
                CompiledTransform::compile(ctx, "transform", t)
            });
        let transform = match compiled {
            Ok(t) => t,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let event =
            build_event(case.require("event")?)?.ok_or("transform case has a null event")?;
        let result = transform.apply(&self.host, &event, to_dynamic(&event.context_json()));
        let mut diffs = errors.check(result.as_ref().err().map(String::as_str));
        if let Ok(data) = &result {
            diffs.extend(check_json("data", expect.get("data"), data));
            diffs.extend(check_subset("data", expect.get("data_subset"), data));
        }
        verdict_of(diffs)
    }

    // -----------------------------------------------------------------------------------
    // Parameters
    // -----------------------------------------------------------------------------------

    /// `ResolveParamValue`: one `src` against the events.
    fn resolve_param_value(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error", "value"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let (fired, names) = fired_events(case)?;
        let param = json!({"src": case.spec_field("src")?, "dest": "value"});
        let params = match compile_params(&self.host, &json!([param]), &names) {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let result = params[0].resolve(&self.host, &fired);
        let err = result.as_ref().err().map(ToString::to_string);
        let mut diffs = errors.check(err.as_deref());
        if let (Ok(got), Some(want)) = (&result, expect.get("value")) {
            let dependency = case
                .spec_field("src")?
                .get("dependencyName")
                .and_then(Value::as_str)
                .and_then(|d| fired.by_dependency.get(d));
            diffs.extend(check_resolved(want, got.as_ref(), dependency.map(|e| &**e)));
        }
        verdict_of(diffs)
    }

    /// `ConstructPayload`: payload parameters applied to `{}`.
    fn construct_payload(&self, case: &Case) -> Checked {
        let expect =
            case.expect_only(&["error", "payload", "payload_subset", "payload_contains"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let (fired, names) = fired_events(case)?;
        let params = match compile_params(&self.host, case.spec_field("payload")?, &names) {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let mut payload = json!({});
        let result = apply_all(&params, &self.host, &fired, &mut payload);
        let err = result.as_ref().err().map(ToString::to_string);
        let mut diffs = errors.check(err.as_deref());
        if result.is_ok() {
            diffs.extend(check_json("payload", expect.get("payload"), &payload));
            diffs.extend(check_subset(
                "payload",
                expect.get("payload_subset"),
                &payload,
            ));
            if let Some(want) = expect.get("payload_contains") {
                let want = want
                    .as_str()
                    .ok_or("expect.payload_contains is not a string")?;
                let got = serde_json::to_string(&payload).unwrap_or_default();
                if !got.contains(want) {
                    diffs.push(format!("payload: expected to contain {want}, got {got}"));
                }
            }
        }
        verdict_of(diffs)
    }

    /// `ApplyParams`: parameters applied to a JSON object given as text.
    fn apply_params(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error", "result_raw"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let (fired, names) = fired_events(case)?;
        let input = case
            .require("input_object_raw")?
            .as_str()
            .ok_or("input_object_raw is not a string")?;
        let mut target: Value = serde_json::from_str(input)
            .map_err(|e| format!("input_object_raw is not JSON: {e}"))?;
        let params = match compile_params(&self.host, case.spec_field("parameters")?, &names) {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let result = apply_all(&params, &self.host, &fired, &mut target);
        let err = result.as_ref().err().map(ToString::to_string);
        let mut diffs = errors.check(err.as_deref());
        if let (Ok(()), Some(want)) = (&result, expect.get("result_raw")) {
            diffs.extend(check_json_text("result", want, &target)?);
        }
        verdict_of(diffs)
    }

    /// `ApplyResourceParameters`: parameters applied to a Kubernetes object; expectations
    /// name paths in the result (`metadata.name`).
    fn apply_resource_parameters(&self, case: &Case) -> Checked {
        let expect = case.expect()?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let (fired, names) = fired_events(case)?;
        let mut target = case.require("input_object")?.clone();
        let params = match compile_params(&self.host, case.spec_field("parameters")?, &names) {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let result = apply_all(&params, &self.host, &fired, &mut target);
        let err = result.as_ref().err().map(ToString::to_string);
        let mut diffs = errors.check(err.as_deref());
        if result.is_ok() {
            diffs.extend(check_paths(expect, &target, |_| None)?);
        }
        verdict_of(diffs)
    }

    /// `HTTPTrigger.ApplyResourceParameters`: `http.parameters` applied to the trigger's
    /// `http` spec, which is then read as triggerd reads it (`HttpRequestSpec`).
    fn http_apply_parameters(&self, case: &Case) -> Checked {
        let expect = case.expect()?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let (fired, names) = fired_events(case)?;
        let mut target = case
            .require("input_trigger")?
            .get("http")
            .cloned()
            .ok_or("input_trigger has no `http`")?;
        let params = match compile_params(&self.host, case.spec_field("http.parameters")?, &names) {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let result = apply_all(&params, &self.host, &fired, &mut target)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                serde_json::from_value::<HttpRequestSpec>(target.clone())
                    .map_err(|e| format!("trigger spec after parameters: {e}"))
            });
        let mut diffs = errors.check(result.as_ref().err().map(String::as_str));
        if let Ok(spec) = &result {
            diffs.extend(check_paths(expect, &target, |key| match key {
                "url" => Some(Value::String(spec.url.clone())),
                "method" => Some(spec.method.clone().map_or(Value::Null, Value::String)),
                _ => None,
            })?);
        }
        verdict_of(diffs)
    }

    /// `renderEventDataAsJSON`: the event data as JSON text (what gjson keys read).
    fn render_event_data(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error", "json_raw"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let event = build_event(case.require("event")?)?.ok_or("event is null")?;
        let mut diffs = errors.check(None);
        let want = expect.get("json_raw").ok_or("no expect.json_raw")?;
        match event.data_text() {
            None => diffs.push("json: expected data, got none (data_text() is None)".into()),
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(got) => diffs.extend(check_json_text("json", want, &got)?),
                Err(_) => diffs.push(format!(
                    "json: expected {}, got non-JSON text {:?}",
                    scalar_text(want),
                    short(&text)
                )),
            },
        }
        verdict_of(diffs)
    }

    /// `getValueByKey`: a gjson key read through a raw-data parameter.
    fn get_value_by_key(&self, case: &Case) -> Checked {
        let data = case.require("data")?;
        let rows = case
            .expect()?
            .as_array()
            .ok_or("expect is not a list of {key, value, type}")?;
        let event = event_from_parts(&json!({}), data_of(&json!({"data": data}))?)?;
        let fired = FiredEvents::new(BTreeMap::from([("d".to_owned(), Arc::new(event))]));
        let mut diffs = Vec::new();
        for row in rows {
            let key = row
                .get("key")
                .and_then(Value::as_str)
                .ok_or("row without key")?;
            let kind = row
                .get("type")
                .and_then(Value::as_str)
                .ok_or("row without type")?;
            let param = json!([{"src": {"dependencyName": "d", "dataKey": key, "useRawData": true}, "dest": "x"}]);
            let params = compile_params(&self.host, &param, &["d".to_owned()])
                .map_err(|e| format!("key {key}: rejected at load: {e}"))?;
            let got = params[0]
                .resolve(&self.host, &fired)
                .map_err(|e| format!("key {key}: {e}"))?;
            let ok = match (kind, &got) {
                ("Null", Some(Value::Null)) => true,
                ("String", Some(Value::String(s))) => {
                    Some(s.as_str()) == row.get("value").and_then(Value::as_str)
                }
                ("Null" | "String", _) => false,
                (other, _) => return Err(format!("key {key}: unknown type {other:?}")),
            };
            if !ok {
                diffs.push(format!(
                    "key {key}: expected {kind} {}, got {}",
                    row.get("value").map(scalar_text).unwrap_or_default(),
                    got.as_ref()
                        .map_or("no value".into(), |v| short(&v.to_string()))
                ));
            }
        }
        verdict_of(diffs)
    }

    // -----------------------------------------------------------------------------------
    // Policies
    // -----------------------------------------------------------------------------------

    /// `StatusPolicy.ApplyPolicy`: `policy.status.allow` judging a response status.
    fn status_policy(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let compiled = compile::<Policy, _>(&self.host, case.spec_field("policy")?, |ctx, p| {
            CompiledPolicy::compile(ctx, "policy", Some(p))
        });
        let policy = match compiled {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let status = match case.get("response_status") {
            None => 200,
            Some(v) => v
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or("response_status is not a status code")?,
        };
        let response = Response::replied(
            Reply::new(HttpReply::status(status)),
            std::time::Duration::ZERO,
        );
        let error = match policy.judge(
            &self.host,
            &response,
            1,
            1,
            &triggerd::event::FiredEvents::new(Default::default()),
        ) {
            Ok(Outcome::Success) => None,
            Ok(Outcome::Fail { reason } | Outcome::Retry { reason, .. }) => Some(reason),
            Ok(Outcome::Wait) => Some("the policy waits".into()),
            Err(e) => Some(e.to_string()),
        };
        verdict_of(errors.check(error.as_deref()))
    }

    /// `ResourceLabels.ApplyPolicy`: the expected labels must be on the live object.
    fn resource_labels_policy(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["error"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let labels = |v: &Value, what: &str| {
            serde_json::from_value::<BTreeMap<String, String>>(v.clone())
                .map_err(|e| format!("{what} is not a map of strings: {e}"))
        };
        let spec = case.spec_field("policy")?;
        let want = spec
            .pointer("/k8s/labels")
            .ok_or("spec.policy has no k8s.labels")?;
        let want = labels(want, "spec.policy.k8s.labels")?;
        let live = labels(case.require("live_object_labels")?, "live_object_labels")?;
        // The policy as the agent compiles it, judging a live object with those labels: it
        // waits (and, with errorOnBackoffTimeout, fails when the backoff runs out) unless
        // they match.
        let compiled = compile::<Policy, _>(&self.host, spec, |ctx, p| {
            CompiledPolicy::compile(ctx, "policy", Some(p))
        });
        let policy = match compiled {
            Ok(p) => p,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let object = json!({"metadata": {"labels": live}});
        let response = Response::replied(
            Reply::new(K8sReply::stub("create", 200, object)),
            std::time::Duration::ZERO,
        );
        let verdict = policy.judge(
            &self.host,
            &response,
            1,
            1,
            &triggerd::event::FiredEvents::new(Default::default()),
        );
        let waits = matches!(verdict, Ok(Outcome::Wait));
        if waits == labels_satisfied(&want, &live) {
            return Err(format!(
                "policy verdict {verdict:?} disagrees with the labels check"
            ));
        }
        let error = waits.then_some("wait.Interrupted (backoff timeout)");
        verdict_of(errors.check(error))
    }

    // -----------------------------------------------------------------------------------
    // EventSource helpers
    // -----------------------------------------------------------------------------------

    /// `EvalBool`: an EventSource `filter.expression` over an environment.
    fn eval_bool(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["pass", "error"])?;
        let errors = ErrorExpect::parse(expect.get("error"))?;
        let spec = json!({"expression": case.spec_field("expression")?});
        let compiled = compile::<SourceFilter, _>(&self.host, &spec, |ctx, f| {
            EventSourceFilter::compile(ctx, "filter.expression", &f.expression)
        });
        let filter = match compiled {
            Ok(f) => f,
            Err(why) => return errors.rejected_at_load(expect, why),
        };
        let result = filter.evaluate(&self.host, case.require("env")?);
        let (pass, error) = match result {
            Ok(b) => (b, None),
            Err(e) => (false, Some(e)),
        };
        let mut diffs = Vec::new();
        if let Some(want) = expect.get("pass") {
            let want = want.as_bool().ok_or("expect.pass is not a bool")?;
            diffs.extend(check_pass(want, pass, &error));
        }
        diffs.extend(errors.check(error.as_deref()));
        verdict_of(diffs)
    }

    /// `Expand`: dotted keys to nested objects.
    fn expand(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["output"])?;
        let input = case
            .require("input")?
            .as_object()
            .ok_or("input is not a map")?;
        verdict_of(check_json("output", expect.get("output"), &expand(input)))
    }

    /// `webhook HandleRoute`: the `body` of a webhook event built from a request.
    fn webhook_route(&self, case: &Case) -> Checked {
        let expect = case.expect_only(&["status", "data_contains"])?;
        let request = case.require("request")?;
        if let Some(status) = expect.get("status") {
            if status.as_u64() != Some(200) {
                return Err(format!(
                    "runner only checks accepted requests (the body builder), not status {status}"
                ));
            }
        }
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let query = url
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or_default());
        let body = request
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("POST")
            .parse::<http::Method>()
            .map_err(|e| format!("bad method: {e}"))?;
        let data = json!({"body": request_body(&method, query, body.as_bytes())});
        let want = expect
            .get("data_contains")
            .and_then(Value::as_str)
            .ok_or("no expect.data_contains")?;
        let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        let got = serde_json::to_string(&data).unwrap_or_default();
        let mut diffs = Vec::new();
        if !strip(&got).contains(&strip(want)) {
            diffs.push(format!("data: expected to contain {want}, got {got}"));
        }
        verdict_of(diffs)
    }
}

// ---------------------------------------------------------------------------------------
// Building inputs
// ---------------------------------------------------------------------------------------

/// Compiles a spec fragment through triggerd's load path; `Err` is every load error.
fn compile<T: DeserializeOwned, R>(
    host: &ScriptHost,
    spec: &Value,
    f: impl FnOnce(&mut CompileContext<'_>, &T) -> Option<R>,
) -> Result<R, String> {
    let text = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    compile_standalone(host, &[], &text, f).map_err(|errors| {
        if errors.is_empty() {
            return "compile produced nothing and reported no error".into();
        }
        errors
            .iter()
            .map(|e| match e.field.as_str() {
                "" => e.message.clone(),
                field => format!("{field}: {}", e.message),
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn compile_params(
    host: &ScriptHost,
    list: &Value,
    dependencies: &[String],
) -> Result<Vec<CompiledParameter>, String> {
    compile::<Vec<Parameter>, _>(host, list, |ctx, params| {
        let compiled: Vec<_> = params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                CompiledParameter::compile(ctx, &format!("parameters[{i}]"), p, dependencies)
            })
            .collect();
        (compiled.len() == params.len()).then_some(compiled)
    })
}

/// The case's `events` map as fired events, and the dependency names (its keys).
fn fired_events(case: &Case) -> Result<(FiredEvents, Vec<String>), String> {
    let events = case
        .require("events")?
        .as_object()
        .ok_or("`events` is not a map of dependency -> event")?;
    let mut by_dependency = BTreeMap::new();
    for (name, e) in events {
        if let Some(event) = build_event(e).map_err(|why| format!("events.{name}: {why}"))? {
            by_dependency.insert(name.clone(), Arc::new(event));
        }
    }
    let names = events.keys().cloned().collect();
    Ok((FiredEvents::new(by_dependency), names))
}

/// The event data of a case event: parsed value, original bytes, and whether the bytes are
/// the JSON text of the data.
struct Data {
    value: Value,
    raw: Bytes,
    raw_is_data: bool,
}

fn data_of(e: &Value) -> Result<Data, String> {
    if let Some(raw) = e.get("data_raw") {
        let raw = raw.as_str().ok_or("data_raw is not a string")?;
        return Ok(Data {
            value: serde_json::from_str(raw).unwrap_or(Value::Null),
            raw: Bytes::copy_from_slice(raw.as_bytes()),
            raw_is_data: true,
        });
    }
    Ok(match e.get("data") {
        None | Some(Value::Null) => Data {
            value: Value::Null,
            raw: Bytes::new(),
            raw_is_data: false,
        },
        Some(v) => Data {
            raw: Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?),
            value: v.clone(),
            raw_is_data: true,
        },
    })
}

/// A case event (`null` is Argo's nil event).
fn build_event(e: &Value) -> Result<Option<Event>, String> {
    if e.is_null() {
        return Ok(None);
    }
    if !e.is_object() {
        return Err(format!("event is not a map: {}", short(&e.to_string())));
    }
    let context = e.get("context").cloned().unwrap_or(Value::Null);
    event_from_parts(&context, data_of(e)?).map(Some)
}

/// An event from a context map (`null`: every attribute empty) and data.
fn event_from_parts(context: &Value, data: Data) -> Result<Event, String> {
    let attr = |k: &str| context.get(k).map(scalar_text);
    let time = match attr("time") {
        Some(t) => DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("context.time {t:?}: {e}"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let datacontenttype = match context {
        Value::Null => String::new(),
        _ => attr("datacontenttype").unwrap_or_else(|| "application/json".into()),
    };
    Ok(Event {
        id: attr("id").unwrap_or_default(),
        source: attr("source").unwrap_or_default(),
        subject: attr("subject").unwrap_or_default(),
        kind: attr("type").unwrap_or_default(),
        time,
        datacontenttype,
        extensions: Map::new(),
        data: data.value,
        raw: data.raw,
        raw_is_data: data.raw_is_data,
        views: Default::default(),
    })
}

// ---------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------

/// `expect.error`: absent (not asserted), `false`, `true`, an exact message, or
/// `contains '<text>'`.
enum ErrorExpect {
    Unasserted,
    None,
    Any,
    Exact(String),
    Contains(String),
}

impl ErrorExpect {
    fn parse(v: Option<&Value>) -> Result<Self, String> {
        Ok(match v {
            None => Self::Unasserted,
            Some(Value::Bool(false)) => Self::None,
            Some(Value::Bool(true)) => Self::Any,
            Some(Value::String(s)) => match s
                .strip_prefix("contains '")
                .and_then(|r| r.strip_suffix('\''))
            {
                Some(part) => Self::Contains(part.to_owned()),
                None => Self::Exact(s.clone()),
            },
            Some(other) => return Err(format!("expect.error {other} is not a bool or string")),
        })
    }

    fn wants_error(&self) -> bool {
        matches!(self, Self::Any | Self::Exact(_) | Self::Contains(_))
    }

    /// triggerd refused the spec at load time: fine when Argo errors at run time (and does
    /// not also let the event pass).
    fn rejected_at_load(&self, expect: &Value, why: String) -> Checked {
        if self.wants_error() && expect.get("pass") != Some(&Value::Bool(true)) {
            Ok(CaseOutcome::RejectedAtLoad(why))
        } else {
            Err(format!("rejected at load: {why}"))
        }
    }

    fn check(&self, got: Option<&str>) -> Vec<String> {
        let ok = match (self, got) {
            (Self::Unasserted, _) => true,
            (Self::None, g) => g.is_none(),
            (Self::Any, g) => g.is_some(),
            (Self::Exact(w), Some(g)) => w == g,
            (Self::Contains(w), Some(g)) => g.contains(w.as_str()),
            (Self::Exact(_) | Self::Contains(_), None) => false,
        };
        if ok {
            return Vec::new();
        }
        let want = match self {
            Self::Unasserted => unreachable!("an unasserted error always matches"),
            Self::None => "no error".to_owned(),
            Self::Any => "an error".to_owned(),
            Self::Exact(w) => format!("{w:?}"),
            Self::Contains(w) => format!("an error containing {w:?}"),
        };
        let got = got.map_or("none".to_owned(), |g| format!("{g:?}"));
        vec![format!("error: expected {want}, got {got}")]
    }
}

fn check_pass(want: bool, got: bool, error: &Option<String>) -> Vec<String> {
    if want == got {
        return Vec::new();
    }
    let note = error
        .as_ref()
        .map(|e| format!(" (error {e:?})"))
        .unwrap_or_default();
    vec![format!("pass: expected {want}, got {got}{note}")]
}

fn verdict_of(diffs: Vec<String>) -> Checked {
    if diffs.is_empty() {
        Ok(CaseOutcome::Matched)
    } else {
        Err(diffs.join("; "))
    }
}

/// Exact JSON equality (numbers by value), when `want` is given.
fn check_json(what: &str, want: Option<&Value>, got: &Value) -> Vec<String> {
    match want {
        Some(w) if !json_eq(w, got) => vec![format!(
            "{what}: expected {}, got {}",
            short(&w.to_string()),
            short(&got.to_string())
        )],
        _ => Vec::new(),
    }
}

fn check_subset(what: &str, want: Option<&Value>, got: &Value) -> Vec<String> {
    match want {
        Some(w) if !is_subset(w, got) => vec![format!(
            "{what}: expected to include {}, got {}",
            short(&w.to_string()),
            short(&got.to_string())
        )],
        _ => Vec::new(),
    }
}

/// `want` is JSON text (`result_raw`, `json_raw`); compared after parsing.
fn check_json_text(what: &str, want: &Value, got: &Value) -> Result<Vec<String>, String> {
    let text = want
        .as_str()
        .ok_or_else(|| format!("expected {what} is not JSON text"))?;
    let want: Value =
        serde_json::from_str(text).map_err(|e| format!("expected {what} is not JSON: {e}"))?;
    Ok(check_json(what, Some(&want), got))
}

/// Expectations keyed by paths into `target` (`metadata.name`, `a[0].b`); `error` is
/// checked elsewhere. `special` may answer a key from somewhere else first.
fn check_paths(
    expect: &Value,
    target: &Value,
    special: impl Fn(&str) -> Option<Value>,
) -> Result<Vec<String>, String> {
    let map = expect.as_object().ok_or("`expect` is not a map")?;
    let mut diffs = Vec::new();
    for (key, want) in map.iter().filter(|(k, _)| *k != "error") {
        let got = special(key).or_else(|| lookup(target, key).cloned());
        match got {
            Some(g) if same_value(want, &g) => {}
            got => diffs.push(format!(
                "{key}: expected {}, got {}",
                scalar_text(want),
                got.map_or("nothing".into(), |g| short(&g.to_string()))
            )),
        }
    }
    Ok(diffs)
}

/// `ResolveParamValue`'s `value`: compared as text; JSON-looking text semantically; Argo's
/// whole-event form (`<json.Marshal(event)>`) by shape.
fn check_resolved(want: &Value, got: Option<&Value>, event: Option<&Event>) -> Vec<String> {
    let Some(got) = got else {
        return vec![format!(
            "value: expected {}, got no value",
            scalar_text(want)
        )];
    };
    if let Some(w) = want
        .as_str()
        .filter(|w| w.starts_with("<json.Marshal(event)>"))
    {
        return match (event, argo_event_json(got, event)) {
            (Some(_), true) => Vec::new(),
            _ => vec![format!(
                "value: expected Argo's json.Marshal(event), i.e. {}, got {}",
                w.trim_start_matches("<json.Marshal(event)> i.e. "),
                short(&scalar_text(got))
            )],
        };
    }
    if same_value(want, got) {
        return Vec::new();
    }
    vec![format!(
        "value: expected {}, got {}",
        scalar_text(want),
        short(&got.to_string())
    )]
}

/// Whether `got` is Argo's serialized `v1alpha1.Event` for `event`:
/// `{"context": {id, source, subject, type, …}, "data": "<base64 of the data bytes>"}`.
fn argo_event_json(got: &Value, event: Option<&Event>) -> bool {
    let Some(event) = event else { return false };
    let parsed = match got {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let Some(ctx) = parsed.get("context") else {
        return false;
    };
    let attrs_match = [
        ("id", &event.id),
        ("source", &event.source),
        ("subject", &event.subject),
        ("type", &event.kind),
    ]
    .iter()
    .all(|(k, v)| ctx.get(*k).and_then(Value::as_str) == Some(v.as_str()));
    attrs_match && parsed.get("data").and_then(Value::as_str) == Some(base64(&event.raw).as_str())
}

/// Compares a resolved value with an expected one as text: strings by content, other values
/// by JSON text; JSON-looking text is compared after parsing both.
fn same_value(want: &Value, got: &Value) -> bool {
    let (w, g) = (scalar_text(want), scalar_text(got));
    if w == g {
        return true;
    }
    let t = w.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        if let (Ok(a), Ok(b)) = (
            serde_json::from_str::<Value>(&w),
            serde_json::from_str::<Value>(&g),
        ) {
            return json_eq(&a, &b);
        }
    }
    false
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Every key of `want` (recursively) is in `got` with an equal value; arrays match
/// element-wise.
fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|x| is_subset(v, x))),
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| is_subset(a, b))
        }
        _ => json_eq(want, got),
    }
}

/// The value at `a.b[0].c`.
fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for segment in path.split('.') {
        let (name, indexes) = segment.split_once('[').unwrap_or((segment, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Strings as they are, other values as JSON text.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(s: &str) -> String {
    const MAX: usize = 240;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
