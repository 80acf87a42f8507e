//! Runs one case: the compiled sensors run as in the agent (bus, transform, filters,
//! conditions, parameters, policy, retries, dead letter) on a paused tokio clock, with trigger
//! attempts answered by stubs; then the record is checked against the expectations.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::file::{
    DeadLetterOutcome, ExpectedOutcome, FiredCheck, FiredExpect, ResolvedCase, TriggerRef,
};
use super::matcher::{compare, render, Mode};
use crate::bus::{BusBuilder, Published};
use crate::clock::Clock;
use crate::delivery::stub::{DeliveryRecord, Ended, ExecutionRecord};
use crate::delivery::{DeliveryContext, Executor, Stubs};
use crate::event::Event;
use crate::manifest::{Position, Spanned};
use crate::plan::Plan;
use crate::script::ScriptHost;
use crate::sensor::{Explanation, SensorContext};
use crate::telemetry::Metrics;

/// How long an event id is remembered to drop duplicates: `triggerd run`'s default.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// One failed expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Where the expectation is written.
    pub position: Position,
    /// Which expectation, e.g. `fired.promote.payload`.
    pub what: String,
    /// What differs (several lines: expected, actual, the values compared).
    pub detail: String,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// Where the case is written.
    pub position: Position,
    /// Every failed expectation; empty when the case passed.
    pub failures: Vec<Failure>,
    /// What happened: events and deliveries, one line each (indented sub-lines).
    pub trace: Vec<String>,
    /// Real time the case took.
    pub duration: Duration,
}

impl CaseResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What became of a published event.
#[derive(Debug)]
struct Sent {
    event: Arc<Event>,
    fate: Fate,
}

#[derive(Debug, PartialEq)]
enum Fate {
    Published,
    Duplicate,
    SourceFiltered(String),
}

/// What the simulation recorded.
#[derive(Debug)]
struct Simulation {
    sent: Vec<Sent>,
    deliveries: Vec<DeliveryRecord>,
}

/// Runs one case on its own paused current-thread runtime.
pub fn run_case(plan: &Plan, host: &Arc<ScriptHost>, case: &ResolvedCase) -> CaseResult {
    let started = tokio::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let simulation = match runtime {
        Ok(rt) => rt.block_on(simulate(plan, host, case)),
        Err(e) => Err(format!("cannot start a runtime: {e}")),
    };
    let (failures, trace) = match simulation {
        Ok(sim) => (check(case, &sim), trace(plan, host, &sim)),
        Err(e) => (
            vec![Failure {
                position: case.position.clone(),
                what: "events".into(),
                detail: e,
            }],
            Vec::new(),
        ),
    };
    CaseResult {
        name: case.name.clone(),
        position: case.position.clone(),
        failures,
        trace,
        duration: started.elapsed(),
    }
}

async fn simulate(
    plan: &Plan,
    host: &Arc<ScriptHost>,
    case: &ResolvedCase,
) -> Result<Simulation, String> {
    let clock = Clock::starting_at(case.clock.unwrap_or_else(Utc::now));
    let stubs = Arc::new(Stubs::new(case.responses.clone()));
    let tasks = TaskTracker::new();
    let ctx = SensorContext {
        delivery: DeliveryContext {
            host: host.clone(),
            metrics: Arc::new(Metrics::new()),
            executor: Executor::Stub(stubs.clone()),
        },
        max_inflight: 256,
        tasks: tasks.clone(),
        abort: CancellationToken::new(),
        clock: clock.clone(),
        durable: None,
    };
    let mut bus = BusBuilder::new(case.events.len().max(1)).dedup_window(DEDUP_WINDOW);
    let mut sensors = Vec::new();
    for sensor in &plan.sensors {
        let queue = bus.subscribe(sensor.subscriptions());
        sensors.push(tokio::spawn(sensor.clone().run(ctx.clone(), queue)));
    }
    let bus = bus.build();
    let mut sent = Vec::new();
    for e in &case.events {
        if !e.after.is_zero() {
            // Paused time: the clock jumps, firing due retries and resets on the way.
            tokio::time::sleep(e.after).await;
        }
        let mut event = e
            .input
            .to_event(&e.source, &e.subject, &e.kind, clock.now())
            .map_err(|err| format!("{}: {err}", e.position_text()))?;
        let spec = plan
            .sources
            .iter()
            .find(|s| s.event_source == e.source && s.event_name == e.subject);
        if let Some(spec) = spec {
            spec.add_extensions(&mut event);
        }
        let filter = spec.and_then(|s| s.filter());
        let dropped = filter.and_then(|f| match f.evaluate(host, &event.data) {
            Ok(true) => None,
            Ok(false) => Some("the EventSource filter does not pass".to_owned()),
            Err(err) => Some(format!("the EventSource filter failed: {err}")),
        });
        let kept = Arc::new(event.clone());
        let fate = match dropped {
            Some(why) => Fate::SourceFiltered(why),
            None => match bus.publish(event).await {
                Ok(Published::Accepted) => Fate::Published,
                Ok(Published::Duplicate) => Fate::Duplicate,
                Err(err) => return Err(format!("publishing an event: {err}")),
            },
        };
        sent.push(Sent { event: kept, fate });
    }
    // Closing the bus ends each sensor once its queue is drained; then every delivery
    // (retries and dead letters included) runs to its end on the paused clock.
    drop(bus);
    for s in sensors {
        let _ = s.await;
    }
    tasks.close();
    tasks.wait().await;
    Ok(Simulation {
        sent,
        deliveries: stubs.deliveries(),
    })
}

impl super::file::ResolvedEvent {
    fn position_text(&self) -> String {
        format!(
            "{}:{}:{}",
            self.position.file.display(),
            self.position.line,
            self.position.column
        )
    }
}

fn check(case: &ResolvedCase, sim: &Simulation) -> Vec<Failure> {
    let mut failures = Vec::new();
    let fired = |t: &TriggerRef| -> Vec<&DeliveryRecord> {
        sim.deliveries
            .iter()
            .filter(|d| d.sensor == t.sensor && d.main.trigger == t.trigger)
            .collect()
    };
    for f in &case.fired {
        let firings = fired(&f.trigger);
        if firings.len() != f.count {
            failures.push(Failure {
                position: f.position.clone(),
                what: format!("fired.{}", f.key),
                detail: format!(
                    "expected to fire {}, fired {}",
                    times(f.count),
                    times(firings.len())
                ),
            });
        }
        for (i, d) in firings.iter().enumerate().take(f.count) {
            let e = if f.repeated { &f.each[0] } else { &f.each[i] };
            let what = if f.count > 1 {
                format!("fired.{}[{i}]", f.key)
            } else {
                format!("fired.{}", f.key)
            };
            check_firing(&mut failures, f, &what, e, d);
        }
    }
    for n in &case.not_fired {
        let firings = fired(&n.value);
        if let Some(first) = firings.first() {
            let mut detail = format!("expected not to fire, fired {}", times(firings.len()));
            if let Some(p) = &first.main.payload {
                detail.push_str(&format!("\n  payload: {}", render(p, "").trim_start()));
            }
            failures.push(Failure {
                position: n.position.clone(),
                what: format!("notFired.{}", n.value.trigger),
                detail,
            });
        }
    }
    if let Some(expected) = &case.dead_letters {
        let want: BTreeSet<String> = expected.value.iter().map(ToString::to_string).collect();
        let got: BTreeSet<String> = sim
            .deliveries
            .iter()
            .filter(|d| matches!(d.main.ended, Some(Ended::Failed(_))))
            .map(|d| {
                TriggerRef {
                    sensor: d.sensor.clone(),
                    trigger: d.main.trigger.clone(),
                }
                .to_string()
            })
            .collect();
        if want != got {
            failures.push(Failure {
                position: expected.position.clone(),
                what: "deadLetters".into(),
                detail: format!(
                    "differs\n  expected: [{}]\n  actual:   [{}]",
                    want.into_iter().collect::<Vec<_>>().join(", "),
                    got.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    failures.sort_by_key(|f| (f.position.line, f.position.column));
    failures
}

fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        n => format!("{n} times"),
    }
}

fn at<T>(s: &Spanned<T>, fallback: &Position) -> Position {
    if s.referenced.line() == 0 {
        return fallback.clone();
    }
    Position {
        file: fallback.file.clone(),
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn check_firing(
    failures: &mut Vec<Failure>,
    f: &FiredCheck,
    what: &str,
    e: &FiredExpect,
    d: &DeliveryRecord,
) {
    let mut fail = |position: Position, what: String, detail: String| {
        failures.push(Failure {
            position,
            what,
            detail,
        })
    };
    let record = &d.main;
    check_execution(
        &mut fail,
        &f.position,
        what,
        record,
        [(&e.payload, Mode::Subset), (&e.payload_exact, Mode::Exact)],
        e.request.as_ref(),
        e.attempts.as_ref(),
    );
    let ended = describe_end(record.ended.as_ref());
    if let Some(o) = &e.outcome {
        let ok = matches!(
            (o.value, &record.ended),
            (ExpectedOutcome::Success, Some(Ended::Success))
                | (ExpectedOutcome::DeadLetter, Some(Ended::Failed(_)))
        );
        if !ok {
            let expected = match o.value {
                ExpectedOutcome::Success => "success",
                ExpectedOutcome::DeadLetter => "dead-letter",
            };
            fail(
                at(o, &f.position),
                format!("{what}.outcome"),
                format!(
                    "differs\n  expected: {expected}\n  actual:   {ended}{}",
                    attempt_lines(record)
                ),
            );
        }
    }
    if let Some(r) = &e.reason {
        match &record.ended {
            Some(Ended::Failed(reason)) if reason.contains(&r.value) => {}
            _ => fail(
                at(r, &f.position),
                format!("{what}.reason"),
                format!(
                    "differs\n  expected: dead-letter with a reason containing {:?}\n  actual:   {ended}",
                    r.value
                ),
            ),
        }
    }
    if let Some(dl) = &e.dead_letter {
        let pos = at(dl, &f.position);
        let what = format!("{what}.deadLetter");
        let Some(record) = &d.dead_letter else {
            let why = match &d.main.ended {
                Some(Ended::Failed(_)) => "the trigger failed but has no dlqTrigger",
                _ => "the trigger did not fail",
            };
            fail(
                pos,
                what,
                format!("expected a dead-letter execution; {why}"),
            );
            return;
        };
        let dl = &dl.value;
        if let Some(t) = &dl.trigger {
            if t.value != record.trigger {
                fail(
                    at(t, &pos),
                    format!("{what}.trigger"),
                    format!(
                        "differs\n  expected: {:?}\n  actual:   {:?}",
                        t.value, record.trigger
                    ),
                );
            }
        }
        check_execution(
            &mut fail,
            &pos,
            &what,
            record,
            [
                (&dl.payload, Mode::Subset),
                (&dl.payload_exact, Mode::Exact),
            ],
            dl.request.as_ref(),
            dl.attempts.as_ref(),
        );
        if let Some(o) = &dl.outcome {
            let ok = matches!(
                (o.value, &record.ended),
                (DeadLetterOutcome::Success, Some(Ended::Success))
                    | (DeadLetterOutcome::Failed, Some(Ended::Failed(_)))
            );
            if !ok {
                let expected = match o.value {
                    DeadLetterOutcome::Success => "success",
                    DeadLetterOutcome::Failed => "failed",
                };
                let actual = match &record.ended {
                    Some(Ended::Success) => "success".to_owned(),
                    Some(Ended::Failed(r)) => format!("failed: {r}"),
                    None => "unfinished".to_owned(),
                };
                fail(
                    at(o, &pos),
                    format!("{what}.outcome"),
                    format!("differs\n  expected: {expected}\n  actual:   {actual}"),
                );
            }
        }
    }
}

type Fail<'a> = dyn FnMut(Position, String, String) + 'a;

fn check_execution(
    fail: &mut Fail<'_>,
    fallback: &Position,
    what: &str,
    record: &ExecutionRecord,
    payloads: [(&Option<Spanned<Value>>, Mode); 2],
    request: Option<&Spanned<Value>>,
    attempts: Option<&Spanned<u32>>,
) {
    for (expected, mode) in payloads {
        let Some(expected) = expected else { continue };
        let field = match mode {
            Mode::Subset => "payload",
            Mode::Exact => "payloadExact",
        };
        compare_value(
            fail,
            at(expected, fallback),
            format!("{what}.{field}"),
            &expected.value,
            record.payload.as_ref(),
            mode,
            "payload",
            record,
        );
    }
    if let Some(expected) = request {
        compare_value(
            fail,
            at(expected, fallback),
            format!("{what}.request"),
            &expected.value,
            record.request.as_ref(),
            Mode::Subset,
            "request",
            record,
        );
    }
    if let Some(expected) = attempts {
        let actual = record.attempts.len();
        if actual != expected.value as usize {
            fail(
                at(expected, fallback),
                format!("{what}.attempts"),
                format!(
                    "differs\n  expected: {}\n  actual:   {actual}{}",
                    expected.value,
                    attempt_lines(record)
                ),
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare_value(
    fail: &mut Fail<'_>,
    position: Position,
    what: String,
    expected: &Value,
    actual: Option<&Value>,
    mode: Mode,
    noun: &str,
    record: &ExecutionRecord,
) {
    let Some(actual) = actual else {
        let why = match &record.ended {
            Some(Ended::Failed(reason)) => format!("it could not be built: {reason}"),
            _ => "no attempt was made".to_owned(),
        };
        fail(position, what, format!("no {noun}: {why}"));
        return;
    };
    if let Some(m) = compare(expected, actual, mode) {
        let label = match mode {
            Mode::Subset => format!("expected {noun} (subset):"),
            Mode::Exact => format!("expected {noun} (exact):"),
        };
        let width = label.len();
        let detail = format!(
            "{m}\n  {label} {}\n  {:<width$} {}",
            render(expected, "    ").trim_start(),
            format!("actual {noun}:"),
            render(actual, "    ").trim_start(),
        );
        fail(position, what, detail);
    }
}

fn describe_end(ended: Option<&Ended>) -> String {
    match ended {
        Some(Ended::Success) => "success".into(),
        Some(Ended::Failed(reason)) => format!("dead-letter: {reason}"),
        None => "unfinished".into(),
    }
}

fn attempt_lines(record: &ExecutionRecord) -> String {
    record
        .attempts
        .iter()
        .map(|a| {
            format!(
                "\n    attempt {}: {} -> {}",
                a.number,
                a.response.to_json(),
                a.verdict.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

/// What happened, for a failed case (and `--verbose`).
fn trace(plan: &Plan, host: &ScriptHost, sim: &Simulation) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in sim.sent.iter().enumerate() {
        let e = &s.event;
        let time = e.time.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut line = format!("event #{} {}/{} at {time}", i + 1, e.source, e.subject);
        match &s.fate {
            Fate::SourceFiltered(why) => line.push_str(&format!(": dropped at the source: {why}")),
            Fate::Duplicate => line.push_str(": dropped as a duplicate (same id and source)"),
            Fate::Published => {
                let mut verdicts = Vec::new();
                for sensor in &plan.sensors {
                    for dep in &sensor.dependencies {
                        if dep.event_source != e.source || dep.event_name != e.subject {
                            continue;
                        }
                        let mut explained = Explanation::default();
                        let verdict = match dep.accept(host, e, Some(&mut explained)) {
                            Ok(_) => "accepted".to_owned(),
                            Err(v) => format!("rejected ({})", explained.rejection(&v)),
                        };
                        verdicts.push(format!("{}/{} {verdict}", sensor.name, dep.name));
                    }
                }
                line.push_str(&format!(": {}", verdicts.join("; ")));
            }
        }
        out.push(line);
    }
    if sim.deliveries.is_empty() {
        out.push("no trigger fired".into());
    }
    for d in &sim.deliveries {
        let r = &d.main;
        out.push(format!(
            "{}/{} fired: {}",
            d.sensor,
            r.trigger,
            end_text(r, describe_end(r.ended.as_ref()))
        ));
        execution_lines(&mut out, r, "  ");
        if let Some(dl) = &d.dead_letter {
            let end = match &dl.ended {
                Some(Ended::Success) => "success".to_owned(),
                Some(Ended::Failed(r)) => format!("failed: {r}"),
                None => "unfinished".to_owned(),
            };
            out.push(format!(
                "  dead letter {}: {}",
                dl.trigger,
                end_text(dl, end)
            ));
            execution_lines(&mut out, dl, "    ");
        }
    }
    out
}

fn end_text(r: &ExecutionRecord, end: String) -> String {
    if !matches!(r.ended, Some(Ended::Success)) {
        return end;
    }
    let n = r.attempts.len();
    format!("{end} after {n} attempt{}", if n == 1 { "" } else { "s" })
}

fn execution_lines(out: &mut Vec<String>, r: &ExecutionRecord, indent: &str) {
    if let Some(req) = &r.request {
        if req.get("type").and_then(Value::as_str) == Some("http") {
            out.push(format!(
                "{indent}request: {} {}",
                req["method"].as_str().unwrap_or(""),
                req["url"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(p) = &r.payload {
        let body = render(p, &format!("{indent}  "));
        out.push(format!("{indent}payload: {}", body.trim_start()));
    }
    for a in &r.attempts {
        out.push(format!(
            "{indent}attempt {}: {} -> {}",
            a.number,
            a.response.to_json(),
            a.verdict.as_deref().unwrap_or("?")
        ));
    }
}
