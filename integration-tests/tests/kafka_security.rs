//! Kafka TLS and SASL against a real broker (tansu with `--cert/--key` and
//! `--authentication`, one per test): the trigger writes over TLS when it trusts the broker's
//! CA and dead-letters when it does not; the source reads as a SCRAM-SHA-512 user and a wrong
//! password stops its start naming the event.

use std::time::Duration;

use integration_tests::{
    free_port, run_cli, webhook_source, Agent, Sink, Tansu, TansuSecurity, TestCerts,
    DELIVERY_TIMEOUT,
};
use serde_json::json;

/// Sensor `secure` with two kafka triggers on the same event: `trusted` gives the broker's
/// CA, `untrusted` relies on the system roots (which do not know the test CA).
fn tls_sensor(bootstrap: &str, ca: &str, dlq_url: &str) -> String {
    let trigger = |name: &str, tls: &str| {
        format!(
            r#"    - template:
        name: {name}
        kafka:
          url: {bootstrap}
          topic: audit
          timeout: 2s
          tls: {tls}
          payload:
            - src: {{dependencyName: change, dataKey: body.id}}
              dest: id
      retryStrategy: {{steps: 2, duration: 10ms}}
      dlqTrigger:
        template:
          name: {name}-dlq
          http:
            url: {dlq_url}
"#
        )
    };
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: secure\nspec:\n  dependencies:\n    - {{name: change, eventSourceName: ci, eventName: change}}\n  triggers:\n{}{}",
        trigger("trusted", &format!("{{caCertSecret: {{file: {ca}}}}}")),
        trigger("untrusted", "{}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_writes_over_tls_only_when_it_trusts_the_broker() {
    let certs = TestCerts::generate();
    let broker = Tansu::start_secured(TansuSecurity {
        tls: Some(&certs),
        authentication: false,
    })
    .await;
    broker.create_topic_admin("audit", 1).await;
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ci", "change", port, "/change"),
        &tls_sensor(
            &broker.bootstrap(),
            &certs.ca.to_string_lossy(),
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(&agent.webhook_url(port, "/change"), &json!({"id": "c-1"}))
        .await;
    let records = broker.read("audit", 0, 1).await;
    assert_eq!(records[0].value, r#"{"id":"c-1"}"#);
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "untrusted", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");
    dlq.expect_none(Duration::from_millis(300)).await;
    let written = broker.read("audit", 0, 1).await;
    assert_eq!(written.len(), 1, "only the trusted trigger wrote");
}

/// EventSource `stream` reading `orders` as `user` with the password in `password_file`.
fn sasl_source(bootstrap: &str, user: &str, password_file: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: stream
spec:
  kafka:
    orders:
      url: {bootstrap}
      topic: orders
      jsonBody: true
      consumerGroup: {{groupName: shop}}
      connectionBackoff: {{steps: 2, duration: 10ms}}
      sasl:
        mechanism: SCRAM-SHA-512
        userSecret: {{file: {user}}}
        passwordSecret: {{file: {password_file}}}
"#
    )
}

fn ship_sensor(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: ship
spec:
  dependencies:
    - {{name: order, eventSourceName: stream, eventName: orders}}
  triggers:
    - template:
        name: ship
        http:
          url: {url}
          payload:
            - src: {{dependencyName: order, dataKey: value.id}}
              dest: order
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reads_as_a_scram_user_and_a_wrong_password_stops_the_start() {
    let broker = Tansu::start_secured(TansuSecurity {
        tls: None,
        authentication: true,
    })
    .await;
    broker.create_user("orders-reader", "right-password");
    broker.create_topic_admin("orders", 1).await;
    broker.produce("orders", "k1", r#"{"id": "o-1"}"#).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write secret");
        path.to_string_lossy().into_owned()
    };
    let user = file("user", "orders-reader");
    let right = file("right", "right-password");
    let wrong = file("wrong", "wrong-password");

    let sink = Sink::start().await;
    let agent = Agent::start(&[
        &sasl_source(&broker.bootstrap(), &user, &right),
        &ship_sensor(&sink.url("/ship")),
    ])
    .await;
    let body = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(body["order"], "o-1", "{body}");

    std::fs::write(
        dir.path().join("source.yaml"),
        sasl_source(&broker.bootstrap(), &user, &wrong),
    )
    .expect("write manifest");
    let ops = format!("127.0.0.1:{}", free_port());
    let out = run_cli(
        &["run", "-f", "source.yaml", "--ops-addr", ops.as_str()],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("EventSource stream, kafka event orders")
            && out.stderr.to_ascii_lowercase().contains("authentication"),
        "{out}"
    );
}
