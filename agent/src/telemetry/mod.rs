//! Operating the agent: metrics, logs, and the health/readiness/metrics HTTP server.

mod events;
mod logging;
mod metrics;
mod ops;
mod server;

pub use events::{
    DependencyTelemetry, Dropped, ScriptTimer, SourceDrop, SourceTelemetry, TriggerScript,
    TriggerTelemetry,
};
pub use logging::{init_logging, LogFormat};
pub use metrics::{
    trigger_labels, DependencyLabels, ListenerLabels, Metrics, NamespaceRefusalLabels,
    OutcomeLabels, ReloadLabels, ScriptKindLabels, ScriptLabels, ScriptTimings, SourceLabels,
    TriggerLabels,
};
pub use ops::{serve_ops, Readiness};
pub use server::{spawn_server, ServerLimits, OPS_MAX_CONNECTIONS};
