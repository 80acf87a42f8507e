//! The `k8s` and `argoWorkflow` triggers end to end: a webhook event reaches the agent, the
//! agent acts on the Kubernetes API as a namespace-confined service account, and the test
//! checks the objects through the API and the outcome through `/metrics`.
//!
//! No Kubernetes API server can be installed here, so these run against the in-repo
//! [`TestApiServer`](integration_tests::TestApiServer) (real REST semantics: discovery,
//! resourceVersion conflicts, patch content types, status subresource, watch). With
//! `TRIGGERD_TEST_KUBECONFIG` set they run unchanged against that cluster; only the
//! injected 500 needs the test server and says so when skipped.

use std::time::Duration;

use integration_tests::{free_port, Agent, FaultSpec, KubeEnv, Sink, DELIVERY_TIMEOUT};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{json, Value};

/// How long an object the agent should write may take to appear.
const OBJECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One webhook EventSource `hooks` with a POST event per name, all on one port.
fn hooks(port: u16, events: &[&str]) -> String {
    let mut out = "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: hooks\nspec:\n  webhook:\n".to_owned();
    for e in events {
        out.push_str(&format!(
            "    {e}:\n      port: \"{port}\"\n      endpoint: /{e}\n      method: POST\n"
        ));
    }
    out
}

/// Starts the agent on `manifests` as the env's namespace-confined identity.
async fn agent(env: &KubeEnv, manifests: &[&str], extra_args: &[&str]) -> Agent {
    let kubeconfig = env.agent_kubeconfig().await;
    let mut builder = Agent::builder()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", env.namespace()])
        .args(extra_args)
        .file(
            "policies/workflow-succeeded.rhai",
            std::fs::read_to_string(
                integration_tests::workspace_root().join("policies/workflow-succeeded.rhai"),
            )
            .expect("read the shipped policy"),
        );
    for m in manifests {
        builder = builder.manifest(*m);
    }
    builder.start().await
}

fn workflows(env: &KubeEnv) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    );
    Api::namespaced_with(env.client(), env.namespace(), &ar)
}

fn rollouts(env: &KubeEnv) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    Api::namespaced_with(env.client(), env.namespace(), &ar)
}

/// Polls until `api` lists `n` objects matching `labels`; returns them (oldest first).
async fn wait_for_objects(api: &Api<DynamicObject>, labels: &str, n: usize) -> Vec<DynamicObject> {
    let deadline = tokio::time::Instant::now() + OBJECT_TIMEOUT;
    loop {
        let list = api
            .list(&ListParams::default().labels(labels))
            .await
            .expect("list objects");
        if list.items.len() >= n {
            let mut items = list.items;
            items.sort_by_key(|o| {
                o.metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default()
                    .parse::<u64>()
                    .unwrap_or(0)
            });
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} objects with labels {labels} did not appear within {OBJECT_TIMEOUT:?} (found {})",
            list.items.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the ConfigMap until `check` accepts it (or it is gone, for `None`).
async fn wait_for_configmap(
    api: &Api<ConfigMap>,
    name: &str,
    what: &str,
    check: impl Fn(Option<&ConfigMap>) -> bool,
) -> Option<ConfigMap> {
    let deadline = tokio::time::Instant::now() + OBJECT_TIMEOUT;
    loop {
        let cm = api.get_opt(name).await.expect("get configmap");
        if check(cm.as_ref()) {
            return cm;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ConfigMap {name}: {what} not seen within {OBJECT_TIMEOUT:?}; last: {cm:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn data(cm: Option<&ConfigMap>) -> Value {
    cm.and_then(|c| c.data.as_ref())
        .map(|d| json!(d))
        .unwrap_or(Value::Null)
}

async fn set_phase(env: &KubeEnv, name: &str, phase: &str) {
    workflows(env)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": phase, "message": format!("test set {phase}")}}),
            ),
        )
        .await
        .expect("patch workflow status");
}

/// Waits until `sensor`'s `trigger` has had one execution ending in `result`.
async fn wait_outcome(
    agent: &Agent,
    sensor: &'static str,
    trigger: &'static str,
    result: &'static str,
) {
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &outcome(sensor, trigger, result),
            1.0,
            OBJECT_TIMEOUT,
        )
        .await;
}

fn outcome(
    sensor: &'static str,
    trigger: &'static str,
    outcome: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("sensor", sensor),
        ("trigger", trigger),
        ("outcome", outcome),
    ]
}

const WORKFLOW_SENSOR: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: ci
spec:
  dependencies:
    - name: build
      eventSourceName: hooks
      eventName: build
  triggers:
    - template:
        name: run-tests
        argoWorkflow:
          operation: submit
          source:
            resource:
              apiVersion: argoproj.io/v1alpha1
              kind: Workflow
              metadata:
                generateName: tests-
              spec:
                entrypoint: main
                arguments:
                  parameters:
                    - name: revision
                      value: placeholder
          parameters:
            - src: {dependencyName: build, dataKey: body.revision}
              dest: spec.arguments.parameters.0.value
            - src: {dependencyName: build, dataKey: body.app}
              dest: metadata.labels.app
      retryStrategy: {steps: 1}
      policy:
        scriptFile: workflow-succeeded.rhai
        timeout: 60s
      dlqTrigger:
        template:
          name: tests-failed
          http:
            url: DLQ_URL
            method: POST
"#;

#[tokio::test]
async fn a_submitted_workflow_succeeds_or_dead_letters_on_its_phase() {
    let env = KubeEnv::start().await;
    env.install_crd("manifests/test/workflow-crd.yaml").await;
    let dlq = Sink::start().await;
    let port = free_port();
    let sensor = WORKFLOW_SENSOR.replace("DLQ_URL", &dlq.url("/dlq"));
    let agent = agent(&env, &[&hooks(port, &["build"]), &sensor], &[]).await;
    let url = agent.webhook_url(port, "/build");
    let labels = "triggerd.io/sensor=ci,triggerd.io/trigger=run-tests";

    agent
        .post_event(&url, &json!({"revision": "abc123", "app": "shop"}))
        .await;
    let first = wait_for_objects(&workflows(&env), labels, 1)
        .await
        .remove(0);
    let name = first.metadata.name.clone().expect("workflow name");
    assert!(
        name.starts_with("tests-") && name.len() > "tests-".len(),
        "generateName used: {name}"
    );
    assert_eq!(
        first.data["spec"]["arguments"]["parameters"][0]["value"],
        "abc123"
    );
    assert_eq!(
        first
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("shop")
    );

    // Running: the policy keeps waiting; Succeeded: success.
    set_phase(&env, &name, "Running").await;
    set_phase(&env, &name, "Succeeded").await;
    wait_outcome(&agent, "ci", "run-tests", "success").await;
    assert_eq!(
        agent
            .metric(
                "triggerd_trigger_attempts_total",
                &[("sensor", "ci"), ("trigger", "run-tests")]
            )
            .await,
        Some(1.0),
        "one submission, then waiting on the watch"
    );
    dlq.expect_none(Duration::from_millis(200)).await;

    // A second run that fails goes to the dead letter with the workflow's phase.
    agent
        .post_event(&url, &json!({"revision": "def456", "app": "shop"}))
        .await;
    let runs = wait_for_objects(&workflows(&env), labels, 2).await;
    let second = runs
        .iter()
        .filter_map(|w| w.metadata.name.clone())
        .find(|n| *n != name)
        .expect("a second workflow");
    set_phase(&env, &second, "Running").await;
    set_phase(&env, &second, "Failed").await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "run-tests");
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("workflow Failed"),
        "dead letter names the phase: {dead}"
    );
    wait_outcome(&agent, "ci", "run-tests", "failed").await;
}

/// A sensor with one trigger per ConfigMap operation, each on its own webhook event.
fn configmap_sensor() -> String {
    r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: settings
spec:
  dependencies:
    - {name: create, eventSourceName: hooks, eventName: create}
    - {name: merge, eventSourceName: hooks, eventName: merge}
    - {name: json, eventSourceName: hooks, eventName: json}
    - {name: strategic, eventSourceName: hooks, eventName: strategic}
    - {name: apply, eventSourceName: hooks, eventName: apply}
    - {name: update, eventSourceName: hooks, eventName: update}
    - {name: delete, eventSourceName: hooks, eventName: delete}
  triggers:
    - template:
        name: create
        conditions: create
        k8s:
          operation: create
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
              data: {color: none}
          parameters:
            - src: {dependencyName: create, dataKey: body.color}
              dest: data.color
    - template:
        name: merge
        conditions: merge
        k8s:
          operation: patch
          patchStrategy: application/merge-patch+json
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
              data: {size: none}
          parameters:
            - src: {dependencyName: merge, dataKey: body.size}
              dest: data.size
    - template:
        name: json
        conditions: json
        k8s:
          operation: patch
          patchStrategy: application/json-patch+json
          source:
            inline: |
              apiVersion: v1
              kind: ConfigMap
              metadata:
                name: settings
          jsonPatch:
            - {op: add, path: /data/shape, value: none}
      parameters:
        - src: {dependencyName: json, dataKey: body.shape}
          dest: k8s.jsonPatch.0.value
    - template:
        name: strategic
        conditions: strategic
        k8s:
          operation: patch
          patchStrategy: application/strategic-merge-patch+json
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
              data: {weight: heavy}
    - template:
        name: apply
        conditions: apply
        k8s:
          operation: patch
          patchStrategy: application/apply-patch+yaml
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
              data: {applied: "yes"}
    - template:
        name: update
        conditions: update
        k8s:
          operation: update
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
              data: {replaced: "true"}
    - template:
        name: delete
        conditions: delete
        k8s:
          operation: delete
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: settings}
"#
    .to_owned()
}

#[tokio::test]
async fn a_configmap_is_created_patched_each_way_updated_and_deleted() {
    let env = KubeEnv::start().await;
    let port = free_port();
    let events = [
        "create",
        "merge",
        "json",
        "strategic",
        "apply",
        "update",
        "delete",
    ];
    let agent = agent(&env, &[&hooks(port, &events), &configmap_sensor()], &[]).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let fire = |event: &'static str, body: Value| {
        let (agent, url) = (&agent, agent.webhook_url(port, &format!("/{event}")));
        async move {
            agent.post_event(&url, &body).await;
            wait_outcome(agent, "settings", event, "success").await;
        }
    };

    fire("create", json!({"color": "blue"})).await;
    let created = wait_for_configmap(&cms, "settings", "created", |c| c.is_some()).await;
    let created = created.expect("created");
    assert_eq!(data(Some(&created)), json!({"color": "blue"}));
    let labels = created.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("triggerd.io/sensor").map(String::as_str),
        Some("settings")
    );
    assert_eq!(
        labels.get("triggerd.io/trigger").map(String::as_str),
        Some("create")
    );

    fire("merge", json!({"size": "large"})).await;
    fire("json", json!({"shape": "round"})).await;
    fire("strategic", json!({})).await;
    fire("apply", json!({})).await;
    let patched = wait_for_configmap(&cms, "settings", "four patches", |c| {
        data(c)["applied"] == "yes"
    })
    .await;
    assert_eq!(
        data(patched.as_ref()),
        json!({"color": "blue", "size": "large", "shape": "round", "weight": "heavy", "applied": "yes"})
    );
    if let Some(server) = env.server() {
        let types: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/configmaps/settings"))
            .filter_map(|r| r.content_type)
            .collect();
        for t in [
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            assert!(
                types.iter().any(|c| c.starts_with(t)),
                "a {t} patch was sent: {types:?}"
            );
        }
    }

    fire("update", json!({})).await;
    let updated = wait_for_configmap(&cms, "settings", "replaced", |c| {
        data(c)["replaced"] == "true"
    })
    .await;
    assert_eq!(
        data(updated.as_ref()),
        json!({"replaced": "true"}),
        "update replaces the data"
    );

    fire("delete", json!({})).await;
    wait_for_configmap(&cms, "settings", "deleted", |c| c.is_none()).await;
}

#[tokio::test]
async fn a_rollout_is_promoted_by_a_merge_patch() {
    let env = KubeEnv::start().await;
    env.install_crd("manifests/test/rollout-crd.yaml").await;
    let rollout: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop"},
        "spec": {"replicas": 3, "paused": true, "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
    }))
    .expect("rollout object");
    rollouts(&env)
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create rollout");
    let sensor = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: promotion
spec:
  dependencies:
    - name: passed
      eventSourceName: hooks
      eventName: report
      filters:
        data:
          - {path: body.status, type: string, value: ["^passed$"]}
  triggers:
    - template:
        name: promote
        k8s:
          operation: patch
          source:
            resource:
              apiVersion: argoproj.io/v1alpha1
              kind: Rollout
              metadata:
                name: placeholder
                annotations:
                  triggerd.io/promoted-revision: none
              spec:
                paused: false
          parameters:
            - src: {dependencyName: passed, dataKey: body.app}
              dest: metadata.name
            - src: {dependencyName: passed, dataKey: body.revision}
              dest: metadata.annotations.triggerd\.io/promoted-revision
"#;
    let port = free_port();
    let agent = agent(&env, &[&hooks(port, &["report"]), sensor], &[]).await;
    agent
        .post_event(
            &agent.webhook_url(port, "/report"),
            &json!({"app": "shop", "revision": "v42", "status": "passed"}),
        )
        .await;
    wait_outcome(&agent, "promotion", "promote", "success").await;
    let live = rollouts(&env).get("shop").await.expect("get rollout");
    assert_eq!(live.data["spec"]["paused"], false);
    assert_eq!(
        live.data["spec"]["replicas"], 3,
        "the patch keeps other fields"
    );
    assert_eq!(
        live.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("triggerd.io/promoted-revision"))
            .map(String::as_str),
        Some("v42")
    );
}

#[tokio::test]
async fn a_trigger_aimed_at_another_namespace_is_refused() {
    let env = KubeEnv::start().await;
    let other = env.extra_namespace().await;
    let dlq = Sink::start().await;
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: escape
spec:
  dependencies:
    - {{name: go, eventSourceName: hooks, eventName: go}}
  triggers:
    - template:
        name: elsewhere
        k8s:
          operation: create
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {{name: intruder, namespace: {other}}}
              data: {{x: "1"}}
      dlqTrigger:
        template:
          name: refused
          http:
            url: {dlq}
            method: POST
"#,
        dlq = dlq.url("/dlq")
    );
    let port = free_port();
    let agent = agent(&env, &[&hooks(port, &["go"]), &sensor], &[]).await;
    agent
        .post_event(&agent.webhook_url(port, "/go"), &json!({}))
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&other) && error.contains("--allow-namespace"),
        "the refusal names the namespace and the option: {dead}"
    );
    assert_eq!(dead["attempts"], 1, "a refusal is not retried");
    agent
        .wait_for_metric(
            "triggerd_namespace_refusals_total",
            &[
                ("sensor", "escape"),
                ("trigger", "elsewhere"),
                ("namespace", other.as_str()),
            ],
            1.0,
            OBJECT_TIMEOUT,
        )
        .await;
    let there: Api<ConfigMap> = Api::namespaced(env.client(), &other);
    assert!(
        there.get_opt("intruder").await.expect("get").is_none(),
        "nothing was created there"
    );
}

#[tokio::test]
async fn a_conflict_on_create_fails_and_a_server_error_is_retried() {
    let env = KubeEnv::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let taken: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "data": {"owner": "someone"}}),
    )
    .expect("configmap");
    cms.create(&PostParams::default(), &taken)
        .await
        .expect("create taken");
    let sensor = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: makers
spec:
  dependencies:
    - {name: name, eventSourceName: hooks, eventName: make}
  triggers:
    - template:
        name: make
        k8s:
          operation: create
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: placeholder}
              data: {owner: triggerd}
          parameters:
            - src: {dependencyName: name, dataKey: body.name}
              dest: metadata.name
      retryStrategy: {steps: 3, duration: 10ms, factor: 1}
"#;
    let port = free_port();
    let agent = agent(&env, &[&hooks(port, &["make"]), sensor], &[]).await;
    let url = agent.webhook_url(port, "/make");
    let attempts = [("sensor", "makers"), ("trigger", "make")];

    // 409 AlreadyExists: failed at once, and the existing object is untouched.
    agent.post_event(&url, &json!({"name": "taken"})).await;
    wait_outcome(&agent, "makers", "make", "failed").await;
    assert_eq!(
        agent
            .metric("triggerd_trigger_attempts_total", &attempts)
            .await,
        Some(1.0)
    );
    let still = cms.get("taken").await.expect("get taken");
    assert_eq!(data(Some(&still)), json!({"owner": "someone"}));

    let Some(server) = env.server() else {
        println!("skipped on a real cluster: a 500 from the API server can only be injected by the test server");
        return;
    };
    // 500 InternalError: retried, then created.
    server.inject_failure(FaultSpec {
        method: Some("POST".into()),
        resource: Some("configmaps".into()),
        status: 500,
        times: 1,
        ..FaultSpec::default()
    });
    agent.post_event(&url, &json!({"name": "fresh"})).await;
    wait_outcome(&agent, "makers", "make", "success").await;
    assert_eq!(
        agent
            .metric("triggerd_trigger_attempts_total", &attempts)
            .await,
        Some(3.0),
        "1 for the conflict, 2 for the 500 and its retry"
    );
    assert_eq!(
        agent
            .metric("triggerd_trigger_retries_total", &attempts)
            .await,
        Some(1.0)
    );
    let fresh = cms.get("fresh").await.expect("created after the retry");
    assert_eq!(data(Some(&fresh)), json!({"owner": "triggerd"}));
}

/// The `argoWorkflow` operations besides `submit`, each a webhook event and a trigger.
const WORKFLOW_OPERATIONS: [&str; 7] = [
    "submit-from",
    "resubmit",
    "suspend",
    "resume",
    "terminate",
    "stop",
    "retry",
];

/// A sensor with one `argoWorkflow` trigger per operation, each on its own webhook event;
/// the Workflow (or template) is named by the event.
fn workflow_operations_sensor() -> String {
    let mut triggers = String::new();
    for op in WORKFLOW_OPERATIONS {
        let kind = if op == "submit-from" {
            "WorkflowTemplate"
        } else {
            "Workflow"
        };
        triggers.push_str(&format!(
            r#"    - template:
        name: {op}
        conditions: {op}
        argoWorkflow:
          operation: {op}
          source:
            resource:
              apiVersion: argoproj.io/v1alpha1
              kind: {kind}
              metadata: {{name: placeholder}}
              spec:
                arguments:
                  parameters: [{{name: env, value: staging}}]
          parameters:
            - src: {{dependencyName: {op}, dataKey: body.name}}
              dest: metadata.name
      retryStrategy: {{steps: 1}}
"#
        ));
    }
    let dependencies: String = WORKFLOW_OPERATIONS
        .iter()
        .map(|op| format!("    - {{name: {op}, eventSourceName: hooks, eventName: {op}}}\n"))
        .collect();
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: ops\nspec:\n  dependencies:\n{dependencies}  triggers:\n{triggers}"
    )
}

#[tokio::test]
async fn workflow_operations_write_what_the_controller_acts_on() {
    let env = KubeEnv::start().await;
    env.install_crd("manifests/test/workflow-crd.yaml").await;
    env.install_crd("manifests/test/workflowtemplate-crd.yaml")
        .await;
    let template_api = Api::<DynamicObject>::namespaced_with(
        env.client(),
        env.namespace(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "WorkflowTemplate"),
            "workflowtemplates",
        ),
    );
    let template: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": "deploy"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine"}}]},
    }))
    .expect("template");
    template_api
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    let run: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "nightly", "labels": {"team": "a"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine"}}]},
    }))
    .expect("workflow");
    let wfs = workflows(&env);
    wfs.create(&PostParams::default(), &run)
        .await
        .expect("create workflow");

    let port = free_port();
    let agent = agent(
        &env,
        &[
            &hooks(port, &WORKFLOW_OPERATIONS),
            &workflow_operations_sensor(),
        ],
        &[],
    )
    .await;
    let fire = |op: &'static str, name: &'static str, expect: &'static str| {
        let (agent, url) = (&agent, agent.webhook_url(port, &format!("/{op}")));
        async move {
            agent.post_event(&url, &json!({"name": name})).await;
            wait_outcome(agent, "ops", op, expect).await;
        }
    };

    fire("submit-from", "deploy", "success").await;
    let from_template =
        wait_for_objects(&wfs, "workflows.argoproj.io/workflow-template=deploy", 1).await;
    let submitted = &from_template[0];
    assert_eq!(
        submitted.data["spec"]["workflowTemplateRef"]["name"],
        "deploy"
    );
    assert_eq!(
        submitted.data["spec"]["arguments"]["parameters"][0]["value"], "staging",
        "the source's arguments go with the submission"
    );

    fire("resubmit", "nightly", "success").await;
    let copies = wait_for_objects(
        &wfs,
        "workflows.argoproj.io/resubmitted-from-workflow=nightly",
        1,
    )
    .await;
    assert!(copies[0]
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .starts_with("nightly-"));
    assert_eq!(copies[0].data["spec"]["entrypoint"], "main");

    fire("suspend", "nightly", "success").await;
    assert_eq!(
        wfs.get("nightly").await.expect("get").data["spec"]["suspend"],
        true
    );
    fire("resume", "nightly", "success").await;
    assert!(wfs.get("nightly").await.expect("get").data["spec"]
        .get("suspend")
        .is_none());
    fire("terminate", "nightly", "success").await;
    assert_eq!(
        wfs.get("nightly").await.expect("get").data["spec"]["shutdown"],
        "Terminate"
    );
    fire("stop", "nightly", "success").await;
    assert_eq!(
        wfs.get("nightly").await.expect("get").data["spec"]["shutdown"],
        "Stop"
    );

    // Retry: refused while the workflow has not failed; then its failed nodes are dropped.
    fire("retry", "nightly", "failed").await;
    wfs.patch_status(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Failed", "finishedAt": "2026-12-01T00:00:00Z",
            "nodes": {"nightly": {"phase": "Failed"}, "nightly-1": {"phase": "Succeeded"}}}}),
        ),
    )
    .await
    .expect("fail the workflow");
    fire("retry", "nightly", "success").await;
    let retried = wfs.get("nightly").await.expect("get");
    assert_eq!(retried.data["status"]["phase"], "Running");
    assert!(retried.data["status"].get("finishedAt").is_none());
    assert_eq!(
        retried.data["status"]["nodes"],
        json!({"nightly-1": {"phase": "Succeeded"}})
    );
}

#[tokio::test]
async fn policy_k8s_waits_for_labels_and_fails_when_the_backoff_runs_out() {
    let env = KubeEnv::start().await;
    let dlq = Sink::start().await;
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: labelled
spec:
  dependencies:
    - {{name: make, eventSourceName: hooks, eventName: make}}
  triggers:
    - template:
        name: make
        k8s:
          operation: create
          source:
            resource:
              apiVersion: v1
              kind: ConfigMap
              metadata: {{name: placeholder}}
          parameters:
            - src: {{dependencyName: make, dataKey: body.name}}
              dest: metadata.name
      retryStrategy: {{steps: 1}}
      policy:
        k8s:
          labels: {{ready: "true"}}
          backoff: {{steps: 2, duration: 1s, factor: 1}}
          errorOnBackoffTimeout: true
      dlqTrigger:
        template:
          name: never-ready
          http:
            url: {dlq}
            method: POST
"#,
        dlq = dlq.url("/dlq")
    );
    let port = free_port();
    let agent = agent(&env, &[&hooks(port, &["make"]), &sensor], &[]).await;
    let url = agent.webhook_url(port, "/make");
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());

    // Labelled ready while the policy waits: success.
    agent.post_event(&url, &json!({"name": "gets-ready"})).await;
    wait_for_configmap(&cms, "gets-ready", "created", |c| c.is_some()).await;
    cms.patch(
        "gets-ready",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ready": "true"}}})),
    )
    .await
    .expect("label it ready");
    wait_outcome(&agent, "labelled", "make", "success").await;

    // Never labelled: the backoff's 2 s run out and the trigger fails.
    agent
        .post_event(&url, &json!({"name": "never-ready"}))
        .await;
    let dead = agent
        .expect_request(&dlq, Duration::from_secs(20))
        .await
        .json();
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("still waiting after 2s"),
        "dead letter: {dead}"
    );
}

#[test]
fn a_missing_kubeconfig_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sensor = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: needs-cluster
spec:
  dependencies:
    - {name: go, eventSourceName: hooks, eventName: go}
  triggers:
    - template:
        name: make
        k8s:
          source:
            resource: {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}
"#;
    let missing = dir.path().join("no-such-kubeconfig");
    let out = integration_tests::run_failing_to_start(
        sensor,
        &["--kubeconfig", missing.to_str().expect("utf-8 path")],
    );
    assert!(
        out.stderr.contains("cannot read kubeconfig") && out.stderr.contains("no-such-kubeconfig"),
        "{out}"
    );
}
