//! Cluster mode end to end: `triggerd run --kube` runs the Sensor and EventSource objects of
//! its namespace as the ServiceAccount of `manifests/deploy/base/` (its Role's rules apply),
//! reloads when they change, and writes their status.
//!
//! Against the in-repo test API server by default; with `TRIGGERD_TEST_KUBECONFIG` unchanged
//! against that cluster (the CRDs from `manifests/crds/` are installed and left installed).

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::{free_port, Agent, KubeEnv, Sink, DELIVERY_TIMEOUT};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{json, Value};

/// How long a status or a reload may take to show.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn api(env: &KubeEnv, client: kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("triggerd.io", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client, env.namespace(), &ar)
}

fn sensors(env: &KubeEnv) -> Api<DynamicObject> {
    api(env, env.client(), "Sensor", "sensors")
}

fn event_sources(env: &KubeEnv) -> Api<DynamicObject> {
    api(env, env.client(), "EventSource", "eventsources")
}

/// A namespace with the CRDs installed and the agent running in cluster mode in it, with
/// the agent's kubeconfig.
async fn start() -> (KubeEnv, Agent, PathBuf) {
    let env = KubeEnv::start().await;
    env.install_crd("manifests/crds/sensors.triggerd.io.yaml")
        .await;
    env.install_crd("manifests/crds/eventsources.triggerd.io.yaml")
        .await;
    let kubeconfig = env.agent_kubeconfig().await;
    let agent = Agent::builder()
        .kube()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", env.namespace()])
        .args(["--status-interval", "1s"])
        .start()
        .await;
    (env, agent, kubeconfig)
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "triggerd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a custom resource")
}

async fn create(api: &Api<DynamicObject>, obj: &DynamicObject) {
    api.create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("create {:?}: {e}", obj.metadata.name));
}

/// Creates EventSource `hooks` with webhook event `push` on `port` at `/push`.
async fn create_hooks(env: &KubeEnv, port: u16) {
    create(
        &event_sources(env),
        &object("EventSource", "hooks", webhook_source(port, "/push")),
    )
    .await;
}

/// Creates Sensor `name` with `spec`.
async fn create_sensor(env: &KubeEnv, name: &str, spec: Value) {
    create(&sensors(env), &object("Sensor", name, spec)).await;
}

fn webhook_source(port: u16, endpoint: &str) -> Value {
    json!({"webhook": {"push": {"port": port.to_string(), "endpoint": endpoint, "method": "POST"}}})
}

/// A sensor on `hooks/push` whose filter script is `filter`, calling `url`.
fn forwarding_sensor(filter: &str, url: &str) -> Value {
    json!({
        "dependencies": [{
            "name": "push",
            "eventSourceName": "hooks",
            "eventName": "push",
            "filters": {"script": filter},
        }],
        "triggers": [{
            "template": {"name": "forward", "http": {"url": url, "method": "POST"}},
            "retryStrategy": {"steps": 1},
        }],
    })
}

/// The condition `type_` of the object's status, when there is one.
fn condition(obj: &DynamicObject, type_: &str) -> Option<Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Polls the object until `check` accepts it; returns it.
async fn wait_for(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    check: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    loop {
        let obj = api.get(name).await.expect("get object");
        if check(&obj) {
            return obj;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {what} not seen within {STATUS_TIMEOUT:?}; status: {}",
            obj.data["status"]
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Ready=True for the object's current generation.
async fn wait_ready(api: &Api<DynamicObject>, name: &str) -> DynamicObject {
    wait_for(api, name, "Ready=True for the current generation", |o| {
        o.data["status"]["observedGeneration"] == json!(o.metadata.generation)
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await
}

async fn filtered(agent: &Agent, sensor: &str) -> f64 {
    agent
        .metric(
            "triggerd_events_filtered_total",
            &[("sensor", sensor), ("dependency", "push")],
        )
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_run_reload_on_edit_and_go_away_on_delete() {
    let (env, agent, _) = start().await;
    let sink = Sink::start().await;
    let port = free_port();
    create_hooks(&env, port).await;
    create_sensor(
        &env,
        "forward",
        forwarding_sensor("event.body.kind == \"a\"", &sink.url("/hit")),
    )
    .await;
    wait_ready(&event_sources(&env), "hooks").await;
    let sensor = wait_ready(&sensors(&env), "forward").await;
    assert_eq!(
        condition(&sensor, "ScriptsCompiled").expect("ScriptsCompiled")["status"],
        "True"
    );
    assert_eq!(
        condition(&sensor, "SourcesRunning").expect("SourcesRunning")["status"],
        "True"
    );
    let url = agent.webhook_url(port, "/push");

    agent.post_event(&url, &json!({"kind": "b"})).await;
    agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &[("sensor", "forward"), ("dependency", "push")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"kind": "a"})).await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["kind"], "a", "{}", hit.text());
    wait_for(&sensors(&env), "forward", "one success counted", |o| {
        o.data["status"]["triggers"]["forward"]["succeeded"] == 1
    })
    .await;

    // Edit the filter: the new one applies without a restart of the process.
    let patch = json!({"spec": {"dependencies": [{
        "name": "push", "eventSourceName": "hooks", "eventName": "push",
        "filters": {"script": "event.body.kind == \"b\""},
    }]}});
    sensors(&env)
        .patch("forward", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the sensor's filter");
    wait_ready(&sensors(&env), "forward").await;
    let before = filtered(&agent, "forward").await;
    agent.post_event(&url, &json!({"kind": "a"})).await;
    agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &[("sensor", "forward"), ("dependency", "push")],
            before + 1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"kind": "b"})).await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["kind"], "b", "{}", hit.text());
    agent.check_alive();

    // Delete the EventSource: its webhook route goes away, the sensor says what it misses.
    event_sources(&env)
        .delete("hooks", &DeleteParams::default())
        .await
        .expect("delete the EventSource");
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    loop {
        let answer = agent
            .http()
            .post(&url)
            .json(&json!({"kind": "b"}))
            .send()
            .await;
        match answer {
            Err(_) => break,
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => break,
            Ok(r) => assert!(
                tokio::time::Instant::now() < deadline,
                "the webhook still answers {} after its EventSource was deleted",
                r.status()
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    let sensor = wait_for(&sensors(&env), "forward", "SourcesRunning=False", |o| {
        condition(o, "SourcesRunning").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let sources = condition(&sensor, "SourcesRunning").expect("SourcesRunning");
    assert_eq!(sources["reason"], "EventSourceMissing");
    assert!(
        sources["message"].as_str().unwrap_or("").contains("hooks"),
        "{sources}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_error_marks_its_object_and_the_others_keep_working() {
    let (env, agent, _) = start().await;
    let sink = Sink::start().await;
    let port = free_port();
    create_hooks(&env, port).await;
    create_sensor(
        &env,
        "broken",
        forwarding_sensor("let x = ;\nx", &sink.url("/broken")),
    )
    .await;
    create_sensor(&env, "good", forwarding_sensor("true", &sink.url("/good"))).await;

    let broken = wait_for(&sensors(&env), "broken", "Ready=False", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let ready = condition(&broken, "Ready").expect("Ready");
    let message = ready["message"].as_str().unwrap_or("");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        message.starts_with("spec.dependencies[0].filters.script: line ")
            && message.contains(", column ")
            && message.contains("Rhai"),
        "{message}"
    );
    let scripts = condition(&broken, "ScriptsCompiled").expect("ScriptsCompiled");
    assert_eq!(scripts["status"], "False");
    assert_eq!(
        broken.data["status"]["observedGeneration"],
        json!(broken.metadata.generation)
    );

    wait_ready(&sensors(&env), "good").await;
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"kind": "a"}))
        .await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.path, "/good");
    sink.expect_none(Duration::from_millis(300)).await;
}

/// The Role in `manifests/deploy/base/` grants what the agent and the examples need, and
/// no more: the agent's own identity is refused the rest with 403 Forbidden, and a trigger
/// aimed at something the Role does not grant is dead-lettered and counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_role_allows_the_examples_and_refuses_the_rest() {
    let (env, agent, kubeconfig) = start().await;
    env.install_crd("manifests/test/workflow-crd.yaml").await;
    let as_agent = KubeEnv::client_from_kubeconfig(&kubeconfig).await;
    let user = format!("system:serviceaccount:{}:triggerd", env.namespace());

    // What cluster mode and the examples do.
    let own_sensors = api(&env, as_agent.clone(), "Sensor", "sensors");
    own_sensors
        .list(&ListParams::default())
        .await
        .expect("list sensors");
    let configmaps = Api::<ConfigMap>::namespaced(as_agent.clone(), env.namespace());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "allowed"}, "data": {"k": "v"}}))
            .expect("a ConfigMap");
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create a ConfigMap");
    configmaps
        .patch(
            "allowed",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .expect("patch a ConfigMap");
    configmaps
        .delete("allowed", &DeleteParams::default())
        .await
        .expect("delete a ConfigMap");
    let workflows = Api::<DynamicObject>::namespaced_with(
        as_agent.clone(),
        env.namespace(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
            "workflows",
        ),
    );
    let workflow: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "allowed-"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main"}]},
    }))
    .expect("a Workflow");
    workflows
        .create(&PostParams::default(), &workflow)
        .await
        .expect("create a Workflow");

    // What it may not do.
    let refused = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected a 403 Status, got {other}"),
    };
    create_sensor(&env, "s", forwarding_sensor("true", "http://127.0.0.1:9/")).await;
    let (code, reason, message) = refused(
        own_sensors
            .delete("s", &DeleteParams::default())
            .await
            .expect_err("deleting a Sensor is not the agent's job"),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        format!(
            "sensors.triggerd.io \"s\" is forbidden: User \"{user}\" cannot delete resource \"sensors\" in API group \"triggerd.io\" in the namespace \"{}\"",
            env.namespace()
        )
    );
    let (code, _, message) = refused(
        Api::<Secret>::namespaced(as_agent.clone(), env.namespace())
            .list(&ListParams::default())
            .await
            .expect_err("the Role grants no Secrets"),
    );
    assert_eq!(code, 403, "{message}");

    // The agent itself: a k8s trigger creating a Secret is refused and dead-lettered.
    let port = free_port();
    create_hooks(&env, port).await;
    let sensor = json!({
        "dependencies": [{"name": "push", "eventSourceName": "hooks", "eventName": "push"}],
        "triggers": [{
            "template": {"name": "make-secret", "k8s": {
                "operation": "create",
                "source": {"resource": {"apiVersion": "v1", "kind": "Secret", "metadata": {"generateName": "nope-"}}},
            }},
            "retryStrategy": {"steps": 1},
        }],
    });
    create_sensor(&env, "secret-maker", sensor).await;
    wait_ready(&sensors(&env), "secret-maker").await;
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({}))
        .await;
    wait_for(&sensors(&env), "secret-maker", "one failure counted", |o| {
        o.data["status"]["triggers"]["make-secret"]["failed"] == 1
    })
    .await;
    assert!(
        Api::<Secret>::namespaced(env.client(), env.namespace())
            .list(&ListParams::default())
            .await
            .expect("list secrets as admin")
            .items
            .iter()
            .all(|s| !s
                .metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("nope-")),
        "the refused Secret must not exist"
    );
    let stderr = agent.stderr();
    assert!(stderr.contains("forbidden"), "{stderr}");
    let events = Api::<KubeEvent>::namespaced(env.client(), env.namespace());
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    let event = loop {
        let listed = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        let found = listed.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("secret-maker")
                && e.reason.as_deref() == Some("TriggerFailed")
        });
        if let Some(event) = found {
            break event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no TriggerFailed Event on Sensor secret-maker within {STATUS_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.involved_object.kind.as_deref(),
        Some("Sensor"),
        "{event:?}"
    );
    assert!(
        event
            .message
            .as_deref()
            .unwrap_or("")
            .contains("make-secret"),
        "{event:?}"
    );
}

/// Editing one Sensor restarts only its part of the namespace: a Sensor that shares no
/// EventSource with it keeps its partial condition state (the first of two events) across
/// the reload and fires when the second arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_restarts_only_the_objects_it_touches() {
    let (env, agent, _) = start().await;
    let sink = Sink::start().await;
    let (port, pair_port) = (free_port(), free_port());
    create_hooks(&env, port).await;
    create_sensor(
        &env,
        "forward",
        forwarding_sensor("true", &sink.url("/forward")),
    )
    .await;
    let pair_source = json!({"webhook": {
        "first": {"port": pair_port.to_string(), "endpoint": "/first", "method": "POST"},
        "second": {"port": pair_port.to_string(), "endpoint": "/second", "method": "POST"},
    }});
    create(
        &event_sources(&env),
        &object("EventSource", "pair-hooks", pair_source),
    )
    .await;
    let pair = json!({
        "dependencies": [
            {"name": "first", "eventSourceName": "pair-hooks", "eventName": "first"},
            {"name": "second", "eventSourceName": "pair-hooks", "eventName": "second"},
        ],
        "triggers": [{
            "template": {"name": "both", "conditions": "first && second",
                         "http": {"url": sink.url("/pair"), "method": "POST"}},
            "retryStrategy": {"steps": 1},
        }],
    });
    create_sensor(&env, "pair", pair).await;
    wait_ready(&sensors(&env), "forward").await;
    wait_ready(&sensors(&env), "pair").await;

    agent
        .post_event(&agent.webhook_url(pair_port, "/first"), &json!({"n": 1}))
        .await;
    agent
        .wait_for_metric(
            "triggerd_events_accepted_total",
            &[("sensor", "pair"), ("dependency", "first")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let patch = json!({"spec": {"dependencies": [{
        "name": "push", "eventSourceName": "hooks", "eventName": "push",
        "filters": {"script": "event.body.n > 0"},
    }]}});
    sensors(&env)
        .patch("forward", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the forward sensor");
    wait_ready(&sensors(&env), "forward").await;
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"n": 1}))
        .await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.path, "/forward");

    agent
        .post_event(&agent.webhook_url(pair_port, "/second"), &json!({"n": 2}))
        .await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(
        hit.path, "/pair",
        "the pair sensor kept its first event across the unrelated reload"
    );
}

async fn received(agent: &Agent) -> f64 {
    agent
        .metric(
            "triggerd_events_received_total",
            &[("event_source", "ticks"), ("event_name", "tick")],
        )
        .await
        .unwrap_or(0.0)
}

/// With `--leader-elect`, two replicas elect one leader through a Lease: only it runs the
/// calendar; when it stops (giving the Lease up), the other one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_the_calendar_on_the_leader_only() {
    let env = KubeEnv::start().await;
    env.install_crd("manifests/crds/sensors.triggerd.io.yaml")
        .await;
    env.install_crd("manifests/crds/eventsources.triggerd.io.yaml")
        .await;
    let kubeconfig = env.agent_kubeconfig().await;
    let replica = || {
        Agent::builder()
            .kube()
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", env.namespace()])
            .args(["--leader-elect", "--lease-duration", "2s"])
            .start()
    };
    let replicas = [replica().await, replica().await];
    let calendar = json!({"calendar": {"tick": {"interval": "1s"}}});
    create(
        &event_sources(&env),
        &object("EventSource", "ticks", calendar),
    )
    .await;
    let sensor = json!({
        "dependencies": [{"name": "tick", "eventSourceName": "ticks", "eventName": "tick"}],
        "triggers": [{"template": {"name": "log", "log": {}}}],
    });
    create_sensor(&env, "count", sensor).await;

    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    let leader = loop {
        let counts = [received(&replicas[0]).await, received(&replicas[1]).await];
        if let Some(i) = counts.iter().position(|c| *c >= 2.0) {
            assert_eq!(
                counts[1 - i],
                0.0,
                "only the leader runs the calendar: {counts:?}"
            );
            break i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica ran the calendar within {STATUS_TIMEOUT:?}: {counts:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let lease = Api::<Lease>::namespaced(env.client(), env.namespace())
        .get("triggerd")
        .await
        .expect("the Lease exists");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(!holder.is_empty(), "the Lease names its holder");
    wait_ready(&sensors(&env), "count").await;

    let [first, second] = replicas;
    let (stopping, standby) = if leader == 0 {
        (first, second)
    } else {
        (second, first)
    };
    stopping.terminate();
    stopping.wait_exit(STATUS_TIMEOUT).await;
    standby
        .wait_for_metric(
            "triggerd_events_received_total",
            &[("event_source", "ticks"), ("event_name", "tick")],
            1.0,
            STATUS_TIMEOUT,
        )
        .await;
}

/// A Rhai file in a ConfigMap labelled `triggerd.io/scripts=true` is a `scriptFile` for
/// the namespace's objects; changing it reloads them with the new script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_in_a_configmap_are_script_files_and_reload_when_changed() {
    let (env, agent, _) = start().await;
    let sink = Sink::start().await;
    let port = free_port();
    let configmaps = Api::<ConfigMap>::namespaced(env.client(), env.namespace());
    let scripts = |kind: &str| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "scripts", "labels": {"triggerd.io/scripts": "true"}},
            "data": {"wanted.rhai": format!("event.body.kind == \"{kind}\"")},
        }))
        .expect("a ConfigMap")
    };
    configmaps
        .create(&PostParams::default(), &scripts("a"))
        .await
        .expect("create the script ConfigMap");
    create_hooks(&env, port).await;
    let mut sensor = forwarding_sensor("", &sink.url("/hit"));
    sensor["dependencies"][0]["filters"] = json!({"scriptFile": "wanted.rhai"});
    create_sensor(&env, "forward", sensor).await;
    wait_ready(&sensors(&env), "forward").await;
    let url = agent.webhook_url(port, "/push");
    agent.post_event(&url, &json!({"kind": "b"})).await;
    agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &[("sensor", "forward"), ("dependency", "push")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"kind": "a"})).await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["kind"], "a", "{}", hit.text());

    let reloads = agent
        .metric("triggerd_reloads_total", &[("outcome", "success")])
        .await
        .unwrap_or(0.0);
    let mut changed = configmaps.get("scripts").await.expect("get the ConfigMap");
    changed.data = scripts("b").data;
    configmaps
        .replace("scripts", &PostParams::default(), &changed)
        .await
        .expect("change the script");
    agent
        .wait_for_metric(
            "triggerd_reloads_total",
            &[("outcome", "success")],
            reloads + 1.0,
            STATUS_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"kind": "b"})).await;
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["kind"], "b", "{}", hit.text());
}

/// Status of one webhook request carrying `token` as its bearer token.
async fn post_with_token(agent: &Agent, url: &str, token: &str) -> u16 {
    agent
        .http()
        .post(url)
        .bearer_auth(token)
        .json(&json!({"kind": "a"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_namespaces_secrets_and_a_rotated_one_is_used_without_a_restart()
{
    let (env, agent, _) = start().await;
    let nats = integration_tests::NatsServer::start_with_token("nats-t0ken");
    let sink = Sink::start().await;
    let secrets: Api<Secret> = Api::namespaced(env.client(), env.namespace());
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {"hook": "hook-one", "nats": "nats-t0ken", "api": "api-t0ken"},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let port = free_port();
    let source = json!({
        "webhook": {"push": {
            "port": port.to_string(), "endpoint": "/push", "method": "POST",
            "authSecret": {"name": "creds", "key": "hook"},
        }},
        "nats": {"bus": {
            "url": nats.url(), "subject": "orders", "jsonBody": true,
            "auth": {"token": {"name": "creds", "key": "nats"}},
        }},
    });
    create(
        &event_sources(&env),
        &object("EventSource", "hooks", source),
    )
    .await;
    let forward = |event: &str, path: &str| {
        json!({
            "dependencies": [{"name": "in", "eventSourceName": "hooks", "eventName": event}],
            "triggers": [{
                "template": {"name": "forward", "http": {
                    "url": sink.url(path), "method": "POST",
                    "bearerToken": {"name": "creds", "key": "api"},
                }},
                "retryStrategy": {"steps": 1},
            }],
        })
    };
    create_sensor(&env, "from-hook", forward("push", "/hook")).await;
    create_sensor(&env, "from-nats", forward("bus", "/nats")).await;
    wait_ready(&event_sources(&env), "hooks").await;
    wait_ready(&sensors(&env), "from-hook").await;
    wait_ready(&sensors(&env), "from-nats").await;

    // The webhook's token, the NATS token and the trigger's bearer token are all read from
    // Secret `creds` through the API (the agent has no --secrets-dir).
    let url = agent.webhook_url(port, "/push");
    assert_eq!(post_with_token(&agent, &url, "wrong").await, 401);
    assert_eq!(post_with_token(&agent, &url, "hook-one").await, 200);
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.header("authorization"), Some("Bearer api-t0ken"));
    let client = nats.client(Some("nats-t0ken")).await;
    client
        .publish("orders", r#"{"id": 7}"#.into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["id"], 7, "{}", hit.text());

    // Rotate the webhook's token: the new one is taken and the old one refused, with no
    // restart and no edit of the EventSource.
    let rotate = json!({"stringData": {"hook": "hook-two"}});
    secrets
        .patch("creds", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .expect("rotate the token");
    let deadline = tokio::time::Instant::now() + STATUS_TIMEOUT;
    while post_with_token(&agent, &url, "hook-two").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated token was not accepted within {STATUS_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(post_with_token(&agent, &url, "hook-one").await, 401);
    assert!(
        !agent.stderr().contains("hook-one") && !agent.stderr().contains("api-t0ken"),
        "a secret value reached the log"
    );
    agent.check_alive();
}
