//! Webhook source → sensor (filters) → HTTP trigger (parameters).

use integration_tests::{free_port, webhook_source, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

/// Sensor `deploy`: dependency `push` on `hooks/push`, a data filter on `body.ref`,
/// and trigger `notify` whose payload takes `ref` by gjson path and `commits` from a
/// Rhai script (a typed number).
fn deploy_sensor(sink_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: deploy
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
      filters:
        data:
          - path: body.ref
            type: string
            value:
              - refs/heads/main
  triggers:
    - template:
        name: notify
        http:
          url: {sink_url}
          method: POST
          timeout: 5
          payload:
            - src:
                dependencyName: push
                dataKey: body.ref
              dest: ref
            - src:
                dependencyName: push
                script: 'event.body.commits.len()'
              dest: commits
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_event_fires_parameterized_http_trigger_and_others_are_filtered() {
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("hooks", "push", port, "/push"),
        &deploy_sensor(&sink.url("/hook")),
    ])
    .await;
    let url = agent.webhook_url(port, "/push");

    // Non-matching first, then matching: if the filter were missing the first
    // request at the sink would be the non-matching one.
    agent
        .post_event(
            &url,
            &json!({"ref": "refs/heads/dev", "commits": [{"id": "x"}]}),
        )
        .await;
    agent
        .post_event(
            &url,
            &json!({"ref": "refs/heads/main", "commits": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}),
        )
        .await;

    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook");
    let payload = request.json();
    assert_eq!(
        payload["ref"],
        json!("refs/heads/main"),
        "payload: {payload}"
    );
    assert_eq!(
        payload["commits"],
        json!(3),
        "commits must be the script's typed result, payload: {payload}"
    );

    let received = [("event_source", "hooks"), ("event_name", "push")];
    agent
        .wait_for_metric(
            "triggerd_events_received_total",
            &received,
            2.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let filtered = [("sensor", "deploy"), ("dependency", "push")];
    let filtered = agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &filtered,
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(filtered, 1.0);
    let success = [
        ("sensor", "deploy"),
        ("trigger", "notify"),
        ("outcome", "success"),
    ];
    let executions = agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &success,
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(executions, 1.0);
    assert_eq!(sink.count(), 1, "only the matching event may fire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_filter_selects_events() {
    let sink = Sink::start().await;
    let port = free_port();
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: scripted
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
      filters:
        script: 'event.body.ref == "refs/heads/main" && event.body.size > 2'
  triggers:
    - template:
        name: notify
        http:
          url: {}
          method: POST
"#,
        sink.url("/hook")
    );
    let agent = Agent::start(&[&webhook_source("hooks", "push", port, "/push"), &sensor]).await;
    let url = agent.webhook_url(port, "/push");

    agent
        .post_event(&url, &json!({"ref": "refs/heads/main", "size": 1}))
        .await;
    agent
        .post_event(&url, &json!({"ref": "refs/heads/dev", "size": 5}))
        .await;
    agent
        .post_event(&url, &json!({"ref": "refs/heads/main", "size": 7}))
        .await;

    let event = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(event["data"]["body"]["size"], json!(7), "{event}");
    let filtered = agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &[("sensor", "scripted"), ("dependency", "push")],
            2.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(filtered, 2.0);
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &[("sensor", "scripted"), ("outcome", "success")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(
        sink.count(),
        1,
        "only the event passing the script may fire"
    );
    assert_eq!(
        agent
            .metric("triggerd_script_seconds_count", &[("kind", "filter")])
            .await,
        Some(3.0),
        "every filter evaluation is timed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_without_payload_sends_the_cloudevent() {
    let sink = Sink::start().await;
    let port = free_port();
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: forward
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: forward
        http:
          url: {}
          method: POST
"#,
        sink.url("/events")
    );
    let agent = Agent::start(&[&webhook_source("hooks", "push", port, "/push"), &sensor]).await;
    let url = agent.webhook_url(port, "/push");

    let body = json!({"ref": "refs/heads/main", "nested": {"n": 1}});
    let id = agent.post_event(&url, &body).await;
    let event = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(
        event["id"],
        json!(id),
        "the webhook's reply id is the event id: {event}"
    );
    assert_eq!(event["source"], json!("hooks"), "{event}");
    assert_eq!(event["subject"], json!("push"), "{event}");
    assert_eq!(event["type"], json!("webhook"), "{event}");
    assert!(event["time"].is_string(), "{event}");
    assert_eq!(event["data"]["body"], body, "{event}");
    assert!(event["data"]["header"].is_object(), "{event}");

    // A body that is not JSON is kept as the raw string.
    let response = agent
        .http()
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello, not json")
        .send()
        .await
        .expect("POST text");
    assert_eq!(response.status(), 200);
    let event = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(event["data"]["body"], json!("hello, not json"), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_cloudevent_fires_once() {
    let sink = Sink::start().await;
    let port = free_port();
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: once
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: forward
        http:
          url: {}
"#,
        sink.url("/events")
    );
    let agent = Agent::start(&[&webhook_source("hooks", "push", port, "/push"), &sensor]).await;
    let url = agent.webhook_url(port, "/push");
    // A producer that retries sends the same CloudEvent (binary mode) twice, then a new one.
    for (id, n) in [("ce-1", 1), ("ce-1", 1), ("ce-2", 2)] {
        let response = agent
            .http()
            .post(&url)
            .header("ce-id", id)
            .header("ce-specversion", "1.0")
            .header("ce-type", "build.done")
            .header("ce-source", "/ci")
            .json(&json!({ "n": n }))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 200);
        let reply: serde_json::Value = response.json().await.expect("reply JSON");
        assert_eq!(reply["id"], json!(id), "the reply names the producer's id");
    }
    // Triggers run concurrently: the two deliveries may reach the sink in either order.
    let mut delivered = [
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json(),
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json(),
    ];
    delivered.sort_by_key(|e| e["id"].to_string());
    let (first, second) = (&delivered[0], &delivered[1]);
    assert_eq!(first["id"], json!("ce-1"), "{first}");
    assert_eq!(first["originaltype"], json!("build.done"), "{first}");
    assert_eq!(
        second["id"],
        json!("ce-2"),
        "the duplicate was not delivered: {second}"
    );
    let labels = [("event_source", "hooks"), ("event_name", "push")];
    assert_eq!(
        agent
            .metric("triggerd_events_deduplicated_total", &labels)
            .await,
        Some(1.0)
    );
    assert_eq!(
        agent
            .metric("triggerd_events_received_total", &labels)
            .await,
        Some(2.0)
    );
}

#[test]
fn a_port_in_use_names_the_event_source_and_event_and_logs_are_plain_text_in_a_pipe() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a port");
    let port = taken.local_addr().expect("its address").port();
    let out = integration_tests::run_failing_to_start(
        &webhook_source("hooks", "push", port, "/push"),
        &[],
    );
    assert!(
        out.stderr
            .contains("EventSource hooks, webhook event push (/push)")
            && out
                .stderr
                .contains(&format!("cannot listen on 0.0.0.0:{port}"))
            && out.stderr.contains("already listens there"),
        "{out}"
    );
    // stderr is a pipe here: no colour codes.
    assert!(
        !out.stderr.contains('\u{1b}'),
        "ANSI codes in piped logs: {out}"
    );
    drop(taken);
}
