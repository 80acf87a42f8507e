//! The `EventSource` manifest: named events of each source kind.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::common::{IntOrString, SecretRef};

/// `spec` of an EventSource: one map per kind, keyed by event name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSourceSpec {
    /// HTTP endpoints.
    #[serde(default)]
    pub webhook: BTreeMap<String, Spanned<WebhookEvent>>,
    /// Cron schedules and intervals.
    #[serde(default)]
    pub calendar: BTreeMap<String, Spanned<CalendarEvent>>,
    /// Argo's pod template; accepted and ignored.
    #[serde(default)]
    pub template: Option<Value>,
    /// Argo's Service spec; accepted and ignored in file mode.
    #[serde(default)]
    pub service: Option<Value>,
    /// Argo's EventBus name; accepted and ignored in file mode.
    #[serde(default)]
    pub event_bus_name: Option<String>,
    /// Argo's replica count; accepted and ignored.
    #[serde(default)]
    pub replicas: Option<i64>,
}

/// One webhook endpoint (Argo's `WebhookContext`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookEvent {
    /// TCP port to listen on; endpoints on the same port share a server.
    pub port: IntOrString,
    /// URL path.
    pub endpoint: String,
    /// Accepted method, default POST.
    #[serde(default)]
    pub method: Option<String>,
    /// Bearer token required in `Authorization`.
    #[serde(default)]
    pub auth_secret: Option<SecretRef>,
    /// Largest accepted body in bytes (default 1 MiB), for every content type.
    #[serde(default)]
    pub max_payload_size: Option<u64>,
    /// Extra fields copied into the event context as extensions.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// External URL (informational).
    #[serde(default)]
    pub url: Option<String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// An EventSource filter (Argo's `filter.expression`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFilter {
    /// Boolean expression over the top-level keys of the event data.
    pub expression: Spanned<String>,
}

/// One calendar schedule (Argo's `CalendarEventSource`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalendarEvent {
    /// Standard 5-field cron (minute hour day-of-month month day-of-week, 0 or 7 = Sunday).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Fixed interval as a Go duration (`10s`, `1m30s`).
    #[serde(default)]
    pub interval: Option<String>,
    /// Dates (`YYYY-MM-DD`, in `timezone`) on which nothing fires.
    #[serde(default)]
    pub exclusion_dates: Vec<String>,
    /// IANA zone name for the schedule, default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}
