//! Prometheus metrics: one registry, one set of families shared by every component.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-source counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// EventSource name.
    pub event_source: String,
    /// Event name.
    pub event_name: String,
}

/// Labels of per-dependency counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    /// Sensor name.
    pub sensor: String,
    /// Dependency name.
    pub dependency: String,
}

/// Labels of per-trigger counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
}

/// Labels of trigger outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
    /// `success` or `failed`.
    pub outcome: String,
}

/// Labels of script metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    /// Sensor name.
    pub sensor: String,
    /// Which script, e.g. `dependency/push/filter`.
    pub script: String,
}

/// Labels of configuration reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failed`.
    pub outcome: String,
}

/// Labels of namespace-guard refusals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceRefusalLabels {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
    /// The namespace that was refused.
    pub namespace: String,
}

/// Labels of HTTP listener counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `ops`, or `webhook:<port>`.
    pub listener: String,
}

/// Labels of script timings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptKindLabels {
    /// `filter`, `transform`, `parameter`, `payload` or `policy`.
    pub kind: String,
}

/// Histogram family of script evaluation times, handed to the script host.
pub type ScriptTimings = Family<ScriptKindLabels, Histogram, fn() -> Histogram>;

fn script_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 12))
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Events accepted onto the bus, by source.
    pub events_received: Family<SourceLabels, Counter>,
    /// Events not queued again because their (source, id) was accepted recently.
    pub events_deduplicated: Family<SourceLabels, Counter>,
    /// Events an EventSource filter dropped before publishing.
    pub source_filtered: Family<SourceLabels, Counter>,
    /// Events refused by a source (bus full, too large, unauthorised), by source.
    pub events_rejected: Family<SourceLabels, Counter>,
    /// Events a dependency accepted (passed its transform and filters).
    pub events_accepted: Family<DependencyLabels, Counter>,
    /// Partial condition state dropped by `conditionsReset`.
    pub condition_resets: Family<TriggerLabels, Counter>,
    /// Events a dependency's filters (or a failing filter script) rejected.
    pub events_filtered: Family<DependencyLabels, Counter>,
    /// Trigger executions by final outcome.
    pub trigger_executions: Family<OutcomeLabels, Counter>,
    /// Every attempt of a trigger.
    pub trigger_attempts: Family<TriggerLabels, Counter>,
    /// Attempts after the first.
    pub trigger_retries: Family<TriggerLabels, Counter>,
    /// Executions handed to the dead letter.
    pub dead_letters: Family<TriggerLabels, Counter>,
    /// Script evaluations that failed or hit a limit.
    pub script_errors: Family<ScriptLabels, Counter>,
    /// Configuration reloads after manifest or script changes, by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Kubernetes trigger executions refused because of their target namespace.
    pub namespace_refusals: Family<NamespaceRefusalLabels, Counter>,
    /// HTTP connections closed at once because the listener's budget was used up.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// HTTP connections closed because headers did not arrive in time or they idled.
    pub connections_timed_out: Family<ListenerLabels, Counter>,
    /// Duration of one script evaluation, by script kind.
    pub script_seconds: ScriptTimings,
    /// Duration of one trigger attempt.
    pub trigger_attempt_seconds: Family<TriggerLabels, Histogram, fn() -> Histogram>,
    /// From event time to the final outcome of a trigger execution.
    pub trigger_execution_seconds: Family<TriggerLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("triggerd");
        let m = Self {
            events_received: Family::default(),
            events_deduplicated: Family::default(),
            source_filtered: Family::default(),
            events_rejected: Family::default(),
            events_accepted: Family::default(),
            condition_resets: Family::default(),
            events_filtered: Family::default(),
            trigger_executions: Family::default(),
            trigger_attempts: Family::default(),
            trigger_retries: Family::default(),
            dead_letters: Family::default(),
            script_errors: Family::default(),
            reloads: Family::default(),
            namespace_refusals: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            script_seconds: Family::new_with_constructor(script_histogram),
            trigger_attempt_seconds: Family::new_with_constructor(latency_histogram),
            trigger_execution_seconds: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "events_received",
            "Events accepted onto the bus",
            m.events_received.clone(),
        );
        registry.register(
            "events_deduplicated",
            "Events not queued again because their id was accepted recently",
            m.events_deduplicated.clone(),
        );
        registry.register(
            "source_events_filtered",
            "Events an EventSource filter dropped before publishing",
            m.source_filtered.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused by a source",
            m.events_rejected.clone(),
        );
        registry.register(
            "events_accepted",
            "Events a dependency accepted (passed its transform and filters)",
            m.events_accepted.clone(),
        );
        registry.register(
            "condition_resets",
            "Partial condition state dropped by conditionsReset",
            m.condition_resets.clone(),
        );
        registry.register(
            "events_filtered",
            "Events rejected by dependency filters",
            m.events_filtered.clone(),
        );
        registry.register(
            "trigger_executions",
            "Trigger executions by final outcome",
            m.trigger_executions.clone(),
        );
        registry.register(
            "trigger_attempts",
            "Trigger attempts",
            m.trigger_attempts.clone(),
        );
        registry.register(
            "trigger_retries",
            "Trigger attempts after the first",
            m.trigger_retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Trigger executions handed to the dead letter",
            m.dead_letters.clone(),
        );
        registry.register(
            "script_errors",
            "Script evaluations that failed or hit a limit",
            m.script_errors.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads after file changes, by outcome",
            m.reloads.clone(),
        );
        registry.register(
            "namespace_refusals",
            "Kubernetes trigger executions refused because their namespace is not allowed",
            m.namespace_refusals.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because the listener had too many open",
            m.connections_refused.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "HTTP connections closed because headers did not arrive in time or they idled",
            m.connections_timed_out.clone(),
        );
        registry.register(
            "script_seconds",
            "Duration of one script evaluation",
            m.script_seconds.clone(),
        );
        registry.register(
            "trigger_attempt_seconds",
            "Duration of one trigger attempt",
            m.trigger_attempt_seconds.clone(),
        );
        registry.register(
            "trigger_execution_seconds",
            "From event time to the final outcome of a trigger execution",
            m.trigger_execution_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Counts one reload attempt.
    pub fn reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failed" };
        self.reloads
            .get_or_create(&ReloadLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Labels for a trigger (for reading its series back, e.g. in tests).
pub fn trigger_labels(sensor: &str, trigger: &str) -> TriggerLabels {
    TriggerLabels {
        sensor: sensor.to_owned(),
        trigger: trigger.to_owned(),
    }
}
