//! Telemetry events: each thing worth reporting is one call that bumps its metric and writes
//! its log line. The label sets are built once, when a component's telemetry is made; each
//! series is looked up in its family on first use and kept, so the per-event cost is an
//! atomic add and no label strings are cloned.

use std::fmt::Display;
use std::hash::Hash;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;

use super::metrics::{
    DependencyLabels, Metrics, OutcomeLabels, ScriptKindLabels, ScriptLabels, ScriptTimings,
    SourceLabels, TriggerLabels,
};

/// One series of a family: its labels, and the metric once it was first used (a series
/// appears in `/metrics` only when something counted it, as with `get_or_create`).
struct Series<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    labels: L,
    handle: OnceLock<M>,
}

impl<L, M, C> Series<L, M, C>
where
    L: Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    fn new(family: &Family<L, M, C>, labels: L) -> Self
    where
        C: Clone,
    {
        Self {
            family: family.clone(),
            labels,
            handle: OnceLock::new(),
        }
    }

    fn get(&self) -> &M {
        self.handle
            .get_or_init(|| self.family.get_or_create(&self.labels).clone())
    }
}

impl<L: std::fmt::Debug, M, C> std::fmt::Debug for Series<L, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.labels.fmt(f)
    }
}

/// The evaluation times of one kind of script (every script evaluation records one).
#[derive(Debug)]
pub struct ScriptTimer {
    series: Series<ScriptKindLabels, Histogram, fn() -> Histogram>,
}

impl ScriptTimer {
    /// The timer of scripts of kind `kind` (`filter`, `policy`, ...).
    pub fn new(timings: &ScriptTimings, kind: &str) -> Self {
        Self {
            series: Series::new(
                timings,
                ScriptKindLabels {
                    kind: kind.to_owned(),
                },
            ),
        }
    }

    /// One evaluation took `took`.
    pub fn evaluated(&self, took: Duration) {
        self.series.get().observe(took.as_secs_f64());
    }
}

/// Where a trigger's script ran when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerScript {
    /// A parameter or payload script, while the request was built.
    Payload,
    /// The policy script, while a response was judged.
    Policy,
}

/// The telemetry of one trigger (a dead-letter trigger has its own).
#[derive(Debug)]
pub struct TriggerTelemetry {
    sensor: String,
    trigger: String,
    attempts: Series<TriggerLabels, Counter>,
    retries: Series<TriggerLabels, Counter>,
    succeeded: Series<OutcomeLabels, Counter>,
    failed: Series<OutcomeLabels, Counter>,
    dead_letters: Series<TriggerLabels, Counter>,
    attempt_seconds: Series<TriggerLabels, Histogram>,
    execution_seconds: Series<TriggerLabels, Histogram>,
    payload_errors: Series<ScriptLabels, Counter>,
    policy_errors: Series<ScriptLabels, Counter>,
    condition_resets: Series<TriggerLabels, Counter>,
}

impl TriggerTelemetry {
    /// The telemetry of `trigger` of `sensor`.
    pub fn new(metrics: &Metrics, sensor: &str, trigger: &str) -> Self {
        let labels = TriggerLabels {
            sensor: sensor.to_owned(),
            trigger: trigger.to_owned(),
        };
        let outcome = |outcome: &str| OutcomeLabels {
            sensor: sensor.to_owned(),
            trigger: trigger.to_owned(),
            outcome: outcome.to_owned(),
        };
        let script = |which: &str| ScriptLabels {
            sensor: sensor.to_owned(),
            script: format!("trigger/{trigger}/{which}"),
        };
        Self {
            sensor: sensor.to_owned(),
            trigger: trigger.to_owned(),
            attempts: Series::new(&metrics.trigger_attempts, labels.clone()),
            retries: Series::new(&metrics.trigger_retries, labels.clone()),
            succeeded: Series::new(&metrics.trigger_executions, outcome("success")),
            failed: Series::new(&metrics.trigger_executions, outcome("failed")),
            dead_letters: Series::new(&metrics.dead_letters, labels.clone()),
            attempt_seconds: Series::new(&metrics.trigger_attempt_seconds, labels.clone()),
            execution_seconds: Series::new(&metrics.trigger_execution_seconds, labels.clone()),
            payload_errors: Series::new(&metrics.script_errors, script("payload")),
            policy_errors: Series::new(&metrics.script_errors, script("policy")),
            condition_resets: Series::new(&metrics.condition_resets, labels),
        }
    }

    /// Attempt number `attempt` starts (the first one and every retry).
    pub fn attempt(&self, attempt: u32) {
        self.attempts.get().inc();
        if attempt > 1 {
            self.retries.get().inc();
        }
    }

    /// An attempt took `took`.
    pub fn attempt_took(&self, took: Duration) {
        self.attempt_seconds.get().observe(took.as_secs_f64());
    }

    /// A script of the trigger failed or hit a limit.
    pub fn script_failed(&self, script: TriggerScript) {
        match script {
            TriggerScript::Payload => self.payload_errors.get().inc(),
            TriggerScript::Policy => self.policy_errors.get().inc(),
        };
    }

    /// Attempt `attempt` succeeded with `response`.
    pub fn attempt_succeeded(&self, events: &str, attempt: u32, response: &dyn Display) {
        tracing::info!(
            sensor = %self.sensor,
            trigger = %self.trigger,
            events = %events,
            attempt,
            response = %response,
            "trigger succeeded"
        );
    }

    /// Attempt `attempt` of `max` failed for `reason`; the next one follows after `delay`.
    pub fn attempt_retried(
        &self,
        events: &str,
        attempt: u32,
        max: u32,
        reason: &str,
        delay: Duration,
    ) {
        tracing::info!(
            sensor = %self.sensor,
            trigger = %self.trigger,
            events = %events,
            attempt,
            max_attempts = max,
            reason = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "trigger attempt failed; retrying"
        );
    }

    /// An execution ended `age` after its oldest event happened.
    pub fn execution_ended(&self, age: Duration) {
        self.execution_seconds.get().observe(age.as_secs_f64());
    }

    /// An execution succeeded (its success was logged by [`Self::attempt_succeeded`]).
    pub fn execution_succeeded(&self) {
        self.succeeded.get().inc();
    }

    /// An execution failed for good after `attempts` and goes to the dead letter.
    pub fn execution_dead_lettered(&self, events: &str, attempts: u32, reason: &str) {
        self.failed.get().inc();
        self.dead_letters.get().inc();
        tracing::warn!(
            sensor = %self.sensor,
            trigger = %self.trigger,
            events = %events,
            attempts,
            reason = %reason,
            "trigger failed; dead-lettering"
        );
    }

    /// The dead-letter trigger `dlq_trigger` failed too.
    pub fn dead_letter_failed(&self, dlq_trigger: &str, events: &str, reason: &str) {
        tracing::error!(
            sensor = %self.sensor,
            trigger = %self.trigger,
            dlq_trigger = %dlq_trigger,
            events = %events,
            reason = %reason,
            "dead-letter trigger failed too; the events are recorded here only"
        );
    }

    /// `conditionsReset` dropped partial condition state of the trigger.
    pub fn conditions_reset(&self) {
        self.condition_resets.get().inc();
        tracing::info!(
            sensor = %self.sensor,
            trigger = %self.trigger,
            "conditions reset: partial dependencies forgotten"
        );
    }
}

/// The telemetry of one dependency of a sensor.
#[derive(Debug)]
pub struct DependencyTelemetry {
    sensor: String,
    dependency: String,
    accepted: Series<DependencyLabels, Counter>,
    filtered: Series<DependencyLabels, Counter>,
    script_errors: Series<ScriptLabels, Counter>,
}

/// Why a dependency dropped an event.
#[derive(Clone, Copy)]
pub enum Dropped<'a> {
    /// Its filters said no.
    Filtered,
    /// A filter could not be evaluated (a missing path, a type mismatch).
    Unevaluable(&'a dyn Display),
    /// A transform or filter script failed or hit a limit.
    ScriptFailed(&'a dyn Display),
}

impl DependencyTelemetry {
    /// The telemetry of `dependency` of `sensor`.
    pub fn new(metrics: &Metrics, sensor: &str, dependency: &str) -> Self {
        let labels = DependencyLabels {
            sensor: sensor.to_owned(),
            dependency: dependency.to_owned(),
        };
        Self {
            sensor: sensor.to_owned(),
            dependency: dependency.to_owned(),
            accepted: Series::new(&metrics.events_accepted, labels.clone()),
            filtered: Series::new(&metrics.events_filtered, labels),
            script_errors: Series::new(
                &metrics.script_errors,
                ScriptLabels {
                    sensor: sensor.to_owned(),
                    script: format!("dependency/{dependency}"),
                },
            ),
        }
    }

    /// The dependency accepted an event.
    pub fn accepted(&self) {
        self.accepted.get().inc();
    }

    /// The dependency dropped event `event_id`.
    pub fn dropped(&self, event_id: &str, why: Dropped<'_>) {
        self.filtered.get().inc();
        let (sensor, dependency) = (&self.sensor, &self.dependency);
        match why {
            Dropped::Filtered => {
                tracing::debug!(sensor = %sensor, dependency = %dependency, event_id = %event_id, "event filtered out")
            }
            Dropped::ScriptFailed(e) => {
                self.script_errors.get().inc();
                tracing::warn!(sensor = %sensor, dependency = %dependency, event_id = %event_id, error = %e, "script failed; event dropped for this dependency")
            }
            Dropped::Unevaluable(e) => {
                tracing::info!(sensor = %sensor, dependency = %dependency, event_id = %event_id, error = %e, "event filtered out: filter could not be evaluated")
            }
        }
    }
}

/// The telemetry of one EventSource event (one webhook endpoint, calendar, subscription...).
#[derive(Debug)]
pub struct SourceTelemetry {
    event_source: String,
    event_name: String,
    received: Series<SourceLabels, Counter>,
    deduplicated: Series<SourceLabels, Counter>,
    filtered: Series<SourceLabels, Counter>,
    rejected: Series<SourceLabels, Counter>,
}

/// Why a source dropped an event before the bus.
#[derive(Clone, Copy)]
pub enum SourceDrop<'a> {
    /// The EventSource's `filter` said no.
    Filter,
    /// The EventSource's `filter` failed (a script error or limit).
    FilterFailed(&'a dyn Display),
    /// A kind's own filter rule (e.g. a resource watch's `afterStart`), with its reason.
    Rule(&'a str),
}

impl SourceTelemetry {
    /// The telemetry of event `event_name` of EventSource `event_source`.
    pub fn new(metrics: &Metrics, event_source: &str, event_name: &str) -> Self {
        let labels = SourceLabels {
            event_source: event_source.to_owned(),
            event_name: event_name.to_owned(),
        };
        Self {
            event_source: event_source.to_owned(),
            event_name: event_name.to_owned(),
            received: Series::new(&metrics.events_received, labels.clone()),
            deduplicated: Series::new(&metrics.events_deduplicated, labels.clone()),
            filtered: Series::new(&metrics.source_filtered, labels.clone()),
            rejected: Series::new(&metrics.events_rejected, labels),
        }
    }

    /// The EventSource's name, for the kind's own log lines.
    pub fn event_source(&self) -> &str {
        &self.event_source
    }

    /// The event's name, for the kind's own log lines.
    pub fn event_name(&self) -> &str {
        &self.event_name
    }

    /// Event `event_id` was accepted onto the bus.
    pub fn received(&self, event_id: &str) {
        self.received.get().inc();
        tracing::debug!(event_source = %self.event_source, event_name = %self.event_name, event_id = %event_id, "event accepted");
    }

    /// Event `event_id` was not queued again: its id was accepted recently.
    pub fn deduplicated(&self, event_id: &str) {
        self.deduplicated.get().inc();
        tracing::debug!(event_source = %self.event_source, event_name = %self.event_name, event_id = %event_id, "redelivered event dropped as a duplicate");
    }

    /// The source dropped `event` (an event id, or the object a change is about).
    pub fn filtered(&self, event: &str, why: SourceDrop<'_>) {
        self.filtered.get().inc();
        let (es, en) = (&self.event_source, &self.event_name);
        match why {
            SourceDrop::Filter => {
                tracing::debug!(event_source = %es, event_name = %en, event_id = %event, "event dropped by the EventSource filter")
            }
            SourceDrop::FilterFailed(e) => {
                tracing::warn!(event_source = %es, event_name = %en, event_id = %event, error = %e, "EventSource filter failed; event dropped")
            }
            SourceDrop::Rule(reason) => {
                tracing::debug!(event_source = %es, event_name = %en, object = %event, reason, "change dropped by the filter")
            }
        }
    }

    /// The source refused a request with `status` (bad method, credentials, size).
    pub fn rejected(&self, status: &dyn Display, message: &str) {
        self.rejected.get().inc();
        tracing::debug!(event_source = %self.event_source, event_name = %self.event_name, %status, "{message}");
    }

    /// The bus did not take event `event_id`, and the sender is told so (it may retry).
    pub fn refused_by_bus(&self, event_id: &str, error: &dyn Display) {
        self.rejected.get().inc();
        tracing::warn!(event_source = %self.event_source, event_name = %self.event_name, event_id = %event_id, error = %error, "event refused: the bus did not take it");
    }

    /// Event `event_id` could not be published (the agent is stopping or the bus is
    /// closed); the source stops and leaves it unacknowledged.
    pub fn not_published(&self, event_id: &str, error: &dyn Display) {
        tracing::warn!(event_source = %self.event_source, event_name = %self.event_name, event_id = %event_id, error = %error, "event not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn a_series_appears_only_once_counted_and_keeps_counting() {
        let metrics = Metrics::new();
        let t = TriggerTelemetry::new(&metrics, "s", "t");
        assert!(line(&metrics.encode(), "triggerd_trigger_attempts").is_empty());
        t.attempt(1);
        t.attempt(2);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "triggerd_trigger_attempts_total"),
            ["triggerd_trigger_attempts_total{sensor=\"s\",trigger=\"t\"} 2"]
        );
        assert_eq!(
            line(&text, "triggerd_trigger_retries_total"),
            ["triggerd_trigger_retries_total{sensor=\"s\",trigger=\"t\"} 1"]
        );
        assert!(line(&text, "triggerd_dead_letters").is_empty());
    }

    #[test]
    fn a_dead_letter_counts_the_failure_and_the_dead_letter() {
        let metrics = Metrics::new();
        let t = TriggerTelemetry::new(&metrics, "s", "t");
        t.execution_dead_lettered("e1", 3, "status 500");
        t.script_failed(TriggerScript::Policy);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "triggerd_trigger_executions_total"),
            ["triggerd_trigger_executions_total{sensor=\"s\",trigger=\"t\",outcome=\"failed\"} 1"]
        );
        assert_eq!(
            line(&text, "triggerd_dead_letters_total"),
            ["triggerd_dead_letters_total{sensor=\"s\",trigger=\"t\"} 1"]
        );
        assert_eq!(
            line(&text, "triggerd_script_errors_total"),
            ["triggerd_script_errors_total{sensor=\"s\",script=\"trigger/t/policy\"} 1"]
        );
    }

    #[test]
    fn a_failed_dependency_script_counts_as_filtered_and_as_a_script_error() {
        let metrics = Metrics::new();
        let d = DependencyTelemetry::new(&metrics, "s", "push");
        d.dropped("e1", Dropped::ScriptFailed(&"boom"));
        d.dropped("e2", Dropped::Filtered);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "triggerd_events_filtered_total"),
            ["triggerd_events_filtered_total{sensor=\"s\",dependency=\"push\"} 2"]
        );
        assert_eq!(
            line(&text, "triggerd_script_errors_total"),
            ["triggerd_script_errors_total{sensor=\"s\",script=\"dependency/push\"} 1"]
        );
    }
}
