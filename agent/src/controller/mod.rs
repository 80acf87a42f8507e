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
//! sources (calendars, resource watches, core NATS subscriptions without a queue group) and
//! writes status.

mod compile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::{run_plan, AgentOptions, Shared};
use crate::cluster::crd::{Condition, ResourceStatus, TriggerOutcomes};
use crate::cluster::leader::{LeaderOptions, LeaseLock};
use crate::cluster::Cluster;
use crate::manifest::API_VERSION;
use crate::script::Limits;
use crate::source::SourceSpec;
use crate::telemetry::{OutcomeLabels, Readiness};
use compile::{
    compile, describe, is_script_error, CompileSettings, Compiled, Group, Key, Kind, Object,
};

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
    /// (see [`SourceSpec::is_singleton`]) and writing status. `None`: this replica does both.
    pub leader: Option<LeaderOptions>,
}

/// A group's plan, running or failed.
struct Running {
    id: u64,
    members: BTreeMap<Key, Value>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
    state: PlanState,
    /// The group has singleton sources (see [`SourceSpec::is_singleton`])...
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
    /// shared. Unless this replica leads, singleton sources are held back.
    fn start_group(&mut self, mut group: Group) {
        let has_singletons = group.plan.sources.iter().any(SourceSpec::is_singleton);
        if !self.leader {
            group.plan.sources.retain(|s| !s.is_singleton());
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
            jetstream: self.shared.jetstream.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
