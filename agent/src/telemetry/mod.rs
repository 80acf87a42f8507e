//! Operating the agent: metrics, logs, and the health/readiness/metrics HTTP server.

mod events;
mod logging;
mod metrics;
mod ops;

pub use events::{
    DependencyTelemetry, Dropped, ScriptTimer, SourceDrop, SourceTelemetry, TriggerScript,
    TriggerTelemetry,
};
pub use logging::{init_logging, LogFormat};
pub use metrics::{
    trigger_labels, DependencyLabels, Metrics, NamespaceRefusalLabels, OutcomeLabels, ReloadLabels,
    ScriptKindLabels, ScriptLabels, ScriptTimings, SourceLabels, TriggerLabels,
};
pub use ops::{serve_ops, Readiness};
