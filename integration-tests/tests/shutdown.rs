//! SIGTERM drains in-flight triggers before the agent exits.

use std::time::Duration;

use integration_tests::{free_port, webhook_source, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_in_flight_trigger_then_exits_0() {
    let sink = Sink::start().await;
    sink.hold();
    let dlq = Sink::start().await;
    let port = free_port();
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: draining
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: notify
        http:
          url: {}
          method: POST
          timeout: 60
      dlqTrigger:
        template:
          name: dead-letter
          http:
            url: {}
            method: POST
"#,
        sink.url("/hook"),
        dlq.url("/dlq")
    );
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor)
        // Trigger outcomes may be logged at debug level.
        .env("RUST_LOG", "info,triggerd=debug")
        .start()
        .await;

    let id = agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"n": 1}))
        .await;
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(request.json()["id"], json!(id));

    agent.terminate();
    // Bounded negative check: with a trigger in flight the agent must not quit.
    agent.expect_running(Duration::from_millis(300)).await;
    sink.release();

    let status = agent.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown exits 0\n{}",
        agent.stderr()
    );
    assert_eq!(
        sink.count(),
        1,
        "the in-flight trigger completed without retry"
    );
    assert_eq!(
        dlq.count(),
        0,
        "the in-flight trigger was not dead-lettered"
    );
    let stderr = agent.stderr().to_lowercase();
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("notify") && line.contains("succe")),
        "the log should record trigger notify's success\n{stderr}"
    );
}
