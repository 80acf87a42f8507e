//! Cluster mode (`triggerd run --kube`): the Sensor and EventSource objects of the agent's
//! namespace are its manifests.
//!
//! Watchers (kube-runtime reflectors) keep a copy of both kinds, and of the ConfigMaps that
//! hold scripts ([`SCRIPTS_LABEL`]). After a change settles,
//! each object is rendered as a YAML manifest and goes through the same loader and plan
//! builder as file mode, alone first (so its errors are its own). Objects with errors are
//! left out and the rest run: one broken object never stops the others.
//!
//! The valid objects fall into groups that share nothing: an EventSource with the Sensors
//! that depend on it (and EventSources sharing a webhook port), each group a plan of its own
//! with its own bus. A change restarts only the groups whose members changed: their plans
//! drain (accepted events are still processed, in-flight triggers finish) and start again;
//! the other groups keep running, partial condition state included. Every object's status
//! says whether it compiled and runs, naming field, line and column of each error, and
//! counts its triggers' outcomes; failed executions are also recorded as Warning Events on
//! their Sensor. With several replicas, a Lease (`leader`) picks the one that runs singleton
//! sources (calendars) and writes status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use serde_saphyr::SerializeError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::crd::{Condition, EventSourceResource, ResourceStatus, SensorResource, TriggerOutcomes};
use super::leader::{LeaderOptions, LeaseLock};
use super::Cluster;
use crate::agent::{run_plan, AgentOptions, Shared};
use crate::manifest::{load_text, Document, Loaded, ManifestError, Position, API_VERSION};
use crate::plan::{build_plan, Plan};
use crate::script::{Limits, ScriptHost};
use crate::source::{SourceKind, SourceSpec};
use crate::telemetry::{Metrics, OutcomeLabels, Readiness};

/// ConfigMaps with this label (value `true`) hold Rhai scripts: each `*.rhai` key is a file
/// of the first library directory, for `scriptFile` and `import`.
pub const SCRIPTS_LABEL: &str = "triggerd.io/scripts";

/// Settings of the controller, besides the agent's own.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How plans run.
    pub agent: AgentOptions,
    /// Rhai library directories (`import`, `scriptFile`); the first one holds the scripts
    /// of the namespace's script ConfigMaps (see [`SCRIPTS_LABEL`]) and is rewritten by the
    /// controller.
    pub library_dirs: Vec<PathBuf>,
    /// Script limits.
    pub limits: Limits,
    /// How long changes must settle before the plan is rebuilt (several objects applied
    /// together make one reload).
    pub settle: Duration,
    /// How often trigger outcome counts are written to status.
    pub status_interval: Duration,
    /// How long to wait before starting a plan again after it failed to start.
    pub retry_delay: Duration,
    /// With several replicas: the Lease that picks the one running singleton sources
    /// (calendars) and writing status. `None`: this replica does both.
    pub leader: Option<LeaderOptions>,
}

/// The two kinds the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    EventSource,
    Sensor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::EventSource => "EventSource",
            Kind::Sensor => "Sensor",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::EventSource => "eventsources",
            Kind::Sensor => "sensors",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::EventSource => ApiResource::erase::<EventSourceResource>(&()),
            Kind::Sensor => ApiResource::erase::<SensorResource>(&()),
        }
    }

    fn from_plural(plural: &str) -> Option<Kind> {
        [Kind::EventSource, Kind::Sensor]
            .into_iter()
            .find(|k| k.plural() == plural)
    }
}

/// An object: its kind and name.
type Key = (Kind, String);

/// The file name errors of an object are reported under: `sensors/NAME`.
fn object_path(key: &Key) -> PathBuf {
    Path::new(key.0.plural()).join(&key.1)
}

fn key_of_path(path: &Path) -> Option<Key> {
    let name = path.file_name()?.to_str()?;
    let kind = Kind::from_plural(path.parent()?.to_str()?)?;
    Some((kind, name.to_owned()))
}

/// One watched object, as the controller needs it.
#[derive(Debug, Clone)]
struct Object {
    key: Key,
    uid: Option<String>,
    generation: Option<i64>,
    spec: Value,
    status: Option<Value>,
}

impl Object {
    fn from_dynamic(kind: Kind, obj: &DynamicObject) -> Option<Object> {
        let name = obj.metadata.name.clone()?;
        Some(Object {
            key: (kind, name),
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation,
            spec: obj.data.get("spec").cloned().unwrap_or(Value::Null),
            status: obj.data.get("status").cloned(),
        })
    }
}

/// The object as a YAML manifest: keys sorted, as `kubectl get -o yaml` prints them, so
/// error positions point at the lines of that view of the object's spec.
fn render(key: &Key, namespace: &str, spec: &Value) -> Result<String, SerializeError> {
    let doc = json!({
        "apiVersion": API_VERSION,
        "kind": key.0.name(),
        "metadata": {"name": key.1, "namespace": namespace},
        "spec": sorted(spec),
    });
    serde_saphyr::to_string(&doc)
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A part of the namespace that shares nothing with the rest, run as one plan.
struct Group {
    /// The spec of each member.
    members: BTreeMap<Key, Value>,
    /// Its plan, with the host its scripts were compiled by.
    plan: Plan,
    host: Arc<ScriptHost>,
}

/// What a compile round produced.
#[derive(Default)]
struct Compiled {
    /// The valid objects, in independent groups.
    groups: Vec<Group>,
    /// The spec of every valid object.
    members: BTreeMap<Key, Value>,
    /// Errors of the objects left out.
    errors: BTreeMap<Key, Vec<ManifestError>>,
    /// Per sensor: the EventSources it depends on and its trigger names.
    sensors: BTreeMap<String, (BTreeSet<String>, Vec<String>)>,
}

/// What compiling needs: script limits, library directories and the script timings.
struct CompileSettings<'a> {
    namespace: &'a str,
    limits: &'a Limits,
    library_dirs: &'a [PathBuf],
    metrics: &'a Metrics,
}

fn compile(objects: &[Object], settings: &CompileSettings<'_>) -> Compiled {
    let namespace = settings.namespace;
    let lib = settings.library_dirs;
    let host = Arc::new(
        ScriptHost::new(settings.limits.clone(), lib.to_vec())
            .with_timings(settings.metrics.script_seconds.clone()),
    );
    let mut out = Compiled::default();
    let mut loaded: BTreeMap<Key, Vec<Loaded>> = BTreeMap::new();
    for obj in objects {
        let path = object_path(&obj.key);
        let (mut docs, mut errors) = (Vec::new(), Vec::new());
        match render(&obj.key, namespace, &obj.spec) {
            Ok(text) => load_text(&path, &text, &mut docs, &mut errors),
            Err(e) => errors.push(ManifestError::new(
                Position {
                    file: path,
                    ..Position::default()
                },
                "spec",
                format!("cannot render the object as YAML: {e}"),
            )),
        }
        if errors.is_empty() {
            if let Err(more) = build_plan(&docs, &host, lib) {
                errors = more;
            }
        }
        if !errors.is_empty() {
            out.errors.insert(obj.key.clone(), errors);
            continue;
        }
        for doc in &docs {
            if let Document::Sensor(s) = &doc.doc {
                let sources = s
                    .spec
                    .dependencies
                    .iter()
                    .map(|d| d.event_source_name.clone())
                    .collect();
                let triggers = s
                    .spec
                    .triggers
                    .iter()
                    .map(|t| t.template.name.clone())
                    .collect();
                out.sensors.insert(obj.key.1.clone(), (sources, triggers));
            }
        }
        loaded.insert(obj.key.clone(), docs);
        out.members.insert(obj.key.clone(), obj.spec.clone());
    }
    for keys in partition(objects, &out) {
        let mut keys = keys;
        // Valid alone, an object may still clash with another of its group (the same webhook
        // port and endpoint): those are left out too, and the rest is built again.
        loop {
            let docs: Vec<Loaded> = keys
                .iter()
                .flat_map(|k| loaded.get(k).into_iter().flatten().cloned())
                .collect();
            match build_plan(&docs, &host, lib) {
                Ok(plan) => {
                    let members = keys
                        .iter()
                        .filter_map(|k| out.members.get(k).map(|spec| (k.clone(), spec.clone())))
                        .collect();
                    out.groups.push(Group {
                        members,
                        plan,
                        host: host.clone(),
                    });
                    break;
                }
                Err(errors) => {
                    for e in errors {
                        let blamed = key_of_path(&e.position.file)
                            .filter(|k| keys.contains(k))
                            .map(|k| vec![k])
                            .unwrap_or_else(|| keys.clone());
                        for key in blamed {
                            out.errors.entry(key).or_default().push(e.clone());
                        }
                    }
                    keys.retain(|k| !out.errors.contains_key(k));
                    if keys.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    out.members.retain(|k, _| !out.errors.contains_key(k));
    out.sensors
        .retain(|name, _| out.members.contains_key(&(Kind::Sensor, name.clone())));
    out
}

/// Splits the valid objects into groups that share nothing: a Sensor joins the
/// EventSources it depends on, EventSources join those with a webhook on the same port.
fn partition(objects: &[Object], compiled: &Compiled) -> Vec<Vec<Key>> {
    let keys: Vec<&Key> = objects
        .iter()
        .map(|o| &o.key)
        .filter(|k| compiled.members.contains_key(*k))
        .collect();
    let index = |key: &Key| keys.iter().position(|k| *k == key);
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    fn join(parent: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (root(parent, a), root(parent, b));
        parent[ra] = rb;
    }
    let mut by_port: BTreeMap<String, usize> = BTreeMap::new();
    for obj in objects {
        let Some(i) = index(&obj.key) else { continue };
        match obj.key.0 {
            Kind::Sensor => {
                let sources = compiled
                    .sensors
                    .get(&obj.key.1)
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                for source in sources {
                    if let Some(j) = index(&(Kind::EventSource, source)) {
                        join(&mut parent, i, j);
                    }
                }
            }
            Kind::EventSource => {
                let webhooks = obj.spec["webhook"].as_object().cloned().unwrap_or_default();
                for hook in webhooks.values() {
                    let port = match &hook["port"] {
                        Value::String(p) => p.trim().to_owned(),
                        other => other.to_string(),
                    };
                    match by_port.get(&port) {
                        Some(&j) => join(&mut parent, i, j),
                        None => {
                            by_port.insert(port, i);
                        }
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push((*key).clone());
    }
    groups.into_values().collect()
}

/// A group's plan, running or failed.
struct Running {
    id: u64,
    members: BTreeMap<Key, Value>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
    state: PlanState,
    /// The group has singleton sources (calendars)...
    has_singletons: bool,
    /// ...and they were started (this replica led when the group started).
    singletons_on: bool,
    /// The script library version it was compiled against.
    library: u64,
}

/// How a group's plan fares.
#[derive(Debug, Clone, PartialEq)]
enum PlanState {
    /// Started, not serving yet.
    Starting,
    /// Serving (sources up).
    Serving,
    /// Failed to start (or stopped by itself), with the error; retried later.
    Failed(String),
}

/// What a group's plan reports to the controller.
enum GroupEvent {
    /// Its sources are up.
    Serving,
    /// It ended by itself (a start-up error): `Err` with the error.
    Ended(Result<(), String>),
}

/// The controller's state between events.
struct Controller {
    namespace: String,
    options: ControllerOptions,
    shared: Shared,
    stores: [(Kind, Store<DynamicObject>, Api<DynamicObject>); 2],
    compiled: Compiled,
    compiled_from: Option<(BTreeMap<Key, Value>, u64)>,
    /// The script ConfigMaps.
    scripts: Store<DynamicObject>,
    /// The scripts written to the library directory, and how often they changed.
    library: (BTreeMap<String, String>, u64),
    running: Vec<Running>,
    plans_started: u64,
    group_events: mpsc::UnboundedSender<(u64, GroupEvent)>,
    /// Outcome counts when each sensor's current spec started, by sensor.
    baselines: BTreeMap<String, (Value, BTreeMap<String, TriggerOutcomes>)>,
    /// Failed executions already recorded as Kubernetes Events, by sensor and trigger.
    reported: BTreeMap<(String, String), u64>,
    /// Failures to record as Events after the status pass: sensor, trigger, how many.
    failures: Vec<(Object, String, u64)>,
    /// Where those Events go.
    kube_events: Api<KubeEvent>,
    /// The Lease, when replicas elect a leader.
    lease: Option<LeaseLock>,
    /// Whether this replica leads (always, without a Lease).
    leader: bool,
}

/// Runs cluster mode until `shutdown`, then drains every group's plan and gives the Lease up.
pub async fn run_controller(
    cluster: Cluster,
    options: ControllerOptions,
    shared: Shared,
    shutdown: CancellationToken,
) {
    let namespace = cluster.namespace().to_owned();
    let client = cluster.client().clone();
    // Plans that need the API (Kubernetes triggers, resource sources) use this connection.
    let _ = shared.cluster.set(cluster);
    let mut streams = Vec::new();
    let stores = [Kind::EventSource, Kind::Sensor].map(|kind| {
        let resource = kind.api_resource();
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
        let writer = Writer::new(resource);
        let store = writer.as_reader();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .map(move |event| (Some(kind), event));
        streams.push(stream.boxed());
        (kind, store, api)
    });
    let scripts = {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
        let writer = Writer::new(resource);
        let store = writer.as_reader();
        let config = watcher::Config::default().labels(&format!("{SCRIPTS_LABEL}=true"));
        let stream = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .map(|event| (None, event));
        streams.push(stream.boxed());
        store
    };
    let mut events = futures::stream::select_all(streams);
    let (group_events, mut from_groups) = mpsc::unbounded_channel();
    let kube_events = Api::namespaced(client.clone(), &namespace);
    let lease_every = lease_interval(&options);
    let lease = options
        .leader
        .clone()
        .map(|o| LeaseLock::new(Api::namespaced(client.clone(), &namespace), o));
    let mut ctl = Controller {
        namespace,
        options,
        shared,
        stores,
        compiled: Compiled::default(),
        compiled_from: None,
        scripts,
        library: (BTreeMap::new(), 0),
        running: Vec::new(),
        plans_started: 0,
        group_events,
        baselines: BTreeMap::new(),
        reported: BTreeMap::new(),
        failures: Vec::new(),
        kube_events,
        leader: lease.is_none(),
        lease,
    };
    tracing::info!(namespace = %ctl.namespace, "cluster mode: watching Sensors and EventSources");
    let mut listed = BTreeSet::new();
    let mut rebuild_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(ctl.options.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_tick = tokio::time::interval(lease_every);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rebuild = async {
            match rebuild_at {
                Some(at) if listed.len() == 3 => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.next() => {
                let Some((kind, event)) = event else { break };
                match event {
                    Ok(watcher::Event::InitDone) => {
                        listed.insert(kind);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let kind = kind.map_or("ConfigMap", Kind::name);
                        tracing::warn!(kind, error = %e, "watch failed; retrying");
                        continue;
                    }
                }
                rebuild_at.get_or_insert_with(|| Instant::now() + ctl.options.settle);
            }
            () = rebuild => {
                rebuild_at = None;
                ctl.rebuild().await;
                ctl.write_statuses().await;
            }
            Some((id, event)) = from_groups.recv() => {
                let Some(group) = ctl.running.iter_mut().find(|g| g.id == id) else {
                    continue; // a group stopped on purpose
                };
                match event {
                    GroupEvent::Serving => group.state = PlanState::Serving,
                    GroupEvent::Ended(result) => {
                        let error = result.err().unwrap_or_else(|| "the plan stopped".to_owned());
                        tracing::error!(error = %error, retry_in = ?ctl.options.retry_delay, "plan failed to start");
                        group.state = PlanState::Failed(error);
                        rebuild_at = Some(Instant::now() + ctl.options.retry_delay);
                    }
                }
                ctl.update_readiness();
                ctl.write_statuses().await;
            }
            _ = tick.tick() => ctl.write_statuses().await,
            _ = lease_tick.tick(), if ctl.lease.is_some() => {
                if ctl.renew_lease().await {
                    rebuild_at = Some(Instant::now());
                }
            }
        }
    }
    ctl.shared.ready.set(false);
    for group in std::mem::take(&mut ctl.running) {
        stop_group(group).await;
    }
    if let Some(lease) = &ctl.lease {
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "cannot release the lease");
        }
    }
}

/// Renewals come three times per lease duration, as client-go's.
fn lease_interval(options: &ControllerOptions) -> Duration {
    options
        .leader
        .as_ref()
        .map_or(Duration::from_secs(3600), |l| {
            (l.duration / 3).max(Duration::from_millis(100))
        })
}

/// Stops a group's plan and waits until it drained.
async fn stop_group(group: Running) {
    group.stop.cancel();
    if let Err(e) = group.handle.await {
        tracing::warn!(error = %e, "plan task failed");
    }
}

impl Controller {
    fn objects(&self) -> Vec<Object> {
        let mut objects: Vec<Object> = self
            .stores
            .iter()
            .flat_map(|(kind, store, _)| {
                store
                    .state()
                    .into_iter()
                    .filter_map(|o| Object::from_dynamic(*kind, &o))
                    .collect::<Vec<_>>()
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects
    }

    /// Compiles the objects again when their specs changed, or a group failed, and restarts
    /// the groups whose members changed (or failed); the others keep running.
    async fn rebuild(&mut self) {
        let objects = self.objects();
        let specs: BTreeMap<Key, Value> = objects
            .iter()
            .map(|o| (o.key.clone(), o.spec.clone()))
            .collect();
        self.write_library();
        let stale = self.running.iter().any(|g| self.stale(g));
        let from = (specs, self.library.1);
        if self.compiled_from.as_ref() == Some(&from) && !stale {
            return;
        }
        let compiled = compile(
            &objects,
            &CompileSettings {
                namespace: &self.namespace,
                limits: &self.options.limits,
                library_dirs: &self.options.library_dirs,
                metrics: &self.shared.metrics,
            },
        );
        for (key, errors) in &compiled.errors {
            for e in errors {
                tracing::error!(kind = key.0.name(), name = %key.1, "{e}");
            }
        }
        self.compiled_from = Some(from);
        let Compiled {
            groups,
            members,
            errors,
            sensors,
        } = compiled;
        self.compiled = Compiled {
            groups: Vec::new(),
            members,
            errors,
            sensors,
        };
        let (keep, stop): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| !self.stale(r) && groups.iter().any(|g| g.members == r.members));
        for group in stop {
            stop_group(group).await;
        }
        self.running = keep;
        for group in groups {
            if self.running.iter().any(|r| r.members == group.members) {
                continue;
            }
            self.start_group(group);
        }
        self.update_readiness();
    }

    /// Writes the scripts of the script ConfigMaps into the first library directory when
    /// they changed (every group is then compiled and started again).
    fn write_library(&mut self) {
        let mut scripts = BTreeMap::new();
        for cm in self.scripts.state() {
            let Some(data) = cm.data.get("data").and_then(Value::as_object) else {
                continue;
            };
            for (key, text) in data {
                // Kubernetes keeps keys to `[-._a-zA-Z0-9]`; a path separator is never a file.
                let plain = key.ends_with(".rhai") && !key.contains(['/', '\\']);
                if let (true, Some(text)) = (plain, text.as_str()) {
                    scripts.insert(key.clone(), text.to_owned());
                }
            }
        }
        if scripts == self.library.0 {
            return;
        }
        let Some(dir) = self.options.library_dirs.first() else {
            return;
        };
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            for old in self.library.0.keys().filter(|k| !scripts.contains_key(*k)) {
                std::fs::remove_file(dir.join(old))?;
            }
            for (name, text) in &scripts {
                std::fs::write(dir.join(name), text)?;
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), scripts = scripts.len(), "script ConfigMaps changed");
                self.library = (scripts, self.library.1 + 1);
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot write the scripts of the script ConfigMaps")
            }
        }
    }

    /// A group to start again: it failed, or leadership changed since it started its
    /// singleton sources (or held them back).
    fn stale(&self, group: &Running) -> bool {
        matches!(group.state, PlanState::Failed(_))
            || group.library != self.library.1
            || (group.has_singletons && group.singletons_on != self.leader)
    }

    /// Takes or renews the Lease; true when leadership changed.
    async fn renew_lease(&mut self) -> bool {
        let Some(lease) = &self.lease else {
            return false;
        };
        let leader = match lease.try_acquire().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease; standing by");
                false
            }
        };
        if leader == self.leader {
            return false;
        }
        tracing::info!(identity = lease.identity(), leader, "leadership changed");
        self.leader = leader;
        true
    }

    /// Starts a group's plan with its own readiness; metrics and the API connection are
    /// shared. Unless this replica leads, singleton sources (calendars) are held back.
    fn start_group(&mut self, mut group: Group) {
        let is_singleton = |s: &SourceSpec| matches!(s.kind, SourceKind::Calendar(_));
        let has_singletons = group.plan.sources.iter().any(is_singleton);
        if !self.leader {
            group.plan.sources.retain(|s| !is_singleton(s));
        }
        let id = self.plans_started;
        self.plans_started += 1;
        tracing::info!(
            objects = ?group.members.keys().map(|k| format!("{}/{}", k.0.plural(), k.1)).collect::<Vec<_>>(),
            "starting"
        );
        let shared = Shared {
            metrics: self.shared.metrics.clone(),
            ready: Arc::new(Readiness::default()),
            cluster: self.shared.cluster.clone(),
        };
        let mut ready = shared.ready.subscribe();
        let events = self.group_events.clone();
        tokio::spawn(async move {
            // Ends without a message when the plan ends before it is ready.
            if ready.wait_for(|r| *r).await.is_ok() {
                let _ = events.send((id, GroupEvent::Serving));
            }
        });
        let stop = CancellationToken::new();
        let handle = {
            let (options, stop, events) = (
                self.options.agent.clone(),
                stop.clone(),
                self.group_events.clone(),
            );
            let (plan, host, reloaded) = (group.plan, group.host, id > 0);
            tokio::spawn(async move {
                let ended = run_plan(plan, host, &options, &shared, stop.clone(), reloaded).await;
                if !stop.is_cancelled() {
                    let _ =
                        events.send((id, GroupEvent::Ended(ended.map_err(|e| format!("{e:#}")))));
                } else if let Err(e) = ended {
                    tracing::warn!(error = %format!("{e:#}"), "plan ended with an error");
                }
            })
        };
        self.running.push(Running {
            id,
            members: group.members,
            stop,
            handle,
            state: PlanState::Starting,
            has_singletons,
            singletons_on: self.leader,
            library: self.library.1,
        });
    }

    /// Ready when every group that has not failed serves.
    fn update_readiness(&self) {
        let ready = self.running.iter().all(|g| g.state != PlanState::Starting);
        self.shared.ready.set(ready);
    }

    /// Writes the status of every object whose status changed.
    async fn write_statuses(&mut self) {
        if !self.leader {
            return; // the leader writes status and Events
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for obj in self.objects() {
            let status = self.status_of(&obj, &now);
            let old: Option<ResourceStatus> = obj
                .status
                .as_ref()
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            let status = carry_transition_times(status, old.as_ref());
            if old.as_ref() == Some(&status) {
                continue;
            }
            let Some((_, _, api)) = self.stores.iter().find(|(k, _, _)| *k == obj.key.0) else {
                continue;
            };
            // A merge patch keeps fields it does not name: clear the counts explicitly.
            let mut body = serde_json::to_value(&status).unwrap_or_default();
            if let Some(fields) = body.as_object_mut() {
                fields.entry("triggers").or_insert(Value::Null);
            }
            let patch = Patch::Merge(json!({ "status": body }));
            if let Err(e) = api
                .patch_status(&obj.key.1, &PatchParams::default(), &patch)
                .await
            {
                tracing::warn!(kind = obj.key.0.name(), name = %obj.key.1, error = %e, "cannot write status");
            }
        }
        for (obj, trigger, count) in std::mem::take(&mut self.failures) {
            self.record_failures(&obj, &trigger, count, &now).await;
        }
    }

    /// Records failed executions of a trigger as a Warning Event on its Sensor
    /// (`kubectl describe sensor NAME`, `kubectl get events`).
    async fn record_failures(&self, obj: &Object, trigger: &str, count: u64, now: &str) {
        let sensor = &obj.key.1;
        let message = if count == 1 {
            format!("trigger {trigger}: an execution failed and went to the dead letter")
        } else {
            format!("trigger {trigger}: {count} executions failed and went to the dead letter")
        };
        let event = json!({
            "metadata": {"generateName": format!("{sensor}.")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": Kind::Sensor.name(),
                "name": sensor,
                "namespace": self.namespace,
                "uid": obj.uid,
            },
            "type": "Warning",
            "reason": "TriggerFailed",
            "message": message,
            "source": {"component": "triggerd"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
        });
        let created = match serde_json::from_value::<KubeEvent>(event) {
            Ok(event) => self
                .kube_events
                .create(&PostParams::default(), &event)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = created {
            tracing::warn!(sensor = %sensor, trigger, error = %e, "cannot record a Kubernetes Event");
        }
    }

    fn status_of(&mut self, obj: &Object, now: &str) -> ResourceStatus {
        let generation = obj.generation;
        let condition = |type_: &str, status: &str, reason: &str, message: String| Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: now.to_owned(),
            observed_generation: generation,
        };
        let mut status = ResourceStatus {
            observed_generation: generation,
            ..ResourceStatus::default()
        };
        if let Some(errors) = self.compiled.errors.get(&obj.key) {
            let message = errors.iter().map(describe).collect::<Vec<_>>().join("\n");
            let scripts = if errors.iter().any(is_script_error) {
                condition("ScriptsCompiled", "False", "ScriptError", message.clone())
            } else {
                condition(
                    "ScriptsCompiled",
                    "Unknown",
                    "NotCompiled",
                    "the spec has errors".into(),
                )
            };
            status.conditions = vec![
                condition("Ready", "False", "InvalidSpec", message),
                scripts,
                condition(
                    "SourcesRunning",
                    "False",
                    "InvalidSpec",
                    "not started: the spec has errors".into(),
                ),
            ];
            return status;
        }
        let group = self
            .running
            .iter()
            .find(|g| g.members.get(&obj.key) == Some(&obj.spec));
        let (ready, sources) = match group.map(|g| &g.state) {
            Some(PlanState::Failed(e)) => (
                condition("Ready", "False", "StartFailed", e.clone()),
                condition("SourcesRunning", "False", "StartFailed", e.clone()),
            ),
            Some(PlanState::Serving) => (
                condition("Ready", "True", "Running", String::new()),
                self.sources_condition(obj, &condition),
            ),
            _ => (
                condition("Ready", "Unknown", "Starting", String::new()),
                condition("SourcesRunning", "Unknown", "Starting", String::new()),
            ),
        };
        status.conditions = vec![
            ready,
            condition("ScriptsCompiled", "True", "Compiled", String::new()),
            sources,
        ];
        if obj.key.0 == Kind::Sensor {
            status.triggers = self.trigger_counts(obj);
        }
        status
    }

    fn sources_condition(
        &self,
        obj: &Object,
        condition: &dyn Fn(&str, &str, &str, String) -> Condition,
    ) -> Condition {
        if obj.key.0 == Kind::EventSource {
            return condition("SourcesRunning", "True", "Running", String::new());
        }
        let missing: Vec<&str> = self
            .compiled
            .sensors
            .get(&obj.key.1)
            .map(|(sources, _)| {
                sources
                    .iter()
                    .filter(|s| {
                        !self
                            .compiled
                            .members
                            .contains_key(&(Kind::EventSource, (*s).clone()))
                    })
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        if missing.is_empty() {
            condition("SourcesRunning", "True", "Running", String::new())
        } else {
            condition(
                "SourcesRunning",
                "False",
                "EventSourceMissing",
                format!(
                    "waiting for EventSource {} (not running in this namespace)",
                    missing.join(", ")
                ),
            )
        }
    }

    /// Outcomes since the sensor's current spec started.
    fn trigger_counts(&mut self, obj: &Object) -> BTreeMap<String, TriggerOutcomes> {
        let sensor = &obj.key.1;
        let triggers = self
            .compiled
            .sensors
            .get(sensor)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        let metrics = &self.shared.metrics;
        let read = |trigger: &str, outcome: &str| {
            metrics
                .trigger_executions
                .get_or_create(&OutcomeLabels {
                    sensor: sensor.clone(),
                    trigger: trigger.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .get()
        };
        let totals: BTreeMap<String, TriggerOutcomes> = triggers
            .iter()
            .map(|t| {
                let counts = TriggerOutcomes {
                    succeeded: read(t, "success"),
                    failed: read(t, "failed"),
                };
                (t.clone(), counts)
            })
            .collect();
        for (trigger, now) in &totals {
            let seen = self
                .reported
                .entry((sensor.clone(), trigger.clone()))
                .or_insert(now.failed);
            if now.failed > *seen {
                self.failures
                    .push((obj.clone(), trigger.clone(), now.failed - *seen));
                *seen = now.failed;
            }
        }
        let baseline = self
            .baselines
            .entry(sensor.clone())
            .or_insert_with(|| (obj.spec.clone(), totals.clone()));
        if baseline.0 != obj.spec {
            *baseline = (obj.spec.clone(), totals.clone());
        }
        totals
            .into_iter()
            .map(|(t, now)| {
                let base = baseline.1.get(&t).copied().unwrap_or_default();
                let counts = TriggerOutcomes {
                    succeeded: now.succeeded.saturating_sub(base.succeeded),
                    failed: now.failed.saturating_sub(base.failed),
                };
                (t, counts)
            })
            .collect()
    }
}

/// A condition whose status did not change keeps its transition time.
fn carry_transition_times(
    mut status: ResourceStatus,
    old: Option<&ResourceStatus>,
) -> ResourceStatus {
    let Some(old) = old else {
        return status;
    };
    for c in &mut status.conditions {
        if let Some(prev) = old
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    status
}

/// One error for a status message: field, line and column in the object's YAML, message
/// and hint.
fn describe(e: &ManifestError) -> String {
    let p = &e.position;
    let mut s = String::new();
    if !e.field.is_empty() {
        s.push_str(&e.field);
        s.push_str(": ");
    }
    s.push_str(&format!(
        "line {}, column {}: {}",
        p.line, p.column, e.message
    ));
    if let Some(hint) = &e.hint {
        s.push_str(&format!(" (hint: {hint})"));
    }
    s
}

fn is_script_error(e: &ManifestError) -> bool {
    e.message.starts_with("Rhai") || e.message.starts_with("Lua") || e.message.contains("script")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_all(objects: &[Object]) -> Compiled {
        let metrics = Metrics::new();
        let settings = CompileSettings {
            namespace: "ns",
            limits: &Limits::default(),
            library_dirs: &[],
            metrics: &metrics,
        };
        compile(objects, &settings)
    }

    fn object(kind: Kind, name: &str, spec: Value) -> Object {
        Object {
            key: (kind, name.to_owned()),
            uid: None,
            generation: Some(1),
            spec,
            status: None,
        }
    }

    fn sensor(script: &str) -> Value {
        json!({
            "dependencies": [{"name": "d", "eventSourceName": "hooks", "eventName": "push",
                              "filters": {"script": script}}],
            "triggers": [{"template": {"name": "t", "log": {}}}],
        })
    }

    #[test]
    fn a_broken_object_is_left_out_with_its_errors_located() {
        let hooks = json!({"webhook": {"push": {"port": "12000", "endpoint": "/push"}}});
        let objects = [
            object(Kind::EventSource, "hooks", hooks),
            object(Kind::Sensor, "broken", sensor("let x = 1;\nx +* 2")),
            object(Kind::Sensor, "good", sensor("true")),
        ];
        let compiled = compile_all(&objects);
        let members: Vec<&str> = compiled.members.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(members, ["hooks", "good"]);
        assert_eq!(
            compiled.groups.len(),
            1,
            "hooks and good depend on each other"
        );
        assert_eq!(compiled.groups[0].plan.sensors.len(), 1);
        let errors = &compiled.errors[&(Kind::Sensor, "broken".to_owned())];
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.field, "spec.dependencies[0].filters.script");
        assert!(is_script_error(e), "{e}");
        // The position is the `*` on the script's second line, in the rendered object.
        let text = render(&objects[1].key, "ns", &objects[1].spec).expect("renders");
        let line = text.lines().nth(e.position.line as usize - 1).unwrap_or("");
        let at = line.get(e.position.column as usize - 1..).unwrap_or("");
        assert!(at.starts_with("*"), "{}: {line:?}\n{text}", describe(e));
        assert!(describe(e).starts_with(&format!(
            "spec.dependencies[0].filters.script: line {}, column {}: Rhai",
            e.position.line, e.position.column
        )));
    }

    #[test]
    fn objects_that_clash_are_left_out() {
        let hooks = json!({"webhook": {"push": {"port": "12000", "endpoint": "/push"}}});
        let objects = [
            object(Kind::EventSource, "a", hooks.clone()),
            object(Kind::EventSource, "b", hooks),
            object(Kind::Sensor, "good", sensor("true")),
        ];
        let compiled = compile_all(&objects);
        let good = (Kind::Sensor, "good".to_owned());
        assert!(compiled.members.contains_key(&good));
        assert!(compiled
            .groups
            .iter()
            .any(|g| g.members.contains_key(&good)));
        let left_out: Vec<&str> = compiled.errors.keys().map(|k| k.1.as_str()).collect();
        assert!(
            !left_out.is_empty() && !left_out.contains(&"good"),
            "{left_out:?}"
        );
    }

    #[test]
    fn groups_share_nothing() {
        let hook = |port: u16, endpoint: &str| json!({"webhook": {"e": {"port": port.to_string(), "endpoint": endpoint}}});
        let on = |source: &str| {
            json!({
                "dependencies": [{"name": "d", "eventSourceName": source, "eventName": "e"}],
                "triggers": [{"template": {"name": "t", "log": {}}}],
            })
        };
        let objects = [
            object(Kind::EventSource, "a", hook(12000, "/a")),
            object(Kind::EventSource, "b", hook(12000, "/b")),
            object(Kind::EventSource, "c", hook(12001, "/c")),
            object(Kind::Sensor, "on-a", on("a")),
            object(Kind::Sensor, "on-c", on("c")),
            object(Kind::Sensor, "on-missing", on("gone")),
        ];
        let compiled = compile_all(&objects);
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        let mut groups: Vec<Vec<&str>> = compiled
            .groups
            .iter()
            .map(|g| g.members.keys().map(|k| k.1.as_str()).collect())
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [
                vec!["a", "b", "on-a"],
                vec!["c", "on-c"],
                vec!["on-missing"]
            ]
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let cond = |status: &str, time: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: time.into(),
            observed_generation: Some(1),
        };
        let old = ResourceStatus {
            conditions: vec![cond("True", "then")],
            ..ResourceStatus::default()
        };
        let same = ResourceStatus {
            conditions: vec![cond("True", "now")],
            ..ResourceStatus::default()
        };
        let carried = carry_transition_times(same, Some(&old));
        assert_eq!(carried.conditions[0].last_transition_time, "then");
        let flipped = ResourceStatus {
            conditions: vec![cond("False", "now")],
            ..ResourceStatus::default()
        };
        let carried = carry_transition_times(flipped, Some(&old));
        assert_eq!(carried.conditions[0].last_transition_time, "now");
    }
}
