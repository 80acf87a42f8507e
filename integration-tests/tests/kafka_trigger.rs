//! Kafka trigger against a real broker (tansu, one per test on a free port): an lz4-compressed
//! record with a script-computed key and fixed headers whose offset reaches the policy, a broker that comes
//! up while the trigger retries, and one that stays down going to the dead letter.

use integration_tests::{free_port, webhook_source, Agent, Sink, Tansu, DELIVERY_TIMEOUT};
use serde_json::json;

/// Sensor `deploy`: a webhook event writes `{app, version}` to `topic`, keyed by the app.
fn deploy_sensor(bootstrap: &str, topic: &str, policy: &str, retry: &str, dlq_url: &str) -> String {
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
        name: record
        kafka:
          url: {bootstrap}
          topic: {topic}
          timeout: 1s
          compress: true
          headers:
            X-Source: triggerd
            X-Team: platform
          parameters:
            - src:
                dependencyName: release
                script: '`app-${{event.body.app}}`'
              dest: partitioningKey
          payload:
            - src: {{dependencyName: release, dataKey: body.app}}
              dest: app
            - src: {{dependencyName: release, dataKey: body.version}}
              dest: version
      retryStrategy: {retry}
      policy:
        script: '{policy}'
      dlqTrigger:
        template:
          name: record-dlq
          http:
            url: {dlq_url}
"#
    )
}

fn labels(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("sensor", "deploy"),
        ("trigger", "record"),
        ("outcome", outcome),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_lands_with_key_and_headers_and_the_policy_sees_its_offset() {
    let broker = Tansu::start().await;
    broker.create_topic("deploys", 1);
    let dlq = Sink::start().await;
    let port = free_port();
    // Success only for the offsets the broker gives: 0, then 1.
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &broker.bootstrap(),
            "deploys",
            r#"if "error" in response { "retry" } else if response.topic == "deploys" && response.partition == 0 && response.offset == events.release.data.body.expect { "success" } else { "fail" }"#,
            "{steps: 3, duration: 10ms}",
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    let url = agent.webhook_url(port, "/release");
    agent
        .post_event(
            &url,
            &json!({"app": "shop", "version": "1.2.3", "expect": 0}),
        )
        .await;
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent
        .post_event(
            &url,
            &json!({"app": "blog", "version": "2.0.0", "expect": 1}),
        )
        .await;
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            2.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let records = broker.read("deploys", 0, 2).await;
    assert_eq!(records[0].offset, 0);
    assert_eq!(records[0].key.as_deref(), Some("app-shop"));
    assert_eq!(
        records[0].headers,
        vec![
            ("X-Source".to_owned(), "triggerd".to_owned()),
            ("X-Team".to_owned(), "platform".to_owned())
        ]
    );
    let value: serde_json::Value = serde_json::from_str(&records[0].value).unwrap();
    assert_eq!(value, json!({"app": "shop", "version": "1.2.3"}));
    assert_eq!(records[1].key.as_deref(), Some("app-blog"));
    assert_eq!(dlq.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_comes_up_while_the_trigger_retries_gets_the_record() {
    let broker_port = free_port();
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &format!("127.0.0.1:{broker_port}"),
            "deploys",
            r#"if "error" in response { "retry" } else { "success" }"#,
            "{steps: 30, duration: 200ms, factor: 1}",
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/release"),
            &json!({"app": "shop", "version": "3"}),
        )
        .await;
    // The first attempt timed out against the missing broker; now start it.
    agent
        .wait_for_metric(
            "triggerd_trigger_retries_total",
            &[("sensor", "deploy"), ("trigger", "record")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let broker = Tansu::start_on(broker_port).await;
    broker.create_topic("deploys", 1);
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            1.0,
            DELIVERY_TIMEOUT * 2,
        )
        .await;
    let records = broker.read("deploys", 0, 1).await;
    assert_eq!(records[0].key.as_deref(), Some("app-shop"));
    assert_eq!(dlq.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stays_down_sends_the_record_to_the_dead_letter() {
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "release", port, "/release"),
        &deploy_sensor(
            &format!("127.0.0.1:{}", free_port()),
            "deploys",
            r#"if "error" in response { "retry" } else { "success" }"#,
            "{steps: 2, duration: 10ms}",
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/release"),
            &json!({"app": "shop", "version": "4"}),
        )
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "record", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert!(
        dead["error"].as_str().unwrap_or("").contains("deploys"),
        "{dead}"
    );
    // A producer whose broker never answered does not hold up shutdown.
    agent.terminate();
    assert!(agent.wait_exit(DELIVERY_TIMEOUT).await.success());
}

#[test]
fn unsupported_fields_and_fixed_parts_are_rejected_at_load_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: deploy
spec:
  dependencies:
    - {name: release, eventSourceName: ci, eventName: release}
  triggers:
    - template:
        name: record
        kafka:
          url: 127.0.0.1:9092
          topic: deploys
          requiredAcks: 2
          sasl:
            mechanism: GSSAPI
            userSecret: {name: kafka, key: user}
            passwordSecret: {name: kafka, key: password}
          parameters:
            - src: {dependencyName: release, dataKey: body.url}
              dest: url
---
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: ci
spec:
  kafka:
    release:
      url: 127.0.0.1:9092
      topic: releases
      partition: "0"
      consumerGroup: {groupName: ci}
      limitEventsPerSecond: 10
"#;
    std::fs::write(dir.path().join("kafka.yaml"), yaml).unwrap();
    let out = integration_tests::run_cli(
        &["validate", "-f", "kafka.yaml"],
        dir.path(),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{out}");
    let line = |needle: &str| integration_tests::line_of(yaml, needle);
    for (field, at) in [
        (
            "spec.triggers[0].template.kafka.requiredAcks",
            line("requiredAcks: 2"),
        ),
        (
            "spec.triggers[0].template.kafka.sasl.mechanism",
            line("mechanism: GSSAPI"),
        ),
        ("spec.kafka.release.partition", line("partition: \"0\"")),
        (
            "spec.kafka.release.limitEventsPerSecond",
            line("limitEventsPerSecond"),
        ),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(field) && l.contains(&format!("kafka.yaml:{at}:"))),
            "{field} at line {at}:\n{out}"
        );
    }
    assert!(
        out.stderr
            .contains("spec.triggers[0].template.kafka.parameters[0].dest")
            && out
                .stderr
                .contains("parameters may set: topic, partitioningKey"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("SASL mechanism \"GSSAPI\" is not supported"),
        "{out}"
    );
}
