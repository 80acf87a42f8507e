//! A runaway script is stopped by the engine's limits and never takes the agent down.

use std::time::Duration;

use integration_tests::{free_port, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

/// Words a log line about a script stopped by a limit is expected to contain.
const LIMIT_WORDS: [&str; 6] = [
    "limit",
    "too many operations",
    "timed out",
    "timeout",
    "deadline",
    "terminated",
];

fn sensor(name: &str, event: &str, filter: &str, sink_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: {name}
spec:
  dependencies:
    - name: dep
      eventSourceName: hooks
      eventName: {event}
{filter}  triggers:
    - template:
        name: notify
        http:
          url: {sink_url}
          method: POST
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_filter_is_stopped_and_other_sensors_keep_working() {
    let sink = Sink::start().await;
    let (spin_port, ok_port) = (free_port(), free_port());
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    spin:
      port: "{spin_port}"
      endpoint: /spin
      method: POST
    ok:
      port: "{ok_port}"
      endpoint: /ok
      method: POST
"#
    );
    let spin_filter = "      filters:\n        script: 'loop { }'\n";
    let agent = Agent::start(&[
        &source,
        &sensor("spin", "spin", spin_filter, &sink.url("/spin")),
        &sensor("ok", "ok", "", &sink.url("/ok")),
    ])
    .await;

    let log_before = agent.stderr().len();
    // The source answers once the bus has the event, whatever the script does later.
    agent
        .post_event(&agent.webhook_url(spin_port, "/spin"), &json!({"n": 1}))
        .await;
    let errors = agent
        .wait_for_metric(
            "triggerd_script_errors_total",
            &[("sensor", "spin")],
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert!(errors >= 1.0);
    agent
        .wait_for_stderr("a script limit error", DELIVERY_TIMEOUT, |stderr| {
            let new = stderr[log_before..].to_lowercase();
            LIMIT_WORDS.iter().any(|word| new.contains(word))
        })
        .await;

    // The agent keeps serving: another sensor still fires, health stays green.
    agent
        .post_event(&agent.webhook_url(ok_port, "/ok"), &json!({"n": 2}))
        .await;
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(
        request.path, "/ok",
        "the looping filter must not pass its event"
    );
    assert_eq!(agent.ops_status("/healthz").await, 200);
    agent.check_alive();
    assert_eq!(sink.count(), 1);
}
