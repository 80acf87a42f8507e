//! The `resource` event source end to end: ConfigMap changes in the agent's namespace fire a
//! sensor whose http trigger records each change at a sink.
//!
//! Runs against the in-repo test API server (no Kubernetes API server can be installed
//! here), or unchanged against a real cluster with `TRIGGERD_TEST_KUBECONFIG`; forcing a
//! watch restart and a too-old resourceVersion (410) needs the test server's hooks, and is
//! skipped, with a printed reason, on a real cluster.

use std::time::Duration;

use integration_tests::{Agent, KubeEnv, Sink, DELIVERY_TIMEOUT};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long to listen for a repeat that must not come.
const NEGATIVE_WINDOW: Duration = Duration::from_millis(500);

fn manifests(namespace: &str, sink_url: &str) -> [String; 2] {
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: k8s
spec:
  resource:
    settings:
      namespace: {namespace}
      group: ""
      version: v1
      resource: configmaps
      eventTypes: [ADD, UPDATE, DELETE]
      filter:
        prefix: app-
        labels:
          - {{key: tier, operation: "==", value: web}}
"#
    );
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: watcher
spec:
  dependencies:
    - {{name: change, eventSourceName: k8s, eventName: settings}}
  triggers:
    - template:
        name: record
        http:
          url: {sink_url}
          method: POST
          payload:
            - src: {{dependencyName: change, dataKey: type}}
              dest: type
            - src: {{dependencyName: change, dataKey: body.metadata.name}}
              dest: name
            - src: {{dependencyName: change, dataKey: body.data.color, value: none}}
              dest: color
"#
    );
    [source, sensor]
}

fn configmap(name: &str, tier: &str, color: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"tier": tier}},
        "data": {"color": color},
    }))
    .expect("configmap")
}

#[tokio::test]
async fn add_update_and_delete_fire_once_each_across_a_watch_restart() {
    let env = KubeEnv::start().await;
    let sink = Sink::start().await;
    let [source, sensor] = manifests(env.namespace(), &sink.url("/changes"));
    let kubeconfig = env.agent_kubeconfig().await;
    let agent = Agent::builder()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", env.namespace()])
        .manifest(source)
        .manifest(sensor)
        .start()
        .await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let next = |want: serde_json::Value| {
        let (agent, sink) = (&agent, &sink);
        async move {
            let got = agent.expect_request(sink, DELIVERY_TIMEOUT).await.json();
            assert_eq!(got, want, "the next change recorded");
        }
    };

    // Filtered out: wrong prefix, wrong label.
    cms.create(&PostParams::default(), &configmap("other-x", "web", "red"))
        .await
        .expect("create other-x");
    cms.create(&PostParams::default(), &configmap("app-db", "db", "red"))
        .await
        .expect("create app-db");
    cms.create(&PostParams::default(), &configmap("app-web", "web", "blue"))
        .await
        .expect("create app-web");
    next(json!({"type": "ADD", "name": "app-web", "color": "blue"})).await;

    cms.patch(
        "app-web",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "green"}})),
    )
    .await
    .expect("patch app-web");
    next(json!({"type": "UPDATE", "name": "app-web", "color": "green"})).await;

    match env.server() {
        Some(server) => {
            // The watch is cut and its resourceVersion forgotten: the agent relists, and
            // an unchanged object must not be reported again.
            server.compact();
            server.close_watches();
            agent
                .wait_for_stderr("the relist after the restart", DELIVERY_TIMEOUT, |log| {
                    log.contains("resource watch restarted; relisting")
                })
                .await;
            sink.expect_none(NEGATIVE_WINDOW).await;
        }
        None => println!(
            "skipped on a real cluster: forcing a watch restart and a 410 needs the test server"
        ),
    }

    cms.delete("app-web", &DeleteParams::default())
        .await
        .expect("delete app-web");
    next(json!({"type": "DELETE", "name": "app-web", "color": "green"})).await;
    sink.expect_none(NEGATIVE_WINDOW).await;
}
