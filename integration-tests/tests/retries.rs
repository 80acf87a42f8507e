//! Trigger outcomes: default policy, retries, policy scripts and the dead-letter trigger.

use std::time::Duration;

use integration_tests::{free_port, webhook_source, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::{json, Value};

/// How long to listen for a request that must not come (see `Sink::expect_none`).
const NEGATIVE_WINDOW: Duration = Duration::from_millis(300);

/// Sensor `retrying` on `hooks/push` with trigger `notify` (no payload: the sink
/// gets the CloudEvent), 3 attempts 10 ms apart, `policy` (YAML at trigger level,
/// indented 6 spaces, may be empty) and a dead-letter trigger to `dlq_url`.
fn sensor(sink_url: &str, dlq_url: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: retrying
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: notify
        http:
          url: {sink_url}
          method: POST
          timeout: 5
      retryStrategy:
        steps: 3
        duration: 10ms
        factor: 1
{policy}      dlqTrigger:
        template:
          name: dead-letter
          http:
            url: {dlq_url}
            method: POST
"#
    )
}

struct Setup {
    agent: Agent,
    sink: Sink,
    dlq: Sink,
    url: String,
}

async fn setup(policy: &str, replies: &[(u16, &str)]) -> Setup {
    let sink = Sink::start().await;
    for (status, body) in replies {
        sink.reply(*status, *body);
    }
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("hooks", "push", port, "/push"),
        &sensor(&sink.url("/hook"), &dlq.url("/dlq"), policy),
    ])
    .await;
    let url = agent.webhook_url(port, "/push");
    Setup {
        agent,
        sink,
        dlq,
        url,
    }
}

const TRIGGER: [(&str, &str); 2] = [("sensor", "retrying"), ("trigger", "notify")];

fn with_outcome(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [TRIGGER[0], TRIGGER[1], ("outcome", outcome)]
}

async fn counter(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> f64 {
    agent.metric(name, labels).await.unwrap_or(0.0)
}

/// Receive `n` attempts of the event `id` at the sink.
async fn expect_attempts(setup: &Setup, id: &str, n: usize) {
    for attempt in 1..=n {
        let request = setup
            .agent
            .expect_request(&setup.sink, DELIVERY_TIMEOUT)
            .await;
        assert_eq!(
            request.json()["id"],
            json!(id),
            "attempt {attempt} must carry the same event"
        );
    }
}

/// The dead-letter envelope must name the trigger and carry the failed event.
fn assert_envelope(envelope: &Value, id: &str, body: &Value, attempts: u64, status: &str) {
    assert_eq!(envelope["sensor"], json!("retrying"), "{envelope}");
    assert_eq!(envelope["trigger"], json!("notify"), "{envelope}");
    assert_eq!(envelope["attempts"], json!(attempts), "{envelope}");
    let error = envelope["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(status),
        "error should mention HTTP {status}: {envelope}"
    );
    assert_eq!(envelope["events"]["push"]["id"], json!(id), "{envelope}");
    assert_eq!(
        envelope["events"]["push"]["data"]["body"], *body,
        "{envelope}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_success() {
    let setup = setup("", &[(500, "{}"), (500, "{}"), (201, "{}")]).await;
    let agent = &setup.agent;
    let id = agent.post_event(&setup.url, &json!({"n": 1})).await;

    expect_attempts(&setup, &id, 3).await;
    let success = agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(success, 1.0);
    let text = agent.metrics_text().await;
    let get = |name: &str, labels: &[(&str, &str)]| {
        integration_tests::metric(&text, name, labels).unwrap_or(0.0)
    };
    assert_eq!(
        get("triggerd_trigger_attempts_total", &TRIGGER),
        3.0,
        "{text}"
    );
    assert_eq!(
        get("triggerd_trigger_retries_total", &TRIGGER),
        2.0,
        "{text}"
    );
    assert_eq!(
        get("triggerd_trigger_executions_total", &with_outcome("failed")),
        0.0,
        "{text}"
    );
    assert_eq!(get("triggerd_dead_letters_total", &TRIGGER), 0.0, "{text}");
    setup.dlq.expect_none(NEGATIVE_WINDOW).await;
    assert_eq!(setup.sink.count(), 3, "exactly three attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_fails_at_once_and_goes_to_the_dead_letter_trigger() {
    let setup = setup("", &[(404, r#"{"error":"no such hook"}"#)]).await;
    let agent = &setup.agent;
    let body = json!({"ref": "refs/heads/main"});
    let id = agent.post_event(&setup.url, &body).await;

    expect_attempts(&setup, &id, 1).await;
    let dead_letter = agent.expect_request(&setup.dlq, DELIVERY_TIMEOUT).await;
    assert_eq!(dead_letter.method, "POST");
    assert_eq!(dead_letter.path, "/dlq");
    assert_envelope(&dead_letter.json(), &id, &body, 1, "404");

    let dead = agent
        .wait_for_metric(
            "triggerd_dead_letters_total",
            &TRIGGER,
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(dead, 1.0);
    let failed = agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("failed"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(failed, 1.0);
    assert_eq!(
        counter(agent, "triggerd_trigger_retries_total", &TRIGGER).await,
        0.0
    );
    assert_eq!(
        counter(agent, "triggerd_trigger_attempts_total", &TRIGGER).await,
        1.0
    );
    // The dead letter comes after the final outcome, so no retry can still be due.
    assert_eq!(setup.sink.count(), 1, "a 404 must not be retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_the_dead_letter_trigger() {
    let setup = setup("", &[(500, "{}"), (503, "{}"), (500, "{}")]).await;
    let agent = &setup.agent;
    let body = json!({"n": 2});
    let id = agent.post_event(&setup.url, &body).await;

    expect_attempts(&setup, &id, 3).await;
    let dead_letter = agent.expect_request(&setup.dlq, DELIVERY_TIMEOUT).await;
    assert_envelope(&dead_letter.json(), &id, &body, 3, "500");
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("failed"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(
        counter(agent, "triggerd_trigger_retries_total", &TRIGGER).await,
        2.0
    );
    assert_eq!(
        counter(agent, "triggerd_dead_letters_total", &TRIGGER).await,
        1.0
    );
    assert_eq!(
        setup.sink.count(),
        3,
        "steps: 3 means three attempts in all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_script_decides_from_the_response_body() {
    let policy = r#"      policy:
        script: 'if response.body.ok { "success" } else { "retry" }'
"#;
    let setup = setup(policy, &[(200, r#"{"ok":false}"#), (200, r#"{"ok":true}"#)]).await;
    let agent = &setup.agent;
    let id = agent.post_event(&setup.url, &json!({"n": 3})).await;

    // A 200 alone would be success by default: the second attempt proves the script ran.
    expect_attempts(&setup, &id, 2).await;
    let success = agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(success, 1.0);
    assert_eq!(
        counter(agent, "triggerd_trigger_retries_total", &TRIGGER).await,
        1.0
    );
    setup.dlq.expect_none(NEGATIVE_WINDOW).await;
    assert_eq!(setup.sink.count(), 2, "exactly two attempts");
}
