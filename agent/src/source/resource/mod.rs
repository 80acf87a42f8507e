//! The resource source: changes to Kubernetes objects of one resource in one namespace
//! become events (Argo's `ResourceEventSource`), through kube's watcher.
//!
//! Event data is Argo's `ResourceEventData`:
//!
//! ```json
//! {"type": "ADD" | "UPDATE" | "DELETE",
//!  "body": <the object>, "oldBody": <the object before an UPDATE, else null>,
//!  "group": "apps", "version": "v1", "resource": "deployments",
//!  "metadata": {…}}
//! ```
//!
//! `metadata` (the manifest's, left out when empty) is also stamped on the event as extension
//! attributes (names lower-cased), as for webhooks. `type` is `resource`, `source` the
//! EventSource name, `subject` the event name; the extension `eventtype` repeats ADD, UPDATE
//! or DELETE, so scripts can select on `ctx.eventtype`. `time` is when the change happened as
//! the object tells it (creation for ADD, the newest update in `managedFields` for UPDATE,
//! deletion for DELETE). The `id` is a UUID v5 of uid, `resourceVersion` and event type:
//! the same change seen twice (a relist, a restarted agent) has the same id, so the bus
//! drops the repeat within its dedup window.
//!
//! As with Argo's informer, the first list at start-up reports every existing object as ADD
//! (`afterStart` drops those created before the source started). After a watch restart that
//! needs a relist, only what changed meanwhile is reported: new objects as ADD, changed
//! ones as UPDATE and vanished ones as DELETE (with the last copy seen), see [`tracker`].
//! Each object is kept in memory once, as Argo's informer cache does.

mod selector;
pub mod tracker;
mod watch;

use chrono::{DateTime, Utc};

pub use selector::{FieldRequirement, SelectorError};
pub(super) use watch::{run, start};
pub use watch::{ResourceStartError, StartProblem, Watch};

use crate::compile::CompileContext;
use crate::manifest::{ResourceEvent, Spanned};

/// A change to a watched object, named as in Argo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceEventType {
    /// Created (or first seen).
    Add,
    /// Modified: a new `resourceVersion`.
    Update,
    /// Deleted.
    Delete,
}

impl ResourceEventType {
    /// `ADD`, `UPDATE` or `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    /// Parses Argo's spelling (upper case, exactly).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ADD" => Some(Self::Add),
            "UPDATE" => Some(Self::Update),
            "DELETE" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A compiled resource event.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// Namespace to watch; `None`: the agent's.
    pub namespace: Option<String>,
    /// API group (`""`: core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name, resolved through discovery when the source starts.
    pub resource: String,
    /// Changes that are published.
    pub event_types: Vec<ResourceEventType>,
    /// Label selector sent to the API server.
    pub label_selector: Option<String>,
    /// Field requirements checked on each object.
    pub fields: Vec<FieldRequirement>,
    /// Name prefix.
    pub prefix: String,
    /// Only objects created at or before this time.
    pub created_by: Option<DateTime<Utc>>,
    /// Only changes after the source started.
    pub after_start: bool,
}

impl ResourceConfig {
    /// Checks one resource event. Nothing here talks to the API server: the plural is
    /// resolved when the source starts, so `triggerd validate` needs no cluster.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        r: &Spanned<ResourceEvent>,
    ) -> Option<Self> {
        let loc = Some(&r.referenced);
        let r = &r.value;
        let before = ctx.errors.len();
        if let Some(c) = &r.cluster {
            ctx.error_with_hint(
                Some(&c.referenced),
                format!("{field}.cluster"),
                "cluster is not supported",
                "resources are watched in the cluster the agent is connected to (--kubeconfig or its service account); remove cluster",
            );
        }
        let group = r.group.trim();
        if group.contains('/') {
            ctx.error_with_hint(
                loc,
                format!("{field}.group"),
                format!("group {group:?} must not contain a version"),
                "put the version in version, e.g. group: apps, version: v1",
            );
        }
        let version = required(
            ctx,
            field,
            "version",
            r.version.as_ref(),
            loc,
            "the API version, e.g. v1 (group: apps, version: v1 for deployments)",
        );
        if let Some(v) = r.version.as_ref().filter(|v| v.value.contains('/')) {
            ctx.error_with_hint(
                Some(&v.referenced),
                format!("{field}.version"),
                format!("version {:?} must not contain the group", v.value),
                "split it: group: apps, version: v1",
            );
        }
        let resource = required(
            ctx,
            field,
            "resource",
            r.resource.as_ref(),
            loc,
            "the plural resource name, e.g. pods, configmaps or deployments",
        );
        if let Some(p) = r.resource.as_ref() {
            let name = p.value.trim();
            if name.contains('/') || name.bytes().any(|b| b.is_ascii_uppercase()) {
                ctx.error_with_hint(
                    Some(&p.referenced),
                    format!("{field}.resource"),
                    format!("resource {name:?} is not a plural resource name"),
                    "the lower-case plural as kubectl api-resources lists it, e.g. deployments (not Deployment, no subresources)",
                );
            }
        }
        let event_types = event_types(ctx, field, r, loc);
        let filter = r.filter.clone().unwrap_or_default();
        let mut labels = Vec::new();
        for (i, s) in filter.labels.iter().enumerate() {
            match selector::label_requirement(&s.value) {
                Ok(req) => labels.push(req),
                Err(e) => ctx.error_with_hint(
                    Some(&s.referenced),
                    format!("{field}.filter.labels[{i}]"),
                    e.message,
                    e.hint,
                ),
            }
        }
        let mut fields = Vec::new();
        for (i, s) in filter.fields.iter().enumerate() {
            match FieldRequirement::compile(&s.value) {
                Ok(f) => fields.push(f),
                Err(e) => ctx.error_with_hint(
                    Some(&s.referenced),
                    format!("{field}.filter.fields[{i}]"),
                    e.message,
                    e.hint,
                ),
            }
        }
        let created_by =
            filter.created_by.as_ref().and_then(|c| {
                match DateTime::parse_from_rfc3339(c.value.trim()) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(e) => {
                        ctx.error_with_hint(
                            Some(&c.referenced),
                            format!("{field}.filter.createdBy"),
                            format!("invalid time {:?}: {e}", c.value),
                            "an RFC 3339 time, e.g. 2024-05-01T00:00:00Z",
                        );
                        None
                    }
                }
            });
        if ctx.errors.len() > before {
            return None;
        }
        Some(Self {
            namespace: r
                .namespace
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            group: group.to_owned(),
            version: version?,
            resource: resource?,
            event_types: event_types?,
            label_selector: selector::label_selector(&labels),
            fields,
            prefix: filter.prefix.clone(),
            created_by,
            after_start: filter.after_start,
        })
    }

    /// Whether changes of this type are published.
    pub fn publishes(&self, t: ResourceEventType) -> bool {
        self.event_types.contains(&t)
    }
}

impl super::Section for ResourceConfig {
    const KEY: &'static str = "resource";
    type Manifest = ResourceEvent;

    /// The resource filter keeps its `expression` beside the label and field requirements.
    fn shared(event: &ResourceEvent) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().and_then(|f| f.expression.as_ref()),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<ResourceEvent>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Resource(Box::new(c)))
    }
}

/// A required, non-empty string field.
fn required(
    ctx: &mut CompileContext<'_>,
    field: &str,
    name: &str,
    value: Option<&Spanned<String>>,
    parent: Option<&serde_saphyr::Location>,
    hint: &str,
) -> Option<String> {
    match value.map(|v| (v.value.trim(), &v.referenced)) {
        Some((v, _)) if !v.is_empty() => Some(v.to_owned()),
        Some((_, at)) => {
            ctx.error_with_hint(
                Some(at),
                format!("{field}.{name}"),
                format!("{name} is empty"),
                hint,
            );
            None
        }
        None => {
            ctx.error_with_hint(
                parent,
                format!("{field}.{name}"),
                format!("{name} is required"),
                hint,
            );
            None
        }
    }
}

/// `eventTypes`: required, each one of ADD, UPDATE, DELETE (as Argo spells them).
fn event_types(
    ctx: &mut CompileContext<'_>,
    field: &str,
    r: &ResourceEvent,
    loc: Option<&serde_saphyr::Location>,
) -> Option<Vec<ResourceEventType>> {
    const HINT: &str = "a list of ADD, UPDATE and DELETE, e.g. eventTypes: [ADD, DELETE]";
    let Some(listed) = &r.event_types else {
        ctx.error_with_hint(
            loc,
            format!("{field}.eventTypes"),
            "eventTypes is required",
            HINT,
        );
        return None;
    };
    if listed.is_empty() {
        ctx.error_with_hint(
            loc,
            format!("{field}.eventTypes"),
            "eventTypes is empty: no change would be published",
            HINT,
        );
        return None;
    }
    let mut types = Vec::new();
    let mut ok = true;
    for (i, t) in listed.iter().enumerate() {
        match ResourceEventType::parse(t.value.trim()) {
            Some(parsed) => {
                if !types.contains(&parsed) {
                    types.push(parsed);
                }
            }
            None => {
                ok = false;
                ctx.error_with_hint(
                    Some(&t.referenced),
                    format!("{field}.eventTypes[{i}]"),
                    format!("unknown event type {:?}", t.value),
                    HINT,
                );
            }
        }
    }
    types.sort();
    ok.then_some(types)
}

/// Where a resource event's errors point: `spec.resource.<event>.<field>`.
pub fn field_path(event_name: &str, field: &str) -> String {
    format!("spec.resource.{event_name}.{field}")
}

#[cfg(test)]
mod tests;
