//! The Kubernetes API the agent will talk to, through the kube client: by default the in-repo
//! `TestApiServer`, and unchanged against a real cluster when `TRIGGERD_TEST_KUBECONFIG` is
//! set (fault-injection and other test-server hooks then print why they are skipped).
//! Every assertion here is one a wrong server would fail.

use std::time::Duration;

use futures::StreamExt;
use integration_tests::{FaultSpec, KubeEnv, DELIVERY_TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const WORKFLOW_CRD: &str = "manifests/test/workflow-crd.yaml";

fn from_json<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object deserializes")
}

fn configmap(name: &str, data: Value) -> ConfigMap {
    from_json(json!({"metadata": {"name": name}, "data": data}))
}

/// The Status of a failed call; panics (showing the result) when it did not fail with one.
fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

async fn workflows(env: &KubeEnv) -> Api<DynamicObject> {
    env.install_crd(WORKFLOW_CRD).await;
    Api::namespaced_with(env.client(), env.namespace(), &workflow_resource())
}

fn workflow(name: &str, spec: Value) -> DynamicObject {
    from_json(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

fn skip(env: &KubeEnv, why: &str) -> bool {
    if env.server().is_none() {
        println!("skipped on a real cluster: {why}");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_resolves_builtin_and_crd_kinds() {
    let env = KubeEnv::start().await;
    env.install_crd(WORKFLOW_CRD).await;
    let client = env.client();

    let (cm, caps) = discovery::pinned_kind(&client, &GroupVersionKind::gvk("", "v1", "ConfigMap"))
        .await
        .expect("ConfigMap resolves");
    assert_eq!(
        (cm.plural.as_str(), cm.api_version.as_str()),
        ("configmaps", "v1")
    );
    assert_eq!(caps.scope, Scope::Namespaced);

    let (ns, caps) = discovery::pinned_kind(&client, &GroupVersionKind::gvk("", "v1", "Namespace"))
        .await
        .expect("Namespace resolves");
    assert_eq!(ns.plural, "namespaces");
    assert_eq!(caps.scope, Scope::Cluster);

    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");
    let (wf, caps) = discovery::pinned_kind(&client, &gvk)
        .await
        .expect("Workflow resolves");
    assert_eq!(
        (wf.plural.as_str(), wf.api_version.as_str()),
        ("workflows", "argoproj.io/v1alpha1")
    );
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "status"),
        "workflows/status is advertised: {:?}",
        caps.subresources
    );

    let discovery = Discovery::new(client.clone())
        .filter(&["", "apps", "argoproj.io"])
        .run()
        .await
        .expect("full discovery runs");
    let (dep, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment is discovered");
    assert_eq!(dep.plural, "deployments");
    let (wf, _) = discovery.resolve_gvk(&gvk).expect("Workflow is discovered");
    assert_eq!(wf.plural, "workflows");
    assert!(client
        .apiserver_version()
        .await
        .expect("/version")
        .major
        .parse::<u32>()
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_established_and_registered_once() {
    let env = KubeEnv::start().await;
    env.install_crd(WORKFLOW_CRD).await;
    let crds = Api::<CustomResourceDefinition>::all(env.client());
    let crd = crds
        .get("workflows.argoproj.io")
        .await
        .expect("CRD is there");
    let conditions = crd
        .status
        .clone()
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == wanted && c.status == "True"),
            "{wanted}=True in {conditions:?}"
        );
    }
    let mut again = crd.clone();
    again.metadata = from_json(json!({"name": "workflows.argoproj.io"}));
    again.status = None;
    let err = status_of(crds.create(&PostParams::default(), &again).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        err.message,
        "customresourcedefinitions.apiextensions.k8s.io \"workflows.argoproj.io\" already exists"
    );
    let listed = crds.list(&ListParams::default()).await.expect("list CRDs");
    assert!(listed
        .items
        .iter()
        .any(|c| c.name_any() == "workflows.argoproj.io"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_and_server_owned_metadata() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let template: ConfigMap =
        from_json(json!({"metadata": {"generateName": "job-"}, "data": {"a": "1"}}));
    let first = api
        .create(&PostParams::default(), &template)
        .await
        .expect("create with generateName");
    let second = api
        .create(&PostParams::default(), &template)
        .await
        .expect("create again");
    for made in [&first, &second] {
        let name = made.name_any();
        assert!(
            name.starts_with("job-") && name.len() == 9,
            "generated name {name}"
        );
        assert!(name[4..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(made.namespace().as_deref(), Some(env.namespace()));
        assert!(made.uid().is_some_and(|u| !u.is_empty()));
        assert!(made.metadata.creation_timestamp.is_some());
        assert!(made.resource_version().is_some_and(|rv| !rv.is_empty()));
    }
    assert_ne!(first.name_any(), second.name_any());
    assert_ne!(first.uid(), second.uid());
    let got = api
        .get(&first.name_any())
        .await
        .expect("get the generated one");
    assert_eq!(got.data, first.data);

    let wf = workflows(&env).await;
    let created = wf
        .create(
            &PostParams::default(),
            &from_json(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"generateName": "run-"}, "spec": {"entrypoint": "main"}
            })),
        )
        .await
        .expect("create a workflow with generateName");
    assert!(created.name_any().starts_with("run-"));
    assert_eq!(created.metadata.generation, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_resource_version_conflicts_and_crud_errors_are_real() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let created = api
        .create(
            &PostParams::default(),
            &configmap("settings", json!({"mode": "a"})),
        )
        .await
        .expect("create");

    let err = status_of(
        api.create(&PostParams::default(), &configmap("settings", json!({})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"settings\" already exists");
    assert_eq!(
        err.details.as_ref().map(|d| d.kind.as_str()),
        Some("configmaps")
    );

    let mut fresh = api.get("settings").await.expect("get");
    fresh.data = Some([("mode".to_owned(), "b".to_owned())].into());
    let updated = api
        .replace("settings", &PostParams::default(), &fresh)
        .await
        .expect("update with the live RV");
    assert_ne!(updated.resource_version(), created.resource_version());

    let mut stale = created.clone();
    stale.data = Some([("mode".to_owned(), "c".to_owned())].into());
    let err = status_of(
        api.replace("settings", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    assert_eq!(api.get("settings").await.expect("get").data, updated.data);

    let listed = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    let list_rv: u64 = listed
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()
        .expect("numeric list RV");
    let item_rv: u64 = updated
        .resource_version()
        .unwrap_or_default()
        .parse()
        .expect("numeric RV");
    assert!(
        list_rv >= item_rv,
        "list RV {list_rv} is at least the item's {item_rv}"
    );

    let err = status_of(api.get("missing").await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "configmaps \"missing\" not found");

    let deleted = api
        .delete("settings", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = deleted.left().expect("the deleted object comes back");
    assert_eq!(deleted.data, updated.data);
    assert_eq!(status_of(api.get("settings").await).code, 404);
    assert_eq!(
        status_of(api.delete("settings", &DeleteParams::default()).await).code,
        404
    );

    // Custom resources need a resourceVersion on update; a stale one conflicts.
    let wf = workflows(&env).await;
    let live = wf
        .create(
            &PostParams::default(),
            &workflow("w1", json!({"entrypoint": "main"})),
        )
        .await
        .expect("create workflow");
    let mut blind = workflow("w1", json!({"entrypoint": "other"}));
    blind.metadata.resource_version = None;
    let err = status_of(wf.replace("w1", &PostParams::default(), &blind).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains("metadata.resourceVersion"),
        "{}",
        err.message
    );
    let mut next = live.clone();
    next.data["spec"]["entrypoint"] = json!("second");
    wf.replace("w1", &PostParams::default(), &next)
        .await
        .expect("update with the live RV");
    let err = status_of(wf.replace("w1", &PostParams::default(), &next).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on workflows.argoproj.io \"w1\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_must_exist_and_match() {
    let env = KubeEnv::start().await;
    let missing = Api::<ConfigMap>::namespaced(env.client(), "triggerd-test-does-not-exist");
    let err = status_of(
        missing
            .create(&PostParams::default(), &configmap("x", json!({})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        err.message,
        "namespaces \"triggerd-test-does-not-exist\" not found"
    );

    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let mut elsewhere = configmap("x", json!({}));
    elsewhere.metadata.namespace = Some("default".into());
    let err = status_of(api.create(&PostParams::default(), &elsewhere).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message.contains("does not match the namespace"),
        "{}",
        err.message
    );

    let own = Api::<Namespace>::all(env.client())
        .get(env.namespace())
        .await
        .expect("own namespace");
    assert_eq!(own.status.and_then(|s| s.phase).as_deref(), Some("Active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_and_json_patches() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    api.create(
        &PostParams::default(),
        &configmap("p", json!({"keep": "1", "drop": "2"})),
    )
    .await
    .expect("create");

    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"drop": null, "new": "3"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged.data,
        Some(
            [
                ("keep".to_owned(), "1".to_owned()),
                ("new".to_owned(), "3".to_owned())
            ]
            .into()
        )
    );

    let ops: json_patch::Patch = from_json(json!([
        {"op": "test", "path": "/data/keep", "value": "1"},
        {"op": "replace", "path": "/data/keep", "value": "one"},
        {"op": "add", "path": "/metadata/labels", "value": {"tier": "x"}}
    ]));
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .expect("JSON patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("keep"))
            .map(String::as_str),
        Some("one")
    );
    assert_eq!(patched.labels().get("tier").map(String::as_str), Some("x"));

    let failing: json_patch::Patch = from_json(json!([
        {"op": "test", "path": "/data/keep", "value": "1"},
        {"op": "replace", "path": "/data/keep", "value": "never"}
    ]));
    let err = status_of(
        api.patch("p", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        api.get("p").await.expect("get").data,
        patched.data,
        "a failed test op changes nothing"
    );

    // A patch carrying a stale resourceVersion is a conflict.
    let stale =
        json!({"metadata": {"resourceVersion": merged.resource_version()}, "data": {"x": "y"}});
    let err = status_of(
        api.patch("p", &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patches_builtin_kinds_only() {
    let env = KubeEnv::start().await;
    let cms = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    cms.create(
        &PostParams::default(),
        &configmap("s", json!({"a": "1", "b": "2"})),
    )
    .await
    .expect("create");
    let cm = cms
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"b": null, "c": "3"}})),
        )
        .await
        .expect("strategic merge on a ConfigMap");
    assert_eq!(
        cm.data,
        Some(
            [
                ("a".to_owned(), "1".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
            .into()
        )
    );

    let deployments = Api::<Deployment>::namespaced(env.client(), env.namespace());
    let deployment: Deployment = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "busybox:1"}
                ]}
            }
        }
    }));
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "busybox:2"},
        {"name": "app", "env": [{"name": "B", "value": "2"}]},
        {"name": "extra", "image": "alpine:3"}
    ]}}}});
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("strategic merge on a Deployment");
    let containers = patched
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.clone())
        .unwrap_or_default();
    let image = |name: &str| {
        containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
    };
    assert_eq!(
        containers.len(),
        3,
        "merged by name, not replaced: {containers:?}"
    );
    assert_eq!(image("app").as_deref(), Some("nginx:1"));
    assert_eq!(image("sidecar").as_deref(), Some("busybox:2"));
    assert_eq!(image("extra").as_deref(), Some("alpine:3"));
    let env_names: Vec<String> = containers
        .iter()
        .find(|c| c.name == "app")
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env_names, ["A", "B"], "env merged by name");
    assert!(
        patched.metadata.generation > created.metadata.generation,
        "a spec change moves generation"
    );

    let removed = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "extra", "$patch": "delete"}]}}}})),
        )
        .await
        .expect("$patch: delete");
    let names: Vec<String> = removed
        .spec
        .template
        .spec
        .map(|p| p.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    assert_eq!(names, ["app", "sidecar"]);

    let wf = workflows(&env).await;
    wf.create(
        &PostParams::default(),
        &workflow("smp", json!({"entrypoint": "main"})),
    )
    .await
    .expect("create workflow");
    let err = status_of(
        wf.patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"entrypoint": "x"}})),
        )
        .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_then_merges() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let config = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": data});
    let created = api
        .patch(
            "applied",
            &PatchParams::apply("triggerd-test-a"),
            &Patch::Apply(config(json!({"a": "1"}))),
        )
        .await
        .expect("apply creates");
    assert!(created.uid().is_some());
    let merged = api
        .patch(
            "applied",
            &PatchParams::apply("triggerd-test-b"),
            &Patch::Apply(config(json!({"b": "2"}))),
        )
        .await
        .expect("a second manager's apply merges");
    assert_eq!(
        merged.data,
        Some(
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned())
            ]
            .into()
        )
    );
    assert_eq!(merged.uid(), created.uid());
    let changed = api
        .patch(
            "applied",
            &PatchParams::apply("triggerd-test-a").force(),
            &Patch::Apply(config(json!({"a": "10"}))),
        )
        .await
        .expect("re-apply changes a field");
    assert_eq!(
        changed
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("10")
    );
    assert_eq!(
        changed
            .data
            .as_ref()
            .and_then(|d| d.get("b"))
            .map(String::as_str),
        Some("2")
    );

    let wf = workflows(&env).await;
    let applied = wf
        .patch(
            "applied-wf",
            &PatchParams::apply("triggerd-test"),
            &Patch::Apply(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": "applied-wf"}, "spec": {"entrypoint": "main"}
            })),
        )
        .await
        .expect("apply creates a custom resource");
    assert_eq!(applied.data["spec"]["entrypoint"], "main");

    // kube refuses to send an apply without a field manager; the server refuses it too.
    let request = axum::http::Request::patch(format!(
        "/api/v1/namespaces/{}/configmaps/applied",
        env.namespace()
    ))
    .header("Content-Type", "application/apply-patch+yaml")
    .body(config(json!({"c": "3"})).to_string().into_bytes())
    .expect("request");
    let err = status_of(env.client().request::<ConfigMap>(request).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_splits_writes() {
    let env = KubeEnv::start().await;
    let wf = workflows(&env).await;
    let mut with_status = workflow("st", json!({"entrypoint": "main"}));
    with_status.data["status"] = json!({"phase": "Succeeded"});
    let created = wf
        .create(&PostParams::default(), &with_status)
        .await
        .expect("create");
    assert!(
        created.data.get("status").is_none(),
        "status dropped on create: {:?}",
        created.data
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = wf
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Running"}, "spec": {"entrypoint": "ignored"}}),
            ),
        )
        .await
        .expect("patch status");
    assert_eq!(status.data["status"]["phase"], "Running");
    assert_eq!(
        status.data["spec"]["entrypoint"], "main",
        "a status write leaves spec alone"
    );
    assert_eq!(
        status.metadata.generation,
        Some(1),
        "a status write leaves generation alone"
    );

    let main = wf
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}, "spec": {"entrypoint": "next"}})),
        )
        .await
        .expect("patch main resource");
    assert_eq!(
        main.data["status"]["phase"], "Running",
        "a main-resource write ignores status"
    );
    assert_eq!(main.data["spec"]["entrypoint"], "next");
    assert_eq!(
        main.metadata.generation,
        Some(2),
        "a spec change moves generation"
    );

    let got = wf.get_status("st").await.expect("get status");
    assert_eq!(got.data["status"]["phase"], "Running");
    let mut replacement = got.clone();
    replacement.data["status"] = json!({"phase": "Succeeded"});
    let replaced = wf
        .replace_status("st", &PostParams::default(), &replacement)
        .await
        .expect("replace status");
    assert_eq!(replaced.data["status"]["phase"], "Succeeded");
    assert_eq!(replaced.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_and_paging() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    for (name, labels) in [
        ("web-1", json!({"app": "web", "tier": "front"})),
        ("web-2", json!({"app": "web", "tier": "back"})),
        ("db-1", json!({"app": "db"})),
        ("plain", json!({})),
    ] {
        let cm: ConfigMap = from_json(json!({"metadata": {"name": name, "labels": labels}}));
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let names = |selector: &'static str, fields: &'static str| {
        let api = api.clone();
        async move {
            let mut lp = ListParams::default();
            if !selector.is_empty() {
                lp = lp.labels(selector);
            }
            if !fields.is_empty() {
                lp = lp.fields(fields);
            }
            let mut names: Vec<String> = api
                .list(&lp)
                .await
                .expect("list")
                .items
                .iter()
                .map(|c| c.name_any())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("app=web", "").await, ["web-1", "web-2"]);
    assert_eq!(names("app==web,tier!=back", "").await, ["web-1"]);
    assert_eq!(
        names("app in (db, web),tier notin (front)", "").await,
        ["db-1", "web-2"]
    );
    assert_eq!(names("tier", "").await, ["web-1", "web-2"]);
    assert_eq!(names("!app", "").await, ["plain"]);
    assert_eq!(names("", "metadata.name=db-1").await, ["db-1"]);
    assert_eq!(
        names("app", "metadata.name!=db-1").await,
        ["web-1", "web-2"]
    );
    let ns_field: &'static str =
        Box::leak(format!("metadata.namespace={}", env.namespace()).into_boxed_str());
    assert_eq!(names("", ns_field).await.len(), 4);

    // Paging: limit + continue walks everything once.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = api.list(&lp).await.expect("list a page");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = ListParams::default().limit(3).continue_token(&token),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["db-1", "plain", "web-1", "web-2"]);

    let wf = workflows(&env).await;
    let err = status_of(
        wf.list(&ListParams::default().fields("spec.entrypoint=main"))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
}

/// What the watcher reported, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitDone,
    Apply(String, Option<String>),
    Delete(String),
    Error(String),
}

/// Runs kube-runtime's watcher over `api` (with backoff) and forwards what it reports.
fn watch_configmaps(api: Api<ConfigMap>, config: watcher::Config) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let value = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("v")).cloned();
            let seen = match item {
                Ok(watcher::Event::Init) => Seen::Init,
                Ok(watcher::Event::InitDone) => Seen::InitDone,
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                    Seen::Apply(cm.name_any(), value(&cm))
                }
                Ok(watcher::Event::Delete(cm)) => Seen::Delete(cm.name_any()),
                Err(e) => Seen::Error(format!("{e:?}")),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) until the watcher reports something matching `want`; returns what came
/// before it.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    want: impl Fn(&Seen) -> bool,
) -> Vec<Seen> {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) if want(&seen) => return before,
            Ok(Some(seen)) => before.push(seen),
            Ok(None) => panic!("watcher ended while waiting for {what}; saw {before:?}"),
            Err(_) => panic!("no {what} within {DELIVERY_TIMEOUT:?}; saw {before:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_changes_across_restarts_and_compaction() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    api.create(
        &PostParams::default(),
        &configmap("before", json!({"v": "0"})),
    )
    .await
    .expect("create before watching");
    let mut rx = watch_configmaps(api.clone(), watcher::Config::default());
    let initial = wait_for(&mut rx, "InitDone", |s| *s == Seen::InitDone).await;
    assert!(
        initial.contains(&Seen::Apply("before".into(), Some("0".into()))),
        "{initial:?}"
    );

    api.create(&PostParams::default(), &configmap("w", json!({"v": "1"})))
        .await
        .expect("create");
    wait_for(&mut rx, "ADDED w", |s| {
        *s == Seen::Apply("w".into(), Some("1".into()))
    })
    .await;
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patch");
    wait_for(&mut rx, "MODIFIED w", |s| {
        *s == Seen::Apply("w".into(), Some("2".into()))
    })
    .await;
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(&mut rx, "DELETED w", |s| *s == Seen::Delete("w".into())).await;

    if skip(
        &env,
        "closing watch streams and compacting history need the test server's hooks",
    ) {
        return;
    }
    let server = env.server().expect("test server");
    server.close_watches();
    api.create(
        &PostParams::default(),
        &configmap("after-close", json!({"v": "3"})),
    )
    .await
    .expect("create");
    let between = wait_for(
        &mut rx,
        "ADDED after-close",
        |s| matches!(s, Seen::Apply(n, _) if n == "after-close"),
    )
    .await;
    assert!(
        !between.contains(&Seen::Init),
        "a closed stream is resumed, not relisted: {between:?}"
    );

    server.compact();
    let relist = wait_for(&mut rx, "a relist after compaction", |s| *s == Seen::Init).await;
    assert!(
        relist
            .iter()
            .any(|s| matches!(s, Seen::Error(e) if e.contains("410"))),
        "the watch got 410 Gone: {relist:?}"
    );
    wait_for(&mut rx, "InitDone after the relist", |s| {
        *s == Seen::InitDone
    })
    .await;
    api.create(
        &PostParams::default(),
        &configmap("after-compact", json!({"v": "4"})),
    )
    .await
    .expect("create");
    wait_for(
        &mut rx,
        "ADDED after-compact",
        |s| matches!(s, Seen::Apply(n, _) if n == "after-compact"),
    )
    .await;

    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.query_param("watch") == Some("true"))
        .collect();
    assert!(
        watches.len() >= 3,
        "watched again after the close and after the 410: {watches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_selectors_bookmarks_and_too_old_versions() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let first = api
        .create(&PostParams::default(), &configmap("plain", json!({})))
        .await
        .expect("create");
    let rv = first.resource_version().expect("RV");

    // Raw watch from a version: only the selected object's events, in order.
    let mut stream = api
        .watch(&WatchParams::default().labels("pick=yes").timeout(30), &rv)
        .await
        .expect("watch")
        .boxed();
    let picked: ConfigMap =
        from_json(json!({"metadata": {"name": "picked", "labels": {"pick": "yes"}}}));
    api.create(&PostParams::default(), &picked)
        .await
        .expect("create picked");
    api.create(&PostParams::default(), &configmap("ignored", json!({})))
        .await
        .expect("create ignored");
    api.patch(
        "picked",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"pick": "no"}}})),
    )
    .await
    .expect("unlabel");
    let mut events = Vec::new();
    while events.len() < 2 {
        let event = tokio::time::timeout(DELIVERY_TIMEOUT, stream.next())
            .await
            .expect("a watch event in time")
            .expect("stream open")
            .expect("event decodes");
        match event {
            WatchEvent::Added(cm) => events.push(format!("ADDED {}", cm.name_any())),
            WatchEvent::Modified(cm) => events.push(format!("MODIFIED {}", cm.name_any())),
            WatchEvent::Deleted(cm) => events.push(format!("DELETED {}", cm.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        events,
        ["ADDED picked", "DELETED picked"],
        "leaving the selection is a DELETED"
    );

    if skip(
        &env,
        "bookmark intervals and history compaction are test-server hooks",
    ) {
        return;
    }
    let server = env.server().expect("test server");
    server.set_bookmark_interval(Duration::from_millis(100));
    let mut bookmarks = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch with bookmarks")
        .boxed();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, bookmarks.next())
            .await
            .expect("a bookmark in time")
            .expect("stream open")
            .expect("event decodes");
        if let WatchEvent::Bookmark(b) = event {
            assert!(!b.metadata.resource_version.is_empty());
            break;
        }
    }

    server.compact();
    let mut old = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let event = tokio::time::timeout(DELIVERY_TIMEOUT, old.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event decodes");
    match event {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    let env = KubeEnv::start().await;
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    api.create(&PostParams::default(), &configmap("one", json!({"v": "1"})))
        .await
        .expect("create");
    let mut rx = watch_configmaps(api.clone(), watcher::Config::default().streaming_lists());
    let initial = wait_for(&mut rx, "InitDone", |s| *s == Seen::InitDone).await;
    assert_eq!(
        initial,
        [Seen::Init, Seen::Apply("one".into(), Some("1".into()))]
    );
    api.create(&PostParams::default(), &configmap("two", json!({"v": "2"})))
        .await
        .expect("create");
    wait_for(&mut rx, "ADDED two", |s| {
        *s == Seen::Apply("two".into(), Some("2".into()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_identity_is_confined_to_its_namespace() {
    let env = KubeEnv::start().await;
    let other = env.extra_namespace().await;
    let kubeconfig = env.agent_kubeconfig().await;
    let agent = KubeEnv::client_from_kubeconfig(&kubeconfig).await;
    let user = format!("system:serviceaccount:{}:triggerd", env.namespace());

    let own = Api::<ConfigMap>::default_namespaced(agent.clone());
    let made = own
        .create(
            &PostParams::default(),
            &configmap("mine", json!({"k": "v"})),
        )
        .await
        .expect("the agent may create in its namespace");
    assert_eq!(
        made.namespace().as_deref(),
        Some(env.namespace()),
        "the kubeconfig's namespace is the test's"
    );

    let theirs = Api::<ConfigMap>::namespaced(agent.clone(), &other);
    let err = status_of(
        theirs
            .create(&PostParams::default(), &configmap("x", json!({})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        format!("configmaps is forbidden: User \"{user}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{other}\"")
    );
    let err = status_of(theirs.get("x").await);
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        format!("configmaps \"x\" is forbidden: User \"{user}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"{other}\"")
    );
    let details = err.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("x", "configmaps")
    );

    let err = status_of(
        Api::<Namespace>::all(agent)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message.ends_with("at the cluster scope"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_unauthorized() {
    let env = KubeEnv::start().await;
    let kubeconfig = env.kubeconfig_with_token("not-a-valid-token");
    let client = KubeEnv::client_from_kubeconfig(&kubeconfig).await;
    let err = status_of(
        Api::<ConfigMap>::default_namespaced(client)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_and_the_request_log() {
    let env = KubeEnv::start().await;
    if skip(
        &env,
        "fault injection and the request log are test-server hooks",
    ) {
        return;
    }
    let server = env.server().expect("test server");
    let api = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    api.create(&PostParams::default(), &configmap("f", json!({})))
        .await
        .expect("create");

    server.inject_failure(FaultSpec {
        method: Some("get".into()),
        resource: Some("configmaps".into()),
        status: 500,
        ..FaultSpec::default()
    });
    let err = status_of(api.get("f").await);
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    api.get("f")
        .await
        .expect("only the next matching request fails");

    server.clear_requests();
    server.inject_failure(FaultSpec {
        method: Some("GET".into()),
        resource: Some("configmaps".into()),
        status: 429,
        retry_after: Some(1),
        ..FaultSpec::default()
    });
    api.get("f")
        .await
        .expect("kube retries a 429 after Retry-After");
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);

    server.clear_requests();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .expect("patch");
    let log = server.requests();
    let patch = log
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("the patch is logged");
    assert_eq!(
        patch.path,
        format!("/api/v1/namespaces/{}/configmaps/f", env.namespace())
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patch.user.as_deref(), Some("admin"));
}
