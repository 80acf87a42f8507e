//! The `k8s` and `argoWorkflow` triggers: act on any Kubernetes resource through the API
//! server — create, update, patch or delete it, or carry out an Argo Workflow operation
//! (see [`super::argo_workflow`] for how each maps to the API).
//!
//! The kind's plural and scope come from discovery. Every action is checked against the
//! namespace guard first. The policy sees `#{operation, status, object, reason, message}`,
//! where `object` is the live resource after the action; a policy that answers `"wait"` gets
//! it again on every change, from a watch on that one object ([`K8sReply`]'s `changes`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use rhai::{Dynamic, Map};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::argo_workflow::{self, WorkflowOperation};
use super::params::{self, set_path, Operation, ResolvedParameter};
use super::response::status_outcome;
use super::stub::{status_json, StubMisuse, StubResponse, StubShape, StubSpec};
use super::{BuildError, Call, CompiledParameter, Invocation, Outcome, PrepareContext};
use super::{ObjectChanges, PrepareFailure, Reply, ReplyShape, Response, TriggerError};
use super::{Shape, TriggerTarget};
use crate::cluster::{Cluster, ResolvedKind};
use crate::event::FiredEvents;
use crate::script::ScriptHost;

/// The field manager triggerd writes as (server-side apply, audit logs).
pub const FIELD_MANAGER: &str = "triggerd";
/// Label naming the sensor on every object a trigger creates.
pub const SENSOR_LABEL: &str = "triggerd.io/sensor";
/// Label naming the trigger on every object a trigger creates.
pub const TRIGGER_LABEL: &str = "triggerd.io/trigger";

/// What a `k8s` trigger does with its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K8sOperation {
    /// POST the resource (with `generateName` support).
    Create,
    /// Replace the live object (created when missing), as Argo does.
    Update,
    /// Patch the live object with the resource, using a [`PatchStrategy`].
    Patch,
    /// Delete the named object.
    Delete,
}

impl K8sOperation {
    /// The manifest's names, for errors.
    pub const NAMES: [&'static str; 4] = ["create", "update", "patch", "delete"];

    /// Parses `operation` (default `create`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "" | "create" => Self::Create,
            "update" => Self::Update,
            "patch" => Self::Patch,
            "delete" => Self::Delete,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }
}

/// How a patch is sent (`patchStrategy`, the content types the API server takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    /// `application/merge-patch+json` (RFC 7386), the default.
    Merge,
    /// `application/json-patch+json` (RFC 6902), from `jsonPatch`.
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply as field manager `triggerd`, forced.
    Apply,
}

impl PatchStrategy {
    /// The content types accepted in `patchStrategy`.
    pub const NAMES: [&'static str; 4] = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];

    /// Parses `patchStrategy` (default merge); the short names `merge`, `json`,
    /// `strategic` and `apply` are accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "" | "merge" | "application/merge-patch+json" => Self::Merge,
            "json" | "application/json-patch+json" => Self::Json,
            "strategic" | "application/strategic-merge-patch+json" => Self::Strategic,
            "apply" | "application/apply-patch+yaml" => Self::Apply,
            _ => return None,
        })
    }
}

/// The action a target carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K8sAction {
    /// A `k8s` trigger.
    Resource {
        /// The operation.
        operation: K8sOperation,
        /// How patches are sent.
        patch: PatchStrategy,
        /// `update` parameterizes the live object instead of the source.
        live_object: bool,
    },
    /// An `argoWorkflow` trigger.
    Workflow(WorkflowOperation),
}

impl K8sAction {
    /// The operation's name, as the policy's `response.operation`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resource { operation, .. } => operation.name(),
            Self::Workflow(op) => op.name(),
        }
    }
}

/// Where the resource of one execution comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectBase {
    /// Given in the manifest (`resource`, `inline` or `file`).
    Object(Value),
    /// A YAML or JSON file, read at execution (confined to the manifest's directory and the
    /// library directories, see [`crate::files`]).
    File(crate::files::ConfinedPath),
    /// A key of a ConfigMap, read at execution.
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// Key.
        key: String,
        /// Its namespace (default: the agent's).
        namespace: Option<String>,
    },
}

/// The request of one execution: the resource and the parameters to write into it once it
/// is known (after reading a ConfigMap, or the live object for `liveObject`).
#[derive(Debug, Clone, PartialEq)]
pub struct K8sRequestSpec {
    /// The resource.
    pub base: ObjectBase,
    /// Parameters resolved from the events.
    pub params: Vec<ResolvedParameter>,
    /// RFC 6902 operations for a JSON patch.
    pub json_patch: Option<Value>,
}

/// A Kubernetes trigger and the cluster it acts on (set when the plan starts).
#[derive(Debug, Clone)]
pub struct K8sTarget {
    action: K8sAction,
    base: ObjectBase,
    sensor: String,
    trigger: String,
    cluster: Arc<OnceLock<Cluster>>,
}

/// The reply of the API server to one action.
#[derive(Debug, Clone)]
pub struct K8sReply {
    /// `create`, `patch`, `submit`, ...
    pub operation: &'static str,
    /// HTTP status of the API call (201 for a create).
    pub status: u16,
    /// The live object after the action (the deleted one for a delete); null on an error.
    pub object: Value,
    /// The API server's reason on an error (`AlreadyExists`, `Forbidden`, ...).
    pub reason: String,
    /// The API server's message on an error.
    pub message: String,
    /// The object was deleted (a watch saw it go).
    pub deleted: bool,
    /// The object's API endpoint, so a waiting policy can watch it.
    resource: Option<ObjectApi>,
}

/// The API endpoint of one kind in one namespace, where a replied object can be watched.
#[derive(Clone)]
struct ObjectApi(Api<DynamicObject>);

impl std::fmt::Debug for ObjectApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectApi")
    }
}

impl K8sReply {
    fn ok(operation: &'static str, status: u16, object: Value, resource: ObjectApi) -> Self {
        Self {
            resource: Some(resource),
            ..Self::stub(operation, status, object)
        }
    }

    /// A canned reply, for offline tests (no resource to watch).
    pub fn stub(operation: &'static str, status: u16, object: Value) -> Self {
        Self {
            operation,
            status,
            object,
            reason: String::new(),
            message: String::new(),
            deleted: false,
            resource: None,
        }
    }

    fn name(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
    }
}

impl ReplyShape for K8sReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("operation".into(), self.operation.into());
        map.insert("status".into(), i64::from(self.status).into());
        map.insert(
            "object".into(),
            rhai::serde::to_dynamic(&self.object).unwrap_or(Dynamic::UNIT),
        );
        map.insert("reason".into(), self.reason.clone().into());
        map.insert("message".into(), self.message.clone().into());
        map.insert("deleted".into(), self.deleted.into());
        map.insert(
            "duration_ms".into(),
            super::response::duration_ms(duration).into(),
        );
        map.into()
    }

    /// API success succeeds; 409 and 422 fail; 5xx and 429 retry; other errors fail.
    fn default_outcome(&self, allow: Option<&[u16]>) -> Outcome {
        status_outcome(self.status, allow, &self.message, None)
    }

    fn summary(&self) -> String {
        if !(200..300).contains(&self.status) {
            return format!(
                "{} failed: {} {}: {}",
                self.operation, self.status, self.reason, self.message
            );
        }
        let name = self.name().unwrap_or("?");
        let phase = self
            .object
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .map(|p| format!(", phase {p}"))
            .unwrap_or_default();
        let gone = if self.deleted { ", deleted" } else { "" };
        format!("{} {name}: {}{phase}{gone}", self.operation, self.status)
    }

    fn object(&self) -> Option<&Value> {
        Some(&self.object)
    }

    /// A watch on that one object (its first item is the current state, so a change between
    /// the action and the watch is not missed).
    fn changes(&self) -> Option<ObjectChanges> {
        let resource = self.resource.clone()?;
        let name = self.name()?.to_owned();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let operation = self.operation;
        let started = Instant::now();
        let changes = watcher::watcher(resource.0.clone(), config).filter_map(move |event| {
            let resource = resource.clone();
            let name = name.clone();
            async move {
                let (object, deleted) = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                    Ok(watcher::Event::Delete(o)) => (o, true),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => return None,
                    Err(e) => {
                        tracing::warn!(object = %name, error = %e, "watch of a triggered object failed; retrying");
                        return None;
                    }
                };
                let object = serde_json::to_value(object).ok()?;
                let mut reply = K8sReply::ok(operation, 200, object, resource);
                reply.deleted = deleted;
                Some(Response::replied(Reply::new(reply), started.elapsed()))
            }
        });
        // The watcher retries failed requests itself, backing off between them.
        Some(Box::pin(changes.boxed()))
    }
}

/// What an action needs besides its object: the cluster and who is acting.
pub(super) struct ActionContext<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) sensor: &'a str,
    pub(super) trigger: &'a str,
    /// Labels put on created objects.
    pub(super) labels: Vec<(&'static str, String)>,
}

impl TriggerTarget for K8sTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(std::future::ready(self.ready(ctx)))
    }

    /// The request of one execution: the template's `k8s` (or `argoWorkflow`) section after
    /// template-level parameters, with the kind-level parameters resolved for writing into
    /// the resource once it is known.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let key = match self.action {
            K8sAction::Resource { .. } => "k8s",
            K8sAction::Workflow(_) => "argoWorkflow",
        };
        let spec = template.get(key).cloned().unwrap_or(Value::Null);
        // An inline resource may have been changed by template-level parameters
        // (`dest: k8s.source.resource.…`); other sources are as compiled.
        let base = match spec.pointer("/source/resource") {
            Some(resource) => ObjectBase::Object(resource.clone()),
            None => self.base.clone(),
        };
        Ok(K8sTarget::call(
            &self,
            K8sRequestSpec {
                base,
                params: params::resolve_all(params, host, events)?,
                json_patch: spec.get("jsonPatch").cloned(),
            },
        ))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(K8sStub {
            operation: self.action.name(),
        })
    }

    fn needs_cluster(&self) -> bool {
        true
    }
}

/// A Kubernetes trigger was readied without a connection to the API server (internal: the
/// agent connects for every plan with Kubernetes triggers).
#[derive(Debug, thiserror::Error)]
#[error("no Kubernetes API connection was made for this plan")]
struct NoCluster;

/// One action to carry out.
#[derive(Debug)]
struct K8sCall {
    target: Arc<K8sTarget>,
    spec: K8sRequestSpec,
}

impl Call for K8sCall {
    fn attempt<'a>(&'a self, _payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec))
    }

    /// `{type: k8s, resource | configmap | file, jsonPatch?}`, the resource with the
    /// parameters written in.
    fn to_json(&self) -> Value {
        let spec = &self.spec;
        let mut out = json!({ "type": "k8s" });
        match &spec.base {
            ObjectBase::Object(object) => {
                let mut resource = object.clone();
                for p in &spec.params {
                    let _ = p.apply(&mut resource);
                }
                out["resource"] = resource;
            }
            ObjectBase::ConfigMap {
                name,
                key,
                namespace,
            } => {
                out["configmap"] = json!({ "name": name, "key": key, "namespace": namespace });
            }
            ObjectBase::File(file) => {
                out["file"] = json!(file.path().display().to_string());
            }
        }
        if let Some(ops) = &spec.json_patch {
            out["jsonPatch"] = ops.clone();
        }
        out
    }
}

/// Why an action could not be carried out; says whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActionError {
    /// The API server answered with an error status.
    #[error("{}", .0.message)]
    Api(Box<kube::core::Status>),
    /// No answer or an unusable one.
    #[error("{0}")]
    Trigger(#[from] TriggerError),
}

impl From<kube::Error> for ActionError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => ActionError::Api(status),
            // Connection refused or reset, timeouts, a stream cut short: transient.
            e @ (kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::Auth(_)) => TriggerError::retryable(format!("Kubernetes API: {e}"))
                .caused_by(e)
                .into(),
            e => TriggerError::permanent(format!("Kubernetes API: {e}"))
                .caused_by(e)
                .into(),
        }
    }
}

impl K8sTarget {
    /// Remembers the cluster when the plan starts.
    fn ready(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareFailure> {
        let cluster = ctx.cluster.ok_or(NoCluster)?;
        let _ = self.cluster.set(cluster.clone());
        Ok(())
    }

    /// A target for `sensor`'s `trigger`.
    pub fn new(action: K8sAction, sensor: &str, trigger: &str) -> Self {
        Self {
            action,
            base: ObjectBase::Object(Value::Null),
            sensor: sensor.to_owned(),
            trigger: trigger.to_owned(),
            cluster: Arc::new(OnceLock::new()),
        }
    }

    /// Where the resource comes from, as compiled (`inline` parsed at load).
    pub fn with_base(mut self, base: ObjectBase) -> Self {
        self.base = base;
        self
    }

    /// Where the resource comes from, as compiled.
    pub fn base(&self) -> &ObjectBase {
        &self.base
    }

    /// The action.
    pub fn action(&self) -> K8sAction {
        self.action
    }

    /// The invocation carrying out `spec` on this target.
    pub(super) fn call(self: &Arc<Self>, spec: K8sRequestSpec) -> Invocation {
        Invocation::new(K8sCall {
            target: self.clone(),
            spec,
        })
    }

    /// Carries out one attempt.
    pub async fn execute(&self, spec: &K8sRequestSpec) -> Response {
        let started = Instant::now();
        let Some(cluster) = self.cluster.get() else {
            return Response::failed(
                TriggerError::permanent(
                    "internal: Kubernetes trigger used before the plan started",
                ),
                started.elapsed(),
            );
        };
        let result = self.act(cluster, spec).await;
        let elapsed = started.elapsed();
        match result {
            Ok(reply) => Response::replied(Reply::new(reply), elapsed),
            Err(ActionError::Api(status)) => Response::replied(
                Reply::new(K8sReply {
                    operation: self.action.name(),
                    status: status.code,
                    object: Value::Null,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                    deleted: false,
                    resource: None,
                }),
                elapsed,
            ),
            Err(ActionError::Trigger(e)) => Response::failed(e, elapsed),
        }
    }

    async fn act(&self, cluster: &Cluster, spec: &K8sRequestSpec) -> Result<K8sReply, ActionError> {
        let mut object = match &spec.base {
            ObjectBase::Object(v) => v.clone(),
            ObjectBase::File(file) => read_file(file).await?,
            ObjectBase::ConfigMap {
                name,
                key,
                namespace,
            } => {
                let namespace = namespace.as_deref().unwrap_or(cluster.namespace());
                cluster
                    .guard()
                    .check(&self.sensor, &self.trigger, namespace)
                    .map_err(|e| TriggerError::permanent(e.to_string()).caused_by(e))?;
                read_configmap(cluster, namespace, name, key).await?
            }
        };
        let live_update = matches!(
            self.action,
            K8sAction::Resource {
                operation: K8sOperation::Update,
                live_object: true,
                ..
            }
        );
        if live_update {
            let ctx = ActionContext {
                cluster,
                sensor: &self.sensor,
                trigger: &self.trigger,
                labels: Vec::new(),
            };
            let source = Target::of(&ctx, &object).await?;
            object = source.get(&source.name(&object)?).await?;
        }
        for p in &spec.params {
            p.apply(&mut object)
                .map_err(|e| TriggerError::permanent(e.to_string()).caused_by(e))?;
        }
        let ctx = ActionContext {
            cluster,
            sensor: &self.sensor,
            trigger: &self.trigger,
            labels: self.labels(),
        };
        let target = Target::of(&ctx, &object).await?;
        match self.action {
            K8sAction::Resource {
                operation, patch, ..
            } => resource_action(&ctx, &target, operation, patch, object, spec).await,
            K8sAction::Workflow(op) => argo_workflow::execute(op, &ctx, &target, object).await,
        }
    }
}

async fn resource_action(
    ctx: &ActionContext<'_>,
    target: &Target,
    operation: K8sOperation,
    patch: PatchStrategy,
    mut object: Value,
    spec: &K8sRequestSpec,
) -> Result<K8sReply, ActionError> {
    let op = operation.name();
    match operation {
        K8sOperation::Create => {
            add_labels(&mut object, &ctx.labels)?;
            target.create(op, &object).await
        }
        K8sOperation::Update => target.update(op, object).await,
        K8sOperation::Patch => {
            let name = target.name(&object)?;
            let params = PatchParams::default();
            let patched = match patch {
                PatchStrategy::Merge => {
                    target
                        .api
                        .patch(&name, &params, &Patch::Merge(&object))
                        .await
                }
                PatchStrategy::Strategic => {
                    target
                        .api
                        .patch(&name, &params, &Patch::Strategic(&object))
                        .await
                }
                PatchStrategy::Apply => {
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    target
                        .api
                        .patch(&name, &params, &Patch::Apply(&object))
                        .await
                }
                PatchStrategy::Json => {
                    let ops = spec.json_patch.clone().unwrap_or(Value::Array(Vec::new()));
                    let ops: json_patch::Patch = serde_json::from_value(ops).map_err(|e| {
                        TriggerError::permanent(format!("jsonPatch is not an RFC 6902 patch: {e}"))
                            .caused_by(e)
                    })?;
                    target
                        .api
                        .patch(&name, &params, &Patch::<()>::Json(ops))
                        .await
                }
            };
            Ok(target.reply(op, 200, to_value(patched?)?))
        }
        K8sOperation::Delete => {
            let name = target.name(&object)?;
            let deleted = target.api.delete(&name, &DeleteParams::default()).await?;
            let object = deleted
                .either(serde_json::to_value, serde_json::to_value)
                .unwrap_or_default();
            let mut reply = target.reply(op, 200, object);
            reply.deleted = true;
            Ok(reply)
        }
    }
}

impl K8sTarget {
    /// Labels naming the sensor and trigger, put on every object the trigger creates.
    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            (SENSOR_LABEL, label_value(&self.sensor)),
            (TRIGGER_LABEL, label_value(&self.trigger)),
        ]
    }
}

/// One object's API endpoint: kind resolved, namespace checked against the guard.
pub(super) struct Target {
    pub(super) api: Api<DynamicObject>,
    pub(super) kind: ResolvedKind,
    pub(super) namespace: String,
}

impl Target {
    /// Resolves `object`'s kind and checks its namespace (default: the agent's).
    pub(super) async fn of(ctx: &ActionContext<'_>, object: &Value) -> Result<Self, ActionError> {
        let cluster = ctx.cluster;
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| TriggerError::permanent(format!("the resource has no {name}")))
        };
        let (api_version, kind) = (field("apiVersion")?, field("kind")?);
        let resolved = cluster.resolve(api_version, kind).await.map_err(|e| {
            let retryable = e.is_retryable();
            TriggerError::new(e.to_string(), retryable).caused_by(e)
        })?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(cluster.namespace())
            .to_owned();
        if resolved.namespaced {
            cluster
                .guard()
                .check(ctx.sensor, ctx.trigger, &namespace)
                .map_err(|e| TriggerError::permanent(e.to_string()).caused_by(e))?;
        } else if !cluster.guard().allows("*") {
            return Err(TriggerError::permanent(format!(
                "{kind} is cluster-scoped: the agent acts only in namespaces (start it with \
                 --allow-namespace '*' to permit cluster-scoped resources)"
            ))
            .into());
        }
        Ok(Self {
            api: api_for(cluster, &resolved, &namespace),
            kind: resolved,
            namespace,
        })
    }

    /// `metadata.name`, which every action but a create needs.
    pub(super) fn name(&self, object: &Value) -> Result<String, ActionError> {
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                TriggerError::permanent(format!(
                    "the {} resource has no metadata.name",
                    self.kind.resource.kind
                ))
                .into()
            })
    }

    pub(super) fn reply(&self, operation: &'static str, status: u16, object: Value) -> K8sReply {
        K8sReply::ok(operation, status, object, ObjectApi(self.api.clone()))
    }

    pub(super) async fn get(&self, name: &str) -> Result<Value, ActionError> {
        to_value(self.api.get(name).await?)
    }

    pub(super) async fn create(
        &self,
        operation: &'static str,
        object: &Value,
    ) -> Result<K8sReply, ActionError> {
        let created = self
            .api
            .create(&PostParams::default(), &to_dynamic(object)?)
            .await?;
        Ok(self.reply(operation, 201, to_value(created)?))
    }

    /// Argo's update: replace the live object (carrying its resourceVersion), or create it
    /// when it does not exist. A conflict (someone wrote in between) re-reads and tries again.
    pub(super) async fn update(
        &self,
        operation: &'static str,
        object: Value,
    ) -> Result<K8sReply, ActionError> {
        let name = self.name(&object)?;
        const CONFLICT_TRIES: usize = 3;
        for _ in 1..CONFLICT_TRIES {
            match self.replace_live(operation, &name, object.clone()).await {
                Err(ActionError::Api(s)) if s.code == 409 => continue,
                other => return other,
            }
        }
        self.replace_live(operation, &name, object).await
    }

    async fn replace_live(
        &self,
        operation: &'static str,
        name: &str,
        mut object: Value,
    ) -> Result<K8sReply, ActionError> {
        let live = match self.api.get_opt(name).await? {
            Some(live) => live,
            None => return self.create(operation, &object).await,
        };
        if let Some(rv) = live.metadata.resource_version {
            set_field(&mut object, "metadata.resourceVersion", Value::String(rv))?;
        }
        let replaced = self
            .api
            .replace(name, &PostParams::default(), &to_dynamic(&object)?)
            .await?;
        Ok(self.reply(operation, 200, to_value(replaced)?))
    }
}

fn api_for(cluster: &Cluster, kind: &ResolvedKind, namespace: &str) -> Api<DynamicObject> {
    if kind.namespaced {
        Api::namespaced_with(cluster.client().clone(), namespace, &kind.resource)
    } else {
        Api::all_with(cluster.client().clone(), &kind.resource)
    }
}

/// Reads a resource (YAML or JSON) from a file.
async fn read_file(file: &crate::files::ConfinedPath) -> Result<Value, ActionError> {
    let path = file.path();
    let text = file.read().await.map_err(|e| {
        // A volume that is not mounted yet may appear: worth another attempt.
        TriggerError::retryable(format!("cannot read {}: {e}", path.display())).caused_by(e)
    })?;
    parse_resource(&text)
        .map_err(|e| TriggerError::permanent(format!("{}: {e}", path.display())).into())
}

/// Reads a resource (YAML or JSON) from a ConfigMap key.
async fn read_configmap(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Value, ActionError> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client().clone(), namespace);
    let cm = api.get(name).await?;
    let text =
        cm.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
            TriggerError::permanent(format!("ConfigMap {name} has no key {key:?}"))
        })?;
    parse_resource(text)
        .map_err(|e| TriggerError::permanent(format!("ConfigMap {name} key {key}: {e}")).into())
}

/// Parses a resource given as YAML (or JSON) text.
pub fn parse_resource(text: &str) -> Result<Value, String> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the resource is not a YAML mapping".into())
    }
}

pub(super) fn to_value(o: DynamicObject) -> Result<Value, ActionError> {
    serde_json::to_value(o).map_err(|e| {
        TriggerError::permanent(format!("API object: {e}"))
            .caused_by(e)
            .into()
    })
}

pub(super) fn to_dynamic(v: &Value) -> Result<DynamicObject, ActionError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        TriggerError::permanent(format!("not a Kubernetes object: {e}"))
            .caused_by(e)
            .into()
    })
}

/// Sets `labels` on `object`'s metadata, keeping the labels it has.
pub(super) fn add_labels(object: &mut Value, labels: &[(&str, String)]) -> Result<(), ActionError> {
    labels.iter().try_for_each(|(k, v)| {
        set_field(
            object,
            &format!("metadata.labels.{}", k.replace('.', "\\.")),
            Value::String(v.clone()),
        )
    })
}

/// Writes `value` at a dotted `path` of the resource, as parameters do (`\.` escapes a dot
/// in a key), creating objects on the way.
pub(super) fn set_field(object: &mut Value, path: &str, value: Value) -> Result<(), ActionError> {
    set_path(object, path, value, Operation::Overwrite).map_err(|reason| {
        TriggerError::permanent(format!("the resource's {path}: {reason}")).into()
    })
}

/// A label value from a name: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric.
fn label_value(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Stubs of k8s and argoWorkflow triggers: `{status?, object?, objects?}` (status 200 by
/// default) or `{error}`, replying as the trigger's operation.
#[derive(Debug, Clone, Copy)]
pub struct K8sStub {
    /// The operation the reply names (`response.operation`).
    pub operation: &'static str,
}

impl StubShape for K8sStub {
    fn name(&self) -> String {
        format!("k8s/{}", self.operation)
    }

    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        if !spec.body.is_null()
            || !spec.headers.is_empty()
            || spec.function_error.is_some()
            || spec.payload.is_some()
        {
            return Err(StubMisuse::new(
                None,
                "a Kubernetes trigger's stub is {status, object, objects} or {error}",
            )
            .hint("object: the live object after the action; objects: its later states, seen by a policy that answers \"wait\""));
        }
        if spec.error.is_some()
            && (spec.status.is_some() || spec.object.is_some() || spec.objects.is_some())
        {
            return Err(StubMisuse::new(
                None,
                "set either status/object (a reply) or error (no reply), not both",
            ));
        }
        let objects = match &spec.objects {
            None => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => {
                return Err(StubMisuse::new(
                    Some("objects"),
                    "objects is a list of object states",
                ))
            }
        };
        Ok(StubResponse {
            status: spec.status.unwrap_or(200),
            body: spec.object.clone().unwrap_or(Value::Null),
            objects,
            error: spec.error.clone(),
            retryable: spec.retryable.unwrap_or(true),
            ..StubResponse::default()
        })
    }

    fn reply(&self, stub: &StubResponse) -> Reply {
        Reply::new(K8sReply::stub(
            self.operation,
            stub.status,
            stub.body.clone(),
        ))
    }

    fn to_json(&self, stub: &StubResponse) -> Value {
        let objects = (!stub.objects.is_empty()).then(|| ("objects", stub.objects.clone().into()));
        status_json(stub, objects, "object")
    }

    fn changes(&self, stub: &StubResponse) -> Vec<Reply> {
        stub.objects
            .iter()
            .map(|object| Reply::new(K8sReply::stub(self.operation, stub.status, object.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_and_strategies_parse_with_defaults() {
        assert_eq!(K8sOperation::parse(""), Some(K8sOperation::Create));
        assert_eq!(K8sOperation::parse("patch"), Some(K8sOperation::Patch));
        assert_eq!(K8sOperation::parse("apply"), None);
        assert_eq!(PatchStrategy::parse(""), Some(PatchStrategy::Merge));
        assert_eq!(
            PatchStrategy::parse("application/strategic-merge-patch+json"),
            Some(PatchStrategy::Strategic)
        );
        assert_eq!(PatchStrategy::parse("apply"), Some(PatchStrategy::Apply));
        assert_eq!(PatchStrategy::parse("application/yaml"), None);
    }

    #[test]
    fn labels_are_added_without_losing_existing_ones() {
        let mut o = json!({"metadata": {"labels": {"app": "x"}}});
        add_labels(&mut o, &[(SENSOR_LABEL, "s".into())]).unwrap();
        assert_eq!(
            o["metadata"]["labels"],
            json!({"app": "x", "triggerd.io/sensor": "s"})
        );
        let mut bare = json!({"kind": "ConfigMap"});
        add_labels(&mut bare, &[(TRIGGER_LABEL, "t".into())]).unwrap();
        assert_eq!(bare["metadata"]["labels"]["triggerd.io/trigger"], "t");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("my sensor/x"), "my-sensor-x");
        assert_eq!(label_value("-a-"), "a");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn default_outcome_follows_the_design() {
        let outcome = |status| K8sReply::stub("create", status, Value::Null).default_outcome(None);
        assert_eq!(outcome(201), Outcome::Success);
        for status in [409, 422, 403, 404] {
            assert!(matches!(outcome(status), Outcome::Fail { .. }), "{status}");
        }
        for status in [500, 503, 429] {
            assert!(matches!(outcome(status), Outcome::Retry { .. }), "{status}");
        }
    }
}
