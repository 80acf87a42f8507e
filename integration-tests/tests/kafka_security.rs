//! Kafka TLS and SASL against a real broker (tansu, one per test): the trigger writes over TLS
//! when it trusts the broker's CA and dead-letters when it does not (tansu behind the
//! harness's TLS front, see `TlsProxy`); the source runs the SCRAM-SHA-512 exchange with a
//! broker that requires authentication, and the broker's refusal stops its start. A
//! successful SCRAM login is not tested end to end: tansu 0.6 offers only SCRAM and
//! OAUTHBEARER and can register SCRAM users only over an authenticated connection, which its
//! in-memory storage cannot bootstrap.

use std::time::Duration;

use integration_tests::{
    free_port, run_failing_to_start, webhook_source, Agent, Sink, Tansu, TansuSecurity, TestCerts,
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

/// EventSource `stream` reading `orders`, with `sasl` (YAML inline map, or empty for none).
fn sasl_source(bootstrap: &str, sasl: &str) -> String {
    let sasl = if sasl.is_empty() {
        String::new()
    } else {
        format!("      sasl: {sasl}\n")
    };
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
{sasl}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_logs_in_with_scram_and_a_refused_login_stops_the_start() {
    let broker = Tansu::start_secured(TansuSecurity {
        tls: None,
        authentication: true,
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write secret");
        path.to_string_lossy().into_owned()
    };
    // tansu offers SCRAM-SHA-256/512 and knows no user yet: the SASL exchange runs and the
    // broker refuses the login, which must stop the start with the broker's reason.
    let sasl = format!(
        "{{mechanism: SCRAM-SHA-512, userSecret: {{file: {}}}, passwordSecret: {{file: {}}}}}",
        file("user", "orders-reader"),
        file("password", "s3cret")
    );
    let out = run_failing_to_start(&sasl_source(&broker.bootstrap(), &sasl), &[]);
    assert!(
        out.stderr
            .contains("EventSource stream, kafka event orders")
            && out
                .stderr
                .contains("SASL SCRAM authentication failed: broker responded with unknown-user"),
        "{out}\n--- broker log ---\n{}",
        broker.log_text()
    );
}
