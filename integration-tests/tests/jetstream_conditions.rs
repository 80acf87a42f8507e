//! Durable condition state on the JetStream bus: a sensor waiting for `a && b` keeps the
//! arrived `a` across a SIGKILL, and fires with both events when `b` comes after the
//! restart.

use integration_tests::{
    conditions_bucket, free_port, jetstream_bus_args, Agent, JetStreamProbe, NatsServer, Sink,
    DELIVERY_TIMEOUT,
};
use serde_json::json;

const NAMESPACE: &str = "conditions";
const SENSOR: &str = "release";

/// EventSource `hooks` with webhook events `a` and `b` on `port`, and sensor `release`
/// whose trigger `both` needs `a && b` and posts `a`'s version and `b`'s verdict to `url`.
fn manifests(port: u16, url: &str) -> [String; 2] {
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    a:
      port: "{port}"
      endpoint: /a
      method: POST
    b:
      port: "{port}"
      endpoint: /b
      method: POST
"#
    );
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: {SENSOR}
spec:
  dependencies:
    - name: a
      eventSourceName: hooks
      eventName: a
    - name: b
      eventSourceName: hooks
      eventName: b
  triggers:
    - template:
        name: both
        conditions: "a && b"
        http:
          url: {url}
          payload:
            - src: {{dependencyName: a, dataKey: body.version}}
              dest: version
            - src: {{dependencyName: b, dataKey: body.passed, useRawData: true}}
              dest: passed
"#
    );
    [source, sensor]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_arrived_before_a_crash_still_counts_after_the_restart() {
    let server = NatsServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    let [source, sensor] = manifests(port, &sink.url("/both"));
    let agent = Agent::builder()
        .manifest(source)
        .manifest(sensor)
        .args(jetstream_bus_args(&server.url(), NAMESPACE))
        .start()
        .await;
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;

    agent
        .post_event(&agent.webhook_url(port, "/a"), &json!({"version": "1.2.3"}))
        .await;
    // Acknowledged means the sensor is done with the event: from now on only the durable
    // condition state remembers that `a` arrived.
    probe
        .wait_consumer(SENSOR, "acknowledged event a", DELIVERY_TIMEOUT, |info| {
            info.delivered.stream_sequence >= 1
                && info.num_pending == 0
                && info.num_ack_pending == 0
        })
        .await
        .unwrap_or_else(|err| agent.fail(err));
    let keys = probe
        .kv_keys(&conditions_bucket(NAMESPACE))
        .await
        .unwrap_or_else(|err| agent.fail(err));
    println!("condition keys after a: {keys:?}");
    if keys.is_empty() {
        agent.fail("event a was acknowledged but the conditions bucket holds no partial state");
    }

    agent.kill();
    agent.restart().await;
    agent
        .post_event(&agent.webhook_url(port, "/b"), &json!({"passed": true}))
        .await;
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(
        request.json(),
        json!({"version": "1.2.3", "passed": true}),
        "the trigger fires with a (from before the crash) and b"
    );
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &[
                ("sensor", SENSOR),
                ("trigger", "both"),
                ("outcome", "success"),
            ],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(sink.count(), 1, "fires once");
}
