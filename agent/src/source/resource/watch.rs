//! Starting and running one resource event: resolve the plural, check the namespace, watch
//! with kube's watcher, classify with the [`ObjectTracker`], filter, publish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, TypeMeta};
use kube::discovery::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::tracker::{Change, ObjectTracker};
use super::{field_path, ResourceConfig, ResourceEventType};
use crate::cluster::{NamespaceRefused, ResolveError};
use crate::event::Event;
use crate::source::SourceContext;
use crate::telemetry::{SourceDrop, SourceTelemetry};

/// Namespace of the UUID v5 event ids (fixed, so ids are stable across agents and restarts).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c52_93d4_4e0b_8f47_2b9e_d1c0_57a3);

/// How long a failing watch waits before it warns again (errors in between go to debug).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why a resource event could not start (the agent then does not start either).
#[derive(Debug, thiserror::Error)]
#[error("EventSource {event_source}, resource event {event_name}: {field}: {problem}")]
pub struct ResourceStartError {
    /// EventSource name.
    pub event_source: String,
    /// Event name.
    pub event_name: String,
    /// The manifest field at fault, e.g. `spec.resource.pods.namespace`.
    pub field: String,
    /// What went wrong.
    pub problem: StartProblem,
}

/// What kept a resource event from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartProblem {
    /// The source was started without a Kubernetes client (a wiring bug: the plan should
    /// have asked for one).
    #[error("no Kubernetes API client was set up for this plan")]
    NoCluster,
    /// Discovery does not know the group/version/resource, or failed.
    #[error(transparent)]
    Resolve(ResolveError),
    /// The namespace is not the agent's and not allowed.
    #[error(transparent)]
    Namespace(NamespaceRefused),
    /// A cluster-scoped resource, and the agent may not act beyond namespaces.
    #[error(
        "{0} is cluster-scoped: the agent watches only namespaces (start it with \
         --allow-namespace '*' to permit cluster-scoped resources)"
    )]
    ClusterScoped(String),
    /// The first list was refused (RBAC, a selector the server rejects) or failed.
    #[error("cannot list {resource}: {error}")]
    List {
        /// What was listed.
        resource: String,
        /// The client error.
        error: kube::Error,
    },
}

/// A resource event ready to run: the API handle and watch settings, checked at start.
pub struct Watch {
    api: Api<DynamicObject>,
    settings: watcher::Config,
    resource: ApiResource,
    /// Namespace watched; `None` for a cluster-scoped resource.
    namespace: Option<String>,
    started: DateTime<Utc>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("resource", &self.resource.plural)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Resolves the resource through discovery, checks the namespace against the guard and
/// lists once (so RBAC or a refused selector fails start-up, naming the event and field).
pub async fn start(
    config: &ResourceConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> Result<Watch, ResourceStartError> {
    let fail = |field: &str, problem: StartProblem| ResourceStartError {
        event_source: event_source.to_owned(),
        event_name: event_name.to_owned(),
        field: field_path(event_name, field),
        problem,
    };
    let started = Utc::now();
    let Some(cluster) = ctx.cluster.as_ref() else {
        return Err(fail("resource", StartProblem::NoCluster));
    };
    let resolved = cluster
        .resolve_resource(&config.group, &config.version, &config.resource)
        .await
        .map_err(|e| fail("resource", StartProblem::Resolve(e)))?;
    let (api, namespace) = if resolved.namespaced {
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| cluster.namespace().to_owned());
        if !cluster.guard().allows(&namespace) {
            let refused = NamespaceRefused {
                namespace,
                own: cluster.namespace().to_owned(),
            };
            return Err(fail("namespace", StartProblem::Namespace(refused)));
        }
        let api = Api::namespaced_with(cluster.client().clone(), &namespace, &resolved.resource);
        (api, Some(namespace))
    } else {
        if !cluster.guard().allows("*") {
            return Err(fail(
                "resource",
                StartProblem::ClusterScoped(config.resource.clone()),
            ));
        }
        (
            Api::all_with(cluster.client().clone(), &resolved.resource),
            None,
        )
    };
    let mut settings = watcher::Config::default();
    let mut probe = ListParams::default().limit(1);
    if let Some(selector) = &config.label_selector {
        settings = settings.labels(selector);
        probe = probe.labels(selector);
    }
    if let Err(error) = api.list(&probe).await {
        let field = match &error {
            kube::Error::Api(s) if s.code == 400 && config.label_selector.is_some() => {
                "filter.labels"
            }
            _ => "resource",
        };
        let resource = match &namespace {
            Some(ns) => format!("{} in namespace {ns}", config.resource),
            None => config.resource.clone(),
        };
        return Err(fail(field, StartProblem::List { resource, error }));
    }
    tracing::info!(
        event_source,
        event_name,
        resource = %config.resource,
        kind = %resolved.resource.kind,
        namespace = namespace.as_deref().unwrap_or("(cluster)"),
        selector = config.label_selector.as_deref().unwrap_or(""),
        "resource source ready"
    );
    Ok(Watch {
        api,
        settings,
        resource: resolved.resource,
        namespace,
        started,
    })
}

/// Watches until shutdown, publishing each change with back-pressure: the watch is not
/// polled while the bus is full. Watch errors are retried by kube with its default backoff.
pub async fn run(
    config: ResourceConfig,
    shared: super::super::SharedSettings,
    event_source: String,
    event_name: String,
    watch: Watch,
    ctx: SourceContext,
) {
    let source = Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        config,
        shared,
        resource: watch.resource.clone(),
        started: watch.started,
        ctx,
    };
    let stream = watcher(watch.api, watch.settings).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut tracker: ObjectTracker<Arc<DynamicObject>> = ObjectTracker::default();
    let mut health = Health::default();
    let mut lists = 0u64;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = source.ctx.shutdown.cancelled() => break,
        };
        let Some(next) = next else { break };
        let event = match next {
            Ok(e) => {
                health.ok(&source.telemetry);
                e
            }
            Err(e) => {
                health.error(&source.telemetry, &e);
                continue;
            }
        };
        let changes = match event {
            watcher::Event::Init => {
                tracker.init();
                if lists > 0 {
                    tracing::info!(event_source = %source.telemetry.event_source(), event_name = %source.telemetry.event_name(), "resource watch restarted; relisting");
                }
                continue;
            }
            watcher::Event::InitApply(o) => {
                let o = source.complete(o);
                tracker.init_apply(&key(&o), &version(&o), Arc::new(o));
                continue;
            }
            watcher::Event::InitDone => {
                let changes = tracker.init_done();
                lists += 1;
                tracing::info!(
                    event_source = %source.telemetry.event_source(),
                    event_name = %source.telemetry.event_name(),
                    objects = tracker.len(),
                    changes = changes.len(),
                    relist = lists > 1,
                    "resource list complete"
                );
                changes
            }
            watcher::Event::Apply(o) => {
                let o = source.complete(o);
                tracker
                    .apply(&key(&o), &version(&o), Arc::new(o))
                    .into_iter()
                    .collect()
            }
            watcher::Event::Delete(o) => {
                let o = source.complete(o);
                vec![tracker.delete(&key(&o), Arc::new(o))]
            }
        };
        for change in changes {
            if source.publish(change).await.is_err() {
                return;
            }
        }
    }
}

/// The tracker's key: the uid, or namespace/name for a server that sets none.
fn key(o: &DynamicObject) -> String {
    o.uid()
        .unwrap_or_else(|| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
}

fn version(o: &DynamicObject) -> String {
    o.resource_version().unwrap_or_default()
}

/// Logs watch errors without flooding: the first of a run of errors warns, then at most one
/// warning a minute; the recovery is logged once.
#[derive(Default)]
struct Health {
    failures: u64,
    last_warning: Option<Instant>,
}

impl Health {
    fn ok(&mut self, source: &SourceTelemetry) {
        if self.failures > 0 {
            tracing::info!(event_source = %source.event_source(), event_name = %source.event_name(), failures = self.failures, "resource watch recovered");
        }
        self.failures = 0;
        self.last_warning = None;
    }

    fn error(&mut self, source: &SourceTelemetry, e: &watcher::Error) {
        let (es, en) = (source.event_source(), source.event_name());
        // 410 Gone: the watch fell too far behind; kube relists, which is routine (the
        // relist itself is logged).
        if matches!(e, watcher::Error::WatchError(s) if s.code == 410) {
            tracing::debug!(event_source = %es, event_name = %en, "resource watch expired (410 Gone)");
            return;
        }
        self.failures += 1;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            self.last_warning = Some(Instant::now());
            tracing::warn!(event_source = %es, event_name = %en, failures = self.failures, error = %e, "resource watch failed; retrying with backoff");
        } else {
            tracing::debug!(event_source = %es, event_name = %en, failures = self.failures, error = %e, "resource watch failed again");
        }
    }
}

struct Source {
    telemetry: SourceTelemetry,
    config: ResourceConfig,
    shared: super::super::SharedSettings,
    resource: ApiResource,
    started: DateTime<Utc>,
    ctx: SourceContext,
}

impl Source {
    /// Objects of a list carry no apiVersion and kind; the event body has them, as Argo's.
    fn complete(&self, mut o: DynamicObject) -> DynamicObject {
        if o.types.is_none() {
            o.types = Some(TypeMeta {
                api_version: self.resource.api_version.clone(),
                kind: self.resource.kind.clone(),
            });
        }
        o
    }

    /// Filters and publishes one change; `Err` when the agent is stopping.
    async fn publish(
        &self,
        change: Change<Arc<DynamicObject>>,
    ) -> Result<(), crate::source::Stopped> {
        let (t, new, old) = match change {
            Change::Added(o) => (ResourceEventType::Add, o, None),
            Change::Updated { old, new } => (ResourceEventType::Update, new, Some(old)),
            Change::Deleted(o) => (ResourceEventType::Delete, o, None),
        };
        if !self.config.publishes(t) {
            return Ok(());
        }
        let at = event_time(&new, t);
        if let Some(reason) = dropped_by(&self.config, self.started, &new, at) {
            self.telemetry
                .filtered(&new.name_any(), SourceDrop::Rule(reason));
            return Ok(());
        }
        let event = change_event(
            &self.config,
            &self.shared.metadata,
            &self.telemetry,
            t,
            &new,
            old.as_deref(),
            at,
        );
        self.ctx
            .publish_waiting(&self.telemetry, self.shared.filter.as_ref(), event)
            .await
    }
}

/// Why the resource filter drops a change (prefix, afterStart, createdBy, fields); `None`
/// when it passes. `at` is the change's [`event_time`], `started` when the source started.
pub(super) fn dropped_by(
    c: &ResourceConfig,
    started: DateTime<Utc>,
    o: &DynamicObject,
    at: DateTime<Utc>,
) -> Option<&'static str> {
    if !c.prefix.is_empty() && !o.name_any().starts_with(&c.prefix) {
        return Some("name prefix");
    }
    if c.after_start && at < started {
        return Some("afterStart");
    }
    if let (Some(limit), Some(created)) = (c.created_by, creation(o)) {
        if created > limit {
            return Some("createdBy");
        }
    }
    if !c.fields.is_empty() {
        let text = serde_json::to_string(o).unwrap_or_default();
        if !c.fields.iter().all(|f| f.matches(&text)) {
            return Some("fields");
        }
    }
    None
}

/// The event of one change (see the module documentation for its shape).
pub(super) fn change_event(
    c: &ResourceConfig,
    metadata: &BTreeMap<String, String>,
    source: &SourceTelemetry,
    t: ResourceEventType,
    new: &DynamicObject,
    old: Option<&DynamicObject>,
    at: DateTime<Utc>,
) -> Event {
    let to_value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or(Value::Null);
    let mut data = Map::new();
    data.insert("type".into(), t.as_str().into());
    data.insert("body".into(), to_value(new));
    data.insert("oldBody".into(), old.map_or(Value::Null, to_value));
    data.insert("group".into(), c.group.clone().into());
    data.insert("version".into(), c.version.clone().into());
    data.insert("resource".into(), c.resource.clone().into());
    if !metadata.is_empty() {
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())));
        data.insert("metadata".into(), Value::Object(metadata.collect()));
    }
    let data = Value::Object(data);
    let raw = Bytes::from(data.to_string());
    let (es, en) = (source.event_source(), source.event_name());
    let mut event = Event::new(es, en, "resource", data, raw);
    event.raw_is_data = true;
    event.id = event_id(es, en, &key(new), &version(new), t);
    event.time = at;
    event
        .extensions
        .insert("eventtype".into(), t.as_str().into());
    for (k, v) in metadata {
        event
            .extensions
            .entry(k.to_ascii_lowercase())
            .or_insert_with(|| v.clone().into());
    }
    event
}

/// The same change of the same object for the same event always has the same id.
pub(super) fn event_id(
    event_source: &str,
    event_name: &str,
    uid: &str,
    resource_version: &str,
    t: ResourceEventType,
) -> String {
    let name = format!(
        "{event_source}\n{event_name}\n{uid}\n{resource_version}\n{}",
        t.as_str()
    );
    uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// When the change happened, as Argo reckons it for `afterStart`: creation for ADD, the
/// newest `Update` in `managedFields` (or creation) for UPDATE, deletion for DELETE; now
/// when the object does not say.
pub(super) fn event_time(o: &DynamicObject, t: ResourceEventType) -> DateTime<Utc> {
    let meta = &o.metadata;
    let at = match t {
        ResourceEventType::Add => creation(o),
        ResourceEventType::Update => {
            let updates = meta
                .managed_fields
                .iter()
                .flatten()
                .filter(|f| f.operation.as_deref() == Some("Update"))
                .filter_map(|f| f.time.as_ref().and_then(|t| to_chrono(&t.0)));
            creation(o).into_iter().chain(updates).max()
        }
        ResourceEventType::Delete => meta
            .deletion_timestamp
            .as_ref()
            .and_then(|t| to_chrono(&t.0)),
    };
    at.unwrap_or_else(Utc::now)
}

fn creation(o: &DynamicObject) -> Option<DateTime<Utc>> {
    o.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| to_chrono(&t.0))
}

fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.as_millisecond())
}
