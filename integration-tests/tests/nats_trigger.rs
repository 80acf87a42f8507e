//! NATS trigger against a real `nats-server -js`: a core publish on a parameterized subject,
//! a JetStream publish whose stream acknowledgement reaches the policy, and a JetStream
//! publish with no stream behind the subject going to the dead letter at once.

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use integration_tests::{free_port, webhook_source, Agent, NatsServer, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

/// Sensor `deploy`: a webhook event publishes `{app, version}` on `deploys.<app>`.
fn deploy_sensor(url: &str, jet_stream: bool, policy: &str, dlq_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: deploy
spec:
  dependencies:
    - name: release
      eventSourceName: ci
      eventName: release
  triggers:
    - template:
        name: announce
        nats:
          url: {url}
          subject: deploys.unknown
          jetStream: {jet_stream}
          parameters:
            - src:
                dependencyName: release
                script: '`deploys.${{event.body.app}}`'
              dest: subject
          payload:
            - src: {{dependencyName: release, dataKey: body.app}}
              dest: app
            - src: {{dependencyName: release, dataKey: body.version}}
              dest: version
      retryStrategy: {{steps: 3, duration: 10ms}}
      policy:
        script: '{policy}'
      dlqTrigger:
        template:
          name: announce-dlq
          http:
            url: {dlq_url}
"#
    )
}

fn labels(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("sensor", "deploy"),
        ("trigger", "announce"),
        ("outcome", outcome),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_publish_goes_to_the_parameterized_subject() {
    let server = NatsServer::start();
    let client = server.client(None).await;
    let mut deploys = client.subscribe("deploys.>").await.unwrap();
    client.flush().await.unwrap();
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &server.url(),
            false,
            r#"if response.subject == "deploys.shop" { "success" } else { "fail" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/release"),
            &json!({"app": "shop", "version": "1.2.3"}),
        )
        .await;
    let message = tokio::time::timeout(DELIVERY_TIMEOUT, deploys.next())
        .await
        .expect("a message within the delivery timeout")
        .expect("subscription open");
    assert_eq!(message.subject.as_str(), "deploys.shop");
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload, json!({"app": "shop", "version": "1.2.3"}));
    // The policy saw the subject it was published on.
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publish_is_acknowledged_by_the_stream_and_no_stream_is_a_dead_letter() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client(None).await);
    let mut stream = js
        .create_stream(stream::Config {
            name: "DEPLOYS".into(),
            subjects: vec!["deploys.shop".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &server.url(),
            true,
            r#"if "error" in response { "fail" } else if response.stream == "DEPLOYS" && response.sequence == 1 { "success" } else { "fail" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    let url = agent.webhook_url(port, "/release");
    agent
        .post_event(&url, &json!({"app": "shop", "version": "2.0.0"}))
        .await;
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let stored = stream.get_raw_message(1).await.unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(payload, json!({"app": "shop", "version": "2.0.0"}));

    // No stream stores `deploys.blog`: a configuration error, dead-lettered without retries.
    agent
        .post_event(&url, &json!({"app": "blog", "version": "1.0.0"}))
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "announce", "{dead}");
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap_or("")
            .contains("deploys.blog"),
        "{dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_dead_lettered() {
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &format!("nats://127.0.0.1:{}", free_port()),
            false,
            r#"if "error" in response { "retry" } else { "success" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/release"),
            &json!({"app": "shop", "version": "1"}),
        )
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot connect"),
        "{dead}"
    );
}
