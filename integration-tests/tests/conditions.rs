//! Trigger conditions over several dependencies: `&&`, `||`, the default (all), and a sensor
//! with 50 dependencies.

use integration_tests::{free_port, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

/// An EventSource `hooks` with one webhook event per name, all on `port`.
fn webhooks(port: u16, names: &[String]) -> String {
    let mut yaml = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: hooks\nspec:\n  webhook:\n",
    );
    for n in names {
        yaml.push_str(&format!(
            "    {n}:\n      port: \"{port}\"\n      endpoint: /{n}\n      method: POST\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn and_waits_for_both_and_or_fires_on_either() {
    let sink = Sink::start().await;
    let port = free_port();
    let names = vec!["build".to_string(), "test-report".to_string()];
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: release
spec:
  dependencies:
    - name: build
      eventSourceName: hooks
      eventName: build
    - name: test-report
      eventSourceName: hooks
      eventName: test-report
  triggers:
    - template:
        name: both
        conditions: "build && test-report"
        http:
          url: {both}
          payload:
            - src: {{dependencyName: build, dataKey: body.version}}
              dest: version
            - src: {{dependencyName: test-report, dataKey: body.passed, useRawData: true}}
              dest: passed
    - template:
        name: either
        conditions: "build || test-report"
        http:
          url: {either}
          payload:
            - src: {{dependencyName: build, dataKey: body.version}}
              dest: version
            - src: {{dependencyName: test-report, dataKey: body.passed, useRawData: true}}
              dest: passed
"#,
        both = sink.url("/both"),
        either = sink.url("/either")
    );
    let agent = Agent::start(&[&webhooks(port, &names), &sensor]).await;

    agent
        .post_event(
            &agent.webhook_url(port, "/build"),
            &json!({"version": "1.2.3"}),
        )
        .await;
    // `either` fires on the build alone; its test-report parameter is skipped, not an error.
    let first = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(first.path, "/either");
    assert_eq!(first.json(), json!({"version": "1.2.3"}));

    agent
        .post_event(
            &agent.webhook_url(port, "/test-report"),
            &json!({"passed": true}),
        )
        .await;
    let mut got = [
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await,
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await,
    ];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got[0].path, "/both");
    assert_eq!(
        got[0].json(),
        json!({"version": "1.2.3", "passed": true}),
        "both events reach the && trigger"
    );
    assert_eq!(got[1].path, "/either");
    assert_eq!(got[1].json(), json!({"passed": true}));
    assert_eq!(sink.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_with_fifty_dependencies_fires_once_all_arrived() {
    let sink = Sink::start().await;
    let port = free_port();
    let names: Vec<String> = (0..50).map(|i| format!("dep-{i}")).collect();
    let mut sensor = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: wide\nspec:\n  dependencies:\n",
    );
    for n in &names {
        sensor.push_str(&format!(
            "    - name: {n}\n      eventSourceName: hooks\n      eventName: {n}\n"
        ));
    }
    sensor.push_str(&format!(
        "  triggers:\n    - template:\n        name: all\n        http:\n          url: {}\n          payloadScript: 'events.keys().len()'\n",
        sink.url("/all")
    ));
    let agent = Agent::start(&[&webhooks(port, &names), &sensor]).await;
    for n in &names {
        agent
            .post_event(&agent.webhook_url(port, &format!("/{n}")), &json!({"n": n}))
            .await;
    }
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(request.json(), json!(50), "the trigger sees all 50 events");
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &[("sensor", "wide"), ("outcome", "success")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(
        sink.count(),
        1,
        "fires once, when the last dependency arrives"
    );
}
